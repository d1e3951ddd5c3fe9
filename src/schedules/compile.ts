// Spec → schedule function, and evaluation of any spec (reduce_on_plateau included) at many steps.

import { allSpecIssues, ScheduleSpecError } from './checks.ts';
import { constantSchedule } from './constant.ts';
import { cosineSchedule } from './cosine.ts';
import { cyclicSchedule } from './cyclic.ts';
import { exponentialSchedule } from './exponential.ts';
import { inverseSqrtSchedule } from './inverse-sqrt.ts';
import { CORRECTLY_ROUNDED } from './libm.ts';
import { linearSchedule } from './linear.ts';
import { oneCycleSchedule } from './one-cycle.ts';
import { plateauTrajectory } from './plateau.ts';
import { polynomialSchedule } from './polynomial.ts';
import { ReplayBudget } from './recurrence.ts';
import { sequentialSchedule } from './sequential.ts';
import { multistepSchedule, stepSchedule } from './step.ts';
import type { BuildOptions, Schedule, ScheduleSpec, StepScheduleSpec } from './types.ts';
import { warmRestartsSchedule } from './warm-restarts.ts';
import { warmupCosineSchedule, warmupLinearSchedule } from './warmup.ts';

function build(spec: StepScheduleSpec, options: BuildOptions): Schedule {
  switch (spec.type) {
    case 'constant':
      return constantSchedule(spec);
    case 'step':
      return stepSchedule(spec, options);
    case 'multistep':
      return multistepSchedule(spec, options);
    case 'exponential':
      return exponentialSchedule(spec, options);
    case 'linear':
      return linearSchedule(spec, options);
    case 'polynomial':
      return polynomialSchedule(spec, options);
    case 'cosine':
      return cosineSchedule(spec, options);
    case 'cosine_restarts':
      return warmRestartsSchedule(spec, options);
    case 'cyclic':
      return cyclicSchedule(spec, options);
    case 'one_cycle':
      return oneCycleSchedule(spec, options);
    case 'warmup_cosine':
      return warmupCosineSchedule(spec, options);
    case 'warmup_linear':
      return warmupLinearSchedule(spec);
    case 'inverse_sqrt':
      return inverseSqrtSchedule(spec);
    case 'sequential': {
      // SequentialLR: the first child starts with its own initial step, later ones with step(0).
      const later = { ...options, start: 'milestone' as const };
      return sequentialSchedule(
        spec.schedules.map((child, i) => build(child, i === 0 ? options : later)),
        spec.milestones,
      );
    }
  }
}

/**
 * The schedule function of a step-only spec (every type but reduce_on_plateau), checked once.
 *
 * Where torch computes a closed form at every step (cosine_restarts, cyclic, one_cycle, the
 * LambdaLR families, constant), each call is O(1) (sequential adds O(log milestones) per level;
 * cosine_restarts with period_mult > 1 is O(log k)). Where torch is recursive (step, exponential,
 * linear, polynomial, cosine; multistep is precomputed), the function replays torch's recursion:
 * the first call at k costs O(k) steps at most (fewer where the recursion settles or restarts),
 * later calls at or above the last step cost only the difference, and any step within a range
 * already replayed costs at most `CHECKPOINT_STRIDE` (65,536) steps. Reuse the returned function for
 * many steps of one schedule, ideally in ascending order (as {@link evaluateSchedule} does).
 *
 * @param spec a validated spec (the output of `ScheduleSpecSchema`).
 * @param options.libm the C library's `cos` and `pow` to call (default: the correctly rounded ones of libm.ts; tests
 *   substitute the reference platform's results).
 * @returns `lr(k)` for integer k >= 0.
 * @throws {ScheduleSpecError} if a cross-field rule is broken or the spec is reduce_on_plateau
 *   (which needs metrics: use {@link evaluateSchedule} or `plateauUpdate`). `min_lr <= lr` is not
 *   checked here (a request's schema checks it): a param group's lr may be below min_lr, as torch
 *   runs a group whose base lr is below eta_min.
 * @example compileSchedule({ type: 'step', lr: 0.1, step_size: 30, gamma: 0.1 })(30) // 0.010000000000000002
 */
export function compileSchedule(spec: ScheduleSpec, options: { libm?: BuildOptions['libm']; replayBudget?: number | ReplayBudget } = {}): Schedule {
  if (spec.type === 'reduce_on_plateau') {
    throw new ScheduleSpecError([{ path: ['type'], message: 'reduce_on_plateau depends on metrics, not on the step; use plateauUpdate or evaluateSchedule' }]);
  }
  const issues = allSpecIssues(spec, [], { lrBounds: false });
  if (issues.length > 0) throw new ScheduleSpecError(issues);
  const { replayBudget } = options;
  return build(spec, { libm: options.libm ?? CORRECTLY_ROUNDED, start: 'initial', replayBudget: typeof replayBudget === 'number' ? new ReplayBudget(replayBudget) : replayBudget });
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
export function evaluateSchedule(spec: ScheduleSpec, steps: readonly number[], metrics?: readonly number[], options: { replayBudget?: number | ReplayBudget } = {}): number[] {
  if (spec.type === 'reduce_on_plateau') {
    if (metrics === undefined) throw new ScheduleSpecError([{ path: ['metrics'], message: 'reduce_on_plateau needs metrics' }]);
    const trajectory = plateauTrajectory(spec, metrics);
    return steps.map((k) => {
      const lr = trajectory[k];
      if (lr === undefined) throw new ScheduleSpecError([{ path: ['steps'], message: `step ${k} needs ${k} metric reports, got ${metrics.length}` }]);
      return lr;
    });
  }
  const schedule = compileSchedule(spec, options);
  // In ascending order, so that recursive schedules replay torch's recursion once.
  const order = steps.map((_, i) => i).sort((a, b) => (steps[a] as number) - (steps[b] as number));
  const lr = new Array<number>(steps.length);
  for (const i of order) lr[i] = schedule(steps[i] as number);
  return lr;
}
