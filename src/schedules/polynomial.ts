// Polynomial decay to zero over a fixed number of steps (torch PolynomialLR).

import { CORRECTLY_ROUNDED } from './libm.ts';
import { POW_WEIGHT, recurrence } from './recurrence.ts';
import type { BuildOptions, Params, PolynomialSpec, Schedule } from './types.ts';

/**
 * As torch `PolynomialLR(total_iters, power)`, mathematically
 *
 *     lr(k) = lr · (1 − min(k, T) / T)^power,   T = total_steps
 *
 * reaching exactly 0 at k = T and staying there.
 *
 * torch computes it recursively (`get_lr`, lr_scheduler.py:740):
 *
 *     lr_0 = lr
 *     lr_k = lr_{k−1} · ((1 − k/T) / (1 − (k − 1)/T))^power    for 1 <= k <= T
 *     lr_k = lr_{k−1}                                          for k > T
 *
 * with the C library's `pow`; we evaluate exactly that, replaying at most T steps (see
 * `recurrence`). The factors telescope to the closed form but round differently (≈1e-15
 * relative). (SequentialLR's `step(0)` uses the closed form at 0, `lr · 1^power` = lr.)
 *
 * @param params.lr base rate.
 * @param params.total_steps T (torch `total_iters`, default 5), an integer >= 1.
 * @param params.power exponent, >= 0 (default 1: linear decay).
 * @param options.libm the `pow` to use (default: the correctly rounded ones of libm.ts).
 * @example polynomialSchedule({ lr: 1, total_steps: 4, power: 2 })(2) // 0.25
 */
export function polynomialSchedule({ lr, total_steps: T, power }: Params<PolynomialSpec>, { libm = CORRECTLY_ROUNDED, replayBudget }: BuildOptions = {}): Schedule {
  const { pow } = libm;
  const decay = recurrence(lr, (current, k) => current * pow((1 - k / T) / (1 - (k - 1) / T), power), { settlesAt: T, budget: replayBudget, weight: POW_WEIGHT });
  return function polynomial(k) {
    return decay(k);
  };
}
