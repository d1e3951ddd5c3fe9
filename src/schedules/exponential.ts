// Exponential decay: the rate is multiplied by gamma every step (torch ExponentialLR).

import { recurrence } from './recurrence.ts';
import type { BuildOptions, ExponentialSpec, Params, Schedule } from './types.ts';

/**
 * As torch `ExponentialLR(gamma)`, mathematically `lr(k) = lr · gamma^k`.
 *
 * torch computes it recursively (`get_lr`, lr_scheduler.py:585): `lr_0 = lr`, then
 * `lr_k = lr_{k−1} · gamma`, rounding after every product, so after a few steps it differs from
 * the closed form `lr · gamma^k` in the last bits. We compute the same k products: evaluating at k
 * replays them once (see `recurrence`), and stops early once the product no longer changes (0,
 * Infinity, or a value that `· gamma` rounds back to itself). (SequentialLR's `step(0)` uses the
 * closed form `lr · gamma^0`, which is lr.) gamma > 1 grows the rate (an LR range test); it
 * overflows to Infinity eventually, which callers must treat as an error.
 *
 * @param params.lr base rate.
 * @param params.gamma factor per step, > 0.
 * @example exponentialSchedule({ lr: 0.1, gamma: 0.5 })(3) // 0.0125
 */
export function exponentialSchedule({ lr, gamma }: Params<ExponentialSpec>, { replayBudget }: BuildOptions = {}): Schedule {
  const decayed = recurrence(lr, (current) => current * gamma, { autonomous: true, budget: replayBudget });
  return function exponential(k) {
    return decayed(k);
  };
}
