// One hosted optimizer per SQLite-backed Durable Object: params and Adam state live in memory
// (loaded once per object lifetime) and are written through, in one transaction, on every step.
// The math is src/optim's; this class adds storage, access control, idempotency and preconditions.
// Each RPC method is synchronous after its arguments arrive, so steps on one object never interleave.

import { DurableObject } from 'cloudflare:workers';
import { BEARER_CHALLENGE } from '../lib/auth.ts';
import { ProblemError, fieldError, headerError, validationProblem, type ProblemBody } from '../lib/problem.ts';
import { initialSchedulerState, learningRate, reportMetric, scheduleOverflow, type PlateauState, type ScheduleSpec } from '../lib/learning-rate.ts';
import { alignTo } from '../lib/tensor-input.ts';
import { MAX_STEP, adamStepInPlace, firstNonFinite, zeros, type AdamHyperparams, type Dtype, type FloatArray } from '../optim/adam.ts';
import { approxTreeJsonLength, objectJson, textStream, treeJson, treeJsonPieces } from '../wire/json.ts';
import { layoutShapes, pathOfIndex, type FlatTensors, type TensorLayout } from '../tensors/tree.ts';
import { TENSOR_SCHEMA, deleteBlob, readBlob, readTensor, writeBlob, writeTensor } from './tensor-store.ts';

/** Idempotency keys remembered per optimizer. */
export const IDEMPOTENCY_KEYS_KEPT = 256;
/** History entries (step, lr, loss) kept per optimizer. */
export const HISTORY_KEPT = 10_000;

/** What every RPC method returns: a ready HTTP answer (JSON text built here, next to the data). */
export interface Reply {
  status: number;
  /** JSON text, or a stream of it for answers that may exceed the 32 MiB RPC limit. */
  body: string | ReadableStream<Uint8Array> | null;
  headers: Record<string, string>;
}

interface Meta {
  version: 1;
  id: string;
  tokenHash: string;
  createdAt: string;
  updatedAt: string;
  step: number;
  dtype: Dtype;
  size: number;
  hyperparams: AdamHyperparams;
  schedule: ScheduleSpec | null;
  plateau: PlateauState | null;
  /** Count of applied steps, also when the float32 step counter has saturated (orders idempotency keys). */
  seq: number;
}

interface Tensors {
  params: FloatArray;
  m: FloatArray;
  v: FloatArray;
  vMax: FloatArray | null;
}

/** A new optimizer, already validated and flattened by the Worker. */
export interface CreateArgs {
  tokenHash: string;
  layout: TensorLayout;
  params: FloatArray;
  hyperparams: AdamHyperparams;
  schedule: ScheduleSpec | null;
  dtype: Dtype;
}

export interface StepArgs {
  /** Gradients flattened in the Worker in their own key order; aligned to the stored layout here. */
  grads: FlatTensors;
  loss?: number | undefined;
  expectedStep?: number | undefined;
  ifMatch?: string | undefined;
  idempotencyKey?: string | undefined;
  returnParams: boolean;
}

/** A snapshot to restore, already validated and flattened by the Worker. */
export interface SnapshotArgs {
  step: number;
  dtype: Dtype;
  hyperparams: AdamHyperparams;
  schedule: ScheduleSpec | null;
  scheduler_state?: PlateauState | null | undefined;
  layout: TensorLayout;
  params: FloatArray;
  m: FloatArray;
  v: FloatArray;
  vMax: FloatArray | null;
}

export interface PatchArgs {
  hyperparams?: Partial<AdamHyperparams> | undefined;
  schedule?: ScheduleSpec | null | undefined;
}

const SCHEMA = [
  TENSOR_SCHEMA,
  'CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)',
  'CREATE TABLE IF NOT EXISTS history (seq INTEGER PRIMARY KEY, step INTEGER NOT NULL, lr REAL NOT NULL, loss REAL, at TEXT NOT NULL)',
  'CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, fingerprint TEXT NOT NULL, step INTEGER NOT NULL, lr REAL NOT NULL)',
];

/**
 * The state version sent as ETag and compared with If-Match. Once torch's float32 step counter
 * saturates at 2^24 the step no longer changes, so the applied-step count tells states apart.
 */
export const etagOf = (meta: { step: number; seq: number }) => (meta.step < MAX_STEP ? `"step-${meta.step}"` : `"step-${meta.step}-${meta.seq}"`);

function json(status: number, body: unknown, headers: Record<string, string> = {}): Reply {
  return { status, body: JSON.stringify(body), headers: { 'content-type': 'application/json', ...headers } };
}

/** Replies above this many characters are streamed: an RPC value may not exceed 32 MiB. */
const STREAM_ABOVE = 8 * 1024 * 1024;

/**
 * `head` plus a last field holding a tensor tree: one string when small, a stream of pieces when
 * large (from a copy, since later steps update the live arrays in place).
 */
function treeReply(head: Record<string, unknown>, key: string, layout: TensorLayout, values: FloatArray, headers: Record<string, string>): Reply {
  if (approxTreeJsonLength(layout, values.length) <= STREAM_ABOVE) {
    const fields = Object.entries(head).map(([k, value]) => [k, { value }] as const);
    const body = objectJson([...fields, [key, { json: treeJson(layout, values) }]]);
    return { status: 200, body, headers: { 'content-type': 'application/json', ...headers } };
  }
  const copy = values.slice();
  const prefix = JSON.stringify(head).slice(0, -1);
  function* pieces(): Generator<string> {
    yield `${prefix}${prefix.length > 1 ? ',' : ''}${JSON.stringify(key)}:`;
    yield* treeJsonPieces(layout, copy);
    yield '}';
  }
  return { status: 200, body: textStream(pieces()), headers: { 'content-type': 'application/json', ...headers } };
}

function problemReply(p: ProblemError): Reply {
  const body: ProblemBody = p.toBody();
  return { status: p.status, body: JSON.stringify(body), headers: { 'content-type': 'application/problem+json', ...p.headers } };
}

/** Runs a handler body, turning thrown problems into replies (RPC would lose their class). */
function guarded(fn: () => Reply): Reply {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ProblemError) return problemReply(e);
    throw e;
  }
}

const finiteOrNull = (x: number) => (Number.isFinite(x) ? x : null);

/** Constant-time string comparison (token hashes). */
function sameString(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** 64-bit FNV-1a over the gradient's bytes and the loss: detects reuse of a key for another step. */
function fingerprint(grads: FloatArray, loss: number | undefined): string {
  const words = new Uint32Array(grads.buffer, grads.byteOffset, grads.byteLength >> 2);
  let h1 = 0x811c9dc5;
  let h2 = 0xcbf29ce4;
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    h1 = Math.imul(h1 ^ w, 0x01000193);
    h2 = Math.imul(h2 ^ (w >>> 16) ^ (i & 0xffff), 0x0100019d);
  }
  return `${grads.length}:${(h1 >>> 0).toString(16)}${(h2 >>> 0).toString(16)}:${loss ?? ''}`;
}

export class HostedOptimizer extends DurableObject<Env> {
  #meta: Meta | null = null;
  #layout: TensorLayout | null = null;
  #tensors: Tensors | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => this.#load());
  }

  get #sql() {
    return this.ctx.storage.sql;
  }

  /** Loads everything from storage (used at start-up and to discard a failed in-place step). */
  #load(): void {
    this.#meta = null;
    this.#layout = null;
    this.#tensors = null;
    const hasMeta = this.#sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").toArray().length > 0;
    if (!hasMeta) return;
    const metaText = this.#sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = 'meta'").toArray()[0]?.v;
    if (!metaText) return;
    const meta = JSON.parse(metaText) as Meta;
    const n = meta.size;
    this.#tensors = {
      params: readTensor(this.#sql, 'params', meta.dtype, n),
      m: readTensor(this.#sql, 'm', meta.dtype, n),
      v: readTensor(this.#sql, 'v', meta.dtype, n),
      vMax: meta.hyperparams.amsgrad ? readTensor(this.#sql, 'v_max', meta.dtype, n) : null,
    };
    // The layout can outgrow one row (up to 10,000 tensor names), so it is chunked like a tensor.
    this.#layout = JSON.parse(new TextDecoder().decode(readBlob(this.#sql, 'layout'))) as TensorLayout;
    this.#meta = meta;
  }

  /** Writes meta and (optionally) the layout and tensors; callers wrap it in transactionSync. */
  #persist(meta: Meta, tensors: Tensors | null, layout: TensorLayout | null): void {
    this.#sql.exec('INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)', 'meta', JSON.stringify(meta));
    if (layout) writeBlob(this.#sql, 'layout', new TextEncoder().encode(JSON.stringify(layout)));
    if (tensors) {
      writeTensor(this.#sql, 'params', tensors.params);
      writeTensor(this.#sql, 'm', tensors.m);
      writeTensor(this.#sql, 'v', tensors.v);
      if (tensors.vMax) writeTensor(this.#sql, 'v_max', tensors.vMax);
      else deleteBlob(this.#sql, 'v_max');
    }
  }

  /** The loaded optimizer, or a 404/401 problem. */
  #authorized(tokenHash: string | null): { meta: Meta; layout: TensorLayout; tensors: Tensors } {
    const meta = this.#meta;
    if (!meta || !this.#layout || !this.#tensors) throw new ProblemError(404, 'not-found', 'no optimizer with this id (never created, or deleted)');
    const challenge = BEARER_CHALLENGE;
    if (tokenHash === null) throw new ProblemError(401, 'unauthorized', 'missing `Authorization: Bearer <token>` header', undefined, undefined, challenge);
    if (!sameString(tokenHash, meta.tokenHash)) throw new ProblemError(401, 'unauthorized', 'the bearer token does not open this optimizer', undefined, undefined, challenge);
    return { meta, layout: this.#layout, tensors: this.#tensors };
  }

  #info(meta: Meta, layout: TensorLayout) {
    return {
      id: meta.id,
      step: meta.step,
      hyperparams: meta.hyperparams,
      schedule: meta.schedule,
      next_lr: finiteOrNull(learningRate(meta.hyperparams.lr, meta.schedule, meta.step, meta.plateau)),
      dtype: meta.dtype,
      shapes: layoutShapes(layout),
      size: meta.size,
      created_at: meta.createdAt,
      updated_at: meta.updatedAt,
    };
  }

  create(args: CreateArgs): Reply {
    return guarded(() => {
      if (this.#meta) throw new ProblemError(409, 'conflict', 'this optimizer already exists');
      const { dtype, hyperparams, layout } = args;
      const n = args.params.length;
      const tensors: Tensors = { params: args.params, m: zeros(dtype, n), v: zeros(dtype, n), vMax: hyperparams.amsgrad ? zeros(dtype, n) : null };
      const now = new Date().toISOString();
      const meta: Meta = {
        version: 1,
        id: this.ctx.id.toString(),
        tokenHash: args.tokenHash,
        createdAt: now,
        updatedAt: now,
        step: 0,
        dtype,
        size: n,
        hyperparams,
        schedule: args.schedule,
        plateau: initialSchedulerState(args.schedule),
        seq: 0,
      };
      this.ctx.storage.transactionSync(() => {
        for (const statement of SCHEMA) this.#sql.exec(statement);
        this.#persist(meta, tensors, layout);
      });
      this.#meta = meta;
      this.#layout = layout;
      this.#tensors = tensors;
      return json(201, this.#info(meta, layout), { etag: etagOf(meta) });
    });
  }

  describe(tokenHash: string | null): Reply {
    return guarded(() => {
      const { meta, layout } = this.#authorized(tokenHash);
      return json(200, this.#info(meta, layout), { etag: etagOf(meta) });
    });
  }

  params(tokenHash: string | null): Reply {
    return guarded(() => {
      const { meta, layout, tensors } = this.#authorized(tokenHash);
      return treeReply({ step: meta.step }, 'params', layout, tensors.params, { etag: etagOf(meta) });
    });
  }

  step(tokenHash: string | null, args: StepArgs): Reply {
    return guarded(() => {
      const { meta, layout, tensors } = this.#authorized(tokenHash);
      const grads = alignTo(args.grads, layout, ['grads'], meta.dtype);
      const print = fingerprint(grads, args.loss);

      if (args.idempotencyKey !== undefined) {
        const seen = this.#sql
          .exec<{ fingerprint: string; seq: number; step: number; lr: number }>('SELECT fingerprint, seq, step, lr FROM idempotency WHERE key = ?', args.idempotencyKey)
          .toArray()[0];
        if (seen) {
          if (seen.fingerprint !== print) {
            throw validationProblem([headerError('Idempotency-Key', 'was already used for a step with different gradients or loss', args.idempotencyKey)]);
          }
          const head = { step: seen.step, lr: seen.lr, replayed: true };
          const headers = { etag: etagOf(meta), 'idempotent-replayed': 'true' };
          if (args.returnParams && seen.seq === meta.seq) return treeReply(head, 'params', layout, tensors.params, headers);
          return json(200, head, headers);
        }
      }
      if (args.ifMatch !== undefined && args.ifMatch.trim() !== '*') {
        // Strong comparison (RFC 9110 §13.1.1): a weak tag (W/"…") never matches.
        const tags = args.ifMatch.split(',').map((t) => t.trim());
        if (!tags.includes(etagOf(meta))) {
          throw new ProblemError(412, 'precondition-failed', `If-Match ${args.ifMatch} does not match the current state ${etagOf(meta)}`, undefined, {
            step: meta.step,
          }, { etag: etagOf(meta) });
        }
      }
      if (args.expectedStep !== undefined && args.expectedStep !== meta.step) {
        throw new ProblemError(409, 'conflict', `expected_step is ${args.expectedStep} but the optimizer has completed ${meta.step} steps`, [
          fieldError(['expected_step'], `the optimizer is at step ${meta.step}`, args.expectedStep),
        ], { step: meta.step });
      }

      const lr = learningRate(meta.hyperparams.lr, meta.schedule, meta.step, meta.plateau);
      if (!Number.isFinite(lr)) throw scheduleOverflow(meta.step, lr);
      const state = { step: meta.step, m: tensors.m, v: tensors.v, vMax: tensors.vMax };
      // In place: the stored copy is the undo log. A non-finite result reloads it.
      adamStepInPlace({ dtype: meta.dtype, hyperparams: { ...meta.hyperparams, lr }, params: tensors.params, grads, state });
      const bad = firstNonFinite(tensors.params, tensors.m, tensors.v);
      if (bad) {
        this.#load();
        const where = pathOfIndex(layout, bad.index);
        throw new ProblemError(422, 'non-finite-result', 'the step would produce a non-finite value (overflow); nothing was changed', [
          fieldError(['grads', ...where], 'leads to a non-finite parameter or moment'),
        ]);
      }

      const next: Meta = {
        ...meta,
        step: state.step,
        seq: meta.seq + 1,
        updatedAt: new Date().toISOString(),
        plateau: args.loss === undefined ? meta.plateau : reportMetric(meta.schedule, meta.plateau, args.loss),
      };
      try {
        this.ctx.storage.transactionSync(() => {
          this.#persist(next, tensors, null);
          this.#sql.exec('INSERT INTO history (seq, step, lr, loss, at) VALUES (?, ?, ?, ?, ?)', next.seq, next.step, lr, args.loss ?? null, next.updatedAt);
          this.#sql.exec('DELETE FROM history WHERE seq <= ?', next.seq - HISTORY_KEPT);
          if (args.idempotencyKey !== undefined) {
            this.#sql.exec('INSERT INTO idempotency (key, seq, fingerprint, step, lr) VALUES (?, ?, ?, ?, ?)', args.idempotencyKey, next.seq, print, next.step, lr);
            this.#sql.exec('DELETE FROM idempotency WHERE seq <= ?', next.seq - IDEMPOTENCY_KEYS_KEPT);
          }
        });
      } catch (e) {
        this.#load(); // the write failed and rolled back: drop the in-memory update too
        throw e;
      }
      this.#meta = next;

      const head = { step: next.step, lr };
      if (args.returnParams) return treeReply(head, 'params', layout, tensors.params, { etag: etagOf(next) });
      return json(200, head, { etag: etagOf(next) });
    });
  }

  snapshot(tokenHash: string | null): Reply {
    return guarded(() => {
      const { meta, layout, tensors } = this.#authorized(tokenHash);
      // Streamed (a float64 amsgrad snapshot of 1M elements is ~90 MB of JSON, beyond the RPC
      // limit) from copies, since later steps update the live arrays in place.
      const copies = { params: tensors.params.slice(), m: tensors.m.slice(), v: tensors.v.slice(), vMax: tensors.vMax?.slice() ?? null };
      const field = (name: string, value: unknown) => `,${JSON.stringify(name)}:${JSON.stringify(value)}`;
      function* pieces(): Generator<string> {
        yield `{"id":${JSON.stringify(meta.id)}` + field('step', meta.step) + field('dtype', meta.dtype) + field('hyperparams', meta.hyperparams);
        yield field('schedule', meta.schedule) + field('scheduler_state', meta.plateau) + ',"params":';
        yield* treeJsonPieces(layout, copies.params);
        yield ',"m":';
        yield* treeJsonPieces(layout, copies.m);
        yield ',"v":';
        yield* treeJsonPieces(layout, copies.v);
        if (copies.vMax) {
          yield ',"v_max":';
          yield* treeJsonPieces(layout, copies.vMax);
        }
        yield field('created_at', meta.createdAt) + field('updated_at', meta.updatedAt) + '}';
      }
      return { status: 200, body: textStream(pieces()), headers: { 'content-type': 'application/json', etag: etagOf(meta) } };
    });
  }

  restore(tokenHash: string | null, args: SnapshotArgs): Reply {
    return guarded(() => {
      const { meta } = this.#authorized(tokenHash);
      const { dtype, hyperparams, layout } = args;
      const { schedule } = args;
      if (args.scheduler_state && schedule?.type !== 'reduce_on_plateau') {
        throw validationProblem([fieldError(['scheduler_state'], 'must be null or omitted unless the schedule is reduce_on_plateau')]);
      }
      const tensors: Tensors = { params: args.params, m: args.m, v: args.v, vMax: args.vMax };
      const next: Meta = {
        ...meta,
        step: args.step,
        dtype,
        size: args.params.length,
        hyperparams,
        schedule,
        plateau: args.scheduler_state ?? initialSchedulerState(schedule),
        updatedAt: new Date().toISOString(),
      };
      this.ctx.storage.transactionSync(() => {
        this.#persist(next, tensors, layout);
        // Remembered keys answer for steps of the replaced state: forget them.
        this.#sql.exec('DELETE FROM idempotency');
      });
      this.#meta = next;
      this.#layout = layout;
      this.#tensors = tensors;
      return json(200, this.#info(next, layout), { etag: etagOf(next) });
    });
  }

  update(tokenHash: string | null, args: PatchArgs): Reply {
    return guarded(() => {
      const { meta, layout, tensors } = this.#authorized(tokenHash);
      const hyperparams = { ...meta.hyperparams, ...args.hyperparams };
      const schedule = args.schedule === undefined ? meta.schedule : args.schedule;
      const scheduleChanged = JSON.stringify(schedule) !== JSON.stringify(meta.schedule);
      let vMax = tensors.vMax;
      // Switching amsgrad on starts the running max from zero (max(0, v) = v at the next step).
      if (hyperparams.amsgrad && !vMax) vMax = zeros(meta.dtype, meta.size);
      if (!hyperparams.amsgrad) vMax = null;
      const next: Meta = {
        ...meta,
        hyperparams,
        schedule,
        plateau: scheduleChanged ? initialSchedulerState(schedule) : meta.plateau,
        updatedAt: new Date().toISOString(),
      };
      const nextTensors = { ...tensors, vMax };
      this.ctx.storage.transactionSync(() => this.#persist(next, vMax !== tensors.vMax ? nextTensors : null, null));
      this.#meta = next;
      this.#tensors = nextTensors;
      return json(200, this.#info(next, layout), { etag: etagOf(next) });
    });
  }

  history(tokenHash: string | null, limit: number): Reply {
    return guarded(() => {
      this.#authorized(tokenHash);
      const rows = this.#sql
        .exec<{ step: number; lr: number; loss: number | null; at: string }>('SELECT step, lr, loss, at FROM history ORDER BY seq DESC LIMIT ?', limit)
        .toArray()
        .reverse();
      return json(200, { entries: rows, kept: HISTORY_KEPT });
    });
  }

  async remove(tokenHash: string | null): Promise<Reply> {
    const reply = guarded(() => {
      this.#authorized(tokenHash);
      return { status: 204, body: null, headers: {} };
    });
    if (reply.status !== 204) return reply;
    this.#meta = null;
    this.#layout = null;
    this.#tensors = null;
    await this.ctx.storage.deleteAll(); // wipes every table (and any alarm) atomically
    return reply;
  }
}
