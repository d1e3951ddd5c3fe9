// Decoding binary request bodies inside a hosted optimizer, as they stream in, straight into the
// arrays that keep them (the kernel's memory): raw bytes in layout order, or safetensors tensors
// placed by name. The object has checked the token before any of this reads a byte.

import type { Dtype, FloatArray } from '../optim/adam.ts';
import type { NamedLeaf } from '../tensors/names.ts';
import { WIRE_DTYPES, elementSink, firstNonFiniteIn, fitsInto, wireDtypeOf, type WireDtype } from '../wire/dtypes.ts';
import { WireError, headerLength, parseHeader, type SafetensorsHeader, type TensorEntry } from '../wire/safetensors.ts';
import { ByteReader, type ByteSource } from '../wire/stream.ts';

/** Where one tensor of a body goes: `count` elements at out[offset…]. */
export interface Placement {
  out: FloatArray;
  offset: number;
  count: number;
  /** The tensor's name in errors, e.g. ["grads", "fc.weight"]. */
  path: Array<string | number>;
  /**
   * Also keep the body's bytes as they came (before widening), at `offset` × their item size:
   * a journal of narrow gradients stores those, half the bytes of the widened ones.
   */
  keep?: Uint8Array | undefined;
  /** A faster scan for non-finite values (the kernel's, for arrays in its memory). */
  scan?: ((values: FloatArray) => number) | undefined;
  /**
   * Let NaN and ±Infinity through (gradients of an optimizer with `nonfinite: "skip"`, whose step
   * looks at them itself and skips); every other check still applies.
   */
  allowNonFinite?: boolean | undefined;
  /** Appended to the message of a non-finite value (what the client can do about it). */
  nonFiniteHint?: string | undefined;
}

/** A sink writing pieces widened into the placement and, when asked, as they came into `keep`. */
export function placementSink(src: WireDtype, p: Placement, count: number) {
  const sink = elementSink(src, p.out, p.offset, count);
  if (!p.keep) return (piece: Uint8Array) => sink.write(piece);
  const keep = p.keep;
  const base = p.offset * WIRE_DTYPES[src].bytes;
  return (piece: Uint8Array, at: number) => {
    keep.set(piece, base + at);
    sink.write(piece);
  };
}

/** 422 unless every element of a placed range is finite (or the placement allows them). */
export function checkFinite(p: Placement): void {
  if (p.allowNonFinite) return;
  const at = p.scan ? p.scan(p.out.subarray(p.offset, p.offset + p.count)) : firstNonFiniteIn(p.out, p.offset, p.offset + p.count) - p.offset;
  if (at >= 0) throw new WireError(422, [...p.path, at], `element ${at} is ${p.out[p.offset + at]}: every value must be finite${p.nonFiniteHint ?? ''}`);
}

/** 422 unless `src` widens exactly into `dtype`. */
export function checkFits(src: WireDtype, dtype: Dtype, path: Array<string | number>): void {
  if (!fitsInto(src, dtype)) {
    throw new WireError(422, path, `dtype ${WIRE_DTYPES[src].name} does not fit a ${dtype} optimizer (it would round); send ${WIRE_DTYPES[wireDtypeOf(dtype)].name} or narrower`, src);
  }
}

/**
 * A raw body: `src` elements back to back, into `place` (exactly `place.count` elements, or, with
 * `upTo`, any whole number of elements up to it). Returns the element count read.
 */
export async function readRaw(source: ByteSource, length: number | null, src: WireDtype, place: Placement, upTo = false): Promise<number> {
  const size = WIRE_DTYPES[src].bytes;
  const reader = new ByteReader(source, true); // paced: the object's lock is held while it reads
  try {
    if (!upTo) {
      const want = place.count * size;
      if (length !== null && length !== want) {
        throw new WireError(422, ['body'], `the body has ${length} bytes; ${place.count} ${WIRE_DTYPES[src].name} elements are ${want} bytes`, length);
      }
      await reader.read(want, placementSink(src, place, place.count));
      await reader.expectEnd();
      checkFinite(place);
      return place.count;
    }
    if (length !== null && (length % size !== 0 || length > place.count * size)) {
      throw new WireError(422, ['body'], `the body has ${length} bytes: not a whole number of ${WIRE_DTYPES[src].name} elements within the ${place.count} that fit from here`, length);
    }
    // The count is known only at the end: write as the bytes come, within the room there is.
    const bytes = await reader.readToEnd(place.count * size, placementSink(src, place, place.count));
    if (bytes % size !== 0) throw new WireError(422, ['body'], `the body has ${bytes} bytes: not a whole number of ${size}-byte elements`, bytes);
    const count = bytes / size;
    checkFinite({ ...place, count });
    return count;
  } finally {
    await reader.cancel();
  }
}

/**
 * A safetensors body. After the header is read, `place` maps each tensor (in data order) to where
 * its values go (it checks names, shapes and dtypes and may allocate); then the data streams into
 * those places, each checked finite (unless it allows non-finite values). Returns the header.
 */
export async function readSafetensors(
  source: ByteSource,
  length: number | null,
  place: (header: SafetensorsHeader) => Placement[],
  /** Integer tensors (a sparse gradient's row indices) by name: which names may be, and where their bytes go. */
  indices?: { is: (name: string) => boolean; bytes: Map<string, Uint8Array> },
): Promise<SafetensorsHeader> {
  const reader = new ByteReader(source, true); // paced: the object's lock is held while it reads
  try {
    if (length !== null && length < 8) throw new WireError(422, ['safetensors'], `a safetensors body has at least 8 bytes, got ${length}`);
    const n = headerLength(await reader.readExactly(8), length);
    const header = parseHeader(await reader.readExactly(n), length === null ? null : length - 8 - n, indices ? { indices: indices.is } : {});
    const places = place(header);
    // Float tensors and integer ones (kept as bytes) in data order.
    const order = [...header.entries.map((e, i) => ({ start: e.start, i, j: -1 })), ...header.indexEntries.map((e, j) => ({ start: e.start, i: -1, j }))].sort((a, b) => a.start - b.start);
    for (const { i, j } of order) {
      if (j >= 0) {
        const e = header.indexEntries[j]!;
        const bytes = new Uint8Array(e.end - e.start);
        await reader.read(bytes.length, (piece, at) => bytes.set(piece, at));
        indices!.bytes.set(e.name, bytes);
        continue;
      }
      const e = header.entries[i]!;
      const p = places[i]!;
      await reader.read(e.end - e.start, placementSink(e.dtype, p, p.count));
      checkFinite(p);
    }
    await reader.expectEnd();
    return header;
  } finally {
    await reader.cancel();
  }
}

/** 422 unless a file's tensor has its parameter's shape and a dtype that fits. */
export function checkEntry(e: TensorEntry, leaf: NamedLeaf, dtype: Dtype, path: Array<string | number>): void {
  if (e.shape.length !== leaf.shape.length || e.shape.some((d, i) => d !== leaf.shape[i])) {
    throw new WireError(422, [...path, 'shape'], `shape [${e.shape.join(', ')}] differs from the parameter's [${leaf.shape.join(', ')}]`);
  }
  checkFits(e.dtype, dtype, [...path, 'dtype']);
}
