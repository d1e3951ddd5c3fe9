// The JSON wire format of tensor trees: numbers that keep the sign of zero (torch can return -0.0,
// and JSON.stringify would print 0, flipping a float32 bit), response objects whose tensor fields
// are written from flat typed arrays, and pieces for streaming answers too large to hold as text.

import { type TensorLayout, unflatten } from '../tensors/tree.ts';

/** One number as JSON, keeping -0 (written `-0.0`, which JSON allows). */
export function numberText(x: number): string {
  return x === 0 && 1 / x < 0 ? '-0.0' : JSON.stringify(x);
}

/** True when any element is -0. */
export function hasNegativeZero(values: ArrayLike<number>): boolean {
  for (let i = 0; i < values.length; i++) if (values[i] === 0 && 1 / values[i]! < 0) return true;
  return false;
}

/** Elements written per yielded piece (about 20 bytes each). */
const ELEMENTS_PER_PIECE = 16_384;

/**
 * JSON text of the tree `layout` over `values`, in pieces; joined, it is the tree's JSON. With
 * `present`, a tensor (in layout order) whose entry is false is written `null` (torch keeps no such
 * state for it) and its elements are skipped.
 */
export function* treeJsonPieces(layout: TensorLayout, values: ArrayLike<number>, present?: readonly boolean[]): Generator<string> {
  let cursor = 0;
  let tensor = 0;
  let buffer = '';
  let pending = 0;
  function* flush(): Generator<string> {
    if (buffer) yield buffer;
    buffer = '';
    pending = 0;
  }
  function* tree(l: TensorLayout): Generator<string> {
    if (l.kind === 'named') {
      buffer += '{';
      for (let i = 0; i < l.entries.length; i++) {
        buffer += (i ? ',' : '') + JSON.stringify(l.entries[i]!.name) + ':';
        yield* tree(l.entries[i]!.layout);
      }
      buffer += '}';
      return;
    }
    if (present && !present[tensor++]) {
      buffer += 'null';
      cursor += l.shape.reduce((a, b) => a * b, 1);
      return;
    }
    if (l.shape.length === 0) {
      buffer += numberText(values[cursor++]!);
      return;
    }
    yield* dims(l.shape, 0);
  }
  function* dims(shape: readonly number[], depth: number): Generator<string> {
    const len = shape[depth]!;
    buffer += '[';
    for (let i = 0; i < len; i++) {
      if (i) buffer += ',';
      if (depth === shape.length - 1) {
        buffer += numberText(values[cursor++]!);
        if (++pending >= ELEMENTS_PER_PIECE) yield* flush();
      } else {
        yield* dims(shape, depth + 1);
      }
    }
    buffer += ']';
  }
  yield* tree(layout);
  yield* flush();
}

/**
 * JSON text of one tree. JSON.stringify (native, fast) when no element is -0; otherwise the
 * piecewise writer, which prints -0 as `-0.0`. Names are only ever written by JSON.stringify.
 */
export function treeJson(layout: TensorLayout, values: ArrayLike<number>): string {
  if (!hasNegativeZero(values)) return JSON.stringify(unflatten(layout, values));
  return [...treeJsonPieces(layout, values)].join('');
}

/** A field of a JSON object written by `objectJson`: a plain value, or JSON text already written. */
export type JsonField = { json: string } | { value: unknown };

/**
 * `{"k":…,…}` from fields in order; undefined values are left out, as JSON.stringify does. A
 * number keeps the sign of zero (NAdam's `mu_product`, a scalar of the state, can be -0).
 */
export function objectJson(fields: ReadonlyArray<readonly [string, JsonField]>): string {
  const parts: string[] = [];
  for (const [key, field] of fields) {
    const text = 'json' in field ? field.json : typeof field.value === 'number' ? numberText(field.value) : JSON.stringify(field.value);
    if (text !== undefined) parts.push(`${JSON.stringify(key)}:${text}`);
  }
  return `{${parts.join(',')}}`;
}

/** A byte stream of text assembled from string pieces, pulled lazily. */
export function textStream(pieces: Iterable<string> | AsyncIterable<string>): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  const iterator = Symbol.asyncIterator in pieces ? pieces[Symbol.asyncIterator]() : (pieces as Iterable<string>)[Symbol.iterator]();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      // An empty piece enqueues nothing, and a pull that enqueues nothing may not be called again (the reader would wait): skip it.
      for (;;) {
        const next = await iterator.next();
        if (next.done) return controller.close();
        if (next.value) return controller.enqueue(encoder.encode(next.value));
      }
    },
    async cancel() {
      await iterator.return?.();
    },
  });
}

/** A generous estimate of the JSON length of a tree of `size` elements (25 characters per number). */
export function approxTreeJsonLength(layout: TensorLayout, size: number): number {
  let names = 0;
  const walk = (l: TensorLayout): void => {
    if (l.kind === 'tensor') {
      names += 2 * l.shape.length + 2;
      return;
    }
    for (const e of l.entries) {
      names += e.name.length * 6 + 8; // \uXXXX escapes at worst
      walk(e.layout);
    }
  };
  walk(layout);
  return size * 25 + names;
}

/**
 * JSON text of a tree in which some tensors are absent (`null`), e.g. a state slot torch keeps as
 * None for the tensors that have not needed it: `present[i]` tells for the i-th tensor in order.
 */
export function partialTreeJson(layout: TensorLayout, values: ArrayLike<number> & { subarray?: unknown }, present: readonly boolean[]): string {
  if (present.every(Boolean)) return treeJson(layout, values);
  let index = 0;
  let offset = 0;
  const write = (l: TensorLayout): string => {
    if (l.kind === 'tensor') {
      const size = l.shape.reduce((a, b) => a * b, 1);
      const text = present[index++] ? treeJson(l, Array.prototype.slice.call(values, offset, offset + size) as number[]) : 'null';
      offset += size;
      return text;
    }
    return `{${l.entries.map((e) => `${JSON.stringify(e.name)}:${write(e.layout)}`).join(',')}}`;
  };
  return write(layout);
}
