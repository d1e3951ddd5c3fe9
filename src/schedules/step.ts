// Step decay: the rate is multiplied by gamma at fixed steps (torch StepLR and MultiStepLR).

import { bisectRight } from './bisect.ts';
import { CORRECTLY_ROUNDED } from './libm.ts';
import { recurrence } from './recurrence.ts';
import type { BuildOptions, MultiStepSpec, Params, Schedule, StepDecaySpec } from './types.ts';

/**
 * Step decay every `step_size` steps, as torch `StepLR(step_size, gamma)`, mathematically
 *
 *     lr(k) = lr · gamma^floor(k / step_size)
 *
 * torch computes it recursively (`get_lr`, lr_scheduler.py:379): at each k that is a multiple of
 * step_size it sets `lr_k = lr_{k−1} · gamma`, otherwise it keeps `lr_k = lr_{k−1}`. So lr(k) is
 * lr multiplied by gamma floor(k / step_size) times, rounding after each product, which is what we
 * compute (with step_size = 1 that differs from `lr · gamma^n` in the last bits). Evaluating at k
 * replays floor(k / step_size) products once (see `recurrence`), none past the point where the
 * product stops changing (0, Infinity, or a value that `· gamma` rounds back to itself).
 * (SequentialLR's `step(0)` uses torch's closed form `lr · gamma^0`, which is lr too.)
 *
 * @param params.lr base rate (torch: the optimizer's lr).
 * @param params.step_size decay period in steps, an integer >= 1.
 * @param params.gamma multiplicative factor per period (torch default 0.1).
 * @example stepSchedule({ lr: 0.1, step_size: 30, gamma: 0.1 })(65) // 0.1 · 0.1 · 0.1 ≈ 0.001
 */
export function stepSchedule({ lr, step_size, gamma }: Params<StepDecaySpec>, { replayBudget }: BuildOptions = {}): Schedule {
  const decayed = recurrence(lr, (current) => current * gamma, { autonomous: true, budget: replayBudget });
  return function step(k) {
    return decayed(Math.floor(k / step_size));
  };
}

/**
 * Decay by gamma at each milestone, as torch `MultiStepLR(milestones, gamma)`, mathematically
 *
 *     lr(k) = lr · gamma^(number of milestones <= k)
 *
 * torch computes it recursively (`get_lr`, lr_scheduler.py:427): at a step k that is a milestone listed c
 * times, `lr_k = lr_{k−1} · gamma^c` (a Counter, so a repeated milestone compounds; `gamma^c` is the
 * C library's pow), otherwise `lr_k = lr_{k−1}`; a milestone 0 applies in the constructor's step.
 * We precompute that product over the distinct milestones once and find k's place among them by
 * bisection, O(log milestones). (SequentialLR's `step(0)` uses the closed form
 * `lr · gamma^(milestones at 0)`, the same double.)
 *
 * @param params.lr base rate.
 * @param params.milestones non-decreasing non-negative step indices.
 * @param params.gamma factor per milestone (default 0.1).
 * @param options.libm the `pow` to use (default: the correctly rounded ones of libm.ts).
 * @example multistepSchedule({ lr: 1, milestones: [2, 2, 5], gamma: 0.5 })(3) // 0.25
 */
export function multistepSchedule({ lr, milestones, gamma }: Params<MultiStepSpec>, { libm = CORRECTLY_ROUNDED }: BuildOptions = {}): Schedule {
  const steps: number[] = []; // the distinct milestones, ascending
  const rates: number[] = [lr]; // rates[i]: the rate once the first i distinct milestones have passed
  for (let i = 0; i < milestones.length; ) {
    const m = milestones[i] as number;
    let count = 0;
    while (i < milestones.length && milestones[i] === m) {
      count++;
      i++;
    }
    steps.push(m);
    rates.push((rates.at(-1) as number) * libm.pow(gamma, count));
  }
  return function multistep(k) {
    return rates[bisectRight(steps, k)] as number;
  };
}
