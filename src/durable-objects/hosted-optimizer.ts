// One hosted optimizer per SQLite-backed Durable Object. Its params and Adam state live in the
// memory of the object's own WebAssembly kernel instance (loaded once per object lifetime), so a
// step copies the gradient in and steps in place; storage (./store.ts) journals each step.
// Methods return data (./protocol.ts); the Worker speaks HTTP. The math is src/optim's; this class
// adds access control, ordering, idempotency and preconditions.

import { DurableObject } from 'cloudflare:workers';
import { BEARER_CHALLENGE } from '../lib/auth.ts';
import { initialSchedulerState, learningRate, reportMetric, scheduleOverflow } from '../lib/learning-rate.ts';
import { HOSTED_ARRAYS, maxHostedElements, readDefaultTtl, readLimits } from '../lib/config.ts';
import { sameString } from '../lib/digest.ts';
import { ProblemError, fieldError, headerError, validationProblem } from '../lib/problem.ts';
import { alignTo, tensorProblem } from '../lib/tensor-input.ts';
import { zodFieldErrors } from '../lib/validation.ts';
import { MAX_STEP, adamStepInPlace, type AdamHyperparams, type Dtype, type FloatArray } from '../optim/adam.ts';
import type { PlateauState } from '../schedules/plateau.ts';
import type { ScheduleSpec } from '../schedules/types.ts';
import adamWasm from '../optim/wasm/adam.wasm';
import { createWasmAdam, type WasmAdam } from '../optim/wasm/kernel.ts';
import { CheckpointOptionsSchema } from '../schemas/optimizer.ts';
import { layoutOfNamed, leafIndex, namedLeaves, type NamedLeaf } from '../tensors/names.ts';
import { layoutSize, layoutWeight, leaves, pathOfIndex, type TensorLayout } from '../tensors/tree.ts';
import { WIRE_DTYPES, firstNonFiniteIn, wireDtypeOf, type WireDtype } from '../wire/dtypes.ts';
import { MAX_HEADER_BYTES, WireError, entryBytesBound, inLayoutOrder, utf8Length, type TensorEntry } from '../wire/safetensors.ts';
import { checkEntry, checkFinite, checkFits, readRaw, readSafetensors, type Placement } from './decode.ts';
import { Mutex } from './mutex.ts';
import { paceDeadline } from '../wire/stream.ts';
import { checkExpectedStep, checkIfMatch } from './preconditions.ts';
import { registryOf } from './stubs.ts';
import type {
  CreateArgs,
  HistoryEntry,
  OptimizerInfo,
  OptimizerSummary,
  Outcome,
  PatchArgs,
  RestoreArgs,
  RestoreFileArgs,
  SnapshotOut,
  SnapshotSlot,
  StepArgs,
  StepOut,
  TensorsIn,
  TensorsOut,
  UploadArgs,
  Versioned,
} from './protocol.ts';
import { overlaps, rangesLength, subtractRange, type Range } from './ranges.ts';
import { OptimizerStore, chunkElements, deadlineOf, slotKeys, type SlotArrays, type StoredMeta } from './store.ts';

/** Most disjoint ranges of params still to upload (each partial upload may split one range). */
export const MAX_MISSING_RANGES = 10_000;

/** Idempotency keys remembered per optimizer. */
export const IDEMPOTENCY_KEYS_KEPT = 256;
/** History entries (step, lr, loss) kept per optimizer. */
export const HISTORY_KEPT = 10_000;

/**
 * Bytes of kernel memory a hosted state of `size` elements takes: params, m, v, v_max and the
 * gradient buffer, whatever the hyperparameters (so switching amsgrad on never needs more).
 */
export const hostedMemoryBytes = (dtype: Dtype, size: number) => HOSTED_ARRAYS * size * (dtype === 'float32' ? 4 : 8);

/** The state version sent as ETag: changes with every mutation and is never reused. */
export const etagOf = (meta: { step: number; revision: number }) => `"s${meta.step}-r${meta.revision}"`;

/** Arrays of a state in the kernel's memory. */
interface Memory {
  /** The state; `arrays.vMax` is `vMaxSpace` with amsgrad, else null. */
  arrays: SlotArrays;
  /** Staging buffer for the incoming gradient (and uploads), `meta.size` elements. */
  grads: FloatArray;
  /** Room for v_max, allocated whether or not amsgrad is on, so switching it on never moves the state. */
  vMaxSpace: FloatArray;
}

/** The loaded optimizer: metadata, layout, and its state in wasm memory. */
interface Loaded extends Memory {
  meta: StoredMeta;
  layout: TensorLayout;
}

const finiteOrNull = (x: number) => (Number.isFinite(x) ? x : null);

const hex = (bytes: ArrayBuffer) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');

/** SHA-256 over the dtype, size, gradient bytes and loss: detects reuse of a key for another step. */
async function fingerprint(dtype: Dtype, grads: FloatArray, loss: number | undefined): Promise<string> {
  const head = new TextEncoder().encode(`${dtype}:${grads.length}:${loss ?? ''}:`);
  const body = new Uint8Array(grads.buffer, grads.byteOffset, grads.byteLength);
  const all = new Uint8Array(head.length + body.length);
  all.set(head);
  all.set(body, head.length);
  return hex(await crypto.subtle.digest('SHA-256', all));
}

/** Turns a thrown problem into an outcome (RPC would lose the class); anything else is a bug. */
async function outcome<T>(fn: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (e) {
    const p = tensorProblem(e);
    if (p instanceof ProblemError) return { ok: false, problem: p.toData() };
    throw e;
  }
}

const NOT_FOUND = () => new ProblemError(404, 'not-found', 'no optimizer with this id (never created, or deleted)');

export class HostedOptimizer extends DurableObject<Env> {
  readonly #store: OptimizerStore;
  readonly #mutex = new Mutex();
  #loaded: Loaded | null = null;
  /**
   * Whether the tensors have been read from storage since the object started. They are read on
   * the first call that passes the token check, not at start-up: an alarm, a listing or a caller
   * with a wrong token reads only the metadata row.
   */
  #read = false;
  #kernel: WasmAdam | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#store = new OptimizerStore(ctx.storage);
    ctx.blockConcurrencyWhile(async () => {
      let meta = this.#store.readMeta();
      if (!meta) return;
      if (meta.version === 1) {
        this.#readTensors(); // rewrites it in today's layout
        meta = this.#loaded!.meta;
      }
      // The alarm is set at or before the deadline whenever an optimizer exists. Calls push the
      // deadline later without moving it (an early alarm re-arms itself: see alarm()), so a step
      // costs no alarm write. Stored before optimizers expired: the default time-to-live from now.
      // Should a crash have come between storing an optimizer and setting its alarm: set it now.
      if ((meta as Partial<StoredMeta>).ttl === undefined) {
        meta = { ...meta, ttl: readDefaultTtl(this.env), touchedAt: Date.now() };
        this.#store.writeMeta(meta);
        if (this.#loaded) this.#loaded.meta = meta;
        await ctx.storage.setAlarm(deadlineOf(meta));
      } else if ((await ctx.storage.getAlarm()) === null) {
        await ctx.storage.setAlarm(deadlineOf(meta));
      }
    });
  }

  /** Loads the tensors once per object lifetime (synchronous, so no other call can interleave). */
  #readTensors(): void {
    if (this.#read) return;
    this.#load();
    this.#read = true;
  }

  /** The stored metadata (version 2), or null when no optimizer lives here. One row: no tensors. */
  #storedMeta(): StoredMeta | null {
    if (this.#read) return this.#loaded?.meta ?? null;
    const meta = this.#store.readMeta();
    return meta && meta.version === 2 ? meta : null;
  }

  /**
   * Zeroed arrays for a state of `size` elements in the kernel's memory: params, m, v, v_max and
   * the gradient buffer (5 arrays whatever the hyperparameters: see hostedMemoryBytes). A fresh
   * instance when the current memory is far larger than needed, so a smaller state frees it.
   * Earlier arrays of this object are invalid afterwards.
   */
  #allocate(dtype: Dtype, size: number, amsgrad: boolean): Memory {
    const needed = hostedMemoryBytes(dtype, size);
    if (this.#kernel && this.#kernel.memory.buffer.byteLength > 2 * needed + (16 << 20)) this.#kernel = null;
    this.#kernel ??= createWasmAdam(adamWasm);
    const ws = this.#kernel.workspace(dtype, size, true);
    const vMaxSpace = ws.vMax!;
    return { arrays: { params: ws.params, m: ws.m, v: ws.v, vMax: amsgrad ? vMaxSpace : null }, grads: ws.grads, vMaxSpace };
  }

  /** Index of the first NaN or ±Infinity (a SIMD scan for arrays in the kernel's memory), or -1. */
  readonly #scan = (values: FloatArray): number => (this.#kernel ? this.#kernel.firstNonFinite(values) : firstNonFiniteIn(values));

  /** Loads the optimizer from storage: on first use, and to discard an in-memory change that failed. */
  #load(): void {
    this.#loaded = null;
    const stored = this.#store.readMeta();
    if (!stored) return;
    if (stored.version === 1) {
      // Written before the journal: read it whole, write it back in today's layout.
      const { meta, arrays } = this.#store.readVersion1(stored, (dtype, size, amsgrad) => this.#allocate(dtype, size, amsgrad).arrays);
      this.#store.transaction(() => {
        this.#store.createTables();
        this.#store.writeCheckpoint(meta, arrays, null);
        this.#store.dropVersion1();
      });
      return this.#load();
    }
    const meta = stored;
    const layout = this.#store.readLayout();
    const memory = this.#allocate(meta.dtype, meta.size, meta.hyperparams.amsgrad);
    const seqs = this.#store.readCheckpoint(meta, memory.arrays);
    this.#replay(meta, memory.arrays, memory.grads, seqs);
    this.#loaded = { meta, layout, ...memory };
  }

  /** Brings every checkpoint chunk to `meta.seq` by replaying the journalled steps it missed. */
  #replay(meta: StoredMeta, arrays: SlotArrays, grads: FloatArray, seqs: number[]): void {
    const oldest = Math.min(...seqs);
    if (oldest === meta.seq) return;
    const per = chunkElements(meta.dtype);
    for (const entry of this.#store.journalAfter(oldest)) {
      this.#store.readJournalGrads(entry, grads);
      for (let idx = 0; idx < seqs.length; idx++) {
        if (seqs[idx]! >= entry.seq) continue;
        if (seqs[idx]! !== entry.seq - 1) throw new Error(`journal: chunk ${idx} at ${seqs[idx]} cannot take step ${entry.seq}`);
        const start = idx * per;
        const end = Math.min(meta.size, start + per);
        const view = (a: FloatArray) => a.subarray(start, end);
        adamStepInPlace(
          {
            dtype: meta.dtype,
            hyperparams: { ...entry.hyperparams, lr: entry.lr },
            params: view(arrays.params),
            grads: view(grads),
            state: { step: entry.step, m: view(arrays.m), v: view(arrays.v), vMax: arrays.vMax && view(arrays.vMax) },
          },
          this.#kernel,
        );
        seqs[idx] = entry.seq;
      }
    }
    if (seqs.some((s) => s !== meta.seq)) throw new Error(`journal: the stored chunks do not reach step ${meta.seq}`);
  }

  /**
   * The loaded optimizer, or a 404/401 problem. Cheap: the token is checked against the metadata
   * row before the tensors are read, and before anything of the request is read or allocated.
   */
  #authorized(tokenHash: string | null): Loaded {
    const meta = this.#storedMeta();
    if (!meta) throw NOT_FOUND();
    if (tokenHash === null) throw new ProblemError(401, 'unauthorized', 'missing `Authorization: Bearer <token>` header', undefined, undefined, BEARER_CHALLENGE);
    if (!sameString(tokenHash, meta.tokenHash)) throw new ProblemError(401, 'unauthorized', 'the bearer token does not open this optimizer', undefined, undefined, BEARER_CHALLENGE);
    this.#readTensors();
    const loaded = this.#loaded;
    if (!loaded) throw NOT_FOUND();
    return loaded;
  }

  /**
   * Checks the token, then runs `fn` holding the lock (re-checking: the optimizer may be gone by
   * then). A call that succeeds pushes the expiry to now plus the time-to-live; a rejected one
   * changes nothing, not even that.
   */
  #locked<T>(tokenHash: string | null, fn: (loaded: Loaded) => T | Promise<T>): Promise<Outcome<T>> {
    return outcome(async () => {
      this.#authorized(tokenHash);
      return this.#mutex.run(async () => {
        const loaded = this.#authorized(tokenHash);
        const stored = loaded.meta;
        // Operations build their new metadata from this, so those that write it store the new
        // deadline with it, and answers (GET metadata) show it.
        const touched = (loaded.meta = { ...stored, touchedAt: Date.now() });
        let value: T;
        try {
          value = await fn(loaded);
        } catch (e) {
          if (this.#loaded === loaded && loaded.meta === touched) loaded.meta = stored;
          throw e;
        }
        // Reads (and replays) wrote nothing: store the deadline alone.
        if (this.#loaded === loaded && loaded.meta === touched) this.#store.writeMeta(touched);
        return value;
      });
    });
  }

  #info(meta: StoredMeta, layout: TensorLayout): OptimizerInfo {
    return {
      id: meta.id,
      step: meta.step,
      hyperparams: meta.hyperparams,
      schedule: meta.schedule,
      next_lr: finiteOrNull(learningRate(meta.hyperparams.lr, meta.schedule, meta.step, meta.plateau)),
      dtype: meta.dtype,
      layout,
      size: meta.size,
      missing: meta.missing,
      created_at: meta.createdAt,
      updated_at: meta.updatedAt,
      ttl: meta.ttl,
      expires_at: new Date(deadlineOf(meta)).toISOString(),
    };
  }

  #versionedInfo(loaded: Loaded): Versioned<OptimizerInfo> {
    return { etag: etagOf(loaded.meta), value: this.#info(loaded.meta, loaded.layout) };
  }

  /** A copy of the params (RPC serializes a view's whole buffer, here the kernel's memory). */
  #paramsOut(loaded: Loaded): TensorsOut {
    return { dtype: loaded.meta.dtype, layout: loaded.layout, values: loaded.arrays.params.slice() };
  }

  /**
   * Decodes a complete tree (every tensor of the layout, as gradients are) into `target`, which
   * holds `meta.size` elements of the optimizer's dtype; 4xx problems name what is wrong.
   */
  async #decodeAll(input: TensorsIn, loaded: Loaded, target: FloatArray, name: string): Promise<Narrow | null> {
    const { meta, layout } = loaded;
    const own = wireDtypeOf(meta.dtype);
    const narrowBuffer = (dtype: WireDtype) => (dtype === own ? undefined : new Uint8Array(meta.size * WIRE_DTYPES[dtype].bytes));
    if (input.format === 'json') {
      target.set(alignTo(input.flat, layout, [name], meta.dtype));
      return null;
    }
    if (input.format === 'raw') {
      const src = input.dtype ?? own;
      checkFits(src, meta.dtype, ['Content-Type']);
      const keep = narrowBuffer(src);
      await readRaw(input.body, input.length, src, { out: target, offset: 0, count: meta.size, path: [name], keep, scan: this.#scan });
      return keep ? { dtype: src, bytes: keep } : null;
    }
    const index = namesOf(layout);
    let narrow: Narrow | null = null;
    await readSafetensors(input.body, input.length, (header) => {
      // One narrower type for every tensor: keep those bytes for the journal.
      const types = new Set(header.entries.map((e) => e.dtype));
      const [only] = types;
      const keep = types.size === 1 && only !== undefined ? narrowBuffer(only) : undefined;
      if (keep) narrow = { dtype: only!, bytes: keep };
      const places = header.entries.map((e) => ({ ...placeByName(e, index, meta.dtype, target, name), keep, scan: this.#scan }));
      const sent = new Set(header.entries.map((e) => e.name));
      const absent = [...index.keys()].find((n) => !sent.has(n));
      if (absent !== undefined) throw new WireError(422, [name, absent], `tensor "${absent}" is missing: the ${name} need every tensor of the optimizer`);
      return places;
    });
    return narrow;
  }

  /** Verifies the bearer token only (the Worker asks before it parses a large body). */
  authorize(tokenHash: string | null): Promise<Outcome<null>> {
    return outcome(async () => {
      this.#authorized(tokenHash);
      return null;
    });
  }

  create(args: CreateArgs): Promise<Outcome<Versioned<OptimizerInfo>>> {
    return outcome(() =>
      this.#mutex.run(async () => {
        if (this.#storedMeta()) throw new ProblemError(409, 'conflict', 'this optimizer already exists');
        this.#read = true;
        const { dtype, hyperparams, layout } = args;
        checkCheckpointHeader(layout, ['params']);
        const size = layoutSize(layout);
        const memory = this.#allocate(dtype, size, hyperparams.amsgrad);
        if (args.params) memory.arrays.params.set(args.params);
        const at = Date.now();
        const now = new Date(at).toISOString();
        const meta: StoredMeta = {
          version: 2,
          id: this.ctx.id.toString(),
          tokenHash: args.tokenHash,
          createdAt: now,
          updatedAt: now,
          step: 0,
          seq: 0,
          revision: 0,
          dtype,
          size,
          hyperparams,
          schedule: args.schedule,
          plateau: initialSchedulerState(args.schedule),
          cursor: 0,
          missing: args.params || size === 0 ? [] : [[0, size]],
          ttl: args.ttl,
          touchedAt: at,
          owner: args.owner,
        };
        this.#store.transaction(() => {
          this.#store.createTables();
          this.#store.writeCheckpoint(meta, memory.arrays, layout);
        });
        this.#loaded = { meta, layout, ...memory };
        await this.ctx.storage.setAlarm(deadlineOf(meta));
        return this.#versionedInfo(this.#loaded);
      }),
    );
  }

  describe(tokenHash: string | null): Promise<Outcome<Versioned<OptimizerInfo>>> {
    return this.#locked(tokenHash, (loaded) => this.#versionedInfo(loaded));
  }

  params(tokenHash: string | null): Promise<Outcome<Versioned<{ step: number; params: TensorsOut }>>> {
    return this.#locked(tokenHash, (loaded) => ({ etag: etagOf(loaded.meta), value: { step: loaded.meta.step, params: this.#paramsOut(loaded) } }));
  }

  step(tokenHash: string | null, args: StepArgs): Promise<Outcome<Versioned<StepOut>>> {
    return this.#locked(tokenHash, async (loaded) => {
      const { meta, layout, arrays, grads } = loaded;
      if (args.returnParams && args.namedParams && leafIndex(layout) === null) {
        throw new WireError(406, ['Accept'], 'two tensors of this optimizer have the same dotted name (e.g. "a.b" and {"a": {"b"}}): safetensors cannot name them apart; ask for JSON');
      }
      const timings = { decode: 0, kernel: 0, storage: 0 };
      let clock = performance.now();
      const lap = (phase: keyof typeof timings) => {
        const now = performance.now();
        timings[phase] += now - clock;
        clock = now;
      };
      const narrow = await this.#decodeAll(args.grads, loaded, grads, 'grads');
      const print = args.idempotencyKey === undefined ? '' : await fingerprint(meta.dtype, grads, args.loss);

      if (args.idempotencyKey !== undefined) {
        const seen = this.#store.idempotency(args.idempotencyKey);
        if (seen) {
          if (seen.fingerprint !== print) {
            throw validationProblem([headerError('Idempotency-Key', 'was already used for a step with different gradients or loss', args.idempotencyKey)]);
          }
          // The params this step produced: still current unless a later step or an upload replaced them.
          const current = seen.seq === meta.seq && (meta.uploadedAtSeq ?? -1) < seen.seq;
          const params = args.returnParams && current ? this.#paramsOut(loaded) : null;
          lap('decode');
          return { etag: etagOf(meta), value: { step: seen.step, lr: seen.lr, replayed: true, params, timings } };
        }
      }
      checkIfMatch(args.ifMatch, etagOf(meta), meta.step);
      checkExpectedStep(args.expectedStep, meta.step);
      if (meta.missing.length > 0) throw incompleteUpload(meta, layout);

      const lr = learningRate(meta.hyperparams.lr, meta.schedule, meta.step, meta.plateau);
      if (!Number.isFinite(lr)) throw scheduleOverflow(meta.step, lr);
      const state = { step: meta.step, m: arrays.m, v: arrays.v, vMax: arrays.vMax };
      lap('decode');
      // In place: storage is the undo log. A non-finite result reloads the stored state.
      adamStepInPlace({ dtype: meta.dtype, hyperparams: { ...meta.hyperparams, lr }, params: arrays.params, grads, state }, this.#kernel);
      const bad = [arrays.params, arrays.m, arrays.v].map((a) => this.#scan(a)).find((i) => i >= 0);
      if (bad !== undefined) {
        this.#load();
        throw new ProblemError(422, 'non-finite-result', 'the step would produce a non-finite value (overflow); nothing was changed', [
          fieldError(['grads', ...pathOfIndex(layout, bad)], 'leads to a non-finite parameter or moment'),
        ]);
      }

      lap('kernel');
      const at = new Date().toISOString();
      const next: StoredMeta = {
        ...meta,
        step: state.step,
        seq: meta.seq + 1,
        revision: meta.revision + 1,
        updatedAt: at,
        plateau: args.loss === undefined ? meta.plateau : reportMetric(meta.schedule, meta.plateau, args.loss),
      };
      try {
        this.#store.transaction(() => {
          const journalled = narrow ?? { dtype: undefined, bytes: new Uint8Array(grads.buffer, grads.byteOffset, grads.byteLength) };
          next.cursor = this.#store.appendStep(next, arrays, journalled.bytes, { seq: next.seq, dtype: journalled.dtype, step: meta.step, lr, hyperparams: meta.hyperparams });
          this.#store.writeMeta(next);
          this.#store.addHistory(next.seq, { step: next.step, lr, loss: args.loss ?? null, at }, HISTORY_KEPT);
          if (args.idempotencyKey !== undefined) {
            this.#store.rememberKey(args.idempotencyKey, { seq: next.seq, fingerprint: print, step: next.step, lr }, IDEMPOTENCY_KEYS_KEPT);
          }
        });
      } catch (e) {
        this.#load(); // the write failed and rolled back: drop the in-memory update too
        throw e;
      }
      loaded.meta = next;
      lap('storage');
      return { etag: etagOf(next), value: { step: next.step, lr, replayed: false, params: args.returnParams ? this.#paramsOut(loaded) : null, timings } };
    });
  }

  /**
   * Metadata and a stream of every state tensor. The lock is held until the stream is read to its
   * end, cancelled, or falls behind TRANSFER_PACE, so the bytes are one state.
   */
  snapshot(tokenHash: string | null): Promise<Outcome<SnapshotOut>> {
    return outcome(async () => {
      this.#authorized(tokenHash);
      const release = await this.#mutex.acquire();
      try {
        const loaded = this.#authorized(tokenHash);
        loaded.meta = { ...loaded.meta, touchedAt: Date.now() };
        this.#store.writeMeta(loaded.meta);
        const { meta, layout, arrays } = loaded;
        const slots: SnapshotSlot[] = arrays.vMax ? ['params', 'm', 'v', 'v_max'] : ['params', 'm', 'v'];
        return { etag: etagOf(meta), info: this.#info(meta, layout), schedulerState: meta.plateau, layout, slots, data: lockedByteStream(slotKeys(arrays).map((k) => arrays[k]!), release) };
      } catch (e) {
        release();
        throw e;
      }
    });
  }

  restore(tokenHash: string | null, args: RestoreArgs | RestoreFileArgs): Promise<Outcome<Versioned<OptimizerInfo>>> {
    return this.#locked(tokenHash, async (loaded) => {
      checkIfMatch(args.ifMatch, etagOf(loaded.meta), loaded.meta.step);
      let planned: Planned;
      try {
        planned = 'format' in args ? await this.#readCheckpoint(loaded, args) : this.#placeSnapshot(args);
      } catch (e) {
        this.#load(); // the new state was being written into the kernel's memory: take the stored one back
        throw e;
      }
      const { memory, layout } = planned;
      const owner = loaded.meta.owner;
      const size = layoutSize(layout);
      if (owner && size !== loaded.meta.size) {
        // A larger state must fit the owner's element quota: asked before anything is stored.
        const booked = (await registryOf(this.env, owner).reserve(owner, loaded.meta.id, size, args.quota, 'params')) as unknown as Outcome<unknown>;
        if (!booked.ok) {
          this.#load();
          throw ProblemError.fromData(booked.problem);
        }
      }
      const next: StoredMeta = {
        ...loaded.meta,
        step: planned.step,
        revision: loaded.meta.revision + 1,
        dtype: planned.dtype,
        size,
        hyperparams: planned.hyperparams,
        schedule: planned.schedule,
        plateau: planned.schedulerState ?? initialSchedulerState(planned.schedule),
        updatedAt: new Date().toISOString(),
        cursor: 0,
        missing: [],
      };
      try {
        this.#store.transaction(() => {
          this.#store.writeCheckpoint(next, memory.arrays, layout);
          // Remembered keys answer for steps of the replaced state: forget them.
          this.#store.forgetKeys();
        });
      } catch (e) {
        this.#load();
        throw e;
      }
      this.#loaded = { meta: next, layout, ...memory };
      return this.#versionedInfo(this.#loaded);
    });
  }

  /** A JSON snapshot (validated and flattened by the Worker) copied into fresh memory. */
  #placeSnapshot(args: RestoreArgs): Planned {
    const { dtype, hyperparams, layout, schedule } = args;
    checkSchedulerState(args.schedulerState, schedule);
    checkCheckpointHeader(layout, ['params']);
    const memory = this.#allocate(dtype, args.params.length, hyperparams.amsgrad);
    const { arrays } = memory;
    arrays.params.set(args.params);
    arrays.m.set(args.m);
    arrays.v.set(args.v);
    if (arrays.vMax && args.vMax) arrays.vMax.set(args.vMax);
    return { step: args.step, dtype, hyperparams, schedule, schedulerState: args.schedulerState ?? null, layout, memory };
  }

  /**
   * A safetensors checkpoint streamed straight into fresh memory: `params/<name>`, torch's
   * `exp_avg/…`, `exp_avg_sq/…`, `max_exp_avg_sq/…` and `step/…` tensors, options in `__metadata__`.
   * The caller reloads the stored state if this throws.
   */
  async #readCheckpoint(loaded: Loaded, args: RestoreFileArgs): Promise<Planned> {
    const limits = readLimits(this.env);
    let plan: (Omit<Planned, 'step'> & { step: number | undefined; steps: Float64Array | null; leaves: NamedLeaf[]; sentVMax: boolean }) | null = null;
    await readSafetensors(args.body, args.length, (header) => {
      const options = checkpointOptions(header.metadata);
      checkSchedulerState(options.scheduler_state, options.schedule);
      const bySlot = new Map<string, Map<string, TensorEntry>>(CHECKPOINT_SLOTS.map((slot) => [slot, new Map()]));
      const slotOf = header.entries.map((e) => {
        const cut = e.name.indexOf('/');
        const slot = cut < 0 ? e.name : e.name.slice(0, cut);
        if (!bySlot.has(slot)) throw new WireError(422, ['safetensors', e.name], `tensor "${e.name}" is not named <slot>/<name> with a slot among ${CHECKPOINT_SLOTS.join(', ')}`, e.name);
        bySlot.get(slot)!.set(cut < 0 ? '' : e.name.slice(cut + 1), e);
        return { slot, leaf: cut < 0 ? '' : e.name.slice(cut + 1) };
      });
      const params = inLayoutOrder([...bySlot.get('params')!].map(([name, e]) => ({ name, shape: e.shape, dtype: e.dtype })), options.layout);
      if (params.length === 0) throw new WireError(422, ['safetensors', 'params'], 'no params/<name> tensors: a checkpoint holds the parameters');
      const dtype = options.dtype ?? (params.some((t) => t.dtype === 'F64') ? 'float64' : 'float32');
      // The same names and shapes keep the current layout (and its nesting); otherwise the file's.
      const current = leafIndex(loaded.layout);
      const same = current !== null && current.size === params.length && params.every((t) => sameShape(current.get(t.name)?.shape, t.shape));
      const layout = same ? loaded.layout : layoutOfNamed(params, ['safetensors', 'params']);
      const index = leafIndex(layout)!;
      checkCheckpointHeader(layout, ['safetensors', 'params']);
      const size = layoutSize(layout);
      const most = maxHostedElements(limits, dtype);
      if (layoutWeight(layout) > most) throw tooLarge(layoutWeight(layout), dtype, most);
      const memory = this.#allocate(dtype, size, options.hyperparams.amsgrad);
      const leaves = [...index.values()];
      const ordinal = new Map(leaves.map((l, i) => [l.name, i]));
      const stepsSent = bySlot.get('step')!.size > 0;
      const steps = stepsSent ? new Float64Array(leaves.length) : null;
      const targets: Record<string, FloatArray> = { params: memory.arrays.params, exp_avg: memory.arrays.m, exp_avg_sq: memory.arrays.v, max_exp_avg_sq: memory.vMaxSpace };
      for (const slot of CHECKPOINT_SLOTS) {
        const found = bySlot.get(slot)!;
        const optional = slot === 'max_exp_avg_sq' || slot === 'step';
        if (optional && found.size === 0) continue;
        for (const leaf of leaves) {
          if (!found.has(leaf.name)) throw new WireError(422, ['safetensors', slotName(slot, leaf.name)], `tensor "${slotName(slot, leaf.name)}" is missing (each parameter needs its ${slot})`);
        }
        for (const name of found.keys()) if (!index.has(name)) throw new WireError(422, ['safetensors', slotName(slot, name)], `"${slotName(slot, name)}" has no params/${name} to match`);
      }
      plan = { dtype, hyperparams: options.hyperparams, schedule: options.schedule, schedulerState: options.scheduler_state ?? null, layout, memory, step: options.step, steps, leaves, sentVMax: bySlot.get('max_exp_avg_sq')!.size > 0 };
      return header.entries.map((e, i) => {
        const { slot, leaf: name } = slotOf[i]!;
        const leaf = index.get(name)!;
        const path = ['safetensors', e.name];
        if (slot === 'step') {
          if (e.shape.length > 1 || (e.shape.length === 1 && e.shape[0] !== 1)) throw new WireError(422, [...path, 'shape'], `a step count is a scalar (shape [] as torch stores it), got [${e.shape.join(', ')}]`);
          return { out: steps!, offset: ordinal.get(name)!, count: 1, path };
        }
        checkEntry(e, leaf, dtype, path);
        return { out: targets[slot]!, offset: leaf.offset, count: leaf.size, path };
      });
    });
    const p = plan!;
    // One step count: the metadata's, the step tensors' (all equal, as adam-api keeps one), or both agreeing.
    let step = p.step;
    if (p.steps) {
      const first = p.steps[0]!;
      const odd = p.steps.findIndex((x) => x !== first);
      if (odd >= 0) throw new WireError(422, ['safetensors', slotName('step', p.leaves[odd]!.name)], `step counts differ between tensors (${first} and ${p.steps[odd]}): adam-api keeps one step count per optimizer`);
      if (!Number.isInteger(first) || first < 0 || first > MAX_STEP) throw new WireError(422, ['safetensors', slotName('step', p.leaves[0]!.name)], `a step count must be an integer in [0, 2^24], got ${first}`);
      if (step !== undefined && step !== first) throw new WireError(422, ['__metadata__', 'step'], `the metadata says step ${step} but the step tensors say ${first}`);
      step = first;
    }
    if (step === undefined) throw new WireError(422, ['__metadata__', 'step'], 'the step count is required: __metadata__.step, or step/<name> tensors as torch saves them');
    const { arrays } = p.memory;
    if (p.hyperparams.amsgrad && !p.sentVMax && step > 0) throw new WireError(422, ['safetensors', 'max_exp_avg_sq'], 'max_exp_avg_sq tensors are required when amsgrad is true and step > 0');
    for (const [slot, a] of [['exp_avg_sq', arrays.v], ['max_exp_avg_sq', arrays.vMax]] as const) {
      const i = a ? firstNegative(a) : -1;
      if (i >= 0) {
        const leaf = p.leaves.find((l) => i < l.offset + l.size)!;
        throw new WireError(422, ['safetensors', slotName(slot, leaf.name), i - leaf.offset], `must be >= 0 (a second moment is never negative), got ${a![i]}`);
      }
    }
    return { ...p, step };
  }

  /**
   * New values for some params (the moments keep theirs, as when torch copies into `p.data`):
   * whole tensors by name (JSON, safetensors), or a raw run of elements from an offset. Uploads
   * complete an optimizer created by shapes.
   */
  upload(tokenHash: string | null, args: UploadArgs): Promise<Outcome<Versioned<OptimizerInfo>>> {
    return this.#locked(tokenHash, async (loaded) => {
      checkIfMatch(args.ifMatch, etagOf(loaded.meta), loaded.meta.step);
      const { meta, layout, arrays, grads: staging } = loaded;
      const ranges: Range[] = [];
      const input = args.body;
      if (input.format === 'raw') {
        let start = 0;
        let room = meta.size;
        const path: Array<string | number> = ['params'];
        if (args.tensor !== undefined) {
          const leaf = namesOf(layout).get(args.tensor);
          if (!leaf) throw validationProblem([fieldError(['tensor'], `no tensor named "${args.tensor}" in this optimizer`, args.tensor)]);
          start = leaf.offset;
          room = leaf.size;
          path.push(args.tensor);
        }
        const offset = args.offset ?? 0;
        if (offset > room) throw validationProblem([fieldError(['offset'], `is beyond the ${room} elements of ${args.tensor === undefined ? 'the params' : `"${args.tensor}"`}`, offset)]);
        const src = input.dtype ?? wireDtypeOf(meta.dtype);
        checkFits(src, meta.dtype, ['Content-Type']);
        const count = await readRaw(input.body, input.length, src, { out: staging, offset: start + offset, count: room - offset, path, scan: this.#scan }, true);
        if (count === 0) throw validationProblem([fieldError(['body'], 'is empty: send the elements to write')]);
        ranges.push([start + offset, start + offset + count]);
      } else if (input.format === 'safetensors') {
        const index = namesOf(layout);
        await readSafetensors(input.body, input.length, (header) =>
          header.entries.map((e) => {
            const place = { ...placeByName(e, index, meta.dtype, staging, 'params'), scan: this.#scan };
            ranges.push([place.offset, place.offset + place.count]);
            return place;
          }),
        );
      } else {
        // JSON names a tensor by its place in the tree; a dotted name ("fc.weight" for {"fc": {"weight"}})
        // works too where it is unambiguous, so an optimizer whose names collide once dotted is still addressable.
        const byPath = new Map(leaves(layout).map((l) => [JSON.stringify(l.path), l]));
        const byName = leafIndex(layout);
        const values = input.flat.values;
        for (const sent of leaves(input.flat.layout)) {
          const name = sent.path.join('.');
          const leaf = byPath.get(JSON.stringify(sent.path)) ?? byName?.get(name);
          const path = ['params', ...sent.path];
          if (!leaf) throw validationProblem([fieldError(path, `no tensor named "${name}" in this optimizer`)]);
          if (!sameShape(leaf.shape, sent.shape)) throw validationProblem([fieldError(path, `expected shape [${leaf.shape.join(', ')}], got [${sent.shape.join(', ')}]`)]);
          staging.set(values.subarray(sent.offset, sent.offset + sent.size), leaf.offset);
          checkFinite({ out: staging, offset: leaf.offset, count: leaf.size, path, scan: this.#scan });
          ranges.push([leaf.offset, leaf.offset + leaf.size]);
        }
      }
      if (ranges.length === 0) throw validationProblem([fieldError(['params'], 'names no tensor: send at least one')]);
      let missing = meta.missing;
      for (const [a, b] of ranges) {
        arrays.params.set(staging.subarray(a, b), a);
        missing = subtractRange(missing, a, b);
      }
      if (missing.length > MAX_MISSING_RANGES) {
        this.#load();
        throw validationProblem([fieldError(['offset'], `the params still to upload would fall into more than ${MAX_MISSING_RANGES} pieces: upload in larger, contiguous parts`)]);
      }
      const next: StoredMeta = { ...meta, missing, revision: meta.revision + 1, uploadedAtSeq: meta.seq, updatedAt: new Date().toISOString() };
      try {
        this.#store.transaction(() => this.#store.writeRanges(next, arrays, ranges));
      } catch (e) {
        this.#load();
        throw e;
      }
      loaded.meta = next;
      return this.#versionedInfo(loaded);
    });
  }

  update(tokenHash: string | null, args: PatchArgs): Promise<Outcome<Versioned<OptimizerInfo>>> {
    return this.#locked(tokenHash, async (loaded) => {
      checkIfMatch(args.ifMatch, etagOf(loaded.meta), loaded.meta.step);
      const { meta } = loaded;
      const hyperparams = { ...meta.hyperparams, ...args.hyperparams };
      const schedule = args.schedule === undefined ? meta.schedule : args.schedule;
      const scheduleChanged = JSON.stringify(schedule) !== JSON.stringify(meta.schedule);
      const next: StoredMeta = {
        ...meta,
        hyperparams,
        schedule,
        plateau: scheduleChanged ? initialSchedulerState(schedule) : meta.plateau,
        revision: meta.revision + 1,
        updatedAt: new Date().toISOString(),
        ttl: args.ttl ?? meta.ttl,
      };
      if (hyperparams.amsgrad === meta.hyperparams.amsgrad) {
        // Journalled steps carry their own hyperparameters, so only the metadata changes.
        this.#store.transaction(() => this.#store.writeMeta(next));
      } else {
        // amsgrad adds or drops the v_max slot: a full checkpoint. Switching it on starts the running
        // max from zero (max(0, v) = v at the next step).
        const arrays = { ...loaded.arrays, vMax: hyperparams.amsgrad ? loaded.vMaxSpace.fill(0) : null };
        try {
          this.#store.transaction(() => this.#store.writeCheckpoint(next, arrays, null));
        } catch (e) {
          this.#load();
          throw e;
        }
        loaded.arrays = arrays;
      }
      loaded.meta = next;
      // A shorter time-to-live may bring the deadline before the alarm: move it.
      if (args.ttl !== undefined) await this.ctx.storage.setAlarm(deadlineOf(next));
      return this.#versionedInfo(loaded);
    });
  }

  /**
   * Replaces the token (its hash): the current one stops working at once. Not a state change, so
   * the ETag stays.
   */
  rotateToken(tokenHash: string | null, newTokenHash: string): Promise<Outcome<null>> {
    return this.#locked(tokenHash, (loaded) => {
      const next: StoredMeta = { ...loaded.meta, tokenHash: newTokenHash };
      this.#store.writeMeta(next);
      loaded.meta = next;
      return null;
    });
  }

  history(tokenHash: string | null, limit: number): Promise<Outcome<{ entries: HistoryEntry[]; kept: number }>> {
    return this.#locked(tokenHash, () => ({ entries: this.#store.history(limit), kept: HISTORY_KEPT }));
  }

  remove(tokenHash: string | null, ifMatch?: string): Promise<Outcome<null>> {
    return this.#locked(tokenHash, async (loaded) => {
      checkIfMatch(ifMatch, etagOf(loaded.meta), loaded.meta.step);
      await this.#destroy();
      return null;
    });
  }

  /**
   * Deletes everything stored for the optimizer (later calls get 404), then tells its owner's
   * registry. Should that notice fail, the registry finds out itself (see ./key-registry.ts).
   * Call holding the lock.
   */
  async #destroy(): Promise<void> {
    const owner = this.#storedMeta()?.owner;
    this.#loaded = null;
    this.#read = true; // nothing left to read
    this.#kernel = null; // frees the kernel's memory
    await this.#store.deleteAll(); // wipes every table (and the alarm) atomically
    if (owner) {
      try {
        await registryOf(this.env, owner).release(this.ctx.id.toString());
      } catch (e) {
        console.error('optimizer deleted, but its registry could not be told', e);
      }
    }
  }

  /**
   * For the owner's registry (never a client: the Worker has no route to it): what a listing
   * shows, from the metadata row alone; null when no optimizer of `owner` lives here. Not a call
   * of the optimizer, so its expiry stays.
   */
  async summary(owner: string): Promise<OptimizerSummary | null> {
    const meta = this.#storedMeta();
    if (!meta || meta.owner !== owner) return null;
    return {
      id: meta.id,
      step: meta.step,
      size: meta.size,
      dtype: meta.dtype,
      created_at: meta.createdAt,
      updated_at: meta.updatedAt,
      expires_at: new Date(deadlineOf(meta)).toISOString(),
    };
  }

  /**
   * The expiry alarm. Alarms may fire late, early (a call pushed the deadline since it was set) or
   * more than once, so it re-checks: before the deadline it re-arms for it; after, the optimizer
   * is deleted; with no optimizer left it does nothing.
   */
  override async alarm(): Promise<void> {
    await this.#mutex.run(async () => {
      const meta = this.#storedMeta();
      if (!meta) return;
      const deadline = deadlineOf(meta);
      if (Date.now() < deadline) {
        await this.ctx.storage.setAlarm(deadline);
        return;
      }
      await this.#destroy();
    });
  }
}

/** Bytes per piece of a snapshot stream. */
const PIECE_BYTES = 1 << 20;

/**
 * A stream of the bytes of `arrays`, one after another, copied piece by piece as it is read;
 * `release` runs once when it ends, is cancelled, or falls behind TRANSFER_PACE (the stream then
 * errors): a steady reader at that rate or faster gets every byte, whatever the size, and a reader
 * that stops frees the lock within TRANSFER_PACE.graceMs plus the time its bytes had earned.
 */
function lockedByteStream(arrays: FloatArray[], release: () => void): ReadableStream<Uint8Array> {
  let k = 0;
  let offset = 0;
  let sent = 0;
  const startedAt = Date.now();
  let controllerRef: ReadableStreamDefaultController<Uint8Array> | null = null;
  let timer: ReturnType<typeof setTimeout> | null = null;
  /** (Re)arms the cut for the bytes handed out so far. */
  const arm = () => {
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(() => {
      release();
      controllerRef?.error(new Error('snapshot not read in time'));
    }, Math.max(0, paceDeadline(startedAt, sent) - Date.now()));
  };
  arm();
  const finish = () => {
    if (timer !== null) clearTimeout(timer);
    release();
  };
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controllerRef = controller;
    },
    pull(controller) {
      while (k < arrays.length) {
        const a = arrays[k]!;
        const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
        if (offset < bytes.length) {
          const end = Math.min(bytes.length, offset + PIECE_BYTES);
          controller.enqueue(bytes.slice(offset, end));
          sent += end - offset;
          offset = end;
          arm();
          return;
        }
        k++;
        offset = 0;
      }
      finish();
      controller.close();
    },
    cancel() {
      finish();
    },
  });
}

/** A gradient as it arrived, narrower than the optimizer's dtype (journalled so: half the bytes). */
interface Narrow {
  dtype: WireDtype;
  bytes: Uint8Array;
}

/** What a restore writes, decoded and checked, before it is stored. */
interface Planned {
  step: number;
  dtype: Dtype;
  hyperparams: AdamHyperparams;
  schedule: ScheduleSpec | null;
  schedulerState: PlateauState | null;
  layout: TensorLayout;
  memory: Memory;
}

/** Tensor name prefixes of a checkpoint: params and torch's Adam state names. */
export const CHECKPOINT_SLOTS = ['params', 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq', 'step'] as const;

/** `<slot>/<name>` (or just `<slot>` for a single unnamed tensor). */
const slotName = (slot: string, name: string) => (name === '' ? slot : `${slot}/${name}`);

const sameShape = (a: readonly number[] | undefined, b: readonly number[]) => a !== undefined && a.length === b.length && a.every((d, i) => d === b[i]);

function firstNegative(a: FloatArray): number {
  for (let i = 0; i < a.length; i++) if (a[i]! < 0) return i;
  return -1;
}

/** Room in a checkpoint's header for the `__metadata__` besides the layout (hyperparams, schedule, ids, times). */
const CHECKPOINT_METADATA_BYTES = 256 * 1024;

/**
 * 422 unless the safetensors checkpoint of `layout` has a header within MAX_HEADER_BYTES, so
 * GET state → PUT state round-trips at every size: each tensor is named once per slot
 * (`params/…`, `exp_avg/…`, `exp_avg_sq/…`, `max_exp_avg_sq/…`, `step/…`) and once more in
 * `__metadata__.layout` (JSON text in a JSON string: escaped twice). Runs before anything changes.
 */
function checkCheckpointHeader(layout: TensorLayout, path: Array<string | number>): void {
  // Data offsets count bytes of the data section: every slot in float64 bounds them.
  const offsetDigits = String(CHECKPOINT_SLOTS.length * 8 * layoutSize(layout)).length;
  let bytes = CHECKPOINT_METADATA_BYTES;
  for (const leaf of namedLeaves(layout)) {
    const quoted = JSON.stringify(leaf.name);
    const nameBytes = utf8Length(quoted);
    for (const slot of CHECKPOINT_SLOTS) bytes += entryBytesBound(slot.length + 1 + nameBytes, slot === 'step' ? [] : leaf.shape, offsetDigits);
    bytes += utf8Length(JSON.stringify(quoted)) - 1; // in __metadata__.layout: JSON text inside a JSON string, a comma between
  }
  if (bytes > MAX_HEADER_BYTES) {
    throw validationProblem([
      fieldError(path, `the tensor names and shapes are too long for a checkpoint: its safetensors header would take up to ${bytes} bytes, more than ${MAX_HEADER_BYTES} (16 MiB); use shorter names or fewer tensors`),
    ]);
  }
}

/** The layout's tensors by flat name, or a 422 when two flatten to the same name. */
function namesOf(layout: TensorLayout): Map<string, NamedLeaf> {
  const index = leafIndex(layout);
  if (!index) throw new WireError(422, ['params'], 'two tensors of this optimizer have the same dotted name (e.g. "a.b" and {"a": {"b"}}): address them with JSON');
  return index;
}

/** Where a file's tensor goes in `target`, by its name among the layout's tensors. */
function placeByName(e: TensorEntry, index: Map<string, NamedLeaf>, dtype: Dtype, target: FloatArray, root: string): Placement {
  const leaf = index.get(e.name);
  const path = [root, e.name];
  if (!leaf) throw new WireError(422, path, `no tensor named "${e.name}" in this optimizer`, e.name);
  checkEntry(e, leaf, dtype, path);
  return { out: target, offset: leaf.offset, count: leaf.size, path };
}

function checkSchedulerState(state: PlateauState | null | undefined, schedule: ScheduleSpec | null): void {
  if (state && schedule?.type !== 'reduce_on_plateau') {
    throw validationProblem([fieldError(['scheduler_state'], 'must be null or omitted unless the schedule is reduce_on_plateau')]);
  }
}

/** A checkpoint's `__metadata__` parsed (JSON values) and checked like a JSON snapshot's fields. */
function checkpointOptions(metadata: Record<string, string> | null) {
  const m = metadata ?? {};
  const json = (key: string): unknown => {
    if (!Object.hasOwn(m, key)) return undefined;
    try {
      return JSON.parse(m[key]!);
    } catch {
      throw validationProblem([fieldError(['__metadata__', key], 'must be JSON text', m[key]!.slice(0, 200))]);
    }
  };
  if (m.step !== undefined && !/^\d+$/.test(m.step)) throw validationProblem([fieldError(['__metadata__', 'step'], 'must be a decimal integer', m.step)]);
  const parsed = CheckpointOptionsSchema.safeParse({
    step: m.step === undefined ? undefined : Number(m.step),
    dtype: m.dtype,
    hyperparams: json('hyperparams'),
    schedule: json('schedule'),
    scheduler_state: json('scheduler_state'),
    layout: json('layout'),
  });
  if (!parsed.success) {
    throw validationProblem(zodFieldErrors(parsed.error, undefined).map((e) => ({ ...e, field: `__metadata__.${e.field}`, pointer: undefined })));
  }
  return parsed.data;
}

/** 413 for a state larger than one optimizer holds. */
export function tooLarge(size: number, dtype: Dtype, most: number): ProblemError {
  return new ProblemError(413, 'payload-too-large', `${size} ${dtype} elements are more than one optimizer holds (${most}: params, m, v, v_max and the gradient buffer in MAX_HOSTED_BYTES)`, [
    fieldError(['params'], `more than ${most} elements`),
  ], { limit: most });
}

/** 409 for a step before every element of params has been uploaded. */
function incompleteUpload(meta: StoredMeta, layout: TensorLayout): ProblemError {
  const waiting = namedLeaves(layout).filter((l) => overlaps(meta.missing, l.offset, l.offset + l.size));
  const names = waiting.slice(0, 5).map((l) => `"${l.name}"`).join(', ') + (waiting.length > 5 ? ` and ${waiting.length - 5} more` : '');
  return new ProblemError(409, 'conflict', `${rangesLength(meta.missing)} of ${meta.size} params have not been uploaded yet (in ${names}): PUT /v1/optimizers/{id}/params first`, [
    fieldError(['params'], `${rangesLength(meta.missing)} elements missing`),
  ], { step: meta.step });
}
