// A sharded hosted optimizer (docs/scale-out.md): the object named by the optimizer's id is the
// coordinator; it holds metadata, schedule, history and idempotency keys, and no tensor. Its
// tensors live in N shard objects, each an ordinary hosted optimizer of the same kind over a
// contiguous element range of the layout (src/tensors/placement.ts), reachable only with a secret
// token hash the coordinator keeps. A step is two-phase:
//   prepare: the coordinator reads the body in layout order, checks and hashes it, folds the
//            gradient norm (clip_grad_norm_) across pieces exactly as torch's reduction order, and
//            hands each shard its slice, which the shard stores durably without applying it;
//   apply:   every shard applies its slice in memory (a non-finite result anywhere: every shard
//            drops it, nothing changed); the coordinator stores its decision (the commit point),
//            then every shard stores its step, re-applying from its prepared slice if it restarted.
// A decision some shard has not confirmed is completed by the coordinator's next call.

import type { Dtype, FloatArray, Hyperparams, OptimizerDef } from '../optim/optimizer.ts';
import { norm2, normFoldEnd, normFoldPiece, normFoldStart, type NormFold } from '../optim/clip.ts';
import { coalesce, type SparseRows } from '../optim/sparse.ts';
import { place, PlacementError, type PlacedTensor } from '../tensors/placement.ts';
import { layoutOfNamed, namedLeaves } from '../tensors/names.ts';
import { leaves, pathOfIndex, type TensorLayout } from '../tensors/tree.ts';
import { WIRE_DTYPES, firstNonFiniteIn, type WireDtype } from '../wire/dtypes.ts';
import { WireError, encodeHeader, headerLength, parseHeader } from '../wire/safetensors.ts';
import { ByteReader, paceDeadline, type ByteSource } from '../wire/stream.ts';
import { checkEntry, placementSink } from './decode.ts';
import { SPARSE_VALUES, checkRowsPlan, fileRows, isIndicesName, planFileRows, rowsBudget, type FileRows } from './sparse-grads.ts';
import type { HostedOptimizer } from './hosted-optimizer.ts';
import type { CreateArgs, Outcome } from './protocol.ts';
import { MAX_TTL_SECONDS } from '../lib/config.ts';
import { hex } from '../lib/digest.ts';
import { rangesOf } from './tree-state.ts';
import type { ParamGroup } from '../lib/param-groups.ts';
import { ProblemError, formatPath, type ProblemData } from '../lib/problem.ts';

/**
 * Test hooks, never set in production: called at those points of a coordinator's step, where a
 * throw is a crash (nothing after it runs: no abort, no commit).
 */
export const SHARD_FAULTS: { beforeDecision?: (() => void) | undefined; afterDecision?: (() => void) | undefined; afterRestoreDecision?: (() => void) | undefined } = {};

/** Most shards one optimizer spreads over (each step makes about three calls per shard). */
export const MAX_SHARDS = 256;

/** Part of one tensor on one shard: elements [from, to) of the flattened tensor `tensor` (layout order). */
export interface StoredPiece {
  tensor: number;
  from: number;
  to: number;
}

/** What the coordinator stores about its shards (in its metadata row). */
export interface ShardsRecord {
  /** The token hash each shard was created with: only the coordinator opens them. */
  secret: string;
  /** Most elements one shard holds (the per-object limit when created). */
  capacity: number;
  /** Each shard's element range [start, end) of the layout and its pieces, in layout order. */
  placement: Array<{ start: number; end: number; pieces: StoredPiece[] }>;
  /** With param_groups: for each shard, the coordinator's indices (1-based) of the groups its pieces are in, in the shard's group order. */
  groups?: number[][];
  /** A decided step some shard may not have stored yet: completed by the next call. */
  pending?: ShardDecision | null;
  /** A decided restore some shard may not have stored yet: each shard's staged file (its attempt and byte length). */
  restoring?: { attempt: string; lengths: number[] } | null;
  /** A decided PATCH of the groups or of the slots kept that some shard may not have applied yet. */
  regroup?: boolean;
  /** A step being received in parts (./shards.ts StepAssembly). */
  assembling?: StepAssembly | null;
  /**
   * Shard objects that may exist, when more than the placement's: those a restore of another
   * layout created before its commit, or left beyond a smaller placement. DELETE removes them all;
   * the next settle removes those beyond the placement.
   */
  objects?: number;
}

/** The coordinator's decision for step `seq`: what every shard applies. */
export interface ShardDecision {
  seq: number;
  /** Each group's hyperparameters with lr resolved (index 0: the top-level set; g: param_groups[g - 1]). */
  groupHp: Hyperparams[];
  /** clip_grad_norm_'s coefficient (null: no clipping by norm). */
  coef: number | null;
  clipValue: number | null;
  /** Tensors (layout order) whose gradient is None this step (torch skips them); absent: none. */
  frozen?: number[];
  /** Tensors (layout order) whose gradient is sparse rows this step: each shard steps its pieces of them by its rows; absent: none. */
  sparse?: number[];
  /** The step's gradient is this complete set of contributions, reduced by each shard (a restarted shard reduces it again). */
  accumulate?: ShardReduce;
}

/** What shard `i` applies: the decision with its own groups, and which of its pieces are frozen. */
export type ShardStepArgs = Omit<ShardDecision, 'frozen' | 'sparse'> & { frozen?: boolean[]; sparse?: boolean[] };

type Stub = DurableObjectStub<HostedOptimizer>;

/** The stub of shard `i` of optimizer `id`: named, so no object id needs storing. */
export function shardStub(env: Env, id: string, i: number): Stub {
  const ns = env.HOSTED_OPTIMIZER;
  return ns.get(ns.idFromName(`${id}/shard/${i}`)) as Stub;
}

/** An RPC answer's value, or its problem thrown. */
export function unwrapOutcome<T>(o: Outcome<T>): T {
  if (!o.ok) throw ProblemError.fromData(o.problem);
  return o.value;
}

/** A checkpoint entry's slot and tensor name: `<slot>/<name>`, or `<slot>` alone for a single unnamed tensor (a model sent as one bare array). */
function entryParts(entry: string): { slot: string; name: string } {
  const cut = entry.indexOf('/');
  return cut < 0 ? { slot: entry, name: '' } : { slot: entry.slice(0, cut), name: entry.slice(cut + 1) };
}

/** A shard's answer, awaited, or its problem thrown. */
const value = async <T>(p: Promise<Outcome<T>>): Promise<T> => unwrapOutcome(await p);

/**
 * The placement of `layout` over shards of at most `capacity` elements: exactly `shards` of them
 * when given, else the fewest. 413 when none exists (a row larger than a shard, too many shards).
 */
export function planShards(layout: TensorLayout, capacity: number, shards: number | undefined, wholeTensors: boolean, field: string): ShardsRecord['placement'] {
  const tensors: PlacedTensor[] = leaves(layout).map((l) => ({ name: l.path.join('.'), shape: l.shape, offset: l.offset, size: l.size }));
  let placed;
  try {
    placed = place(tensors, { capacity, ...(shards === undefined ? {} : { shards }), wholeTensors });
  } catch (e) {
    if (e instanceof PlacementError) throw new ProblemError(413, 'payload-too-large', `${field}: ${e.message}`);
    throw e;
  }
  if (placed.length > MAX_SHARDS) throw new ProblemError(413, 'payload-too-large', `${field}: the model needs ${placed.length} shards; one optimizer spreads over at most ${MAX_SHARDS}`);
  return placed.map((s) => ({ start: s.start, end: s.end, pieces: s.pieces.map((p) => ({ tensor: p.tensor, from: p.from, to: p.to })) }));
}

/** A piece's name in its shard: tensor index and first element. */
export const pieceName = (p: StoredPiece) => `t${p.tensor}_${p.from}`;

/**
 * A shard's problem about its checkpoint file told in the client's names: `<slot>/t<T>_<F>` becomes
 * `<slot>/<tensor T's name>`, and an element index k of that piece F + k (fields, pointers, detail
 * and messages).
 */
export function clientNamedProblem(problem: ProblemData, names: readonly string[]): ProblemData {
  let shift = 0;
  const inField = (text: string) =>
    text.replace(/\["([^"/]+)\/t(\d+)_(\d+)"\](?:\[(\d+)\])?/g, (all, slot: string, t: string, from: string, k?: string) => {
      const name = names[Number(t)];
      if (name === undefined) return all;
      if (k !== undefined) shift = Number(from);
      // A single unnamed tensor's entry is the slot alone (`exp_avg_sq`), as one object names it.
      const alone = formatPath([slot]);
      const entry = name !== '' ? `[${JSON.stringify(`${slot}/${name}`)}]` : alone.startsWith('[') ? alone : `.${alone}`;
      return `${entry}${k === undefined ? '' : `[${Number(from) + Number(k)}]`}`;
    });
  const inPointer = (text: string) =>
    text.replace(/\/([^/]+)~1t(\d+)_(\d+)(?:\/(\d+))?/g, (all, slot: string, t: string, from: string, k?: string) => {
      const name = names[Number(t)];
      if (name === undefined) return all;
      return `/${slot}${name === '' ? '' : `~1${name.replace(/~/g, '~0').replace(/\//g, '~1')}`}${k === undefined ? '' : `/${Number(from) + Number(k)}`}`;
    });
  const element = (text: string) => (shift === 0 ? text : text.replace(/\belement (\d+)\b/g, (_all, k: string) => `element ${shift + Number(k)}`));
  const errors = problem.errors?.map((e) => {
    shift = 0;
    const field = inField(e.field);
    return { ...e, field, ...(e.pointer === undefined ? {} : { pointer: inPointer(e.pointer) }), message: element(e.message) };
  });
  shift = 0;
  const detail = inField(problem.detail);
  return { ...problem, detail: element(detail), ...(errors ? { errors } : {}) };
}

/** For each shard, the groups (coordinator indices, 1-based) its pieces are in, in order. */
export function groupsPresent(placement: ShardsRecord['placement'], groupOf: readonly number[]): number[][] {
  return placement.map((shard) => [...new Set(shard.pieces.map((p) => groupOf[p.tensor]!).filter((g) => g > 0))].sort((a, b) => a - b));
}

/** Shard `i`'s own param_groups: each group its pieces are in, over their piece names. */
export function shardGroups(placement: ShardsRecord['placement'], i: number, present: readonly number[][], groups: readonly ParamGroup[], groupOf: readonly number[]): ParamGroup[] {
  return (present[i] ?? []).map((g) => ({ ...groups[g - 1]!, params: placement[i]!.pieces.filter((p) => groupOf[p.tensor] === g).map((p) => pieceName(p)) }));
}

/** Shard `i`'s share of a decision: the top-level set and the groups its pieces are in, in its own group order; its frozen pieces. */
function forShard(record: ShardsRecord, i: number, d: ShardDecision): ShardStepArgs {
  const present = record.groups?.[i];
  const { frozen, sparse, ...rest } = d;
  const flags = (tensors: number[] | undefined) => (tensors && tensors.length > 0 ? record.placement[i]!.pieces.map((p) => tensors.includes(p.tensor)) : undefined);
  const [f, s] = [flags(frozen), flags(sparse)];
  return { ...rest, groupHp: present ? [d.groupHp[0]!, ...present.map((g) => d.groupHp[g]!)] : [d.groupHp[0]!], ...(f ? { frozen: f } : {}), ...(s ? { sparse: s } : {}) };
}

/** Shard `i`'s own layout: one tensor per piece, named by tensor index and first element (errors never show them). */
export function shardLayout(layout: TensorLayout, shard: ShardsRecord['placement'][number]): TensorLayout {
  const all = leaves(layout);
  return layoutOfNamed(shard.pieces.map((p) => ({ name: pieceName(p), shape: pieceShape(all[p.tensor]!, p) })));
}

/** A piece's shape: its tensor's when whole, else its rows of the first dimension (a vector's elements). */
function pieceShape(tensor: { shape: readonly number[]; size: number }, p: StoredPiece): number[] {
  const { shape, size } = tensor;
  if (p.from === 0 && p.to === size) return [...shape];
  return shape.length >= 2 ? [(p.to - p.from) / (size / shape[0]!), ...shape.slice(1)] : [p.to - p.from];
}

/** The gradient as it comes: JSON values already in layout order, or a binary body read as it streams. */
export type GradientSlices =
  /** JSON: the layout's values, a frozen tensor's (null) part ignored, and so is the part of a tensor given as rows (`rows`). */
  | { kind: 'values'; values: FloatArray; frozen: readonly boolean[]; rows?: ReadonlyArray<SparseRows | null> }
  | { kind: 'raw'; body: ByteSource; length: number | null; src: WireDtype; nonFiniteHint: string }
  | { kind: 'safetensors'; body: ByteSource; length: number | null; nonFiniteHint: string };

/** What the prepare phase learnt about the whole gradient. */
export interface Prepared {
  /** Global index of the first NaN or ±Infinity (nonfinite: skip), or -1. */
  nonFinite: number;
  /** Per-tensor 2-norms in layout order (clip_grad_norm_; a frozen tensor's is 0 and counts in no norm), or null. */
  norms: number[] | null;
  /** Tensors whose gradient is None (a JSON null, a tensor left out of a file): torch skips them. */
  frozen: boolean[];
  /** Tensors whose gradient is sparse rows (each shard was sent its pieces' rows). */
  sparse: boolean[];
  /**
   * SHA-256 over the dtype, size, loss, which tensors are frozen or sparse, and each tensor's own
   * SHA-256 (a sparse one's over its rows, then its values) in layout order: the same whatever the
   * format and the order a safetensors file holds the tensors in (Idempotency-Key reuse); a retry
   * freezing other tensors is another step.
   */
  fingerprint: string;
}


/** Elements decoded per read of a binary body (1 MiB of float32). */
const READ_ELEMENTS = 1 << 18;
/** Bytes gathered for one shard before they are sent (one prepare call). */
const PART_BYTES = 4 << 20;
/** Bytes gathered for all shards together before everything gathered is sent (a file's tensors may come in any order). */
const GATHERED_BYTES = 16 << 20;
/** Prepare calls in flight at once. */
const IN_FLIGHT = 4;

/**
 * Bytes for each shard, gathered into runs by byte offset (contiguous pieces joined) and handed on
 * with one call per shard: when it has PART_BYTES, when all shards together hold GATHERED_BYTES
 * (a file's tensors may come in any order), and at the end; at most IN_FLIGHT calls at once.
 */
class PartGatherer {
  readonly #runs: Array<Array<{ at: number; pieces: Uint8Array[]; bytes: number }>>;
  readonly #bytes: number[];
  #total = 0;
  readonly #inFlight: Array<Promise<unknown>> = [];
  readonly #call: (shard: number, parts: Array<{ at: number; bytes: Uint8Array }>) => Promise<unknown>;

  constructor(shards: number, call: (shard: number, parts: Array<{ at: number; bytes: Uint8Array }>) => Promise<unknown>) {
    this.#runs = Array.from({ length: shards }, () => []);
    this.#bytes = new Array<number>(shards).fill(0);
    this.#call = call;
  }

  /** `bytes` for shard `shard` at byte offset `at` (the caller's array: not kept beyond this call's pieces). */
  async add(shard: number, at: number, bytes: Uint8Array): Promise<void> {
    const runs = this.#runs[shard]!;
    const last = runs[runs.length - 1];
    const run = last && last.at + last.bytes === at ? last : (runs[runs.length] = { at, pieces: [], bytes: 0 });
    run.pieces.push(bytes);
    run.bytes += bytes.length;
    this.#bytes[shard]! += bytes.length;
    this.#total += bytes.length;
    if (this.#bytes[shard]! >= PART_BYTES) await this.#send(shard);
    if (this.#total > GATHERED_BYTES) for (let i = 0; i < this.#runs.length; i++) await this.#send(i);
  }

  async #send(shard: number): Promise<void> {
    const runs = this.#runs[shard]!;
    if (runs.length === 0) return;
    this.#runs[shard] = [];
    this.#total -= this.#bytes[shard]!;
    this.#bytes[shard] = 0;
    const parts = runs.map((run) => {
      const bytes = new Uint8Array(run.bytes);
      let at = 0;
      for (const p of run.pieces) {
        bytes.set(p, at);
        at += p.length;
      }
      return { at: run.at, bytes };
    });
    while (this.#inFlight.length >= IN_FLIGHT) await this.#inFlight.shift();
    this.#inFlight.push(this.#call(shard, parts));
  }

  /** Sends what is gathered and waits for every call. */
  async flush(): Promise<void> {
    for (let i = 0; i < this.#runs.length; i++) await this.#send(i);
    await Promise.all(this.#inFlight);
  }

  /** Waits for the calls under way, whatever they answer (before an abort). */
  async settle(): Promise<void> {
    await Promise.allSettled(this.#inFlight);
  }
}

/**
 * Phase 1 of step `seq`: reads the gradient, checks each element, folds each tensor's norm and
 * hash in its element order, and hands each shard its elements in parts as they come (never the
 * whole gradient in memory). NaN and ±Infinity are a 422 naming the element unless `allowNonFinite`.
 */
export async function prepareShards(args: {
  env: Env;
  id: string;
  record: ShardsRecord;
  layout: TensorLayout;
  dtype: Dtype;
  size: number;
  seq: number;
  grads: GradientSlices;
  allowNonFinite: boolean;
  norms: boolean;
  loss: number | undefined;
  /** False: read, check and hash only (a retried Idempotency-Key); the shards receive nothing. */
  send: boolean;
  /** Whether to compute the fingerprint (only a step with an Idempotency-Key needs one; else it is ''). */
  hash: boolean;
  /** A contribution to an accumulated step (./accumulate.ts): each shard stores the slice as worker `worker`'s, for a later reduce. */
  contribution?: { worker: number } | undefined;
  /** The optimizer (whether it takes sparse rows, and only them). */
  def: OptimizerDef<any>;
  /** What torch refuses with sparse gradients (or, SparseAdam, without them): throws a 422 before any row is sent. */
  checkSparse: (rows: ReadonlyArray<SparseRows | null>, frozen: readonly boolean[], format: 'json' | 'raw' | 'safetensors') => void;
  /** A step in parts (raw only): this request's elements start at layout element `part.offset`, continuing `part`'s folds. */
  part?: StepAssembly | undefined;
}): Promise<Prepared & { part?: StepAssembly }> {
  const { env, id, record, layout, dtype, size, seq, grads } = args;
  const tensors = leaves(layout);
  const item = dtype === 'float32' ? 4 : 8;
  const folds: Array<NormFold | null> = tensors.map(() => null);
  const norms: number[] | null = args.norms ? tensors.map(() => 0) : null;
  const hashes: Array<{ writer: WritableStreamDefaultWriter<Uint8Array>; digest: Promise<ArrayBuffer> } | null> = tensors.map(() => null);
  const part = args.part;
  let nonFinite = part?.nonFinite ?? -1;
  let nonFiniteError = part?.nonFiniteError;
  let frozen: boolean[] = grads.kind === 'values' ? [...grads.frozen] : tensors.map(() => false);
  // Parts of this attempt replace whatever a failed attempt at the same step left on a shard (a step in parts keeps one attempt).
  const attempt = part?.attempt ?? newShardSecret().slice(0, 32);
  if (part && norms) {
    part.norms.forEach((n, t) => (norms[t] = Number(n)));
    for (const [t, f] of Object.entries(part.folds)) folds[Number(t)] = { at: f.at, lanes: f.lanes.map(Number), tail: f.tail.map(Number) };
  }
  const partHash = part ? new crypto.DigestStream('SHA-256') : null;
  const partWriter = partHash?.getWriter() ?? null;
  const contribution = args.contribution;
  const parts = new PartGatherer(record.placement.length, (i, gathered) => {
    const slices = gathered.map((p) => ({ at: p.at / item, grads: p.bytes }));
    const stub = shardStub(env, id, i);
    return value(contribution ? stub.shardContribute(record.secret, { worker: contribution.worker, attempt, parts: slices }) : stub.shardPrepare(record.secret, { seq, attempt, parts: slices }));
  });
  const hashPiece = async (t: number, last: boolean, bytes: Uint8Array) => {
    if (!hashes[t]) {
      const stream = new crypto.DigestStream('SHA-256');
      hashes[t] = { writer: stream.getWriter(), digest: stream.digest };
    }
    for (let at = 0; at < bytes.length; at += 1 << 20) await hashes[t]!.writer.write(bytes.slice(at, at + (1 << 20)));
    if (last) await hashes[t]!.writer.close();
  };
  /** Elements [from, from + values.length) of tensor `t`, in the tensor's order; `where` names element k of it for errors. */
  const push = async (t: number, from: number, values: FloatArray, where: (k: number) => Array<string | number>, hint: string) => {
    const tensor = tensors[t]!;
    const bad = firstNonFiniteIn(values);
    if (bad >= 0 && nonFinite < 0) {
      // The element as its field names it (a raw body's index in the whole layout, as one object says).
      const path = where(from + bad);
      const at = path[path.length - 1];
      const message = `element ${typeof at === 'number' ? at : from + bad} is ${values[bad]}: every value must be finite${hint}`;
      if (!args.allowNonFinite) throw new WireError(422, path, message);
      nonFinite = tensor.offset + from + bad;
      if (part) nonFiniteError = { where: path, message };
    }
    if (norms) {
      folds[t] = normFoldPiece(dtype, folds[t] ?? normFoldStart(dtype), values, from, tensor.size);
      if (from + values.length === tensor.size) norms[t] = normFoldEnd(dtype, folds[t]!, tensor.size);
    }
    const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    if (partWriter) await partWriter.write(bytes.slice());
    if (args.hash) await hashPiece(t, from + values.length === tensor.size, bytes);
    if (!args.send) return;
    // To each shard holding part of [a, b), at its byte offset in that shard.
    const a = tensor.offset + from;
    const b = a + values.length;
    for (let i = 0; i < record.placement.length; i++) {
      const shard = record.placement[i]!;
      const lo = Math.max(a, shard.start);
      const hi = Math.min(b, shard.end);
      if (lo < hi) await parts.add(i, (lo - shard.start) * item, bytes.slice((lo - a) * item, (hi - a) * item));
    }
  };
  const sparse = tensors.map(() => false);
  /**
   * A tensor's sparse gradient: checked, its norm that of its coalesced values (torch.norm of a
   * sparse gradient), hashed, and each piece's rows (rebased to the piece's first row) sent to its
   * shard with the prepare's parts; a piece its rows miss is sent none, and steps on no rows.
   */
  const pushRows = async (t: number, g: SparseRows, where: (k: number) => Array<string | number>) => {
    if (contribution) throw new WireError(422, where(0).slice(0, -1), 'is sparse (rows): a contribution to an accumulated step carries a dense gradient of every tensor');
    sparse[t] = true;
    const bad = firstNonFiniteIn(g.values);
    if (bad >= 0 && nonFinite < 0) {
      const hint = grads.kind === 'safetensors' ? grads.nonFiniteHint : '';
      if (!args.allowNonFinite) throw new WireError(422, where(bad), `element ${bad} is ${g.values[bad]}: every value must be finite${hint}`);
      nonFinite = tensors[t]!.offset + g.rows[Math.floor(bad / g.rowSize)]! * g.rowSize + (bad % g.rowSize);
    }
    if (norms) norms[t] = norm2(dtype, coalesce(dtype, g).values);
    if (args.hash) {
      await hashPiece(t, false, new Uint8Array(g.rows.buffer, g.rows.byteOffset, g.rows.byteLength));
      await hashPiece(t, true, new Uint8Array(g.values.buffer, g.values.byteOffset, g.values.byteLength));
    }
    if (!args.send) return;
    const whole = { rows: g.rows.length, unique: new Set(g.rows).size };
    // The tensor's pieces in row order, and each row (in the order sent) bucketed into its piece once.
    const owners = record.placement.flatMap((shard, i) => shard.pieces.flatMap((p, k) => (p.tensor === t ? [{ i, k, lo: p.from / g.rowSize, picked: [] as number[] }] : [])));
    for (let j = 0; j < g.rows.length; j++) {
      let [a, b] = [0, owners.length - 1];
      while (a < b) {
        const mid = (a + b + 1) >> 1;
        if (owners[mid]!.lo <= g.rows[j]!) a = mid;
        else b = mid - 1;
      }
      owners[a]!.picked.push(j);
    }
    for (const o of owners) {
      rowsFor[o.i]!.push({ piece: o.k, blob: encodeRows(o.picked.map((j) => g.rows[j]! - o.lo), o.picked.map((j) => g.values.subarray(j * g.rowSize, (j + 1) * g.rowSize)), whole, dtype) });
    }
  };
  const rowsFor: Array<Array<{ piece: number; blob: Uint8Array }>> = record.placement.map(() => []);
  const alloc = (n: number) => (dtype === 'float32' ? new Float32Array(n) : new Float64Array(n));
  let reader: ByteReader | null = null;
  try {
    if (grads.kind === 'values') {
      if (grads.rows?.some((r) => r !== null) || args.def.sparse === 'only') args.checkSparse(grads.rows ?? tensors.map(() => null), frozen, 'json');
      for (let t = 0; t < tensors.length; t++) {
        const { offset, size: n } = tensors[t]!;
        const rows = grads.rows?.[t];
        if (rows && !frozen[t]) await pushRows(t, rows, (k) => ['grads', ...leaves(layout)[t]!.path, 'values', k]);
        else if (n > 0 && !frozen[t]) await push(t, 0, grads.values.subarray(offset, offset + n), (k) => ['grads', ...pathOfIndex(layout, offset + k)], '');
      }
    } else if (grads.kind === 'raw' && part) {
      if (args.def.sparse === 'only') args.checkSparse(tensors.map(() => null), frozen, 'raw');
      // Elements [part.offset, part.offset + n) of the layout: each tensor's share, its norm folded on from where the last part left it.
      const item = WIRE_DTYPES[grads.src].bytes;
      if (grads.length === null) throw new WireError(422, ['Content-Length'], 'is required for a part of a step (its element count)');
      const n = grads.length / item;
      if (!Number.isInteger(n) || n === 0 || part.offset + n > size) {
        throw new WireError(422, ['body'], `the body has ${grads.length} bytes: a part holds a whole number (at least 1) of ${WIRE_DTYPES[grads.src].name} elements, at most the ${size - part.offset} from element ${part.offset} to the end`, grads.length);
      }
      reader = new ByteReader(grads.body, true);
      const end = part.offset + n;
      for (let t = 0; t < tensors.length; t++) {
        const { offset, size: total } = tensors[t]!;
        const a = Math.max(part.offset, offset) - offset;
        const b = Math.min(end, offset + total) - offset;
        for (let from = a; from < b; from += READ_ELEMENTS) {
          const count = Math.min(READ_ELEMENTS, b - from);
          const values = alloc(count);
          await reader.read(count * item, placementSink(grads.src, { out: values, offset: 0, count, path: ['grads'] }, count));
          await push(t, from, values, (k) => ['grads', offset + k], grads.nonFiniteHint);
        }
      }
      await reader.expectEnd();
      part.received = end;
    } else if (grads.kind === 'raw') {
      if (args.def.sparse === 'only') args.checkSparse(tensors.map(() => null), frozen, 'raw');
      const want = size * WIRE_DTYPES[grads.src].bytes;
      if (grads.length !== null && grads.length !== want) {
        throw new WireError(422, ['body'], `the body has ${grads.length} bytes; ${size} ${WIRE_DTYPES[grads.src].name} elements are ${want} bytes`, grads.length);
      }
      reader = new ByteReader(grads.body, true);
      for (let t = 0; t < tensors.length; t++) {
        const { offset, size: n } = tensors[t]!;
        for (let from = 0; from < n; from += READ_ELEMENTS) {
          const count = Math.min(READ_ELEMENTS, n - from);
          const values = alloc(count);
          await reader.read(count * WIRE_DTYPES[grads.src].bytes, placementSink(grads.src, { out: values, offset: 0, count, path: ['grads'] }, count));
          await push(t, from, values, (k) => ['grads', offset + k], grads.nonFiniteHint);
        }
      }
      await reader.expectEnd();
    } else {
      reader = new ByteReader(grads.body, true);
      const length = grads.length;
      if (length !== null && length < 8) throw new WireError(422, ['safetensors'], `a safetensors body has at least 8 bytes, got ${length}`);
      const n = headerLength(await reader.readExactly(8), length);
      const leafIndex = new Map(namedLeaves(layout).map((l) => [l.name, l]));
      const header = parseHeader(await reader.readExactly(n), length === null ? null : length - 8 - n, { indices: isIndicesName(leafIndex) });
      const index = new Map(namedLeaves(layout).map((l, t) => [l.name, t]));
      // grads.values/<name> (with grads.indices/<name>): a sparse gradient's rows, read aside (at most rowsBudget bytes).
      // The budget of one object holding the model (or all of it): the coordinator holds the rows, and
      // each piece's go to its shard in one call (well under an RPC value's 32 MiB).
      const rowsPlan: FileRows = { byValues: new Map(), budget: rowsBudget(Math.min(size, record.capacity), dtype) };
      const plan = header.entries.map((e) => {
        const rowsPlace = planFileRows(args.def, header, leafIndex, dtype, rowsPlan, e);
        if (rowsPlace) return { e, t: -1, rowsPlace };
        const t = index.get(e.name);
        if (t === undefined) throw new WireError(422, ['grads', e.name], `no tensor named "${e.name}" in this optimizer`, e.name);
        checkEntry(e, namedLeaves(layout)[t]!, dtype, ['grads', e.name]);
        return { e, t, rowsPlace: null };
      });
      // As one object: a file of no tensor at all is more likely a mistake than a step freezing every tensor (JSON nulls say that).
      if (header.entries.length === 0) throw new WireError(422, ['safetensors'], 'the file holds no gradient: send at least one (a frozen tensor\'s may be left out; to freeze every tensor, send JSON nulls)');
      checkRowsPlan(header, rowsPlan);
      // A tensor left out is frozen (torch skips a parameter whose .grad is None).
      const sent = new Set(header.entries.map((e) => rowsPlan.byValues.get(e.name)?.name ?? e.name));
      frozen = namedLeaves(layout).map((l) => !sent.has(l.name));
      // Dense tensors, row values and row indices, in data order.
      const indexBytes = new Map<string, Uint8Array>();
      const order = [...plan.map((p) => ({ start: p.e.start, p, ix: null })), ...header.indexEntries.map((ix) => ({ start: ix.start, p: null, ix }))].sort((a, b) => a.start - b.start);
      for (const { p, ix } of order) {
        if (ix) {
          const bytes = new Uint8Array(ix.end - ix.start);
          await reader.read(bytes.length, (piece, at) => bytes.set(piece, at));
          indexBytes.set(ix.name, bytes);
          continue;
        }
        const { e, t, rowsPlace } = p!;
        if (rowsPlace) {
          await reader.read(e.end - e.start, placementSink(e.dtype, rowsPlace, rowsPlace.count));
          continue;
        }
        const total = tensors[t]!.size;
        for (let from = 0; from < total; from += READ_ELEMENTS) {
          const count = Math.min(READ_ELEMENTS, total - from);
          const values = alloc(count);
          await reader.read(count * WIRE_DTYPES[e.dtype].bytes, placementSink(e.dtype, { out: values, offset: 0, count, path: ['grads', e.name] }, count));
          await push(t, from, values, (k) => ['grads', e.name, k], grads.nonFiniteHint);
        }
      }
      await reader.expectEnd();
      const rows = fileRows(rowsPlan, indexBytes, tensors.length);
      // A non-finite row value is refused before what torch refuses of the rows, as one object reads them (values first).
      const rowsAt = (t: number) => ['safetensors', `${SPARSE_VALUES}/${namedLeaves(layout)[t]!.name}`];
      if (!args.allowNonFinite) {
        for (const [t, r] of rows.entries()) {
          const bad = r && !frozen[t] ? firstNonFiniteIn(r.values) : -1;
          if (bad >= 0) throw new WireError(422, [...rowsAt(t), bad], `element ${bad} is ${r!.values[bad]}: every value must be finite${grads.nonFiniteHint}`);
        }
      }
      if (rows.some((r) => r !== null) || args.def.sparse === 'only') args.checkSparse(rows, frozen, 'safetensors');
      for (const [t, r] of rows.entries()) if (r && !frozen[t]) await pushRows(t, r, (k) => [...rowsAt(t), k]);
    }
    await parts.flush();
    // Each shard's rows, one call per piece (a piece's rows are at most the step's rows budget).
    await Promise.all(
      rowsFor.map(async (list, i) => {
        for (const r of list) await value(shardStub(env, id, i).shardPrepare(record.secret, { seq, attempt, parts: [], rows: [r] }));
      }),
    );
  } catch (e) {
    await parts.settle();
    // (A contribution's parts need no abort: they count only once the coordinator holds its row, and the worker's next attempt replaces them.)
    if (args.send && !contribution) await abortShards(env, id, record, seq);
    throw e;
  } finally {
    await reader?.cancel();
  }
  if (part) {
    // What the next part continues from: the folds of tensors begun, not ended; the norms of those ended.
    await partWriter!.close();
    const digest = hex(await partHash!.digest);
    // As text: JSON would write an overflowed (Infinity) or NaN lane as null.
    const open: StepAssembly['folds'] = {};
    if (norms) folds.forEach((f, t) => f && f.at < tensors[t]!.size && (open[t] = { at: f.at, lanes: f.lanes.map(String), tail: f.tail.map(String) }));
    const next: StepAssembly = { ...part, nonFinite, ...(nonFiniteError ? { nonFiniteError } : {}), norms: (norms ?? []).map(String), folds: open, digests: [...part.digests, digest], offsets: [...part.offsets, part.offset] };
    return { nonFinite, norms, frozen, sparse, fingerprint: '', part: next };
  }
  if (!args.hash) return { nonFinite, norms, frozen, sparse, fingerprint: '' };
  // Tensors of no element (and frozen ones): norm 0 and the hash of nothing.
  const marks = `${frozen.some(Boolean) ? `${JSON.stringify(rangesOf(frozen))}:` : ''}${sparse.some(Boolean) ? `rows${JSON.stringify(rangesOf(sparse))}:` : ''}`;
  const head = new TextEncoder().encode(`${dtype}:${size}:${args.loss ?? ''}:${marks}`);
  const digests = await Promise.all(tensors.map(async (_, t) => new Uint8Array(hashes[t] ? await hashes[t]!.digest : await crypto.subtle.digest('SHA-256', new Uint8Array(0)))));
  const all = new Uint8Array(head.length + 32 * digests.length);
  all.set(head);
  digests.forEach((d, t) => all.set(d, head.length + 32 * t));
  return { nonFinite, norms, frozen, sparse, fingerprint: hex(await crypto.subtle.digest('SHA-256', all)) };
}

/**
 * A piece's sparse gradient as sent to its shard: its row count, the whole tensor's entry count as
 * sent and coalesced (int32 each), its rows (int32), then the values in the optimizer's dtype.
 */
function encodeRows(rows: number[], values: FloatArray[], whole: { rows: number; unique: number }, dtype: Dtype): Uint8Array {
  const item = dtype === 'float32' ? 4 : 8;
  const count = values.reduce((n, v) => n + v.length, 0);
  const blob = new Uint8Array(12 + 4 * rows.length + item * count);
  const view = new DataView(blob.buffer);
  view.setInt32(0, rows.length, true);
  view.setInt32(4, whole.rows, true);
  view.setInt32(8, whole.unique, true);
  rows.forEach((r, j) => view.setInt32(12 + 4 * j, r, true));
  let at = 12 + 4 * rows.length;
  for (const v of values) {
    blob.set(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), at);
    at += v.byteLength;
  }
  return blob;
}

/**
 * A step sent in parts (raw bodies, one Idempotency-Key, in element order), kept in the
 * coordinator's record between requests: the shards hold the elements received under `attempt`.
 */
export interface StepAssembly {
  key: string;
  seq: number;
  attempt: string;
  /** The wire dtype every part comes in. */
  src: WireDtype;
  /** Elements received (parts cover [0, received)); the next part starts here. */
  received: number;
  /** Where this request's part starts (set for the part being read). */
  offset: number;
  /** Per-tensor 2-norms of the tensors ended so far (0 for the others), layout order, as decimal text (Infinity and NaN included). */
  norms: string[];
  /** Folds of the tensors begun but not ended (by tensor index), their numbers as decimal text. */
  folds: Record<number, { at: number; lanes: string[]; tail: string[] }>;
  /** Global index of the first non-finite element (nonfinite: skip), or -1. */
  nonFinite: number;
  /** The 422 a whole step would have answered for it (a PATCH to nonfinite: "error" before the last part). */
  nonFiniteError?: { where: Array<string | number>; message: string };
  /** SHA-256 of each part received, in order (the step's fingerprint is over them). */
  digests: string[];
  /** Where each part received started (with `digests`: a part sent again answers again). */
  offsets: number[];
}

/**
 * Every shard drops prepared step `seq` (best effort: a shard that misses it drops it at its next
 * prepare), and with `contributions` the contributions it holds (a set consumed by a skipped step;
 * one missed is replaced by each worker's next contribution).
 */
export async function abortShards(env: Env, id: string, record: ShardsRecord, seq: number, contributions = false): Promise<void> {
  await Promise.allSettled(record.placement.map((_, i) => shardStub(env, id, i).shardAbort(record.secret, seq, contributions)));
}

/** A complete set of contributions (./accumulate.ts): which workers', reduced how. */
export interface ShardReduce {
  workers: number[];
  contributions: number;
  reduce: 'mean' | 'sum';
}

/**
 * Every shard reduces its slices of the contributions of a complete set into its gradient buffer
 * (prepared step `seq`). Returns the first non-finite element of the reduced gradient (global
 * index and value), or null.
 */
export async function reduceShards(env: Env, id: string, record: ShardsRecord, seq: number, set: ShardReduce): Promise<{ index: number; value: number } | null> {
  const answers = await Promise.all(record.placement.map((_, i) => value(shardStub(env, id, i).shardReduce(record.secret, { seq, ...set }))));
  const bad = answers.findIndex((a) => a.nonFinite >= 0);
  return bad < 0 ? null : { index: record.placement[bad]!.start + answers[bad]!.nonFinite, value: answers[bad]!.value };
}

/**
 * Per-tensor 2-norms (layout order) of the gradient the shards hold for prepared step `seq`, each
 * folded in torch's reduction order across the shards holding its pieces: shard by shard, a
 * tensor cut between two continuing from the fold the first one left (clip_grad_norm_ of a reduced
 * gradient, which only the shards hold).
 */
export async function foldShardNorms(env: Env, id: string, record: ShardsRecord, layout: TensorLayout, dtype: Dtype, seq: number): Promise<number[]> {
  const tensors = leaves(layout);
  const norms = tensors.map(() => 0);
  let carry: NormFold | null = null;
  for (const [i, shard] of record.placement.entries()) {
    const answer: { norms: Array<number | null>; carry: NormFold | null } = await value(
      shardStub(env, id, i).shardNorms(record.secret, { seq, dtype, carry, pieces: shard.pieces.map((p) => ({ from: p.from, to: p.to, size: tensors[p.tensor]!.size })) }),
    );
    shard.pieces.forEach((p, k) => {
      const n = answer.norms[k];
      if (n !== null && n !== undefined) norms[p.tensor] = n;
    });
    carry = answer.carry;
  }
  return norms;
}

/**
 * A shard's part of foldShardNorms: its pieces' folds in order, the first continuing `carry` when
 * it continues a tensor; the norm of each piece that ends its tensor (null otherwise), and the fold
 * its last piece leaves when that tensor goes on in the next shard.
 */
export function foldPieces(dtype: Dtype, grads: FloatArray, pieces: ReadonlyArray<{ from: number; to: number; size: number }>, carry: NormFold | null): { norms: Array<number | null>; carry: NormFold | null } {
  let at = 0;
  let fold: NormFold | null = null;
  const norms = pieces.map((p, k) => {
    const n = p.to - p.from;
    if (k === 0 && p.from > 0 && !carry) throw new Error('shard: a piece continuing a tensor needs the fold of its start');
    const start = k === 0 && p.from > 0 ? carry! : normFoldStart(dtype);
    fold = n === 0 ? start : normFoldPiece(dtype, start, grads.subarray(at, at + n), p.from, p.size);
    at += n;
    return p.to === p.size ? (p.size === 0 ? 0 : normFoldEnd(dtype, fold, p.size)) : null;
  });
  const last = pieces[pieces.length - 1];
  return { norms, carry: last && norms[norms.length - 1] === null ? fold : null };
}

/**
 * Phase 2 without storing: every shard applies `decision` in memory. Returns the first non-finite
 * result's global element, or -1 (every shard then holds the step, not yet stored).
 */
export async function tryShards(env: Env, id: string, record: ShardsRecord, decision: ShardDecision): Promise<{ nonFinite: number; step: number; scalars: Record<string, number> }> {
  const answers = await Promise.all(record.placement.map((_, i) => value(shardStub(env, id, i).shardApply(record.secret, { ...forShard(record, i, decision), persist: false }))));
  const bad = answers.findIndex((a) => a.nonFinite >= 0);
  // Step counts and scalars (NAdam's mu_product) evolve alike on every shard: shard 0's are the optimizer's.
  return { nonFinite: bad < 0 ? -1 : record.placement[bad]!.start + answers[bad]!.nonFinite, step: answers[0]?.step ?? 0, scalars: answers[0]?.scalars ?? {} };
}

/** The decided step stored by every shard (each re-applies it from its prepared slice if needed). */
export async function commitShards(env: Env, id: string, record: ShardsRecord, decision: ShardDecision): Promise<void> {
  await Promise.all(record.placement.map((_, i) => value(shardStub(env, id, i).shardApply(record.secret, { ...forShard(record, i, decision), persist: true }))));
}

/** Elements per read of a shard's tensor (4 MiB of float32). */
const READ_PIECE = 1 << 20;

/**
 * Stored tensors (`params` or slots) of the whole layout, one after another: each the shards'
 * slices in order, read a piece at a time (one call each, the next one asked for while the
 * current one streams). The coordinator holds its lock until the end, so every piece is of one
 * state. `release` runs once at the end, on cancel, or when the reader falls behind TRANSFER_PACE
 * (the stream then errors), as for an unsharded snapshot.
 */
export function gatherStream(
  env: Env,
  id: string,
  record: ShardsRecord,
  slots: readonly string[],
  release: () => void,
  /** For a slot not every tensor holds: which tensors (layout order) do; only theirs are read. */
  held: Readonly<Record<string, readonly boolean[]>> = {},
): ReadableStream<Uint8Array> {
  const reads: Array<{ slot: string; i: number; from: number; count: number }> = [];
  for (const slot of slots) {
    record.placement.forEach((shard, i) => {
      // Runs of the shard's elements to read: all of them, or its pieces of the tensors that hold the slot.
      const runs: Array<[number, number]> = [];
      let at = 0;
      for (const p of shard.pieces) {
        const n = p.to - p.from;
        if (!held[slot] || held[slot]![p.tensor]) {
          const last = runs[runs.length - 1];
          if (last && last[1] === at) last[1] = at + n;
          else runs.push([at, at + n]);
        }
        at += n;
      }
      for (const [a, b] of runs) for (let from = a; from < b; from += READ_PIECE) reads.push({ slot, i, from, count: Math.min(READ_PIECE, b - from) });
    });
  }
  let k = 0;
  let ahead: Promise<Uint8Array> | null = null;
  const fetch = (r: (typeof reads)[number]) => value(shardStub(env, id, r.i).shardRead(record.secret, { slot: r.slot, from: r.from, count: r.count }));
  let done = false;
  let sent = 0;
  const startedAt = Date.now();
  let controllerRef: ReadableStreamDefaultController<Uint8Array> | null = null;
  let timer: ReturnType<typeof setTimeout> | null = null;
  const finish = () => {
    if (timer !== null) clearTimeout(timer);
    if (done) return;
    done = true;
    release();
  };
  const arm = () => {
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(() => {
      finish();
      controllerRef?.error(new Error('sharded stream not read in time'));
    }, Math.max(0, paceDeadline(startedAt, sent) - Date.now()));
  };
  arm();
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controllerRef = controller;
    },
    async pull(controller) {
      try {
        if (k === reads.length) {
          finish();
          return controller.close();
        }
        const current = ahead ?? fetch(reads[k]!);
        k++;
        ahead = k < reads.length ? fetch(reads[k]!) : null;
        ahead?.catch(() => {}); // awaited (and its error seen) at the next pull
        const bytes = await current;
        controller.enqueue(bytes);
        sent += bytes.length;
        arm();
      } catch (e) {
        finish();
        controller.error(e);
      }
    },
    cancel() {
      finish();
    },
  });
}

/** Reads a stream to its end into one array of `length` bytes. */
export async function readAll(stream: ReadableStream<Uint8Array>, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let at = 0;
  for await (const piece of stream) {
    out.set(piece, at);
    at += piece.length;
  }
  if (at !== length) throw new Error(`sharded stream held ${at} bytes, expected ${length}`);
  return out;
}

/**
 * Creates shards `from`.. of `record`'s placement concurrently (an optimizer's creation, or a
 * restore that needs more), each an ordinary optimizer opened only by the record's secret, that
 * expires on its own after MAX_TTL_SECONDS unless the coordinator keeps it; all of them deleted
 * again should one fail.
 */
export async function createShardObjects(env: Env, id: string, record: ShardsRecord, from: number, argsFor: (i: number) => Omit<CreateArgs, 'tokenHash' | 'ttl' | 'owner'>): Promise<void> {
  const results = await Promise.allSettled(
    record.placement.slice(from).map(async (_, k) => unwrapOutcome(await shardStub(env, id, from + k).create({ ...argsFor(from + k), tokenHash: record.secret, ttl: MAX_TTL_SECONDS, owner: null }))),
  );
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) {
    await destroyShards(env, id, record, from);
    throw failed.reason;
  }
}

/** A shard's capacity (elements) for another dtype: its bytes (MAX_HOSTED_BYTES) hold half as many float64 elements as float32 ones. */
export function capacityFor(record: ShardsRecord, from: Dtype, to: Dtype): number {
  if (from === to) return record.capacity;
  return from === 'float32' ? Math.floor(record.capacity / 2) : record.capacity * 2;
}

/** Deletes every shard (an optimizer's DELETE, its expiry, a failed creation), or those from `from` on. */
export async function destroyShards(env: Env, id: string, record: ShardsRecord, from = 0): Promise<void> {
  const count = Math.max(record.placement.length, record.objects ?? 0);
  await Promise.all(Array.from({ length: Math.max(0, count - from) }, (_, k) => shardStub(env, id, from + k).remove(record.secret)));
}

/** The secret shards are created with: 32 random bytes, hex (compared as a token hash; no token hashes to it knowingly). */
export function newShardSecret(): string {
  return hex(crypto.getRandomValues(new Uint8Array(32)).buffer as ArrayBuffer);
}

/** What a restore's file holds: its params' names, shapes and dtypes in the file's order. */
export type FileParams = Array<{ name: string; shape: readonly number[]; dtype: WireDtype }>;

/** Where a restore puts its file: the layout it holds (the optimizer's own, or another), its dtype, and the placement over shards. */
export interface RestoreTarget<O> {
  options: O;
  layout: TensorLayout;
  dtype: Dtype;
  placement: ShardsRecord['placement'];
}

/**
 * Phase 1 of a restore from a safetensors checkpoint: each shard is sent (and stages durably) a
 * checkpoint file of its own pieces, `<slot>/<piece>` for every tensor of `params` and the slots,
 * per-tensor scalars (`step/<name>`, NAdam's `mu_product/<name>`) copied to each piece of their
 * tensor, and the metadata as it came (less `layout` and `param_groups`; `dtype` and the pieces'
 * order written). `target` checks the metadata and the file's params and answers where they go:
 * this optimizer's layout and placement, or another layout (or dtype) placed again, whose shards
 * beyond the current ones it has created. Returns each shard's file length and the target.
 */
export async function stageCheckpoint<O>(args: {
  env: Env;
  id: string;
  record: ShardsRecord;
  body: ByteSource;
  length: number | null;
  /** Checks the metadata and the file's params (throwing a problem): what the coordinator keeps, and where the file goes. */
  target: (metadata: Record<string, string> | null, params: FileParams) => Promise<RestoreTarget<O>>;
  /** Per-tensor scalars of the checkpoint: `step` and the optimizer's scalars. */
  scalarSlots: readonly string[];
  /** Shard i's param_groups (over its pieces' names), written into its file's metadata; none when empty. */
  groupsFor: (i: number) => unknown[];
  /** The tensor whose step count and scalars are the optimizer's when the metadata names none (an unsharded restore's rule). */
  topTensor: () => number;
  /** Checks which tensors hold each slot of the file (a shard sees only its own pieces'). */
  checkHeld: (held: ReadonlyMap<string, ReadonlySet<number>>) => void;
}): Promise<{ attempt: string; lengths: number[]; target: RestoreTarget<O> }> {
  const { env, id, record } = args;
  const attempt = newShardSecret().slice(0, 32);
  const reader = new ByteReader(args.body, true);
  let staged: PartGatherer | null = null;
  let shards = record.placement.length;
  try {
    const length = args.length;
    if (length !== null && length < 8) throw new WireError(422, ['safetensors'], `a safetensors body has at least 8 bytes, got ${length}`);
    const n = headerLength(await reader.readExactly(8), length);
    const header = parseHeader(await reader.readExactly(n), length === null ? null : length - 8 - n);
    const params = header.entries.flatMap((e) => {
      const { slot, name } = entryParts(e.name);
      return slot === 'params' ? [{ name, shape: e.shape, dtype: e.dtype }] : [];
    });
    const target = await args.target(header.metadata, params);
    const { layout, placement } = target;
    shards = Math.max(shards, placement.length);
    const tensors = leaves(layout);
    const index = new Map(namedLeaves(layout).map((l, t) => [l.name, t]));
    const stage = new PartGatherer(placement.length, (i, parts) => value(shardStub(env, id, i).shardStage(record.secret, { attempt, parts })));
    staged = stage;
    // Each entry: its slot, its tensor, and where each of its pieces goes (shard, byte offset in that shard's file).
    const plan = header.entries.map((e) => {
      const { slot, name } = entryParts(e.name);
      const t = index.get(name);
      if (t === undefined) throw new WireError(422, ['safetensors', e.name], `"${e.name}" has no params/${name} to match`);
      const scalar = args.scalarSlots.includes(slot);
      const shape = tensors[t]!.shape;
      if (!scalar && (e.shape.length !== shape.length || e.shape.some((d, k) => d !== shape[k]))) {
        throw new WireError(422, ['safetensors', e.name, 'shape'], `shape [${e.shape.join(', ')}] differs from the parameter's [${shape.join(', ')}]`);
      }
      return { e, slot, t, scalar, targets: [] as Array<{ shard: number; from: number; to: number; at: number }> };
    });
    // A step count or scalar is every tensor's or none's (as one object checks; a shard would name its pieces).
    const held = new Map<string, Set<number>>();
    for (const p of plan) if (p.slot !== 'params') (held.get(p.slot) ?? held.set(p.slot, new Set()).get(p.slot)!).add(p.t);
    for (const slot of args.scalarSlots) {
      const has = held.get(slot);
      const lacking = has === undefined ? -1 : tensors.findIndex((_, t) => !has.has(t));
      if (lacking >= 0) {
        const name = `${slot}/${namedLeaves(layout)[lacking]!.name}`;
        throw new WireError(422, ['safetensors', name], `tensor "${name}" is missing (each parameter needs its ${slot})`);
      }
    }
    args.checkHeld(held);
    // Each shard's file: its header, then its pieces in the order the source file holds them.
    // The coordinator keeps the scheduler's state (its group_lrs are per coordinator group); a shard steps at the rates it is sent.
    // Each file names its dtype (the coordinator's choice) and its pieces' order (the placement's).
    const { layout: _layout, param_groups: _groups, scheduler_state: _plateau, ...given } = header.metadata ?? {};
    const metadata: Record<string, string> = { ...given, dtype: target.dtype };
    // Without __metadata__.step (or a scalar), each shard would take its own first piece's: the
    // coordinator takes the top tensor's (read below) and writes it into every shard's metadata, in a
    // field of fixed width reserved now, so each header keeps its length when written at the end.
    const derived = args.scalarSlots.filter((slot) => metadata[slot] === undefined && plan.some((p) => p.slot === slot));
    const width = (slot: string) => (slot === 'step' ? 16 : 32);
    const fixed = (slot: string, v: number) => (slot === 'step' ? String(v).padStart(16, '0') : String(v).padStart(32, ' '));
    for (const slot of derived) metadata[slot] = '0'.repeat(width(slot));
    const values = new Map<string, number>(); // `${slot}/${tensor}` → value, for the derived slots
    const headerOf: Array<(own: Record<string, string>) => Uint8Array> = [];
    const headers: Uint8Array[] = [];
    const lengths = placement.map((shard, i) => {
      const specs: Array<{ name: string; dtype: WireDtype; shape: readonly number[] }> = [];
      const sizes: number[] = [];
      const owners: Array<(at: number) => void> = [];
      for (const p of plan) {
        for (const piece of shard.pieces) {
          if (piece.tensor !== p.t) continue;
          const shape = p.scalar ? p.e.shape : pieceShape(tensors[p.t]!, piece);
          specs.push({ name: `${p.slot}/t${piece.tensor}_${piece.from}`, dtype: p.e.dtype, shape });
          sizes.push(p.scalar ? p.e.end - p.e.start : (piece.to - piece.from) * WIRE_DTYPES[p.e.dtype].bytes);
          owners.push((at) => p.targets.push({ shard: i, from: piece.from, to: piece.to, at }));
        }
      }
      const groups = args.groupsFor(i);
      const order = JSON.stringify(shard.pieces.map((piece) => pieceName(piece)));
      const own: Record<string, string> = { ...metadata, layout: order, ...(groups.length > 0 ? { param_groups: JSON.stringify(groups) } : {}) };
      headerOf.push((top) => encodeHeader(specs, { ...own, ...top }).header);
      const encoded = encodeHeader(specs, own);
      let at = encoded.header.length;
      sizes.forEach((size, k) => {
        owners[k]!(at);
        at += size;
      });
      headers.push(encoded.header);
      return at;
    });
    if (derived.length === 0) for (const [i, h] of headers.entries()) await stage.add(i, 0, h);
    for (const p of plan) {
      const item = WIRE_DTYPES[p.e.dtype].bytes;
      if (p.scalar) {
        const bytes = await reader.readExactly(p.e.end - p.e.start);
        if (derived.includes(p.slot) && p.e.shape.every((d) => d === 1)) {
          const out = new Float64Array(1);
          placementSink(p.e.dtype, { out, offset: 0, count: 1, path: ['safetensors', p.e.name] }, 1)(bytes, 0);
          values.set(`${p.slot}/${p.t}`, out[0]!);
        }
        for (const to of p.targets) await stage.add(to.shard, to.at, bytes.slice());
        continue;
      }
      const total = tensors[p.t]!.size;
      for (let from = 0; from < total; from += READ_ELEMENTS) {
        const to = Math.min(total, from + READ_ELEMENTS);
        const chunk = await reader.readExactly((to - from) * item);
        for (const target of p.targets) {
          const lo = Math.max(from, target.from);
          const hi = Math.min(to, target.to);
          if (lo < hi) await stage.add(target.shard, target.at + (lo - target.from) * item, chunk.slice((lo - from) * item, (hi - from) * item));
        }
      }
    }
    await reader.expectEnd();
    if (derived.length > 0) {
      // Each header last, at offset 0 (its own row: the data after it was staged on its own).
      const t = args.topTensor();
      const top: Record<string, string> = {};
      for (const slot of derived) {
        const v = values.get(`${slot}/${t}`);
        const name = `${slot}/${namedLeaves(layout)[t]!.name}`;
        if (v === undefined) throw new WireError(422, ['safetensors', name], `tensor "${name}" is missing (each parameter needs its ${slot})`);
        const text = fixed(slot, v);
        if (text.length !== width(slot) || (slot === 'step' && !(Number.isSafeInteger(v) && v >= 0)) || !Number.isFinite(v)) {
          throw new WireError(422, ['safetensors', name], `${slot === 'step' ? 'a step count must be an integer >= 0' : `${slot} must be finite`}, got ${v}`, v);
        }
        top[slot] = text;
      }
      for (const [i, make] of headerOf.entries()) {
        const h = make(top);
        if (h.length !== headers[i]!.length) throw new Error('shard checkpoint header changed length');
        await stage.add(i, 0, h);
      }
    }
    await stage.flush();
    return { attempt, lengths, target };
  } catch (e) {
    await staged?.settle();
    await Promise.allSettled(Array.from({ length: shards }, (_, i) => shardStub(env, id, i).shardAbort(record.secret, Infinity)));
    throw e;
  } finally {
    await reader.cancel();
  }
}
