// Polynomial decay to zero over a fixed number of steps (torch PolynomialLR).

import type { Params, PolynomialSpec, Schedule } from './types.ts';

/**
 * As torch `PolynomialLR(total_iters, power)`:
 *
 *     lr(k) = lr · (1 − min(k, T) / T)^power,   T = total_steps
 *
 * reaching exactly 0 at k = T and staying there. torch's `step()` multiplies by
 * `((1 − k/T) / (1 − (k−1)/T))^power` each step; the factors telescope to this closed form
 * (torch's `_get_closed_form_lr`), equal to about 1e-15 relative.
 *
 * @param params.lr base rate.
 * @param params.total_steps T (torch `total_iters`, default 5), an integer >= 1.
 * @param params.power exponent, >= 0 (default 1: linear decay).
 * @example polynomialSchedule({ lr: 1, total_steps: 4, power: 2 })(2) // 0.25
 */
export function polynomialSchedule({ lr, total_steps, power }: Params<PolynomialSpec>): Schedule {
  return function polynomial(k) {
    return lr * (1 - Math.min(total_steps, k) / total_steps) ** power;
  };
}
