// Cosine annealing with warm restarts, SGDR (torch CosineAnnealingWarmRestarts).

import { CORRECTLY_ROUNDED } from './libm.ts';
import type { BuildOptions, CosineRestartsSpec, Params, Schedule } from './types.ts';

/**
 * As torch `CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)` (Loshchilov & Hutter, SGDR,
 * https://arxiv.org/abs/1608.03983):
 *
 *     lr(k) = min_lr + (lr − min_lr) · (1 + cos(π·T_cur/T_i)) / 2
 *
 * where the i-th period has length T_i = period·period_mult^i and T_cur counts the steps since the
 * last restart (0 at the restart, so the rate jumps back to lr; min_lr itself is never reached).
 * torch computes this closed form at every step (`get_lr`, lr_scheduler.py:1357), advancing the
 * integers T_cur and T_i one step at a time (`step`, lr_scheduler.py:1365); we locate the period
 * directly (modulo for period_mult = 1, otherwise at most ~log2(k) period boundaries), then use
 * torch's expression, `eta_min + (lr − eta_min)·(1 + cos(π·T_cur/T_i))/2`, operation for operation.
 * There is no recursion to replay: the values are torch's doubles wherever the two C libraries'
 * `cos` agree. SequentialLR's `step(0)` sets T_cur = 0 and T_i = T_0, as the constructor does.
 *
 * @param params.lr maximum rate (at each restart).
 * @param params.period T_0 (torch `T_0`), length of the first period, an integer >= 1.
 * @param params.period_mult T_mult (torch `T_mult`, default 1), growth factor of the period, an integer >= 1.
 * @param params.min_lr floor (torch `eta_min`, default 0).
 * @param options.libm the `cos` to use (default: the correctly rounded ones of libm.ts).
 * @example warmRestartsSchedule({ lr: 1, period: 10, period_mult: 2, min_lr: 0 })(10) // 1 (restart)
 */
export function warmRestartsSchedule({ lr, period, period_mult, min_lr }: Params<CosineRestartsSpec>, { libm = CORRECTLY_ROUNDED }: BuildOptions = {}): Schedule {
  const { cos } = libm;
  return function cosineRestarts(k) {
    let tCur: number;
    let tI = period;
    if (period_mult === 1) {
      tCur = k % period;
    } else {
      let start = 0;
      while (k - start >= tI) {
        start += tI;
        tI *= period_mult;
      }
      tCur = k - start;
    }
    return min_lr + ((lr - min_lr) * (1 + cos((Math.PI * tCur) / tI))) / 2;
  };
}
