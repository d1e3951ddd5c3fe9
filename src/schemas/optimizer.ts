// zod schemas of the hosted-optimizer resources: creation, steps, metadata, snapshots, history.

import { z } from '@hono/zod-openapi';
import { StepCountSchema } from './adam.ts';
import { DtypeSchema, PartialTensorTreeSchema, TensorTreeSchema, requiredTree } from './common.ts';
import { MAX_PARAM_GROUPS } from './family.ts';
import {
  queryBoolean,
  queryEnum,
  queryInteger,
  queryOptionalBoolean,
  queryOptionalEnum,
  queryOptionalInteger,
  queryOptionalNumber,
  queryText,
  strictQuery,
} from './query.ts';
import { MAX_STEP } from '../optim/adam.ts';
import type { HyperparamDef } from '../optim/optimizer.ts';
import { OPTIMIZERS, OPTIMIZER_NAMES } from '../optim/registry.ts';
import { MAX_TTL_SECONDS, MIN_TTL_SECONDS } from '../lib/config.ts';
import { ScheduleSpecSchema } from './schedule.ts';
import { MAX_CONTRIBUTIONS, MAX_WAITERS, MAX_WAIT_SECONDS, MIN_CONTRIBUTIONS } from '../durable-objects/accumulate.ts';

export const OptimizerIdParam = z.object({
  id: z
    .string()
    .min(1)
    .openapi({ param: { name: 'id', in: 'path' }, description: 'Optimizer id returned at creation (64 hex digits).', example: 'a3f1…' }),
});

export const AuthHeaderSchema = z.object({
  authorization: z
    .string()
    .optional()
    .openapi({ param: { name: 'authorization', in: 'header' }, description: '`Bearer <token>`, the token returned at creation.' }),
});

export const ShapesSchema = z.unknown().refine((v) => v !== undefined).openapi('Shapes', {
  description: 'Shape of each tensor: a shape array (`[]` for a scalar) for a single tensor, or an object of names to shapes.',
  example: { 'fc.weight': [2, 3], 'fc.bias': [2] },
} as never);

/** A schedule or null. The union wraps the shared component, so its description stays its own. */
const nullableSchedule = (description: string) => z.union([ScheduleSpecSchema, z.null()]).openapi({ description });
const SCHEDULE_FIELD = 'Learning-rate schedule applied at each step instead of `hyperparams.lr`; null for none.'

/** grad_norm, in step answers and history entries. */
const GRAD_NORM =
  'With `clip_grad_norm`: the total L2 norm of the gradients before clipping (torch\'s return value); null when it overflows the dtype (torch returns inf, and every gradient is then multiplied by 0).';

const NAMES = OPTIMIZER_NAMES as [string, ...string[]];

export const OptimizerNameSchema = z.enum(NAMES).openapi({
  description: `The optimizer (GET /v1/algorithms lists each with its hyperparameters and state): ${OPTIMIZER_NAMES.join(', ')}.`,
  example: 'sgd',
});

const HYPERPARAMS_OF = 'the optimizer\'s hyperparameters with torch\'s names (the `<Name>Hyperparams` component of each optimizer, e.g. `SgdHyperparams`; GET /v1/algorithms)';

/**
 * Hyperparameters as sent: which fields are valid depends on `optimizer`, so the handler (create,
 * restore) or the object (PATCH) validates them with that optimizer's schema (src/schemas/family.ts).
 */
const HyperparamsInputSchema = (description: string) =>
  z.record(z.string(), z.unknown()).openapi({ description: `${description}: ${HYPERPARAMS_OF}; torch's \`betas: [b1, b2]\` is accepted too.` });

/**
 * param_groups as sent: which fields are valid depends on `optimizer`, so the handler (create,
 * restore) or the object (PATCH) validates them with that optimizer's `<Name>ParamGroups` schema.
 */
const PARAM_GROUPS_RULES =
  'torch\'s `param_groups` by tensor name, validated by the optimizer\'s `<Name>ParamGroups` schema (e.g. `SgdParamGroups`): each group lists tensor names or ' +
  'patterns (`*` matches any run of characters: `encoder.*`, `*.bias`) in `params` and overrides any hyperparameter for those tensors (`lr` included; a field it ' +
  'does not give follows `hyperparams`, also after a PATCH of them); tensors no group names use `hyperparams`. A tensor named by two groups, or a pattern that ' +
  'matches no tensor, is a 422 naming it. The optimizer keeps them and applies them at every step, as the stateless step does; with a schedule, each group\'s ' +
  'lr follows it as torch\'s scheduler drives a group whose initial lr is the group\'s `lr` (which may be below the schedule\'s `min_lr`); under `one_cycle` ' +
  'and `cyclic` a group\'s `lr` has no effect, as torch\'s scalar max_lr/base_lr overwrite each group\'s lr.';
const ParamGroupsInputSchema = (description: string) =>
  z
    .array(z.record(z.string(), z.unknown()))
    .max(MAX_PARAM_GROUPS)
    .openapi({ description: `${description} ${PARAM_GROUPS_RULES}` });

/** param_groups as answered (metadata, snapshots). */
export const HostedParamGroupsSchema = z
  .array(
    z
      .object({ params: z.array(z.string()).openapi({ description: 'Tensor names or patterns (`*` matches any run of characters).' }) })
      .catchall(z.union([z.number(), z.boolean(), z.string()]))
      .openapi({ description: 'One group: its tensors, and the hyperparameters it sets for them (torch\'s names).' }),
  )
  .openapi('HostedParamGroups', {
    description:
      'torch\'s `param_groups` as set (at creation, by PATCH or by a restore), each with only the hyperparameters it overrides; tensors no group names use ' +
      '`hyperparams`. Each group\'s lr (its own, scheduled from it with a schedule) applies at every step. Absent when there are none.',
    example: [{ params: ['*.bias', 'norm.*'], weight_decay: 0 }, { params: ['head.*'], lr: 0.01 }],
  });

/** Hyperparameters as answered: numbers and flags by torch's names. */
export const HostedHyperparamsSchema = z
  .record(z.string(), z.union([z.number(), z.boolean(), z.string()]))
  .openapi('HostedHyperparams', { description: `The hyperparameters in force: ${HYPERPARAMS_OF}, defaults filled in.` });

/** Every slot and scalar name of the registry, with the optimizers that keep it: the snapshot's optional fields. */
function stateFields(kind: 'slot' | 'scalar') {
  const owners = new Map<string, { description: string; names: string[] }>();
  for (const def of OPTIMIZERS) {
    for (const entry of kind === 'slot' ? def.slots : def.scalars) {
      const o = owners.get(entry.name) ?? { description: entry.description, names: [] };
      o.names.push(def.name);
      owners.set(entry.name, o);
    }
  }
  return [...owners].map(([name, o]) => [name, `${o.description} (${o.names.join(', ')}${name === 'exp_avg' || name === 'exp_avg_sq' || name === 'max_exp_avg_sq' ? '; `adam` snapshots name it ' + ({ exp_avg: '`m`', exp_avg_sq: '`v`', max_exp_avg_sq: '`v_max`' } as Record<string, string>)[name] : ''})`] as const);
}
const SLOT_FIELDS = stateFields('slot');
const SCALAR_FIELDS = stateFields('scalar');
/** The snapshot fields holding state slots (every registry slot name) and scalars. */
export const SNAPSHOT_SLOT_FIELDS = SLOT_FIELDS.map(([name]) => name);
export const SNAPSHOT_SCALAR_FIELDS = SCALAR_FIELDS.map(([name]) => name);
const slotTrees = (extra: string) =>
  Object.fromEntries(
    SLOT_FIELDS.map(([name, d]) => [
      name,
      PartialTensorTreeSchema.optional().openapi({ description: `${d}.${extra}. A tensor's is \`null\` where torch keeps none for it (e.g. SGD's momentum_buffer in a param group without momentum).` }),
    ]),
  );

/** Per-tensor counters of a snapshot: torch counts per parameter. */
const SnapshotCountersSchema = z
  .record(z.string(), z.record(z.string(), z.number()))
  .optional()
  .openapi({
    description:
      'Tensors whose step count or scalar state differs from the top-level one, by name (torch keeps them per parameter: a tensor frozen by a `null` ' +
      'gradient keeps its count; NAdam\'s `mu_product` in a param group with other `beta1` or `momentum_decay`), as `{"<name>": {"step": n, "mu_product": x}}`; ' +
      'absent when every tensor agrees. A PUT restores each tensor\'s own (`step` omitted: the snapshot\'s).',
  });
const scalarNumbers = () => Object.fromEntries(SCALAR_FIELDS.map(([name, d]) => [name, z.number().optional().openapi({ description: `${d}.` })]));

const TTL_RULE =
  `Time-to-live in seconds (${MIN_TTL_SECONDS}..${MAX_TTL_SECONDS}): the optimizer deletes itself, with everything stored for it, once this long ` +
  'has passed since its last successful call (any call with its token counts: steps, reads, uploads, PATCH).';

export const TtlSchema = z.number().int().min(MIN_TTL_SECONDS).max(MAX_TTL_SECONDS);

const ACCUMULATE_RULE =
  'Many workers, one optimizer: each step takes `contributions` gradients, one from each worker id 0..contributions-1 (POST .../step?worker=i with ' +
  '`expected_step`), and is applied once the set is complete, with their mean or sum computed in ascending worker id order in the optimizer\'s dtype: ' +
  '`acc = g0; acc = acc + g1; …; acc = acc + g(N-1)`, then for `mean` `acc / N` (numpy: `((g0 + g1) + g2 + …) / np.float32(N)`). Until then each ' +
  'contribution is stored and answered 202.';

export const AccumulateSchema = z
  .object({
    contributions: z.number().int().min(MIN_CONTRIBUTIONS).max(MAX_CONTRIBUTIONS).openapi({ description: `Contributions (workers) per step, ${MIN_CONTRIBUTIONS}..${MAX_CONTRIBUTIONS}.` }),
    reduce: z.enum(['mean', 'sum']).default('mean').openapi({ description: '`mean` (the default: the sum divided by `contributions`) or `sum` of the contributions.' }),
  })
  .strict()
  .openapi('Accumulate', { description: ACCUMULATE_RULE, example: { contributions: 4, reduce: 'mean' } });

export const AccumulateInfoSchema = z
  .object({
    contributions: z.number().int().openapi({ description: 'Contributions per step.' }),
    reduce: z.enum(['mean', 'sum']).openapi({ description: '`mean` or `sum` of the contributions.' }),
    received: z.array(z.number().int()).openapi({ description: 'Worker ids whose contribution to the pending step (step + 1) is held, ascending.' }),
    missing: z.number().int().openapi({ description: 'Contributions the pending step still waits for.' }),
  })
  .strict()
  .openapi('AccumulateInfo', { description: `${ACCUMULATE_RULE} Absent on an optimizer that steps on every gradient.` });

export const ShardsSchema = z
  .number()
  .int()
  .min(1)
  .max(256)
  .openapi({
    description:
      'Durable Objects holding the tensors (1..256). Absent: one, or, when the params exceed what one object holds (`max_elements`), the fewest that hold ' +
      'them. Above one, the optimizer is sharded: tensors placed whole where they fit, else split on row boundaries (docs/scale-out.md); every step is applied ' +
      'by all shards or by none, and equals the unsharded step bit for bit (param_groups, clipping, frozen tensors, per-tensor step counts and accumulate ' +
      'and sparse rows included). A checkpoint of another layout or dtype (PUT state) is placed again: over as many shards when it fits them, else the fewest.',
    example: 4,
  });

export const CreateOptimizerSchema = z
  .object({
    params: TensorTreeSchema.optional().openapi({
      description: 'Initial parameters; they fix the structure every gradient must have. Send either `params` or `shapes`.',
    }),
    shapes: ShapesSchema.optional().openapi({
      description:
        'Instead of `params`, for models too large for one request: the shape of each tensor (`{"fc.weight": [2, 3], "fc.bias": [2]}`, ' +
        'or one shape array for a single tensor). The params start as `init` and must all be uploaded with PUT .../params before the first step (409 until then).',
    }),
    init: z.enum(['zeros']).optional().openapi({ description: 'With `shapes`: what the params hold until uploaded (`zeros`, the default).' }),
    optimizer: OptimizerNameSchema.default('adam'),
    hyperparams: HyperparamsInputSchema('Of `optimizer`; every field has torch\'s default except a required one (SGD\'s `lr`, unless a schedule sets it, or every tensor is in a group that sets it)').optional(),
    param_groups: ParamGroupsInputSchema('Optional (none: every tensor uses `hyperparams`).').optional(),
    schedule: nullableSchedule(SCHEDULE_FIELD).optional(),
    dtype: DtypeSchema.default('float32'),
    ttl: TtlSchema.optional().openapi({ description: `${TTL_RULE} Default: the server's OPTIMIZER_TTL (30 days unless configured).` }),
    accumulate: AccumulateSchema.optional().openapi({ description: `Optional: ${ACCUMULATE_RULE} Absent: every gradient is a step.` }),
    shards: ShardsSchema.optional(),
  })
  .strict()
  .superRefine((body, ctx) => {
    if ((body.params === undefined) === (body.shapes === undefined)) {
      ctx.addIssue({ code: 'custom', path: [body.params === undefined ? 'params' : 'shapes'], message: body.params === undefined ? 'is required (or `shapes`)' : 'cannot be sent together with `params`' });
    }
    if (body.init !== undefined && body.shapes === undefined) ctx.addIssue({ code: 'custom', path: ['init'], message: 'applies to `shapes` only' });
  })
  .openapi('CreateOptimizer', {
    description:
      'A new hosted optimizer of any kind (`optimizer`, default `adam`), from `params` or from `shapes` (then uploaded in parts). `schedule` (optional, null for none) sets the learning rate of each step instead of `hyperparams.lr`.',
    example: { optimizer: 'sgd', params: { w: [0, 0], b: 0 }, hyperparams: { lr: 0.1, momentum: 0.9 }, dtype: 'float32' },
  });

export const LayoutEntrySchema = z
  .object({
    name: z.string().openapi({ description: 'The tensor\'s name: its path joined with dots, as torch names parameters (`""` for a single unnamed tensor).' }),
    shape: z.array(z.number().int()).openapi({ description: 'Its shape (`[]` for a scalar).' }),
    offset: z.number().int().openapi({ description: 'Index of its first element among all params (raw bodies: byte offset = offset × 4 for float32, × 8 for float64).' }),
    size: z.number().int().openapi({ description: 'Its number of elements.' }),
  })
  .strict()
  .openapi('LayoutEntry', { description: 'One tensor of a hosted optimizer.' });

export const UploadStatusSchema = z
  .object({
    complete: z.boolean().openapi({ description: 'Every param has a value: steps are possible.' }),
    missing_elements: z.number().int().openapi({ description: 'Param elements not uploaded yet (optimizers created by `shapes`).' }),
    missing_tensors: z.array(z.string()).openapi({ description: 'Names of the tensors still waiting for elements (the first 100).' }),
  })
  .strict()
  .openapi('UploadStatus', { description: 'Whether the params of an optimizer created by `shapes` have all been uploaded.' });

const Timestamp = z.string().openapi({ description: 'ISO 8601 time (UTC).', example: '2026-11-26T00:00:00.000Z' });

export const OptimizerInfoSchema = z
  .object({
    id: z.string().openapi({ description: 'Optimizer id (the Durable Object id).' }),
    optimizer: OptimizerNameSchema,
    step: StepCountSchema,
    skipped_steps: z.number().int().min(0).openapi({
      description:
        'Steps skipped by `nonfinite: "skip"` since creation (each is also in the history with `skipped: true`); a retried Idempotency-Key does not count again. ' +
        'A counter of this hosted optimizer, like its history, not torch state: snapshots do not carry it and PUT /state keeps it. 0 for optimizers stored before it was counted.',
    }),
    hyperparams: HostedHyperparamsSchema,
    param_groups: HostedParamGroupsSchema.optional(),
    max_elements: z.number().int().openapi({
      description:
        'Most parameter elements one Durable Object of this kind and dtype holds: MAX_HOSTED_BYTES / ((2 + slots) × 4 or 8 bytes), params, the gradient buffer and every state slot the optimizer can keep. Larger models are sharded over up to 256 objects (`shards`); beyond that a 413.',
    }),
    schedule: nullableSchedule(SCHEDULE_FIELD),
    next_lr: z.number().nullable().openapi({ description: 'Learning rate the next step will apply; null when the schedule overflows there, or when reaching it would replay more of torch\'s recursive schedule than one step may (that step would be rejected with a 422).' }),
    dtype: DtypeSchema,
    shapes: ShapesSchema,
    size: z.number().int().openapi({ description: 'Total number of parameter elements.' }),
    layout: z.array(LayoutEntrySchema).openapi({
      description:
        'Every tensor in storage order: the order of raw bodies (each tensor\'s elements row-major, at `offset` × the item size in bytes) and the names of safetensors files.',
    }),
    upload: UploadStatusSchema,
    created_at: Timestamp,
    updated_at: Timestamp,
    ttl: z.number().int().openapi({ description: TTL_RULE }),
    expires_at: Timestamp.openapi({ description: 'When the optimizer deletes itself unless it is called before: its last successful call plus `ttl`. ISO 8601 (UTC).' }),
    accumulate: AccumulateInfoSchema.optional(),
    shards: z.number().int().min(1).openapi({ description: 'Durable Objects holding the tensors: 1, or the shard count of a sharded optimizer (see `shards` at create).' }),
  })
  .strict()
  .openapi('OptimizerInfo', { description: 'Metadata of a hosted optimizer.' });

export const CreatedOptimizerSchema = OptimizerInfoSchema.extend({
  token: z.string().openapi({
    description: 'Bearer token for every later call. Shown only here; the service stores only its SHA-256 hash.',
  }),
})
  .strict()
  .openapi('CreatedOptimizer', { description: 'A new hosted optimizer: its metadata and its bearer token.' });

export const OptimizerSummarySchema = z
  .object({
    id: z.string().openapi({ description: 'Optimizer id.' }),
    optimizer: OptimizerNameSchema,
    step: StepCountSchema,
    size: z.number().int().openapi({ description: 'Total number of parameter elements (what counts against KEY_MAX_ELEMENTS).' }),
    dtype: DtypeSchema,
    created_at: Timestamp,
    updated_at: Timestamp.openapi({ description: 'Time of its last change (step, upload, restore, PATCH). ISO 8601 (UTC).' }),
    expires_at: Timestamp.openapi({ description: 'When it deletes itself unless it is called before. ISO 8601 (UTC).' }),
  })
  .strict()
  .openapi('OptimizerSummary', { description: 'A hosted optimizer as the listing shows it (its token is not shown: it was shown once, at creation).' });

const KeyCountsSchema = (what: string) =>
  z
    .object({
      optimizers: z.number().int().openapi({ description: `Hosted optimizers: ${what}.` }),
      elements: z.number().int().openapi({ description: `Parameter elements of all of them together: ${what}.` }),
    })
    .strict();

export const OptimizerListSchema = z
  .object({
    optimizers: z.array(OptimizerSummarySchema).openapi({ description: 'This page of the optimizers created with this API key, oldest first.' }),
    next_cursor: z
      .string()
      .nullable()
      .openapi({ description: 'Pass as `cursor` for the next page; null on the last page. Opaque: only a value given here is valid.' }),
    usage: KeyCountsSchema('what this key holds now (creations under way included)').openapi('KeyUsage', { description: 'What the API key holds.' }),
    limits: KeyCountsSchema('the most this key may hold (KEY_MAX_OPTIMIZERS, KEY_MAX_ELEMENTS)').openapi('KeyLimits', {
      description: 'The API key\'s quotas; creating (or restoring) beyond them is a 403.',
    }),
  })
  .strict()
  .openapi('OptimizerList', { description: 'The hosted optimizers of the request\'s API key, a page at a time, with its usage and quotas.' });

export const ListQuerySchema = strictQuery({
  limit: queryInteger({ min: 1, max: 100, default: 50, description: 'Most optimizers on this page (1..100), in decimal digits.' }),
  cursor: queryText({ description: 'Where to continue: the `next_cursor` of the previous page; absent for the first page.' }),
});

export const TokenSchema = z
  .object({
    id: z.string().openapi({ description: 'Optimizer id.' }),
    token: z.string().openapi({ description: 'The new bearer token for every later call; shown only here. The previous token no longer works.' }),
  })
  .strict()
  .openapi('OptimizerToken', { description: 'A new bearer token for a hosted optimizer.' });

export const HostedStepRequestSchema = z
  .object({
    grads: PartialTensorTreeSchema.refine((v) => v !== undefined, { message: 'is required' }).openapi({
      description:
        'Gradients with exactly the structure of the optimizer\'s params. `null` for a frozen tensor (torch skips a parameter whose `.grad` is None): it, its ' +
        'state and its own step count stay as they are (safetensors bodies: a tensor left out of the file; raw bodies carry every tensor). For SGD, Adagrad ' +
        'and SparseAdam (which takes nothing else) a tensor\'s gradient may be sparse rows of its first dimension, `{"indices": [r0, ...], "values": ' +
        '[[row r0], ...]}`, as on their stateless steps (torch\'s refusals, clipping and retries as there).',
    }),
    loss: z.number().optional().openapi({
      description: 'Loss at the params before this step: recorded in the history and, with a `reduce_on_plateau` schedule, reported as its metric after the step.',
    }),
    expected_step: StepCountSchema.optional().openapi({
      description: 'Apply only if the optimizer has completed exactly this many steps (409 otherwise): guards against stale or duplicated updates.',
    }),
  })
  .strict()
  .openapi('HostedStepRequest', {
    description: 'One gradient for a hosted optimizer.',
    example: { grads: { w: [0.5, -0.25], b: 0.1 }, loss: 0.75 } });

export const ReturnQuerySchema = strictQuery({
  return: queryEnum(['params', 'none'], { default: 'params', description: '`none` omits the params from the response.' }),
});

/** The step's query: `return`, and for binary bodies (which carry only the gradients) `loss` and `expected_step`. */
export const HostedStepQuerySchema = strictQuery({
  return: queryEnum(['params', 'none'], { default: 'params', description: '`none` omits the params from the response.' }),
  loss: queryOptionalNumber({ description: 'Binary bodies only (JSON bodies carry `loss` themselves): the loss, as in the JSON body.' }),
  expected_step: queryOptionalInteger({ min: 0, max: MAX_STEP, description: 'Binary bodies only: apply only at this step (409 otherwise), as in the JSON body.' }),
  worker: queryOptionalInteger({
    min: 0,
    max: MAX_CONTRIBUTIONS - 1,
    description:
      'Optimizers with `accumulate` only (required there, 422 elsewhere), any body format: this worker\'s id, 0..contributions-1; the gradient is its contribution ' +
      'to step `expected_step` + 1 (`expected_step` is then required). A 202 answers until the last contribution arrives; that one steps (200).',
  }),
  part_offset: queryOptionalInteger({
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
    description:
      'Sharded optimizers, raw bodies only: a step sent in parts, for a gradient larger than one request may carry (100 MB on most plans). The body holds ' +
      'elements [part_offset, part_offset + n) of the layout, n = Content-Length / the dtype\'s size; every part carries the same `Idempotency-Key` (required) ' +
      'and dtype, and they come in order: 0, then where the last one ended (409 otherwise, naming it). Each part but the last answers 202; the part that ' +
      'reaches the last element applies the step and answers as a whole step does. A part received before, sent again, answers the same (after the step, as the step: other bytes, offsets or lengths under its key are a 422); a part at 0 under a new key starts over.',
  }),
});

/** GET params: optionally wait for a step (workers of an accumulating optimizer wait for the step they contributed to). */
export const ParamsQuerySchema = strictQuery({
  min_step: queryOptionalInteger({
    min: 0,
    max: MAX_STEP,
    description: 'Answer only params of at least this many completed steps: if the optimizer has not reached it after `wait` seconds, a 409 (with `step`, the current count).',
  }),
  wait: queryInteger({
    min: 0,
    max: MAX_WAIT_SECONDS,
    default: 0,
    description: `With \`min_step\`: seconds (0..${MAX_WAIT_SECONDS}) to wait for that step to land before answering (long-poll; the answer comes as soon as it lands; at most ${MAX_WAITERS} requests wait at once per optimizer, more are answered at once). Default 0: no wait.`,
  }),
});

export const ContributionPendingSchema = z
  .object({
    pending: z.literal(true).openapi({ description: 'The contribution is stored; the step waits for the others.' }),
    worker: z.number().int().openapi({ description: 'This contribution\'s worker id.' }),
    step: StepCountSchema.openapi({ description: 'Completed steps: the pending step makes it step + 1 (wait for it with GET params?min_step=step+1&wait=30).' }),
    contributions: z.number().int().openapi({ description: 'Contributions per step.' }),
    reduce: z.enum(['mean', 'sum']).openapi({ description: '`mean` or `sum` of the contributions.' }),
    received: z.array(z.number().int()).openapi({ description: 'Worker ids whose contribution to the pending step is held, ascending (this one included).' }),
    missing: z.number().int().openapi({ description: 'Contributions still missing.' }),
    replayed: z.boolean().openapi({ description: 'true when this worker had already sent this very contribution (same values and loss): nothing new was stored.' }),
  })
  .strict()
  .openapi('ContributionPending', { description: 'A contribution to an accumulated step, stored durably; the step is applied when the last one arrives.' });

export const StepPartSchema = z
  .object({
    part: z.literal(true).openapi({ description: 'This part of a step in parts is stored; the step waits for the rest.' }),
    step: StepCountSchema.openapi({ description: 'Completed steps: the last part makes it step + 1.' }),
    offset: z.number().int().openapi({ description: 'The element this part started at.' }),
    received: z.number().int().openapi({ description: 'Elements received so far: the next part starts here.' }),
    missing: z.number().int().openapi({ description: 'Elements still to send.' }),
    replayed: z.boolean().openapi({ description: 'true when this part had already been received (the same bytes): nothing new was stored.' }),
  })
  .strict()
  .openapi('StepPart', { description: 'A part of a step sent in parts (`part_offset`), stored durably by the shards; the last part applies the step.' });

/** Every hyperparameter name of the registry as a query parameter (validated by the chosen optimizer's schema). */
function registryHyperparamQuery(what: string) {
  const seen = new Map<string, { def: HyperparamDef; names: string[] }>();
  for (const def of OPTIMIZERS) {
    for (const [k, d] of Object.entries(def.hyperparams) as Array<[string, HyperparamDef]>) {
      const o = seen.get(k) ?? { def: d, names: [] };
      o.names.push(def.name);
      seen.set(k, o);
    }
  }
  return Object.fromEntries(
    [...seen].map(([k, o]) => {
      const description = `${what}: torch \`${k}\` (${o.names.length === OPTIMIZERS.length ? 'every optimizer' : o.names.join(', ')}).`;
      if (o.def.type === 'boolean') return [k, queryOptionalBoolean({ description })];
      if (o.def.type === 'enum') return [k, queryOptionalEnum(o.def.values as [string, ...string[]], { description })];
      return [k, o.def.integer ? queryOptionalInteger({ min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER, description }) : queryOptionalNumber({ description })];
    }),
  );
}

/** Create's query: optimizer, hyperparameters and dtype for a safetensors body. */
export const CreateQuerySchema = strictQuery({
  optimizer: queryOptionalEnum(NAMES, { description: 'Safetensors bodies only: the optimizer (default `adam`, or `__metadata__.optimizer`).' }),
  ...registryHyperparamQuery('Safetensors bodies only'),
  dtype: queryOptionalEnum(['float32', 'float64'], { description: 'Safetensors bodies only: `float32` or `float64` (default: float64 if any params tensor is F64, else float32).' }),
  ttl: queryOptionalInteger({ min: MIN_TTL_SECONDS, max: MAX_TTL_SECONDS, description: `Safetensors bodies only: ${TTL_RULE}` }),
});

/** Headers of the mutating routes besides the step: the token, and `If-Match` (412 when stale). */
export const ConditionalHeadersSchema = AuthHeaderSchema.extend({
  'if-match': z
    .string()
    .optional()
    .openapi({
      param: { name: 'if-match', in: 'header' },
      description: 'An ETag from an earlier answer: the change is made only if the optimizer is still in that state (412 otherwise, and nothing changes). `*` matches any state.',
    }),
});

export const StepHeadersSchema = AuthHeaderSchema.extend({
  'idempotency-key': z
    .string()
    .min(1)
    .max(255)
    .optional()
    .openapi({
      param: { name: 'idempotency-key', in: 'header' },
      description:
        'Any unique string per logical step (e.g. a UUID). A retry with the same key returns the original step and lr without applying the gradient again; the last 256 keys are kept. Reusing a key with different gradients is a 422.',
    }),
  'if-match': z
    .string()
    .optional()
    .openapi({
      param: { name: 'if-match', in: 'header' },
      description: 'The ETag of the state the gradient was computed against (from GET params or a previous step); 412 if the optimizer has changed since.',
    }),
});

export const HostedStepResponseSchema = z
  .object({
    step: StepCountSchema,
    lr: z.number().openapi({ description: 'Learning rate applied by this step.' }),
    params: TensorTreeSchema.optional().openapi({
      description: 'Parameters after the step (omitted with `?return=none`, and on a replay once later steps have been applied).',
    }),
    replayed: z.boolean().optional().openapi({ description: 'true when this answers a retried Idempotency-Key: nothing was applied again.' }),
    grad_norm: z.number().nullable().optional().openapi({ description: `${GRAD_NORM} A replay answers the original step's.` }),
    skipped: z.boolean().optional().openapi({
      description:
        'With `nonfinite: "skip"`: whether the step was skipped (params, state, step and ETag unchanged; counted in `skipped_steps` and recorded in the history); a replay answers the original step\'s.',
    }),
  })
  .strict()
  .openapi('HostedStepResponse', { description: 'The result of one hosted step.' });

export const ParamsResponseSchema = z
  .object({ step: StepCountSchema, params: requiredTree('Parameters in the structure given at creation.') })
  .strict()
  .openapi('OptimizerParams', { description: 'The current parameters and the step count they belong to.' });

export const PlateauStateSchema = z
  .object({
    lr: z.number().min(0).openapi({ description: 'Current learning rate (torch `param_groups[0]["lr"]`).' }),
    best: z.number().nullable().openapi({ description: 'Best metric so far (torch `best`); null before the first report.' }),
    num_bad_epochs: z.number().int().min(0).openapi({ description: 'Reports without improvement (torch `num_bad_epochs`).' }),
    cooldown_counter: z.number().int().min(0).openapi({ description: 'Reports left in the cooldown (torch `cooldown_counter`).' }),
    num_reports: z.number().int().min(0).openapi({ description: 'Metric reports so far.' }),
    group_lrs: z
      .array(z.number().min(0).nullable())
      .optional()
      .openapi({
        description:
          'With `param_groups`: the current rate of each group that sets its own `lr` (null for a group that does not: it follows `lr`), reduced on its own as ' +
          'torch reduces each param group\'s rate (max(lr·factor, min_lr), if that lowers it by more than eps) at the same reports. Absent without groups; ' +
          'absent in a restored snapshot: each group starts at its `lr`.',
      }),
  })
  .strict()
  .nullable()
  .openapi('PlateauState', { description: 'State of a `reduce_on_plateau` schedule; null for every other schedule.' });

export const SnapshotSchema = z
  .object({
    id: z.string().optional().openapi({ description: 'Read-only; ignored by PUT.' }),
    optimizer: OptimizerNameSchema,
    step: StepCountSchema,
    dtype: DtypeSchema,
    hyperparams: HostedHyperparamsSchema,
    param_groups: HostedParamGroupsSchema.optional(),
    schedule: nullableSchedule(SCHEDULE_FIELD),
    scheduler_state: PlateauStateSchema.optional(),
    params: requiredTree('Current parameters.'),
    m: PartialTensorTreeSchema.optional().openapi({ description: '`adam` only: first moment (torch `exp_avg`).' }),
    v: PartialTensorTreeSchema.optional().openapi({ description: '`adam` only: second moment (torch `exp_avg_sq`).' }),
    v_max: PartialTensorTreeSchema.optional().openapi({ description: '`adam` only: running max of v (torch `max_exp_avg_sq`); present once a step with amsgrad made it, kept unchanged while amsgrad is off (`null` for a tensor that never had it).' }),
    ...slotTrees(' Present when the optimizer keeps it; same structure as `params`'),
    ...scalarNumbers(),
    tensors: SnapshotCountersSchema,
    created_at: Timestamp.optional().openapi({ description: 'Read-only; ignored by PUT.' }),
    updated_at: Timestamp.optional().openapi({ description: 'Read-only; ignored by PUT.' }),
  })
  .strict()
  .openapi('OptimizerSnapshot', {
    description:
      'Everything the optimizer holds, its state by torch\'s `state_dict` names (`momentum_buffer`, `square_avg`, `sum`, `exp_avg`, …, and scalars like `mu_product`); ' +
      '`adam` keeps the names `m`, `v`, `v_max` of /v1/adam/step. GET it to back up; PUT it (or an edited copy) to restore.',
  });

export const SnapshotInputSchema = z
  .object({
    id: z.string().optional().openapi({ description: 'Ignored.' }),
    optimizer: OptimizerNameSchema.optional().openapi({ description: 'The optimizer the snapshot belongs to (absent: `adam`, as snapshots made before other optimizers); it must be the optimizer\'s own (422 otherwise).' }),
    step: StepCountSchema,
    // A snapshot is complete: nothing silently falls back to a default or to the current value.
    dtype: DtypeSchema,
    hyperparams: HyperparamsInputSchema('Of the snapshot\'s optimizer (fields it does not name take torch\'s defaults)'),
    param_groups: ParamGroupsInputSchema('The snapshot\'s groups (absent: none).').optional(),
    schedule: nullableSchedule('Schedule to restore (null: none).'),
    scheduler_state: PlateauStateSchema.optional(),
    params: requiredTree('Parameters; may change shapes, within the element limit.'),
    m: PartialTensorTreeSchema.optional().openapi({ description: '`adam`: first moment (or `exp_avg`), structure of `params`.' }),
    v: PartialTensorTreeSchema.optional().openapi({ description: '`adam`: second moment (or `exp_avg_sq`), structure of `params`, non-negative.' }),
    v_max: PartialTensorTreeSchema.optional().openapi({ description: '`adam`: running max of v (or `max_exp_avg_sq`); required with amsgrad when step > 0.' }),
    ...slotTrees(' Structure of `params`; with step > 0 every slot the hyperparameters keep is required, except one torch creates from the first gradient (SGD\'s momentum_buffer), which may be null or absent'),
    ...scalarNumbers(),
    tensors: SnapshotCountersSchema,
    created_at: z.string().optional().openapi({ description: 'Ignored.' }),
    updated_at: z.string().optional().openapi({ description: 'Ignored.' }),
  })
  .strict()
  .openapi('OptimizerSnapshotInput', {
    description:
      'A complete snapshot to restore atomically, as returned by GET .../state: step, dtype, hyperparams, schedule, params and, with step > 0, the state ' +
      'the hyperparameters keep, by torch\'s names (`adam`: m, v, v_max) are required (fields inside hyperparams default as usual); read-only fields are ignored.',
  });

export const PatchOptimizerSchema = z
  .object({
    hyperparams: HyperparamsInputSchema('Hyperparameters to change (the ones not named keep their values), validated against the optimizer\'s schema; a change that adds a state slot starts it fresh; one that turns a slot off (momentum, centered, amsgrad) keeps it unread and unchanged, and turning it back on resumes from it, as torch does').optional(),
    param_groups: z
      .union([ParamGroupsInputSchema('New groups, replacing the ones set (omitted: unchanged).'), z.null()])
      .optional()
      .openapi({
        description:
          'New param_groups replacing the ones set (`null`: none any more, every tensor uses `hyperparams`; omitted: unchanged), validated and matched as at ' +
          'creation. Each tensor keeps its state; one whose new group keeps a slot it lacks starts it fresh. With reduce_on_plateau, each new group starts at its lr.',
      }),
    schedule: nullableSchedule('New schedule (null removes it; omitted: unchanged). A new schedule restarts reduce_on_plateau\'s state.').optional(),
    ttl: TtlSchema.optional().openapi({ description: `New time-to-live (omitted: unchanged). ${TTL_RULE} The deadline becomes now plus this.` }),
    accumulate: z
      .union([AccumulateSchema, z.null()])
      .optional()
      .openapi({
        description:
          'New accumulate setting (`null`: off, every gradient a step; omitted: unchanged). Refused (409) while contributions to the pending step are held, ' +
          'unless it is the current setting; other fields may change then and apply to that step when it completes.',
      }),
  })
  .strict()
  .openapi('PatchOptimizer', {
    description: 'Changes to a hosted optimizer; unknown fields are rejected.',
    example: { hyperparams: { lr: 0.0005 } } });

const historyLimit = () => queryInteger({ min: 1, max: 10_000, default: 1000, description: 'Most recent entries to return (1..10000), in decimal digits.' });

export const HistoryQuerySchema = strictQuery({ limit: historyLimit() });

export const HistoryPlotQuerySchema = strictQuery({
  limit: historyLimit(),
  log_scale: queryBoolean({ default: false, description: 'Logarithmic loss axis: `true`/`1` or `false`/`0` (every plotted loss must then be > 0).' }),
});

export const HistoryEntrySchema = z
  .object({
    step: z.number().int().openapi({ description: 'Step number after the update (1 for the first step); for a skipped step, the count it left unchanged.' }),
    lr: z.number().openapi({ description: 'Learning rate applied (for a skipped step: the rate it would have applied).' }),
    loss: z.number().nullable().openapi({ description: 'Loss reported with the step, or null (a skipped step\'s loss is recorded but not reported to reduce_on_plateau).' }),
    at: Timestamp,
    grad_norm: z.number().nullable().optional().openapi({ description: `${GRAD_NORM} Absent for steps taken without it (and for a step skipped for a non-finite gradient, whose norm was not taken), as in the step's answer.` }),
    skipped: z.literal(true).optional().openapi({ description: 'Present (true) on a step skipped by `nonfinite: "skip"`: it changed no params, state or step count. Absent on applied steps.' }),
  })
  .strict()
  .openapi('HistoryEntry', { description: 'One step: applied, or skipped by `nonfinite: "skip"` (`skipped: true`).' });

export const HistoryResponseSchema = z
  .object({
    entries: z.array(HistoryEntrySchema).openapi({ description: 'Recorded steps, applied and skipped, oldest first.' }),
    kept: z.number().int().openapi({ description: 'How many entries the optimizer keeps, skipped steps included (older ones are dropped).' }),
  })
  .strict()
  .openapi('OptimizerHistory', { description: 'Learning rate and loss per step, with grad_norm under clip_grad_norm, and the steps nonfinite: "skip" skipped.' });

/**
 * The options of a safetensors checkpoint (its `__metadata__`, JSON values parsed), checked like
 * a JSON snapshot's fields: hyperparams and schedule are required (`"null"` for none).
 */
export const CheckpointOptionsSchema = z
  .object({
    optimizer: OptimizerNameSchema.optional(),
    step: StepCountSchema.optional(),
    dtype: DtypeSchema.optional(),
    hyperparams: z.record(z.string(), z.unknown()),
    schedule: z.union([ScheduleSpecSchema, z.null()]),
    scheduler_state: PlateauStateSchema.optional(),
    layout: z.array(z.string()).optional(),
    // Validated with the optimizer's ParamGroups schema once the optimizer is known.
    param_groups: z.unknown().optional(),
  })
  .strict();

export const UploadParamsSchema = z
  .object({
    params: requiredTree('Whole tensors by name (any subset of the optimizer\'s), or the whole tree; shapes must match.'),
  })
  .strict()
  .openapi('UploadParams', {
    description: 'New values for some or all params; the optimizer state (moments, step) is kept.',
    example: { params: { 'fc.bias': [0.1, -0.1] } },
  });

export const UploadQuerySchema = strictQuery({
  tensor: queryText({ description: 'Raw bodies: the tensor (name from `layout`) whose elements the body holds; absent: the flat params.' }),
  offset: queryOptionalInteger({
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
    description: 'Raw bodies: index of the first element written, within `tensor` (or the flat params). Default 0.',
  }),
});

export type CreateOptimizer = z.infer<typeof CreateOptimizerSchema>;
export type HostedStepRequest = z.infer<typeof HostedStepRequestSchema>;
export type SnapshotInput = z.infer<typeof SnapshotInputSchema>;
export type CreateQuery = z.infer<typeof CreateQuerySchema>;
