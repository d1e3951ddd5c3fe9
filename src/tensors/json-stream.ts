// JSON text of tensor trees produced in pieces, so a large snapshot can be streamed without ever
// holding its whole text (tens of MB) in memory at once.

import { numberText } from '../lib/json-text.ts';
import type { TensorLayout } from './tree.ts';

/** Elements written per yielded piece (about 20 bytes each). */
const ELEMENTS_PER_PIECE = 16_384;

/** JSON text of the tree `layout` over `values`, in pieces; joined, it equals JSON.stringify(unflatten(...)). */
export function* treeJsonPieces(layout: TensorLayout, values: ArrayLike<number>): Generator<string> {
  let cursor = 0;
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

/** A byte stream of JSON text assembled from string pieces, pulled lazily. */
export function textStream(pieces: Iterable<string>): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  const iterator = pieces[Symbol.iterator]();
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      const next = iterator.next();
      if (next.done) controller.close();
      else controller.enqueue(encoder.encode(next.value));
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
