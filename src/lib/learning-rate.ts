// The learning rate a step applies: the schedule's value at the completed-step count, the
// reduce-on-plateau state's current rate, or the fixed `hyperparams.lr`.

import { compileSchedule, plateauInit, plateauTrajectory, plateauUpdate, ReplayBudget, ReplayLimitError, type PlateauState, type Schedule } from '../schedules/index.ts';
import type { ScheduleSpec } from '../schedules/types.ts';
import { ProblemError, fieldError } from './problem.ts';

export type { PlateauState, ScheduleSpec };

/**
 * Work one stateless step may spend replaying torch's recursive schedules, in multiply units (see
 * src/schedules/recurrence.ts): the same 2^25 as one evaluate request, about 0.5 s of CPU.
 */
export const STATELESS_REPLAY_BUDGET = 2 ** 25;

/**
 * Work one hosted step may spend on it. Larger, because a hosted optimizer reaches its step one at a
 * time and pays this only when its isolate has forgotten the memo (eviction, a restart, a PUT of
 * state at a far step): 2^28 units, about 4 s of CPU, e.g. 1.6 million polynomial steps.
 */
export const HOSTED_REPLAY_BUDGET = 2 ** 28;

interface Compiled {
  fn: Schedule;
  budget: ReplayBudget;
}

/** Compiled schedules kept per isolate and budget, most recently used last (a Map keeps insertion order). */
const COMPILED = new Map<string, Compiled>();
const COMPILED_MAX = 64;

/**
 * The compiled schedule of a spec, reused across requests in this isolate: torch's recursive
 * schedules replay their recursion (src/schedules/recurrence.ts), and a compiled schedule remembers
 * how far it got, so a hosted optimizer stepping k, k + 1, … pays O(1) per step after the first.
 */
function compiled(schedule: ScheduleSpec, limit: number): Compiled {
  const key = `${limit} ${JSON.stringify(schedule)}`;
  let entry = COMPILED.get(key);
  if (entry) COMPILED.delete(key);
  else {
    const budget = new ReplayBudget(limit);
    entry = { fn: compileSchedule(schedule, { replayBudget: budget }), budget };
    if (COMPILED.size >= COMPILED_MAX) COMPILED.delete(COMPILED.keys().next().value as string);
  }
  COMPILED.set(key, entry);
  return entry;
}

/**
 * Learning rate for the step taken after `step` completed steps.
 *
 * @param replayBudget work units this one call may spend replaying torch's recursion (default {@link HOSTED_REPLAY_BUDGET}).
 * @throws {ProblemError} 422 naming the schedule when lr(step) would replay more than that.
 */
export function learningRate(fixedLr: number, schedule: ScheduleSpec | null | undefined, step: number, plateau: PlateauState | null, replayBudget = HOSTED_REPLAY_BUDGET): number {
  if (!schedule) return fixedLr;
  if (schedule.type === 'reduce_on_plateau') return (plateau ?? plateauInit(schedule)).lr;
  const { fn, budget } = compiled(schedule, replayBudget);
  budget.reset(); // per call: what earlier calls replayed stays memoized and free
  try {
    return fn(step);
  } catch (err) {
    if (!(err instanceof ReplayLimitError)) throw err;
    throw new ProblemError(422, 'validation-error', `the schedule's rate at step ${step} would replay ${err.cost} units of torch's recursive get_lr(), more than the ${err.budget} one step may spend`, [
      fieldError(['schedule'], `lr(${step}) is out of reach: ${err.cost} units of torch's recursion, at most ${err.budget}; use a schedule torch computes in closed form, or a nearer step`),
    ]);
  }
}

/** Initial scheduler state: only reduce_on_plateau has one. */
export function initialSchedulerState(schedule: ScheduleSpec | null | undefined): PlateauState | null {
  return schedule?.type === 'reduce_on_plateau' ? plateauInit(schedule) : null;
}

/** Scheduler state after one metric report (a no-op for step-only schedules). */
export function reportMetric(schedule: ScheduleSpec | null | undefined, plateau: PlateauState | null, metric: number): PlateauState | null {
  if (schedule?.type !== 'reduce_on_plateau') return plateau;
  return plateauUpdate(schedule, plateau ?? plateauInit(schedule), metric);
}

/** Learning rate of a stateless step: the schedule at `step`, or plateau's rate after `metrics`. */
export function statelessLearningRate(fixedLr: number, schedule: ScheduleSpec | undefined, step: number, metrics: readonly number[] | undefined): number {
  if (schedule?.type === 'reduce_on_plateau') return plateauTrajectory(schedule, metrics ?? []).at(-1)!;
  return learningRate(fixedLr, schedule, step, null, STATELESS_REPLAY_BUDGET);
}

/** 422 for a schedule whose value at `step` overflowed (e.g. exponential with gamma > 1). */
export function scheduleOverflow(step: number, lr: number): ProblemError {
  return new ProblemError(422, 'non-finite-result', `the schedule's learning rate at step ${step} is ${lr}, not a finite number`, [
    fieldError(['schedule'], `gives lr = ${lr} at step ${step}`),
  ]);
}
