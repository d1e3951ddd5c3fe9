// Schedule function type, one spec type per `type`, and the public names and defaults.

import type { Libm } from './libm.ts';
import type { ReplayBudget } from './recurrence.ts';

/**
 * A learning-rate schedule: `lr(k)` is the rate used by the optimizer step taken after `k`
 * completed steps. In torch terms it is `optimizer.param_groups[0]["lr"]` after `k` calls to
 * `scheduler.step()` (the constructor's own initial step included, so `lr(0)` is the rate of the
 * very first `optimizer.step()`). `k` is a non-negative integer.
 */
export type Schedule = (step: number) => number;

/**
 * How a schedule is built, beyond its spec.
 *
 * - `start`: where lr(0) comes from. `initial` (default) is the scheduler's constructor step, as for
 *   a standalone scheduler or the first child of SequentialLR; `milestone` is SequentialLR's
 *   `step(0)` at a milestone, which evaluates the scheduler's closed form at epoch 0 where torch
 *   has one. The two differ only for CosineAnnealingLR with eta_min > 0 (`min_lr + (lr − min_lr)`
 *   is not always `lr`).
 * - `libm`: the `cos` and `pow` to call (default: the correctly rounded ones of libm.ts; tests substitute torch's C library).
 */
export interface BuildOptions {
  start?: 'initial' | 'milestone';
  libm?: Libm;
  /** Work units replays of torch's recursion may spend, shared by the whole spec (default Infinity); see `recurrence`. */
  replayBudget?: ReplayBudget;
}

export interface ConstantSpec {
  type: 'constant';
  lr: number;
}

export interface StepDecaySpec {
  type: 'step';
  lr: number;
  step_size: number;
  gamma: number;
}

export interface MultiStepSpec {
  type: 'multistep';
  lr: number;
  milestones: number[];
  gamma: number;
}

export interface ExponentialSpec {
  type: 'exponential';
  lr: number;
  gamma: number;
}

export interface LinearSpec {
  type: 'linear';
  lr: number;
  start_factor: number;
  end_factor: number;
  total_steps: number;
}

export interface PolynomialSpec {
  type: 'polynomial';
  lr: number;
  total_steps: number;
  power: number;
}

export interface CosineSpec {
  type: 'cosine';
  lr: number;
  total_steps: number;
  min_lr: number;
}

export interface CosineRestartsSpec {
  type: 'cosine_restarts';
  lr: number;
  period: number;
  period_mult: number;
  min_lr: number;
}

export type CyclicMode = 'triangular' | 'triangular2' | 'exp_range';

export interface CyclicSpec {
  type: 'cyclic';
  base_lr: number;
  max_lr: number;
  step_size_up: number;
  /** Defaults to `step_size_up` when absent (torch `step_size_down=None`). */
  step_size_down?: number | undefined;
  mode: CyclicMode;
  gamma: number;
}

export type AnnealStrategy = 'cos' | 'linear';

export interface OneCycleSpec {
  type: 'one_cycle';
  max_lr: number;
  total_steps: number;
  pct_start: number;
  anneal_strategy: AnnealStrategy;
  div_factor: number;
  final_div_factor: number;
  three_phase: boolean;
}

export interface WarmupCosineSpec {
  type: 'warmup_cosine';
  lr: number;
  warmup_steps: number;
  total_steps: number;
  min_lr: number;
  /**
   * Internal, never sent: the floor as a fraction of the peak, `min_lr / lr` of the schedule as sent,
   * kept when a param group's lr takes the place of `lr` (transformers' `min_lr_rate`, one shared
   * lambda: `min_lr / optimizer.defaults["lr"]`).
   */
  floor_rate?: number;
}

export interface WarmupLinearSpec {
  type: 'warmup_linear';
  lr: number;
  warmup_steps: number;
  total_steps: number;
}

export interface InverseSqrtSpec {
  type: 'inverse_sqrt';
  lr: number;
  warmup_steps: number;
}

export interface SequentialSpec {
  type: 'sequential';
  schedules: StepScheduleSpec[];
  milestones: number[];
}

export type PlateauMode = 'min' | 'max';
export type ThresholdMode = 'rel' | 'abs';

export interface PlateauSpec {
  type: 'reduce_on_plateau';
  lr: number;
  mode: PlateauMode;
  factor: number;
  patience: number;
  threshold: number;
  threshold_mode: ThresholdMode;
  cooldown: number;
  min_lr: number;
  eps: number;
}

/** Every schedule that is a pure function of the step (everything but reduce_on_plateau). */
export type StepScheduleSpec =
  | ConstantSpec
  | StepDecaySpec
  | MultiStepSpec
  | ExponentialSpec
  | LinearSpec
  | PolynomialSpec
  | CosineSpec
  | CosineRestartsSpec
  | CyclicSpec
  | OneCycleSpec
  | WarmupCosineSpec
  | WarmupLinearSpec
  | InverseSqrtSpec
  | SequentialSpec;

/** A schedule spec after validation and defaulting (the output of `ScheduleSpecSchema`). */
export type ScheduleSpec = StepScheduleSpec | PlateauSpec;

export type ScheduleType = ScheduleSpec['type'];
export type StepScheduleType = StepScheduleSpec['type'];

/** The spec of one `type`. */
export type SpecOf<T extends ScheduleType> = Extract<ScheduleSpec, { type: T }>;

/** Every schedule type, in documentation order. */
export const SCHEDULE_TYPES = [
  'constant',
  'step',
  'multistep',
  'exponential',
  'linear',
  'polynomial',
  'cosine',
  'cosine_restarts',
  'cyclic',
  'one_cycle',
  'warmup_cosine',
  'warmup_linear',
  'inverse_sqrt',
  'sequential',
  'reduce_on_plateau',
] as const satisfies readonly ScheduleType[];

/** The types allowed inside `sequential` (reduce_on_plateau needs metrics, as in torch's SequentialLR). */
export const STEP_SCHEDULE_TYPES = SCHEDULE_TYPES.filter((t): t is StepScheduleType => t !== 'reduce_on_plateau');

/** Defaults of the optional parameters, torch's where torch has them. */
export const SCHEDULE_DEFAULTS = {
  step: { gamma: 0.1 },
  multistep: { gamma: 0.1 },
  linear: { start_factor: 1 / 3, end_factor: 1, total_steps: 5 },
  polynomial: { total_steps: 5, power: 1 },
  cosine: { min_lr: 0 },
  cosine_restarts: { period_mult: 1, min_lr: 0 },
  cyclic: { step_size_up: 2000, mode: 'triangular', gamma: 1 },
  one_cycle: { pct_start: 0.3, anneal_strategy: 'cos', div_factor: 25, final_div_factor: 1e4, three_phase: false },
  warmup_cosine: { min_lr: 0 },
  reduce_on_plateau: { mode: 'min', factor: 0.1, patience: 10, threshold: 1e-4, threshold_mode: 'rel', cooldown: 0, min_lr: 0, eps: 1e-8 },
} as const;

/** A spec's parameters without its `type` tag: what each family's factory takes. */
export type Params<S extends { type: string }> = Omit<S, 'type'>;
