// Handlers of every registry optimizer's stateless step and of the catalogue. A JSON or
// safetensors body → typed arrays → the optimizer's in-place step (src/optim/<name>) → the format
// the client accepts, with torch's state names either way.

import type { Context } from 'hono';
import { hostedArrays, maxHostedElements, type Limits } from '../../lib/config.ts';
import type { AppEnv } from '../../lib/router.ts';
import { scheduleOverflow, statelessLearningRate } from '../../lib/learning-rate.ts';
import { timing } from '../../lib/observability.ts';
import { ProblemError, fieldError, validationProblem } from '../../lib/problem.ts';
import { parseLike, parseParams, withTensorProblems } from '../../lib/tensor-input.ts';
import { zodFieldErrors } from '../../lib/validation.ts';
import { initState, stepTensors, type Dtype, type FloatArray, type OptimizerDef, type OptimizerState } from '../../optim/optimizer.ts';
import { OPTIMIZERS, optimizerDef } from '../../optim/registry.ts';
import type { ScheduleSpec } from '../../schedules/types.ts';
import { familySchemas } from '../../schemas/family.ts';
import { leaves, pathOfIndex, type FieldPath, type TensorLayout } from '../../tensors/tree.ts';
import { leafIndex } from '../../tensors/names.ts';
import { objectJson, treeJson } from '../../wire/json.ts';
import { MEDIA_TYPES, acceptFormat, bodyFormat } from '../../wire/media.ts';
import { wireDtypeOf } from '../../wire/dtypes.ts';
import { decodeSlotsFile, encodeSlots, throwCollision } from '../step/step.safetensors.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;
type Hp = Record<string, number | boolean>;

/** Everything one step needs, whatever format it came in. */
interface StepInput {
  dtype: Dtype;
  /** Validated hyperparameters, defaults filled in (a required one may still be missing). */
  hyperparams: Record<string, number | boolean | string | undefined>;
  lrGiven: boolean;
  schedule: ScheduleSpec | undefined;
  metrics: number[] | undefined;
  layout: TensorLayout;
  params: FloatArray;
  grads: FloatArray;
  /** Sent state: step, slots (null = not sent), scalars; null for a fresh optimizer. */
  sent: { step: number; slots: Record<string, FloatArray | null>; scalars: Record<string, number | undefined> } | null;
  /** Where the state's fields are in the request (for errors). */
  statePath: FieldPath;
}

export function familyStepHandler(def: AnyDef) {
  return async (c: Context<AppEnv>) => {
    const { format } = withTensorProblems(() => bodyFormat(c.req.header('content-type'), ['json', 'safetensors']));
    const answer = withTensorProblems(() => acceptFormat(c.req.header('accept'), ['json', 'safetensors'], format));
    const input = format === 'json' ? await fromJson(def, c) : await fromSafetensors(def, c);
    const { dtype, layout, params, grads } = input;

    if (input.schedule !== undefined && input.lrGiven) {
      throw validationProblem([fieldError(['hyperparams', 'lr'], 'must be omitted when a schedule sets the learning rate', input.hyperparams.lr)]);
    }
    const missing = Object.entries(def.hyperparams).filter(([k, d]) => d.type === 'number' && d.default === undefined && input.hyperparams[k] === undefined && !(k === 'lr' && input.schedule));
    if (missing.length > 0) {
      throw validationProblem(missing.map(([k]) => fieldError(['hyperparams', k], `is required: ${def.torch} has no default ${k} (or send a schedule)`)));
    }
    const step = input.sent?.step ?? 0;
    const lr = statelessLearningRate((input.hyperparams.lr as number | undefined) ?? 0, input.schedule, step, input.metrics);
    if (!Number.isFinite(lr)) throw scheduleOverflow(step, lr);
    const hp = { ...input.hyperparams, lr } as Hp;
    const rule = def.check?.(hp);
    if (rule) throw validationProblem([fieldError(['hyperparams', rule.field], rule.message, hp[rule.field])]);
    const tensors = leaves(layout);
    if (def.checkShape) {
      for (const t of tensors) {
        const message = def.checkShape(t.shape);
        if (message) throw validationProblem([fieldError(['params', ...t.path], message, `[${t.shape.join(', ')}]`)]);
      }
    }
    const state = checkedState(def, hp, dtype, layout, params.length, input.sent, input.statePath);

    const t = timing(c);
    t.lap('decode');
    t.phase('kernel', () => stepTensors({ def, dtype, hp, params, grads, state, tensors }));

    const kept = def.slots.filter((s) => s.present(hp)).map((s) => [s.name, state.slots[s.name]!] as const);
    for (const [name, a] of [['params', params] as const, ...kept]) {
      const i = firstNonFinite(a);
      if (i < 0) continue;
      const where = pathOfIndex(layout, i);
      const label = name === 'params' ? 'params' : `state.${name}`;
      throw new ProblemError(422, 'non-finite-result', `the step produced a non-finite ${label} value (overflow, or a zero denominator) at ${label}${where.map((p) => `[${JSON.stringify(p)}]`).join('')}; it cannot be sent`, [
        fieldError(['grads', ...where], `leads to a non-finite ${label} value`),
      ]);
    }
    const headers = { vary: 'Accept' };
    if (answer === 'safetensors') {
      const metadata: Record<string, string> = { step: String(state.step), lr: String(lr), dtype };
      for (const s of def.scalars) metadata[s.name] = String(state.scalars[s.name]);
      const file = t.phase('encode', () =>
        withTensorProblems(() => encodeSlots([['params', params], ...kept], [...(leafIndex(layout) ?? throwCollision()).values()], wireDtypeOf(dtype), metadata)),
      );
      return new Response(file, { status: 200, headers: { ...headers, 'content-type': MEDIA_TYPES.safetensors } });
    }
    const text = t.phase('encode', () => {
      const stateText = objectJson([
        ['step', { value: state.step }],
        ...kept.map(([name, a]) => [name, { json: treeJson(layout, a) }] as const),
        ...def.scalars.map((s) => [s.name, { value: state.scalars[s.name]! }] as const),
      ]);
      return objectJson([['params', { json: treeJson(layout, params) }], ['state', { json: stateText }], ['lr', { value: lr }]]);
    });
    return c.body(text, 200, { ...headers, 'content-type': MEDIA_TYPES.json });
  };
}

function firstNonFinite(a: FloatArray): number {
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    if (x - x !== 0) return i; // NaN or ±Infinity
  }
  return -1;
}

/**
 * The state to step from: a fresh one, or the sent one completed and checked. With step > 0
 * every eager slot these hyperparameters keep must be sent (torch would have created it); a lazy
 * one (SGD's momentum_buffer) may be absent; scalars are required; second moments are >= 0.
 */
function checkedState(def: AnyDef, hp: Hp, dtype: Dtype, layout: TensorLayout, n: number, sent: StepInput['sent'], path: FieldPath): OptimizerState {
  const state = initState(def, hp, dtype, n);
  if (sent === null) return state;
  state.step = sent.step;
  for (const slot of def.slots) {
    if (!slot.present(hp)) continue; // torch keeps no such slot: a sent one is ignored
    const a = sent.slots[slot.name] ?? null;
    if (a === null) {
      if (slot.initial(hp) !== null && sent.step > 0) throw validationProblem([fieldError([...path, slot.name], `is required when step > 0 (${def.torch} keeps it with these hyperparameters)`)]);
      continue;
    }
    if (slot.nonNegative) {
      for (let i = 0; i < a.length; i++) {
        if (a[i]! < 0) throw validationProblem([fieldError([...path, slot.name, ...pathOfIndex(layout, i)], 'must be >= 0 (it is a square, a sum of squares or a magnitude)', a[i])]);
      }
    }
    state.slots[slot.name] = a;
  }
  for (const s of def.scalars) {
    const v = sent.scalars[s.name];
    if (v === undefined) {
      if (sent.step > 0) throw validationProblem([fieldError([...path, s.name], 'is required when step > 0')]);
      continue;
    }
    state.scalars[s.name] = v;
  }
  return state;
}

async function fromJson(def: AnyDef, c: Context<AppEnv>): Promise<StepInput> {
  const queryKeys = Object.keys(c.req.query()).filter((k) => k === 'dtype' || Object.hasOwn(def.hyperparams, k));
  if (queryKeys.length > 0) {
    throw validationProblem(queryKeys.map((k) => fieldError([k], 'query parameters configure safetensors bodies; a JSON body carries its hyperparams itself', c.req.query(k))));
  }
  // Validated by the route's schema (familySchemas(def).stepRequest) before the handler runs.
  const raw: unknown = await c.req.json();
  const body = (c.req.valid as (t: 'json') => unknown)('json') as {
    params: unknown;
    grads: unknown;
    state?: Record<string, unknown> & { step: number };
    hyperparams: Record<string, number | boolean | string | undefined>;
    dtype: Dtype;
    schedule?: ScheduleSpec;
    metrics?: number[];
  };
  const { dtype } = body;
  const { layout, values: params } = parseParams(body.params, ['params'], c.get('limits').maxElements, dtype);
  const grads = parseLike(body.grads, layout, ['grads'], dtype);
  let sent: StepInput['sent'] = null;
  if (body.state) {
    const st = body.state;
    const slots: Record<string, FloatArray | null> = {};
    for (const slot of def.slots) {
      const v = st[slot.name];
      // A slot torch keeps as None (SGD's buffer before its first momentum step) may come as null.
      slots[slot.name] = v === undefined || v === null ? null : parseLike(v, layout, ['state', slot.name], dtype);
    }
    const scalars = Object.fromEntries(def.scalars.map((s) => [s.name, st[s.name] as number | undefined]));
    sent = { step: st.step, slots, scalars };
  }
  const rawHp = (raw as { hyperparams?: Record<string, unknown> }).hyperparams;
  return {
    dtype,
    hyperparams: body.hyperparams,
    lrGiven: rawHp?.lr !== undefined,
    schedule: body.schedule,
    metrics: body.metrics,
    layout,
    params,
    grads,
    sent,
    statePath: ['state'],
  };
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

/** A metadata number (step, a scalar), or a 422 naming it. */
function metadataNumber(metadata: Record<string, string>, key: string, integer: boolean): number | undefined {
  const text = metadata[key];
  if (text === undefined) return undefined;
  const ok = integer ? /^\d+$/.test(text) : /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/.test(text);
  if (!ok) throw validationProblem([fieldError(['__metadata__', key], integer ? 'must be a decimal integer' : 'must be a number written as in JSON', text)]);
  return Number(text);
}

async function fromSafetensors(def: AnyDef, c: Context<AppEnv>): Promise<StepInput> {
  const query = (c.req.valid as (t: 'query') => Record<string, unknown>)('query');
  const { dtype: queryDtype, ...queryRest } = query as { dtype?: Dtype } & Record<string, number | boolean | string | undefined>;
  const fromQuery = Object.fromEntries(Object.entries(queryRest).filter(([, v]) => v !== undefined));
  const body = new Uint8Array(await c.req.arrayBuffer());
  const limits = c.get('limits');
  const file = withTensorProblems(() => decodeSlotsFile(body, def.slots.map((s) => s.name), queryDtype, 2 * limits.maxBodyBytes));
  const { metadata } = file;
  const fromMeta = (metadataJson(metadata, 'hyperparams') ?? {}) as Record<string, unknown>;
  if (fromMeta === null || typeof fromMeta !== 'object' || Array.isArray(fromMeta)) {
    throw validationProblem([fieldError(['__metadata__', 'hyperparams'], 'must be a JSON object')]);
  }
  for (const key of Object.keys(fromQuery)) {
    if (Object.hasOwn(fromMeta, key)) throw validationProblem([fieldError([key], 'is given both in the query and in __metadata__.hyperparams: give it once', fromQuery[key])]);
  }
  if (queryDtype !== undefined && metadata.dtype !== undefined && queryDtype !== metadata.dtype) {
    throw validationProblem([fieldError(['dtype'], `the query says ${queryDtype} but __metadata__.dtype says ${metadata.dtype}`, queryDtype)]);
  }
  const scalars = Object.fromEntries(def.scalars.map((s) => [s.name, metadataNumber(metadata, s.name, false)]));
  const options = familySchemas(def).stepOptions.safeParse({
    step: metadataNumber(metadata, 'step', true),
    hyperparams: { ...fromMeta, ...fromQuery },
    dtype: queryDtype ?? metadata.dtype,
    schedule: metadataJson(metadata, 'schedule'),
    metrics: metadataJson(metadata, 'metrics'),
    ...scalars,
  });
  if (!options.success) throw validationProblem(zodFieldErrors(options.error, undefined));
  const o = options.data as { step: number; hyperparams: Record<string, number | boolean | string | undefined>; dtype?: Dtype; schedule?: ScheduleSpec; metrics?: number[] };
  if (o.dtype !== undefined && o.dtype !== file.dtype) {
    throw validationProblem([fieldError(['__metadata__', 'dtype'], `the tensors were read as ${file.dtype}; send dtype=${o.dtype} in the query to read them so`, o.dtype)]);
  }
  const anyState = Object.values(file.slots).some((a) => a !== null) || Object.values(scalars).some((v) => v !== undefined);
  return {
    dtype: file.dtype,
    hyperparams: o.hyperparams,
    lrGiven: Object.hasOwn(fromMeta, 'lr') || Object.hasOwn(fromQuery, 'lr'),
    schedule: o.schedule,
    metrics: o.metrics,
    layout: file.layout,
    params: file.params,
    grads: file.grads,
    sent: anyState || o.step > 0 ? { step: o.step, slots: file.slots, scalars } : null,
    statePath: ['safetensors'],
  };
}

/** The catalogue entry of one optimizer. */
export function describeAlgorithm(def: AnyDef, limits: Limits) {
  return {
    name: def.name,
    torch: def.torch,
    description: def.description,
    step_route: def.name === 'adam' ? '/v1/adam/step' : `/v1/${def.name}/step`,
    hyperparams: Object.fromEntries(
      Object.entries(def.hyperparams).map(([k, d]) => {
        const bounds =
          d.type === 'number'
            ? {
                ...(d.min === undefined ? {} : d.minExclusive ? { exclusiveMinimum: d.min } : { minimum: d.min }),
                ...(d.max === undefined ? {} : d.maxExclusive ? { exclusiveMaximum: d.max } : { maximum: d.max }),
              }
            : {};
        const type = d.type === 'enum' ? 'string' : d.type === 'number' && d.integer ? 'integer' : d.type;
        const values = d.type === 'enum' ? { enum: [...d.values] } : {};
        return [k, { type, ...values, ...(d.default === undefined ? {} : { default: d.default }), required: d.default === undefined, ...bounds, description: d.description }];
      }),
    ),
    state: {
      step: def.stepCounter,
      slots: def.slots.map((s) => ({ name: s.name, description: s.description })),
      scalars: def.scalars.map((s) => ({ name: s.name, description: s.description, initial: s.initial })),
    },
    // What one hosted optimizer holds: MAX_HOSTED_BYTES over params, the gradient buffer and every slot.
    hosted_max_elements: {
      float32: maxHostedElements(limits, 'float32', hostedArrays(def.slots.length)),
      float64: maxHostedElements(limits, 'float64', hostedArrays(def.slots.length)),
    },
  };
}

export const listAlgorithmsHandler = (c: Context<AppEnv>) => c.json({ algorithms: OPTIMIZERS.map((d) => describeAlgorithm(d, c.get('limits'))) }, 200);

export const getAlgorithmHandler = (c: Context<AppEnv>) => {
  const name = c.req.param('name')!;
  const def = optimizerDef(name);
  if (!def) {
    throw new ProblemError(404, 'not-found', `no optimizer is named "${name}"; the optimizers are ${OPTIMIZERS.map((d) => d.name).join(', ')}`, [
      fieldError(['name'], `must be one of ${OPTIMIZERS.map((d) => d.name).join(', ')}`, name),
    ]);
  }
  return c.json(describeAlgorithm(def, c.get('limits')), 200);
};
