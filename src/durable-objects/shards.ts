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

import type { Dtype, FloatArray, Hyperparams } from '../optim/optimizer.ts';
import { normFoldEnd, normFoldPiece, normFoldStart, type NormFold } from '../optim/clip.ts';
import { place, PlacementError, type PlacedTensor } from '../tensors/placement.ts';
import { layoutOfNamed } from '../tensors/names.ts';
import { leaves, pathOfIndex, type TensorLayout } from '../tensors/tree.ts';
import { WIRE_DTYPES, firstNonFiniteIn, type WireDtype } from '../wire/dtypes.ts';
import { WireError } from '../wire/safetensors.ts';
import { ByteReader, paceDeadline, type ByteSource } from '../wire/stream.ts';
import { placementSink } from './decode.ts';
import type { HostedOptimizer } from './hosted-optimizer.ts';
import type { Outcome } from './protocol.ts';
import { ProblemError } from '../lib/problem.ts';

/**
 * Test hooks, never set in production: called at those points of a coordinator's step, where a
 * throw is a crash (nothing after it runs: no abort, no commit).
 */
export const SHARD_FAULTS: { beforeDecision?: (() => void) | undefined; afterDecision?: (() => void) | undefined } = {};

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
  /** A decided step some shard may not have stored yet: completed by the next call. */
  pending?: ShardDecision | null;
}

/** The coordinator's decision for step `seq`: what every shard applies. */
export interface ShardDecision {
  seq: number;
  /** Hyperparameters with lr resolved from the schedule. */
  hp: Hyperparams;
  /** clip_grad_norm_'s coefficient (null: no clipping by norm). */
  coef: number | null;
  clipValue: number | null;
}

type Stub = DurableObjectStub<HostedOptimizer>;

/** The stub of shard `i` of optimizer `id`: named, so no object id needs storing. */
export function shardStub(env: Env, id: string, i: number): Stub {
  const ns = env.HOSTED_OPTIMIZER;
  return ns.get(ns.idFromName(`${id}/shard/${i}`)) as Stub;
}

/** A shard's answer, or its problem thrown. */
async function value<T>(p: Promise<Outcome<T>>): Promise<T> {
  const o = await p;
  if (!o.ok) throw ProblemError.fromData(o.problem);
  return o.value;
}

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

/** Shard `i`'s own layout: one tensor per piece, named by tensor index and first element (errors never show them). */
export function shardLayout(layout: TensorLayout, shard: ShardsRecord['placement'][number]): TensorLayout {
  const all = leaves(layout);
  return layoutOfNamed(
    shard.pieces.map((p) => {
      const shape = all[p.tensor]!.shape;
      const whole = p.from === 0 && p.to === all[p.tensor]!.size;
      const row = shape.length >= 2 ? (all[p.tensor]!.size / shape[0]!) : 1;
      return { name: `t${p.tensor}_${p.from}`, shape: whole ? [...shape] : shape.length >= 2 ? [(p.to - p.from) / row, ...shape.slice(1)] : [p.to - p.from] };
    }),
  );
}

/** The gradient as it comes, sliced shard by shard in layout order. */
export type GradientSlices =
  | { kind: 'values'; values: FloatArray }
  | { kind: 'raw'; body: ByteSource; length: number | null; src: WireDtype; nonFiniteHint: string };

/** What the prepare phase learnt about the whole gradient. */
export interface Prepared {
  /** Global index of the first NaN or ±Infinity (nonfinite: skip), or -1. */
  nonFinite: number;
  /** Per-tensor 2-norms in layout order (clip_grad_norm_), or null. */
  norms: number[] | null;
  /** SHA-256 fingerprint, as an unsharded optimizer computes it (Idempotency-Key reuse). */
  fingerprint: string;
}

const hex = (bytes: ArrayBuffer) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');

/**
 * Phase 1 of step `seq`: reads the gradient in layout order, one shard's slice at a time, and
 * hands each to its shard (at most two slices in flight, so the coordinator never holds the
 * whole gradient). NaN and ±Infinity are a 422 naming the element unless `allowNonFinite`.
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
}): Promise<Prepared> {
  const { env, id, record, layout, dtype, size, seq, grads } = args;
  const tensors = leaves(layout);
  const digest = new crypto.DigestStream('SHA-256');
  const writer = digest.getWriter();
  // As ./hosted-optimizer.ts's fingerprint() hashes one object's gradient (no frozen or sparse tensor here).
  await writer.write(new TextEncoder().encode(`${dtype}:${size}:${args.loss ?? ''}:`));
  const folds: Array<NormFold | null> = tensors.map(() => null);
  const norms: number[] | null = args.norms ? tensors.map(() => 0) : null;
  let nonFinite = -1;
  const reader = grads.kind === 'raw' ? new ByteReader(grads.body, true) : null;
  if (grads.kind === 'raw') {
    const want = size * WIRE_DTYPES[grads.src].bytes;
    if (grads.length !== null && grads.length !== want) {
      throw new WireError(422, ['body'], `the body has ${grads.length} bytes; ${size} ${WIRE_DTYPES[grads.src].name} elements are ${want} bytes`, grads.length);
    }
  }
  const inFlight: Array<Promise<unknown>> = [];
  try {
    for (let i = 0; i < record.placement.length; i++) {
      const shard = record.placement[i]!;
      const count = shard.end - shard.start;
      let slice: FloatArray;
      if (grads.kind === 'values') slice = grads.values.slice(shard.start, shard.end);
      else {
        slice = dtype === 'float32' ? new Float32Array(count) : new Float64Array(count);
        await reader!.read(count * WIRE_DTYPES[grads.src].bytes, placementSink(grads.src, { out: slice, offset: 0, count, path: ['grads'] }, count));
      }
      const bad = firstNonFiniteIn(slice);
      if (bad >= 0 && nonFinite < 0) {
        if (!args.allowNonFinite) {
          const hint = grads.kind === 'raw' ? grads.nonFiniteHint : '';
          throw new WireError(422, grads.kind === 'raw' ? ['grads', shard.start + bad] : ['grads', ...pathOfIndex(layout, shard.start + bad)], `element ${shard.start + bad} is ${slice[bad]}: every value must be finite${hint}`);
        }
        nonFinite = shard.start + bad;
      }
      if (norms) {
        let at = 0;
        for (const p of shard.pieces) {
          const n = p.to - p.from;
          const total = tensors[p.tensor]!.size;
          folds[p.tensor] = normFoldPiece(dtype, folds[p.tensor] ?? normFoldStart(dtype), slice.subarray(at, at + n), p.from, total);
          if (p.to === total) norms[p.tensor] = normFoldEnd(dtype, folds[p.tensor]!, total);
          at += n;
        }
      }
      const bytes = new Uint8Array(slice.buffer, slice.byteOffset, slice.byteLength);
      for (let at = 0; at < bytes.length; at += 1 << 20) await writer.write(bytes.slice(at, at + (1 << 20)));
      if (!args.send) continue;
      if (inFlight.length >= 2) await inFlight.shift();
      inFlight.push(value(shardStub(env, id, i).shardPrepare(record.secret, { seq, grads: bytes })));
    }
    if (reader) await reader.expectEnd();
    await Promise.all(inFlight);
  } catch (e) {
    await Promise.allSettled(inFlight);
    if (args.send) await abortShards(env, id, record, seq);
    throw e;
  } finally {
    await reader?.cancel();
  }
  // Tensors of no element have norm 0 (a fold of nothing).
  if (norms) tensors.forEach((t, k) => t.size === 0 && (norms[k] = 0));
  await writer.close();
  return { nonFinite, norms, fingerprint: hex(await digest.digest) };
}

/** Every shard drops prepared step `seq` (best effort: a shard that misses it drops it at its next prepare). */
export async function abortShards(env: Env, id: string, record: ShardsRecord, seq: number): Promise<void> {
  await Promise.allSettled(record.placement.map((_, i) => shardStub(env, id, i).shardAbort(record.secret, seq)));
}

/**
 * Phase 2 without storing: every shard applies `decision` in memory. Returns the first non-finite
 * result's global element, or -1 (every shard then holds the step, not yet stored).
 */
export async function tryShards(env: Env, id: string, record: ShardsRecord, decision: ShardDecision): Promise<{ nonFinite: number; step: number }> {
  const answers = await Promise.all(record.placement.map((_, i) => value(shardStub(env, id, i).shardApply(record.secret, { ...decision, persist: false }))));
  const bad = answers.findIndex((a) => a.nonFinite >= 0);
  return { nonFinite: bad < 0 ? -1 : record.placement[bad]!.start + answers[bad]!.nonFinite, step: answers[0]?.step ?? 0 };
}

/** The decided step stored by every shard (each re-applies it from its prepared slice if needed). */
export async function commitShards(env: Env, id: string, record: ShardsRecord, decision: ShardDecision): Promise<void> {
  await Promise.all(record.placement.map((_, i) => value(shardStub(env, id, i).shardApply(record.secret, { ...decision, persist: true }))));
}

/**
 * Stored tensors (`params` or slots) of the whole layout, one after another: each the shards'
 * slices in order, each slice asked for only when the previous one has been read, so a shard's
 * lock is held only while its own bytes stream. `release` runs once at the end, on cancel, or when
 * the reader falls behind TRANSFER_PACE (the stream then errors), as for an unsharded snapshot.
 */
export function gatherStream(env: Env, id: string, record: ShardsRecord, slots: readonly string[], release: () => void): ReadableStream<Uint8Array> {
  const parts = slots.flatMap((slot) => record.placement.map((_, i) => ({ slot, i })));
  let k = 0;
  let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
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
      void reader?.cancel();
      controllerRef?.error(new Error('sharded stream not read in time'));
    }, Math.max(0, paceDeadline(startedAt, sent) - Date.now()));
  };
  arm();
  const enqueue = (controller: ReadableStreamDefaultController<Uint8Array>, bytes: Uint8Array) => {
    controller.enqueue(bytes);
    sent += bytes.length;
    arm();
  };
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controllerRef = controller;
    },
    async pull(controller) {
      try {
        for (;;) {
          if (reader) {
            const r = await reader.read();
            if (!r.done) return enqueue(controller, r.value);
            reader = null;
          }
          if (k === parts.length) {
            finish();
            return controller.close();
          }
          const { slot, i } = parts[k++]!;
          const got = await value(shardStub(env, id, i).shardTensor(record.secret, slot));
          if (got.data instanceof Uint8Array) {
            if (got.data.length > 0) return enqueue(controller, got.data);
          } else reader = got.data.getReader();
        }
      } catch (e) {
        finish();
        controller.error(e);
      }
    },
    async cancel(reason) {
      finish();
      await reader?.cancel(reason);
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

/** Deletes every shard (an optimizer's DELETE, its expiry, a failed creation). */
export async function destroyShards(env: Env, id: string, record: ShardsRecord): Promise<void> {
  await Promise.all(record.placement.map((_, i) => shardStub(env, id, i).remove(record.secret)));
}

/** The secret shards are created with: 32 random bytes, hex (compared as a token hash; no token hashes to it knowingly). */
export function newShardSecret(): string {
  return hex(crypto.getRandomValues(new Uint8Array(32)).buffer as ArrayBuffer);
}
