// Handlers of the hosted-optimizer routes: negotiate formats, authenticate, find the Durable
// Object, hand it the request (JSON flattened here, binary bodies as streams it decodes), and
// encode the data it returns. All state and math live in the object.

import type { RouteHandler } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { AccumulateSpec, TensorsIn } from '../../durable-objects/protocol.ts';
import { MAX_JSON_HOSTED_ELEMENTS, hostedArrays, maxHostedElements, readDefaultTtl, readKeyQuota, type Limits } from '../../lib/config.ts';
import { registryOf } from '../../durable-objects/stubs.ts';
import { MAX_SHARDS } from '../../durable-objects/shards.ts';
import { ProblemError, fieldError, validationProblem } from '../../lib/problem.ts';
import { timing } from '../../lib/observability.ts';
import type { AppEnv } from '../../lib/router.ts';
import { flattenAlone, parseLike, parseParams, withTensorProblems, withTensorProblemsAsync } from '../../lib/tensor-input.ts';
import { zodFieldErrors } from '../../lib/validation.ts';
import type { Dtype, FloatArray, Hyperparams, OptimizerDef } from '../../optim/optimizer.ts';
import { optimizerDef } from '../../optim/registry.ts';
import { familySchemas } from '../../schemas/family.ts';
import { parseParamGroups, type ParamGroup } from '../../lib/param-groups.ts';
import type { ScheduleSpec } from '../../schedules/types.ts';
import { AccumulateSchema, ShardsSchema, SNAPSHOT_SCALAR_FIELDS, SNAPSHOT_SLOT_FIELDS, type CreateOptimizer, type CreateQuery, type HostedStepRequest, type SnapshotInput } from '../../schemas/optimizer.ts';
import { ChartError, renderLineChart, type Series } from '../../plot/line-chart.ts';
import { DtypeSchema } from '../../schemas/common.ts';
import { ScheduleSpecSchema } from '../../schemas/schedule.ts';
import { layoutOfNamed } from '../../tensors/names.ts';
import { layoutFromShapes, layoutSize, layoutWeight, leaves, type TensorLayout } from '../../tensors/tree.ts';
import { WIRE_DTYPES, elementSink, firstNonFiniteIn, fitsInto, type WireDtype } from '../../wire/dtypes.ts';
import { acceptFormat, bodyFormat, type Format } from '../../wire/media.ts';
import { WireError, inLayoutOrder } from '../../wire/safetensors.ts';
import { pullSource, type ByteSource } from '../../wire/stream.ts';
import { checkCheckpointHeader } from '../../durable-objects/checkpoint-header.ts';
import { readHeader } from '../../wire/slots-file.ts';
import { checkpointResponse, infoJson, jsonResponse, paramsResponse, snapshotJsonStream, stepResponse } from './optimizers.encode.ts';
import { sha256Hex } from '../../lib/digest.ts';
import { PRE_AUTHORIZE_ABOVE, newToken, stubFor, tokenHash, unwrap } from './optimizers.stub.ts';
import type * as routes from './optimizers.routes.ts';

const ALL: readonly Format[] = ['json', 'raw', 'safetensors'];

/** The validated JSON body of a route that also takes binary bodies (validated whenever the body is JSON). */
function validJson<T>(c: Context<AppEnv>): T {
  return (c.req.valid as (target: 'json') => T)('json');
}

/**
 * Bodies up to this many bytes go to the object as one array: a stream passed over RPC arrives in
 * frames of about 4 KiB, each an I/O round trip for the object (a 4 MB gradient: ~1,000 of them,
 * about half its step), while one array is one message. Larger bodies go as a pull source (one call
 * per MiB), so the object never holds a second copy of a large gradient.
 */
export const BYTES_HANDOFF_MAX = 4 * 1024 * 1024 + 64 * 1024;

/**
 * The body as the object will read it: the bytes when a middleware already read them (Hono caches
 * them) or when small enough (read once the object has accepted the token, so an anonymous caller
 * cannot make the Worker read it), else a pull source over the stream (read only as the object,
 * which checks the token first, asks for it).
 */
async function bodySource(c: Context<AppEnv>, format: 'raw' | 'safetensors', dtype: WireDtype | null): Promise<TensorsIn> {
  const header = c.req.header('content-length');
  const length = header !== undefined && /^\d+$/.test(header) ? Number(header) : null;
  const raw = c.req.raw;
  let body: ByteSource;
  if (raw.bodyUsed) body = new Uint8Array(await c.req.arrayBuffer());
  else if (raw.body === null) body = new Uint8Array(0);
  else if (length !== null && length <= BYTES_HANDOFF_MAX) {
    // As for JSON bodies: above PRE_AUTHORIZE_ABOVE, read only for a caller the object accepts.
    if (length > PRE_AUTHORIZE_ABOVE) unwrap(await stubFor(c, c.req.param('id')!).authorize(await tokenHash(c)));
    body = new Uint8Array(await raw.arrayBuffer());
  } else body = pullSource(raw.body);
  return format === 'raw' ? { format, dtype, body, length } : { format, body, length };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;

/** The registry definition of `name` (the schemas have checked it is one). */
function defOf(name: string, path: string[]): AnyDef {
  const def = optimizerDef(name);
  if (!def) throw validationProblem([fieldError(path, 'is not an optimizer of the registry (GET /v1/algorithms)', name)]);
  return def;
}

/** Hyperparameters validated by `def`'s schema (torch's defaults filled in, `betas` accepted); errors under `prefix`. */
function hyperparamsOf(def: AnyDef, value: unknown, prefix: string): Hyperparams {
  const parsed = familySchemas(def).hyperparams.safeParse(value ?? {});
  if (!parsed.success) throw validationProblem(zodFieldErrors(parsed.error, value).map((e) => ({ ...e, field: e.field === '(body)' ? prefix : `${prefix}.${e.field}`, pointer: undefined })));
  return Object.fromEntries(Object.entries(parsed.data as Record<string, number | boolean | undefined>).filter(([, v]) => v !== undefined)) as Hyperparams;
}

/** Most elements one optimizer of `def` holds in `dtype`: MAX_HOSTED_BYTES over params, gradient buffer and every slot. */
const mostOf = (limits: Limits, def: AnyDef, dtype: Dtype) => maxHostedElements(limits, dtype, hostedArrays(def.slots.length));

/**
 * A dimension of 0 counts as 1 toward the element limits (a [1e7, 0] tensor is 1e7 empty rows in
 * JSON answers); that weight has no elements to spread over shards, so it stays within one object's limit.
 */
function checkEmptyWeight(layout: TensorLayout, most: number, field: string): void {
  const empty = layoutWeight(layout) - layoutSize(layout);
  if (empty > most) throw new ProblemError(413, 'payload-too-large', `${field}: tensors with a dimension of 0 weigh ${empty} elements (each 0 counting as 1); at most ${most} are allowed`, [fieldError([field], 'holds too many empty rows')]);
}

/** Most elements a sharded optimizer of `def` holds: MAX_SHARDS objects at their limit (the placement may need fewer elements per shard). */
const shardedMostOf = (limits: Limits, def: AnyDef, dtype: Dtype) => mostOf(limits, def, dtype) * MAX_SHARDS;

/** Options of a safetensors body for create: the query's optimizer, hyperparameters, dtype, and `__metadata__`. */
function createOptions(query: CreateQuery, metadata: Record<string, string> | null) {
  const m = metadata ?? {};
  const json = (key: string): unknown => {
    if (!Object.hasOwn(m, key)) return undefined;
    try {
      return JSON.parse(m[key]!);
    } catch {
      throw validationProblem([fieldError(['__metadata__', key], 'must be JSON text', m[key]!.slice(0, 200))]);
    }
  };
  const { dtype: queryDtype, optimizer: queryOptimizer, ttl: _ttl, ...rest } = query as { dtype?: string; optimizer?: string; ttl?: number } & Record<string, unknown>;
  if (queryOptimizer !== undefined && m.optimizer !== undefined && m.optimizer !== queryOptimizer) {
    throw validationProblem([fieldError(['optimizer'], `the query says ${queryOptimizer} but __metadata__.optimizer says ${m.optimizer}`, queryOptimizer)]);
  }
  const def = defOf(queryOptimizer ?? m.optimizer ?? 'adam', ['__metadata__', 'optimizer']);
  const fromQuery = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)) as Record<string, number | boolean>;
  let dtype: string | undefined = m.dtype;
  if (queryDtype !== undefined) {
    if (dtype !== undefined && dtype !== queryDtype) throw validationProblem([fieldError(['dtype'], `the query says ${queryDtype} but __metadata__.dtype says ${dtype}`, queryDtype)]);
    dtype = queryDtype;
  }
  const fromMeta = json('hyperparams') ?? {};
  if (fromMeta === null || typeof fromMeta !== 'object' || Array.isArray(fromMeta)) throw validationProblem([fieldError(['__metadata__', 'hyperparams'], 'must be a JSON object')]);
  for (const key of Object.keys(fromQuery)) {
    if (Object.hasOwn(fromMeta, key)) throw validationProblem([fieldError([key], 'is given both in the query and in __metadata__.hyperparams: give it once', fromQuery[key])]);
  }
  const hyperparams = hyperparamsOf(def, { ...fromMeta, ...fromQuery }, 'hyperparams');
  const paramGroups = parseParamGroups(def, json('param_groups'), ['__metadata__', 'param_groups'], false);
  const schedule = scheduleFromMetadata(json('schedule'));
  const parsedDtype = dtype === undefined ? undefined : DtypeSchema.safeParse(dtype);
  if (parsedDtype && !parsedDtype.success) throw validationProblem([fieldError(['dtype'], 'must be "float32" or "float64"', dtype)]);
  const layout = json('layout');
  if (layout !== undefined && !(Array.isArray(layout) && layout.every((n) => typeof n === 'string'))) {
    throw validationProblem([fieldError(['__metadata__', 'layout'], 'must be a JSON array of the tensor names, in storage order')]);
  }
  const shards = json('shards');
  const parsedShards = shards === undefined ? undefined : ShardsSchema.safeParse(shards);
  if (parsedShards && !parsedShards.success) throw validationProblem([fieldError(['__metadata__', 'shards'], 'must be an integer from 1 to 256', m.shards)]);
  return { def, hyperparams, paramGroups, schedule, dtype: parsedDtype?.data, layout: layout as string[] | undefined, accumulate: accumulateFromMetadata(json('accumulate')), shards: parsedShards?.data };
}

/** `__metadata__.accumulate` (JSON text), checked as the JSON body's `accumulate`. */
function accumulateFromMetadata(value: unknown): AccumulateSpec | undefined {
  if (value === undefined || value === null) return undefined;
  const parsed = AccumulateSchema.safeParse(value);
  if (!parsed.success) throw validationProblem(zodFieldErrors(parsed.error, value).map((e) => ({ ...e, field: `__metadata__.accumulate${e.field === '(body)' ? '' : `.${e.field}`}`, pointer: undefined })));
  return parsed.data;
}

function scheduleFromMetadata(value: unknown) {
  if (value === undefined || value === null) return null;
  const parsed = ScheduleSpecSchema.safeParse(value);
  if (!parsed.success) throw validationProblem(zodFieldErrors(parsed.error, value).map((e) => ({ ...e, field: `__metadata__.schedule${e.field === '(body)' ? '' : `.${e.field}`}`, pointer: undefined })));
  return parsed.data;
}

export const createOptimizer: RouteHandler<typeof routes.createOptimizerRoute, AppEnv> = async (c) => {
  const { format } = withTensorProblems(() => bodyFormat(c.req.header('content-type'), ['json', 'safetensors']));
  withTensorProblems(() => acceptFormat(c.req.header('accept'), ['json'], 'json'));
  const limits = c.get('limits');
  let args: { optimizer: string; layout: TensorLayout; params: FloatArray | null; hyperparams: Hyperparams; paramGroups: ParamGroup[]; groupsPath: string[]; schedule: ScheduleSpec | null; dtype: Dtype };
  let ttl: number | undefined;
  let accumulate: AccumulateSpec | undefined;
  let shards: number | undefined;
  if (format === 'json') {
    const given = Object.keys(c.req.query());
    if (given.length > 0) throw validationProblem(given.map((k) => fieldError([k], 'query parameters configure safetensors bodies; a JSON body carries its hyperparams and dtype itself', c.req.query(k))));
    const body = validJson<CreateOptimizer>(c);
    ttl = body.ttl;
    accumulate = body.accumulate;
    shards = body.shards;
    const def = defOf(body.optimizer, ['optimizer']);
    const hyperparams = hyperparamsOf(def, body.hyperparams, 'hyperparams');
    const most = Math.min(shardedMostOf(limits, def, body.dtype), MAX_JSON_HOSTED_ELEMENTS);
    const paramGroups = parseParamGroups(def, body.param_groups, ['param_groups']);
    const common = { optimizer: def.name, hyperparams, paramGroups, groupsPath: ['param_groups'], schedule: body.schedule ?? null, dtype: body.dtype };
    if (body.shapes !== undefined) {
      const layout = withTensorProblems(() => layoutFromShapes(body.shapes, ['shapes'], shardedMostOf(limits, def, body.dtype)));
      checkEmptyWeight(layout, mostOf(limits, def, body.dtype), 'shapes');
      args = { ...common, layout, params: null };
    } else {
      // JSON is turned into typed arrays here, in the Worker; the object receives compact binary data.
      const params = parseParams(body.params, ['params'], most, body.dtype);
      args = { ...common, layout: params.layout, params: params.values };
    }
  } else {
    // A safetensors file of the params (plain names, as model.state_dict() has them); options in the query or __metadata__.
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    ttl = (c.req.valid('query') as { ttl?: number }).ttl;
    args = withTensorProblems(() => {
      const { entries, metadata, dataStart } = readHeader(bytes);
      const options = createOptions(c.req.valid('query'), metadata);
      accumulate = options.accumulate;
      shards = options.shards;
      const dtype: Dtype = options.dtype ?? (entries.some((e) => e.dtype === 'F64') ? 'float64' : 'float32');
      const ordered = inLayoutOrder(entries, options.layout);
      const layout = layoutOfNamed(ordered.map((e) => ({ name: e.name, shape: e.shape })));
      const size = layoutSize(layout);
      const most = shardedMostOf(limits, options.def, dtype);
      const weight = layoutWeight(layout);
      checkEmptyWeight(layout, mostOf(limits, options.def, dtype), 'safetensors');
      if (weight > most) throw new WireError(413, ['safetensors'], `${weight} ${dtype} elements (a dimension of 0 counting as 1) are more than one ${options.def.name} optimizer holds (${most})`);
      const params = dtype === 'float32' ? new Float32Array(size) : new Float64Array(size);
      let offset = 0;
      for (const e of ordered) {
        const count = (e.end - e.start) / WIRE_DTYPES[e.dtype].bytes;
        if (!fitsInto(e.dtype, dtype)) throw new WireError(422, ['safetensors', e.name, 'dtype'], `dtype ${e.dtype} does not fit a ${dtype} optimizer (it would round)`, e.dtype);
        elementSink(e.dtype, params, offset, count).write(bytes.subarray(dataStart + e.start, dataStart + e.end));
        const bad = firstNonFiniteIn(params, offset, offset + count);
        if (bad >= 0) throw new WireError(422, ['safetensors', e.name, bad - offset], `element ${bad - offset} is ${params[bad]}: every value must be finite`);
        offset += count;
      }
      if (entries.length === 0) throw new WireError(422, ['safetensors'], 'the file holds no tensors: send the params');
      return { optimizer: options.def.name, layout, params, hyperparams: options.hyperparams, paramGroups: options.paramGroups, groupsPath: ['__metadata__', 'param_groups'], schedule: options.schedule, dtype };
    });
  }
  // Before the RPC: names long enough to break the checkpoint bound could also push the relayed value past 32 MiB.
  withTensorProblems(() => checkCheckpointHeader(defOf(args.optimizer ?? 'adam', ['optimizer']), args.layout, ['params']));
  const ns = c.env.HOSTED_OPTIMIZER;
  const id = ns.newUniqueId();
  const token = newToken();
  const owner = c.get('apiKey');
  // With API keys, the key's registry books the optimizer (or refuses: quota) before it exists, and
  // forgets it again should the creation fail. A crash between the two leaves an entry the
  // registry drops on its own (src/durable-objects/key-registry.ts).
  const registry = owner === null ? null : registryOf(c.env, owner);
  if (registry) {
    const field = format === 'json' && validJson<CreateOptimizer>(c).shapes !== undefined ? 'shapes' : 'params';
    unwrap(await registry.reserve(owner!, id.toString(), layoutSize(args.layout), readKeyQuota(c.env), field));
  }
  let created;
  try {
    created = unwrap(await ns.get(id).create({ tokenHash: await sha256Hex(token), ...args, ttl: ttl ?? readDefaultTtl(c.env), owner, accumulate, shards, maxElements: mostOf(limits, defOf(args.optimizer, ['optimizer']), args.dtype) }));
  } catch (e) {
    await registry?.release(id.toString());
    throw e;
  }
  const { etag, value: info } = created;
  return jsonResponse(201, { ...infoJson(info), token }, { etag, location: `/v1/optimizers/${id.toString()}`, 'cache-control': 'no-store' });
};

/** Position after which a listing continues: the `cursor` a previous page gave (0: from the start). */
function listPosition(cursor: string | undefined): number {
  if (cursor === undefined) return 0;
  const n = /^[1-9][0-9]{0,14}$/.test(cursor) ? Number(cursor) : NaN;
  if (!Number.isSafeInteger(n)) throw validationProblem([fieldError(['cursor'], 'is not a cursor a listing gave (pass `next_cursor` as it came)', cursor)]);
  return n;
}

export const listOptimizers: RouteHandler<typeof routes.listOptimizersRoute, AppEnv> = async (c) => {
  withTensorProblems(() => acceptFormat(c.req.header('accept'), ['json'], 'json'));
  const { limit, cursor } = c.req.valid('query');
  const after = listPosition(cursor);
  const owner = c.get('apiKey');
  if (owner === null) {
    throw new ProblemError(403, 'forbidden', 'this server has no API keys (API_KEYS): optimizers belong to no key, so there is no list of them');
  }
  const quota = readKeyQuota(c.env);
  const page = await registryOf(c.env, owner).list(owner, after, limit);
  return jsonResponse(200, {
    optimizers: page.optimizers,
    next_cursor: page.next === null ? null : String(page.next),
    usage: page.usage,
    limits: { optimizers: quota.maxOptimizers, elements: quota.maxElements },
  });
};

/**
 * A gradient tree without its `null` tensors (frozen: torch skips a parameter whose .grad is None),
 * and their paths; the object checks each names a tensor. A `null` root is the whole tree frozen.
 */
function withoutNulls(value: unknown): { tree: unknown; frozen: string[][] } {
  const frozen: string[][] = [];
  if (value === null) return { tree: {}, frozen: [[]] };
  const walk = (v: unknown, path: string[]): unknown => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    const kept: Array<[string, unknown]> = [];
    for (const [k, child] of Object.entries(v as Record<string, unknown>)) {
      if (child === null) frozen.push([...path, k]);
      else kept.push([k, walk(child, [...path, k])]);
    }
    return Object.fromEntries(kept); // own properties, "__proto__" included
  };
  return { tree: walk(value, []), frozen };
}

export const stepOptimizer: RouteHandler<typeof routes.stepOptimizerRoute, AppEnv> = async (c) => {
  const { id } = c.req.valid('param');
  const query = c.req.valid('query');
  const headers = c.req.valid('header');
  const { format, dtype } = withTensorProblems(() => bodyFormat(c.req.header('content-type'), ALL));
  // Negotiated before the step, so an unacceptable answer never applies a gradient.
  const answer = withTensorProblems(() => acceptFormat(c.req.header('accept'), ALL, format));
  let grads: TensorsIn;
  let loss: number | undefined;
  let expectedStep: number | undefined;
  if (format === 'json') {
    if (query.loss !== undefined || query.expected_step !== undefined) {
      throw validationProblem([fieldError([query.loss !== undefined ? 'loss' : 'expected_step'], 'goes in the JSON body (query parameters are for binary bodies)')]);
    }
    const body = validJson<HostedStepRequest>(c);
    const { tree, frozen } = withoutNulls(body.grads);
    grads = { format: 'json', flat: flattenAlone(tree, ['grads'], MAX_JSON_HOSTED_ELEMENTS), ...(frozen.length > 0 ? { frozen } : {}) };
    loss = body.loss;
    expectedStep = body.expected_step;
  } else {
    grads = await bodySource(c, format, dtype);
    loss = query.loss;
    expectedStep = query.expected_step;
  }
  const t = timing(c);
  const out = unwrap(
    await stubFor(c, id).step(await tokenHash(c), {
      grads,
      loss,
      expectedStep,
      ifMatch: headers['if-match'],
      idempotencyKey: headers['idempotency-key'],
      returnParams: query.return === 'params',
      namedParams: answer === 'safetensors',
      worker: query.worker,
      partOffset: query.part_offset,
    }),
  );
  // The object's phases; the rest of the request (reading and checking it here, the RPC) shows in `total`.
  for (const [phase, ms] of Object.entries(out.value.timings)) t.add(phase as 'decode' | 'kernel' | 'storage', ms);
  // A contribution to an accumulated step that waits for others: 202, in JSON whatever `Accept` (it holds no tensors).
  const pending = out.value.pending;
  if (pending) return jsonResponse(202, { pending: true, ...pending }, { etag: out.etag, step: String(pending.step) });
  const part = out.value.part;
  if (part) return jsonResponse(202, { part: true, ...part }, { etag: out.etag, step: String(out.value.step) });
  return t.phaseAsync('encode', () => withTensorProblemsAsync(() => stepResponse(answer, out.value, { etag: out.etag, ...(out.value.replayed ? { 'idempotent-replayed': 'true' } : {}) })));
};

export const getOptimizer: RouteHandler<typeof routes.getOptimizerRoute, AppEnv> = async (c) => {
  withTensorProblems(() => acceptFormat(c.req.header('accept'), ['json'], 'json'));
  const { etag, value } = unwrap(await stubFor(c, c.req.valid('param').id).describe(await tokenHash(c)));
  return jsonResponse(200, infoJson(value), { etag });
};

export const getParams: RouteHandler<typeof routes.getParamsRoute, AppEnv> = async (c) => {
  const answer = withTensorProblems(() => acceptFormat(c.req.header('accept'), ALL, 'json'));
  const { min_step: minStep, wait } = c.req.valid('query');
  if (minStep === undefined && wait > 0) throw validationProblem([fieldError(['wait'], 'applies with min_step only (the step to wait for)', wait)]);
  const { etag, value } = unwrap(await stubFor(c, c.req.valid('param').id).params(await tokenHash(c), minStep === undefined ? undefined : { minStep, seconds: wait }));
  return withTensorProblemsAsync(() => paramsResponse(answer, value.step, value.params, { etag }));
};

export const putParams: RouteHandler<typeof routes.putParamsRoute, AppEnv> = async (c) => {
  const { format, dtype } = withTensorProblems(() => bodyFormat(c.req.header('content-type'), ALL));
  withTensorProblems(() => acceptFormat(c.req.header('accept'), ['json'], 'json'));
  const query = c.req.valid('query');
  if (format !== 'raw' && (query.tensor !== undefined || query.offset !== undefined)) {
    throw validationProblem([fieldError([query.tensor !== undefined ? 'tensor' : 'offset'], 'applies to raw bodies only (JSON and safetensors bodies name their tensors)')]);
  }
  const body: TensorsIn =
    format === 'json'
      ? { format: 'json', flat: flattenAlone(validJson<{ params: unknown }>(c).params, ['params'], MAX_JSON_HOSTED_ELEMENTS) }
      : await bodySource(c, format, dtype);
  const { etag, value } = unwrap(
    await stubFor(c, c.req.valid('param').id).upload(await tokenHash(c), {
      body,
      tensor: query.tensor,
      offset: query.offset,
      ifMatch: c.req.valid('header')['if-match'],
    }),
  );
  return jsonResponse(200, infoJson(value), { etag });
};

export const getState: RouteHandler<typeof routes.getStateRoute, AppEnv> = async (c) => {
  const answer = withTensorProblems(() => acceptFormat(c.req.header('accept'), ['json', 'safetensors'], 'json'));
  const snapshot = unwrap(await stubFor(c, c.req.valid('param').id).snapshot(await tokenHash(c)));
  if (answer === 'safetensors') return withTensorProblems(() => checkpointResponse(snapshot, { etag: snapshot.etag }));
  return snapshotJsonStream(snapshot, { etag: snapshot.etag });
};

export const putState: RouteHandler<typeof routes.putStateRoute, AppEnv> = async (c) => {
  const { format } = withTensorProblems(() => bodyFormat(c.req.header('content-type'), ['json', 'safetensors']));
  withTensorProblems(() => acceptFormat(c.req.header('accept'), ['json'], 'json'));
  const stub = stubFor(c, c.req.valid('param').id);
  if (format === 'safetensors') {
    const input = await bodySource(c, 'safetensors', null);
    const length = input.format === 'json' ? null : input.length;
    const { etag, value } = unwrap(
      await stub.restore(await tokenHash(c), {
        format: 'safetensors',
        body: input.format === 'json' ? new Uint8Array(0) : input.body,
        length,
        quota: readKeyQuota(c.env),
        ifMatch: c.req.valid('header')['if-match'],
      }),
    );
    return jsonResponse(200, infoJson(value), { etag });
  }
  const body = validJson<SnapshotInput>(c) as SnapshotInput & Record<string, unknown>;
  const def = defOf(body.optimizer ?? 'adam', ['optimizer']);
  const { dtype } = body;
  const hyperparams = hyperparamsOf(def, body.hyperparams, 'hyperparams');
  const paramGroups = parseParamGroups(def, body.param_groups, ['param_groups']);
  // A sharded optimizer takes more than one object holds: the object refuses what it cannot place (413).
  const limits = c.get('limits');
  const most = Math.min(shardedMostOf(limits, def, dtype), MAX_JSON_HOSTED_ELEMENTS);
  const params = parseParams(body.params, ['params'], most, dtype);
  checkEmptyWeight(params.layout, mostOf(limits, def, dtype), 'params');
  checkCheckpointHeader(def, params.layout, ['params']); // before the RPC, as at creation
  const { slots, scalars } = snapshotState(def, body, params.layout, dtype);
  const { etag, value } = unwrap(
    await stub.restore(await tokenHash(c), {
      optimizer: def.name,
      step: body.step,
      dtype,
      hyperparams,
      paramGroups,
      schedule: body.schedule,
      schedulerState: body.scheduler_state,
      layout: params.layout,
      params: params.values,
      slots,
      scalars,
      tensors: body.tensors,
      quota: readKeyQuota(c.env),
      ifMatch: c.req.valid('header')['if-match'],
    }),
  );
  return jsonResponse(200, infoJson(value), { etag });
};

/** Zeros of a shape as nested arrays (where a partial tree has null). */
function zerosOf(shape: readonly number[]): unknown {
  if (shape.length === 0) return 0;
  const [d, ...rest] = shape;
  return Array.from({ length: d! }, () => zerosOf(rest));
}

/**
 * A tree shaped like `layout` in which a tensor may be null: the tree with zeros there, and which
 * tensors (layout order) were given. A tree of another structure is left for parsing to name.
 */
function withNullTensors(value: unknown, layout: TensorLayout): { value: unknown; held: boolean[] } {
  const held = leaves(layout).map(() => true);
  let index = 0;
  const walk = (v: unknown, l: TensorLayout): unknown => {
    if (l.kind === 'tensor') {
      const at = index++;
      if (v !== null) return v;
      held[at] = false;
      return zerosOf(l.shape);
    }
    const count = leaves(l).length;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      index += count;
      return v;
    }
    const out: Record<string, unknown> = { ...(v as Record<string, unknown>) };
    for (const e of l.entries) {
      if (Object.hasOwn(out, e.name)) out[e.name] = walk(out[e.name], e.layout);
      else index += leaves(e.layout).length;
    }
    return out;
  };
  return { value: walk(value, layout), held };
}

/** Adam's snapshot names (those of /v1/adam/step) for its torch state names. */
export const ADAM_SNAPSHOT_FIELDS: Readonly<Record<string, string>> = { exp_avg: 'm', exp_avg_sq: 'v', max_exp_avg_sq: 'v_max' };

/**
 * The slots and scalars of a JSON snapshot for `def`: torch's names (and, for adam, m/v/v_max),
 * each slot tree shaped like the params. A slot field of another optimizer is a 422 naming it;
 * null stands for a slot torch has not created (SGD's momentum_buffer before momentum).
 */
function snapshotState(def: AnyDef, body: Record<string, unknown>, layout: TensorLayout, dtype: Dtype) {
  const own = new Map(def.slots.map((s) => [s.name, s.name]));
  if (def.name === 'adam') for (const [torch, field] of Object.entries(ADAM_SNAPSHOT_FIELDS)) own.set(field, torch);
  const slots: Record<string, { field: string; values: FloatArray; held?: boolean[] }> = {};
  for (const field of [...SNAPSHOT_SLOT_FIELDS, 'm', 'v', 'v_max']) {
    const tree = body[field];
    if (tree === undefined || tree === null) continue;
    const name = own.get(field);
    if (name === undefined) {
      const slotsList = def.slots.map((s) => (def.name === 'adam' ? `${ADAM_SNAPSHOT_FIELDS[s.name]} (or ${s.name})` : s.name)).join(', ') || 'none';
      throw validationProblem([fieldError([field], `is not state of ${def.name} (${def.torch} keeps: ${slotsList})`)]);
    }
    if (slots[name]) throw validationProblem([fieldError([field], `gives ${name} a second time (as ${slots[name].field}): send one of the two names`)]);
    // A tensor's may be null (torch keeps none for it, e.g. SGD's momentum_buffer in a group without momentum).
    const partial = withNullTensors(tree, layout);
    slots[name] = { field, values: parseLike(partial.value, layout, [field], dtype), ...(partial.held.every(Boolean) ? {} : { held: partial.held }) };
  }
  const scalars: Record<string, number> = {};
  for (const field of SNAPSHOT_SCALAR_FIELDS) {
    const v = body[field];
    if (v === undefined) continue;
    if (!def.scalars.some((s) => s.name === field)) throw validationProblem([fieldError([field], `is not state of ${def.name} (${def.torch} keeps no ${field})`, v as number)]);
    scalars[field] = v as number;
  }
  return { slots, scalars };
}

export const patchOptimizer: RouteHandler<typeof routes.patchOptimizerRoute, AppEnv> = async (c) => {
  const body = c.req.valid('json');
  const { etag, value } = unwrap(
    await stubFor(c, c.req.valid('param').id).update(await tokenHash(c), {
      hyperparams: body.hyperparams,
      paramGroups: body.param_groups,
      schedule: body.schedule,
      ttl: body.ttl,
      accumulate: body.accumulate,
      ifMatch: c.req.valid('header')['if-match'],
    }),
  );
  return jsonResponse(200, infoJson(value), { etag });
};

export const deleteOptimizer: RouteHandler<typeof routes.deleteOptimizerRoute, AppEnv> = async (c) => {
  unwrap(await stubFor(c, c.req.valid('param').id).remove(await tokenHash(c), c.req.valid('header')['if-match']));
  return new Response(null, { status: 204 }) as never;
};

export const rotateToken: RouteHandler<typeof routes.rotateTokenRoute, AppEnv> = async (c) => {
  // Before rotating: an answer the client cannot take would lose the new token.
  withTensorProblems(() => acceptFormat(c.req.header('accept'), ['json'], 'json'));
  const { id } = c.req.valid('param');
  const token = newToken();
  unwrap(await stubFor(c, id).rotateToken(await tokenHash(c), await sha256Hex(token)));
  return jsonResponse(200, { id, token }, { 'cache-control': 'no-store' });
};

export const getHistory: RouteHandler<typeof routes.historyRoute, AppEnv> = async (c) => {
  const history = unwrap(await stubFor(c, c.req.valid('param').id).history(await tokenHash(c), c.req.valid('query').limit));
  return jsonResponse(200, history);
};

export const plotHistory: RouteHandler<typeof routes.historyPlotRoute, AppEnv> = async (c) => {
  const { limit, log_scale: logScale } = c.req.valid('query');
  const { entries: recorded } = unwrap(await stubFor(c, c.req.valid('param').id).history(await tokenHash(c), limit));
  // The lines join applied steps; a skipped step (which left the step count as it was) is only counted in the title.
  const entries = recorded.filter((e) => e.skipped !== true);
  const skipped = recorded.length - entries.length;
  if (entries.length === 0) throw new ProblemError(409, 'conflict', `no step has been applied yet${skipped ? ` (${skipped} skipped)` : ''}: plot after the first step`);
  const withLoss = entries.filter((e) => e.loss !== null);
  if (logScale) {
    const bad = withLoss.find((e) => e.loss! <= 0);
    if (bad) throw validationProblem([fieldError(['log_scale'], `a log scale needs every loss > 0, but the loss at step ${bad.step} is ${bad.loss}`, true)]);
  }
  const lrSeries: Series = { label: 'learning rate', x: entries.map((e) => e.step), y: entries.map((e) => e.lr) };
  const series: Series[] = withLoss.length
    ? [{ label: 'loss', x: withLoss.map((e) => e.step), y: withLoss.map((e) => e.loss!) }, { ...lrSeries, axis: 'right' }]
    : [lrSeries];
  let svg: string;
  try {
    svg = renderLineChart(series, {
      title: `Optimizer ${c.req.valid('param').id.slice(0, 12)}…: ${withLoss.length ? 'loss and learning rate' : 'learning rate'}${skipped ? ` (${skipped} skipped step${skipped === 1 ? '' : 's'} not drawn)` : ''}`,
      xLabel: 'step',
      yLabel: withLoss.length ? 'loss' : 'learning rate',
      y2Label: 'learning rate',
      logY: withLoss.length > 0 && logScale,
    });
  } catch (err) {
    // Values a chart cannot scale (beyond 1e±300): the history is fine, only the picture is not.
    if (err instanceof ChartError) throw new ProblemError(422, 'validation-error', `the history cannot be plotted: ${err.message}`);
    throw err;
  }
  return c.body(svg, 200, { 'content-type': 'image/svg+xml; charset=utf-8' });
};

