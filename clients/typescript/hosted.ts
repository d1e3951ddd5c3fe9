// A hosted optimizer from TypeScript in a few lines, binary on the wire: typed arrays in, typed
// arrays out. Built on fetch only (Node 18+, Deno, Bun, browsers, Workers).
//
//   import { createHostedOptimizer } from './clients/typescript/hosted.ts';
//   const opt = await createHostedOptimizer({ baseUrl, params: { 'fc.weight': { shape: [2, 3], values: w }, 'fc.bias': b },
//                                             optimizer: 'adamw', hyperparams: { lr: 1e-3 } });
//   for (…) params = await opt.step(grads);          // Float32Array in layout order, or by name
//   const checkpoint = await opt.snapshot();          // safetensors bytes torch can load
//
// Many workers, one optimizer: create it with `accumulate: N`; each worker (`worker: i` at create or
// attach) calls `step(grads)`, which posts its contribution and resolves with the params of the step
// once every worker's has arrived (a long-poll of GET …/params?min_step=k&wait=30).
//
// Creation sends only the layout (create by shapes), then the initial values as raw bytes in parts,
// so no request carries more than `partBytes`. Steps send raw little-endian gradients and read the
// new params back raw; a gradient above `stepPartBytes` (64 MiB: a sharded optimizer's) goes in parts. Every call that changes something carries an Idempotency-Key and is retried
// on network errors, 5xx and 429 (after Retry-After), so a retried step is applied exactly once.

import type { components } from './schema.d.ts';

export type Problem = components['schemas']['Problem'];
export type Dtype = 'float32' | 'float64';
type Floats = Float32Array | Float64Array;

/** A tensor: a 1-D typed array, or values with a shape (row-major). */
export type TensorInput = Floats | { shape: number[]; values: Floats };

/**
 * A sparse (row) gradient, for `sgd`, `adagrad` and `sparse_adam`: rows of the tensor's first
 * dimension (repeats allowed, as an embedding's backward gives them) and one row of values each,
 * `values.length === indices.length * (size / shape[0])`. Sent as `grads.indices/<name>` (I64) with
 * `grads.values/<name>`; the step is torch's with `torch.sparse_coo_tensor(indices, values)`.
 */
export interface SparseRows {
  indices: ArrayLike<number>;
  values: Floats;
}

/** Many workers, one optimizer: contributions (workers) per step, and how they are reduced (default mean). */
export type Accumulate = number | { contributions: number; reduce?: 'mean' | 'sum' };

export interface LayoutEntry {
  name: string;
  shape: number[];
  offset: number;
  size: number;
}

export interface HostedOptimizerOptions {
  /** The adam-api server (default `http://localhost:8787`, `npm run dev`'s address). */
  baseUrl?: string;
  /** The parameters by name, in the order the layout keeps (one unnamed tensor: a bare array). */
  params: Record<string, TensorInput> | TensorInput;
  /** An optimizer of `GET /v1/algorithms` (default `adam`). */
  optimizer?: string;
  /** Its hyperparameters, torch's names (and gradient controls: clip_grad_norm, nonfinite, …). */
  hyperparams?: Record<string, number | boolean | string>;
  /** torch's param_groups by tensor name or pattern. */
  paramGroups?: Array<{ params: string[] } & Record<string, unknown>>;
  /** A server-side learning-rate schedule (`POST /v1/schedules/evaluate` describes them). */
  schedule?: Record<string, unknown>;
  dtype?: Dtype;
  /** Many workers, one optimizer: each step takes one gradient from each of N workers (README "Many workers, one optimizer"). */
  accumulate?: Accumulate;
  /** This process's worker id 0..N-1 under `accumulate`: `step` contributes, then waits for the step. */
  worker?: number;
  /** Durable Objects to spread the tensors over (default: one, or the fewest that hold them: README "Models larger than one object"). */
  shards?: number;
  /** An API key, when the server requires one (`API_KEYS`): sent to create the optimizer. */
  apiKey?: string;
  /** Largest request body of an upload part (default 8 MiB). */
  partBytes?: number;
  /**
   * Largest raw step body (default 64 MiB): a larger gradient (only a sharded optimizer's can be) is
   * sent in parts of this size under one Idempotency-Key (`?part_offset=`); the last applies the step.
   */
  stepPartBytes?: number;
  /** Attempts per call on network errors, 5xx and 429 (default 5). */
  attempts?: number;
  fetch?: typeof fetch;
}

/** A 4xx/5xx answer, with its RFC 9457 problem when it had one. */
export class HostedOptimizerError extends Error {
  readonly status: number;
  readonly problem: Problem | undefined;
  constructor(status: number, problem: Problem | undefined, what: string) {
    super(`${what}: ${status}${problem ? ` ${problem.title}: ${problem.detail}` : ''}`);
    this.name = 'HostedOptimizerError';
    this.status = status;
    this.problem = problem;
  }
}

const RAW = 'application/octet-stream';
const SAFETENSORS = 'application/vnd.safetensors';

/** The little-endian bytes of a typed array (every platform fetch runs on here is little-endian). */
const bytesOf = (a: Floats): Uint8Array<ArrayBuffer> => new Uint8Array(a.buffer as ArrayBuffer, a.byteOffset, a.byteLength);

interface Connection {
  baseUrl: string;
  apiKey: string | undefined;
  attempts: number;
  stepPartBytes: number;
  fetch: typeof fetch;
}

/** Default largest raw step body: well under the smallest plan's 100 MB request limit. */
export const STEP_PART_BYTES = 64 << 20;

/** One call: retried (same Idempotency-Key) on network errors, 5xx and 429; a 4xx problem is thrown. */
async function call(conn: Connection, method: string, path: string, init: { token?: string; headers?: Record<string, string>; body?: BodyInit; idempotent?: boolean | string } = {}): Promise<Response> {
  const headers: Record<string, string> = { ...init.headers };
  // A hosted optimizer's routes take its token; the service routes (create) the API key, if any.
  const bearer = init.token ?? conn.apiKey;
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  // A key of its own, or the one given (the parts of one step share it).
  if (init.idempotent) headers['idempotency-key'] = typeof init.idempotent === 'string' ? init.idempotent : crypto.randomUUID();
  // GET, PUT and DELETE are idempotent by nature; POST only with its key.
  const retriable = method !== 'POST' || Boolean(init.idempotent);
  let lastError: unknown;
  for (let attempt = 1; attempt <= conn.attempts; attempt++) {
    let res: Response;
    try {
      res = await conn.fetch(conn.baseUrl + path, { method, headers, body: init.body });
    } catch (err) {
      lastError = err;
      if (!retriable || attempt === conn.attempts) throw err;
      await sleep(backoff(attempt));
      continue;
    }
    if (res.ok) return res;
    const retry = retriable && (res.status >= 500 || res.status === 429) && attempt < conn.attempts;
    const problem = (await res.json().catch(() => undefined)) as Problem | undefined;
    if (!retry) throw new HostedOptimizerError(res.status, problem, `${method} ${path}`);
    const after = Number(res.headers.get('retry-after'));
    await sleep(Number.isFinite(after) && after > 0 ? after * 1000 : backoff(attempt));
  }
  throw lastError;
}

const backoff = (attempt: number) => Math.min(8000, 100 * 2 ** attempt) * (0.5 + Math.random() / 2);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function normalize(params: HostedOptimizerOptions['params']): Array<{ name: string; shape: number[]; values: Floats }> {
  const one = (t: TensorInput): { shape: number[]; values: Floats } => (ArrayBuffer.isView(t) ? { shape: [t.length], values: t } : t);
  if (ArrayBuffer.isView(params) || (typeof params === 'object' && 'shape' in params && 'values' in params && ArrayBuffer.isView(params.values))) {
    return [{ name: '', ...one(params as TensorInput) }];
  }
  return Object.entries(params as Record<string, TensorInput>).map(([name, t]) => ({ name, ...one(t) }));
}

/** A hosted optimizer: its params and state live in adam-api; steps send gradients only. */
export class HostedOptimizer {
  readonly id: string;
  /** The bearer token (shown once at creation: keep it to attach from elsewhere). */
  readonly token: string;
  readonly dtype: Dtype;
  /** Where each named tensor sits in the flat params (layout order). */
  readonly layout: LayoutEntry[];
  readonly size: number;
  /** Steps the optimizer had taken at the last answer this object saw (`expected_step` of a contribution). */
  stepCount: number;
  /** This process's worker id under `accumulate` (step() contributes and waits), or undefined. */
  worker: number | undefined;
  readonly #conn: Connection;

  private constructor(conn: Connection, id: string, token: string, dtype: Dtype, layout: LayoutEntry[], step: number, worker: number | undefined) {
    this.#conn = conn;
    this.id = id;
    this.token = token;
    this.dtype = dtype;
    this.layout = layout;
    this.size = layout.reduce((n, t) => n + t.size, 0);
    this.stepCount = step;
    this.worker = worker;
  }

  /** Creates it by shapes, then uploads the params in raw parts. */
  static async create(options: HostedOptimizerOptions): Promise<HostedOptimizer> {
    const conn = connection(options);
    const dtype = options.dtype ?? 'float32';
    const tensors = normalize(options.params);
    const shapes = tensors.length === 1 && tensors[0]!.name === '' ? tensors[0]!.shape : Object.fromEntries(tensors.map((t) => [t.name, t.shape]));
    const body = {
      shapes,
      init: 'zeros',
      dtype,
      ...(options.optimizer ? { optimizer: options.optimizer } : {}),
      ...(options.hyperparams ? { hyperparams: options.hyperparams } : {}),
      ...(options.paramGroups ? { param_groups: options.paramGroups } : {}),
      ...(options.schedule ? { schedule: options.schedule } : {}),
      ...(options.accumulate !== undefined ? { accumulate: accumulateSetting(options.accumulate) } : {}),
      ...(options.shards !== undefined ? { shards: options.shards } : {}),
    };
    const created = (await (await call(conn, 'POST', '/v1/optimizers', { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), idempotent: true })).json()) as {
      id: string;
      token: string;
      layout: LayoutEntry[];
    };
    const opt = new HostedOptimizer(conn, created.id, created.token, dtype, created.layout, 0, options.worker);
    const flat = dtype === 'float32' ? new Float32Array(opt.size) : new Float64Array(opt.size);
    const byName = new Map(tensors.map((t) => [t.name, t]));
    for (const entry of opt.layout) {
      const t = byName.get(entry.name);
      if (!t || t.values.length !== entry.size) throw new Error(`tensor "${entry.name}" must have ${entry.size} values`);
      flat.set(t.values, entry.offset);
    }
    await opt.setParams(flat, options.partBytes);
    return opt;
  }

  /** An optimizer created elsewhere (another process, a restart), by its id and token. */
  static async attach(id: string, token: string, options: Omit<HostedOptimizerOptions, 'params'> = {}): Promise<HostedOptimizer> {
    const conn = connection(options);
    const info = (await (await call(conn, 'GET', `/v1/optimizers/${id}`, { token })).json()) as { dtype: Dtype; layout: LayoutEntry[]; step: number };
    return new HostedOptimizer(conn, id, token, info.dtype, info.layout, info.step, options.worker);
  }

  /** Uploads all params (flat, layout order) in raw parts of at most `partBytes`; the state is kept. */
  async setParams(values: Floats, partBytes = 8 << 20): Promise<void> {
    if (values.length !== this.size) throw new Error(`params must have ${this.size} values, got ${values.length}`);
    const typed = this.#typed(values);
    const per = Math.max(1, Math.floor(partBytes / typed.BYTES_PER_ELEMENT));
    for (let offset = 0; offset < typed.length || offset === 0; offset += per) {
      const part = typed.subarray(offset, Math.min(typed.length, offset + per));
      await call(this.#conn, 'PUT', `/v1/optimizers/${this.id}/params?offset=${offset}`, { token: this.token, headers: { 'content-type': `${RAW}; dtype=${this.dtype}` }, body: bytesOf(part) });
      if (typed.length === 0) break;
    }
  }

  /**
   * One step: the gradients (flat in layout order as raw bytes, or by name in a safetensors file,
   * where a tensor may get `SparseRows` instead) go up and the new params come back flat. `loss`
   * feeds a reduce_on_plateau schedule and the history.
   *
   * With a `worker` (option, or the object's), the gradients are that worker's contribution to the
   * step after `stepCount` (dense: send zeros for a tensor it did not touch): the answer is a 202
   * until every worker's has arrived, so this waits for the step (GET …/params?min_step&wait, asked
   * again while it is pending) and resolves with its params, as the last contributor's answer has them.
   */
  async step(grads: Floats | Record<string, Floats | SparseRows>, options: { loss?: number; worker?: number } = {}): Promise<Floats> {
    let body: Uint8Array<ArrayBuffer>;
    let contentType: string;
    if (ArrayBuffer.isView(grads)) {
      body = bytesOf(this.#typed(grads));
      contentType = `${RAW}; dtype=${this.dtype}`;
    } else {
      body = this.#safetensors(grads);
      contentType = SAFETENSORS;
    }
    const worker = options.worker ?? this.worker;
    const expected = this.stepCount;
    const query = new URLSearchParams();
    if (options.loss !== undefined) query.set('loss', String(options.loss));
    if (worker !== undefined) {
      query.set('worker', String(worker));
      query.set('expected_step', String(expected));
    }
    const search = query.size > 0 ? `?${query}` : '';
    const item = this.dtype === 'float32' ? 4 : 8;
    const part = Math.max(item, this.#conn.stepPartBytes - (this.#conn.stepPartBytes % item));
    if (contentType !== SAFETENSORS && worker === undefined && body.byteLength > part) return this.#answer(await this.#stepInParts(body, part / item, query));
    const res = await call(this.#conn, 'POST', `/v1/optimizers/${this.id}/step${search}`, { token: this.token, headers: { 'content-type': contentType, accept: RAW }, body, idempotent: true });
    if (res.status !== 202) return this.#answer(res);
    await res.body?.cancel();
    // A contribution held for the others: wait for the step it joined.
    for (;;) {
      try {
        return this.#answer(await call(this.#conn, 'GET', `/v1/optimizers/${this.id}/params?min_step=${expected + 1}&wait=30`, { token: this.token, headers: { accept: RAW } }));
      } catch (err) {
        if (!(err instanceof HostedOptimizerError) || err.status !== 409) throw err;
        // Not yet. Unless the set was dropped without a step (a skipped step under nonfinite: "skip", a restore): then as it is.
        const info = (await this.info()) as { step: number; accumulate?: { received: number[] } | null };
        if (info.step === expected && !(info.accumulate?.received ?? []).includes(worker!)) return this.params();
      }
    }
  }

  /**
   * A raw gradient larger than one request may carry, in parts of `per` elements under one
   * Idempotency-Key (a retried part answers again); the last part's answer is the step's.
   */
  async #stepInParts(body: Uint8Array<ArrayBuffer>, per: number, query: URLSearchParams): Promise<Response> {
    const key = crypto.randomUUID();
    const item = this.dtype === 'float32' ? 4 : 8;
    const total = body.byteLength / item;
    for (let offset = 0; ; offset += per) {
      const last = offset + per >= total;
      const q = new URLSearchParams(query);
      q.set('part_offset', String(offset));
      const res = await call(this.#conn, 'POST', `/v1/optimizers/${this.id}/step?${q}`, {
        token: this.token,
        headers: { 'content-type': `${RAW}; dtype=${this.dtype}`, accept: RAW },
        body: body.subarray(offset * item, Math.min(total, offset + per) * item),
        idempotent: key,
      });
      if (last) return res;
      await res.body?.cancel(); // 202: the part is stored
    }
  }

  /** Waits (long-poll) until the optimizer has completed `minStep` steps, then returns its params. */
  async waitForStep(minStep: number, seconds = 30): Promise<Floats> {
    for (;;) {
      try {
        return this.#answer(await call(this.#conn, 'GET', `/v1/optimizers/${this.id}/params?min_step=${minStep}&wait=${seconds}`, { token: this.token, headers: { accept: RAW } }));
      } catch (err) {
        if (!(err instanceof HostedOptimizerError) || err.status !== 409) throw err;
      }
    }
  }

  async #answer(res: Response): Promise<Floats> {
    const step = Number(res.headers.get('step'));
    if (Number.isInteger(step)) this.stepCount = step;
    return this.#floats(await res.arrayBuffer());
  }

  /** The current params, flat in layout order. */
  async params(): Promise<Floats> {
    return this.#answer(await call(this.#conn, 'GET', `/v1/optimizers/${this.id}/params`, { token: this.token, headers: { accept: RAW } }));
  }

  /** One tensor of `flat` (params as `step` and `params` return them), by name. */
  tensor(flat: Floats, name: string): Floats {
    const entry = this.layout.find((t) => t.name === name);
    if (!entry) throw new Error(`no tensor "${name}" (the tensors are ${this.layout.map((t) => t.name).join(', ')})`);
    return flat.subarray(entry.offset, entry.offset + entry.size);
  }

  /** A safetensors checkpoint of params and state, with torch's names (torch loads it). */
  async snapshot(): Promise<Uint8Array> {
    return new Uint8Array(await (await call(this.#conn, 'GET', `/v1/optimizers/${this.id}/state`, { token: this.token, headers: { accept: SAFETENSORS } })).arrayBuffer());
  }

  /** Restores a checkpoint that `snapshot()` (or torch, see the README) wrote. */
  async restore(checkpoint: Uint8Array): Promise<void> {
    await call(this.#conn, 'PUT', `/v1/optimizers/${this.id}/state`, { token: this.token, headers: { 'content-type': SAFETENSORS }, body: checkpoint as Uint8Array<ArrayBuffer> });
  }

  /** The optimizer's description (step, next_lr, hyperparams, layout, …). */
  async info(): Promise<Record<string, unknown>> {
    return (await (await call(this.#conn, 'GET', `/v1/optimizers/${this.id}`, { token: this.token })).json()) as Record<string, unknown>;
  }

  /** Changes hyperparameters, param groups, the schedule or accumulate (`null` turns it off) (PATCH). */
  async update(patch: { hyperparams?: Record<string, unknown>; param_groups?: unknown; schedule?: unknown; accumulate?: Accumulate | null }): Promise<void> {
    const body = patch.accumulate === undefined || patch.accumulate === null ? patch : { ...patch, accumulate: accumulateSetting(patch.accumulate) };
    await call(this.#conn, 'PATCH', `/v1/optimizers/${this.id}`, { token: this.token, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  }

  async delete(): Promise<void> {
    await call(this.#conn, 'DELETE', `/v1/optimizers/${this.id}`, { token: this.token });
  }

  #typed(values: Floats): Floats {
    if ((this.dtype === 'float32') === values instanceof Float32Array) return values;
    if (this.dtype === 'float64') return Float64Array.from(values);
    throw new Error('a float32 optimizer takes Float32Array values (float64 would round)');
  }

  #floats(buffer: ArrayBuffer): Floats {
    return this.dtype === 'float32' ? new Float32Array(buffer) : new Float64Array(buffer);
  }

  /** A safetensors file of the gradients given, named as their tensors (the others are frozen); rows as grads.indices/… with grads.values/…. */
  #safetensors(grads: Record<string, Floats | SparseRows>): Uint8Array<ArrayBuffer> {
    if (this.layout.some((t) => t.name === '')) throw new Error('an optimizer of one unnamed tensor takes its gradient as a typed array');
    const dt = this.dtype === 'float32' ? 'F32' : 'F64';
    const header: Record<string, unknown> = {};
    const parts: Uint8Array[] = [];
    let offset = 0;
    for (const entry of this.layout) {
      const g = grads[entry.name];
      if (g === undefined) continue;
      if (!ArrayBuffer.isView(g)) {
        const rows = entry.shape[0];
        if (rows === undefined) throw new Error(`tensor "${entry.name}" is 0-d: it has no rows`);
        const k = g.indices.length;
        const rowSize = rows === 0 ? 0 : entry.size / rows;
        if (g.values.length !== k * rowSize) throw new Error(`gradient "${entry.name}": ${k} rows of ${rowSize} values need ${k * rowSize} values, got ${g.values.length}`);
        const ix = new Uint8Array(BigInt64Array.from(Array.from(g.indices, (i) => BigInt(i))).buffer);
        const vals = bytesOf(this.#typed(g.values));
        header[`grads.indices/${entry.name}`] = { dtype: 'I64', shape: [k], data_offsets: [offset, offset + ix.length] };
        header[`grads.values/${entry.name}`] = { dtype: dt, shape: [k, ...entry.shape.slice(1)], data_offsets: [offset + ix.length, offset + ix.length + vals.length] };
        parts.push(ix, vals);
        offset += ix.length + vals.length;
        continue;
      }
      if (g.length !== entry.size) throw new Error(`gradient "${entry.name}" must have ${entry.size} values, got ${g.length}`);
      const b = bytesOf(this.#typed(g));
      header[entry.name] = { dtype: dt, shape: entry.shape, data_offsets: [offset, offset + b.length] };
      parts.push(b);
      offset += b.length;
    }
    for (const name of Object.keys(grads)) if (!this.layout.some((t) => t.name === name)) throw new Error(`no tensor "${name}"`);
    const json = new TextEncoder().encode(JSON.stringify(header));
    const out = new Uint8Array(8 + json.length + offset);
    new DataView(out.buffer).setUint32(0, json.length, true);
    out.set(json, 8);
    let at = 8 + json.length;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

function accumulateSetting(a: Accumulate): { contributions: number; reduce: 'mean' | 'sum' } {
  return typeof a === 'number' ? { contributions: a, reduce: 'mean' } : { contributions: a.contributions, reduce: a.reduce ?? 'mean' };
}

function connection(options: { baseUrl?: string; apiKey?: string; attempts?: number; stepPartBytes?: number; fetch?: typeof fetch }): Connection {
  return {
    baseUrl: (options.baseUrl ?? 'http://localhost:8787').replace(/\/+$/, ''),
    apiKey: options.apiKey,
    attempts: options.attempts ?? 5,
    stepPartBytes: options.stepPartBytes ?? STEP_PART_BYTES,
    fetch: options.fetch ?? ((input, init) => fetch(input, init)),
  };
}

/** Creates a hosted optimizer (see HostedOptimizer.create). */
export const createHostedOptimizer = (options: HostedOptimizerOptions) => HostedOptimizer.create(options);
