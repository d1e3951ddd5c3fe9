// Schedules run one after another, each from its own step 0 (torch SequentialLR, optax join_schedules).

import { bisectRight } from './bisect.ts';
import type { Schedule } from './types.ts';

/**
 * Joins schedules at milestones, as torch `SequentialLR(schedulers, milestones)` and optax
 * `join_schedules`:
 *
 *     i = number of milestones <= k
 *     lr(k) = schedules[i](k − milestones[i−1])     (k itself for i = 0)
 *
 * At each milestone the next schedule starts from its own step 0: torch calls `scheduler.step(0)`
 * there (lr_scheduler.py:667), which gives that scheduler's closed form at epoch 0 (lr for
 * exponential/step, lr·start_factor for linear, `min_lr + (lr − min_lr)` for cosine), so the rate
 * jumps to the next schedule's start instead of continuing the previous one; from there the child
 * steps as usual, recursively from the rate it set. The caller builds children 1, 2, … with
 * `start: 'milestone'` for that first value (compileSchedule does). The first child starts with its
 * constructor's step, as standalone. (torch 1.13's docstring example is off by one step; this is
 * what it computes.) Equal milestones skip the schedules between them, as in torch.
 *
 * In torch every child shares the optimizer's lr as its base; here each child carries its own
 * `lr`, so giving every child the same lr reproduces SequentialLR, and different values give optax's
 * join semantics. A nested `sequential` (which torch cannot run) restarts from its own step 0 at
 * its milestone, its first child started as at a milestone.
 *
 * @param schedules the step schedules, one more than milestones.
 * @param milestones non-decreasing steps at which the next schedule takes over.
 * @example sequentialSchedule([warmup, cosine], [5]) // warmup(0..4), then cosine(0), cosine(1), …
 */
export function sequentialSchedule(schedules: readonly Schedule[], milestones: readonly number[]): Schedule {
  if (schedules.length !== milestones.length + 1) {
    throw new RangeError(`sequential needs one more schedule than milestones, got ${schedules.length} schedules and ${milestones.length} milestones`);
  }
  const sorted = [...milestones];
  const children = [...schedules];
  return function sequential(k) {
    const i = bisectRight(sorted, k);
    const local = i === 0 ? k : k - (sorted[i - 1] as number);
    return (children[i] as Schedule)(local);
  };
}
