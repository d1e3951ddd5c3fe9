// Durable storage of one hosted optimizer in its Durable Object's SQLite database.
//
// The state tensors (params and the optimizer's slots) are stored as checkpoint chunks: element
// ranges of 256 KiB per slot and row (production rows are limited to 2 MB), each tagged with the
// applied-step count `seq` it holds. A step does not rewrite every chunk: it appends its
// gradient to a journal and rewrites the next few chunks in turn, so each chunk is at most
// JOURNAL_DEPTH steps old and a step writes about its gradient's bytes plus 1/JOURNAL_DEPTH of
// the state, instead of the whole state. Loading replays, on each chunk's element range, the
// journalled steps it has not seen: the optimizers are elementwise and their steps deterministic,
// so the replay reproduces the state bit for bit (an optimizer that steps whole tensors, like
// Muon, is never journalled: each of its steps rewrites every chunk). Everything one operation writes commits in one
// transaction, so a crash leaves the state before or after it, never between.
//
// Synchronous: callers wrap writes in `transaction`. Pure storage: no HTTP, no problems.

import type { ShardsRecord } from './shards.ts';
import type { Dtype, FloatArray, Hyperparams } from '../optim/optimizer.ts';
import type { PlateauState } from '../schedules/plateau.ts';
import type { ScheduleSpec } from '../schedules/types.ts';
import type { TensorLayout } from '../tensors/tree.ts';
import type { AccumulateSpec } from './protocol.ts';
import { WIRE_DTYPES, elementSink, type WireDtype } from '../wire/dtypes.ts';
import { TENSOR_SCHEMA, deleteBlob, readBlob, readTensor, writeBlob } from './tensor-store.ts';

/**
 * Bytes of one checkpoint chunk per slot. Small enough that a step's share of the state (1/JOURNAL_DEPTH
 * of it, in whole chunks) stays close to that fraction; production rows are limited to 2 MB.
 */
export const CHUNK_BYTES = 1 << 18;
/** Bytes per row of a journalled gradient (and the largest BLOB written). */
export const JOURNAL_PART_BYTES = 1 << 20;
/** Most steps a checkpoint chunk may lag behind the state (and so most journal entries kept). */
export const JOURNAL_DEPTH = 8;

/**
 * The state tensors in memory: params and the optimizer's slots that exist, by torch's
 * `state_dict` names (`exp_avg`, `momentum_buffer`, …). Stored rows carry the same names, also
 * for optimizers written before other optimizers existed (Adam's exp_avg, exp_avg_sq, max_exp_avg_sq).
 */
export interface SlotArrays {
  params: FloatArray;
  slots: Record<string, FloatArray>;
}

/** Adam's slots, which an optimizer stored before `meta.optimizer` existed holds. */
export function legacyAdamSlots(amsgrad: boolean): string[] {
  return amsgrad ? ['exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'] : ['exp_avg', 'exp_avg_sq'];
}

/** The optimizer's metadata row. */
export interface StoredMeta {
  version: 2;
  id: string;
  tokenHash: string;
  createdAt: string;
  updatedAt: string;
  /** Completed steps as torch counts them (a float32: saturates at 2^24). */
  step: number;
  /** Applied steps, never saturating: orders steps, idempotency keys and the journal. */
  seq: number;
  /** Mutations so far (steps, restores, patches, uploads): the ETag, never reused. */
  revision: number;
  dtype: Dtype;
  size: number;
  /** The registry name (src/optim/registry.ts); absent: `adam` (stored before other optimizers). */
  optimizer?: string;
  /** The optimizer's hyperparameters (torch's names; a required one may be absent when a schedule sets lr). */
  hyperparams: Hyperparams;
  /** Names of the slots stored; absent: Adam's (`legacyAdamSlots`). */
  slots?: string[];
  /** Scalar state (NAdam's `mu_product`); absent: none yet (each at its initial value). */
  scalars?: Record<string, number>;
  schedule: ScheduleSpec | null;
  plateau: PlateauState | null;
  /** Next checkpoint chunk a step rewrites. */
  cursor: number;
  /** Element ranges [start, end) of params not yet uploaded (optimizers created by shapes). */
  missing: Array<[number, number]>;
  /**
   * Time-to-live in seconds, and the time of the last successful call (ms since the epoch): the
   * optimizer expires at their sum. Kept in this row, which a step writes anyway, so a step costs
   * no extra row. Absent in rows stored before expiry existed (the object then fills them in).
   */
  ttl: number;
  touchedAt: number;
  /**
   * SHA-256 of the service API key that created it, whose registry (./key-registry.ts) lists it
   * and counts it against the key's quota; absent or null without API keys.
   */
  owner?: string | null;
  /**
   * `seq` when params were last uploaded (absent: never). A replayed step answers its params only
   * if neither a step nor an upload came after it.
   */
  uploadedAtSeq?: number;
  /**
   * Steps skipped by `nonfinite: "skip"` since creation (restores keep it, as they keep the
   * history); absent in rows stored before it was counted: 0.
   */
  skippedSteps?: number;
  /**
   * How many param_groups are stored (in the `param_groups` blob: JSON of the groups as validated);
   * absent or 0: none, as for every optimizer stored before groups existed.
   */
  groups?: number;
  /**
   * For a slot that not every tensor holds (torch has None for a tensor whose group keeps no such
   * slot, or has not created it yet): ranges [start, end) of the tensor indices (layout order) that
   * hold it. Absent for a slot: every tensor holds it.
   */
  held?: Record<string, Array<[number, number]>>;
  /**
   * Tensors whose step count or scalars differ from `step` and `scalars` (NAdam's `mu_product` in a
   * group with other betas), by ranges of tensor indices; absent: none.
   */
  counters?: StoredCounter[];
  /** Steps taking several workers' contributions (./accumulate.ts); absent: every gradient is a step. */
  accumulate?: AccumulateSpec;
  /** A sharded optimizer's coordinator (./shards.ts): its shards; it holds no tensor itself. */
  shards?: ShardsRecord;
  /** A shard: the sharded restore it last stored (a repeated commit of it answers without storing again). */
  restoredAttempt?: string;
}

/** One per-tensor counter of StoredMeta.counters and the tensors that have it. */
export interface StoredCounter {
  step: number;
  scalars: Record<string, number>;
  tensors: Array<[number, number]>;
}

/** Version 1 (before the journal): tensors params/m/v/v_max stored whole in tensor_chunks. */
interface StoredMetaV1 extends Omit<StoredMeta, 'version' | 'revision' | 'cursor' | 'missing' | 'optimizer' | 'slots' | 'scalars' | 'ttl' | 'touchedAt'> {
  version: 1;
}

/** What replaying one journalled step needs besides its gradient. */
export interface JournalEntry {
  seq: number;
  /**
   * The element type the gradient was journalled in, when narrower than the optimizer's (it came
   * as bfloat16 or float16, and widening is exact, so the narrow bytes are the gradient).
   */
  dtype?: WireDtype | undefined;
  /** Completed steps before this step. */
  step: number;
  lr: number;
  hyperparams: Hyperparams;
  /** Scalar state before this step (absent: none, as Adam stored it). */
  scalars?: Record<string, number>;
  /**
   * With param_groups: each group's hyperparameters at this step, lr resolved (index 0: the
   * top-level set, g + 1: param_groups[g]); the tensors' groups are the stored ones (a change of
   * groups rewrites the whole state, so the journal never spans two).
   */
  groups?: Hyperparams[];
}

/** When an optimizer expires (ms since the epoch): its last successful call plus its time-to-live. */
export const deadlineOf = (meta: Pick<StoredMeta, 'ttl' | 'touchedAt'>) => meta.touchedAt + meta.ttl * 1000;

/** One history entry: an applied step, or one skipped by `nonfinite: "skip"`. */
export type HistoryRow = {
  step: number;
  lr: number;
  loss: number | null;
  at: string;
  /** With clip_grad_norm: the total norm before clipping (Infinity when it overflowed); null otherwise, and in rows stored before. */
  grad_norm: number | null;
  /** 1 for a skipped step; null for an applied one (and in rows stored before). */
  skipped: number | null;
};

/** What a retried Idempotency-Key answers: the original step's outcome. */
export type IdempotencyRow = {
  /** `meta.seq` after the step (a skipped step leaves it unchanged). */
  seq: number;
  fingerprint: string;
  step: number;
  lr: number;
  /** As in HistoryRow; null in rows stored before. */
  grad_norm: number | null;
  /** With nonfinite: skip, 1 when skipped, 0 when applied; null without it (and in rows stored before). */
  skipped: number | null;
};

const SCHEMA = [
  TENSOR_SCHEMA,
  'CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)',
  'CREATE TABLE IF NOT EXISTS slot_chunks (slot TEXT NOT NULL, idx INTEGER NOT NULL, seq INTEGER NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (slot, idx))',
  'CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL)',
  'CREATE TABLE IF NOT EXISTS journal_parts (seq INTEGER NOT NULL, part INTEGER NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (seq, part))',
  // history.seq numbers the entries (it was the applied step's seq before skipped steps were recorded: still increasing).
  'CREATE TABLE IF NOT EXISTS history (seq INTEGER PRIMARY KEY, step INTEGER NOT NULL, lr REAL NOT NULL, loss REAL, at TEXT NOT NULL, grad_norm REAL, skipped INTEGER)',
  'CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, fingerprint TEXT NOT NULL, step INTEGER NOT NULL, lr REAL NOT NULL, grad_norm REAL, skipped INTEGER)',
  // A shard's slice of a sharded step's gradient, prepared but not applied (./shards.ts): one step at most, in parts by byte offset (`part`).
  'CREATE TABLE IF NOT EXISTS prepared (seq INTEGER NOT NULL, part INTEGER NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (seq, part))',
  // Its sparse (row) gradients, one encoded blob per piece, in parts of at most JOURNAL_PART_BYTES.
  'CREATE TABLE IF NOT EXISTS prepared_rows (seq INTEGER NOT NULL, piece INTEGER NOT NULL, part INTEGER NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (seq, piece, part))',
  // A shard's checkpoint file of a sharded restore, staged before the coordinator decides (./shards.ts): by byte offset; row -1 names the attempt.
  'CREATE TABLE IF NOT EXISTS staged (part INTEGER PRIMARY KEY, bytes BLOB NOT NULL)',
];

/** Columns added since the tables were first created: added to tables stored before (NULL in their rows). */
const ADDED_COLUMNS: ReadonlyArray<readonly [table: string, column: string, type: string]> = [
  ['history', 'grad_norm', 'REAL'],
  ['history', 'skipped', 'INTEGER'],
  ['idempotency', 'grad_norm', 'REAL'],
  ['idempotency', 'skipped', 'INTEGER'],
];

export const itemSize = (dtype: Dtype) => (dtype === 'float32' ? 4 : 8);

/** Elements per checkpoint chunk. */
export const chunkElements = (dtype: Dtype) => CHUNK_BYTES / itemSize(dtype);

/** Number of checkpoint chunks of a state of `size` elements (at least one, even when empty). */
export const chunkCount = (dtype: Dtype, size: number) => Math.max(1, Math.ceil(size / chunkElements(dtype)));

/** The stored tensors of a state, by stored name, in storage order: params, then the slots. */
export function storedTensors(arrays: SlotArrays): Array<[string, FloatArray]> {
  return [['params', arrays.params], ...Object.entries(arrays.slots)];
}

function bytesOf(a: FloatArray, start = 0, end = a.length): Uint8Array {
  const size = a.BYTES_PER_ELEMENT;
  return new Uint8Array(a.buffer, a.byteOffset + start * size, (end - start) * size);
}

export class OptimizerStore {
  readonly #storage: DurableObjectStorage;

  constructor(storage: DurableObjectStorage) {
    this.#storage = storage;
  }

  get #sql(): SqlStorage {
    return this.#storage.sql;
  }

  /** Runs `fn` in one SQLite transaction (rolled back if it throws). */
  transaction<T>(fn: () => T): T {
    return this.#storage.transactionSync(fn);
  }

  createTables(): void {
    for (const statement of SCHEMA) this.#sql.exec(statement);
  }

  /** Adds the columns of ADDED_COLUMNS that tables stored by earlier code lack (an optimizer lives here). */
  upgradeTables(): void {
    const columns = new Map<string, string[]>();
    for (const [table, column, type] of ADDED_COLUMNS) {
      if (!columns.has(table)) columns.set(table, this.#sql.exec(`SELECT * FROM ${table} LIMIT 0`).columnNames);
      if (!columns.get(table)!.includes(column)) this.#sql.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`);
    }
  }

  /** The metadata row, or null when no optimizer lives here. Version 1 rows are returned as they are. */
  readMeta(): StoredMeta | StoredMetaV1 | null {
    const hasMeta = this.#sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").toArray().length > 0;
    if (!hasMeta) return null;
    const text = this.#sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = 'meta'").toArray()[0]?.v;
    return text ? (JSON.parse(text) as StoredMeta | StoredMetaV1) : null;
  }

  writeMeta(meta: StoredMeta): void {
    this.#sql.exec('INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)', 'meta', JSON.stringify(meta));
  }

  /** The layout can outgrow one row (10,000 tensor names), so it is chunked like a tensor. */
  readLayout(): TensorLayout {
    return JSON.parse(new TextDecoder().decode(readBlob(this.#sql, 'layout'))) as TensorLayout;
  }

  writeLayout(layout: TensorLayout): void {
    writeBlob(this.#sql, 'layout', new TextEncoder().encode(JSON.stringify(layout)));
  }

  /** The stored param_groups (JSON, chunked like the layout: patterns may be long). */
  readGroups(): unknown {
    return JSON.parse(new TextDecoder().decode(readBlob(this.#sql, 'param_groups')));
  }

  /** Stores the param_groups, or deletes them (none). */
  writeGroups(groups: readonly unknown[]): void {
    if (groups.length === 0) deleteBlob(this.#sql, 'param_groups');
    else writeBlob(this.#sql, 'param_groups', new TextEncoder().encode(JSON.stringify(groups)));
  }

  /**
   * Reads every checkpoint chunk into `arrays` (sized for `meta`) and returns the seq of each chunk
   * index; the caller replays the journal on chunks behind `meta.seq`.
   */
  readCheckpoint(meta: StoredMeta, arrays: SlotArrays): number[] {
    const per = chunkElements(meta.dtype);
    const count = chunkCount(meta.dtype, meta.size);
    const seqs = new Array<number>(count).fill(-1);
    for (const [key, target] of storedTensors(arrays)) {
      const rows = this.#sql.exec<{ idx: number; seq: number; bytes: ArrayBuffer }>('SELECT idx, seq, bytes FROM slot_chunks WHERE slot = ?', key);
      let seen = 0;
      for (const row of rows) {
        const start = row.idx * per;
        const end = Math.min(meta.size, start + per);
        if (row.idx >= count || row.bytes.byteLength !== (end - start) * target.BYTES_PER_ELEMENT) throw new Error(`stored chunk ${key}[${row.idx}] does not fit the layout`);
        if (seqs[row.idx] !== -1 && seqs[row.idx] !== row.seq) throw new Error(`stored chunk ${row.idx} holds slots of different steps`);
        seqs[row.idx] = row.seq;
        bytesOf(target, start, end).set(new Uint8Array(row.bytes));
        seen++;
      }
      if (seen !== count) throw new Error(`stored ${key} has ${seen} of ${count} chunks`);
    }
    return seqs;
  }

  /** Journalled steps after `seq`, oldest first. */
  journalAfter(seq: number): JournalEntry[] {
    return this.#sql
      .exec<{ entry: string }>('SELECT entry FROM journal WHERE seq > ? ORDER BY seq', seq)
      .toArray()
      .map((r) => JSON.parse(r.entry) as JournalEntry);
  }

  /** Reads the gradient journalled with `entry` into `grads` (widened when it was journalled narrow). */
  readJournalGrads(entry: JournalEntry, grads: FloatArray): void {
    const src = entry.dtype ?? (grads.BYTES_PER_ELEMENT === 4 ? 'F32' : 'F64');
    const want = grads.length * WIRE_DTYPES[src].bytes;
    const sink = elementSink(src, grads, 0, grads.length);
    let offset = 0;
    for (const row of this.#sql.exec<{ bytes: ArrayBuffer }>('SELECT bytes FROM journal_parts WHERE seq = ? ORDER BY part', entry.seq)) {
      sink.write(new Uint8Array(row.bytes));
      offset += row.bytes.byteLength;
    }
    if (offset !== want) throw new Error(`journalled gradient ${entry.seq} has ${offset} of ${want} bytes`);
  }

  #writeChunk(meta: StoredMeta, arrays: SlotArrays, idx: number): void {
    const per = chunkElements(meta.dtype);
    const start = idx * per;
    const end = Math.min(meta.size, start + per);
    for (const [key, a] of storedTensors(arrays)) {
      this.#sql.exec('INSERT OR REPLACE INTO slot_chunks (slot, idx, seq, bytes) VALUES (?, ?, ?, ?)', key, idx, meta.seq, bytesOf(a, start, end));
    }
  }

  /**
   * Writes the whole state at `meta.seq` (and the layout when given), dropping the journal and any
   * chunk or slot the state no longer has. For everything but steps: create, restore, patch.
   */
  writeCheckpoint(meta: StoredMeta, arrays: SlotArrays, layout: TensorLayout | null): void {
    this.writeMeta(meta);
    if (layout) this.writeLayout(layout);
    const count = chunkCount(meta.dtype, meta.size);
    for (let idx = 0; idx < count; idx++) this.#writeChunk(meta, arrays, idx);
    this.#sql.exec('DELETE FROM slot_chunks WHERE idx >= ?', count);
    const kept = storedTensors(arrays).map(([k]) => k);
    this.#sql.exec(`DELETE FROM slot_chunks WHERE slot NOT IN (${kept.map(() => '?').join(', ')})`, ...kept);
    this.#sql.exec('DELETE FROM journal');
    this.#sql.exec('DELETE FROM journal_parts');
  }

  /** Writes the metadata and rewrites, at `meta.seq`, every chunk meeting one of the element ranges (an upload). */
  writeRanges(meta: StoredMeta, arrays: SlotArrays, ranges: ReadonlyArray<readonly [number, number]>): void {
    this.writeMeta(meta);
    const per = chunkElements(meta.dtype);
    const chunks = new Set<number>();
    for (const [start, end] of ranges) for (let idx = Math.floor(start / per); idx * per < end; idx++) chunks.add(idx);
    for (const idx of chunks) this.#writeChunk(meta, arrays, idx);
  }

  /**
   * Records step `meta.seq` (already applied to `arrays`): its gradient's bytes (in the optimizer's
   * dtype, or `entry.dtype`) and scalars in the journal,
   * then the next chunks in turn, so no chunk lags more than JOURNAL_DEPTH steps; journal entries
   * every chunk has passed are dropped. Returns the cursor for the next step. When a step
   * rewrites every chunk anyway (small states), or `whole` asks for it (a step that created a
   * slot, or an optimizer whose steps cannot be replayed chunk by chunk), nothing is journalled.
   */
  appendStep(meta: StoredMeta, arrays: SlotArrays, grads: Uint8Array, entry: JournalEntry, whole = false): number {
    const count = chunkCount(meta.dtype, meta.size);
    const perStep = whole ? count : Math.ceil(count / JOURNAL_DEPTH);
    if (perStep >= count) {
      for (let idx = 0; idx < count; idx++) this.#writeChunk(meta, arrays, idx);
      this.#sql.exec('DELETE FROM journal');
      this.#sql.exec('DELETE FROM journal_parts');
      return 0;
    }
    this.#sql.exec('INSERT INTO journal (seq, entry) VALUES (?, ?)', entry.seq, JSON.stringify(entry));
    const bytes = grads;
    for (let part = 0, off = 0; off < bytes.length || part === 0; part++, off += JOURNAL_PART_BYTES) {
      this.#sql.exec('INSERT INTO journal_parts (seq, part, bytes) VALUES (?, ?, ?)', entry.seq, part, bytes.subarray(off, Math.min(bytes.length, off + JOURNAL_PART_BYTES)));
    }
    let cursor = meta.cursor % count;
    for (let k = 0; k < perStep; k++) {
      this.#writeChunk(meta, arrays, cursor);
      cursor = (cursor + 1) % count;
    }
    const oldest = this.#sql.exec<{ s: number }>('SELECT min(seq) AS s FROM slot_chunks').one().s;
    this.#sql.exec('DELETE FROM journal WHERE seq <= ?', oldest);
    this.#sql.exec('DELETE FROM journal_parts WHERE seq <= ?', oldest);
    return cursor;
  }

  /**
   * Reads a version 1 optimizer (tensors stored whole) into arrays allocated by `allocate`, and
   * returns it as version 2. The caller writes it back with writeCheckpoint and then calls
   * dropVersion1.
   */
  readVersion1(meta: StoredMetaV1, allocate: (dtype: Dtype, size: number, amsgrad: boolean) => SlotArrays): { meta: StoredMeta; arrays: SlotArrays } {
    const amsgrad = meta.hyperparams.amsgrad === true;
    const arrays = allocate(meta.dtype, meta.size, amsgrad);
    arrays.params.set(readTensor(this.#sql, 'params', meta.dtype, meta.size));
    arrays.slots.exp_avg!.set(readTensor(this.#sql, 'm', meta.dtype, meta.size));
    arrays.slots.exp_avg_sq!.set(readTensor(this.#sql, 'v', meta.dtype, meta.size));
    if (amsgrad) arrays.slots.max_exp_avg_sq!.set(readTensor(this.#sql, 'v_max', meta.dtype, meta.size));
    // Old ETags were "step-<n>"; new ones can never equal them.
    // No ttl yet: the object gives it the default when it starts.
    return { meta: { ...meta, version: 2, revision: meta.seq, cursor: 0, missing: [] } as unknown as StoredMeta, arrays };
  }

  dropVersion1(): void {
    for (const name of ['params', 'm', 'v', 'v_max']) deleteBlob(this.#sql, name);
  }

  /** Appends an entry (numbered after the last one: SQLite's next rowid) and keeps the last `kept`. */
  addHistory(row: HistoryRow, kept: number): void {
    const { seq } = this.#sql
      .exec<{ seq: number }>('INSERT INTO history (step, lr, loss, at, grad_norm, skipped) VALUES (?, ?, ?, ?, ?, ?) RETURNING seq', row.step, row.lr, row.loss, row.at, row.grad_norm, row.skipped)
      .one();
    this.#sql.exec('DELETE FROM history WHERE seq <= ?', seq - kept);
  }

  history(limit: number): HistoryRow[] {
    return this.#sql.exec<HistoryRow>('SELECT step, lr, loss, at, grad_norm, skipped FROM history ORDER BY seq DESC LIMIT ?', limit).toArray().reverse();
  }

  idempotency(key: string): IdempotencyRow | undefined {
    return this.#sql.exec<IdempotencyRow>('SELECT seq, fingerprint, step, lr, grad_norm, skipped FROM idempotency WHERE key = ?', key).toArray()[0];
  }

  /**
   * Remembers a key and keeps the last `kept`, by insertion order (rowid): skipped steps share
   * their seq with the applied step before them, so seq cannot bound the count.
   */
  rememberKey(key: string, row: IdempotencyRow, kept: number): void {
    const { id } = this.#sql
      .exec<{ id: number }>(
        'INSERT INTO idempotency (key, seq, fingerprint, step, lr, grad_norm, skipped) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING rowid AS id',
        key, row.seq, row.fingerprint, row.step, row.lr, row.grad_norm, row.skipped,
      )
      .one();
    this.#sql.exec('DELETE FROM idempotency WHERE rowid <= ?', id - kept);
  }

  /** The attempt whose parts of prepared step `seq` are stored (row `part` -1), or null. */
  preparedAttempt(seq: number): string | null {
    const row = this.#sql.exec<{ bytes: ArrayBuffer }>('SELECT bytes FROM prepared WHERE seq = ? AND part = -1', seq).toArray()[0];
    return row ? new TextDecoder().decode(row.bytes) : null;
  }

  /**
   * Stores a part of prepared step `seq`'s gradient slice, `bytes` at byte offset `at`, in rows of
   * at most JOURNAL_PART_BYTES (keyed by their byte offset: `part`). The first part of another
   * attempt (or step) drops every part stored before, so parts of two attempts never mix.
   */
  writePreparedPart(seq: number, attempt: string, at: number, bytes: Uint8Array): void {
    this.#preparedAttempt(seq, attempt);
    for (let off = 0; off < bytes.length; off += JOURNAL_PART_BYTES) {
      this.#sql.exec('INSERT OR REPLACE INTO prepared (seq, part, bytes) VALUES (?, ?, ?)', seq, at + off, bytes.subarray(off, Math.min(bytes.length, off + JOURNAL_PART_BYTES)));
    }
  }

  /** The first write of another attempt (or step) drops everything prepared before. */
  #preparedAttempt(seq: number, attempt: string): void {
    if (this.preparedAttempt(seq) === attempt) return;
    this.#sql.exec('DELETE FROM prepared');
    this.#sql.exec('DELETE FROM prepared_rows');
    this.#sql.exec('INSERT INTO prepared (seq, part, bytes) VALUES (?, -1, ?)', seq, new TextEncoder().encode(attempt));
  }

  /** Stores piece `piece`'s sparse gradient of prepared step `seq` (an encoded blob), replacing any stored before. */
  writePreparedRows(seq: number, attempt: string, piece: number, blob: Uint8Array): void {
    this.#preparedAttempt(seq, attempt);
    this.#sql.exec('DELETE FROM prepared_rows WHERE seq = ? AND piece = ?', seq, piece);
    for (let off = 0, part = 0; off < blob.length || part === 0; off += JOURNAL_PART_BYTES, part++) {
      this.#sql.exec('INSERT INTO prepared_rows (seq, piece, part, bytes) VALUES (?, ?, ?, ?)', seq, piece, part, blob.slice(off, Math.min(blob.length, off + JOURNAL_PART_BYTES)));
    }
  }

  /** The sparse gradients of prepared step `seq`, by piece (encoded blobs). */
  readPreparedRows(seq: number): Map<number, Uint8Array> {
    const parts = new Map<number, Uint8Array[]>();
    for (const row of this.#sql.exec<{ piece: number; bytes: ArrayBuffer }>('SELECT piece, bytes FROM prepared_rows WHERE seq = ? ORDER BY piece, part', seq)) {
      parts.set(row.piece, [...(parts.get(row.piece) ?? []), new Uint8Array(row.bytes)]);
    }
    return new Map([...parts].map(([piece, list]) => [piece, concatBytes(list)]));
  }

  /** Reads prepared step `seq` into `grads`: the bytes read (its dense parts), or -1 when no attempt of it is stored. */
  readPrepared(seq: number, grads: FloatArray): number {
    if (this.preparedAttempt(seq) === null) return -1;
    const out = bytesOf(grads);
    let bytes = 0;
    for (const row of this.#sql.exec<{ part: number; bytes: ArrayBuffer }>('SELECT part, bytes FROM prepared WHERE seq = ? AND part >= 0', seq)) {
      const piece = new Uint8Array(row.bytes);
      out.set(piece, row.part);
      bytes += piece.length;
    }
    return bytes;
  }

  /** The attempt whose checkpoint file is staged, or null. */
  stagedAttempt(): string | null {
    const row = this.#sql.exec<{ bytes: ArrayBuffer }>('SELECT bytes FROM staged WHERE part = -1').toArray()[0];
    return row ? new TextDecoder().decode(row.bytes) : null;
  }

  /** Stages bytes of attempt `attempt`'s checkpoint file at byte offset `at` (another attempt's go first). */
  writeStagedPart(attempt: string, at: number, bytes: Uint8Array): void {
    if (this.stagedAttempt() !== attempt) {
      this.#sql.exec('DELETE FROM staged');
      this.#sql.exec('INSERT INTO staged (part, bytes) VALUES (-1, ?)', new TextEncoder().encode(attempt));
    }
    for (let off = 0; off < bytes.length; off += JOURNAL_PART_BYTES) {
      this.#sql.exec('INSERT OR REPLACE INTO staged (part, bytes) VALUES (?, ?)', at + off, bytes.subarray(off, Math.min(bytes.length, off + JOURNAL_PART_BYTES)));
    }
  }

  /** The staged file as a pull source: its rows in byte order, one at a time. */
  stagedSource(): () => Promise<Uint8Array | null> {
    let after = -1;
    return async () => {
      const row = this.#sql.exec<{ part: number; bytes: ArrayBuffer }>('SELECT part, bytes FROM staged WHERE part > ? ORDER BY part LIMIT 1', after).toArray()[0];
      if (!row) return null;
      after = row.part;
      return new Uint8Array(row.bytes);
    };
  }

  dropStaged(): void {
    this.#sql.exec('DELETE FROM staged');
  }

  dropPrepared(): void {
    this.#sql.exec('DELETE FROM prepared');
    this.#sql.exec('DELETE FROM prepared_rows');
  }

  forgetKeys(): void {
    this.#sql.exec('DELETE FROM idempotency');
  }

  /** Wipes every table (and any alarm) atomically. */
  deleteAll(): Promise<void> {
    return this.#storage.deleteAll();
  }
}

/** `list` joined into one array. */
function concatBytes(list: readonly Uint8Array[]): Uint8Array {
  if (list.length === 1) return list[0]!;
  const out = new Uint8Array(list.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of list) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}
