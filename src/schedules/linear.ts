// Linear ramp of a multiplicative factor over the first steps (torch LinearLR), the usual warm-up.

import { recurrence } from './recurrence.ts';
import type { BuildOptions, LinearSpec, Params, Schedule } from './types.ts';

/**
 * As torch `LinearLR(start_factor, end_factor, total_iters)`, mathematically
 *
 *     lr(k) = lr · (start_factor + (end_factor − start_factor) · min(k, T) / T),   T = total_steps
 *
 * so `lr(0) = lr·start_factor`, `lr(T) = lr·end_factor`, constant afterwards.
 *
 * torch computes it recursively (`get_lr`, lr_scheduler.py:548), with s = start_factor and
 * e = end_factor:
 *
 *     lr_0 = lr · s
 *     lr_k = lr_{k−1} · (1 + (e − s) / (T·s + (k − 1)·(e − s)))    for 1 <= k <= T
 *     lr_k = lr_{k−1}                                              for k > T
 *
 * and we evaluate exactly that, replaying at most T steps (see `recurrence`). The product of the
 * ratios telescopes to the closed form above but rounds differently (≈1e-15 relative). (SequentialLR's
 * `step(0)` uses the closed form at 0, `lr · (s + (e − s)·0/T)`, which is `lr · s` too.)
 *
 * @param params.lr base rate.
 * @param params.start_factor factor at step 0, in (0, 1] (torch default 1/3; torch 1.13 accepts 0
 *   but then divides by zero at the first step).
 * @param params.end_factor factor from step T on, in [0, 1] (default 1).
 * @param params.total_steps T (torch `total_iters`, default 5), an integer >= 1.
 * @example linearSchedule({ lr: 0.1, start_factor: 0.5, end_factor: 1, total_steps: 4 })(2) // ≈ 0.075
 */
export function linearSchedule({ lr, start_factor: s, end_factor: e, total_steps: T }: Params<LinearSpec>, { replayBudget }: BuildOptions = {}): Schedule {
  const ramp = recurrence(lr * s, (current, k) => current * (1 + (e - s) / (T * s + (k - 1) * (e - s))), { settlesAt: T, budget: replayBudget });
  return function linear(k) {
    return ramp(k);
  };
}
