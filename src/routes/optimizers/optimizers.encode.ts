// Encodes what a hosted optimizer's Durable Object returns into HTTP responses. JSON answers that
// may be large are streamed from the typed arrays, never held whole as text.

import type { OptimizerInfo, SnapshotOut, StepOut, TensorsOut } from '../../durable-objects/protocol.ts';
import type { Dtype, FloatArray } from '../../optim/adam.ts';
import { leafIndex, namedLeaves, type NamedLeaf } from '../../tensors/names.ts';
import { layoutShapes, leaves, type TensorLayout } from '../../tensors/tree.ts';
import { bytesOf, wireDtypeOf } from '../../wire/dtypes.ts';
import { approxTreeJsonLength, objectJson, textStream, treeJson, treeJsonPieces, type JsonField } from '../../wire/json.ts';
import { MEDIA_TYPES, type Format } from '../../wire/media.ts';
import { WireError, encodeHeader, type EntrySpec } from '../../wire/safetensors.ts';
import { ByteReader, aligned } from '../../wire/stream.ts';

const JSON_TYPE = { 'content-type': 'application/json' };

/** Answers with more JSON than this (estimated) are streamed. */
const STREAM_ABOVE = 8 * 1024 * 1024;

/** A JSON response of a small value. Typed `never` so it satisfies every route's typed responses. */
export function jsonResponse(status: number, value: unknown, headers: Record<string, string> = {}): never {
  return new Response(JSON.stringify(value), { status, headers: { ...JSON_TYPE, ...headers } }) as never;
}

/** Names of tensors still waiting for an upload listed in metadata. */
const MISSING_LISTED = 100;

/** The JSON body of an optimizer's metadata (OptimizerInfoSchema). */
export function infoJson(info: OptimizerInfo) {
  const leaves = namedLeaves(info.layout);
  const missing = info.missing as Array<[number, number]>;
  const waiting = missing.length ? leaves.filter((l) => missing.some(([a, b]) => a < l.offset + l.size && l.offset < b)) : [];
  return {
    id: info.id,
    optimizer: info.optimizer,
    step: info.step,
    skipped_steps: info.skipped_steps,
    hyperparams: info.hyperparams,
    ...(info.param_groups.length > 0 ? { param_groups: info.param_groups } : {}),
    max_elements: info.max_elements,
    schedule: info.schedule,
    next_lr: info.next_lr,
    dtype: info.dtype,
    shapes: layoutShapes(info.layout),
    size: info.size,
    layout: leaves.map((l) => ({ name: l.name, shape: [...l.shape], offset: l.offset, size: l.size })),
    upload: {
      complete: missing.length === 0,
      missing_elements: missing.reduce((n, [a, b]) => n + (b - a), 0),
      missing_tensors: waiting.slice(0, MISSING_LISTED).map((l) => l.name),
    },
    created_at: info.created_at,
    updated_at: info.updated_at,
    ttl: info.ttl,
    expires_at: info.expires_at,
    ...(info.accumulate ? { accumulate: info.accumulate } : {}),
    shards: info.shards,
  };
}

/** The layout's tensors by flat name, or a 406 when two share one (safetensors could not tell them apart). */
function namedOrRefuse(layout: TensorLayout): NamedLeaf[] {
  const index = leafIndex(layout);
  if (!index) throw new WireError(406, ['Accept'], 'two tensors of this optimizer have the same dotted name (e.g. "a.b" and {"a": {"b"}}): safetensors cannot name them apart; ask for JSON');
  return [...index.values()];
}

/** `<slot>/<name>` (or `<slot>` for a single unnamed tensor). */
const slotName = (slot: string, name: string) => (name === '' ? slot : `${slot}/${name}`);

/** The header of a safetensors file of named tensors (plain names) in layout order. */
function paramsHeader(layout: TensorLayout, dtype: Dtype, metadata: Record<string, string>): Uint8Array {
  return encodeHeader(namedOrRefuse(layout).map((l) => ({ name: l.name, dtype: wireDtypeOf(dtype), shape: l.shape })), metadata).header;
}

/** `head`, every piece of `source`, then `tail`: one body streamed through (cancelling it cancels the source). */
function framed(head: Uint8Array, source: ReadableStream<Uint8Array>, tail: readonly Uint8Array[] = []): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let stage: 'head' | 'source' | 'tail' = 'head';
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (stage === 'head') {
        stage = 'source';
        if (head.length > 0) {
          controller.enqueue(head);
          return;
        }
      }
      if (stage === 'source') {
        const { done, value } = await reader.read();
        if (!done) {
          controller.enqueue(value);
          return;
        }
        stage = 'tail';
        for (const bytes of tail) controller.enqueue(bytes);
      }
      controller.close();
    },
    async cancel(reason) {
      await reader.cancel(reason);
    },
  });
}

/** A body of exactly `length` bytes, sent with that Content-Length (workerd's FixedLengthStream) where the runtime has it. */
function withLength(body: ReadableStream<Uint8Array>, length: number): ReadableStream<Uint8Array> {
  const Fixed = (globalThis as { FixedLengthStream?: new (n: number) => TransformStream<Uint8Array, Uint8Array> }).FixedLengthStream;
  if (!Fixed) return body;
  const fixed = new Fixed(length);
  void body.pipeTo(fixed.writable).catch(() => {});
  return fixed.readable;
}

/** The params' values read to their end from the object's stream (JSON answers, bounded by the JSON limits). */
async function valuesOf(params: TensorsOut): Promise<FloatArray> {
  if (params.data instanceof Uint8Array) {
    const bytes = aligned(params.data, params.dtype === 'float32' ? 4 : 8);
    return params.dtype === 'float32' ? new Float32Array(bytes.buffer, bytes.byteOffset, params.size) : new Float64Array(bytes.buffer, bytes.byteOffset, params.size);
  }
  const values = params.dtype === 'float32' ? new Float32Array(params.size) : new Float64Array(params.size);
  const bytes = new Uint8Array(values.buffer);
  const reader = new ByteReader(params.data);
  try {
    await reader.read(bytes.length, (piece, offset) => bytes.set(piece, offset));
  } finally {
    await reader.cancel();
  }
  return values;
}

/**
 * Answers carrying params in the negotiated format; `head` holds step and lr (headers, and JSON
 * fields or `__metadata__`). Binary answers stream the object's bytes through; JSON reads them first.
 */
async function tensorsAnswer(format: Format, head: Record<string, number | boolean>, params: TensorsOut | null, headers: Record<string, string>): Promise<Response> {
  const meta = Object.fromEntries(Object.entries(head).map(([k, v]) => [k, String(v)]));
  const common = { ...headers, vary: 'Accept', ...meta };
  try {
    if (format === 'json') {
      const fields = Object.entries(head).map(([k, value]) => [k, { value }] as const);
      if (!params) return new Response(objectJson(fields), { status: 200, headers: { ...JSON_TYPE, ...common } });
      return withTree(fields, 'params', params.layout, await valuesOf(params), common);
    }
    const itemBytes = params?.dtype === 'float64' ? 8 : 4;
    if (format === 'raw') {
      if (!params) return new Response(new Uint8Array(0), { status: 200, headers: { ...common, 'content-type': MEDIA_TYPES.raw } });
      const type = `${MEDIA_TYPES.raw}; dtype=${params.dtype}`;
      const body = params.data instanceof Uint8Array ? params.data : withLength(params.data, params.size * itemBytes);
      return new Response(body, { status: 200, headers: { ...common, 'content-type': type } });
    }
    if (!params) {
      const empty = encodeHeader([], meta).header;
      return new Response(empty, { status: 200, headers: { ...common, 'content-type': MEDIA_TYPES.safetensors } });
    }
    const header = paramsHeader(params.layout, params.dtype, meta);
    if (params.data instanceof Uint8Array) {
      const file = new Uint8Array(header.length + params.data.length);
      file.set(header);
      file.set(params.data, header.length);
      return new Response(file, { status: 200, headers: { ...common, 'content-type': MEDIA_TYPES.safetensors } });
    }
    return new Response(withLength(framed(header, params.data), header.length + params.size * itemBytes), {
      status: 200,
      headers: { ...common, 'content-type': MEDIA_TYPES.safetensors },
    });
  } catch (e) {
    if (params && !(params.data instanceof Uint8Array) && !params.data.locked) void params.data.cancel().catch(() => {});
    throw e;
  }
}

export function stepResponse(format: Format, out: StepOut, headers: Record<string, string>): Promise<never> {
  const head: Record<string, number | boolean> = { step: out.step, lr: out.lr };
  if (out.replayed) head.replayed = true;
  if (out.gradNorm !== undefined) head.grad_norm = out.gradNorm;
  if (out.skipped !== undefined) head.skipped = out.skipped;
  return tensorsAnswer(format, head, out.params, headers) as Promise<never>;
}

export function paramsResponse(format: Format, step: number, params: TensorsOut, headers: Record<string, string>): Promise<never> {
  return tensorsAnswer(format, { step }, params, headers) as Promise<never>;
}

/**
 * The snapshot as a safetensors checkpoint: `params/<name>`, the optimizer's slots by torch's
 * state_dict names (`exp_avg/…`, `momentum_buffer/…`), `step/…` (float32 scalars for a float32
 * counter as torch keeps them, float64 for torch's Python-int counters, none for SGD) and scalar
 * state (`mu_product/…`, float32 as torch keeps it), with optimizer, hyperparams and schedule in
 * `__metadata__`. Streamed: the object's bytes pass straight through.
 */
export function checkpointResponse(snapshot: SnapshotOut, headers: Record<string, string>): never {
  const { info, layout } = snapshot;
  const leaves = namedOrRefuse(layout);
  const dtype = wireDtypeOf(info.dtype);
  const specs: EntrySpec[] = [];
  // A tensor a slot is not held for (torch: None) has no tensor in the file, as torch's state_dict has no entry.
  for (const slot of snapshot.slots) {
    const held = snapshot.held[slot];
    leaves.forEach((l, i) => {
      if (!held || held[i]) specs.push({ name: slotName(slot, l.name), dtype, shape: l.shape });
    });
  }
  const stepType = snapshot.stepCounter === 'none' ? null : snapshot.stepCounter === 'float32' ? 'F32' : 'F64';
  if (stepType) for (const l of leaves) specs.push({ name: slotName('step', l.name), dtype: stepType, shape: [] });
  const scalarNames = Object.keys(info.scalars);
  for (const name of scalarNames) for (const l of leaves) specs.push({ name: slotName(name, l.name), dtype: 'F32', shape: [] });
  // torch keeps the step and scalars per parameter: each tensor's own where it differs.
  const counters = new Map(snapshot.counters.map((k) => [k.tensor, k]));
  const metadata = {
    optimizer: info.optimizer,
    step: String(info.step),
    ...Object.fromEntries(scalarNames.map((n) => [n, String(info.scalars[n])])),
    dtype: info.dtype,
    hyperparams: JSON.stringify(info.hyperparams),
    ...(info.param_groups.length > 0 ? { param_groups: JSON.stringify(info.param_groups) } : {}),
    schedule: JSON.stringify(info.schedule),
    scheduler_state: JSON.stringify(snapshot.schedulerState),
    // Informative: the rate the next step applies, and the storage order of the tensors (raw bodies follow it).
    next_lr: JSON.stringify(info.next_lr),
    layout: JSON.stringify(leaves.map((l) => l.name)),
    id: info.id,
    created_at: info.created_at,
    updated_at: info.updated_at,
  };
  let header: Uint8Array;
  try {
    header = encodeHeader(specs, metadata).header;
  } catch (e) {
    void snapshot.data.cancel();
    throw e;
  }
  const tail: Uint8Array[] = [];
  const steps = leaves.map((_, i) => counters.get(i)?.step ?? info.step);
  if (stepType) tail.push(bytesOf(stepType === 'F32' ? Float32Array.from(steps) : Float64Array.from(steps)));
  for (const name of scalarNames) tail.push(bytesOf(Float32Array.from(leaves, (_, i) => counters.get(i)?.scalars[name] ?? info.scalars[name]!)));
  const body = framed(header, snapshot.data, tail);
  return new Response(body, { status: 200, headers: { ...headers, vary: 'Accept', 'content-type': MEDIA_TYPES.safetensors } }) as never;
}

/** `{…head, [key]: tree}`: one string when small, a stream of pieces when large. */
function withTree(head: ReadonlyArray<readonly [string, JsonField]>, key: string, layout: TensorLayout, values: FloatArray, headers: Record<string, string>): Response {
  if (approxTreeJsonLength(layout, values.length) <= STREAM_ABOVE) {
    return new Response(objectJson([...head, [key, { json: treeJson(layout, values) }]]), { status: 200, headers: { ...JSON_TYPE, ...headers } });
  }
  const prefix = objectJson(head).slice(0, -1);
  function* pieces(): Generator<string> {
    yield `${prefix}${prefix.length > 1 ? ',' : ''}${JSON.stringify(key)}:`;
    yield* treeJsonPieces(layout, values);
    yield '}';
  }
  return new Response(textStream(pieces()), { status: 200, headers: { ...JSON_TYPE, vary: 'Accept', ...headers } });
}

/** JSON names of Adam's snapshot slots (those of /v1/adam/step); every other optimizer's are torch's. */
const ADAM_FIELD: Readonly<Record<string, string>> = { exp_avg: 'm', exp_avg_sq: 'v', max_exp_avg_sq: 'v_max' };

/** The JSON snapshot, streamed: each state tensor is read from the object's stream and written in turn. */
export function snapshotJsonStream(snapshot: SnapshotOut, headers: Record<string, string> = {}): never {
  const { info, layout } = snapshot;
  const reader = new ByteReader(snapshot.data);
  const field = (name: string, value: unknown) => `,${JSON.stringify(name)}:${JSON.stringify(value)}`;
  async function* pieces(): AsyncGenerator<string> {
    try {
      yield `{"id":${JSON.stringify(info.id)}` + field('optimizer', info.optimizer) + field('step', info.step) + field('dtype', info.dtype) + field('hyperparams', info.hyperparams);
      if (info.param_groups.length > 0) yield field('param_groups', info.param_groups);
      yield field('schedule', info.schedule) + field('scheduler_state', snapshot.schedulerState);
      const tensors = leaves(layout);
      for (const slot of snapshot.slots) {
        const values = info.dtype === 'float32' ? new Float32Array(info.size) : new Float64Array(info.size);
        const bytes = new Uint8Array(values.buffer);
        const held = snapshot.held[slot];
        if (!held) await reader.read(bytes.length, (piece, offset) => bytes.set(piece, offset));
        else {
          // Only the tensors that hold the slot were streamed, in layout order.
          for (let i = 0; i < tensors.length; i++) {
            if (!held[i]) continue;
            const start = tensors[i]!.offset * values.BYTES_PER_ELEMENT;
            await reader.read(tensors[i]!.size * values.BYTES_PER_ELEMENT, (piece, offset) => bytes.set(piece, start + offset));
          }
        }
        yield `,${JSON.stringify(info.optimizer === 'adam' ? (ADAM_FIELD[slot] ?? slot) : slot)}:`;
        yield* treeJsonPieces(layout, values, held);
      }
      // Scalar state (NAdam's mu_product) is a float32 number in torch: exact as a double.
      const names = namedLeaves(layout);
      const counters = snapshot.counters.length === 0 ? '' : field('tensors', Object.fromEntries(snapshot.counters.map((k) => [names[k.tensor]!.name, { step: k.step, ...k.scalars }])));
      yield Object.entries(info.scalars).map(([k, v]) => field(k, v)).join('') + counters + field('created_at', info.created_at) + field('updated_at', info.updated_at) + '}';
    } finally {
      await reader.cancel();
    }
  }
  return new Response(textStream(pieces()), { status: 200, headers: { ...JSON_TYPE, vary: 'Accept', ...headers } }) as never;
}
