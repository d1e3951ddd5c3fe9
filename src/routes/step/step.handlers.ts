// Handler of the stateless step: a JSON or safetensors body → typed arrays → the pure Adam step →
// the format the client accepts (JSON or safetensors, bit-identical values either way).

import type { RouteHandler } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { AppEnv } from '../../lib/router.ts';
import { scheduleOverflow, statelessLearningRate } from '../../lib/learning-rate.ts';
import { timing } from '../../lib/observability.ts';
import { ProblemError, fieldError, validationProblem } from '../../lib/problem.ts';
import { checkedState, parseLike, parseParams, withTensorProblems } from '../../lib/tensor-input.ts';
import { zodFieldErrors } from '../../lib/validation.ts';
import { adamStepInPlace, firstNonFinite, initAdamState, type AdamHyperparams, type AdamState, type Dtype, type FloatArray } from '../../optim/adam.ts';
import type { ScheduleSpec } from '../../schedules/types.ts';
import { StepOptionsSchema, type StepRequest } from '../../schemas/adam.ts';
import { pathOfIndex, type TensorLayout } from '../../tensors/tree.ts';
import { objectJson, treeJson } from '../../wire/json.ts';
import { MEDIA_TYPES, acceptFormat, bodyFormat } from '../../wire/media.ts';
import { decodeStepFile, encodeStepFile } from './step.safetensors.ts';
import { STEP_QUERY_KEYS, type adamStepRoute } from './step.routes.ts';

/** Everything one step needs, whatever format it came in. */
interface StepInput {
  dtype: Dtype;
  hyperparams: AdamHyperparams;
  /** Whether the client set `lr` itself (it must not together with a schedule). */
  lrGiven: boolean;
  schedule: ScheduleSpec | undefined;
  metrics: number[] | undefined;
  layout: TensorLayout;
  params: FloatArray;
  grads: FloatArray;
  state: AdamState;
}

export const adamStepHandler: RouteHandler<typeof adamStepRoute, AppEnv> = async (c) => {
  const { format } = withTensorProblems(() => bodyFormat(c.req.header('content-type'), ['json', 'safetensors']));
  const answer = withTensorProblems(() => acceptFormat(c.req.header('accept'), ['json', 'safetensors'], format));
  // With two body media types the route's types do not expose the validated JSON; it is validated
  // (by StepRequestSchema) whenever the body is JSON.
  const input = format === 'json' ? await fromJson(c, (c.req.valid as (t: 'json') => StepRequest)('json')) : await fromSafetensors(c);
  const { dtype, layout, params, grads } = input;

  if (input.schedule !== undefined && input.lrGiven) {
    throw validationProblem([fieldError(['hyperparams', 'lr'], 'must be omitted when a schedule sets the learning rate', input.hyperparams.lr)]);
  }
  const lr = statelessLearningRate(input.hyperparams.lr, input.schedule, input.state.step, input.metrics);
  if (!Number.isFinite(lr)) throw scheduleOverflow(input.state.step, lr);
  const hyperparams = { ...input.hyperparams, lr };
  const state = withTensorProblems(() => checkedState(input.state, layout, dtype, hyperparams, format === 'json' ? ['state'] : ['safetensors'], format === 'json' ? { v: 'v', vMax: 'v_max' } : { v: 'exp_avg_sq', vMax: 'max_exp_avg_sq' }));

  // decode: reading, scanning, parsing and validating the body, and flattening its tensors.
  const t = timing(c);
  t.lap('decode');
  // In place on arrays this request owns.
  t.phase('kernel', () => adamStepInPlace({ dtype, hyperparams, params, grads, state }));

  const bad = firstNonFinite(params, state.m, state.v);
  if (bad) {
    const name = (['params', 'state.m', 'state.v'] as const)[bad.array];
    const where = pathOfIndex(layout, bad.index);
    throw new ProblemError(422, 'non-finite-result', `the step produced a non-finite ${name} value (overflow, or eps = 0 with v = 0) at ${name}${where.map((p) => `[${JSON.stringify(p)}]`).join('')}; it cannot be sent`, [
      fieldError(['grads', ...where], `leads to a non-finite ${name} value`),
    ]);
  }
  const headers = { vary: 'Accept' };
  if (answer === 'safetensors') {
    const metadata = { step: String(state.step), lr: String(lr), dtype };
    const file = t.phase('encode', () => withTensorProblems(() => encodeStepFile(layout, dtype, params, state, metadata)));
    return new Response(file, { status: 200, headers: { ...headers, 'content-type': MEDIA_TYPES.safetensors } }) as never;
  }
  const text = t.phase('encode', () => {
    const stateText = objectJson([
      ['step', { value: state.step }],
      ['m', { json: treeJson(layout, state.m) }],
      ['v', { json: treeJson(layout, state.v) }],
      ...(state.vMax ? ([['v_max', { json: treeJson(layout, state.vMax) }]] as const) : []),
    ]);
    return objectJson([['params', { json: treeJson(layout, params) }], ['state', { json: stateText }], ['lr', { value: lr }]]);
  });
  return c.body(text, 200, { ...headers, 'content-type': MEDIA_TYPES.json }) as never;
};

async function fromJson(c: Context<AppEnv>, body: StepRequest): Promise<StepInput> {
  const query = Object.keys(c.req.query()).filter((k) => (STEP_QUERY_KEYS as readonly string[]).includes(k));
  if (query.length > 0) {
    throw validationProblem(query.map((k) => fieldError([k], 'query parameters configure safetensors bodies; a JSON body carries its hyperparams itself', c.req.query(k))));
  }
  const { dtype } = body;
  // Defaults are already filled in, so look at what the client sent.
  const raw = (await c.req.json()) as { hyperparams?: { lr?: unknown } };
  const { layout, size, values: params } = parseParams(body.params, ['params'], c.get('limits').maxElements, dtype);
  const grads = parseLike(body.grads, layout, ['grads'], dtype);
  // Completed and checked (v_max with amsgrad, v >= 0) by the handler, as for safetensors.
  const sent = body.state;
  const state: AdamState = sent
    ? {
        step: sent.step,
        m: parseLike(sent.m, layout, ['state', 'm'], dtype),
        v: parseLike(sent.v, layout, ['state', 'v'], dtype),
        // torch ignores max_exp_avg_sq without amsgrad; it is still parsed, to catch a mismatched tree.
        vMax: sent.v_max === undefined ? null : parseLike(sent.v_max, layout, ['state', 'v_max'], dtype),
      }
    : initAdamState(dtype, size, false);
  return {
    dtype,
    hyperparams: body.hyperparams,
    lrGiven: raw.hyperparams?.lr !== undefined,
    schedule: body.schedule,
    metrics: body.metrics,
    layout,
    params,
    grads,
    state,
  };
}

/** The query a safetensors step may carry (checked by the route's strict query schema). */
type StepQuery = Partial<Record<'lr' | 'beta1' | 'beta2' | 'eps' | 'weight_decay', number> & Record<'decoupled_weight_decay' | 'amsgrad' | 'maximize', boolean>> & {
  dtype?: Dtype;
};

/** The query's hyperparameters (those given) and dtype. */
function queryOptions(query: StepQuery): { hyperparams: Record<string, number | boolean>; dtype?: Dtype } {
  const { dtype, ...rest } = query;
  const hyperparams = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)) as Record<string, number | boolean>;
  return { hyperparams, ...(dtype === undefined ? {} : { dtype }) };
}

/** A metadata value holding JSON (hyperparams, schedule, metrics), parsed or a 422 naming it. */
function metadataJson(metadata: Record<string, string>, key: string): unknown {
  if (!Object.hasOwn(metadata, key)) return undefined;
  try {
    return JSON.parse(metadata[key]!);
  } catch {
    throw validationProblem([fieldError(['__metadata__', key], 'must be JSON text', metadata[key]!.slice(0, 200))]);
  }
}

async function fromSafetensors(c: Context<AppEnv>): Promise<StepInput> {
  const fromQuery = queryOptions((c.req.valid as (t: 'query') => StepQuery)('query'));
  const body = new Uint8Array(await c.req.arrayBuffer());
  const limits = c.get('limits');
  // The dtype may come from the query or the metadata; the metadata is read with the header.
  const file = withTensorProblems(() => decodeStepFile(body, fromQuery.dtype, 2 * limits.maxBodyBytes));
  const { metadata } = file;
  const fromMeta = (metadataJson(metadata, 'hyperparams') ?? {}) as Record<string, unknown>;
  if (fromMeta === null || typeof fromMeta !== 'object' || Array.isArray(fromMeta)) {
    throw validationProblem([fieldError(['__metadata__', 'hyperparams'], 'must be a JSON object')]);
  }
  for (const key of Object.keys(fromQuery.hyperparams)) {
    if (Object.hasOwn(fromMeta, key)) throw validationProblem([fieldError([key], 'is given both in the query and in __metadata__.hyperparams: give it once', fromQuery.hyperparams[key])]);
  }
  const stepText = metadata.step;
  if (stepText !== undefined && !/^\d+$/.test(stepText)) throw validationProblem([fieldError(['__metadata__', 'step'], 'must be a decimal integer', stepText)]);
  if (fromQuery.dtype !== undefined && metadata.dtype !== undefined && fromQuery.dtype !== metadata.dtype) {
    throw validationProblem([fieldError(['dtype'], `the query says ${fromQuery.dtype} but __metadata__.dtype says ${metadata.dtype}`, fromQuery.dtype)]);
  }
  const options = StepOptionsSchema.safeParse({
    step: stepText === undefined ? undefined : Number(stepText),
    hyperparams: { ...fromMeta, ...fromQuery.hyperparams },
    dtype: fromQuery.dtype ?? metadata.dtype,
    schedule: metadataJson(metadata, 'schedule'),
    metrics: metadataJson(metadata, 'metrics'),
  });
  if (!options.success) throw validationProblem(zodFieldErrors(options.error, undefined));
  const o = options.data;
  // The file was decoded with the query's dtype, else the metadata's: the two must agree (checked above).
  if (o.dtype !== undefined && o.dtype !== file.dtype) {
    throw validationProblem([fieldError(['__metadata__', 'dtype'], `the tensors were read as ${file.dtype}; send dtype=${o.dtype} in the query to read them so`, o.dtype)]);
  }
  if (file.state === null && o.step > 0) {
    throw validationProblem([fieldError(['safetensors', 'exp_avg'], `step is ${o.step} but the file holds no state tensors (exp_avg, exp_avg_sq)`)]);
  }
  const size = file.params.length;
  const state: AdamState = file.state ? { step: o.step, ...file.state } : { ...initAdamState(file.dtype, size, false), step: o.step };
  return {
    dtype: file.dtype,
    hyperparams: o.hyperparams,
    lrGiven: Object.hasOwn(fromMeta, 'lr') || Object.hasOwn(fromQuery.hyperparams, 'lr'),
    schedule: o.schedule,
    metrics: o.metrics,
    layout: file.layout,
    params: file.params,
    grads: file.grads,
    state,
  };
}

