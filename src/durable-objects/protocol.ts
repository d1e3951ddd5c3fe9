// What crosses the RPC boundary between the Worker and a hosted optimizer's Durable Object: plain
// data only (typed arrays, streams, JSON-able objects). The object never writes HTTP; the Worker
// encodes its answers once, in the format the client asked for. Types only: importable anywhere.

import type { KeyQuota } from '../lib/config.ts';
import type { ProblemData } from '../lib/problem.ts';
import type { Dtype, FloatArray, Hyperparams } from '../optim/optimizer.ts';
import type { PlateauState } from '../schedules/plateau.ts';
import type { ScheduleSpec } from '../schedules/types.ts';
import type { FlatTensors, TensorLayout } from '../tensors/tree.ts';
import type { WireDtype } from '../wire/dtypes.ts';
import type { ByteSource } from '../wire/stream.ts';

/** A param group as validated (src/lib/param-groups.ts's ParamGroup), in types RPC can carry. */
export interface GroupOut {
  params: string[];
  [hyperparam: string]: number | boolean | string | string[];
}

/** reduce_on_plateau's state, with each param group's own rate (null: the group follows the top-level one). */
export interface SchedulerState extends PlateauState {
  group_lrs?: Array<number | null>;
}

/** An RPC answer: a value, or a problem the Worker renders as problem+json. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; problem: ProblemData };

/** One tensor of an optimizer's layout, in storage order. */
export interface LayoutEntry {
  /** Dotted path of the tensor (`""` for an unnamed single tensor); its name in safetensors files. */
  name: string;
  shape: number[];
  /** Offset of the tensor's first element in the flat layout (raw bodies: times the item size in bytes). */
  offset: number;
  /** Number of elements. */
  size: number;
}

/** Metadata of a hosted optimizer; the Worker answers GET /v1/optimizers/{id} with it. */
export interface OptimizerInfo {
  id: string;
  /** The registry name (`adam`, `sgd`, …). */
  optimizer: string;
  step: number;
  /** Steps skipped by `nonfinite: "skip"` since creation. */
  skipped_steps: number;
  hyperparams: Hyperparams;
  /** torch's param_groups as set (empty: none): each group's patterns and the hyperparameters it overrides. */
  param_groups: GroupOut[];
  /** Scalar state (NAdam's `mu_product`), by torch's name; empty for most optimizers. */
  scalars: Record<string, number>;
  /** Most elements an optimizer of this kind and dtype holds (MAX_HOSTED_BYTES over its arrays). */
  max_elements: number;
  schedule: ScheduleSpec | null;
  next_lr: number | null;
  dtype: Dtype;
  layout: TensorLayout;
  size: number;
  /** Element ranges [start, end) of params not uploaded yet (optimizers created by shapes). */
  missing: number[][];
  created_at: string;
  updated_at: string;
  /** Time-to-live in seconds. */
  ttl: number;
  /** The last successful call plus `ttl` (ISO 8601): the optimizer deletes itself then. */
  expires_at: string;
  /** Objects holding the tensors: 1, or the shard count of a sharded optimizer. */
  shards: number;
  /** Set: each step takes this many contributions (./accumulate.ts), with the workers whose contribution to the pending step is held. */
  accumulate?: AccumulateSpec & { received: number[]; missing: number };
}

/** Many workers, one optimizer: each step is the mean (or sum) of `contributions` gradients, one per worker id. */
export interface AccumulateSpec {
  contributions: number;
  reduce: 'mean' | 'sum';
}

/** The answer to a contribution that does not complete its step (202). */
export interface PendingOut {
  worker: number;
  /** Completed steps: the pending step makes it step + 1. */
  step: number;
  contributions: number;
  reduce: 'mean' | 'sum';
  /** Worker ids whose contribution to the pending step is held, ascending. */
  received: number[];
  missing: number;
  /** True when this contribution was already held (identical): nothing new was stored. */
  replayed: boolean;
}

/** A value and the state version (ETag) it belongs to. */
export interface Versioned<T> {
  etag: string;
  value: T;
}

/** Tensor values leaving the object: one typed array in the optimizer's dtype. */
export interface TensorsOut {
  dtype: Dtype;
  layout: TensorLayout;
  /** Elements, in layout order. */
  size: number;
  /**
   * The values' bytes (little-endian, layout order): a copy when small (PARAMS_COPY_MAX), else a
   * stream copied a piece at a time from the object's memory while it holds its lock, so no copy of
   * a large tensor exists on either side. Read a stream to its end or cancel it (the lock is also
   * freed when the reader falls behind TRANSFER_PACE).
   */
  data: ReadableStream<Uint8Array> | Uint8Array;
}

/**
 * Tensors as the Worker hands them over: JSON already flattened (as doubles, in the client's key
 * order), or a binary body as it arrives (`length` from Content-Length when sent), decoded by the
 * object straight into its memory once it has checked the token.
 */
export type TensorsIn =
  | {
      format: 'json';
      flat: FlatTensors;
      /** Paths (under the tree's root) of the tensors whose gradient was `null`, left out of `flat`: frozen. */
      frozen?: string[][];
    }
  | { format: 'raw'; dtype: WireDtype | null; body: ByteSource; length: number | null }
  | { format: 'safetensors'; body: ByteSource; length: number | null };

export interface StepArgs {
  grads: TensorsIn;
  loss?: number | undefined;
  expectedStep?: number | undefined;
  ifMatch?: string | undefined;
  idempotencyKey?: string | undefined;
  returnParams: boolean;
  /** The params go back as a safetensors file: refused (406) before anything is applied if two tensors share a dotted name. */
  namedParams?: boolean | undefined;
  /** With accumulate: this worker's id (0..contributions-1); the gradient is its contribution. */
  worker?: number | undefined;
  /** A step in parts (sharded optimizers, raw bodies): the layout element this part starts at. */
  partOffset?: number | undefined;
}

export interface StepOut {
  step: number;
  lr: number;
  /** True when this answers a retried Idempotency-Key: nothing was applied again. */
  replayed: boolean;
  /** With clip_grad_norm: the gradients' total norm before clipping (Infinity when it overflowed the dtype). Replays answer the original's. */
  gradNorm?: number;
  /** With nonfinite: skip: whether the step was skipped (nothing changed). Replays answer the original's. */
  skipped?: boolean;
  /** New params (when asked for, and not on a replay whose params have since changed). */
  params: TensorsOut | null;
  /** Milliseconds spent in the object: reading the gradient, the kernel, storage (Server-Timing). */
  timings: { decode: number; kernel: number; storage: number };
  /** With accumulate: the contribution was taken but the step waits for others (202); nothing else of this answer applies. */
  pending?: PendingOut;
  /** A step in parts: this part was taken, the step waits for the rest (202); nothing else of this answer applies. */
  part?: PartOut;
}

/** A part of a step taken (202). */
export interface PartOut {
  /** Completed steps (the last part makes it step + 1). */
  step: number;
  offset: number;
  received: number;
  missing: number;
  replayed: boolean;
}

export interface CreateArgs {
  tokenHash: string;
  /** The registry name; the Worker has validated `hyperparams` with its schema. */
  optimizer: string;
  layout: TensorLayout;
  /** Initial params; null: zeros, and every element must be uploaded (PUT params) before a step. */
  params: FloatArray | null;
  hyperparams: Hyperparams;
  /** Validated with the optimizer's ParamGroups schema (empty: none); the object matches them to the tensors. */
  paramGroups: GroupOut[];
  /** Where the groups are in the request (`param_groups`, or `__metadata__.param_groups`), for errors. */
  groupsPath: string[];
  schedule: ScheduleSpec | null;
  dtype: Dtype;
  /** Time-to-live in seconds. */
  ttl: number;
  /** SHA-256 of the service API key that created it (its registry tracks it), or null. */
  owner: string | null;
  /** Steps taking several workers' contributions (absent: every gradient is a step). */
  accumulate?: AccumulateSpec | undefined;
  /** Shards asked for (absent: one object, or the fewest shards when the params exceed one object's limit). */
  shards?: number | undefined;
  /** Most elements one object holds (the Worker's limits): params beyond it are sharded. */
  maxElements?: number | undefined;
}

/** A snapshot to restore, already validated and flattened by the Worker. */
export interface RestoreArgs {
  /** The snapshot's optimizer: must be the object's (422 otherwise). */
  optimizer: string;
  /** An If-Match header: the change is made only in that state (412 otherwise). */
  ifMatch?: string | undefined;
  step: number;
  dtype: Dtype;
  /** Validated with the optimizer's schema (defaults filled in). */
  hyperparams: Hyperparams;
  /** Validated with the optimizer's ParamGroups schema (empty: none). */
  paramGroups: GroupOut[];
  schedule: ScheduleSpec | null;
  schedulerState?: SchedulerState | null | undefined;
  layout: TensorLayout;
  params: FloatArray;
  /**
   * Slots sent, by torch's name, each with the field name the client used (for errors) and, when
   * some tensor's was null (torch has None), which tensors (layout order) hold it.
   */
  slots: Record<string, { field: string; values: FloatArray; held?: boolean[] | undefined }>;
  /** Scalars sent, by torch's name. */
  scalars: Record<string, number>;
  /** Tensors whose step count or scalars differ from the top-level ones (the snapshot's `tensors`), by name. */
  tensors?: Record<string, Record<string, number>> | undefined;
  /** The owner key's quota, should the restore change the optimizer's size. */
  quota: KeyQuota;
}

/** A restore from a safetensors checkpoint, decoded and checked by the object. */
export interface RestoreFileArgs {
  /** An If-Match header: the change is made only in that state (412 otherwise). */
  ifMatch?: string | undefined;
  format: 'safetensors';
  body: ByteSource;
  length: number | null;
  quota: KeyQuota;
}

/**
 * New values for some params (PUT params): a JSON tree or safetensors file of whole tensors by
 * name, or a raw body of elements starting at element `offset` of tensor `tensor` (of the flat
 * layout when `tensor` is absent).
 */
export interface UploadArgs {
  /** An If-Match header: the change is made only in that state (412 otherwise). */
  ifMatch?: string | undefined;
  body: TensorsIn;
  tensor?: string | undefined;
  offset?: number | undefined;
}

export interface PatchArgs {
  /** An If-Match header: the change is made only in that state (412 otherwise). */
  ifMatch?: string | undefined;
  /** As sent: the object validates it with its optimizer's schema. */
  hyperparams?: Record<string, unknown> | undefined;
  /** As sent (null: no groups any more; absent: unchanged): the object validates it with its optimizer's ParamGroups schema. */
  paramGroups?: unknown;
  schedule?: ScheduleSpec | null | undefined;
  ttl?: number | undefined;
  /** New accumulate setting (null: off; absent: unchanged). */
  accumulate?: AccumulateSpec | null | undefined;
}

/** A state tensor of a snapshot: `params` or a slot's torch name; each is `size` elements in the layout. */
export type SnapshotSlot = string;

/**
 * A full snapshot: metadata, then the bytes of every state tensor (little-endian, the optimizer's
 * dtype), slot after slot in `slots` order. Streamed: a snapshot can exceed the 32 MiB RPC limit.
 * Steps wait until the stream is read (or cancelled), so it is one consistent state.
 */
export interface SnapshotOut {
  etag: string;
  info: OptimizerInfo;
  schedulerState: SchedulerState | null;
  layout: TensorLayout;
  /** How the optimizer counts steps (safetensors `step/…` tensors: none, float32 or integer). */
  stepCounter: 'float32' | 'integer' | 'none';
  slots: SnapshotSlot[];
  /**
   * For a slot some tensor does not hold (torch has None for it): which tensors (layout order) do;
   * the stream then holds only theirs. Absent for a slot: every tensor's.
   */
  held: Record<string, boolean[]>;
  /** Tensors (layout order) whose step count or scalars differ from the top-level ones. */
  counters: Array<{ tensor: number; step: number; scalars: Record<string, number> }>;
  data: ReadableStream<Uint8Array>;
}

/** One history entry: an applied step, or (`skipped: true`) one skipped by `nonfinite: "skip"`. */
export interface HistoryEntry {
  /** Completed steps after it (a skipped step leaves the count unchanged). */
  step: number;
  lr: number;
  loss: number | null;
  at: string;
  /** With clip_grad_norm: the total norm before clipping (Infinity when it overflowed the dtype). */
  grad_norm?: number;
  skipped?: true;
}

/** A hosted optimizer as the listing of its owner's optimizers shows it. */
export interface OptimizerSummary {
  id: string;
  /** The registry name (`adam` for optimizers stored before there were others). */
  optimizer: string;
  step: number;
  size: number;
  dtype: Dtype;
  created_at: string;
  updated_at: string;
  expires_at: string;
}

/** What a service API key holds: its optimizers and their elements all together. */
export interface KeyUsage {
  optimizers: number;
  elements: number;
}

/** One page of a key's optimizers, oldest first; `next` is where the following page starts (null: none). */
export interface OptimizerPage {
  optimizers: OptimizerSummary[];
  next: number | null;
  usage: KeyUsage;
}
