// zod schemas of Adam's hyperparameters, state and the stateless step request/response. They
// validate requests, type the handlers and generate openapi.yaml.

import { z } from '@hono/zod-openapi';
import { ADAM_DEFAULTS, MAX_STEP } from '../optim/adam.ts';
import { DtypeSchema, TensorTreeSchema, requiredTree } from './common.ts';
import { MAX_METRICS, ScheduleSpecSchema } from './schedule.ts';

/** Each hyperparameter's rule and description, without a default (shared by create and PATCH). */
const HYPERPARAM_FIELDS = {
  lr: z.number().min(0).openapi({ description: 'Learning rate (torch `lr`). Finite and >= 0: a negative rate would ascend. Ignored when a `schedule` sets it.' }),
  beta1: z.number().min(0).lt(1).openapi({ description: 'Exponential decay of the first moment (torch `betas[0]`), in [0, 1).' }),
  beta2: z.number().min(0).lt(1).openapi({ description: 'Exponential decay of the second moment (torch `betas[1]`), in [0, 1).' }),
  eps: z.number().min(0).openapi({ description: 'Added to the bias-corrected sqrt(v) in the denominator (torch `eps`), >= 0.' }),
  weight_decay: z.number().min(0).openapi({
    description: 'Weight decay (torch `weight_decay`), >= 0: an L2 term added to the gradient, or decoupled decay with `decoupled_weight_decay`.',
  }),
  decoupled_weight_decay: z.boolean().openapi({
    description: 'true: AdamW (torch.optim.AdamW), p *= 1 - lr*weight_decay before the update; false: Adam, grad += weight_decay*p.',
  }),
  amsgrad: z.boolean().openapi({ description: 'AMSGrad (torch `amsgrad`): normalise by the running max of v, kept in `state.v_max`.' }),
  maximize: z.boolean().openapi({ description: 'Maximise the objective instead of minimising it (torch `maximize`).' }),
};

export const AdamHyperparamsSchema = z
  .object({
    lr: HYPERPARAM_FIELDS.lr.default(ADAM_DEFAULTS.lr),
    beta1: HYPERPARAM_FIELDS.beta1.default(ADAM_DEFAULTS.beta1),
    beta2: HYPERPARAM_FIELDS.beta2.default(ADAM_DEFAULTS.beta2),
    eps: HYPERPARAM_FIELDS.eps.default(ADAM_DEFAULTS.eps),
    weight_decay: HYPERPARAM_FIELDS.weight_decay.default(ADAM_DEFAULTS.weight_decay),
    decoupled_weight_decay: HYPERPARAM_FIELDS.decoupled_weight_decay.default(ADAM_DEFAULTS.decoupled_weight_decay),
    amsgrad: HYPERPARAM_FIELDS.amsgrad.default(ADAM_DEFAULTS.amsgrad),
    maximize: HYPERPARAM_FIELDS.maximize.default(ADAM_DEFAULTS.maximize),
  })
  .strict()
  .openapi('AdamHyperparams', { description: 'Hyperparameters of torch.optim.Adam / AdamW. Every field is optional and defaults as shown.' });

/** The same fields with no defaults: a PATCH changes only what it names. */
export const AdamHyperparamsPatchSchema = z
  .object({
    lr: HYPERPARAM_FIELDS.lr.optional(),
    beta1: HYPERPARAM_FIELDS.beta1.optional(),
    beta2: HYPERPARAM_FIELDS.beta2.optional(),
    eps: HYPERPARAM_FIELDS.eps.optional(),
    weight_decay: HYPERPARAM_FIELDS.weight_decay.optional(),
    decoupled_weight_decay: HYPERPARAM_FIELDS.decoupled_weight_decay.optional(),
    amsgrad: HYPERPARAM_FIELDS.amsgrad.optional(),
    maximize: HYPERPARAM_FIELDS.maximize.optional(),
  })
  .strict()
  .openapi('AdamHyperparamsPatch', { description: 'Hyperparameters to change; the ones not named keep their current values.' });

export const StepCountSchema = z
  .number()
  .int()
  .min(0)
  .max(MAX_STEP)
  .openapi({ description: `Completed optimizer steps (torch \`state["step"]\`). torch keeps it in a float32, so it saturates at 2^24 = ${MAX_STEP}.` });

export const AdamStateSchema = z
  .object({
    step: StepCountSchema,
    m: requiredTree('First moment (torch `exp_avg`), without bias correction; same structure as `params`.'),
    v: requiredTree('Second moment (torch `exp_avg_sq`), without bias correction; same structure as `params`.'),
    v_max: TensorTreeSchema.optional().openapi({
      description: 'Running max of `v` (torch `max_exp_avg_sq`); required when `amsgrad` is true and `step` > 0, ignored otherwise.',
    }),
  })
  .strict()
  .openapi('AdamState', { description: 'Optimizer state exactly as returned by the previous step. Omit it for a fresh optimizer (step 0, zero moments).' });

export const AdamStateOutSchema = z
  .object({
    step: StepCountSchema,
    m: requiredTree('First moment (torch `exp_avg`).'),
    v: requiredTree('Second moment (torch `exp_avg_sq`).'),
    v_max: TensorTreeSchema.optional().openapi({ description: 'Running max of v (torch `max_exp_avg_sq`); present only with amsgrad.' }),
  })
  .strict()
  .openapi('AdamStateOut', { description: 'State to send back with the next step.' });

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
    example: [0.9, 0.7, 0.71],
  });

export const StepRequestSchema = z
  .object({
    params: requiredTree('Parameters before the step.'),
    grads: requiredTree('Gradients of the loss with respect to `params`; same structure as `params`.'),
    state: AdamStateSchema.optional(),
    hyperparams: AdamHyperparamsSchema.prefault({}),
    dtype: DtypeSchema.default('float32'),
    // Described on StepRequest: metadata here would overwrite the shared ScheduleSpec component.
    schedule: ScheduleSpecSchema.optional(),
    metrics: MetricsSchema,
  })
  .strict()
  .superRefine(metricsGoWithPlateau)
  .openapi('StepRequest', {
    description:
      'One step\'s input. With `schedule`, the step applies `lr = schedule(state.step)` (for `reduce_on_plateau`, the rate after ' +
      'replaying `metrics`); the schedule sets the rate, so `hyperparams.lr` must then be omitted.',
    example: { params: [1.0, -2.0, 3.0], grads: [0.1, -0.2, 0.3], hyperparams: { lr: 0.01 }, dtype: 'float64' },
  });

export type StepRequest = z.infer<typeof StepRequestSchema>;

export const StepResponseSchema = z
  .object({
    params: requiredTree('Parameters after the step, in the structure of the request.'),
    state: AdamStateOutSchema,
    lr: z.number().openapi({ description: 'The learning rate applied in this step.' }),
  })
  .strict()
  .openapi('StepResponse', { description: 'Parameters and state after one step, in the structure of the request.' });

/**
 * The non-tensor part of a safetensors stateless step, gathered from the file's `__metadata__`
 * (JSON text for objects) and the query string. Checked like the JSON body's fields.
 */
export const StepOptionsSchema = z
  .object({
    step: StepCountSchema.default(0),
    hyperparams: AdamHyperparamsSchema.prefault({}),
    dtype: DtypeSchema.optional(),
    schedule: ScheduleSpecSchema.optional(),
    metrics: MetricsSchema,
  })
  .strict()
  .superRefine(metricsGoWithPlateau);
