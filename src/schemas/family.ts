// zod schemas of every optimizer in the registry, derived from its definition (src/optim/<name>):
// hyperparameters with torch's names, defaults and bounds, state with torch's state_dict names,
// and the stateless step's request and response. Each becomes an OpenAPI component named after
// the optimizer (`SgdHyperparams`, `SgdState`, `SgdStepRequest`, …).

import { z } from '@hono/zod-openapi';
import { MAX_STEP } from '../optim/adam.ts';
import type { HyperparamDef, OptimizerDef, StepCounter } from '../optim/optimizer.ts';
import { MAX_NAME_LENGTH } from '../tensors/tree.ts';
import { DtypeSchema, PartialTensorTreeSchema, requiredTree, TensorTreeSchema } from './common.ts';
import { MAX_METRICS, ScheduleSpecSchema } from './schedule.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;

/** `rmsprop` → `Rmsprop`, `sparse_adam` → `SparseAdam`: the prefix of the optimizer's OpenAPI components. */
export const componentPrefix = (name: string) => name.split('_').map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join('');

/** The most completed steps a counter can express (torch's float32 tensor saturates at 2^24). */
export function maxStep(counter: StepCounter): number {
  return counter === 'float32' ? MAX_STEP : Number.MAX_SAFE_INTEGER;
}

/** One hyperparameter's zod rule, without its default. */
function hyperparamRule(def: HyperparamDef) {
  if (def.type === 'boolean') return z.boolean().openapi({ description: def.description });
  if (def.type === 'enum') return z.enum(def.values as [string, ...string[]]).openapi({ description: def.description });
  let rule = def.integer ? z.number().int() : z.number();
  if (def.min !== undefined) rule = def.minExclusive ? rule.gt(def.min) : rule.min(def.min);
  if (def.max !== undefined) rule = def.maxExclusive ? rule.lt(def.max) : rule.max(def.max);
  return rule.openapi({ description: def.description });
}

/**
 * torch writes Adam-like decays as `betas=(b1, b2)`; the API splits them into beta1/beta2. This
 * accepts torch's spelling too (not together with beta1/beta2) and rewrites it before validation.
 */
function acceptBetas(value: unknown, ctx: z.RefinementCtx): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, 'betas')) return value;
  const { betas, ...rest } = value as Record<string, unknown>;
  if (Object.hasOwn(rest, 'beta1') || Object.hasOwn(rest, 'beta2')) {
    ctx.addIssue({ code: 'custom', path: ['betas'], message: 'give either betas or beta1/beta2, not both', input: betas });
    return rest;
  }
  if (!Array.isArray(betas) || betas.length !== 2) {
    ctx.addIssue({ code: 'custom', path: ['betas'], message: 'must be [beta1, beta2] (torch `betas`)', input: betas });
    return rest;
  }
  return { ...rest, beta1: betas[0], beta2: betas[1] };
}

/** Most parameter groups in one request, and most names or patterns in one group. */
export const MAX_PARAM_GROUPS = 100;
export const MAX_GROUP_PATTERNS = 10_000;

/**
 * Gradient controls, kept with the hyperparameters (a hosted optimizer keeps them and PATCH
 * changes them): clipping as torch.nn.utils does it before `optimizer.step()`, and GradScaler's
 * skip of a step whose numbers are not finite.
 */
export const CONTROL_FIELDS = {
  clip_grad_norm: z
    .number()
    .min(0)
    .optional()
    .openapi({
      description:
        'Clip the gradients together to this L2 norm first, as `torch.nn.utils.clip_grad_norm_(params, max_norm)` (scale = min(max_norm / (total + 1e-6), 1), ' +
        'over the tensors that have a gradient); the answer then carries `grad_norm`, the total norm before clipping.',
    }),
  clip_grad_value: z
    .number()
    .min(0)
    .optional()
    .openapi({ description: 'Clamp every gradient element to [-v, v] first, as `torch.nn.utils.clip_grad_value_` (after clip_grad_norm when both are given).' }),
  nonfinite: z
    .enum(['error', 'skip'])
    .optional()
    .openapi({
      description:
        '`error` (default): a step whose result is not finite is a 422. `skip`: a step with a non-finite gradient (NaN, ±Inf) or result is skipped as ' +
        'torch.cuda.amp.GradScaler skips it: params, state and step unchanged, and the answer says `skipped: true`.',
    }),
};

export interface FamilySchemas {
  hyperparams: z.ZodType;
  hyperparamsPatch: z.ZodType;
  paramGroups: z.ZodType;
  state: z.ZodType;
  stateOut: z.ZodType;
  stepRequest: z.ZodType;
  stepResponse: z.ZodType;
  /** The non-tensor part of a safetensors step (from `__metadata__` and the query). */
  stepOptions: z.ZodType;
}

/**
 * Another spelling of one optimizer's JSON step: its state slots under other names (Adam's
 * `/v1/adam/step` keeps the m/v/v_max it was born with) and its own component names. Hyperparameters,
 * groups and the safetensors options are the optimizer's own (torch's names in files either way).
 */
export interface JsonDialect {
  /** Distinguishes the dialect's schemas from the optimizer's own in the cache. */
  key: string;
  /** The JSON name of each torch slot name that is spelled differently. */
  slotNames: Readonly<Record<string, string>>;
  /** OpenAPI component names of the step's request and response. */
  stepRequest: string;
  stepResponse: string;
}

/** A slot's name in JSON under `dialect` (torch's when the dialect does not rename it). */
export const jsonSlotName = (slot: string, dialect?: JsonDialect): string => dialect?.slotNames[slot] ?? slot;

const cache = new Map<string, FamilySchemas>();

/** `metrics` is required with a reduce_on_plateau schedule and only with it. */
function metricsGoWithPlateau(body: { schedule?: { type: string } | undefined; metrics?: number[] | undefined }, ctx: z.RefinementCtx): void {
  const plateau = body.schedule?.type === 'reduce_on_plateau';
  if (plateau && body.metrics === undefined) {
    ctx.addIssue({ code: 'custom', path: ['metrics'], message: 'is required with a reduce_on_plateau schedule (use [] before the first report)' });
  }
  if (!plateau && body.metrics !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['metrics'], message: 'is only used with a reduce_on_plateau schedule' });
  }
}

const MetricsSchema = z
  .array(z.number())
  .max(MAX_METRICS)
  .optional()
  .openapi({
    description: `Metric reports so far (e.g. validation losses), oldest first, for a \`reduce_on_plateau\` schedule (required with it, and only with it; at most ${MAX_METRICS}).`,
  });

/** The schemas of one optimizer (built once), in its own JSON spelling or a dialect's. */
export function familySchemas(def: AnyDef, dialect?: JsonDialect): FamilySchemas {
  const cacheKey = dialect ? `${def.name} ${dialect.key}` : def.name;
  const cached = cache.get(cacheKey);
  if (cached) return cached;
  // A dialect shares the optimizer's hyperparameter components (one schema per component name).
  const base = dialect ? familySchemas(def) : null;
  const slotName = (name: string) => jsonSlotName(name, dialect);
  const P = componentPrefix(def.name);
  const entries = Object.entries(def.hyperparams) as Array<[string, HyperparamDef]>;
  const hasBetas = Object.hasOwn(def.hyperparams, 'beta1') && Object.hasOwn(def.hyperparams, 'beta2');
  const betasField = hasBetas
    ? {
        betas: z
          .tuple([z.number(), z.number()])
          .optional()
          .openapi({ description: 'torch\'s spelling of beta1 and beta2, `[beta1, beta2]`; give one spelling or the other.' }),
      }
    : {};
  const withBetas = <T extends z.ZodType>(schema: T) => (hasBetas ? z.preprocess(acceptBetas, schema) : schema);

  const fields = Object.fromEntries(
    entries.map(([k, d]) => {
      const rule = hyperparamRule(d);
      // A hyperparameter torch requires (SGD's lr) stays optional here: a schedule may set it, and
      // the handler names it when neither does.
      return [k, d.default === undefined ? rule.optional() : (rule as z.ZodNumber).default(d.default as never)];
    }),
  );
  const required = entries.filter(([, d]) => d.default === undefined).map(([k]) => k);
  const hyperparams = base?.hyperparams ?? withBetas(z.object({ ...fields, ...betasField, ...CONTROL_FIELDS }).strict()).openapi(`${P}Hyperparams`, {
    description:
      `Hyperparameters of ${def.torch}, with torch's names and defaults.` +
      (required.length > 0 ? ` ${required.join(', ')} has no default (torch requires it) unless a schedule sets it.` : ' Every field is optional.'),
  });
  const hyperparamsPatch = base?.hyperparamsPatch ?? withBetas(
    z.object({ ...Object.fromEntries(entries.map(([k, d]) => [k, hyperparamRule(d).optional()])), ...betasField, ...CONTROL_FIELDS }).strict(),
  ).openapi(`${P}HyperparamsPatch`, { description: `Hyperparameters of ${def.torch} to change; the ones not named keep their values.` });

  const paramGroups = base?.paramGroups ?? z
    .array(
      withBetas(
        z
          .object({
            params: z
              .array(z.string().max(MAX_NAME_LENGTH))
              .min(1)
              .max(MAX_GROUP_PATTERNS)
              .openapi({ description: 'Tensor names (dotted, as `fc.weight`) or patterns where `*` matches any run of characters (`encoder.*`, `*.bias`).' }),
            ...Object.fromEntries(entries.map(([k, d]) => [k, hyperparamRule(d).optional()])),
            ...betasField,
          })
          .strict(),
      ),
    )
    .max(MAX_PARAM_GROUPS)
    .openapi(`${P}ParamGroups`, {
      description:
        `torch's \`param_groups\`: each group names tensors and overrides hyperparameters of ${def.torch} for them; tensors no group names use \`hyperparams\`. ` +
        'A tensor named by two groups, or a name or pattern that matches no tensor, is a 422. With a schedule, a group\'s `lr` replaces the schedule\'s `lr` ' +
        '(each child\'s, in a sequential schedule) for its tensors, as torch\'s scheduler drives a group whose initial lr is the group\'s, and may be below ' +
        'its `min_lr` (as torch runs such a group); absolute rates (`min_lr`, cyclic and one-cycle bounds) are shared, as in torch. Under `one_cycle` and ' +
        '`cyclic` a group\'s `lr` has no effect: their scalar `max_lr`/`base_lr` set every group\'s rate, as torch\'s OneCycleLR and CyclicLR overwrite ' +
        'each group\'s lr. As torch 1.13 validates only its constructor\'s defaults, the constructor\'s cross-field rules (SGD\'s nesterov needing momentum ' +
        'and zero dampening) apply to `hyperparams`, not to a group.',
    });

  const stepCount = z
    .number()
    .int()
    .min(0)
    .max(maxStep(def.stepCounter))
    .openapi({
      description:
        def.stepCounter === 'float32'
          ? `Completed steps (torch \`state["step"]\`, a float32 tensor: it saturates at 2^24 = ${MAX_STEP}).`
          : def.stepCounter === 'integer'
            ? 'Completed steps (torch `state["step"]`, a Python int).'
            : `Completed steps (${def.torch} keeps no step count; the API does, for schedules).`,
    });
  const slotFields = Object.fromEntries(
    def.slots.map((s) => [
      slotName(s.name),
      PartialTensorTreeSchema.optional().openapi({ description: `${s.description} Same structure as \`params\`; \`null\` for a tensor torch keeps none for.` }),
    ]),
  );
  const counterFields = {
    tensors: z
      .record(
        z.string(),
        z
          .object({ step: stepCount, ...Object.fromEntries(def.scalars.map((s) => [s.name, z.number().openapi({ description: s.description })])) })
          .strict(),
      )
      .optional()
      .openapi({
        description:
          'Tensors whose own step count' + (def.scalars.length > 0 ? ' or scalars differ' : ' differs') + ' from the top-level ones, by name (torch counts per parameter: ' +
          'a frozen tensor, whose gradient was null, is not counted). Absent when every tensor agrees.',
      }),
  };
  const scalarFields = Object.fromEntries(def.scalars.map((s) => [s.name, z.number().openapi({ description: s.description })]));
  // torch's SGD keeps no step: a state_dict of it has none, so the count may be left out (0).
  const stateShape = {
    step: def.stepCounter === 'none' ? stepCount.default(0) : stepCount,
    ...slotFields,
    ...Object.fromEntries(Object.entries(scalarFields).map(([k, v]) => [k, v.optional()])),
    ...counterFields,
  };
  const slotRule =
    def.slots.length === 0
      ? ''
      : ` With step > 0, every slot these hyperparameters keep is required (${def.slots.map((s) => `\`${slotName(s.name)}\``).join(', ')})` +
        (def.slots.some((s) => s.initial({} as never) === null) ? ', except one torch creates from the first gradient, which may be absent or null' : '') +
        '.';
  const state = z
    .object(stateShape)
    .strict()
    .openapi(`${P}State`, {
      description:
        `State of ${def.torch} ` +
        (dialect
          ? `(${Object.entries(dialect.slotNames).map(([torch, json]) => `\`${json}\` is torch's \`${torch}\``).join(', ')})`
          : "with torch's `state_dict` names") +
        `, as the previous step returned it. Omit it for a fresh optimizer.${slotRule}`,
    });
  const stateOut = z
    .object({
      step: stepCount,
      ...Object.fromEntries(def.slots.map((s) => [slotName(s.name), PartialTensorTreeSchema.optional().openapi({ description: `${s.description} Present when kept.` })])),
      ...scalarFields,
      ...counterFields,
    })
    .strict()
    .openapi(`${P}StateOut`, { description: 'State to send back with the next step.' });

  const stepRequest = z
    .object({
      params: requiredTree('Parameters before the step.'),
      grads: PartialTensorTreeSchema.refine((v) => v !== undefined, { message: 'is required' }).openapi({
        description: 'Gradients of the loss with respect to `params`; same structure as `params`. `null` for a frozen tensor: it and its state stay as they are.',
      }),
      state: state.optional(),
      hyperparams: hyperparams.prefault({}),
      param_groups: paramGroups.optional(),
      dtype: DtypeSchema.default('float32'),
      schedule: ScheduleSpecSchema.optional(),
      metrics: MetricsSchema,
    })
    .strict()
    .superRefine(metricsGoWithPlateau)
    .openapi(dialect?.stepRequest ?? `${P}StepRequest`, {
      // What the docs page's "Try it out" sends: a valid step of every optimizer (lr given: SGD requires it).
      example: {
        params: def.checkShape ? [[1, -2], [3, 0.5]] : [1, -2, 3],
        grads: def.checkShape ? [[0.1, -0.2], [0.3, 0.4]] : def.sparse === 'only' ? { indices: [0, 2], values: [0.1, 0.3] } : [0.1, -0.2, 0.3],
        hyperparams: { lr: 0.01 },
        dtype: 'float64',
      },
      description:
        `One ${def.torch} step's input. With \`schedule\`, the step applies \`lr = schedule(state.step)\` (for \`reduce_on_plateau\`, the ` +
        'rate after replaying `metrics`); `hyperparams.lr` must then be omitted.',
    });
  const stepResponse = z
    .object({
      params: requiredTree('Parameters after the step, in the structure of the request.'),
      state: stateOut,
      lr: z.number().openapi({ description: 'The learning rate applied in this step (to the tensors no group names).' }),
      grad_norm: z
        .number()
        .nullable()
        .optional()
        .openapi({
          description:
            'With `clip_grad_norm`: the total L2 norm of the gradients before clipping (torch\'s return value); null when it overflows the dtype ' +
            '(torch returns inf, and every gradient is then multiplied by 0). In safetensors `__metadata__` it is then `Infinity`.',
        }),
      skipped: z.boolean().optional().openapi({ description: 'With `nonfinite: "skip"`: whether the step was skipped (params and state are then as sent).' }),
    })
    .strict()
    .openapi(dialect?.stepResponse ?? `${P}StepResponse`, { description: `Parameters and ${def.torch} state after one step.` });
  const stepOptions = base?.stepOptions ?? z
    .object({
      step: stepCount.default(0),
      hyperparams: hyperparams.prefault({}),
      param_groups: paramGroups.optional(),
      tensors: counterFields.tensors,
      dtype: DtypeSchema.optional(),
      schedule: ScheduleSpecSchema.optional(),
      metrics: MetricsSchema,
      ...Object.fromEntries(def.scalars.map((s) => [s.name, z.number().optional()])),
    })
    .strict()
    .superRefine(metricsGoWithPlateau);
  const out = { hyperparams, hyperparamsPatch, paramGroups, state, stateOut, stepRequest, stepResponse, stepOptions };
  cache.set(cacheKey, out);
  return out;
}
