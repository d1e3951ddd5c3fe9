// Spec → schedule function, and evaluation of any spec (reduce_on_plateau included) at many steps.

import { allSpecIssues, ScheduleSpecError } from './checks.ts';
import { constantSchedule } from './constant.ts';
import { cosineSchedule } from './cosine.ts';
import { cyclicSchedule } from './cyclic.ts';
import { exponentialSchedule } from './exponential.ts';
import { inverseSqrtSchedule } from './inverse-sqrt.ts';
import { linearSchedule } from './linear.ts';
import { oneCycleSchedule } from './one-cycle.ts';
import { plateauTrajectory } from './plateau.ts';
import { polynomialSchedule } from './polynomial.ts';
import { sequentialSchedule } from './sequential.ts';
import { multistepSchedule, stepSchedule } from './step.ts';
import type { Schedule, ScheduleSpec, StepScheduleSpec } from './types.ts';
import { warmRestartsSchedule } from './warm-restarts.ts';
import { warmupCosineSchedule, warmupLinearSchedule } from './warmup.ts';

function build(spec: StepScheduleSpec): Schedule {
  switch (spec.type) {
    case 'constant':
      return constantSchedule(spec);
    case 'step':
      return stepSchedule(spec);
    case 'multistep':
      return multistepSchedule(spec);
    case 'exponential':
      return exponentialSchedule(spec);
    case 'linear':
      return linearSchedule(spec);
    case 'polynomial':
      return polynomialSchedule(spec);
    case 'cosine':
      return cosineSchedule(spec);
    case 'cosine_restarts':
      return warmRestartsSchedule(spec);
    case 'cyclic':
      return cyclicSchedule(spec);
    case 'one_cycle':
      return oneCycleSchedule(spec);
    case 'warmup_cosine':
      return warmupCosineSchedule(spec);
    case 'warmup_linear':
      return warmupLinearSchedule(spec);
    case 'inverse_sqrt':
      return inverseSqrtSchedule(spec);
    case 'sequential':
      return sequentialSchedule(spec.schedules.map(build), spec.milestones);
  }
}

/**
 * The schedule function of a step-only spec (every type but reduce_on_plateau), checked once.
 * The returned function is O(1) per call for every type (sequential: O(log milestones) per level).
 *
 * @param spec a validated spec (the output of `ScheduleSpecSchema`).
 * @returns `lr(k)` for integer k >= 0.
 * @throws {ScheduleSpecError} if a cross-field rule is broken or the spec is reduce_on_plateau
 *   (which needs metrics: use {@link evaluateSchedule} or `plateauUpdate`).
 * @example compileSchedule({ type: 'step', lr: 0.1, step_size: 30, gamma: 0.1 })(30) // 0.01
 */
export function compileSchedule(spec: ScheduleSpec): Schedule {
  if (spec.type === 'reduce_on_plateau') {
    throw new ScheduleSpecError([{ path: ['type'], message: 'reduce_on_plateau depends on metrics, not on the step; use plateauUpdate or evaluateSchedule' }]);
  }
  const issues = allSpecIssues(spec);
  if (issues.length > 0) throw new ScheduleSpecError(issues);
  return build(spec);
}

/**
 * The rate at each of `steps`, for any spec. For reduce_on_plateau, `lr[k]` is the rate after the
 * first k metric reports, so every k must be <= metrics.length.
 *
 * @param spec a validated spec.
 * @param steps non-negative integer step indices, in any order.
 * @param metrics the metric reports (required for reduce_on_plateau, ignored otherwise).
 * @returns one rate per entry of `steps`.
 * @throws {ScheduleSpecError} as compileSchedule, or when reduce_on_plateau lacks metrics for a step.
 */
export function evaluateSchedule(spec: ScheduleSpec, steps: readonly number[], metrics?: readonly number[]): number[] {
  if (spec.type === 'reduce_on_plateau') {
    if (metrics === undefined) throw new ScheduleSpecError([{ path: ['metrics'], message: 'reduce_on_plateau needs metrics' }]);
    const trajectory = plateauTrajectory(spec, metrics);
    return steps.map((k) => {
      const lr = trajectory[k];
      if (lr === undefined) throw new ScheduleSpecError([{ path: ['steps'], message: `step ${k} needs ${k} metric reports, got ${metrics.length}` }]);
      return lr;
    });
  }
  const schedule = compileSchedule(spec);
  return steps.map(schedule);
}
