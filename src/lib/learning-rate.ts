// The learning rate a step applies: the schedule's value at the completed-step count, the
// reduce-on-plateau state's current rate, or the fixed `hyperparams.lr`.

import { compileSchedule, plateauInit, plateauTrajectory, plateauUpdate, type PlateauState, type Schedule } from '../schedules/index.ts';
import type { ScheduleSpec } from '../schedules/types.ts';
import { ProblemError, fieldError } from './problem.ts';

export type { PlateauState, ScheduleSpec };

/** Compiled schedules kept per isolate, most recently used last (a Map keeps insertion order). */
const COMPILED = new Map<string, Schedule>();
const COMPILED_MAX = 64;

/**
 * The compiled schedule of a spec, reused across requests in this isolate: torch's recursive
 * schedules replay their recursion (src/schedules/recurrence.ts), and a compiled schedule remembers
 * how far it got, so a hosted optimizer stepping k, k + 1, … pays O(1) per step after the first.
 */
function compiled(schedule: ScheduleSpec): Schedule {
  const key = JSON.stringify(schedule);
  let fn = COMPILED.get(key);
  if (fn) COMPILED.delete(key);
  else {
    fn = compileSchedule(schedule);
    if (COMPILED.size >= COMPILED_MAX) COMPILED.delete(COMPILED.keys().next().value as string);
  }
  COMPILED.set(key, fn);
  return fn;
}

/** Learning rate for the step taken after `step` completed steps. */
export function learningRate(fixedLr: number, schedule: ScheduleSpec | null | undefined, step: number, plateau: PlateauState | null): number {
  if (!schedule) return fixedLr;
  if (schedule.type === 'reduce_on_plateau') return (plateau ?? plateauInit(schedule)).lr;
  return compiled(schedule)(step);
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
  return learningRate(fixedLr, schedule, step, null);
}

/** 422 for a schedule whose value at `step` overflowed (e.g. exponential with gamma > 1). */
export function scheduleOverflow(step: number, lr: number): ProblemError {
  return new ProblemError(422, 'non-finite-result', `the schedule's learning rate at step ${step} is ${lr}, not a finite number`, [
    fieldError(['schedule'], `gives lr = ${lr} at step ${step}`),
  ]);
}
