// Encodes what a hosted optimizer's Durable Object returns into HTTP responses. JSON answers that
// may be large are streamed from the typed arrays, never held whole as text.

import type { OptimizerInfo, SnapshotOut, StepOut, TensorsOut } from '../../durable-objects/protocol.ts';
import type { FloatArray } from '../../optim/adam.ts';
import { layoutShapes, type TensorLayout } from '../../tensors/tree.ts';
import { approxTreeJsonLength, objectJson, textStream, treeJson, treeJsonPieces, type JsonField } from '../../wire/json.ts';
import { ByteReader } from '../../wire/stream.ts';

const JSON_TYPE = { 'content-type': 'application/json' };

/** Answers with more JSON than this (estimated) are streamed. */
const STREAM_ABOVE = 8 * 1024 * 1024;

/** A JSON response of a small value. Typed `never` so it satisfies every route's typed responses. */
export function jsonResponse(status: number, value: unknown, headers: Record<string, string> = {}): never {
  return new Response(JSON.stringify(value), { status, headers: { ...JSON_TYPE, ...headers } }) as never;
}

/** The JSON body of an optimizer's metadata (OptimizerInfoSchema). */
export function infoJson(info: OptimizerInfo) {
  const { layout, ...rest } = info;
  return {
    id: rest.id,
    step: rest.step,
    hyperparams: rest.hyperparams,
    schedule: rest.schedule,
    next_lr: rest.next_lr,
    dtype: rest.dtype,
    shapes: layoutShapes(layout),
    size: rest.size,
    created_at: rest.created_at,
    updated_at: rest.updated_at,
  };
}

/** `{…head, [key]: tree}`: one string when small, a stream of pieces when large. */
function withTree(head: ReadonlyArray<readonly [string, JsonField]>, key: string, layout: TensorLayout, values: FloatArray, headers: Record<string, string>): never {
  if (approxTreeJsonLength(layout, values.length) <= STREAM_ABOVE) {
    return new Response(objectJson([...head, [key, { json: treeJson(layout, values) }]]), { status: 200, headers: { ...JSON_TYPE, ...headers } }) as never;
  }
  const prefix = objectJson(head).slice(0, -1);
  function* pieces(): Generator<string> {
    yield `${prefix}${prefix.length > 1 ? ',' : ''}${JSON.stringify(key)}:`;
    yield* treeJsonPieces(layout, values);
    yield '}';
  }
  return new Response(textStream(pieces()), { status: 200, headers: { ...JSON_TYPE, ...headers } }) as never;
}

export function paramsJson(step: number, params: TensorsOut, headers: Record<string, string>): never {
  return withTree([['step', { value: step }]], 'params', params.layout, params.values, headers);
}

export function stepJson(out: StepOut, headers: Record<string, string>): never {
  const head = [
    ['step', { value: out.step }],
    ['lr', { value: out.lr }],
    ...(out.replayed ? ([['replayed', { value: true }]] as const) : []),
  ] as const;
  if (!out.params) return new Response(objectJson(head), { status: 200, headers: { ...JSON_TYPE, ...headers } }) as never;
  return withTree(head, 'params', out.params.layout, out.params.values, headers);
}

/** JSON names of the snapshot slots. */
const SLOT_FIELD = { params: 'params', m: 'm', v: 'v', v_max: 'v_max' } as const;

/** The JSON snapshot, streamed: each state tensor is read from the object's stream and written in turn. */
export function snapshotJsonStream(snapshot: SnapshotOut, headers: Record<string, string> = {}): never {
  const { info, layout } = snapshot;
  const reader = new ByteReader(snapshot.data);
  const field = (name: string, value: unknown) => `,${JSON.stringify(name)}:${JSON.stringify(value)}`;
  async function* pieces(): AsyncGenerator<string> {
    try {
      yield `{"id":${JSON.stringify(info.id)}` + field('step', info.step) + field('dtype', info.dtype) + field('hyperparams', info.hyperparams);
      yield field('schedule', info.schedule) + field('scheduler_state', snapshot.schedulerState);
      for (const slot of snapshot.slots) {
        const values = info.dtype === 'float32' ? new Float32Array(info.size) : new Float64Array(info.size);
        const bytes = new Uint8Array(values.buffer);
        await reader.read(bytes.length, (piece, offset) => bytes.set(piece, offset));
        yield `,${JSON.stringify(SLOT_FIELD[slot])}:`;
        yield* treeJsonPieces(layout, values);
      }
      yield field('created_at', info.created_at) + field('updated_at', info.updated_at) + '}';
    } finally {
      await reader.cancel();
    }
  }
  return new Response(textStream(pieces()), { status: 200, headers: { ...JSON_TYPE, ...headers } }) as never;
}
