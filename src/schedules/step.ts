// Step decay: the rate is multiplied by gamma at fixed steps (torch StepLR and MultiStepLR).

import { bisectRight } from './bisect.ts';
import type { MultiStepSpec, Params, Schedule, StepDecaySpec } from './types.ts';

/**
 * Step decay every `step_size` steps, as torch `StepLR(step_size, gamma)`:
 *
 *     lr(k) = lr · gamma^floor(k / step_size)
 *
 * This is torch's `_get_closed_form_lr`. `StepLR.step()` itself multiplies the current rate by
 * gamma at each multiple of step_size; with step_size > 1 both give the same doubles in practice,
 * with step_size = 1 the repeated product and the power differ in the last bits (relative ≲ k·1e-16).
 *
 * @param params.lr base rate (torch: the optimizer's lr).
 * @param params.step_size decay period in steps, an integer >= 1.
 * @param params.gamma multiplicative factor per period (torch default 0.1).
 * @example stepSchedule({ lr: 0.1, step_size: 30, gamma: 0.1 })(65) // 0.1 · 0.1² ≈ 0.001
 */
export function stepSchedule({ lr, step_size, gamma }: Params<StepDecaySpec>): Schedule {
  return function step(k) {
    return lr * gamma ** Math.floor(k / step_size);
  };
}

/**
 * Decay by gamma at each milestone, as torch `MultiStepLR(milestones, gamma)`:
 *
 *     lr(k) = lr · gamma^(number of milestones <= k)
 *
 * Milestones must be non-decreasing; a milestone listed twice counts twice (torch keeps a Counter
 * and applies `gamma ** count`), and a milestone 0 already applies at k = 0, as torch's
 * constructor step does. This is torch's closed form (`bisect_right`); the recursive
 * `step()` multiplies by `gamma ** count` at each milestone, equal up to the last bits.
 *
 * @param params.lr base rate.
 * @param params.milestones non-decreasing non-negative step indices.
 * @param params.gamma factor per milestone (default 0.1).
 * @example multistepSchedule({ lr: 1, milestones: [2, 2, 5], gamma: 0.5 })(3) // 0.25
 */
export function multistepSchedule({ lr, milestones, gamma }: Params<MultiStepSpec>): Schedule {
  const sorted = [...milestones];
  return function multistep(k) {
    return lr * gamma ** bisectRight(sorted, k);
  };
}
