// Linear ramp of a multiplicative factor over the first steps (torch LinearLR), the usual warm-up.

import type { LinearSpec, Params, Schedule } from './types.ts';

/**
 * As torch `LinearLR(start_factor, end_factor, total_iters)`:
 *
 *     lr(k) = lr · (start_factor + (end_factor − start_factor) · min(k, T) / T),   T = total_steps
 *
 * so `lr(0) = lr·start_factor`, `lr(T) = lr·end_factor`, constant afterwards. torch's `step()`
 * multiplies by the ratio `1 + (e−s)/(T·s + (k−1)(e−s))` each step; this closed form (torch's
 * `_get_closed_form_lr`) agrees to about 1e-15 relative.
 *
 * @param params.lr base rate.
 * @param params.start_factor factor at step 0, in (0, 1] (torch default 1/3; torch 1.13 accepts 0
 *   but then divides by zero at the first step).
 * @param params.end_factor factor from step T on, in [0, 1] (default 1).
 * @param params.total_steps T (torch `total_iters`, default 5), an integer >= 1.
 * @example linearSchedule({ lr: 0.1, start_factor: 0.5, end_factor: 1, total_steps: 4 })(2) // 0.075
 */
export function linearSchedule({ lr, start_factor, end_factor, total_steps }: Params<LinearSpec>): Schedule {
  return function linear(k) {
    return lr * (start_factor + ((end_factor - start_factor) * Math.min(total_steps, k)) / total_steps);
  };
}
