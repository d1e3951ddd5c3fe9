// zod schemas of learning-rate schedule specs (a recursive discriminated union on `type`) and of the
// schedule evaluation/plot requests. They validate requests, type the handlers and generate
// openapi.yaml; the math lives in src/schedules.

import { z } from '@hono/zod-openapi';
import {
  SCHEDULE_DEFAULTS as D,
  SCHEDULE_TYPES,
  STEP_SCHEDULE_TYPES,
  specIssues,
  type ScheduleSpec,
  type StepScheduleSpec,
} from '../schedules/index.ts';

/** Most points one evaluation or plot request may ask for (422 above it). */
/** The `type` discriminator of a schedule variant, described for the spec. */
const scheduleType = <T extends string>(name: T) => z.literal(name).openapi({ description: `Schedule type: \`${name}\`.` });

export const MAX_EVALUATION_POINTS = 100_000;
/** Most metric reports one reduce_on_plateau evaluation may replay. */
export const MAX_METRICS = MAX_EVALUATION_POINTS;
// A schedule is stored whole in one SQLite row by hosted optimizers (production rows cap at 2 MB)
// and sent back in metadata and snapshots, so its size is bounded: with these limits any valid
// spec, defaults filled in and every number at its longest, serialises to under 40 KB
// (test/schedule-size.test.ts builds the largest one).
/** Most milestones in one spec, counting every multistep and sequential list of the tree. */
export const MAX_MILESTONES = 1_000;
/** Most schedule specs in one tree, the root and every nested child included. */
export const MAX_SCHEDULE_NODES = 32;
/** Most child schedules of one sequential spec (the node limit, less the sequential itself). */
export const MAX_SEQUENTIAL_SCHEDULES = MAX_SCHEDULE_NODES - 1;
/** Deepest nesting of `sequential` specs (a plain schedule has depth 1). */
export const MAX_SCHEDULE_DEPTH = 8;
/** Steps requested when a request names none: 0..99. */
export const DEFAULT_STEP_COUNT = 100;

// ---------------------------------------------------------------------------------------------
// field builders
// ---------------------------------------------------------------------------------------------

const rate = (description: string) => z.number().min(0).openapi({ description });
const positiveInt = (description: string) => z.number().int().min(1).openapi({ description });
const nonNegativeInt = (description: string) => z.number().int().min(0).openapi({ description });
const BASE_LR = 'Base learning rate (torch: the optimizer\'s `lr`), >= 0.';

/** Adds the cross-field rules of src/schedules/checks.ts as issues on the offending fields. */
function crossFieldRules(spec: ScheduleSpec, ctx: z.RefinementCtx) {
  for (const issue of specIssues(spec)) ctx.addIssue({ code: 'custom', path: issue.path, message: issue.message });
}

// ---------------------------------------------------------------------------------------------
// one schema per schedule type
// ---------------------------------------------------------------------------------------------

export const ConstantScheduleSchema = z
  .object({ type: scheduleType('constant'), lr: rate('The rate at every step, >= 0.') })
  .strict()
  .openapi('ConstantSchedule', { description: '`lr(k) = lr`: a fixed rate (an optimizer with no torch scheduler).' });

export const StepDecayScheduleSchema = z
  .object({
    type: scheduleType('step'),
    lr: rate(BASE_LR),
    step_size: positiveInt('Decay period in steps (torch `step_size`), an integer >= 1.'),
    gamma: z.number().gt(0).default(D.step.gamma).openapi({ description: 'Factor applied every `step_size` steps (torch `gamma`), > 0.' }),
  })
  .strict()
  .openapi('StepSchedule', { description: 'torch.optim.lr_scheduler.StepLR: `lr(k) = lr · gamma^floor(k / step_size)`.' });

export const MultistepScheduleSchema = z
  .object({
    type: scheduleType('multistep'),
    lr: rate(BASE_LR),
    milestones: z
      .array(z.number().int().min(0))
      .max(MAX_MILESTONES)
      .openapi({
        description:
          'Steps at which the rate is multiplied by gamma (torch `milestones`): non-negative integers, sorted (non-decreasing). ' +
          'A repeated milestone applies gamma once per occurrence, as in torch; a milestone 0 already applies at step 0. ' +
          `At most ${MAX_MILESTONES}, counted over the whole spec (every multistep and sequential list).`,
        example: [30, 80],
      }),
    gamma: z.number().gt(0).default(D.multistep.gamma).openapi({ description: 'Factor per milestone (torch `gamma`), > 0.' }),
  })
  .strict()
  .superRefine(crossFieldRules)
  .openapi('MultistepSchedule', {
    description: 'torch.optim.lr_scheduler.MultiStepLR: `lr(k) = lr · gamma^(number of milestones <= k)`. `milestones` must be sorted.',
  });

export const ExponentialScheduleSchema = z
  .object({
    type: scheduleType('exponential'),
    lr: rate(BASE_LR),
    gamma: z.number().gt(0).openapi({ description: 'Factor per step (torch `gamma`), > 0. Above 1 the rate grows (an LR range test) and may overflow: a 422.' }),
  })
  .strict()
  .openapi('ExponentialSchedule', { description: 'torch.optim.lr_scheduler.ExponentialLR: `lr(k) = lr · gamma^k`.' });

export const LinearScheduleSchema = z
  .object({
    type: scheduleType('linear'),
    lr: rate(BASE_LR),
    start_factor: z
      .number()
      .gt(0)
      .max(1)
      .default(D.linear.start_factor)
      .openapi({ description: 'Factor at step 0 (torch `start_factor`), in (0, 1]. (torch 1.13 accepts 0 but divides by zero at the first step.)' }),
    end_factor: z.number().min(0).max(1).default(D.linear.end_factor).openapi({ description: 'Factor from `total_steps` on (torch `end_factor`), in [0, 1].' }),
    total_steps: positiveInt('Steps to go from start_factor to end_factor (torch `total_iters`), an integer >= 1.').default(D.linear.total_steps),
  })
  .strict()
  .openapi('LinearSchedule', {
    description:
      'torch.optim.lr_scheduler.LinearLR, the usual warm-up: `lr(k) = lr · (start_factor + (end_factor − start_factor) · min(k, total_steps) / total_steps)`.',
  });

export const PolynomialScheduleSchema = z
  .object({
    type: scheduleType('polynomial'),
    lr: rate(BASE_LR),
    total_steps: positiveInt('Steps to reach 0 (torch `total_iters`), an integer >= 1.').default(D.polynomial.total_steps),
    power: z.number().min(0).default(D.polynomial.power).openapi({ description: 'Exponent (torch `power`), >= 0; 1 is a linear decay.' }),
  })
  .strict()
  .openapi('PolynomialSchedule', {
    description: 'torch.optim.lr_scheduler.PolynomialLR: `lr(k) = lr · (1 − min(k, total_steps)/total_steps)^power`, 0 from total_steps on.',
  });

export const CosineScheduleSchema = z
  .object({
    type: scheduleType('cosine'),
    lr: rate('Initial and maximum rate (torch: the optimizer\'s `lr`), >= 0.'),
    total_steps: positiveInt('Steps from lr down to min_lr, half the period (torch `T_max`), an integer >= 1.'),
    min_lr: z.number().min(0).default(D.cosine.min_lr).openapi({ description: 'Minimum rate (torch `eta_min`), >= 0 and <= lr.' }),
  })
  .strict()
  .superRefine(crossFieldRules)
  .openapi('CosineSchedule', {
    description:
      'torch.optim.lr_scheduler.CosineAnnealingLR: `lr(k) = min_lr + (lr − min_lr)(1 + cos(π k / total_steps))/2`. ' +
      'As in torch it is periodic with period 2·total_steps: past total_steps the rate rises back towards lr. Values replay torch\'s recursive get_lr() bit for bit. ' +
      'Rule: min_lr <= lr.',
  });

export const CosineRestartsScheduleSchema = z
  .object({
    type: scheduleType('cosine_restarts'),
    lr: rate('Maximum rate, used at every restart (torch: the optimizer\'s `lr`), >= 0.'),
    period: positiveInt('Length of the first period in steps (torch `T_0`), an integer >= 1.'),
    period_mult: positiveInt('Factor by which each period is longer than the previous one (torch `T_mult`), an integer >= 1.').default(D.cosine_restarts.period_mult),
    min_lr: z.number().min(0).default(D.cosine_restarts.min_lr).openapi({ description: 'Minimum rate (torch `eta_min`), >= 0 and <= lr.' }),
  })
  .strict()
  .superRefine(crossFieldRules)
  .openapi('CosineRestartsSchedule', {
    description:
      'torch.optim.lr_scheduler.CosineAnnealingWarmRestarts (SGDR): a cosine from lr towards min_lr over each period, restarting at lr; ' +
      'periods last period·period_mult^i steps. Rule: min_lr <= lr.',
  });

export const CyclicScheduleSchema = z
  .object({
    type: scheduleType('cyclic'),
    base_lr: rate('Lower bound and the rate at step 0 (torch `base_lr`), >= 0.'),
    max_lr: rate('Upper bound (torch `max_lr`), >= base_lr.'),
    step_size_up: positiveInt('Steps in the rising half of a cycle (torch `step_size_up`), an integer >= 1.').default(D.cyclic.step_size_up),
    step_size_down: positiveInt('Steps in the falling half (torch `step_size_down`), an integer >= 1; default: step_size_up.').optional(),
    mode: z
      .enum(['triangular', 'triangular2', 'exp_range'])
      .default(D.cyclic.mode)
      .openapi({ description: '`triangular`: constant amplitude; `triangular2`: the amplitude halves every cycle; `exp_range`: the amplitude is scaled by gamma^k (torch `mode`).' }),
    gamma: z.number().gt(0).max(1).default(D.cyclic.gamma).openapi({ description: 'Per-step amplitude factor of `exp_range` (torch `gamma`), in (0, 1]; ignored by the other modes.' }),
  })
  .strict()
  .superRefine(crossFieldRules)
  .openapi('CyclicSchedule', {
    description:
      'torch.optim.lr_scheduler.CyclicLR (with cycle_momentum=False): triangular waves between base_lr and max_lr, ' +
      '`lr(k) = base_lr + (max_lr − base_lr) · scale(k) · f(k)`, torch\'s closed form exactly. Rule: max_lr >= base_lr. ' +
      'With param_groups, every group steps at this rate and a group\'s `lr` has no effect, as torch\'s scalar base_lr overwrites each group\'s lr.',
  });

export const OneCycleScheduleSchema = z
  .object({
    type: scheduleType('one_cycle'),
    max_lr: rate('Peak rate (torch `max_lr`), >= 0. The optimizer\'s lr is ignored, as in torch.'),
    total_steps: positiveInt('Length of the cycle in steps (torch `total_steps`, or epochs × steps_per_epoch), an integer >= 1. From total_steps on the final rate is held.'),
    pct_start: z
      .number()
      .min(0)
      .max(1)
      .default(D.one_cycle.pct_start)
      .openapi({ description: 'Fraction of the cycle spent increasing the rate (torch `pct_start`), in [0, 1]; pct_start · total_steps must not be exactly 1.' }),
    anneal_strategy: z.enum(['cos', 'linear']).default(D.one_cycle.anneal_strategy).openapi({ description: 'Annealing shape (torch `anneal_strategy`).' }),
    div_factor: z.number().gt(0).default(D.one_cycle.div_factor).openapi({ description: 'Initial rate = max_lr / div_factor (torch `div_factor`), > 0.' }),
    final_div_factor: z
      .number()
      .gt(0)
      .default(D.one_cycle.final_div_factor)
      .openapi({ description: 'Final rate = initial rate / final_div_factor (torch `final_div_factor`), > 0.' }),
    three_phase: z
      .boolean()
      .default(D.one_cycle.three_phase)
      .openapi({ description: 'Symmetric warm-up and cool-down, then the annihilation phase (torch `three_phase`).' }),
  })
  .strict()
  .superRefine(crossFieldRules)
  .openapi('OneCycleSchedule', {
    description:
      'torch.optim.lr_scheduler.OneCycleLR (with cycle_momentum=False), with torch\'s float phase ends (pct_start·T − 1, [2·pct_start·T − 2,] T − 1). ' +
      'torch raises after one extrapolated step past the end; here every step >= total_steps holds the final rate max_lr/div_factor/final_div_factor. ' +
      'Rule: pct_start · total_steps != 1 (a zero-length warm-up, where torch divides by zero). ' +
      'With param_groups, every group steps at this rate and a group\'s `lr` has no effect, as torch\'s scalar max_lr overwrites each group\'s lr.',
  });

export const WarmupCosineScheduleSchema = z
  .object({
    type: scheduleType('warmup_cosine'),
    lr: rate('Peak rate, reached at the end of the warm-up (the optimizer\'s lr in Hugging Face), >= 0.'),
    warmup_steps: nonNegativeInt('Warm-up steps (`num_warmup_steps`), an integer >= 0 and <= total_steps.'),
    total_steps: positiveInt('Total training steps, warm-up included (`num_training_steps`), an integer >= 1.'),
    min_lr: z
      .number()
      .min(0)
      .default(D.warmup_cosine.min_lr)
      .openapi({
        description:
          'Floor of the cosine (Hugging Face `min_lr`), >= 0 and <= lr. A param group with its own lr gets the same fraction of it, ' +
          'min_lr / lr (transformers\' `min_lr_rate`: one LambdaLR for every group).',
      }),
  })
  .strict()
  .superRefine(crossFieldRules)
  .openapi('WarmupCosineSchedule', {
    description:
      'Hugging Face transformers get_cosine_schedule_with_warmup (get_cosine_with_min_lr_schedule_with_warmup with min_lr), a torch LambdaLR: ' +
      'linear from 0 at step 0 to lr at warmup_steps, then a half cosine to min_lr at total_steps. As in transformers the progress is not clamped: ' +
      'past total_steps the cosine rises again. Rules: warmup_steps <= total_steps, min_lr <= lr.',
  });

export const WarmupLinearScheduleSchema = z
  .object({
    type: scheduleType('warmup_linear'),
    lr: rate('Peak rate, reached at the end of the warm-up, >= 0.'),
    warmup_steps: nonNegativeInt('Warm-up steps (`num_warmup_steps`), an integer >= 0 and <= total_steps.'),
    total_steps: positiveInt('Total training steps, warm-up included (`num_training_steps`), an integer >= 1.'),
  })
  .strict()
  .superRefine(crossFieldRules)
  .openapi('WarmupLinearSchedule', {
    description:
      'Hugging Face transformers get_linear_schedule_with_warmup, a torch LambdaLR: linear from 0 at step 0 to lr at warmup_steps, ' +
      'then linear to 0 at total_steps, 0 afterwards. Rule: warmup_steps <= total_steps.',
  });

export const InverseSqrtScheduleSchema = z
  .object({
    type: scheduleType('inverse_sqrt'),
    lr: rate('Peak rate, used by the warmup_steps-th step (k = warmup_steps − 1), >= 0. Noam: scale · (d_model · warmup_steps)^−0.5.'),
    warmup_steps: positiveInt('Warm-up length W, an integer >= 1.'),
  })
  .strict()
  .openapi('InverseSqrtSchedule', {
    description:
      'The Transformer ("Noam") schedule with linear warm-up and inverse square root decay, rescaled to peak at lr, in the NoamOpt convention s = k + 1: ' +
      '`lr(k) = lr · min(s / W, sqrt(W / s))`. The first step uses lr/W, the W-th step (k = W − 1) uses lr.',
  });

/** Every schedule type that is a plain function of the step and does not nest (the GET routes' types). */
export const FLAT_STEP_SCHEDULE_SCHEMAS = [
  ConstantScheduleSchema,
  StepDecayScheduleSchema,
  MultistepScheduleSchema,
  ExponentialScheduleSchema,
  LinearScheduleSchema,
  PolynomialScheduleSchema,
  CosineScheduleSchema,
  CosineRestartsScheduleSchema,
  CyclicScheduleSchema,
  OneCycleScheduleSchema,
  WarmupCosineScheduleSchema,
  WarmupLinearScheduleSchema,
  InverseSqrtScheduleSchema,
] as const;

/** The child schedules a `sequential` spec may contain: every type but reduce_on_plateau. */
export const StepScheduleSpecSchema: z.ZodType<StepScheduleSpec> = z.lazy(() =>
  z
    .discriminatedUnion(
      'type',
      [...FLAT_STEP_SCHEDULE_SCHEMAS, SequentialScheduleSchema],
      { error: (issue) => unknownTypeMessage(issue, STEP_SCHEDULE_TYPES, true) },
    )
    .openapi('StepScheduleSpec', {
      description: 'A schedule that is a function of the step: any schedule type except reduce_on_plateau (which needs metrics).',
    }),
);

export const SequentialScheduleSchema = z
  .object({
    type: scheduleType('sequential'),
    schedules: z
      .array(StepScheduleSpecSchema)
      .min(1)
      .max(MAX_SEQUENTIAL_SCHEDULES)
      .openapi({
        description:
          `Schedules run one after the other (torch \`schedulers\`), 1 to ${MAX_SEQUENTIAL_SCHEDULES}; each starts from its own step 0 at its milestone. ` +
          `Any type but reduce_on_plateau; sequential may nest (${MAX_SCHEDULE_DEPTH} levels at most, ${MAX_SCHEDULE_NODES} schedules in all).`,
      }),
    milestones: z
      .array(z.number().int().min(1))
      .max(MAX_SEQUENTIAL_SCHEDULES - 1)
      .openapi({
        description:
          'Steps at which the next schedule takes over (torch `milestones`): integers >= 1, sorted, exactly one fewer than schedules. ' +
          `They count towards the spec's ${MAX_MILESTONES} milestones.`,
        example: [10],
      }),
  })
  .strict()
  .superRefine(crossFieldRules)
  .openapi('SequentialSchedule', {
    description:
      'torch.optim.lr_scheduler.SequentialLR (optax join_schedules): `lr(k) = schedules[i](k − milestones[i−1])` where i = number of milestones <= k. ' +
      'At each milestone the next schedule restarts from its step 0 (torch steps it with `step(0)`), so the rate jumps to that schedule\'s start. ' +
      'In torch all children share the optimizer\'s lr: give them the same `lr` to reproduce it. Rules: milestones sorted, ' +
      'len(milestones) = len(schedules) − 1, no reduce_on_plateau inside.',
    example: {
      type: 'sequential',
      schedules: [
        { type: 'linear', lr: 0.1, start_factor: 0.1, total_steps: 10 },
        { type: 'cosine', lr: 0.1, total_steps: 90 },
      ],
      milestones: [10],
    },
  });

export const ReduceOnPlateauScheduleSchema = z
  .object({
    type: scheduleType('reduce_on_plateau'),
    lr: rate('Initial rate (torch: the optimizer\'s `lr`), >= 0.'),
    mode: z.enum(['min', 'max']).default(D.reduce_on_plateau.mode).openapi({ description: '`min`: the metric should decrease (a loss); `max`: increase (an accuracy) (torch `mode`).' }),
    factor: z.number().min(0).lt(1).default(D.reduce_on_plateau.factor).openapi({ description: 'new lr = lr · factor (torch `factor`), in [0, 1).' }),
    patience: nonNegativeInt('Reports without improvement tolerated; the rate drops on the next one (torch `patience`), an integer >= 0.').default(D.reduce_on_plateau.patience),
    threshold: z
      .number()
      .min(0)
      .default(D.reduce_on_plateau.threshold)
      .openapi({ description: 'Smallest significant improvement (torch `threshold`), >= 0; relative or absolute per threshold_mode. Comparisons are strict.' }),
    threshold_mode: z
      .enum(['rel', 'abs'])
      .default(D.reduce_on_plateau.threshold_mode)
      .openapi({ description: '`rel`: better than best·(1 ∓ threshold); `abs`: better than best ∓ threshold (torch `threshold_mode`).' }),
    cooldown: nonNegativeInt('Reports after a reduction during which bad reports are not counted (torch `cooldown`), an integer >= 0.').default(D.reduce_on_plateau.cooldown),
    min_lr: z.number().min(0).default(D.reduce_on_plateau.min_lr).openapi({ description: 'Floor of the rate (torch `min_lr`), >= 0.' }),
    eps: z
      .number()
      .min(0)
      .default(D.reduce_on_plateau.eps)
      .openapi({ description: 'A reduction smaller than eps (absolute) is skipped (torch `eps`), >= 0.' }),
  })
  .strict()
  .openapi('ReduceOnPlateauSchedule', {
    description:
      'torch.optim.lr_scheduler.ReduceLROnPlateau: divides the rate by 1/factor when the reported metric has not improved for more than ' +
      '`patience` reports. It depends on metric reports, not on the step: evaluating it needs `metrics`, and lr[k] is the rate after k reports.',
  });

/** Every schedule type whose fields are plain values, so they can be query parameters (all but sequential). */
export const FLAT_SCHEDULE_VARIANTS = [...FLAT_STEP_SCHEDULE_SCHEMAS, ReduceOnPlateauScheduleSchema] as const;

/** Every issue of a bad `type` gets one readable message naming the allowed values. */
function unknownTypeMessage(issue: z.core.$ZodRawIssue, allowed: readonly string[], nested: boolean): string | undefined {
  if (issue.code !== 'invalid_union') return undefined;
  const input = issue.input as { type?: unknown } | undefined;
  const type = input !== null && typeof input === 'object' ? input.type : undefined;
  const list = allowed.join(', ');
  if (type === undefined) return `is required: one of ${list}`;
  if (nested && type === 'reduce_on_plateau') {
    return 'reduce_on_plateau cannot be part of sequential: it needs metrics, not steps (torch\'s SequentialLR rejects ReduceLROnPlateau too)';
  }
  return `unknown schedule type ${JSON.stringify(type)}: must be one of ${list}`;
}

/**
 * The first size bound a spec crosses (depth, schedules, milestones), with the path to name, or
 * null. Iterative, and it runs before zod recurses, so a deep or huge input cannot exhaust the
 * stack or cost more than one walk.
 */
function sizeIssue(value: unknown): { path: Array<string | number>; message: string } | null {
  let nodes = 0;
  let milestones = 0;
  const stack: Array<{ v: unknown; d: number; path: Array<string | number> }> = [{ v: value, d: 1, path: [] }];
  while (stack.length > 0) {
    const { v, d, path } = stack.pop()!;
    if (d > MAX_SCHEDULE_DEPTH) return { path: [], message: `sequential schedules nest at most ${MAX_SCHEDULE_DEPTH} levels deep` };
    if (++nodes > MAX_SCHEDULE_NODES) return { path: [], message: `holds more than ${MAX_SCHEDULE_NODES} schedules in all (nested ones included)` };
    if (v === null || typeof v !== 'object') continue;
    const list = (v as { milestones?: unknown }).milestones;
    if (Array.isArray(list) && (milestones += list.length) > MAX_MILESTONES) {
      return { path: [...path, 'milestones'], message: `brings the spec to more than ${MAX_MILESTONES} milestones in all` };
    }
    const children = (v as { schedules?: unknown }).schedules;
    if (Array.isArray(children)) {
      if (children.length > MAX_SEQUENTIAL_SCHEDULES) continue; // zod names the list itself
      for (let i = children.length - 1; i >= 0; i--) stack.push({ v: children[i], d: d + 1, path: [...path, 'schedules', i] });
    }
  }
  return null;
}

const AnyScheduleSpecSchema = z.discriminatedUnion(
  'type',
  [...FLAT_STEP_SCHEDULE_SCHEMAS, SequentialScheduleSchema, ReduceOnPlateauScheduleSchema],
  { error: (issue) => unknownTypeMessage(issue, SCHEDULE_TYPES, false) },
);

/**
 * A learning-rate schedule spec: a discriminated union on `type`, recursive through `sequential`.
 * Parsing fills in every default; the output is the `ScheduleSpec` of src/schedules.
 */
export const ScheduleSpecSchema = z
  .preprocess((value, ctx) => {
    const issue = sizeIssue(value);
    if (issue) {
      ctx.issues.push({ code: 'custom', input: value, path: issue.path, message: issue.message });
      return z.NEVER;
    }
    return value;
  }, AnyScheduleSpecSchema)
  .openapi('ScheduleSpec', {
    description:
      'A learning-rate schedule: `{"type": ..., parameters}` with PyTorch\'s parameter names (the field descriptions name the torch parameter where ours differs). ' +
      '`lr(k)` is the rate of the optimizer step taken after k completed steps (torch: param_groups[0]["lr"] after k scheduler.step() calls). ' +
      'Unknown fields are rejected; numbers must be finite. ' +
      `Size: at most ${MAX_SCHEDULE_NODES} schedules in all (nested sequential children included), ${MAX_SCHEDULE_DEPTH} levels of sequential, ` +
      `${MAX_MILESTONES} milestones in all; any valid spec is then under 40 KB of JSON.`,
  });

// The schema's output and the hand-written spec types must stay identical.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const specTypesAgree: Same<z.output<typeof AnyScheduleSpecSchema>, ScheduleSpec> = true;
void specTypesAgree;

// ---------------------------------------------------------------------------------------------
// evaluation and plot requests
// ---------------------------------------------------------------------------------------------

/** Number of steps in a range (stop exclusive). */
export function rangeLength(range: { start: number; stop: number; every: number }): number {
  return range.stop <= range.start ? 0 : Math.ceil((range.stop - range.start) / range.every);
}

export const StepRangeSchema = z
  .object({
    start: nonNegativeInt('First step, an integer >= 0.').default(0),
    stop: nonNegativeInt('End of the range, exclusive (as Python\'s range), an integer > start.'),
    every: positiveInt('Stride, an integer >= 1.').default(1),
  })
  .strict()
  .superRefine((range, ctx) => {
    const n = rangeLength(range);
    if (n === 0) ctx.addIssue({ code: 'custom', path: ['stop'], message: `must be > start (${range.start}), got ${range.stop}` });
    else if (n > MAX_EVALUATION_POINTS) {
      ctx.addIssue({ code: 'custom', path: [], message: `the range has ${n} points; at most ${MAX_EVALUATION_POINTS} are allowed (raise every or narrow start..stop)` });
    }
  })
  .openapi('StepRange', {
    description: `Steps start, start+every, … below stop (stop exclusive, like Python's range), at most ${MAX_EVALUATION_POINTS} points.`,
    example: { start: 0, stop: 1000, every: 10 },
  });

export const StepsSchema = z
  .union([
    z
      .array(z.number().int().min(0))
      .min(1)
      .max(MAX_EVALUATION_POINTS)
      .openapi({ description: `Explicit step indices (non-negative integers, any order), 1 to ${MAX_EVALUATION_POINTS}.`, example: [0, 10, 100, 1000] }),
    StepRangeSchema,
  ])
  .openapi('Steps', {
    description:
      `Where to evaluate: a list of step indices or a range object. Default: 0..${DEFAULT_STEP_COUNT - 1} ` +
      '(for reduce_on_plateau: 0..len(metrics), i.e. before any report and after each one).',
  });

/** The fields shared by the evaluate and plot requests (built per use: a shared example array would become a YAML alias). */
const evaluateShape = () => ({
  schedule: ScheduleSpecSchema,
  steps: StepsSchema.optional(),
  metrics: z
    .array(z.number())
    .max(MAX_METRICS)
    .optional()
    .openapi({
      description:
        'reduce_on_plateau only (and required there): the metric reported after each epoch, e.g. validation losses, replayed in order. ' +
        'lr[k] is then the rate after the first k reports, so steps may not exceed len(metrics).',
      example: [0.9, 0.8, 0.8, 0.8],
    }),
});

type EvaluateShape = { schedule: ScheduleSpec; steps?: number[] | { start: number; stop: number; every: number } | undefined; metrics?: number[] | undefined };

/** Largest step a request asks for. */
function maxStep(steps: NonNullable<EvaluateShape['steps']>): { value: number; index?: number } {
  if (Array.isArray(steps)) {
    let index = 0;
    steps.forEach((k, i) => {
      if (k > (steps[index] as number)) index = i;
    });
    return { value: steps[index] as number, index };
  }
  return { value: steps.start + steps.every * (rangeLength(steps) - 1) };
}

/** Rules between schedule, steps and metrics. */
function requestRules(body: EvaluateShape, ctx: z.RefinementCtx) {
  const plateau = body.schedule.type === 'reduce_on_plateau';
  if (plateau && body.metrics === undefined) {
    ctx.addIssue({ code: 'custom', path: ['metrics'], message: 'is required for reduce_on_plateau: the metric reports to replay' });
    return;
  }
  if (!plateau && body.metrics !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['metrics'], message: `is only used by reduce_on_plateau, not by ${body.schedule.type}` });
  }
  if (plateau && body.metrics !== undefined && body.steps !== undefined) {
    const top = maxStep(body.steps);
    if (top.value > body.metrics.length) {
      ctx.addIssue({
        code: 'custom',
        path: top.index === undefined ? ['steps'] : ['steps', top.index],
        message: `step ${top.value} needs ${top.value} metric reports, but metrics has ${body.metrics.length}`,
      });
    }
  }
}

export const EvaluateRequestSchema = z
  .object(evaluateShape())
  .strict()
  .superRefine(requestRules)
  .openapi('EvaluateScheduleRequest', {
    description: 'A schedule and the steps at which to evaluate it (plus the metric reports for reduce_on_plateau).',
    example: { schedule: { type: 'cosine', lr: 0.1, total_steps: 100 }, steps: { start: 0, stop: 200, every: 10 } },
  });

export type EvaluateRequest = z.output<typeof EvaluateRequestSchema>;

export const EvaluateResponseSchema = z
  .object({
    steps: z.array(z.number().int()).openapi({ description: 'The evaluated steps, in request order.' }),
    lr: z.array(z.number()).openapi({ description: 'The learning rate at each step (same length as steps).' }),
  })
  .strict()
  .openapi('EvaluateScheduleResponse', { description: 'The learning rate at each requested step.', example: { steps: [0, 50, 100], lr: [0.1, 0.05, 0] } });

export const PLOT_DEFAULTS = { width: 800, height: 450 } as const;

const plotShape = {
  log_scale: z.boolean().default(false).openapi({ description: 'Logarithmic y axis. Every plotted lr must then be > 0 (otherwise 422: start the steps after a zero warm-up step).' }),
  width: z.number().int().min(200).max(4000).default(PLOT_DEFAULTS.width).openapi({ description: 'Image width in pixels, 200 to 4000.' }),
  height: z.number().int().min(150).max(3000).default(PLOT_DEFAULTS.height).openapi({ description: 'Image height in pixels, 150 to 3000.' }),
  title: z.string().max(200).optional().openapi({ description: 'Chart title (default: the schedule type and its parameters).' }),
};

export const PlotRequestSchema = z
  .object({ ...evaluateShape(), ...plotShape })
  .strict()
  .superRefine(requestRules)
  .openapi('PlotScheduleRequest', {
    description: 'An evaluate request plus chart options.',
    example: { schedule: { type: 'one_cycle', max_lr: 0.1, total_steps: 1000 }, steps: { start: 0, stop: 1000 }, log_scale: true },
  });

export type PlotRequest = z.output<typeof PlotRequestSchema>;
