// Exponential decay: the rate is multiplied by gamma every step (torch ExponentialLR).

import type { ExponentialSpec, Params, Schedule } from './types.ts';

/**
 * `lr(k) = lr · gamma^k`, as torch `ExponentialLR(gamma)`.
 *
 * Closed form (torch's `_get_closed_form_lr`); torch's `step()` multiplies by gamma k times, which
 * rounds k times: the two differ in the last bits (about 9e-16 relative after 200 steps, growing
 * like √k·1e-16). gamma > 1 grows the rate (an LR range test); it overflows to Infinity eventually,
 * which callers must treat as an error.
 *
 * @param params.lr base rate.
 * @param params.gamma factor per step, > 0.
 * @example exponentialSchedule({ lr: 0.1, gamma: 0.5 })(3) // 0.0125
 */
export function exponentialSchedule({ lr, gamma }: Params<ExponentialSpec>): Schedule {
  return function exponential(k) {
    return lr * gamma ** k;
  };
}
