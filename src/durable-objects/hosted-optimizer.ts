// One hosted optimizer per SQLite-backed Durable Object. Its params and Adam state live in the
// memory of the object's own WebAssembly kernel instance (loaded once per object lifetime), so a
// step copies the gradient in and steps in place; storage (./store.ts) journals each step.
// Methods return data (./protocol.ts); the Worker speaks HTTP. The math is src/optim's; this class
// adds access control, ordering, idempotency and preconditions.

import { DurableObject } from 'cloudflare:workers';
import { BEARER_CHALLENGE } from '../lib/auth.ts';
import { initialSchedulerState, learningRate, reportMetric, scheduleOverflow } from '../lib/learning-rate.ts';
import { ProblemError, fieldError, headerError, validationProblem } from '../lib/problem.ts';
import { alignTo } from '../lib/tensor-input.ts';
import { MAX_STEP, adamStepInPlace, firstNonFinite, type Dtype, type FloatArray } from '../optim/adam.ts';
import adamWasm from '../optim/wasm/adam.wasm';
import { createWasmAdam, type WasmAdam } from '../optim/wasm/kernel.ts';
import { pathOfIndex, type TensorLayout } from '../tensors/tree.ts';
import { Mutex } from './mutex.ts';
import { checkExpectedStep, checkIfMatch } from './preconditions.ts';
import type {
  CreateArgs,
  HistoryEntry,
  OptimizerInfo,
  Outcome,
  PatchArgs,
  RestoreArgs,
  SnapshotOut,
  SnapshotSlot,
  StepArgs,
  StepOut,
  TensorsIn,
  TensorsOut,
  Versioned,
} from './protocol.ts';
import { OptimizerStore, chunkElements, slotKeys, type SlotArrays, type StoredMeta } from './store.ts';

/** Idempotency keys remembered per optimizer. */
export const IDEMPOTENCY_KEYS_KEPT = 256;
/** History entries (step, lr, loss) kept per optimizer. */
export const HISTORY_KEPT = 10_000;
/** A snapshot stream not read to its end within this time is cut, so steps can go on. */
export const SNAPSHOT_READ_TIMEOUT_MS = 120_000;

/**
 * Bytes of kernel memory a hosted state of `size` elements takes: params, m, v, v_max and the
 * gradient buffer, whatever the hyperparameters (so switching amsgrad on never needs more).
 */
export const hostedMemoryBytes = (dtype: Dtype, size: number) => 5 * size * (dtype === 'float32' ? 4 : 8);

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

/** Constant-time string comparison (token hashes). */
function sameString(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

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
    if (e instanceof ProblemError) return { ok: false, problem: e.toData() };
    throw e;
  }
}

const NOT_FOUND = () => new ProblemError(404, 'not-found', 'no optimizer with this id (never created, or deleted)');

export class HostedOptimizer extends DurableObject<Env> {
  readonly #store: OptimizerStore;
  readonly #mutex = new Mutex();
  #loaded: Loaded | null = null;
  #kernel: WasmAdam | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#store = new OptimizerStore(ctx.storage);
    ctx.blockConcurrencyWhile(async () => this.#load());
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

  /** Loads the optimizer from storage: at start-up, and to discard an in-memory change that failed. */
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
      this.#store.readJournalGrads(entry.seq, grads);
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

  /** The loaded optimizer, or a 404/401 problem. Cheap: runs before anything is read or allocated. */
  #authorized(tokenHash: string | null): Loaded {
    const loaded = this.#loaded;
    if (!loaded) throw NOT_FOUND();
    if (tokenHash === null) throw new ProblemError(401, 'unauthorized', 'missing `Authorization: Bearer <token>` header', undefined, undefined, BEARER_CHALLENGE);
    if (!sameString(tokenHash, loaded.meta.tokenHash)) throw new ProblemError(401, 'unauthorized', 'the bearer token does not open this optimizer', undefined, undefined, BEARER_CHALLENGE);
    return loaded;
  }

  /** Checks the token, then runs `fn` holding the lock (re-checking: the optimizer may be gone by then). */
  #locked<T>(tokenHash: string | null, fn: (loaded: Loaded) => T | Promise<T>): Promise<Outcome<T>> {
    return outcome(async () => {
      this.#authorized(tokenHash);
      return this.#mutex.run(() => fn(this.#authorized(tokenHash)));
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
      created_at: meta.createdAt,
      updated_at: meta.updatedAt,
    };
  }

  #versionedInfo(loaded: Loaded): Versioned<OptimizerInfo> {
    return { etag: etagOf(loaded.meta), value: this.#info(loaded.meta, loaded.layout) };
  }

  /** A copy of the params (RPC serializes a view's whole buffer, here the kernel's memory). */
  #paramsOut(loaded: Loaded): TensorsOut {
    return { dtype: loaded.meta.dtype, layout: loaded.layout, values: loaded.arrays.params.slice() };
  }

  /** Writes a tree sent by the Worker into `target` (the optimizer's dtype and layout), or a 422. */
  #decodeInto(input: TensorsIn, loaded: Loaded, target: FloatArray, path: string): void {
    target.set(alignTo(input.flat, loaded.layout, [path], loaded.meta.dtype));
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
      this.#mutex.run(() => {
        if (this.#loaded) throw new ProblemError(409, 'conflict', 'this optimizer already exists');
        const { dtype, hyperparams, layout } = args;
        const size = args.params.length;
        const memory = this.#allocate(dtype, size, hyperparams.amsgrad);
        memory.arrays.params.set(args.params);
        const now = new Date().toISOString();
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
          missing: [],
        };
        this.#store.transaction(() => {
          this.#store.createTables();
          this.#store.writeCheckpoint(meta, memory.arrays, layout);
        });
        this.#loaded = { meta, layout, ...memory };
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
      this.#decodeInto(args.grads, loaded, grads, 'grads');
      const print = args.idempotencyKey === undefined ? '' : await fingerprint(meta.dtype, grads, args.loss);

      if (args.idempotencyKey !== undefined) {
        const seen = this.#store.idempotency(args.idempotencyKey);
        if (seen) {
          if (seen.fingerprint !== print) {
            throw validationProblem([headerError('Idempotency-Key', 'was already used for a step with different gradients or loss', args.idempotencyKey)]);
          }
          const params = args.returnParams && seen.seq === meta.seq ? this.#paramsOut(loaded) : null;
          return { etag: etagOf(meta), value: { step: seen.step, lr: seen.lr, replayed: true, params } };
        }
      }
      checkIfMatch(args.ifMatch, etagOf(meta), meta.step);
      checkExpectedStep(args.expectedStep, meta.step);

      const lr = learningRate(meta.hyperparams.lr, meta.schedule, meta.step, meta.plateau);
      if (!Number.isFinite(lr)) throw scheduleOverflow(meta.step, lr);
      const state = { step: meta.step, m: arrays.m, v: arrays.v, vMax: arrays.vMax };
      // In place: storage is the undo log. A non-finite result reloads the stored state.
      adamStepInPlace({ dtype: meta.dtype, hyperparams: { ...meta.hyperparams, lr }, params: arrays.params, grads, state }, this.#kernel);
      const bad = firstNonFinite(arrays.params, arrays.m, arrays.v);
      if (bad) {
        this.#load();
        throw new ProblemError(422, 'non-finite-result', 'the step would produce a non-finite value (overflow); nothing was changed', [
          fieldError(['grads', ...pathOfIndex(layout, bad.index)], 'leads to a non-finite parameter or moment'),
        ]);
      }

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
          next.cursor = this.#store.appendStep(next, arrays, grads, { seq: next.seq, step: meta.step, lr, hyperparams: meta.hyperparams });
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
      return { etag: etagOf(next), value: { step: next.step, lr, replayed: false, params: args.returnParams ? this.#paramsOut(loaded) : null } };
    });
  }

  /**
   * Metadata and a stream of every state tensor. The lock is held until the stream is read to its
   * end, cancelled, or SNAPSHOT_READ_TIMEOUT_MS pass, so the bytes are one state.
   */
  snapshot(tokenHash: string | null): Promise<Outcome<SnapshotOut>> {
    return outcome(async () => {
      this.#authorized(tokenHash);
      const release = await this.#mutex.acquire();
      try {
        const loaded = this.#authorized(tokenHash);
        const { meta, layout, arrays } = loaded;
        const slots: SnapshotSlot[] = arrays.vMax ? ['params', 'm', 'v', 'v_max'] : ['params', 'm', 'v'];
        return { etag: etagOf(meta), info: this.#info(meta, layout), schedulerState: meta.plateau, layout, slots, data: lockedByteStream(slotKeys(arrays).map((k) => arrays[k]!), release) };
      } catch (e) {
        release();
        throw e;
      }
    });
  }

  restore(tokenHash: string | null, args: RestoreArgs): Promise<Outcome<Versioned<OptimizerInfo>>> {
    return this.#locked(tokenHash, (loaded) => {
      const { dtype, hyperparams, layout, schedule } = args;
      if (args.schedulerState && schedule?.type !== 'reduce_on_plateau') {
        throw validationProblem([fieldError(['scheduler_state'], 'must be null or omitted unless the schedule is reduce_on_plateau')]);
      }
      const size = args.params.length;
      const next: StoredMeta = {
        ...loaded.meta,
        step: args.step,
        revision: loaded.meta.revision + 1,
        dtype,
        size,
        hyperparams,
        schedule,
        plateau: args.schedulerState ?? initialSchedulerState(schedule),
        updatedAt: new Date().toISOString(),
        cursor: 0,
        missing: [],
      };
      const memory = this.#allocate(dtype, size, hyperparams.amsgrad);
      const { arrays } = memory;
      arrays.params.set(args.params);
      arrays.m.set(args.m);
      arrays.v.set(args.v);
      if (arrays.vMax && args.vMax) arrays.vMax.set(args.vMax);
      try {
        this.#store.transaction(() => {
          this.#store.writeCheckpoint(next, arrays, layout);
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

  update(tokenHash: string | null, args: PatchArgs): Promise<Outcome<Versioned<OptimizerInfo>>> {
    return this.#locked(tokenHash, (loaded) => {
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
      };
      if (hyperparams.amsgrad === meta.hyperparams.amsgrad) {
        // Journalled steps carry their own hyperparameters, so only the metadata changes.
        this.#store.transaction(() => this.#store.writeMeta(next));
        loaded.meta = next;
        return this.#versionedInfo(loaded);
      }
      // amsgrad adds or drops the v_max slot: a full checkpoint. Switching it on starts the running
      // max from zero (max(0, v) = v at the next step).
      const arrays = { ...loaded.arrays, vMax: hyperparams.amsgrad ? loaded.vMaxSpace.fill(0) : null };
      try {
        this.#store.transaction(() => this.#store.writeCheckpoint(next, arrays, null));
      } catch (e) {
        this.#load();
        throw e;
      }
      loaded.meta = next;
      loaded.arrays = arrays;
      return this.#versionedInfo(loaded);
    });
  }

  history(tokenHash: string | null, limit: number): Promise<Outcome<{ entries: HistoryEntry[]; kept: number }>> {
    return this.#locked(tokenHash, () => ({ entries: this.#store.history(limit), kept: HISTORY_KEPT }));
  }

  remove(tokenHash: string | null): Promise<Outcome<null>> {
    return this.#locked(tokenHash, async () => {
      this.#loaded = null;
      this.#kernel = null; // frees the kernel's memory
      await this.#store.deleteAll(); // wipes every table (and any alarm) atomically
      return null;
    });
  }
}

/** Bytes per piece of a snapshot stream. */
const PIECE_BYTES = 1 << 20;

/**
 * A stream of the bytes of `arrays`, one after another, copied piece by piece as it is read;
 * `release` runs once when it ends, is cancelled or times out (the stream then errors).
 */
function lockedByteStream(arrays: FloatArray[], release: () => void): ReadableStream<Uint8Array> {
  let k = 0;
  let offset = 0;
  let controllerRef: ReadableStreamDefaultController<Uint8Array> | null = null;
  const timer = setTimeout(() => {
    release();
    controllerRef?.error(new Error('snapshot not read in time'));
  }, SNAPSHOT_READ_TIMEOUT_MS);
  const finish = () => {
    clearTimeout(timer);
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
          offset = end;
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
