// Many workers, one optimizer: data-parallel training over HTTP. An optimizer with an `accumulate`
// setting ({contributions: N, reduce: "mean" | "sum"}) takes each step as N contributions, one per
// worker id 0..N-1, posted to the normal step route. Each contribution is decoded and checked like
// a gradient, then stored in the object's SQLite (chunked BLOBs, in the optimizer's dtype) before it
// is acknowledged (202). The contribution that completes the set is never stored: inside one SQLite
// transaction that is rolled back, it is inserted and every contribution is read back, in ascending
// worker id order, into the gradient buffer (acc = g0; acc = acc + g1; …; then acc / N for mean),
// one 1 MiB part at a time, so memory holds no second copy. The step then proceeds as any step, and
// its own transaction drops the held contributions and remembers their Idempotency-Keys. The object's
// lock serializes contributions, so a set completes, and its step is applied, exactly once.
//
// Also here: the waiters of GET params?min_step (woken when a step lands). Storage only, no HTTP:
// problems are thrown as ProblemError, as in the rest of the object.

import { ProblemError, fieldError, headerError, validationProblem } from '../lib/problem.ts';
import type { FloatArray } from '../optim/optimizer.ts';
import type { AccumulateSpec, PendingOut } from './protocol.ts';
import type { IdempotencyRow } from './store.ts';

export type { AccumulateSpec };

/** Fewest and most contributions a step may take. */
export const MIN_CONTRIBUTIONS = 2;
export const MAX_CONTRIBUTIONS = 64;
/** Longest wait of GET params?min_step (seconds). */
export const MAX_WAIT_SECONDS = 30;
/** Most requests waiting for a step at once (more answer at once, without waiting). */
export const MAX_WAITERS = 1024;
/** Bytes per stored row of a contribution (production rows are limited to 2 MB). */
export const CONTRIBUTION_PART_BYTES = 1 << 20;

const SCHEMA = [
  'CREATE TABLE IF NOT EXISTS contributions (worker INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL, loss REAL, key TEXT, bytes INTEGER NOT NULL)',
  'CREATE TABLE IF NOT EXISTS contribution_parts (worker INTEGER NOT NULL, part INTEGER NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (worker, part))',
];

/** A held contribution, without its gradient. */
type HeldRow = {
  worker: number;
  fingerprint: string;
  loss: number | null;
  key: string | null;
};

/** What the step needs from a contribution. */
export interface ContributionArgs {
  spec: AccumulateSpec;
  worker: number | undefined;
  /** Completed steps now. */
  step: number;
  /** The decoded contribution, in the optimizer's dtype: replaced by the reduced gradient when the set completes. */
  grads: FloatArray;
  /** Tensors the request left out or sent as null: a contribution carries every tensor. */
  frozen: readonly boolean[];
  fingerprint: string;
  loss: number | undefined;
  idempotencyKey: string | undefined;
  /** With nonfinite: "skip" the step skips a non-finite reduced gradient; otherwise it is a 422. */
  skipNonFinite: boolean;
  /** Index of the first non-finite element, or -1. */
  scan: (values: FloatArray) => number;
}

/** The set is complete and `grads` holds the reduced gradient. */
export interface Completed {
  /** The mean of the contributions' losses when every one carried a loss (ascending worker id, float64), else undefined. */
  loss: number | undefined;
  /** Inside the step's transaction: drops the held contributions and remembers their Idempotency-Keys for the step's outcome. */
  settle: (outcome: Omit<IdempotencyRow, 'fingerprint'>, remember: (key: string, row: IdempotencyRow) => void, known: (key: string) => boolean) => void;
}

/** The idempotency key under which a contribution consumed by a skipped step is remembered. */
export const skippedKey = (worker: number, fingerprint: string) => `accumulate-skipped:${worker}:${fingerprint}`;

/**
 * 422 for an accumulate setting the optimizer cannot honour: contributions are dense, and
 * SparseAdam takes sparse gradients only, so no set of contributions could ever complete.
 */
export function checkAccumulates(def: { name: string; sparse?: string }, spec: AccumulateSpec | null | undefined, path: Array<string | number>): void {
  if (spec && def.sparse === 'only') {
    throw validationProblem([fieldError(path, `${def.name} takes sparse gradients only, and contributions to an accumulated step are dense: it cannot accumulate`)]);
  }
}

/** 422 for a step request that does not fit the optimizer's accumulate setting (checked before the body is read). */
export function checkWorker(spec: AccumulateSpec | undefined, worker: number | undefined, expectedStep: number | undefined): void {
  if (!spec) {
    if (worker !== undefined) throw validationProblem([fieldError(['worker'], 'is for optimizers that accumulate contributions (PATCH accumulate to set it); this one steps on every gradient', worker)]);
    return;
  }
  if (worker === undefined) {
    throw validationProblem([fieldError(['worker'], `is required: this optimizer steps once per ${spec.contributions} contributions (accumulate); send ?worker=<0..${spec.contributions - 1}>`)]);
  }
  if (worker >= spec.contributions) {
    throw validationProblem([fieldError(['worker'], `must be an integer in [0, ${spec.contributions - 1}]: this optimizer takes ${spec.contributions} contributions per step`, worker)]);
  }
  if (expectedStep === undefined) {
    throw validationProblem([fieldError(['expected_step'], 'is required with `worker`: the completed step count the contribution was computed at (GET params gives it), so a late contribution is refused instead of joining the next step')]);
  }
}

/** The held contributions of one optimizer in its SQLite database. */
export class Contributions {
  readonly #storage: DurableObjectStorage;

  constructor(storage: DurableObjectStorage) {
    this.#storage = storage;
  }

  get #sql(): SqlStorage {
    return this.#storage.sql;
  }

  /** Whether the tables exist (created with the first contribution: optimizers that never accumulate have none). */
  #exists(): boolean {
    return this.#sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'contributions'").toArray().length > 0;
  }

  #held(): HeldRow[] {
    if (!this.#exists()) return [];
    return this.#sql.exec<HeldRow>('SELECT worker, fingerprint, loss, key FROM contributions ORDER BY worker').toArray();
  }

  /** Worker ids whose contribution to the pending step is held, ascending. */
  workers(): number[] {
    return this.#held().map((r) => r.worker);
  }

  /** Drops every held contribution (call inside a transaction: a step, skipped step or restore). */
  drop(): void {
    if (!this.#exists()) return;
    this.#sql.exec('DELETE FROM contributions');
    this.#sql.exec('DELETE FROM contribution_parts');
  }

  #insert(row: HeldRow, grads: FloatArray): void {
    for (const statement of SCHEMA) this.#sql.exec(statement);
    const bytes = new Uint8Array(grads.buffer, grads.byteOffset, grads.byteLength);
    this.#sql.exec('INSERT INTO contributions (worker, fingerprint, loss, key, bytes) VALUES (?, ?, ?, ?, ?)', row.worker, row.fingerprint, row.loss, row.key, bytes.length);
    for (let part = 0, off = 0; off < bytes.length || part === 0; part++, off += CONTRIBUTION_PART_BYTES) {
      // slice(): a bound view would not be trimmed to the view (see tensor-store.ts).
      this.#sql.exec('INSERT INTO contribution_parts (worker, part, bytes) VALUES (?, ?, ?)', row.worker, part, bytes.slice(off, Math.min(bytes.length, off + CONTRIBUTION_PART_BYTES)).buffer);
    }
  }

  /**
   * Reads every stored contribution into `grads` in ascending worker id order: the first copied,
   * each next added elementwise in the dtype of `grads` (JavaScript adds in float64 and a
   * Float32Array store rounds once: the correctly rounded float32 sum, as numpy's), then, for
   * mean, each element divided by N the same way. One stored part (1 MiB) in memory at a time.
   */
  #reduceInto(grads: FloatArray, spec: AccumulateSpec, workers: readonly number[]): void {
    const item = grads.BYTES_PER_ELEMENT;
    workers.forEach((worker, k) => {
      let at = 0;
      for (const row of this.#sql.exec<{ bytes: ArrayBuffer }>('SELECT bytes FROM contribution_parts WHERE worker = ? ORDER BY part', worker)) {
        const part = item === 4 ? new Float32Array(row.bytes) : new Float64Array(row.bytes);
        if (at + part.length > grads.length) throw new Error(`contribution of worker ${worker} is larger than the optimizer`);
        if (k === 0) grads.set(part, at);
        else for (let i = 0; i < part.length; i++) grads[at + i]! += part[i]!;
        at += part.length;
      }
      if (at !== grads.length) throw new Error(`contribution of worker ${worker} has ${at} of ${grads.length} elements`);
    });
    if (spec.reduce === 'mean') for (let i = 0; i < grads.length; i++) grads[i]! /= spec.contributions;
  }

  /**
   * A shard of a sharded optimizer (./shards.ts): stores `bytes` of worker `worker`'s contribution
   * at byte offset `at` of the shard's slice, in rows of at most CONTRIBUTION_PART_BYTES keyed by
   * byte offset. The first part of another attempt drops the worker's parts stored before (a
   * failed attempt's, or those of a set already consumed), so parts of two attempts never mix.
   */
  writeShardPart(worker: number, attempt: string, at: number, bytes: Uint8Array): void {
    for (const statement of SCHEMA) this.#sql.exec(statement);
    const row = this.#sql.exec<{ fingerprint: string }>('SELECT fingerprint FROM contributions WHERE worker = ?', worker).toArray()[0];
    if (row?.fingerprint !== attempt) {
      this.#sql.exec('DELETE FROM contribution_parts WHERE worker = ?', worker);
      this.#sql.exec('INSERT OR REPLACE INTO contributions (worker, fingerprint, loss, key, bytes) VALUES (?, ?, NULL, NULL, 0)', worker, attempt);
    }
    for (let off = 0; off < bytes.length; off += CONTRIBUTION_PART_BYTES) {
      this.#sql.exec('INSERT OR REPLACE INTO contribution_parts (worker, part, bytes) VALUES (?, ?, ?)', worker, at + off, bytes.slice(off, Math.min(bytes.length, off + CONTRIBUTION_PART_BYTES)).buffer);
    }
  }

  /** A shard: the stored contributions of `workers` (ascending) reduced into `grads`, as a complete set is (a 500 if one is incomplete). */
  reduceShard(grads: FloatArray, spec: AccumulateSpec, workers: readonly number[]): void {
    if (!this.#exists()) throw new Error('shard: no contribution stored');
    this.#reduceInto(grads, spec, workers);
  }

  /**
   * Takes one contribution (the caller holds the object's lock and has checked the preconditions):
   * a new one is stored and answered pending; an identical repeat answers the same; one that
   * completes the set leaves the reduced gradient in `args.grads` and returns how to settle it.
   * Nothing is stored when this throws.
   */
  contribute(args: ContributionArgs): { pending: PendingOut } | { completed: Completed } {
    const { spec, step, grads } = args;
    const worker = args.worker!;
    if (args.frozen.some(Boolean)) {
      throw validationProblem([fieldError(['grads'], 'leaves a tensor out (null, or absent from a safetensors file): a contribution to an accumulated step carries a dense gradient of every tensor (send zeros for a tensor this worker did not touch)')]);
    }
    const held = this.#held();
    const pending = (workers: number[], replayed: boolean): { pending: PendingOut } => ({
      pending: { worker, step, contributions: spec.contributions, reduce: spec.reduce, received: workers, missing: spec.contributions - workers.length, replayed },
    });
    const mine = held.find((r) => r.worker === worker);
    if (mine) {
      if (mine.fingerprint === args.fingerprint) return pending(held.map((r) => r.worker), true);
      throw new ProblemError(409, 'conflict', `worker ${worker} has already contributed other gradients (or another loss) to step ${step + 1}; a contribution cannot be replaced`, [
        fieldError(['worker'], `already contributed to step ${step + 1}`, worker),
      ], { step });
    }
    const key = args.idempotencyKey ?? null;
    const other = key === null ? undefined : held.find((r) => r.key === key);
    if (other) throw validationProblem([headerError('Idempotency-Key', `is already the key of worker ${other.worker}'s contribution to this step`, key)]);
    const row: HeldRow = { worker, fingerprint: args.fingerprint, loss: args.loss ?? null, key };
    if (held.length + 1 < spec.contributions) {
      this.#storage.transactionSync(() => this.#insert(row, grads));
      return pending([...held.map((r) => r.worker), worker].sort((a, b) => a - b), false);
    }
    // The last one: reduced inside a transaction that is rolled back, so it is never stored and a
    // failure below (or of the step) leaves the held contributions as they were.
    const all = [...held, row].sort((a, b) => a.worker - b.worker);
    const rollback = new Error('rollback');
    try {
      this.#storage.transactionSync(() => {
        this.#insert(row, grads);
        this.#reduceInto(grads, spec, all.map((r) => r.worker));
        throw rollback;
      });
    } catch (e) {
      if (e !== rollback) throw e;
    }
    if (!args.skipNonFinite) {
      const bad = args.scan(grads);
      if (bad >= 0) {
        throw new ProblemError(422, 'non-finite-result', `the ${spec.reduce} of the ${spec.contributions} contributions is ${grads[bad]} at element ${bad} (it overflows); nothing was changed (or PATCH hyperparams.nonfinite to "skip" to skip such steps)`, [
          fieldError(['grads', bad], 'overflows in the reduced gradient'),
        ]);
      }
    }
    const losses = all.map((r) => r.loss);
    let loss: number | undefined;
    if (losses.every((l) => l !== null)) {
      let total = 0;
      for (const l of losses) total += l!;
      loss = total / losses.length;
      // Finite losses whose sum overflows: their mean is finite, taken as the sum of each / N.
      if (!Number.isFinite(loss)) {
        loss = 0;
        for (const l of losses) loss += l! / losses.length;
      }
    }
    return {
      completed: {
        loss,
        settle: (outcome, remember, known) => {
          for (const r of held) if (r.key !== null && r.key !== key && !known(r.key)) remember(r.key, { ...outcome, fingerprint: r.fingerprint });
          // A skipped step leaves the step count as it was, so expected_step cannot tell a retried
          // contribution from a new one: each consumed contribution is remembered by its worker
          // and fingerprint, and the same one again answers as the skipped step (skippedRetry).
          if (outcome.skipped === 1) for (const r of all) remember(skippedKey(r.worker, r.fingerprint), { ...outcome, fingerprint: r.fingerprint });
          this.drop();
        },
      },
    };
  }
}

/** PATCH accumulate: the new setting (undefined: none); 409 for a change while contributions are held. */
export function patchedAccumulate(current: AccumulateSpec | undefined, sent: AccumulateSpec | null | undefined, held: readonly number[]): AccumulateSpec | undefined {
  if (sent === undefined) return current;
  const next = sent ?? undefined;
  if (JSON.stringify(next) === JSON.stringify(current)) return current;
  if (held.length > 0) {
    throw new ProblemError(409, 'conflict', `contributions of workers ${held.join(', ')} to the pending step are held: accumulate can change once that step is applied (or after a PUT /state, which drops them)`, [
      fieldError(['accumulate'], `${held.length} of ${current!.contributions} contributions held`),
    ]);
  }
  return next;
}

/** Requests waiting for a step count (GET params?min_step&wait), woken when a step lands. */
export class StepWaiters {
  readonly #waiting = new Set<{ min: number; wake: () => void }>();

  /** Resolves once `current()` reaches `min` (as told by notify), or after `ms`. */
  until(min: number, ms: number, current: () => number): Promise<void> {
    if (ms <= 0 || current() >= min || this.#waiting.size >= MAX_WAITERS) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter = {
        min,
        wake: () => {
          clearTimeout(timer);
          this.#waiting.delete(waiter);
          resolve();
        },
      };
      const timer = setTimeout(waiter.wake, ms);
      this.#waiting.add(waiter);
    });
  }

  /** Wakes the requests waiting for `step` or less. */
  notify(step: number): void {
    for (const w of [...this.#waiting]) if (step >= w.min) w.wake();
  }
}

/** 409 for GET params?min_step when the optimizer has not reached it (after waiting). */
export function notReached(min: number, step: number, waited: number, spec: AccumulateSpec | undefined, held: readonly number[]): ProblemError {
  const contributions = spec ? ` (${held.length} of ${spec.contributions} contributions to the pending step held: workers ${held.length ? held.join(', ') : 'none'})` : '';
  return new ProblemError(409, 'conflict', `the optimizer is at step ${step}, not yet ${min}, after waiting ${waited} s${contributions}: ask again`, [
    fieldError(['min_step'], `not reached: the optimizer is at step ${step}`, min),
  ], { step });
}

/** The accumulate setting as GET /v1/optimizers/{id} shows it. */
export function accumulateInfo(spec: AccumulateSpec, held: number[]): AccumulateSpec & { received: number[]; missing: number } {
  return { contributions: spec.contributions, reduce: spec.reduce, received: held, missing: spec.contributions - held.length };
}
