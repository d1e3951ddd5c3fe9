// One hosted optimizer per SQLite-backed Durable Object, of any registry optimizer (src/optim):
// params and state slots by torch's names, param groups. Adam's and AdamW's arrays live in the
// memory of the object's own WebAssembly kernel instance (loaded once per object lifetime), so a
// step copies the gradient in and steps in place; other optimizers step plain typed arrays. A step
// is the stateless step's engine (src/optim/engine.ts: groups, clipping, per-tensor counters) with
// the optimizer's fused kernel (src/optim/step-state.ts). Storage (./store.ts) journals each step.
// Methods return data (./protocol.ts); the Worker speaks HTTP. The math is src/optim's; this class
// adds access control, ordering, idempotency and preconditions.

import { DurableObject } from 'cloudflare:workers';
import { BEARER_CHALLENGE } from '../lib/auth.ts';
import { initialSchedulerState, learningRate, reportMetric, scheduleOverflow } from '../lib/learning-rate.ts';
import { groupHyperparams, groupOfTensors, parseParamGroups, withBaseLr, type ParamGroup } from '../lib/param-groups.ts';
import { MAX_TTL_SECONDS, hostedArrays, maxHostedElements, readDefaultTtl, readLimits, type KeyQuota, type Limits } from '../lib/config.ts';
import { hex, sameString } from '../lib/digest.ts';
import { ProblemError, fieldError, headerError, validationProblem } from '../lib/problem.ts';
import { alignTo, tensorProblem } from '../lib/tensor-input.ts';
import { zodFieldErrors } from '../lib/validation.ts';
import { MAX_STEP } from '../optim/adam.ts';
import { clipCoefficient, clipGradValue, norm2, type NormFold } from '../optim/clip.ts';
import { engineStep, keepSlots, usedGroups, type Counter, type TreeState } from '../optim/engine.ts';
import type { Dtype, FloatArray, Hyperparams, OptimizerDef, TensorSpan } from '../optim/optimizer.ts';
import type { SparseRows } from '../optim/sparse.ts';
import { optimizerDef } from '../optim/registry.ts';
import { stepRunFor, usesAdamKernel } from '../optim/step-state.ts';
import type { ScheduleSpec } from '../schedules/types.ts';
import adamWasm from '../optim/wasm/adam.wasm';
import { createWasmAdam, type WasmAdam } from '../optim/wasm/kernel.ts';
import { familySchemas, maxStep } from '../schemas/family.ts';
import { CheckpointOptionsSchema } from '../schemas/optimizer.ts';
import { layoutOfNamed, leafIndex, namedLeaves, type NamedLeaf } from '../tensors/names.ts';
import { layoutSize, layoutWeight, leaves, pathOfIndex, type TensorLayout } from '../tensors/tree.ts';
import { WIRE_DTYPES, firstNonFiniteIn, wireDtypeOf, type WireDtype } from '../wire/dtypes.ts';
import { WireError, encodeHeader, inLayoutOrder, type TensorEntry } from '../wire/safetensors.ts';
import { checkEntry, checkFinite, checkFits, readRaw, readSafetensors, type Placement } from './decode.ts';
import { checkCheckpointHeader } from './checkpoint-header.ts';
import { Contributions, StepWaiters, accumulateInfo, checkAccumulates, checkWorker, notReached, patchedAccumulate, skippedKey, type Completed } from './accumulate.ts';
import { Mutex } from './mutex.ts';
import { SHARD_FAULTS, abortShards, capacityFor, clientNamedProblem, createShardObjects, groupsPresent, shardGroups, pieceName, stageCheckpoint, unwrapOutcome, commitShards, destroyShards, gatherStream, newShardSecret, planShards, prepareShards, readAll, shardLayout, shardStub, tryShards, type GradientSlices, type Prepared, type ShardDecision, type ShardReduce, type ShardStepArgs, type ShardsRecord, type StepAssembly, foldPieces, foldShardNorms, reduceShards } from './shards.ts';
import { paceDeadline } from '../wire/stream.ts';
import { checkExpectedStep, checkIfMatch } from './preconditions.ts';
import { registryOf } from './stubs.ts';
import { checkRows, checkRowsPlan, fileRows, isIndicesName, planFileRows, rowsBudget, rowsNonFinite, splitJsonRows, type FileRows } from './sparse-grads.ts';
import type {
  CreateArgs,
  HistoryEntry,
  OptimizerInfo,
  OptimizerSummary,
  Outcome,
  PartOut,
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
import { OptimizerStore, chunkElements, deadlineOf, legacyAdamSlots, storedTensors, type IdempotencyRow, type SlotArrays, type StoredMeta } from './store.ts';
import {
  countersFromStored,
  countersToStored,
  heldFromStored,
  heldToStored,
  initialGroupLrs,
  rangesOf,
  reportGroups,
  slotShape,
  type HostedPlateau,
} from './tree-state.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;

/** Most disjoint ranges of params still to upload (each partial upload may split one range). */
export const MAX_MISSING_RANGES = 10_000;

/** Idempotency keys remembered per optimizer. */
export const IDEMPOTENCY_KEYS_KEPT = 256;

/** Hex digits of each part's SHA-256 a step in parts keeps with its Idempotency-Key (128 bits: at most 4096 parts, about 180 KB). */
const PART_DIGEST_CHARS = 32;
/** History entries (applied and skipped steps) kept per optimizer. */
export const HISTORY_KEPT = 10_000;
/**
 * Params answers up to this many bytes are copied (a slow reader then holds nothing); larger ones
 * stream from the object's memory under its lock (the isolate's peak stays one state).
 */
export const PARAMS_COPY_MAX = 4 * 1024 * 1024;

/**
 * Bytes a hosted state of `size` elements takes: params, the gradient buffer and every slot the
 * optimizer can keep, whatever the hyperparameters (so turning one on never needs more).
 */
export const hostedMemoryBytes = (def: AnyDef, dtype: Dtype, size: number) => hostedArrays(def.slots.length) * size * (dtype === 'float32' ? 4 : 8);

/** Most elements one optimizer of `def` and `dtype` holds. */
export const maxElementsOf = (limits: Limits, def: AnyDef, dtype: Dtype) => maxHostedElements(limits, dtype, hostedArrays(def.slots.length));

/** The registry definition a stored optimizer names (Adam when stored before there were others). */
function storedDef(meta: { optimizer?: string | undefined }): AnyDef {
  const def = optimizerDef(meta.optimizer ?? 'adam');
  if (!def) throw new Error(`stored optimizer "${meta.optimizer}" is not in the registry`);
  return def;
}

/** The tensors of a layout as the step sees them. */
const spansOf = (layout: TensorLayout): TensorSpan[] => leaves(layout).map((l) => ({ offset: l.offset, size: l.size, shape: l.shape }));

/** The fixed learning rate (absent only when a schedule sets it: SGD has no default). */
const fixedLr = (hp: Hyperparams) => (typeof hp.lr === 'number' ? hp.lr : 0);

/** Fresh scalar state of `def`. */
const initialScalars = (def: AnyDef): Record<string, number> => Object.fromEntries(def.scalars.map((s) => [s.name, s.initial]));

/** The state version sent as ETag: changes with every mutation and is never reused. */
export const etagOf = (meta: { step: number; revision: number }) => `"s${meta.step}-r${meta.revision}"`;

/** Arrays of a state: for Adam and AdamW in the kernel's memory. */
interface Memory {
  dtype: Dtype;
  size: number;
  params: FloatArray;
  /** Staging buffer for the incoming gradient (and uploads), `size` elements. */
  grads: FloatArray;
  /**
   * Room for each slot, by torch's name: Adam's three are allocated with the kernel's workspace
   * (switching amsgrad on never moves the state); others when first needed.
   */
  room: Record<string, FloatArray>;
}

/** The loaded optimizer: definition, metadata, layout, param groups, and its state. */
interface Loaded extends Memory {
  def: AnyDef;
  meta: StoredMeta;
  layout: TensorLayout;
  tensors: TensorSpan[];
  /** Tensor names (dotted paths) in layout order: what param_groups match. */
  names: string[];
  /** torch's param_groups as set (empty: none). */
  groups: ParamGroup[];
  /** Each tensor's group: 0 for the top-level hyperparameters, g + 1 for groups[g]. */
  groupOf: number[];
  /**
   * Step count and scalars (`meta.step`, `meta.scalars`: those of the tensors not in `counters`),
   * slots (arrays of `room`; absent until some tensor holds one), which tensors hold each slot, and
   * the tensors whose counters differ.
   */
  state: TreeState;
}

/** Each group's hyperparameters for the next step at rate `lr` (index 0: the top-level set), as the stateless step resolves them. */
function stepGroupHp(loaded: Loaded, lr: number): Hyperparams[] {
  const { def, meta } = loaded;
  if (loaded.groups.length === 0) return [{ ...meta.hyperparams, lr }];
  return groupHyperparams({
    def,
    top: meta.hyperparams,
    groups: loaded.groups,
    groupOf: loaded.groupOf,
    scheduled: Boolean(meta.schedule),
    lrOf: (groupLr, g) => groupLearningRate(meta, g, groupLr, lr),
    where: (g, k) => (g === 0 ? ['hyperparams', k] : ['param_groups', g - 1, k]),
    orElse: 'or set a schedule',
  });
}

/** The memory of a coordinator, which holds no tensor (./shards.ts). */
function emptyMemory(dtype: Dtype): Memory {
  const none = dtype === 'float32' ? new Float32Array(0) : new Float64Array(0);
  return { dtype, size: 0, params: none, grads: none, room: {} };
}

/**
 * A JSON snapshot as the safetensors checkpoint of the same state (GET state's names: params/<name>,
 * <slot>/<name> for the tensors that hold the slot; step, scalars and options in the metadata).
 */
function snapshotFile(def: AnyDef, args: RestoreArgs): Uint8Array {
  const named = namedLeaves(args.layout);
  // Tensors with their own step count or scalars (frozen for some steps): step/<name> and <scalar>/<name> for every tensor, as torch saves them.
  const own = new Map<number, Record<string, number>>();
  const index = new Map(named.map((l, t) => [l.name, t]));
  for (const [name, c] of Object.entries(args.tensors ?? {})) {
    const t = index.get(name);
    if (t === undefined) throw validationProblem([fieldError(['tensors', name], 'names no tensor of params', name)]);
    const step = c.step ?? args.step;
    if (!Number.isInteger(step) || step < 0 || step > maxStep(def.stepCounter)) {
      throw validationProblem([fieldError(['tensors', name, 'step'], `must be an integer in [0, ${maxStep(def.stepCounter)}] (the tensor's own step count)`, step)]);
    }
    own.set(t, c);
  }
  const dtype = wireDtypeOf(args.dtype);
  const specs: Array<{ name: string; dtype: WireDtype; shape: readonly number[] }> = [];
  const data: Uint8Array[] = [];
  const add = (slot: string, values: FloatArray, held?: boolean[]) =>
    named.forEach((l, t) => {
      if (held && !held[t]) return;
      specs.push({ name: slotName(slot, l.name), dtype, shape: l.shape });
      data.push(new Uint8Array(values.buffer, values.byteOffset + l.offset * values.BYTES_PER_ELEMENT, l.size * values.BYTES_PER_ELEMENT));
    });
  add('params', args.params);
  for (const [slot, sent] of Object.entries(args.slots)) add(slot, sent.values, sent.held);
  if (own.size > 0) {
    const counts = [...(def.stepCounter === 'none' ? [] : ['step']), ...def.scalars.map((x) => x.name)];
    for (const slot of counts) {
      named.forEach((l, t) => {
        specs.push({ name: slotName(slot, l.name), dtype: 'F64', shape: [] });
        const top = slot === 'step' ? args.step : (args.scalars[slot] ?? def.scalars.find((x) => x.name === slot)!.initial);
        data.push(new Uint8Array(Float64Array.of(own.get(t)?.[slot] ?? top).buffer));
      });
    }
  }
  const metadata: Record<string, string> = {
    optimizer: def.name,
    step: String(args.step),
    dtype: args.dtype,
    hyperparams: JSON.stringify(args.hyperparams),
    schedule: JSON.stringify(args.schedule),
    ...(args.schedulerState ? { scheduler_state: JSON.stringify(args.schedulerState) } : {}),
    ...(args.paramGroups.length > 0 ? { param_groups: JSON.stringify(args.paramGroups) } : {}),
    ...Object.fromEntries(Object.entries(args.scalars).map(([k, v]) => [k, String(v)])),
  };
  const { header, dataLength } = encodeHeader(specs, metadata);
  const out = new Uint8Array(header.length + dataLength);
  out.set(header);
  let at = header.length;
  for (const d of data) {
    out.set(d, at);
    at += d.length;
  }
  return out;
}

/** Where a raw upload goes: the flat params, or a tensor by name, from element `offset` (4xx when there is no such place). */
function rawUploadTarget(layout: TensorLayout, size: number, args: UploadArgs) {
  let start = 0;
  let room = size;
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
  return { start, room, path, offset };
}

/**
 * The tensors of a JSON upload, each matched to the optimizer's: by its place in the tree, or by
 * its dotted name ("fc.weight" for {"fc": {"weight"}}) where that is unambiguous, so an optimizer
 * whose names collide once dotted is still addressable. 422 for a name or shape that matches none.
 */
function* jsonUploadTensors(layout: TensorLayout, sentLayout: TensorLayout) {
  const byPath = new Map(leaves(layout).map((l) => [JSON.stringify(l.path), l]));
  const byName = leafIndex(layout);
  for (const sent of leaves(sentLayout)) {
    const name = sent.path.join('.');
    const leaf = byPath.get(JSON.stringify(sent.path)) ?? byName?.get(name);
    const path = ['params', ...sent.path];
    if (!leaf) throw validationProblem([fieldError(path, `no tensor named "${name}" in this optimizer`)]);
    if (!sameShape(leaf.shape, sent.shape)) throw validationProblem([fieldError(path, `expected shape [${leaf.shape.join(', ')}], got [${sent.shape.join(', ')}]`)]);
    yield { sent, leaf, path };
  }
}

/** Most bytes of values one upload (PUT params) to a sharded optimizer carries: its coordinator checks them all before any shard writes. */
export const SHARDED_UPLOAD_BYTES = 32 << 20;


/** A slot's array in `memory`, allocated on first use. */
function roomFor(memory: Memory, name: string): FloatArray {
  return (memory.room[name] ??= memory.dtype === 'float32' ? new Float32Array(memory.size) : new Float64Array(memory.size));
}

/** The existing tensors of a state, as storage writes them. */
function arraysOf(memory: { params: FloatArray }, state: { slots: Record<string, FloatArray | null> }): SlotArrays {
  const slots: Record<string, FloatArray> = {};
  for (const [name, a] of Object.entries(state.slots)) if (a) slots[name] = a;
  return { params: memory.params, slots };
}

/** A fresh TreeState: no step, the scalars' initial values, no slot yet (see keepSlots). */
const freshState = (def: AnyDef): TreeState => ({ step: 0, scalars: initialScalars(def), slots: {}, held: {}, counters: new Map() });

/**
 * Each group's hyperparameters for the checks of create, PATCH and restore (lr: the group's, else
 * the top-level fixed one), with the stateless step's 422s: a required one missing where a tensor
 * uses it, torch's cross-field rules.
 */
function checkedGroupHp(def: AnyDef, top: Hyperparams, groups: readonly ParamGroup[], groupOf: readonly number[], schedule: ScheduleSpec | null | undefined, hpPath: Array<string | number>, groupsPath: Array<string | number>): Hyperparams[] {
  return groupHyperparams({
    def,
    top,
    groups,
    groupOf,
    scheduled: Boolean(schedule),
    lrOf: (lr) => lr ?? fixedLr(top),
    where: (g, k) => (g === 0 ? [...hpPath, k] : [...groupsPath, g - 1, k]),
    orElse: 'or set a schedule',
  });
}

/**
 * The lr group g steps with: its own lr (none: the top-level rate) or, with a schedule, the
 * schedule driving a group whose initial lr is the group's (torch's base_lrs per group), as the
 * stateless step does; reduce_on_plateau's per-group rate.
 */
function groupLearningRate(meta: StoredMeta, g: number, lr: number | undefined, topLr: number): number {
  if (lr === undefined) return topLr;
  if (!meta.schedule) return lr;
  if (meta.schedule.type === 'reduce_on_plateau') return (meta.plateau as HostedPlateau | null)?.group_lrs?.[g - 1] ?? lr;
  const rate = learningRate(0, withBaseLr(meta.schedule, lr) as ScheduleSpec, meta.step, null);
  if (!Number.isFinite(rate)) throw scheduleOverflow(meta.step, rate);
  return rate;
}

/** The groups of stored tensors (they matched when stored; a mismatch is a bug, not a request's fault). */
function storedGroupOf(names: readonly string[], groups: readonly ParamGroup[]): number[] {
  try {
    return groupOfTensors(names, groups, ['param_groups']);
  } catch (e) {
    throw new Error(`stored param_groups do not match the stored layout: ${e instanceof ProblemError ? e.message : String(e)}`);
  }
}

/** Initial scheduler state, with each group's reduce_on_plateau rate. */
function initialPlateau(schedule: ScheduleSpec | null | undefined, groups: readonly ParamGroup[]): HostedPlateau | null {
  const plateau = initialSchedulerState(schedule);
  const lrs = initialGroupLrs(schedule, groups);
  return plateau && lrs ? { ...plateau, group_lrs: lrs } : plateau;
}

/** The metadata fields of a TreeState. */
function stateMeta(state: TreeState, arrays: SlotArrays): Pick<StoredMeta, 'step' | 'scalars' | 'slots' | 'held' | 'counters'> {
  const slots = Object.keys(arrays.slots);
  return { step: state.step, scalars: state.scalars, slots, held: heldToStored(state.held, slots), counters: countersToStored(state.counters) };
}

const finiteOrNull = (x: number) => (Number.isFinite(x) ? x : null);


/** SHA-256 over the dtype, size, gradient bytes and loss: detects reuse of a key for another step. */
async function fingerprint(dtype: Dtype, grads: FloatArray, loss: number | undefined, frozen: readonly boolean[], sparse: ReadonlyArray<SparseRows | null> = []): Promise<string> {
  // Which tensors are frozen is part of the request: a retry freezing others is another step.
  const head = new TextEncoder().encode(`${dtype}:${grads.length}:${loss ?? ''}:${frozen.some(Boolean) ? `${JSON.stringify(rangesOf(frozen))}:` : ''}`);
  const body = new Uint8Array(grads.buffer, grads.byteOffset, grads.byteLength);
  // Sparse gradients: each one's tensor, row count, indices and values (a retry with other rows is another step).
  const rows = sparse.flatMap((r, t) => (r ? [new TextEncoder().encode(`|${t}:${r.rows.length}:`), new Uint8Array(r.rows.buffer, r.rows.byteOffset, r.rows.byteLength), new Uint8Array(r.values.buffer, r.values.byteOffset, r.values.byteLength)] : []));
  // Hashed a piece at a time (the digest of their concatenation): a whole copy of the gradient
  // would add an array to the isolate's peak, on every contribution of an accumulated step.
  const digest = new crypto.DigestStream('SHA-256');
  const writer = digest.getWriter();
  for (const b of [head, body, ...rows]) {
    for (let at = 0; at < b.length; at += FINGERPRINT_PIECE) await writer.write(b.slice(at, at + FINGERPRINT_PIECE));
  }
  await writer.close();
  return hex(await digest.digest);
}

/** Bytes hashed per write (copied out of the kernel's memory, which a stream may not hold). */
const FINGERPRINT_PIECE = 1 << 20;

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

/** The rate of the next step, or null when it is not finite or out of the replay budget (the step then answers 422 saying why). */
function nextLr(meta: StoredMeta): number | null {
  try {
    return finiteOrNull(learningRate(fixedLr(meta.hyperparams), meta.schedule, meta.step, meta.plateau));
  } catch (err) {
    if (err instanceof ProblemError) return null;
    throw err;
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
  /**
   * While a #locked operation runs: keeps its lock past its end and returns the release (for a
   * stream of the params the answer carries). Null outside #locked.
   */
  #holdLock: (() => () => void) | null = null;
  /** Contributions held for the pending step, and requests waiting for a step (./accumulate.ts). */
  readonly #contributions: Contributions;
  readonly #waiters = new StepWaiters();
  /** A shard (./shards.ts): the step whose prepared gradient slice `grads` holds, and a step applied in memory but not yet stored. */
  #prepared: number | null = null;
  /** The attempt (a random id per prepare phase) whose parts this shard last received. */
  #attempt: string | null = null;
  /** A shard: the sparse gradients (encoded, by piece) of the prepared step, valid while `#prepared` is its seq. */
  #preparedRows = new Map<number, Uint8Array>();
  #dryRun: { seq: number; scalarsBefore: Record<string, number>; whole: boolean } | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#store = new OptimizerStore(ctx.storage);
    this.#contributions = new Contributions(ctx.storage);
    ctx.blockConcurrencyWhile(async () => {
      let meta = this.#store.readMeta();
      if (!meta) return;
      if (meta.version === 1) {
        this.#readTensors(); // rewrites it in today's layout
        meta = this.#loaded!.meta;
      }
      this.#store.upgradeTables(); // history and idempotency columns added since it was stored
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
   * Zeroed arrays for a state of `size` elements. Adam and AdamW: params, exp_avg, exp_avg_sq,
   * max_exp_avg_sq and the gradient buffer in the kernel's memory (5 arrays whatever the
   * hyperparameters: see hostedMemoryBytes), a fresh instance when the current memory is far
   * larger than needed, so a smaller state frees it. Other optimizers: typed arrays, slots
   * allocated when first needed. Earlier arrays of this object are invalid afterwards.
   */
  #allocate(def: AnyDef, dtype: Dtype, size: number): Memory {
    if (!usesAdamKernel(def)) {
      this.#kernel = null; // frees the kernel's memory; scans run as plain loops
      // A restore allocates while the current state is loaded: never hold two sets (the isolate's
      // peak would double). Arrays of the same size are reused, zeroed; others are let go first.
      // Either way the current state is gone: a restore that fails reloads it from storage.
      const old = this.#loaded;
      if (old && old.dtype === dtype && old.size === size && !usesAdamKernel(old.def)) {
        for (const a of [old.params, old.grads, ...Object.values(old.room)]) a.fill(0);
        return { dtype, size, params: old.params, grads: old.grads, room: { ...old.room } };
      }
      if (old) {
        const none = old.dtype === 'float32' ? new Float32Array(0) : new Float64Array(0);
        Object.assign(old, { params: none, grads: none, room: {} });
        old.state.slots = {};
      }
      const make = () => (dtype === 'float32' ? new Float32Array(size) : new Float64Array(size));
      return { dtype, size, params: make(), grads: make(), room: {} };
    }
    const needed = hostedMemoryBytes(def, dtype, size);
    if (this.#kernel && this.#kernel.memory.buffer.byteLength > 2 * needed + (16 << 20)) this.#kernel = null;
    this.#kernel ??= createWasmAdam(adamWasm);
    const ws = this.#kernel.workspace(dtype, size, true);
    return { dtype, size, params: ws.params, grads: ws.grads, room: { exp_avg: ws.m, exp_avg_sq: ws.v, max_exp_avg_sq: ws.vMax! } };
  }

  /** Index of the first NaN or ±Infinity (a SIMD scan for arrays in the kernel's memory), or -1. */
  readonly #scan = (values: FloatArray): number => (this.#kernel ? this.#kernel.firstNonFinite(values) : firstNonFiniteIn(values));

  /** Loads the optimizer from storage: on first use, and to discard an in-memory change that failed. */
  #load(): void {
    this.#loaded = null;
    // A reload reuses (zeroes) or replaces the gradient buffer, and undoes any in-memory application.
    this.#prepared = null;
    this.#dryRun = null;
    const stored = this.#store.readMeta();
    if (!stored) return;
    if (stored.version === 1) {
      // Written before the journal: read it whole, write it back in today's layout.
      const adam = storedDef({});
      const { meta, arrays } = this.#store.readVersion1(stored, (dtype, size, amsgrad) => {
        const memory = this.#allocate(adam, dtype, size);
        return { params: memory.params, slots: Object.fromEntries(legacyAdamSlots(amsgrad).map((n) => [n, memory.room[n]!])) };
      });
      this.#store.transaction(() => {
        this.#store.createTables();
        this.#store.writeCheckpoint(meta, arrays, null);
        this.#store.dropVersion1();
      });
      return this.#load();
    }
    const meta = stored;
    const def = storedDef(meta);
    const layout = this.#store.readLayout();
    const tensors = spansOf(layout);
    const names = namedLeaves(layout).map((l) => l.name);
    const groups = meta.groups ? (this.#store.readGroups() as ParamGroup[]) : [];
    const groupOf = storedGroupOf(names, groups);
    if (meta.shards) {
      // A coordinator: its tensors are its shards'.
      this.#loaded = { def, meta, layout, tensors, names, groups, groupOf, state: freshState(def), ...emptyMemory(meta.dtype) };
      return;
    }
    const memory = this.#allocate(def, meta.dtype, meta.size);
    // Optimizers stored before there were others are Adams with exp_avg, exp_avg_sq (and max_exp_avg_sq).
    const slotNames = meta.slots ?? legacyAdamSlots(meta.hyperparams.amsgrad === true);
    const arrays: SlotArrays = { params: memory.params, slots: Object.fromEntries(slotNames.map((n) => [n, roomFor(memory, n)])) };
    const seqs = this.#store.readCheckpoint(meta, arrays);
    // What is stored is the state (a slot the hyperparameters no longer use is stored as it was, unread).
    const state: TreeState = {
      step: meta.step,
      scalars: { ...initialScalars(def), ...meta.scalars },
      slots: { ...arrays.slots },
      held: heldFromStored(meta.held, slotNames, tensors.length),
      counters: countersFromStored(meta.counters),
    };
    this.#replay(def, meta, arrays, memory.grads, seqs, tensors, groupOf);
    this.#loaded = { def, meta, layout, tensors, names, groups, groupOf, state, ...memory };
  }

  /**
   * Brings every checkpoint chunk to `meta.seq` by replaying the journalled steps it missed: on
   * the chunk's elements, each run of adjacent tensors of one group with that group's
   * hyperparameters at that step. The optimizers journalled are elementwise, every tensor of a
   * journalled step held the slots its group keeps, had the top-level counters and was stepped (a
   * step that changed either, or froze a tensor, rewrote every chunk), so this is the step, bit for bit.
   */
  #replay(def: AnyDef, meta: StoredMeta, arrays: SlotArrays, grads: FloatArray, seqs: number[], tensors: readonly TensorSpan[], groupOf: readonly number[]): void {
    const oldest = Math.min(...seqs);
    if (oldest === meta.seq) return;
    const per = chunkElements(meta.dtype);
    const stepRun = stepRunFor(def, this.#kernel);
    // Element runs of one group: [from, to, group].
    const runs: Array<[number, number, number]> = [];
    for (let t = 0; t < tensors.length; t++) {
      const { offset, size } = tensors[t]!;
      const last = runs[runs.length - 1];
      if (last && last[2] === groupOf[t] && last[1] === offset) last[1] = offset + size;
      else runs.push([offset, offset + size, groupOf[t]!]);
    }
    for (const entry of this.#store.journalAfter(oldest)) {
      this.#store.readJournalGrads(entry, grads);
      const hps = entry.groups ?? [{ ...entry.hyperparams, lr: entry.lr }];
      if (entry.groups && groupOf.some((g) => g >= hps.length)) throw new Error(`journal: step ${entry.seq} has ${hps.length} groups, fewer than the tensors are in`);
      for (let idx = 0; idx < seqs.length; idx++) {
        if (seqs[idx]! >= entry.seq) continue;
        if (seqs[idx]! !== entry.seq - 1) throw new Error(`journal: chunk ${idx} at ${seqs[idx]} cannot take step ${entry.seq}`);
        const start = idx * per;
        const end = Math.min(meta.size, start + per);
        for (const [from, to, g] of entry.groups ? runs : [[0, meta.size, 0] as const]) {
          const lo = Math.max(start, from);
          const hi = Math.min(end, to);
          if (lo >= hi) continue;
          const hp = hps[g]!;
          const view = (a: FloatArray) => a.subarray(lo, hi);
          const slots: Record<string, FloatArray> = {};
          for (const slot of def.slots) {
            if (!slot.present(hp)) continue;
            const a = arrays.slots[slot.name];
            if (!a) throw new Error(`journal: step ${entry.seq} needs the ${slot.name} slot, which is not stored`);
            slots[slot.name] = view(a);
          }
          stepRun({ dtype: meta.dtype, hp, params: view(arrays.params), grads: view(grads), shape: [hi - lo], slots, fresh: new Set(), step: entry.step, scalars: { ...initialScalars(def), ...entry.scalars } });
        }
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
  #locked<T>(tokenHash: string | null, fn: (loaded: Loaded) => T | Promise<T>, shard: 'prepare' | 'apply' | null = null): Promise<Outcome<T>> {
    return outcome(async () => {
      this.#authorized(tokenHash);
      const release = await this.#mutex.acquire();
      let held = false;
      try {
        // A shard's step applied in memory but never decided: every other call sees the stored state.
        // A shard: an undecided in-memory application is dropped by any call but an apply; the prepared
        // slice in `grads` is trusted only by the prepares and the apply that follow it (others may reuse the buffer).
        if (shard !== 'apply') this.#dropDryRun();
        if (shard === null) this.#prepared = null;
        const loaded = this.#authorized(tokenHash);
        const stored = loaded.meta;
        // Operations build their new metadata from this, so those that write it store the new
        // deadline with it, and answers (GET metadata) show it.
        const touched = (loaded.meta = { ...stored, touchedAt: Date.now() });
        let value: T;
        this.#holdLock = () => {
          held = true;
          return release;
        };
        try {
          value = await fn(loaded);
        } catch (e) {
          if (this.#loaded === loaded && loaded.meta === touched) loaded.meta = stored;
          throw e;
        } finally {
          this.#holdLock = null;
        }
        // Reads (and replays) wrote nothing: store the deadline alone.
        if (this.#loaded === loaded && loaded.meta === touched) this.#store.writeMeta(touched);
        this.#waiters.notify(this.#loaded?.meta.step ?? Infinity); // GET params?min_step
        return value;
      } catch (e) {
        held = false; // an answer that failed streams nothing
        throw e;
      } finally {
        if (!held) release();
      }
    });
  }

  #info(meta: StoredMeta, layout: TensorLayout, groups: ParamGroup[]): OptimizerInfo {
    const def = storedDef(meta);
    return {
      id: meta.id,
      optimizer: def.name,
      step: meta.step,
      skipped_steps: meta.skippedSteps ?? 0,
      hyperparams: meta.hyperparams,
      param_groups: groups,
      scalars: { ...initialScalars(def), ...meta.scalars },
      max_elements: meta.shards?.capacity ?? maxElementsOf(readLimits(this.env), def, meta.dtype),
      schedule: meta.schedule,
      next_lr: nextLr(meta),
      dtype: meta.dtype,
      layout,
      size: meta.size,
      missing: meta.missing,
      created_at: meta.createdAt,
      updated_at: meta.updatedAt,
      ttl: meta.ttl,
      expires_at: new Date(deadlineOf(meta)).toISOString(),
      shards: meta.shards?.placement.length ?? 1,
      ...(meta.accumulate ? { accumulate: accumulateInfo(meta.accumulate, this.#contributions.workers()) } : {}),
    };
  }

  #versionedInfo(loaded: Loaded): Versioned<OptimizerInfo> {
    return { etag: etagOf(loaded.meta), value: this.#info(loaded.meta, loaded.layout, loaded.groups) };
  }

  /**
   * The params: a copy when at most PARAMS_COPY_MAX bytes; larger, a stream read straight from the
   * object's memory piece by piece (a whole copy, and RPC's serialized copy of it, would add two
   * arrays to the isolate's peak), the running operation's lock held until it is read, cancelled,
   * or falls behind TRANSFER_PACE (as a snapshot is).
   */
  #paramsOut(loaded: Loaded): TensorsOut {
    const { params } = loaded;
    const out = { dtype: loaded.meta.dtype, layout: loaded.layout, size: params.length };
    if (params.byteLength <= PARAMS_COPY_MAX) return { ...out, data: new Uint8Array(params.buffer.slice(params.byteOffset, params.byteOffset + params.byteLength)) };
    if (!this.#holdLock) throw new Error('#paramsOut outside a locked operation');
    return { ...out, data: lockedByteStream([params], this.#holdLock()) };
  }

  /**
   * Decodes a complete tree (every tensor of the layout, as gradients are) into `target`, which
   * holds `meta.size` elements of the optimizer's dtype; 4xx problems name what is wrong. With
   * `nonfinite: "skip"`, NaN and ±Infinity (which raw and safetensors bodies can carry; JSON cannot)
   * pass, for the step to skip as GradScaler does; without it they are a 422 naming the element.
   */
  async #decodeAll(input: TensorsIn, loaded: Loaded, target: FloatArray, name: string): Promise<{ narrow: Narrow | null; frozen: boolean[]; sparse: Array<SparseRows | null> }> {
    const { meta, layout } = loaded;
    const none = loaded.tensors.map(() => false);
    let sparse: Array<SparseRows | null> = loaded.tensors.map(() => null);
    // A frozen (or sparse) tensor's part of `target` is zeros (a fingerprint, GradScaler's scan and clipping see no stale values).
    const zeroFrozen = (frozen: boolean[]) => {
      for (let t = 0; t < frozen.length; t++) if (frozen[t] || sparse[t]) target.fill(0, loaded.tensors[t]!.offset, loaded.tensors[t]!.offset + loaded.tensors[t]!.size);
      return frozen;
    };
    const own = wireDtypeOf(meta.dtype);
    const narrowBuffer = (dtype: WireDtype) => (dtype === own ? undefined : new Uint8Array(meta.size * WIRE_DTYPES[dtype].bytes));
    const finiteness = meta.hyperparams.nonfinite === 'skip' ? { allowNonFinite: true } : { nonFiniteHint: ' (or PATCH hyperparams.nonfinite to "skip" to skip such steps)' };
    if (input.format === 'json') {
      const frozen = frozenOf(input.frozen ?? [], layout, name);
      // A tensor given as {indices, values} is sparse: its rows aside, the rest is dense.
      const split = splitJsonRows(loaded.def, input.flat, layout, meta.dtype, name);
      sparse = split.rows;
      const skip = frozen.map((f, t) => f || sparse[t] !== null);
      if (!skip.some(Boolean)) {
        target.set(alignTo(split.dense, layout, [name], meta.dtype));
        return { narrow: null, frozen, sparse };
      }
      // The sent tensors match the layout without the frozen (and sparse) ones; each goes to its place.
      spreadTensors(alignTo(split.dense, withoutTensors(layout, skip), [name], meta.dtype), loaded.tensors, skip, target);
      return { narrow: null, frozen: zeroFrozen(frozen), sparse };
    }
    if (input.format === 'raw') {
      const src = input.dtype ?? own;
      checkFits(src, meta.dtype, ['Content-Type']);
      const keep = narrowBuffer(src);
      await readRaw(input.body, input.length, src, { out: target, offset: 0, count: meta.size, path: [name], keep, scan: this.#scan, ...finiteness });
      return { narrow: keep ? { dtype: src, bytes: keep } : null, frozen: none, sparse };
    }
    const index = namesOf(layout);
    let narrow: Narrow | null = null;
    let frozen = none;
    const rowsPlan: FileRows = { byValues: new Map(), budget: rowsBudget(meta.size, meta.dtype) };
    const indexBytes = new Map<string, Uint8Array>();
    await readSafetensors(input.body, input.length, (header) => {
      // One narrower type for every tensor: keep those bytes for the journal.
      const types = new Set(header.entries.map((e) => e.dtype));
      const [only] = types;
      const keep = types.size === 1 && only !== undefined ? narrowBuffer(only) : undefined;
      if (keep) narrow = { dtype: only!, bytes: keep };
      // grads.values/<name> (with grads.indices/<name>): a sparse gradient's rows, read aside.
      const places = header.entries.map((e) => ({ ...(planFileRows(loaded.def, header, index, meta.dtype, rowsPlan, e) ?? { ...placeByName(e, index, meta.dtype, target, name), keep }), scan: this.#scan, ...finiteness }));
      // A tensor left out is frozen (torch skips a parameter whose .grad is None); a file of no tensor
      // at all is more likely a mistake than a step that freezes everything (JSON nulls say that).
      if (header.entries.length === 0 && index.size > 0) {
        throw new WireError(422, ['safetensors'], 'the file holds no gradient: send at least one (a frozen tensor\'s may be left out; to freeze every tensor, send JSON nulls)');
      }
      const sent = new Set(header.entries.map((e) => rowsPlan.byValues.get(e.name)?.name ?? e.name));
      frozen = [...index.keys()].map((n) => !sent.has(n));
      checkRowsPlan(header, rowsPlan);
      return places;
    }, { is: isIndicesName(index), bytes: indexBytes });
    sparse = fileRows(rowsPlan, indexBytes, loaded.tensors.length);
    return { narrow, frozen: zeroFrozen(frozen), sparse };
  }

  /** Remembers a held contribution's Idempotency-Key for the step it joined (./accumulate.ts). */
  readonly #remember = (key: string, row: IdempotencyRow) => this.#store.rememberKey(key, row, IDEMPOTENCY_KEYS_KEPT);
  readonly #known = (key: string) => this.#store.idempotency(key) !== undefined;

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
        const def = optimizerDef(args.optimizer);
        if (!def) throw validationProblem([fieldError(['optimizer'], 'is not an optimizer of the registry', args.optimizer)]);
        const tensors = spansOf(layout);
        const names = namedLeaves(layout).map((l) => l.name);
        const groups = args.paramGroups;
        const groupOf = groupOfTensors(names, groups, args.groupsPath);
        const hps = checkedGroupHp(def, hyperparams, groups, groupOf, args.schedule, ['hyperparams'], args.groupsPath);
        checkShapes(def, layout, [args.params ? 'params' : 'shapes']);
        checkCheckpointHeader(def, layout, ['params']);
        checkAccumulates(def, args.accumulate, ['accumulate']);
        const size = layoutSize(layout);
        const perObject = args.maxElements ?? maxElementsOf(readLimits(this.env), def, dtype);
        const shards = (args.shards ?? 1) > 1 || size > perObject ? await this.#createShards(args, def, perObject, groupOf) : undefined;
        const memory = shards ? emptyMemory(dtype) : this.#allocate(def, dtype, size);
        if (args.params && !shards) memory.params.set(args.params);
        const state = freshState(def);
        if (!shards) keepSlots(def, hps, groupOf, tensors, state, (name) => roomFor(memory, name));
        const arrays = arraysOf(memory, state);
        const at = Date.now();
        const now = new Date(at).toISOString();
        const meta: StoredMeta = {
          version: 2,
          id: this.ctx.id.toString(),
          tokenHash: args.tokenHash,
          createdAt: now,
          updatedAt: now,
          seq: 0,
          revision: 0,
          dtype,
          size,
          optimizer: def.name,
          hyperparams,
          ...stateMeta(state, arrays),
          schedule: args.schedule,
          plateau: initialPlateau(args.schedule, groups),
          cursor: 0,
          missing: args.params || size === 0 ? [] : [[0, size]],
          ttl: args.ttl,
          touchedAt: at,
          owner: args.owner,
          skippedSteps: 0,
          ...(groups.length > 0 ? { groups: groups.length } : {}),
          ...(args.accumulate ? { accumulate: args.accumulate } : {}),
          ...(shards ? { shards } : {}),
        };
        try {
          this.#store.transaction(() => {
            this.#store.createTables();
            if (shards) {
              this.#store.writeMeta(meta);
              this.#store.writeLayout(layout);
            } else this.#store.writeCheckpoint(meta, arrays, layout);
            this.#store.writeGroups(groups);
          });
        } catch (e) {
          if (shards) await destroyShards(this.env, meta.id, shards);
          throw e;
        }
        this.#loaded = { def, meta, layout, tensors, names, groups, groupOf, state, ...memory };
        await this.ctx.storage.setAlarm(deadlineOf(meta));
        return this.#versionedInfo(this.#loaded);
      }),
    );
  }

  /**
   * A coordinator's shards (./shards.ts), created concurrently, each over its element range; all
   * deleted again should one fail.
   */
  async #createShards(args: CreateArgs, def: AnyDef, perObject: number, groupOf: readonly number[]): Promise<ShardsRecord> {
    const field = args.params ? 'params' : 'shapes';
    const placement = planShards(args.layout, perObject, args.shards, def.perTensor === true, field);
    // Each shard keeps the groups its pieces are in (in the coordinator's order): groups[i] lists their coordinator indices.
    const present = groupsPresent(placement, groupOf);
    const record: ShardsRecord = { secret: newShardSecret(), capacity: perObject, placement, ...(args.paramGroups.length > 0 ? { groups: present } : {}) };
    await createShardObjects(this.env, this.ctx.id.toString(), record, 0, (i) => ({
      optimizer: def.name,
      layout: shardLayout(args.layout, placement[i]!),
      params: args.params ? args.params.slice(placement[i]!.start, placement[i]!.end) : null,
      hyperparams: args.hyperparams,
      paramGroups: shardGroups(placement, i, present, args.paramGroups, groupOf),
      groupsPath: args.groupsPath,
      schedule: args.schedule,
      dtype: args.dtype,
    }));
    return record;
  }

  describe(tokenHash: string | null): Promise<Outcome<Versioned<OptimizerInfo>>> {
    return this.#locked(tokenHash, (loaded) => this.#versionedInfo(loaded));
  }

  /**
   * The params; with `wait.minStep`, only once the optimizer has completed that many steps: waits
   * (without the lock) up to `wait.seconds` for a step to land, then a 409 if it has not.
   */
  async params(tokenHash: string | null, wait?: { minStep: number; seconds: number }): Promise<Outcome<Versioned<{ step: number; params: TensorsOut }>>> {
    if (wait) {
      const authorized = await outcome(async () => this.#authorized(tokenHash));
      if (!authorized.ok) return authorized;
      await this.#waiters.until(wait.minStep, wait.seconds * 1000, () => this.#storedMeta()?.step ?? Infinity);
    }
    return this.#locked(tokenHash, async (loaded) => {
      if (wait && loaded.meta.step < wait.minStep) throw notReached(wait.minStep, loaded.meta.step, wait.seconds, loaded.meta.accumulate, this.#contributions.workers());
      if (loaded.meta.shards) {
        await this.#settleShards(loaded);
        return { etag: etagOf(loaded.meta), value: { step: loaded.meta.step, params: await this.#shardedParamsOut(loaded) } };
      }
      return { etag: etagOf(loaded.meta), value: { step: loaded.meta.step, params: this.#paramsOut(loaded) } };
    });
  }

  step(tokenHash: string | null, args: StepArgs): Promise<Outcome<Versioned<StepOut>>> {
    return this.#locked(tokenHash, async (loaded) => {
      if (loaded.meta.shards) return this.#shardedStep(loaded, args);
      if (args.partOffset !== undefined) throw validationProblem([fieldError(['part_offset'], 'is for sharded optimizers (one object\'s gradient fits one request): send the step whole', args.partOffset)]);
      const { def, meta, layout, grads, state } = loaded;
      checkWorker(meta.accumulate, args.worker, args.expectedStep);
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
      const seen = args.idempotencyKey === undefined ? undefined : this.#store.idempotency(args.idempotencyKey);
      if (args.grads.format !== 'json' && !seen) {
        // A binary body is checked after the preconditions, as a sharded optimizer (which streams it) checks it; a retry of a step answers first.
        if (args.grads.format === 'raw') checkFits(args.grads.dtype ?? wireDtypeOf(meta.dtype), meta.dtype, ['Content-Type']);
        checkIfMatch(args.ifMatch, etagOf(meta), meta.step);
        checkExpectedStep(args.expectedStep, meta.step);
        if (meta.missing.length > 0) throw incompleteUpload(meta, layout);
      }
      const { narrow, frozen, sparse } = await this.#decodeAll(args.grads, loaded, grads, 'grads');
      const print = args.idempotencyKey === undefined && !meta.accumulate ? '' : await fingerprint(meta.dtype, grads, args.loss, frozen, sparse);

      if (seen) {
        if (seen.fingerprint !== print) {
          throw validationProblem([headerError('Idempotency-Key', 'was already used for a step with different gradients or loss', args.idempotencyKey)]);
        }
        // The params this step produced (or left, when skipped): still current unless a later step or
        // an upload replaced them (an upload at the seq of a skipped step, before or after it, counts).
        const current = seen.seq === meta.seq && (meta.uploadedAtSeq ?? -1) < seen.seq;
        const params = args.returnParams && current ? this.#paramsOut(loaded) : null;
        lap('decode');
        const controls = { ...(seen.grad_norm === null ? {} : { gradNorm: seen.grad_norm }), ...(seen.skipped === null ? {} : { skipped: seen.skipped === 1 }) };
        return { etag: etagOf(meta), value: { step: seen.step, lr: seen.lr, replayed: true, ...controls, params, timings } };
      }
      checkIfMatch(args.ifMatch, etagOf(meta), meta.step);
      checkExpectedStep(args.expectedStep, meta.step);
      if (meta.missing.length > 0) throw incompleteUpload(meta, layout);
      // Many workers, one optimizer (./accumulate.ts): held until the set is complete; the last one steps with the reduced gradient.
      lap('decode');
      if (meta.accumulate) {
        const t = sparse.findIndex((r) => r !== null);
        if (t >= 0) {
          throw validationProblem([fieldError(['grads', ...leaves(layout)[t]!.path], 'is sparse (rows): a contribution to an accumulated step carries a dense gradient of every tensor')]);
        }
      }
      if (meta.accumulate && args.idempotencyKey === undefined) {
        // The same contribution again after the step it joined was skipped (see settle): that step's answer.
        const seen = this.#store.idempotency(skippedKey(args.worker!, print));
        if (seen && seen.seq === meta.seq && seen.step === meta.step) {
          lap('storage');
          return { etag: etagOf(meta), value: { step: seen.step, lr: seen.lr, replayed: true, skipped: true, ...(seen.grad_norm === null ? {} : { gradNorm: seen.grad_norm }), params: null, timings } };
        }
      }
      const accumulated = meta.accumulate
        ? this.#contributions.contribute({ spec: meta.accumulate, worker: args.worker, step: meta.step, grads, frozen, fingerprint: print, loss: args.loss, idempotencyKey: args.idempotencyKey, skipNonFinite: meta.hyperparams.nonfinite === 'skip', scan: this.#scan })
        : null;
      if (accumulated && 'pending' in accumulated) {
        lap('storage');
        return { etag: etagOf(meta), value: { step: meta.step, lr: 0, replayed: accumulated.pending.replayed, params: null, timings, pending: accumulated.pending } };
      }
      const completed = accumulated?.completed;
      if (completed) args = { ...args, loss: completed.loss };

      const hp = meta.hyperparams;
      const lr = learningRate(fixedLr(hp), meta.schedule, meta.step, meta.plateau);
      if (!Number.isFinite(lr)) throw scheduleOverflow(meta.step, lr);
      // Each group's hyperparameters, lr resolved (index 0: the top-level set), as the stateless step resolves them.
      const groupHp = stepGroupHp(loaded, lr);
      // Sparse (row) gradients: what torch refuses with them (or, SparseAdam, without them), before anything changes.
      const withRows = sparse.some((r, t) => r !== null && !frozen[t]);
      const leafPaths = withRows || def.sparse === 'only' ? leaves(layout).map((l) => l.path) : [];
      if (withRows || def.sparse === 'only') checkRows({ def, format: args.grads.format, rows: sparse, frozen, names: loaded.names, paths: leafPaths, shapes: loaded.tensors.map((t) => t.shape), groupHp, groupOf: loaded.groupOf, hp });
      const scalarsBefore = state.scalars;
      const countersBefore = state.counters.size;
      const shapeBefore = slotShape(state);
      // Gradient controls, as the stateless step applies them (src/optim/engine.ts): GradScaler's
      // skip looks at the gradients first; then clip_grad_norm_, clip_grad_value_.
      const skipMode = hp.nonfinite === 'skip';
      // A skipped step changes no state (so no ETag) but is counted, recorded in the history and
      // remembers its key, so a retry answers it without counting it again.
      const skippedAnswer = (gradNorm?: number) => {
        lap('kernel');
        const current = this.#loaded ?? loaded; // a reload after a non-finite result replaced it
        const next: StoredMeta = { ...meta, skippedSteps: (meta.skippedSteps ?? 0) + 1 };
        const controls = { grad_norm: gradNorm ?? null, skipped: 1 };
        this.#store.transaction(() => {
          this.#store.writeMeta(next);
          this.#store.addHistory({ step: meta.step, lr, loss: args.loss ?? null, at: new Date().toISOString(), ...controls }, HISTORY_KEPT);
          if (args.idempotencyKey !== undefined) {
            this.#store.rememberKey(args.idempotencyKey, { seq: meta.seq, fingerprint: print, step: meta.step, lr, ...controls }, IDEMPOTENCY_KEYS_KEPT);
          }
          completed?.settle({ seq: meta.seq, step: meta.step, lr, ...controls }, this.#remember, this.#known);
        });
        current.meta = next;
        lap('storage');
        return { etag: etagOf(meta), value: { step: meta.step, lr, replayed: false, gradNorm, skipped: true, params: args.returnParams ? this.#paramsOut(current) : null, timings } };
      };
      if (skipMode && (this.#scan(grads) >= 0 || rowsNonFinite(sparse))) return skippedAnswer();
      const clipping = hp.clip_grad_norm !== undefined || hp.clip_grad_value !== undefined;
      // The journal keeps the clipped gradient: a replay steps it as it is.
      const journalNarrow = clipping || completed ? null : narrow;
      lap('decode');
      // In place, through the stateless step's engine (so the same numbers): storage is the undo
      // log, a non-finite result reloads the stored state.
      const outcome = engineStep({
        def,
        dtype: meta.dtype,
        tensors: loaded.tensors,
        groupHp,
        groupOf: loaded.groupOf,
        params: loaded.params,
        grads,
        frozen,
        sparse,
        state,
        clipGradNorm: hp.clip_grad_norm as number | undefined,
        clipGradValue: hp.clip_grad_value as number | undefined,
        nonfinite: 'error',
        allocate: (name) => roomFor(loaded, name),
        stepRun: stepRunFor(def, this.#kernel),
        scan: this.#scan,
      });
      const { gradNorm } = outcome;
      if (!outcome.applied) {
        this.#load();
        if (skipMode) return skippedAnswer(gradNorm);
        throw new ProblemError(422, 'non-finite-result', 'the step would produce a non-finite value (overflow); nothing was changed', [
          fieldError(['grads', ...pathOfIndex(layout, outcome.nonFinite.index)], 'leads to a non-finite parameter or moment'),
        ]);
      }
      const arrays = arraysOf(loaded, state);
      // A slot the step created (SGD's momentum_buffer on its first step) is the object's from now on.
      for (const [name, a] of Object.entries(arrays.slots)) loaded.room[name] = a;
      // Older chunks have no row of a slot the step created, nor its values for a tensor that now holds one.
      const created = slotShape(state) !== shapeBefore;

      lap('kernel');
      const at = new Date().toISOString();
      const next: StoredMeta = {
        ...meta,
        ...stateMeta(state, arrays),
        optimizer: def.name,
        seq: meta.seq + 1,
        revision: meta.revision + 1,
        updatedAt: at,
        plateau: args.loss === undefined ? meta.plateau : reportGroups(meta.schedule, meta.plateau, reportMetric(meta.schedule, meta.plateau, args.loss), args.loss),
      };
      try {
        this.#store.transaction(() => {
          const journalled = journalNarrow ?? { dtype: undefined, bytes: new Uint8Array(grads.buffer, grads.byteOffset, grads.byteLength) };
          const entry = {
            seq: next.seq,
            dtype: journalled.dtype,
            step: meta.step,
            lr,
            hyperparams: meta.hyperparams,
            ...(def.scalars.length > 0 ? { scalars: scalarsBefore } : {}),
            ...(loaded.groups.length > 0 ? { groups: groupHp } : {}),
          };
          // Not journalled: a step that created a slot (or one for a tensor), a step with frozen tensors
          // or from per-tensor counters (a replay steps every tensor from the top-level ones), and
          // optimizers that step whole tensors.
          // A step with sparse gradients too (the journal keeps dense gradients only).
          const checkpoint = created || countersBefore > 0 || frozen.some(Boolean) || def.perTensor === true || withRows;
          next.cursor = this.#store.appendStep(next, arrays, journalled.bytes, entry, checkpoint);
          this.#store.writeMeta(next);
          const controls = { grad_norm: gradNorm ?? null, skipped: skipMode ? 0 : null };
          this.#store.addHistory({ step: next.step, lr, loss: args.loss ?? null, at, grad_norm: controls.grad_norm, skipped: null }, HISTORY_KEPT);
          if (args.idempotencyKey !== undefined) {
            this.#store.rememberKey(args.idempotencyKey, { seq: next.seq, fingerprint: print, step: next.step, lr, ...controls }, IDEMPOTENCY_KEYS_KEPT);
          }
          completed?.settle({ seq: next.seq, step: next.step, lr, ...controls }, this.#remember, this.#known);
        });
      } catch (e) {
        this.#load(); // the write failed and rolled back: drop the in-memory update too
        throw e;
      }
      loaded.meta = next;
      lap('storage');
      return {
        etag: etagOf(next),
        value: { step: next.step, lr, replayed: false, gradNorm, ...(skipMode ? { skipped: false } : {}), params: args.returnParams ? this.#paramsOut(loaded) : null, timings },
      };
    });
  }

  /**
   * A coordinator's step (./shards.ts): the gradient read, checked and handed to the shards slice
   * by slice; the whole-gradient decisions (skip, clip_grad_norm_'s coefficient) taken as the
   * unsharded step takes them; every shard applies in memory; then the decision is stored (the
   * commit point) and every shard stores its step. Answers as the unsharded step does.
   */
  async #shardedStep(loaded: Loaded, args: StepArgs): Promise<Versioned<StepOut>> {
    await this.#settleShards(loaded);
    const { def, meta, layout } = loaded;
    const record = meta.shards!;
    checkWorker(meta.accumulate, args.worker, args.expectedStep);
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
    const input = args.grads;
    let grads: GradientSlices;
    if (input.format === 'json') {
      const frozen = frozenOf(input.frozen ?? [], layout, 'grads');
      // A tensor given as {indices, values} is sparse: its rows aside, the rest is dense.
      const { dense, rows } = splitJsonRows(def, input.flat, layout, meta.dtype, 'grads');
      const skip = frozen.map((f, t) => f || rows[t] !== null);
      const sent = alignTo(dense, withoutTensors(layout, skip), ['grads'], meta.dtype);
      // A frozen or sparse tensor's part is zeros, never sent to a shard.
      const values = skip.some(Boolean) ? spreadTensors(sent, loaded.tensors, skip, new (meta.dtype === 'float32' ? Float32Array : Float64Array)(meta.size)) : sent;
      grads = { kind: 'values', values, frozen, rows };
      if (meta.accumulate) {
        const t = rows.findIndex((r) => r !== null);
        if (t >= 0) throw validationProblem([fieldError(['grads', ...leaves(layout)[t]!.path], 'is sparse (rows): a contribution to an accumulated step carries a dense gradient of every tensor')]);
      }
    } else if (input.format === 'raw') {
      const src = input.dtype ?? wireDtypeOf(meta.dtype);
      checkFits(src, meta.dtype, ['Content-Type']);
      grads = { kind: 'raw', body: input.body, length: input.length, src, nonFiniteHint: ' (or PATCH hyperparams.nonfinite to "skip" to skip such steps)' };
    } else grads = { kind: 'safetensors', body: input.body, length: input.length, nonFiniteHint: ' (or PATCH hyperparams.nonfinite to "skip" to skip such steps)' };
    const hp = meta.hyperparams;
    const skipMode = hp.nonfinite === 'skip';
    const seq = meta.seq + 1;
    // What torch refuses with sparse gradients (or, SparseAdam, without them), as unsharded: before any row is sent.
    const checkSparse = (rows: ReadonlyArray<SparseRows | null>, frozen: readonly boolean[], format: 'json' | 'raw' | 'safetensors') =>
      checkRows({ def, format, rows, frozen, names: loaded.names, paths: leaves(layout).map((l) => l.path), shapes: loaded.tensors.map((t) => t.shape), groupHp: stepGroupHp(loaded, learningRate(fixedLr(meta.hyperparams), meta.schedule, meta.step, meta.plateau)), groupOf: loaded.groupOf, hp: meta.hyperparams });
    const common = { env: this.env, id: meta.id, record, layout, dtype: meta.dtype, size: meta.size, seq, grads, allowNonFinite: skipMode, loss: args.loss, def, checkSparse };
    const seen = args.idempotencyKey === undefined ? undefined : this.#store.idempotency(args.idempotencyKey);
    // Read only to compare (a replay, a held contribution): what torch refuses is not asked again (the hyperparameters may have changed since).
    const prepare = (norms: boolean, send: boolean, contribution?: { worker: number }) =>
      prepareShards({ ...common, norms, send, hash: args.idempotencyKey !== undefined || contribution !== undefined, contribution, ...(send ? {} : { checkSparse: () => {} }) });
    const inParts = args.partOffset !== undefined;
    if (inParts) checkPart(args, meta);
    if (seen) {
      // A part of a step already applied answers as that step when it is one of its parts, byte for byte (the key's row lists each part's digest).
      const print = inParts ? await this.#partPrint(seen.fingerprint, args, common) : (await prepare(false, false)).fingerprint;
      if (seen.fingerprint !== print) throw validationProblem([headerError('Idempotency-Key', 'was already used for a step with different gradients or loss', args.idempotencyKey)]);
      const current = seen.seq === meta.seq && (meta.uploadedAtSeq ?? -1) < seen.seq;
      const params = args.returnParams && current ? await this.#shardedParamsOut(loaded) : null;
      lap('decode');
      const controls = { ...(seen.grad_norm === null ? {} : { gradNorm: seen.grad_norm }), ...(seen.skipped === null ? {} : { skipped: seen.skipped === 1 }) };
      return { etag: etagOf(meta), value: { step: seen.step, lr: seen.lr, replayed: true, ...controls, params, timings } };
    }
    checkIfMatch(args.ifMatch, etagOf(meta), meta.step);
    checkExpectedStep(args.expectedStep, meta.step);
    if (meta.missing.length > 0) throw incompleteUpload(meta, layout);
    const lr = learningRate(fixedLr(hp), meta.schedule, meta.step, meta.plateau);
    if (!Number.isFinite(lr)) throw scheduleOverflow(meta.step, lr);
    const clipNorm = hp.clip_grad_norm as number | undefined;
    // Many workers, one optimizer (./accumulate.ts): each contribution's slices are stored by the
    // shards, its row held here; the last one of a set has every shard reduce the set as prepared step
    // `seq`, and the step goes on from there.
    let completed: Completed | undefined;
    let set: ShardReduce | undefined;
    let prepared: Prepared;
    if (inParts) {
      const received = await this.#receivePart(loaded, args, common);
      if ('answer' in received) {
        lap('decode');
        return { etag: etagOf(loaded.meta), value: { step: meta.step, lr: 0, replayed: received.answer.replayed, params: null, timings, part: received.answer } };
      }
      prepared = received.prepared;
    } else if (meta.accumulate) {
      this.#dropAssembly(loaded); // another step: the parts received count for nothing
      const spec = meta.accumulate;
      const worker = args.worker!;
      const held = this.#contributions.workers();
      // A worker's contribution already held is only compared (a replay or a 409), never sent again.
      prepared = await prepare(false, !held.includes(worker), { worker });
      if (args.idempotencyKey === undefined) {
        // The same contribution again after the step it joined was skipped: that step's answer.
        const seen = this.#store.idempotency(skippedKey(worker, prepared.fingerprint));
        if (seen && seen.seq === meta.seq && seen.step === meta.step) {
          return { etag: etagOf(meta), value: { step: seen.step, lr: seen.lr, replayed: true, skipped: true, ...(seen.grad_norm === null ? {} : { gradNorm: seen.grad_norm }), params: null, timings } };
        }
      }
      const accumulated = this.#contributions.contribute({
        spec,
        worker,
        step: meta.step,
        grads: new Float32Array(0), // the coordinator holds rows only: the shards hold the gradients
        frozen: prepared.frozen,
        fingerprint: prepared.fingerprint,
        loss: args.loss,
        idempotencyKey: args.idempotencyKey,
        skipNonFinite: skipMode,
        scan: () => -1,
      });
      if ('pending' in accumulated) {
        lap('storage');
        return { etag: etagOf(meta), value: { step: meta.step, lr: 0, replayed: accumulated.pending.replayed, params: null, timings, pending: accumulated.pending } };
      }
      completed = accumulated.completed;
      args = { ...args, loss: completed.loss };
      set = { workers: [...held, worker].sort((a, b) => a - b), contributions: spec.contributions, reduce: spec.reduce };
      let bad;
      try {
        bad = await reduceShards(this.env, meta.id, record, seq, set);
        if (bad && !skipMode) {
          throw new ProblemError(422, 'non-finite-result', `the ${spec.reduce} of the ${spec.contributions} contributions is ${bad.value} at element ${bad.index} (it overflows); nothing was changed (or PATCH hyperparams.nonfinite to "skip" to skip such steps)`, [
            fieldError(['grads', bad.index], 'overflows in the reduced gradient'),
          ]);
        }
        // clip_grad_norm_ of the reduced gradient, which only the shards hold: folded shard by shard.
        const norms = clipNorm !== undefined && !bad ? await foldShardNorms(this.env, meta.id, record, layout, meta.dtype, seq) : null;
        prepared = { ...prepared, nonFinite: bad ? bad.index : -1, norms };
      } catch (e) {
        await abortShards(this.env, meta.id, record, seq);
        throw e;
      }
    } else {
      this.#dropAssembly(loaded);
      prepared = await prepare(clipNorm !== undefined, true);
    }
    const print = prepared.fingerprint;
    lap('decode');
    const keyRow = (row: Omit<IdempotencyRow, 'fingerprint'>) => {
      if (args.idempotencyKey !== undefined) this.#store.rememberKey(args.idempotencyKey, { ...row, fingerprint: print }, IDEMPOTENCY_KEYS_KEPT);
    };
    // As the unsharded step's skippedAnswer: counted, in the history, its key remembered; no state changed.
    const skipped = async (gradNorm?: number) => {
      const next: StoredMeta = { ...meta, skippedSteps: (meta.skippedSteps ?? 0) + 1, shards: { ...record, assembling: null } };
      const controls = { grad_norm: gradNorm ?? null, skipped: 1 };
      this.#store.transaction(() => {
        this.#store.writeMeta(next);
        this.#store.addHistory({ step: meta.step, lr, loss: args.loss ?? null, at: new Date().toISOString(), ...controls }, HISTORY_KEPT);
        keyRow({ seq: meta.seq, step: meta.step, lr, ...controls });
        completed?.settle({ seq: meta.seq, step: meta.step, lr, ...controls }, this.#remember, this.#known);
      });
      loaded.meta = next;
      // Only once the skip is stored do the shards drop the step (and a consumed set's slices: best
      // effort, a worker's next contribution replaces any left).
      await abortShards(this.env, meta.id, record, seq, completed !== undefined);
      lap('storage');
      const params = args.returnParams ? await this.#shardedParamsOut(loaded) : null;
      return { etag: etagOf(meta), value: { step: meta.step, lr, replayed: false, gradNorm, skipped: true, params, timings } };
    };
    if (skipMode && prepared.nonFinite >= 0) return skipped();
    // torch's total norm stacks the norms of the gradients it has: a frozen tensor's is not one of them.
    const gradNorm = prepared.norms ? norm2(meta.dtype, prepared.norms.filter((_, t) => !prepared.frozen[t])) : undefined;
    const groupHp = stepGroupHp(loaded, lr);
    const frozen = prepared.frozen.flatMap((f, t) => (f ? [t] : []));
    const decision: ShardDecision = {
      seq,
      groupHp,
      coef: gradNorm === undefined ? null : clipCoefficient(meta.dtype, gradNorm, clipNorm!),
      clipValue: (hp.clip_grad_value as number | undefined) ?? null,
      ...(frozen.length > 0 ? { frozen } : {}),
      ...(prepared.sparse.some(Boolean) ? { sparse: prepared.sparse.flatMap((x, t) => (x && !prepared.frozen[t] ? [t] : [])) } : {}),
      ...(set ? { accumulate: set } : {}),
    };
    let tried;
    try {
      tried = await tryShards(this.env, meta.id, record, decision);
    } catch (e) {
      this.#dropAssembly(loaded);
      await abortShards(this.env, meta.id, record, seq);
      throw e;
    }
    lap('kernel');
    if (tried.nonFinite >= 0) {
      if (skipMode) return skipped(gradNorm);
      this.#dropAssembly(loaded);
      await abortShards(this.env, meta.id, record, seq);
      throw new ProblemError(422, 'non-finite-result', 'the step would produce a non-finite value (overflow); nothing was changed', [
        fieldError(['grads', ...pathOfIndex(layout, tried.nonFinite)], 'leads to a non-finite parameter or moment'),
      ]);
    }
    const at = new Date().toISOString();
    const next: StoredMeta = {
      ...meta,
      step: tried.step,
      scalars: tried.scalars,
      seq,
      revision: meta.revision + 1,
      updatedAt: at,
      plateau: args.loss === undefined ? meta.plateau : reportGroups(meta.schedule, meta.plateau, reportMetric(meta.schedule, meta.plateau, args.loss), args.loss),
      shards: { ...record, assembling: null, pending: decision },
    };
    const controls = { grad_norm: gradNorm ?? null, skipped: skipMode ? 0 : null };
    SHARD_FAULTS.beforeDecision?.();
    // The commit point: from here the step is applied, whatever fails next (the next call completes it).
    this.#store.transaction(() => {
      this.#store.writeMeta(next);
      this.#store.addHistory({ step: next.step, lr, loss: args.loss ?? null, at, grad_norm: controls.grad_norm, skipped: null }, HISTORY_KEPT);
      keyRow({ seq, step: next.step, lr, ...controls });
      completed?.settle({ seq, step: next.step, lr, ...controls }, this.#remember, this.#known);
    });
    loaded.meta = next;
    SHARD_FAULTS.afterDecision?.();
    // Past the commit point the step is applied whatever fails now: a shard that could not store it
    // does at the coordinator's next call. The answer then carries no params (they are not readable yet).
    let settled = true;
    try {
      await this.#settleShards(loaded);
    } catch (e) {
      console.error(`sharded step ${seq} decided; a shard did not store it yet (the next call completes it)`, e);
      settled = false;
    }
    lap('storage');
    const params = args.returnParams && settled ? await this.#shardedParamsOut(loaded) : null;
    return { etag: etagOf(next), value: { step: next.step, lr, replayed: false, gradNorm, ...(skipMode ? { skipped: false } : {}), params, timings } };
  }

  /**
   * A part of a step in parts (./shards.ts StepAssembly): read, checked and handed to the shards
   * under the step's attempt, its norms folded on from the last part's; the record stored for the
   * next part (202), or, when it reaches the last element, the whole step's prepared gradient. A
   * retry of the last part answers the same; any failure drops the parts received (start again at 0).
   */
  async #receivePart(loaded: Loaded, args: StepArgs, common: Omit<Parameters<typeof prepareShards>[0], 'norms' | 'send' | 'hash'>): Promise<{ answer: PartOut } | { prepared: Prepared }> {
    const { meta } = loaded;
    const record = meta.shards!;
    const key = args.idempotencyKey!;
    const input = args.grads as Extract<TensorsIn, { format: 'raw' }>;
    const src = input.dtype ?? wireDtypeOf(meta.dtype);
    checkFits(src, meta.dtype, ['Content-Type']);
    const offset = args.partOffset!;
    const seq = meta.seq + 1;
    let asm = record.assembling?.key === key && record.assembling.seq === seq ? record.assembling : null;
    const answer = (a: StepAssembly, replayed: boolean): { answer: PartOut } => ({ answer: { step: meta.step, offset, received: a.received, missing: meta.size - a.received, replayed } });
    const sentBefore = asm ? asm.offsets.indexOf(offset) : -1;
    if (asm && sentBefore >= 0) {
      // A part received before, again (a retry): the same bytes answer the same; others are another part under the same key.
      const again = await prepareShards({ ...common, norms: false, send: false, hash: false, part: { ...asm, offset } });
      if (again.part!.digests.at(-1) === asm.digests[sentBefore]) return answer(asm, true);
      throw validationProblem([headerError('Idempotency-Key', `was already used for the part at element ${offset} with other bytes (a new step in parts needs a new key)`, key)]);
    }
    if (!asm) {
      if (offset !== 0) throw new ProblemError(409, 'conflict', `no step in parts is under way for this Idempotency-Key: send its first part with part_offset=0`, [fieldError(['part_offset'], 'must be 0 for the first part', offset)], { step: meta.step });
      asm = { key, seq, attempt: newShardSecret().slice(0, 32), src, received: 0, offset: 0, norms: [], folds: {}, nonFinite: -1, digests: [], offsets: [] };
    } else if (offset !== asm.received) {
      throw new ProblemError(409, 'conflict', `the next part of this step starts at element ${asm.received} (${meta.size - asm.received} still to send)`, [fieldError(['part_offset'], `must be ${asm.received}`, offset)], { step: meta.step });
    }
    if (asm.digests.length >= MAX_STEP_PARTS) {
      throw validationProblem([fieldError(['part_offset'], `a step takes at most ${MAX_STEP_PARTS} parts (this would be part ${asm.digests.length + 1}): send larger ones; the parts received are kept`, offset)]);
    }
    if (asm.src !== src) throw validationProblem([headerError('Content-Type', `must name the dtype the first part came in (${WIRE_DTYPES[asm.src].name}): every part of a step comes in one`, WIRE_DTYPES[src].name)]);
    let next: StepAssembly;
    try {
      // Norms are always folded (a PATCH of clip_grad_norm may come before the last part).
      next = (await prepareShards({ ...common, norms: true, send: true, hash: false, part: { ...asm, offset } })).part!;
    } catch (e) {
      this.#dropAssembly(loaded);
      throw e;
    }
    if (next.received < meta.size) {
      const stored: StoredMeta = { ...loaded.meta, shards: { ...loaded.meta.shards!, assembling: next } };
      this.#store.writeMeta(stored);
      loaded.meta = stored;
      return answer(next, false);
    }
    // A non-finite element let through under nonfinite: "skip", PATCHed to "error" since: the whole step's 422 (the parts are dropped).
    if (next.nonFiniteError && meta.hyperparams.nonfinite !== 'skip') {
      this.#dropAssembly(loaded);
      throw new WireError(422, next.nonFiniteError.where, next.nonFiniteError.message);
    }
    // The last part: the step's fingerprint is over every part's SHA-256, in order, and lists each part's (a part sent again after the step is compared with it).
    const whole = hex(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(`${meta.dtype}:${meta.size}:${args.loss ?? ''}:parts:${next.digests.join(',')}`)));
    const print = `${whole} parts ${next.offsets.map((o, k) => `${o}:${next.digests[k]!.slice(0, PART_DIGEST_CHARS)}`).join(',')}`;
    const none = loaded.tensors.map(() => false);
    return { prepared: { nonFinite: next.nonFinite, norms: meta.hyperparams.clip_grad_norm === undefined ? null : next.norms.map(Number), frozen: none, sparse: none, fingerprint: print } };
  }

  /**
   * A part sent under the key of a step in parts already applied: that step's fingerprint when the
   * part is one of its parts (the same offset and bytes), else another (the caller's 422).
   */
  async #partPrint(stored: string, args: StepArgs, common: Omit<Parameters<typeof prepareShards>[0], 'norms' | 'send' | 'hash'>): Promise<string> {
    const listed = / parts (.*)$/.exec(stored)?.[1];
    const offset = args.partOffset!;
    const digest = listed?.split(',').find((p) => p.startsWith(`${offset}:`))?.slice(`${offset}:`.length);
    if (digest === undefined) return '';
    const src = (args.grads as Extract<TensorsIn, { format: 'raw' }>).dtype ?? wireDtypeOf(common.dtype);
    const probe: StepAssembly = { key: args.idempotencyKey!, seq: 0, attempt: '', src, received: offset, offset, norms: [], folds: {}, nonFinite: -1, digests: [], offsets: [] };
    const read = await prepareShards({ ...common, allowNonFinite: true, norms: false, send: false, hash: false, part: probe });
    return read.part!.digests.at(-1)!.slice(0, PART_DIGEST_CHARS) === digest ? stored : '';
  }

  /** Drops a step in parts under way (another step, a restore or an upload came first): its parts count for nothing. */
  #dropAssembly(loaded: Loaded): void {
    const shards = loaded.meta.shards;
    if (!shards?.assembling) return;
    const next: StoredMeta = { ...loaded.meta, shards: { ...shards, assembling: null } };
    this.#store.writeMeta(next);
    loaded.meta = next;
  }

  /**
   * A coordinator's upload: decoded and checked whole here (at most SHARDED_UPLOAD_BYTES of values per
   * request, so nothing reaches a shard unless all of it is valid), then each element range written
   * to the shards holding it.
   */
  async #shardedUpload(loaded: Loaded, args: UploadArgs): Promise<Versioned<OptimizerInfo>> {
    await this.#settleShards(loaded);
    this.#dropAssembly(loaded); // parts of a step computed for the params replaced
    const { meta, layout } = loaded;
    const record = meta.shards!;
    const item = meta.dtype === 'float32' ? 4 : 8;
    const most = SHARDED_UPLOAD_BYTES / item;
    const alloc = (n: number) => (meta.dtype === 'float32' ? new Float32Array(n) : new Float64Array(n));
    const tooMany = (n: number) =>
      new ProblemError(413, 'payload-too-large', `this upload holds ${n} elements: a sharded optimizer takes at most ${most} ${meta.dtype} elements (${SHARDED_UPLOAD_BYTES} bytes) per PUT; send them in parts`);
    const parts: Array<{ start: number; values: FloatArray }> = [];
    const input = args.body;
    if (input.format === 'raw') {
      const { start, room, path, offset } = rawUploadTarget(layout, meta.size, args);
      const src = input.dtype ?? wireDtypeOf(meta.dtype);
      checkFits(src, meta.dtype, ['Content-Type']);
      const bytes = WIRE_DTYPES[src].bytes;
      if (input.length !== null && input.length / bytes > most && input.length <= (room - offset) * bytes) throw tooMany(input.length / bytes);
      const values = alloc(Math.min(room - offset, most));
      const count = await readRaw(input.body, input.length, src, { out: values, offset: 0, count: values.length, path }, true);
      if (count === 0) throw validationProblem([fieldError(['body'], 'is empty: send the elements to write')]);
      parts.push({ start: start + offset, values: values.subarray(0, count) });
    } else if (input.format === 'safetensors') {
      const index = namesOf(layout);
      await readSafetensors(input.body, input.length, (header) => {
        const places = header.entries.map((e) => placeByName(e, index, meta.dtype, alloc(0), 'params'));
        const total = places.reduce((n, p) => n + p.count, 0);
        if (total > most) throw tooMany(total);
        const out = alloc(total);
        let at = 0;
        return places.map((p) => {
          parts.push({ start: p.offset, values: out.subarray(at, at + p.count) });
          const placed = { ...p, out, offset: at };
          at += p.count;
          return placed;
        });
      });
    } else {
      const values = input.flat.values;
      for (const { sent, leaf, path } of jsonUploadTensors(layout, input.flat.layout)) {
        const out = alloc(leaf.size);
        out.set(values.subarray(sent.offset, sent.offset + sent.size));
        checkFinite({ out, offset: 0, count: leaf.size, path });
        parts.push({ start: leaf.offset, values: out });
      }
    }
    if (parts.length === 0) throw validationProblem([fieldError(['params'], 'names no tensor: send at least one')]);
    let missing = meta.missing;
    for (const p of parts) missing = subtractRange(missing, p.start, p.start + p.values.length);
    if (missing.length > MAX_MISSING_RANGES) {
      throw validationProblem([fieldError(['offset'], `the params still to upload would fall into more than ${MAX_MISSING_RANGES} pieces: upload in larger, contiguous parts`)]);
    }
    // Everything is checked: each range goes to the shards it meets (one upload per shard and range).
    const writes: Array<Promise<unknown>> = [];
    for (const p of parts) {
      const end = p.start + p.values.length;
      record.placement.forEach((shard, i) => {
        const a = Math.max(p.start, shard.start);
        const b = Math.min(end, shard.end);
        if (a >= b) return;
        const slice = p.values.slice(a - p.start, b - p.start);
        const body = new Uint8Array(slice.buffer);
        writes.push(shardStub(this.env, meta.id, i).upload(record.secret, { body: { format: 'raw', dtype: null, body, length: body.length }, offset: a - shard.start }).then(unwrapOutcome));
      });
    }
    const written = await Promise.allSettled(writes);
    const failed = written.find((w) => w.status === 'rejected');
    if (failed) {
      // Some shards may hold new values: a new revision (ETag), though `missing` stays as it was (upload again).
      if (written.some((w) => w.status === 'fulfilled')) {
        const changed: StoredMeta = { ...meta, revision: meta.revision + 1, uploadedAtSeq: meta.seq, updatedAt: new Date().toISOString() };
        this.#store.writeMeta(changed);
        loaded.meta = changed;
      }
      throw failed.reason;
    }
    const next: StoredMeta = { ...meta, missing, revision: meta.revision + 1, uploadedAtSeq: meta.seq, updatedAt: new Date().toISOString() };
    this.#store.writeMeta(next);
    loaded.meta = next;
    return this.#versionedInfo(loaded);
  }

  /** Completes a decided step some shard has not stored yet (a coordinator that failed after its commit point). */
  async #settleShards(loaded: Loaded): Promise<void> {
    const record = loaded.meta.shards;
    const extra = record && (record.objects ?? 0) > record.placement.length;
    if (!record?.pending && !record?.restoring && !record?.regroup && !extra) return;
    if (record.pending) await commitShards(this.env, loaded.meta.id, record, record.pending);
    if (record.regroup) {
      // A PATCH's new groups or slots: each shard updated as an unsharded PATCH (the same request twice changes nothing more).
      const { meta } = loaded;
      await Promise.all(
        record.placement.map(async (_, i) => {
          const own = shardGroups(record.placement, i, record.groups ?? [], loaded.groups, loaded.groupOf);
          unwrapOutcome(await shardStub(this.env, meta.id, i).update(record.secret, { hyperparams: meta.hyperparams, paramGroups: own.length > 0 ? own : null, schedule: meta.schedule }));
        }),
      );
    }
    if (record.restoring) {
      const { attempt, lengths } = record.restoring;
      await Promise.all(lengths.map(async (length, i) => unwrapOutcome(await shardStub(this.env, loaded.meta.id, i).shardRestore(record.secret, { attempt, length, commit: true }))));
    }
    // Shard objects beyond the placement (a restore's to another layout): removed once it is stored.
    if (extra) await destroyShards(this.env, loaded.meta.id, record, record.placement.length);
    const { regroup: _regroup, objects: _objects, ...settled } = record;
    const next: StoredMeta = { ...loaded.meta, shards: { ...settled, pending: null, restoring: null } };
    this.#store.writeMeta(next);
    loaded.meta = next;
  }

  /** A coordinator's params, gathered from its shards in layout order: a copy when small, else a stream holding the lock (as #paramsOut). */
  async #shardedParamsOut(loaded: Loaded): Promise<TensorsOut> {
    const { meta } = loaded;
    const out = { dtype: meta.dtype, layout: loaded.layout, size: meta.size };
    const bytes = meta.size * (meta.dtype === 'float32' ? 4 : 8);
    if (bytes <= PARAMS_COPY_MAX) return { ...out, data: await readAll(gatherStream(this.env, meta.id, meta.shards!, ['params'], () => {}), bytes) };
    if (!this.#holdLock) throw new Error('#shardedParamsOut outside a locked operation');
    return { ...out, data: gatherStream(this.env, meta.id, meta.shards!, ['params'], this.#holdLock()) };
  }

  /**
   * A coordinator's restore from a safetensors checkpoint (./shards.ts): each shard is sent a
   * checkpoint file of its pieces, which it stages durably and checks as an unsharded restore would
   * (nothing stored); then the coordinator stores its decision (the new step, hyperparameters,
   * schedule) and every shard stores its restore from the staged file. The checkpoint's
   * param_groups replace the optimizer's, as unsharded: each shard is sent the groups its pieces are
   * in. A checkpoint of another layout or dtype is placed again (#placeAgain): shards it needs
   * beyond the current ones are created first (removed again should the restore fail), those it
   * leaves are removed once it is stored.
   */
  async #shardedRestore(loaded: Loaded, args: RestoreFileArgs & { layout?: TensorLayout }): Promise<Versioned<OptimizerInfo>> {
    await this.#settleShards(loaded);
    this.#dropAssembly(loaded); // parts of a step computed for the state replaced
    const { def, meta } = loaded;
    const record = meta.shards!;
    const count = record.placement.length;
    let groups: ParamGroup[] = loaded.groups;
    let groupOf: readonly number[] = loaded.groupOf;
    let present: number[][] = record.groups ?? [];
    let placement = record.placement;
    let schedulerState: HostedPlateau | null = null;
    let created = false; // shards beyond `count` were created for this restore
    let hps: Hyperparams[] = [];
    let targetNames: string[] = [];
    let staged;
    try {
      staged = await stageCheckpoint({
        env: this.env,
        id: meta.id,
        record,
        body: args.body,
        length: args.length,
        scalarSlots: ['step', ...def.scalars.map((x) => x.name)],
        groupsFor: (i) => shardGroups(placement, i, present, groups, groupOf),
        // As an unsharded restore: the first tensor no group names, else the first.
        topTensor: () => Math.max(0, groupOf.indexOf(0)),
        // A slot sent for some tensors only: each tensor of a group that keeps it has it (restoredState's rule, told for the whole file).
        checkHeld: (held) => {
          for (const slot of def.slots) {
            const has = held.get(slot.name);
            if (!has || has.size === 0) continue;
            const lacking = groupOf.findIndex((g, t) => !has.has(t) && slot.present(hps[g]!) && slot.initial(hps[g]!) !== null);
            if (lacking >= 0) {
              throw validationProblem([fieldError(['safetensors', slotName(slot.name, targetNames[lacking]!)], `is missing: ${def.torch} keeps ${slot.name} for every tensor of a group that keeps it (null only where its group does not)`)]);
            }
          }
        },
        target: async (metadata, params) => {
          const options = checkpointOptions(def, metadata);
          const chosen = checkpointLayout(loaded.layout, params, options);
          // A JSON snapshot's layout is its own tree (as #placeSnapshot takes it), unless it is this optimizer's.
          const layout = args.layout && JSON.stringify(args.layout) !== JSON.stringify(loaded.layout) ? args.layout : chosen.layout;
          const { dtype } = chosen;
          const names = namedLeaves(layout).map((l) => l.name);
          groups = options.param_groups;
          groupOf = groupOfTensors(names, groups, ['__metadata__', 'param_groups']);
          hps = checkedGroupHp(def, options.hyperparams, groups, groupOf, options.schedule, ['__metadata__', 'hyperparams'], ['__metadata__', 'param_groups']);
          schedulerState = checkedSchedulerState(options.scheduler_state, options.schedule, groups, ['__metadata__', 'scheduler_state']) as HostedPlateau | null;
          targetNames = names;
          if (layout !== loaded.layout || dtype !== meta.dtype) {
            checkShapes(def, layout, ['safetensors', 'params']);
            checkCheckpointHeader(def, layout, ['safetensors', 'params']);
            placement = this.#placeAgain(loaded, layout, dtype);
          }
          present = groupsPresent(placement, groupOf);
          if (placement.length > count) {
            // The shards it needs are created, recorded first (should this object fail, DELETE and the next call still find them).
            this.#writeShardsRecord(loaded, { ...record, objects: placement.length });
            created = true;
            await createShardObjects(this.env, meta.id, { ...record, placement }, count, (i) => ({
              optimizer: def.name,
              params: null,
              hyperparams: options.hyperparams,
              paramGroups: shardGroups(placement, i, present, groups, groupOf),
              groupsPath: ['__metadata__', 'param_groups'],
              schedule: options.schedule,
              dtype,
              layout: shardLayout(layout, placement[i]!),
            }));
          }
          return { options, layout, dtype, placement };
        },
      });
      // A shard's problem names its pieces: told in the client's names.
      const tensorNames = namedLeaves(staged.target.layout).map((l) => l.name);
      const checks = await Promise.allSettled(
        staged.lengths.map(async (length, i) => {
          const o = (await shardStub(this.env, meta.id, i).shardRestore(record.secret, { attempt: staged!.attempt, length, commit: false })) as Outcome<{ step: number; scalars: Record<string, number> }>;
          return unwrapOutcome(o.ok ? o : { ok: false, problem: clientNamedProblem(o.problem, tensorNames) });
        }),
      );
      const failed = checks.find((c) => c.status === 'rejected');
      if (failed) throw failed.reason;
      const answers = checks.map((c) => (c as PromiseFulfilledResult<{ step: number; scalars: Record<string, number> }>).value);
      const { attempt, target } = staged;
      const { options, layout, dtype } = target;
      await this.#reserveSize(loaded, layoutSize(layout), args.quota);
      const { groups: _count, ...kept } = meta;
      const { groups: _present, objects: _objects, ...shards } = record;
      const objects = Math.max(count, placement.length);
      const next: StoredMeta = {
        ...kept,
        ...(groups.length > 0 ? { groups: groups.length } : {}),
        dtype,
        size: layoutSize(layout),
        step: answers[0]!.step,
        scalars: answers[0]!.scalars,
        hyperparams: options.hyperparams,
        schedule: options.schedule,
        plateau: schedulerState,
        missing: [],
        revision: meta.revision + 1,
        updatedAt: new Date().toISOString(),
        shards: {
          ...shards,
          placement,
          capacity: placement === record.placement ? record.capacity : capacityFor(record, meta.dtype, dtype),
          ...(groups.length > 0 ? { groups: present } : {}),
          ...(objects > placement.length ? { objects } : {}),
          restoring: { attempt, lengths: staged.lengths },
        },
      };
      // The commit point: the shards store their staged files (now, or at the next call should one fail).
      this.#store.transaction(() => {
        this.#store.writeMeta(next);
        if (layout !== loaded.layout) this.#store.writeLayout(layout);
        this.#store.writeGroups(groups);
        this.#store.forgetKeys();
        this.#contributions.drop(); // contributions to the replaced state's pending step
      });
      const names = namedLeaves(layout).map((l) => l.name);
      Object.assign(loaded, { meta: next, layout, tensors: spansOf(layout), names, groups, groupOf: [...groupOf], ...emptyMemory(dtype) });
    } catch (e) {
      // Refused after staging (a shard's check, the owner's quota, the decision's store): every shard drops its staged file.
      if (staged && loaded.meta.shards?.restoring?.attempt !== staged.attempt) {
        await Promise.allSettled(placement.map((_, i) => shardStub(this.env, meta.id, i).shardAbort(record.secret, Infinity)));
      }
      if (created) {
        // The shards created for this restore go again (should that fail, the record keeps them for the next settle).
        try {
          await destroyShards(this.env, meta.id, { ...record, objects: placement.length }, count);
          this.#writeShardsRecord(loaded, record);
        } catch {}
      }
      throw e;
    }
    SHARD_FAULTS.afterRestoreDecision?.();
    await this.#settleShards(loaded);
    return this.#versionedInfo(loaded);
  }

  /** A shard: stages bytes of a sharded restore's checkpoint file (./shards.ts), by byte offset. */
  shardStage(tokenHash: string | null, a: { attempt: string; parts: Array<{ at: number; bytes: Uint8Array }> }): Promise<Outcome<null>> {
    return this.#locked(tokenHash, () => {
      this.#store.transaction(() => {
        for (const part of a.parts) this.#store.writeStagedPart(a.attempt, part.at, part.bytes);
      });
      return null;
    });
  }

  /**
   * A shard: its staged checkpoint file restored as an unsharded restore does: checked and undone
   * (`commit` false), or stored. Answers the restored top-level step count and scalars (pieces may
   * keep their own). A commit already stored answers again without storing.
   */
  shardRestore(tokenHash: string | null, a: { attempt: string; length: number; commit: boolean }): Promise<Outcome<{ step: number; scalars: Record<string, number> }>> {
    return this.#locked(tokenHash, async (loaded) => {
      if (loaded.meta.restoredAttempt === a.attempt) return { step: loaded.meta.step, scalars: { ...loaded.state.scalars } };
      if (this.#store.stagedAttempt() !== a.attempt) throw new Error(`shard: restore ${a.attempt} is not staged`);
      let planned: Planned;
      try {
        planned = await this.#readCheckpoint(loaded, { format: 'safetensors', body: this.#store.stagedSource(), length: a.length, quota: { maxOptimizers: 0, maxElements: 0 } });
      } catch (e) {
        this.#load();
        throw e;
      }
      const answer = { step: planned.state.step, scalars: { ...planned.state.scalars } };
      if (!a.commit) {
        this.#load();
        return answer;
      }
      this.#storePlanned(loaded, planned, { restoredAttempt: a.attempt });
      return answer;
    });
  }

  /**
   * Shard side of a sharded step (./shards.ts), phase 1: step `seq`'s slice of the gradient (the
   * optimizer's dtype, layout order, checked by the coordinator), kept in memory and stored durably,
   * not applied. Answers `applied` when this shard already took step `seq`.
   */
  shardPrepare(
    tokenHash: string | null,
    a: { seq: number; attempt: string; parts: Array<{ at: number; grads: Uint8Array }>; rows?: Array<{ piece: number; blob: Uint8Array }> },
  ): Promise<Outcome<{ applied: boolean }>> {
    return this.#locked(
      tokenHash,
      (loaded) => {
        if (loaded.meta.seq >= a.seq) return { applied: true };
        if (loaded.meta.seq !== a.seq - 1) throw new Error(`shard at seq ${loaded.meta.seq} cannot prepare step ${a.seq}`);
        const bytes = new Uint8Array(loaded.grads.buffer, loaded.grads.byteOffset, loaded.grads.byteLength);
        for (const part of a.parts) {
          const at = part.at * loaded.grads.BYTES_PER_ELEMENT;
          if (!Number.isSafeInteger(at) || at < 0 || at + part.grads.byteLength > bytes.byteLength) throw new Error(`shard of ${bytes.byteLength} gradient bytes was sent ${part.grads.byteLength} at ${at}`);
        }
        // The buffer holds the whole prepared slice only if every part of this attempt came since this object started.
        for (const r of a.rows ?? []) if (!Number.isInteger(r.piece) || r.piece < 0 || r.piece >= loaded.tensors.length) throw new Error(`shard of ${loaded.tensors.length} pieces was sent rows of piece ${r.piece}`);
        if (this.#attempt !== a.attempt) {
          this.#prepared = this.#store.preparedAttempt(a.seq) === a.attempt ? null : a.seq;
          this.#attempt = a.attempt;
          this.#preparedRows = new Map();
        }
        this.#store.transaction(() => {
          for (const part of a.parts) this.#store.writePreparedPart(a.seq, a.attempt, part.at * loaded.grads.BYTES_PER_ELEMENT, part.grads);
          for (const r of a.rows ?? []) this.#store.writePreparedRows(a.seq, a.attempt, r.piece, r.blob);
        });
        for (const r of a.rows ?? []) this.#preparedRows.set(r.piece, r.blob);
        for (const part of a.parts) bytes.set(part.grads, part.at * loaded.grads.BYTES_PER_ELEMENT);
        return { applied: false };
      },
      'prepare',
    );
  }

  /**
   * Phase 2: applies prepared step `seq` with the coordinator's decision (hyperparameters with lr
   * resolved, the clip coefficient, clip_grad_value). Without `persist`, in memory only, answering
   * the first non-finite result (the state is then reloaded); with it, stored (re-applied from the
   * prepared slice when this object has restarted since). A shard past `seq` answers `applied`.
   */
  shardApply(
    tokenHash: string | null,
    a: ShardStepArgs & { persist: boolean },
  ): Promise<Outcome<{ applied: boolean; nonFinite: number; step: number; scalars: Record<string, number> }>> {
    return this.#locked(
      tokenHash,
      (loaded) => {
        const { def, meta, state } = loaded;
        if (meta.seq >= a.seq) return { applied: true, nonFinite: -1, step: meta.step, scalars: { ...state.scalars } };
        let dry = this.#dryRun?.seq === a.seq ? this.#dryRun : null;
        if (!dry) {
          this.#dropDryRun();
          const frozen = a.frozen ?? loaded.tensors.map(() => false);
          const withRows = a.sparse ?? loaded.tensors.map(() => false);
          let blobs = this.#preparedRows;
          if (this.#prepared !== a.seq) {
            // Restarted since the prepare (or never sent it): a set of contributions is reduced again, a
            // prepared slice read back (a frozen or sparse piece has no dense part; a shard of only such was sent none).
            if (a.accumulate) this.#contributions.reduceShard(loaded.grads, a.accumulate, a.accumulate.workers);
            else {
              const want = loaded.tensors.reduce((n, t, k) => n + (frozen[k] || withRows[k] ? 0 : t.size), 0) * loaded.grads.BYTES_PER_ELEMENT;
              const read = this.#store.readPrepared(a.seq, loaded.grads);
              if (read !== want && !(read < 0 && want === 0 && !withRows.some((w, k) => w && !frozen[k]))) throw new Error(`shard: step ${a.seq} was not prepared (${read} of ${want} bytes)`);
              blobs = this.#store.readPreparedRows(a.seq);
            }
          }
          const sparse = loaded.tensors.map((t, k) => (withRows[k] && !frozen[k] ? decodeRows(blobs.get(k), meta.dtype, t.shape) : null));
          const { grads } = loaded;
          // clip_grad_norm_'s multiplication and clip_grad_value_'s clamp, elementwise as src/optim/clip.ts does them.
          if (a.coef !== null) for (let i = 0; i < grads.length; i++) grads[i] = grads[i]! * a.coef;
          if (a.clipValue !== null) clipGradValue(meta.dtype, [grads], a.clipValue);
          const scalarsBefore = state.scalars;
          const shapeBefore = slotShape(state);
          const countersBefore = state.counters.size;
          const outcome = engineStep({
            def,
            dtype: meta.dtype,
            tensors: loaded.tensors,
            groupHp: a.groupHp,
            groupOf: loaded.groupOf,
            params: loaded.params,
            grads,
            frozen,
            sparse,
            state,
            nonfinite: 'error',
            allocate: (name) => roomFor(loaded, name),
            stepRun: stepRunFor(def, this.#kernel),
            scan: this.#scan,
          });
          if (!outcome.applied) {
            this.#load();
            this.#prepared = null;
            return { applied: false, nonFinite: outcome.nonFinite.index, step: meta.step, scalars: {} };
          }
          const arrays = arraysOf(loaded, state);
          for (const [name, x] of Object.entries(arrays.slots)) loaded.room[name] = x;
          // Stored whole (not journalled) as the unsharded step decides: a replay steps every piece from the top-level counters.
          const whole = slotShape(state) !== shapeBefore || countersBefore > 0 || frozen.some(Boolean) || sparse.some((r) => r !== null) || def.perTensor === true;
          dry = this.#dryRun = { seq: a.seq, scalarsBefore, whole };
        }
        if (!a.persist) return { applied: false, nonFinite: -1, step: state.step, scalars: { ...state.scalars } };
        const arrays = arraysOf(loaded, state);
        const next: StoredMeta = { ...meta, ...stateMeta(state, arrays), seq: a.seq, revision: meta.revision + 1, updatedAt: new Date().toISOString() };
        const top = a.groupHp[0]!;
        const entry = {
          seq: a.seq,
          step: meta.step,
          lr: top.lr as number,
          hyperparams: top,
          ...(def.scalars.length > 0 ? { scalars: dry.scalarsBefore } : {}),
          ...(loaded.groups.length > 0 ? { groups: a.groupHp } : {}),
        };
        try {
          this.#store.transaction(() => {
            next.cursor = this.#store.appendStep(next, arrays, new Uint8Array(loaded.grads.buffer, loaded.grads.byteOffset, loaded.grads.byteLength), entry, dry.whole);
            this.#store.writeMeta(next);
            this.#store.dropPrepared();
            if (a.accumulate) this.#contributions.drop();
          });
        } catch (e) {
          this.#dryRun = null;
          this.#load();
          throw e;
        }
        loaded.meta = next;
        this.#dryRun = null;
        this.#prepared = null;
        return { applied: true, nonFinite: -1, step: next.step, scalars: { ...state.scalars } };
      },
      'apply',
    );
  }

  /**
   * A shard: stores its slice of worker `worker`'s contribution to an accumulated step (part of a
   * coordinator's prepare, ./shards.ts), not applied; the coordinator holds the contribution's row.
   */
  shardContribute(tokenHash: string | null, a: { worker: number; attempt: string; parts: Array<{ at: number; grads: Uint8Array }> }): Promise<Outcome<null>> {
    return this.#locked(tokenHash, (loaded) => {
      const item = loaded.grads.BYTES_PER_ELEMENT;
      for (const part of a.parts) {
        if (!Number.isSafeInteger(part.at) || part.at < 0 || (part.at + part.grads.byteLength / item) > loaded.grads.length) throw new Error(`shard of ${loaded.grads.length} elements was sent ${part.grads.byteLength} bytes at ${part.at}`);
      }
      this.#store.transaction(() => {
        for (const part of a.parts) this.#contributions.writeShardPart(a.worker, a.attempt, part.at * item, part.grads);
      });
      return null;
    });
  }

  /**
   * A shard: a complete set's contributions reduced into the gradient buffer as prepared step `seq`
   * (as an unsharded optimizer reduces them). Answers the first non-finite element of the result.
   */
  shardReduce(tokenHash: string | null, a: { seq: number } & ShardReduce): Promise<Outcome<{ nonFinite: number; value: number }>> {
    return this.#locked(
      tokenHash,
      (loaded) => {
        if (loaded.meta.seq !== a.seq - 1) throw new Error(`shard at seq ${loaded.meta.seq} cannot reduce step ${a.seq}`);
        this.#contributions.reduceShard(loaded.grads, a, a.workers);
        this.#prepared = a.seq;
        this.#attempt = null;
        const bad = this.#scan(loaded.grads);
        return { nonFinite: bad, value: bad < 0 ? 0 : loaded.grads[bad]! };
      },
      'prepare',
    );
  }

  /** A shard: its part of foldShardNorms (./shards.ts) over prepared step `seq`'s gradient. */
  shardNorms(tokenHash: string | null, a: { seq: number; dtype: Dtype; carry: NormFold | null; pieces: Array<{ from: number; to: number; size: number }> }): Promise<Outcome<{ norms: Array<number | null>; carry: NormFold | null }>> {
    return this.#locked(
      tokenHash,
      (loaded) => {
        if (this.#prepared !== a.seq) throw new Error(`shard: step ${a.seq} is not prepared in memory`);
        return foldPieces(a.dtype, loaded.grads, a.pieces, a.carry);
      },
      'prepare',
    );
  }

  /** Drops prepared step `seq` (and its in-memory application): the coordinator decided against it; with `contributions`, the contributions held too. */
  shardAbort(tokenHash: string | null, seq: number, contributions = false): Promise<Outcome<null>> {
    return this.#locked(tokenHash, (loaded) => {
      if (contributions) this.#store.transaction(() => this.#contributions.drop());
      if (loaded.meta.seq < seq) this.#store.dropPrepared();
      if (seq === Infinity) this.#store.dropStaged(); // a restore decided against
      this.#prepared = null;
      return null;
    });
  }

  /**
   * A shard: elements [from, from + count) of its params or a slot, a copy (the coordinator reads a
   * shard a piece at a time while it holds its own lock, so no step changes them in between).
   */
  shardRead(tokenHash: string | null, a: { slot: string; from: number; count: number }): Promise<Outcome<Uint8Array>> {
    return this.#locked(tokenHash, (loaded) => {
      const x = a.slot === 'params' ? loaded.params : loaded.state.slots[a.slot];
      if (!x) throw new Error(`shard: no ${a.slot} to read`);
      const piece = x.subarray(a.from, a.from + a.count);
      return new Uint8Array(piece.buffer.slice(piece.byteOffset, piece.byteOffset + piece.byteLength));
    });
  }

  /**
   * The slots a shard stores and which pieces hold each (a piece whose group keeps no such slot, or
   * that was always frozen, has none, as torch has None); the pieces whose counters differ from the
   * top-level ones (frozen for some steps).
   */
  shardSlots(tokenHash: string | null): Promise<Outcome<{ slots: Record<string, boolean[]>; counters: Array<{ piece: number; step: number; scalars: Record<string, number> }> }>> {
    return this.#locked(tokenHash, (loaded) => {
      const { state } = loaded;
      return {
        slots: Object.fromEntries(Object.keys(arraysOf(loaded, state).slots).map((name) => [name, state.held[name] ? [...state.held[name]!] : loaded.tensors.map(() => true)])),
        counters: [...state.counters].map(([piece, c]) => ({ piece, step: c.step, scalars: { ...c.scalars } })),
      };
    });
  }

  /** An in-memory application of a prepared step not yet stored: undone (the stored state reloaded). */
  #dropDryRun(): void {
    if (!this.#dryRun) return;
    this.#dryRun = null;
    this.#prepared = null;
    this.#load();
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
        const { meta, layout, def, state } = loaded;
        if (meta.shards) {
          await this.#settleShards(loaded);
          // Which tensors hold each slot (all pieces of a tensor are in its group, so they agree), in the optimizer's slot order.
          const record = meta.shards;
          const replies = await Promise.all(record.placement.map(async (_, i) => unwrapOutcome(await shardStub(this.env, meta.id, i).shardSlots(record.secret))));
          const answers = replies.map((r) => r.slots);
          const held: Record<string, boolean[]> = {};
          const slots = def.slots.map((x) => x.name).filter((name) => answers.some((a) => a[name]));
          for (const name of slots) {
            const bits = loaded.tensors.map(() => false);
            record.placement.forEach((shard, i) => shard.pieces.forEach((p, k) => answers[i]![name]?.[k] && (bits[p.tensor] = true)));
            if (!bits.every(Boolean)) held[name] = bits;
          }
          // A tensor's own counter (frozen for some steps): every piece of it has the same one.
          const counters = new Map<number, { tensor: number; step: number; scalars: Record<string, number> }>();
          replies.forEach((r, i) => r.counters.forEach((c) => counters.set(record.placement[i]!.pieces[c.piece]!.tensor, { tensor: record.placement[i]!.pieces[c.piece]!.tensor, step: c.step, scalars: c.scalars })));
          const all = ['params', ...slots];
          return {
            etag: etagOf(loaded.meta),
            info: this.#info(loaded.meta, layout, loaded.groups),
            schedulerState: loaded.meta.plateau,
            layout,
            stepCounter: def.stepCounter,
            slots: all,
            held,
            counters: [...counters.values()].sort((a, b) => a.tensor - b.tensor),
            data: gatherStream(this.env, meta.id, record, all, release, held),
          };
        }
        const tensors = storedTensors(arraysOf(loaded, state));
        const slots: SnapshotSlot[] = tensors.map(([name]) => name);
        // A slot some tensor does not hold (torch: None) streams only the tensors that hold it.
        const held: Record<string, boolean[]> = {};
        const pieces: FloatArray[] = [];
        for (const [name, a] of tensors) {
          const bits = name === 'params' ? undefined : state.held[name];
          if (!bits || bits.every(Boolean)) {
            pieces.push(a);
            continue;
          }
          held[name] = [...bits];
          for (const [from, to] of rangesOf(bits)) pieces.push(a.subarray(loaded.tensors[from]!.offset, loaded.tensors[to - 1]!.offset + loaded.tensors[to - 1]!.size));
        }
        return {
          etag: etagOf(meta),
          info: this.#info(meta, layout, loaded.groups),
          schedulerState: meta.plateau,
          layout,
          stepCounter: def.stepCounter,
          slots,
          held,
          counters: [...state.counters].sort(([a], [b]) => a - b).map(([i, c]) => ({ tensor: i, step: c.step, scalars: { ...c.scalars } })),
          data: lockedByteStream(pieces, release),
        };
      } catch (e) {
        release();
        throw e;
      }
    });
  }

  restore(tokenHash: string | null, args: RestoreArgs | RestoreFileArgs): Promise<Outcome<Versioned<OptimizerInfo>>> {
    return this.#locked(tokenHash, async (loaded) => {
      checkIfMatch(args.ifMatch, etagOf(loaded.meta), loaded.meta.step);
      if (loaded.meta.shards) {
        if ('format' in args) return this.#shardedRestore(loaded, args);
        // A JSON snapshot (decoded by the Worker, at most MAX_BODY_BYTES): checked by its own fields as
        // #placeSnapshot checks it, then restored as the checkpoint file holding the same.
        sameOptimizer(loaded.def, args.optimizer, ['optimizer']);
        checkedSchedulerState(args.schedulerState, args.schedule, args.paramGroups, ['scheduler_state']);
        const groupOf = groupOfTensors(namedLeaves(args.layout).map((l) => l.name), args.paramGroups, ['param_groups']);
        checkedGroupHp(loaded.def, args.hyperparams, args.paramGroups, groupOf, args.schedule, ['hyperparams'], ['param_groups']);
        const file = snapshotFile(loaded.def, args);
        // A slot sent is >= 0 where it must be (kept by a group or not), named by the snapshot's own field (as #placeSnapshot; a shard would name its file).
        for (const slot of loaded.def.slots) {
          const sent = args.slots[slot.name];
          if (!slot.nonNegative || !sent) continue;
          const i = firstNegative(sent.values);
          if (i >= 0) throw validationProblem([fieldError([sent.field, ...pathOfIndex(args.layout, i)], 'must be >= 0 (it is a square, a sum of squares or a magnitude)', sent.values[i])]);
        }
        return this.#shardedRestore(loaded, { format: 'safetensors', body: file, length: file.length, quota: args.quota, layout: args.layout });
      }
      let planned: Planned;
      try {
        planned = 'format' in args ? await this.#readCheckpoint(loaded, args) : this.#placeSnapshot(loaded, args);
      } catch (e) {
        this.#load(); // the new state was being written into the object's memory: take the stored one back
        throw e;
      }
      try {
        await this.#reserveSize(loaded, layoutSize(planned.layout), args.quota);
      } catch (e) {
        this.#load(); // the planned state replaced the loaded arrays: take the stored one back
        throw e;
      }
      return this.#storePlanned(loaded, planned);
    });
  }

  /** A restore to `size` elements: a new size must fit the owner's element quota, asked before anything is stored. */
  async #reserveSize(loaded: Loaded, size: number, quota: KeyQuota): Promise<void> {
    const owner = loaded.meta.owner;
    if (!owner || size === loaded.meta.size) return;
    const booked = (await registryOf(this.env, owner).reserve(owner, loaded.meta.id, size, quota, 'params')) as unknown as Outcome<unknown>;
    if (!booked.ok) throw ProblemError.fromData(booked.problem);
  }

  /** Stores the coordinator's shards record as given (the rest of its metadata as it is). */
  #writeShardsRecord(loaded: Loaded, shards: ShardsRecord): void {
    const next: StoredMeta = { ...loaded.meta, shards };
    this.#store.writeMeta(next);
    loaded.meta = next;
  }

  /**
   * A layout (or dtype) other than a coordinator's own, placed again: over as many shards as now (as
   * many as it has rows, when fewer), else, when they cannot hold it, the fewest that can (413 when
   * none does). A shard's capacity scales with the dtype's width.
   */
  #placeAgain(loaded: Loaded, layout: TensorLayout, dtype: Dtype): ShardsRecord['placement'] {
    const record = loaded.meta.shards!;
    const capacity = capacityFor(record, loaded.meta.dtype, dtype);
    const wholeTensors = loaded.def.perTensor === true;
    const empty = layoutWeight(layout) - layoutSize(layout);
    if (empty > capacity) throw new ProblemError(413, 'payload-too-large', `safetensors.params: tensors with a dimension of 0 weigh ${empty} elements (each 0 counting as 1); at most ${capacity} are allowed`);
    // Each shard holds at least one row (one tensor when tensors stay whole).
    const units = leaves(layout).reduce((n, l) => n + (l.size === 0 ? 0 : wholeTensors ? 1 : l.shape.length >= 2 ? l.shape[0]! : l.size), 0);
    try {
      return planShards(layout, capacity, Math.max(1, Math.min(record.placement.length, units)), wholeTensors, 'safetensors.params');
    } catch (e) {
      if (!(e instanceof ProblemError)) throw e;
      return planShards(layout, capacity, undefined, wholeTensors, 'safetensors.params');
    }
  }

  /** Stores a planned restore (already in the object's memory) as the new state; a failure reloads the stored one. */
  #storePlanned(loaded: Loaded, planned: Planned, extra: Partial<StoredMeta> = {}): Versioned<OptimizerInfo> {
    const { memory, layout, state } = planned;
    const arrays = arraysOf(memory, state);
    const size = layoutSize(layout);
    const { groups: _groups, held: _held, counters: _counters, ...kept } = loaded.meta;
    const next: StoredMeta = {
      ...kept,
      ...stateMeta(state, arrays),
      revision: loaded.meta.revision + 1,
      dtype: planned.dtype,
      size,
      hyperparams: planned.hyperparams,
      schedule: planned.schedule,
      plateau: planned.schedulerState,
      updatedAt: new Date().toISOString(),
      cursor: 0,
      missing: [],
      ...(planned.groups.length > 0 ? { groups: planned.groups.length } : {}),
      ...extra,
    };
    try {
      this.#store.transaction(() => {
        this.#store.writeCheckpoint(next, arrays, layout);
        this.#store.writeGroups(planned.groups);
        // Remembered keys answer for steps of the replaced state: forget them.
        this.#store.forgetKeys();
        this.#contributions.drop(); // contributions to the replaced state's pending step
        if (extra.restoredAttempt !== undefined) this.#store.dropStaged();
      });
    } catch (e) {
      this.#load();
      throw e;
    }
    const { groups, groupOf, tensors, names } = planned;
    this.#loaded = { def: loaded.def, meta: next, layout, tensors, names, groups, groupOf, state, ...memory };
    return this.#versionedInfo(this.#loaded);
  }

  /** A JSON snapshot (validated and flattened by the Worker) copied into fresh memory. */
  #placeSnapshot(loaded: Loaded, args: RestoreArgs): Planned {
    const { def } = loaded;
    const { dtype, hyperparams, layout, schedule } = args;
    sameOptimizer(def, args.optimizer, ['optimizer']);
    const groups = args.paramGroups;
    const schedulerState = checkedSchedulerState(args.schedulerState, schedule, groups, ['scheduler_state']);
    checkCheckpointHeader(def, layout, ['params']);
    const names = namedLeaves(layout).map((l) => l.name);
    const groupOf = groupOfTensors(names, groups, ['param_groups']);
    const hps = checkedGroupHp(def, hyperparams, groups, groupOf, schedule, ['hyperparams'], ['param_groups']);
    checkShapes(def, layout, ['params']);
    const most = maxElementsOf(readLimits(this.env), def, dtype);
    if (layoutWeight(layout) > most) throw tooLarge(def, layoutWeight(layout), dtype, most);
    const tensors = spansOf(layout);
    const memory = this.#allocate(def, dtype, args.params.length);
    memory.params.set(args.params);
    const sent = new Map<string, SentSlot>();
    const fields = new Map<string, string>();
    for (const [name, { field, values, held }] of Object.entries(args.slots)) {
      if (!def.slots.some((s) => s.name === name)) throw validationProblem([fieldError([field], `is not a state slot of ${def.torch} (${slotList(def)})`)]);
      roomFor(memory, name).set(values);
      sent.set(name, { values: memory.room[name]!, held: held ?? null });
      fields.set(name, field);
    }
    const index = new Map(names.map((n, i) => [n, i]));
    const counters = new Map<number, { step: number; scalars: Record<string, number | undefined>; where: Array<string | number> }>();
    for (const [name, c] of Object.entries(args.tensors ?? {})) {
      const i = index.get(name);
      if (i === undefined) throw validationProblem([fieldError(['tensors', name], 'names no tensor of params', name)]);
      const own = c.step ?? args.step;
      if (!Number.isInteger(own) || own < 0 || own > maxStep(def.stepCounter)) {
        throw validationProblem([fieldError(['tensors', name, 'step'], `must be an integer in [0, ${maxStep(def.stepCounter)}] (the tensor's own step count)`, own)]);
      }
      counters.set(i, { step: own, scalars: c, where: ['tensors', name] });
    }
    const where = (name: string, i?: number) => [fields.get(name) ?? name, ...(i === undefined ? [] : pathOfIndex(layout, i))];
    const restored = { groups, groupOf, hps, tensors };
    const tensorPaths = leaves(layout).map((l) => l.path);
    const whereTensor = (name: string, t: number) => [fields.get(name) ?? name, ...tensorPaths[t]!];
    const state = restoredState(def, restored, memory, args.step, sent, args.scalars, counters, where, whereTensor);
    return { dtype, hyperparams, schedule, schedulerState, layout, names, memory, state, ...restored };
  }

  /**
   * A safetensors checkpoint streamed straight into fresh memory: `params/<name>`, the optimizer's
   * slots by torch's names (`exp_avg/…`, `momentum_buffer/…`), `step/…` and scalar tensors, options
   * in `__metadata__`. The caller reloads the stored state if this throws.
   */
  async #readCheckpoint(loaded: Loaded, args: RestoreFileArgs): Promise<Planned> {
    const limits = readLimits(this.env);
    const { def } = loaded;
    const slotNames = def.slots.map((s) => s.name);
    const scalarNames = def.scalars.map((s) => s.name);
    const prefixes = ['params', ...slotNames, 'step', ...scalarNames];
    let plan: (Omit<Planned, 'state'> & { step: number | undefined; steps: Float64Array | null; scalarValues: Map<string, Float64Array>; leaves: NamedLeaf[]; sent: Map<string, boolean[]>; metaScalars: Record<string, number | undefined> }) | null = null;
    await readSafetensors(args.body, args.length, (header) => {
      const options = checkpointOptions(def, header.metadata);
      const groups = options.param_groups;
      const schedulerState = checkedSchedulerState(options.scheduler_state, options.schedule, groups, ['scheduler_state']);
      const bySlot = new Map<string, Map<string, TensorEntry>>(prefixes.map((slot) => [slot, new Map()]));
      const slotOf = header.entries.map((e) => {
        const cut = e.name.indexOf('/');
        const slot = cut < 0 ? e.name : e.name.slice(0, cut);
        if (!bySlot.has(slot)) throw new WireError(422, ['safetensors', e.name], `tensor "${e.name}" is not named <slot>/<name> with a slot among ${prefixes.join(', ')} (${def.torch})`, e.name);
        bySlot.get(slot)!.set(cut < 0 ? '' : e.name.slice(cut + 1), e);
        return { slot, leaf: cut < 0 ? '' : e.name.slice(cut + 1) };
      });
      const { layout, dtype } = checkpointLayout(loaded.layout, [...bySlot.get('params')!].map(([name, e]) => ({ name, shape: e.shape, dtype: e.dtype })), options);
      const index = leafIndex(layout)!;
      const leaves = [...index.values()];
      const names = leaves.map((l) => l.name);
      const groupOf = groupOfTensors(names, groups, ['__metadata__', 'param_groups']);
      const hps = checkedGroupHp(def, options.hyperparams, groups, groupOf, options.schedule, ['__metadata__', 'hyperparams'], ['__metadata__', 'param_groups']);
      checkShapes(def, layout, ['safetensors', 'params']);
      checkCheckpointHeader(def, layout, ['safetensors', 'params']);
      const size = layoutSize(layout);
      const most = maxElementsOf(limits, def, dtype);
      if (layoutWeight(layout) > most) throw tooLarge(def, layoutWeight(layout), dtype, most);
      const memory = this.#allocate(def, dtype, size);
      const ordinal = new Map(leaves.map((l, i) => [l.name, i]));
      const stepsSent = bySlot.get('step')!.size > 0;
      const steps = stepsSent ? new Float64Array(leaves.length) : null;
      const scalarValues = new Map(scalarNames.filter((n) => bySlot.get(n)!.size > 0).map((n) => [n, new Float64Array(leaves.length)]));
      // A slot's tensors: which parameters have one (torch keeps None for the others, e.g. SGD's
      // momentum_buffer in a group without momentum; absent for all: see restoredState).
      const sent = new Map(slotNames.filter((n) => bySlot.get(n)!.size > 0).map((n) => [n, leaves.map((l) => bySlot.get(n)!.has(l.name))]));
      for (const slot of prefixes) {
        const found = bySlot.get(slot)!;
        // Every tensor of params, and of the step and scalars (all or none); of a slot, any.
        if (slot !== 'params' && found.size === 0) continue;
        if (!sent.has(slot)) {
          for (const leaf of leaves) {
            if (!found.has(leaf.name)) throw new WireError(422, ['safetensors', slotName(slot, leaf.name)], `tensor "${slotName(slot, leaf.name)}" is missing (each parameter needs its ${slot})`);
          }
        }
        for (const name of found.keys()) if (!index.has(name)) throw new WireError(422, ['safetensors', slotName(slot, name)], `"${slotName(slot, name)}" has no params/${name} to match`);
      }
      const metaScalars = Object.fromEntries(scalarNames.map((n) => [n, options.scalars[n]]));
      plan = {
        dtype,
        hyperparams: options.hyperparams,
        schedule: options.schedule,
        schedulerState,
        layout,
        names,
        groups,
        groupOf,
        hps,
        tensors: spansOf(layout),
        memory,
        step: options.step,
        steps,
        scalarValues,
        leaves,
        sent,
        metaScalars,
      };
      return header.entries.map((e, i) => {
        const { slot, leaf: name } = slotOf[i]!;
        const leaf = index.get(name)!;
        const path = ['safetensors', e.name];
        const counts = slot === 'step' ? steps : scalarValues.get(slot);
        if (counts) {
          if (e.shape.length > 1 || (e.shape.length === 1 && e.shape[0] !== 1)) throw new WireError(422, [...path, 'shape'], `a ${slot} is a scalar (shape [] as torch stores it), got [${e.shape.join(', ')}]`);
          return { out: counts, offset: ordinal.get(name)!, count: 1, path };
        }
        checkEntry(e, leaf, dtype, path);
        return { out: slot === 'params' ? memory.params : roomFor(memory, slot), offset: leaf.offset, count: leaf.size, path };
      });
    });
    const p = plan!;
    // Step counts are torch's per parameter (they differ after steps that froze some): each tensor's
    // is checked; the top-level count is the metadata's, else that of the first tensor no group
    // names (else the first tensor's); a tensor whose count differs keeps its own.
    const topIndex = Math.max(0, p.groupOf.indexOf(0));
    if (p.steps) {
      const bad = p.steps.findIndex((x) => !Number.isInteger(x) || x < 0 || x > maxStep(def.stepCounter));
      if (bad >= 0) throw new WireError(422, ['safetensors', slotName('step', p.leaves[bad]!.name)], `a step count must be an integer in [0, ${maxStep(def.stepCounter)}], got ${p.steps[bad]}`);
    }
    const step = p.step ?? p.steps?.[topIndex];
    if (step === undefined) {
      if (def.stepCounter !== 'none') throw new WireError(422, ['__metadata__', 'step'], 'the step count is required: __metadata__.step, or step/<name> tensors as torch saves them');
    }
    // Scalars are torch's per parameter too (NAdam's mu_product differs between groups with other
    // betas, or after frozen steps), taken the same way.
    const scalars = Object.fromEntries(def.scalars.map((s) => [s.name, p.metaScalars[s.name] ?? p.scalarValues.get(s.name)?.[topIndex]]));
    const counters = new Map<number, { step: number; scalars: Record<string, number | undefined>; where: Array<string | number> }>();
    for (let i = 0; i < p.leaves.length; i++) {
      const own = Object.fromEntries(def.scalars.map((s) => [s.name, p.scalarValues.get(s.name)?.[i] ?? scalars[s.name]]));
      const ownStep = p.steps?.[i] ?? step ?? 0;
      if (!Object.is(ownStep, step ?? 0) || def.scalars.some((s) => !Object.is(own[s.name], scalars[s.name]))) counters.set(i, { step: ownStep, scalars: own, where: ['safetensors', p.leaves[i]!.name] });
    }
    const sent = new Map([...p.sent].map(([n, held]) => [n, { values: p.memory.room[n]!, held: held.every(Boolean) ? null : held }]));
    const where = (name: string, leafIndexAt?: number): Array<string | number> => {
      if (leafIndexAt === undefined) return ['safetensors', name];
      const leaf = p.leaves.find((l) => leafIndexAt < l.offset + l.size)!;
      return ['safetensors', slotName(name, leaf.name), leafIndexAt - leaf.offset];
    };
    const state = restoredState(def, p, p.memory, step ?? 0, sent, scalars, counters, where, (name, t) => ['safetensors', slotName(name, p.leaves[t]!.name)]);
    const { step: _s, steps: _st, scalarValues: _sv, leaves: _l, sent: _se, metaScalars: _m, ...rest } = p;
    return { ...rest, state };
  }

  /**
   * New values for some params (the moments keep theirs, as when torch copies into `p.data`):
   * whole tensors by name (JSON, safetensors), or a raw run of elements from an offset. Uploads
   * complete an optimizer created by shapes.
   */
  upload(tokenHash: string | null, args: UploadArgs): Promise<Outcome<Versioned<OptimizerInfo>>> {
    return this.#locked(tokenHash, async (loaded) => {
      checkIfMatch(args.ifMatch, etagOf(loaded.meta), loaded.meta.step);
      if (loaded.meta.shards) return this.#shardedUpload(loaded, args);
      const { meta, layout, grads: staging } = loaded;
      const arrays = arraysOf(loaded, loaded.state);
      const ranges: Range[] = [];
      const input = args.body;
      if (input.format === 'raw') {
        const { start, room, path, offset } = rawUploadTarget(layout, meta.size, args);
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
        const values = input.flat.values;
        for (const { sent, leaf, path } of jsonUploadTensors(layout, input.flat.layout)) {
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
      const { meta, def } = loaded;
      let changes: Hyperparams = {};
      if (args.hyperparams !== undefined) {
        const parsed = familySchemas(def).hyperparamsPatch.safeParse(args.hyperparams);
        if (!parsed.success) throw validationProblem(zodFieldErrors(parsed.error, args.hyperparams).map((e) => ({ ...e, field: `hyperparams.${e.field}`, pointer: undefined })));
        changes = Object.fromEntries(Object.entries(parsed.data as Hyperparams).filter(([, v]) => v !== undefined));
      }
      const hyperparams = { ...meta.hyperparams, ...changes };
      const schedule = args.schedule === undefined ? meta.schedule : args.schedule;
      // param_groups: replaced, cleared (null), or kept (absent); checked as at creation.
      const groups = args.paramGroups === undefined ? loaded.groups : parseParamGroups(def, args.paramGroups, ['param_groups']);
      const groupsChanged = JSON.stringify(groups) !== JSON.stringify(loaded.groups);
      const groupOf = groupsChanged ? groupOfTensors(loaded.names, groups, ['param_groups']) : loaded.groupOf;
      const hps = checkedGroupHp(def, hyperparams, groups, groupOf, schedule, ['hyperparams'], ['param_groups']);
      const scheduleChanged = JSON.stringify(schedule) !== JSON.stringify(meta.schedule);
      let plateau = meta.plateau as HostedPlateau | null;
      if (scheduleChanged) plateau = initialPlateau(schedule, groups);
      else if (groupsChanged && plateau) {
        // New groups start at their own lr, as torch's scheduler starts a group it is given.
        const { group_lrs: _lrs, ...shared } = plateau;
        const lrs = initialGroupLrs(schedule, groups);
        plateau = lrs ? { ...shared, group_lrs: lrs } : shared;
      }
      if (meta.shards) {
        await this.#settleShards(loaded);
        const settled = loaded.meta; // without the marks the settle cleared
        const accumulate = patchedAccumulate(meta.accumulate, args.accumulate, this.#contributions.workers());
        checkAccumulates(loaded.def, accumulate, ['accumulate']);
        const record = settled.shards!;
        // Each step sends the shards its hyperparameters; other groups, or other slots kept, are a
        // decision every shard then applies to its pieces as an unsharded PATCH does (#settleShards).
        const slotsOf = (list: Hyperparams[]) => list.map((hp) => def.slots.filter((slot) => slot.present(hp)).map((slot) => slot.name).join(', ')).join('; ');
        const before = checkedGroupHp(def, meta.hyperparams, loaded.groups, loaded.groupOf, meta.schedule, ['hyperparams'], ['param_groups']);
        const reshape = groupsChanged || slotsOf(hps) !== slotsOf(before);
        const { groups: _count, ...kept } = settled;
        const { groups: _present, ...shards } = record;
        const next: StoredMeta = {
          ...kept,
          accumulate,
          hyperparams,
          schedule,
          plateau,
          revision: meta.revision + 1,
          updatedAt: new Date().toISOString(),
          ttl: args.ttl ?? meta.ttl,
          ...(groups.length > 0 ? { groups: groups.length } : {}),
          shards: { ...shards, ...(groups.length > 0 ? { groups: groupsPresent(record.placement, groupOf) } : {}), ...(reshape ? { regroup: true } : {}) },
        };
        this.#store.transaction(() => {
          this.#store.writeMeta(next);
          if (groupsChanged) this.#store.writeGroups(groups);
        });
        loaded.meta = next;
        loaded.groups = groups;
        loaded.groupOf = [...groupOf];
        if (args.ttl !== undefined) await this.ctx.storage.setAlarm(deadlineOf(next));
        try {
          await this.#settleShards(loaded);
        } catch (e) {
          console.error('sharded PATCH decided; a shard did not apply it yet (the next call completes it)', e);
        }
        return this.#versionedInfo(loaded);
      }
      // The slots the new hyperparameters keep: kept ones keep their values, a tensor whose group
      // now keeps an eager one starts it from its initial value (amsgrad's running max from zero:
      // max(0, v) = v at the next step), and one no group keeps any more stays, unread, as torch
      // keeps max_exp_avg_sq when amsgrad is turned off and resumes from it when it is turned on.
      const shapeBefore = slotShape(loaded.state);
      const state: TreeState = { ...loaded.state, slots: { ...loaded.state.slots }, held: Object.fromEntries(Object.entries(loaded.state.held).map(([k, h]) => [k, [...h]])) };
      keepSlots(def, hps, groupOf, loaded.tensors, state, (name) => roomFor(loaded, name));
      const arrays = arraysOf(loaded, state);
      const accumulate = patchedAccumulate(meta.accumulate, args.accumulate, this.#contributions.workers());
      checkAccumulates(loaded.def, accumulate, ['accumulate']);
      const { groups: _groups, ...rest } = meta;
      const next: StoredMeta = {
        ...rest,
        accumulate,
        hyperparams,
        ...stateMeta(state, arrays),
        schedule,
        plateau,
        revision: meta.revision + 1,
        updatedAt: new Date().toISOString(),
        ttl: args.ttl ?? meta.ttl,
        ...(groups.length > 0 ? { groups: groups.length } : {}),
      };
      try {
        if (!groupsChanged && slotShape(state) === shapeBefore) {
          // Journalled steps carry their own hyperparameters, so only the metadata changes.
          this.#store.transaction(() => this.#store.writeMeta(next));
        } else {
          // New slots, or other groups (a replay steps each tensor with its group's): the whole state, no journal.
          this.#store.transaction(() => {
            this.#store.writeCheckpoint(next, arrays, null);
            this.#store.writeGroups(groups);
          });
        }
      } catch (e) {
        this.#load();
        throw e;
      }
      loaded.meta = next;
      loaded.state = state;
      loaded.groups = groups;
      loaded.groupOf = groupOf;
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
    return this.#locked(tokenHash, () => ({
      entries: this.#store.history(limit).map(({ grad_norm, skipped, ...row }) => ({ ...row, ...(grad_norm === null ? {} : { grad_norm }), ...(skipped === 1 ? { skipped: true as const } : {}) })),
      kept: HISTORY_KEPT,
    }));
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
    const stored = this.#storedMeta();
    const owner = stored?.owner;
    // Shards first: should this fail, the coordinator is still there to retry (a shard left alone expires after MAX_TTL_SECONDS).
    if (stored?.shards) await destroyShards(this.env, stored.id, stored.shards);
    this.#loaded = null;
    this.#read = true; // nothing left to read
    this.#kernel = null; // frees the kernel's memory
    await this.#store.deleteAll(); // wipes every table (and the alarm) atomically
    this.#waiters.notify(Infinity); // requests waiting for a step (DELETE or expiry): answered now, 404
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
      optimizer: meta.optimizer ?? 'adam',
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
        // Shards expire MAX_TTL_SECONDS after their last call; the coordinator's deadline is at most that
        // far from now, so a touch at each re-arm keeps them alive as long as it lives.
        if (meta.shards) await Promise.all(meta.shards.placement.map((_, i) => shardStub(this.env, meta.id, i).describe(meta.shards!.secret)));
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
interface Planned extends RestoredGroups {
  dtype: Dtype;
  hyperparams: Hyperparams;
  schedule: ScheduleSpec | null;
  schedulerState: HostedPlateau | null;
  layout: TensorLayout;
  names: string[];
  memory: Memory;
  state: TreeState;
}

/** `exp_avg, exp_avg_sq, max_exp_avg_sq`: an optimizer's slot names, for messages. */
const slotList = (def: AnyDef) => (def.slots.length === 0 ? 'it keeps none' : `its slots are ${def.slots.map((s) => s.name).join(', ')}`);

/** 422 when a snapshot names another optimizer than the object's (optimizers cannot be converted). */
function sameOptimizer(def: AnyDef, name: string | undefined, path: Array<string | number>): void {
  const sent = name ?? 'adam';
  if (sent !== def.name) {
    throw validationProblem([
      fieldError(path, `this is a snapshot of ${sent}, but the optimizer is ${def.name} (${def.torch}); the state of one cannot be used by another: create a new ${sent} optimizer to restore it`, sent),
    ]);
  }
}

/** 422 for a tensor the optimizer cannot step (Muon: 2-D only). */
export function checkShapes(def: AnyDef, layout: TensorLayout, path: Array<string | number>): void {
  if (!def.checkShape) return;
  for (const t of leaves(layout)) {
    const message = def.checkShape(t.shape);
    if (message) throw validationProblem([fieldError([...path, ...t.path], message, `[${t.shape.join(', ')}]`)]);
  }
}

/** A slot as a restore received it: its array (in the new memory) and, when some tensor's was absent, which tensors hold it. */
interface SentSlot {
  values: FloatArray;
  held: boolean[] | null;
}

/** The groups of a restore: each tensor's group and each group's hyperparameters (checked). */
interface RestoredGroups {
  groups: ParamGroup[];
  groupOf: number[];
  hps: Hyperparams[];
  tensors: TensorSpan[];
}

/**
 * The state a restore installs, from the slots sent (already in `memory`), scalars and per-tensor
 * counters, as the stateless step takes a state: each slot a group keeps is the sent one (checked
 * >= 0 where it must be; a tensor's may be absent, torch's None), or, when not sent, its initial
 * value at step 0 and, at step > 0, required unless torch creates it from the first gradient
 * (SGD's momentum_buffer); a tensor whose group keeps an eager slot it lacks starts it fresh. A
 * sent slot no group keeps is kept as sent, unread, as torch's load_state_dict keeps it (and a
 * group that turns the option back on resumes from it). Scalars are required at step > 0.
 * A tensor's own counter (step count, scalars) may differ from the top-level one.
 */
function restoredState(
  def: AnyDef,
  g: RestoredGroups,
  memory: Memory,
  step: number,
  sent: ReadonlyMap<string, SentSlot>,
  scalars: Record<string, number | undefined>,
  counters: ReadonlyMap<number, { step: number; scalars: Record<string, number | undefined>; where: Array<string | number> }>,
  where: (slot: string, index?: number) => Array<string | number>,
  whereTensor: (slot: string, tensor: number) => Array<string | number>,
): TreeState {
  const used = [...usedGroups(g.groupOf)];
  const state: TreeState = { step, scalars: {}, slots: {}, held: {}, counters: new Map() };
  for (const slot of def.slots) {
    const keeping = used.find((k) => slot.present(g.hps[k]!));
    const s = sent.get(slot.name);
    const held = s ? (s.held ?? g.tensors.map(() => true)) : null;
    if (s) {
      const i = slot.nonNegative ? firstNegative(s.values) : -1;
      if (i >= 0) throw validationProblem([fieldError(where(slot.name, i), 'must be >= 0 (it is a square, a sum of squares or a magnitude)', s.values[i])]);
    }
    if (keeping === undefined) {
      // No group keeps it: kept as sent, unread.
      if (s && held?.some(Boolean)) {
        state.slots[slot.name] = s.values;
        state.held[slot.name] = held;
      }
      continue;
    }
    if (s && held) {
      // torch has an eager slot for every parameter whose group keeps it (None only elsewhere).
      const lacking = held.findIndex((h, t) => !h && slot.present(g.hps[g.groupOf[t]!]!) && slot.initial(g.hps[g.groupOf[t]!]!) !== null);
      if (lacking >= 0 && held.some(Boolean)) {
        throw validationProblem([fieldError(whereTensor(slot.name, lacking), `is missing: ${def.torch} keeps ${slot.name} for every tensor of a group that keeps it (null only where its group does not)`)]);
      }
      if (held.some(Boolean) || g.tensors.length === 0) {
        state.slots[slot.name] = s.values;
        state.held[slot.name] = held;
        continue;
      }
    }
    if (slot.initial(g.hps[keeping]!) !== null && step > 0) {
      throw validationProblem([fieldError(where(slot.name), `is required when step > 0 (${def.torch} keeps it with these hyperparameters)`)]);
    }
  }
  keepSlots(def, g.hps, g.groupOf, g.tensors, state, (name) => roomFor(memory, name));
  for (const s of def.scalars) {
    const v = scalars[s.name];
    if (v === undefined && step > 0) throw validationProblem([fieldError(where(s.name), 'is required when step > 0')]);
    state.scalars[s.name] = v ?? s.initial;
  }
  for (const [i, c] of counters) {
    // A tensor's own count differs after steps that froze it (torch skips a parameter whose .grad is None).
    const counter: Counter = { step: c.step, scalars: Object.fromEntries(def.scalars.map((s) => [s.name, c.scalars[s.name] ?? state.scalars[s.name]!])) };
    if (counter.step !== step || JSON.stringify(counter.scalars) !== JSON.stringify(state.scalars)) state.counters.set(i, counter);
  }
  return state;
}

/** Which tensors (in layout order) the frozen paths name; a 422 for a path that names no tensor. */
function frozenOf(paths: readonly string[][], layout: TensorLayout, root: string): boolean[] {
  const all = leaves(layout);
  const frozen = all.map(() => false);
  if (paths.length === 0) return frozen;
  const index = new Map(all.map((l, i) => [JSON.stringify(l.path), i]));
  for (const path of paths) {
    const i = index.get(JSON.stringify(path));
    if (i === undefined) throw validationProblem([fieldError([root, ...path], 'is null, but null (a frozen tensor) stands for a tensor of the optimizer\'s params, and this names none')]);
    frozen[i] = true;
  }
  return frozen;
}

/** The layout without the tensors marked (an object left without tensors stays, empty). */
/** A piece's sparse gradient as a shard stores it (./shards.ts encodeRows). */
function decodeRows(blob: Uint8Array | undefined, dtype: Dtype, shape: readonly number[]): SparseRows {
  if (!blob) throw new Error('shard: a sparse piece was sent no rows');
  const rowSize = shape.slice(1).reduce((a, b) => a * b, 1);
  const values = dtype === 'float32' ? Float32Array : Float64Array;
  const view = new DataView(blob.buffer, blob.byteOffset, 12);
  const k = view.getInt32(0, true);
  return { rows: new Int32Array(blob.slice(12, 12 + 4 * k).buffer), values: new values(blob.slice(12 + 4 * k).buffer), rowSize, whole: { rows: view.getInt32(4, true), unique: view.getInt32(8, true) } };
}

/** Most parts one step in parts takes (its record keeps each part's hash). */
const MAX_STEP_PARTS = 4096;

/** 422 for a part of a step that cannot be one: not raw bytes, no Idempotency-Key, or to an accumulating optimizer. */
function checkPart(args: StepArgs, meta: StoredMeta): void {
  if (args.grads.format !== 'raw') throw validationProblem([headerError('Content-Type', 'must be application/octet-stream for a part of a step (part_offset): the elements of the layout from part_offset on', args.grads.format)]);
  if (args.idempotencyKey === undefined) throw validationProblem([headerError('Idempotency-Key', 'is required with part_offset: every part of a step carries the same key', '')]);
  if (meta.accumulate) throw validationProblem([fieldError(['part_offset'], 'is not for optimizers with accumulate (a contribution is one request)', args.partOffset)]);
}

/** `sent` (the tensors not skipped, one after another) spread to their places in `target`; returns `target`. */
function spreadTensors(sent: FloatArray, tensors: readonly TensorSpan[], skip: readonly boolean[], target: FloatArray): FloatArray {
  let at = 0;
  tensors.forEach(({ offset, size }, t) => {
    if (skip[t]) return;
    target.set(sent.subarray(at, at + size), offset);
    at += size;
  });
  return target;
}

function withoutTensors(layout: TensorLayout, drop: readonly boolean[]): TensorLayout {
  let t = 0;
  const walk = (l: TensorLayout): TensorLayout | null => {
    if (l.kind === 'tensor') return drop[t++] ? null : l;
    return { kind: 'named', entries: l.entries.flatMap((e) => {
      const kept = walk(e.layout);
      return kept === null ? [] : [{ name: e.name, layout: kept }];
    }) };
  };
  return walk(layout) ?? { kind: 'named', entries: [] };
}

/** `<slot>/<name>` (or just `<slot>` for a single unnamed tensor). */
const slotName = (slot: string, name: string) => (name === '' ? slot : `${slot}/${name}`);

const sameShape = (a: readonly number[] | undefined, b: readonly number[]) => a !== undefined && a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * The layout and dtype a checkpoint's params make (`__metadata__.layout` orders them when given):
 * the optimizer's own layout, and its nesting, when their names and shapes are its own; else the
 * file's. The dtype is `__metadata__.dtype`, else float64 when some params are F64.
 */
function checkpointLayout(current: TensorLayout, sent: Array<{ name: string; shape: readonly number[]; dtype: WireDtype }>, options: { layout?: string[] | undefined; dtype?: Dtype | undefined }): { layout: TensorLayout; dtype: Dtype } {
  const params = inLayoutOrder(sent, options.layout);
  if (params.length === 0) throw new WireError(422, ['safetensors', 'params'], 'no params/<name> tensors: a checkpoint holds the parameters');
  const dtype = options.dtype ?? (params.some((t) => t.dtype === 'F64') ? 'float64' : 'float32');
  const own = leafIndex(current);
  const same = own !== null && own.size === params.length && params.every((t) => sameShape(own.get(t.name)?.shape, t.shape));
  return { layout: same ? current : layoutOfNamed(params, ['safetensors', 'params']), dtype };
}

function firstNegative(a: FloatArray): number {
  for (let i = 0; i < a.length; i++) if (a[i]! < 0) return i;
  return -1;
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

/**
 * A snapshot's scheduler state, checked against its schedule and param_groups: reduce_on_plateau's
 * only; `group_lrs` holds a rate for each group that sets its own lr and null for the others (absent:
 * each group starts at its lr).
 */
function checkedSchedulerState(state: HostedPlateau | null | undefined, schedule: ScheduleSpec | null, groups: readonly ParamGroup[], path: Array<string | number>): HostedPlateau | null {
  if (!state) return initialPlateau(schedule, groups);
  if (schedule?.type !== 'reduce_on_plateau') {
    throw validationProblem([fieldError(path, 'must be null or omitted unless the schedule is reduce_on_plateau')]);
  }
  const initial = initialGroupLrs(schedule, groups);
  const { group_lrs: lrs, ...shared } = state;
  if (lrs === undefined || lrs === null) return initial ? { ...shared, group_lrs: initial } : shared;
  if (!initial || lrs.length !== initial.length) {
    throw validationProblem([fieldError([...path, 'group_lrs'], `must have one entry per param group (${groups.length})`, `${lrs.length} entries`)]);
  }
  const odd = lrs.findIndex((lr, i) => (lr === null) !== (initial[i] === null));
  if (odd >= 0) {
    throw validationProblem([fieldError([...path, 'group_lrs', odd], initial[odd] === null ? 'must be null: param_groups[' + odd + '] sets no lr (it follows the top-level rate)' : `must be a number: param_groups[${odd}] sets its own lr`, lrs[odd])]);
  }
  return { ...shared, group_lrs: lrs };
}

/** A checkpoint's `__metadata__` parsed (JSON values) and checked like a JSON snapshot's fields, hyperparams by `def`'s schema. */
function checkpointOptions(def: AnyDef, metadata: Record<string, string> | null) {
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
  const scalars: Record<string, number | undefined> = {};
  for (const s of def.scalars) {
    if (m[s.name] === undefined) continue;
    const x = Number(m[s.name]);
    if (m[s.name]!.trim() === '' || !Number.isFinite(x)) throw validationProblem([fieldError(['__metadata__', s.name], 'must be a finite decimal number', m[s.name]!)]);
    scalars[s.name] = x;
  }
  const parsed = CheckpointOptionsSchema.safeParse({
    optimizer: m.optimizer,
    step: m.step === undefined ? undefined : Number(m.step),
    dtype: m.dtype,
    hyperparams: json('hyperparams'),
    schedule: json('schedule'),
    scheduler_state: json('scheduler_state'),
    layout: json('layout'),
    param_groups: json('param_groups'),
  });
  if (!parsed.success) {
    throw validationProblem(zodFieldErrors(parsed.error, undefined).map((e) => ({ ...e, field: `__metadata__.${e.field}`, pointer: undefined })));
  }
  sameOptimizer(def, parsed.data.optimizer, ['__metadata__', 'optimizer']);
  const hp = familySchemas(def).hyperparams.safeParse(parsed.data.hyperparams);
  if (!hp.success) {
    throw validationProblem(zodFieldErrors(hp.error, undefined).map((e) => ({ ...e, field: `__metadata__.hyperparams.${e.field}`, pointer: undefined })));
  }
  const groups = parseParamGroups(def, parsed.data.param_groups, ['__metadata__', 'param_groups'], false);
  return { ...parsed.data, hyperparams: hp.data as Hyperparams, param_groups: groups, scheduler_state: parsed.data.scheduler_state as HostedPlateau | null | undefined, scalars };
}

/** 413 for a state larger than one optimizer of `def` holds. */
export function tooLarge(def: AnyDef, size: number, dtype: Dtype, most: number): ProblemError {
  const arrays = ['params', 'the gradient buffer', ...def.slots.map((s) => s.name)].join(', ');
  return new ProblemError(413, 'payload-too-large', `${size} ${dtype} elements are more than one ${def.name} optimizer holds (${most}: ${arrays} in MAX_HOSTED_BYTES)`, [
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
