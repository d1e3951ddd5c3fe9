// Cyclical learning rates: triangular waves between base_lr and max_lr (torch CyclicLR).

import { CORRECTLY_ROUNDED } from './libm.ts';
import type { BuildOptions, CyclicSpec, Params, Schedule } from './types.ts';

/**
 * As torch `CyclicLR(base_lr, max_lr, step_size_up, step_size_down, mode, gamma)` (Smith,
 * "Cyclical Learning Rates for Training Neural Networks", https://arxiv.org/abs/1506.01186),
 * already a closed form in torch (`get_lr`, lr_scheduler.py:1273):
 *
 *     total = step_size_up + step_size_down,   ratio = step_size_up / total
 *     cycle = floor(1 + k/total),   x = 1 + k/total − cycle
 *     scale = x / ratio              if x <= ratio   (rising)
 *             (x − 1) / (ratio − 1)  otherwise       (falling)
 *     lr(k) = base_lr + (max_lr − base_lr) · scale · f
 *
 * with f = 1 (`triangular`), f = 1/2^(cycle−1) (`triangular2`: the amplitude halves each cycle) or
 * f = gamma^k (`exp_range`: per step, not per cycle), the powers by the C library's `pow`. Same
 * operations in the same order as torch, so the same doubles wherever the two `pow` agree.
 * Momentum cycling (torch's `cycle_momentum`) is not part of a learning-rate schedule.
 *
 * @param params.base_lr lower bound, the rate at k = 0 (torch overwrites the optimizer's lr with it).
 * @param params.max_lr upper bound, >= base_lr.
 * @param params.step_size_up steps in the rising half (default 2000), integer >= 1.
 * @param params.step_size_down steps in the falling half (default: step_size_up), integer >= 1.
 * @param params.mode `triangular` (default), `triangular2` or `exp_range`.
 * @param params.gamma exp_range decay per step, in (0, 1] (default 1; ignored by the other modes).
 * @param options.libm the `pow` to use (default: the correctly rounded ones of libm.ts).
 * @example cyclicSchedule({ base_lr: 0.1, max_lr: 1, step_size_up: 4, mode: 'triangular', gamma: 1 })(2) // 0.55
 */
export function cyclicSchedule({ base_lr, max_lr, step_size_up, step_size_down, mode, gamma }: Params<CyclicSpec>, { libm = CORRECTLY_ROUNDED }: BuildOptions = {}): Schedule {
  const { pow } = libm;
  const total = step_size_up + (step_size_down ?? step_size_up);
  const ratio = step_size_up / total;
  return function cyclic(k) {
    const t = 1 + k / total;
    const cycle = Math.floor(t);
    const x = t - cycle;
    const scale = x <= ratio ? x / ratio : (x - 1) / (ratio - 1);
    const height = (max_lr - base_lr) * scale;
    const f = mode === 'triangular' ? 1 : mode === 'triangular2' ? 1 / pow(2, cycle - 1) : pow(gamma, k);
    return base_lr + height * f;
  };
}
