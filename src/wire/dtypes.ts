// Element types of binary tensors and their exact widening into the optimizer's dtype. Gradients
// may arrive narrower than the optimizer (bfloat16, float16, or float32 for a float64 optimizer):
// every value of a narrower IEEE format is exactly a float32 (and float64), so widening never rounds.

import type { Dtype, FloatArray } from '../optim/adam.ts';

/** safetensors' names of the element types accepted. */
export type WireDtype = 'F16' | 'BF16' | 'F32' | 'F64';

export const WIRE_DTYPES: Readonly<Record<WireDtype, { bytes: number; name: string }>> = {
  F16: { bytes: 2, name: 'float16' },
  BF16: { bytes: 2, name: 'bfloat16' },
  F32: { bytes: 4, name: 'float32' },
  F64: { bytes: 8, name: 'float64' },
};

export const isWireDtype = (s: string): s is WireDtype => Object.hasOwn(WIRE_DTYPES, s);

/** The wire dtype of an optimizer dtype. */
export const wireDtypeOf = (dtype: Dtype): WireDtype => (dtype === 'float32' ? 'F32' : 'F64');

/** A raw body's dtype parameter (`float32`, `bfloat16`, … or safetensors' `F32`, `BF16`, …), or null. */
export function parseDtypeName(text: string): WireDtype | null {
  const t = text.trim();
  if (isWireDtype(t.toUpperCase())) return t.toUpperCase() as WireDtype;
  const found = (Object.keys(WIRE_DTYPES) as WireDtype[]).find((k) => WIRE_DTYPES[k].name === t.toLowerCase());
  return found ?? null;
}

/** Whether values of `src` widen exactly into `dst` (never narrowing: that would round). */
export const fitsInto = (src: WireDtype, dst: Dtype): boolean => WIRE_DTYPES[src].bytes <= (dst === 'float32' ? 4 : 8);

/** float16 bit patterns → float32 values, built on first use (exact: every float16 is a float32). */
let f16Table: Float32Array | null = null;
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) table[h] = sign * frac * 2 ** -24; // zero and subnormals
    else if (exp === 31) table[h] = frac ? NaN : sign * Infinity;
    else table[h] = sign * (1024 + frac) * 2 ** (exp - 25);
  }
  f16Table = table;
  return table;
}

/** Converts `count` elements of `src` starting at the (element-aligned) bytes into out[at…]. */
function convert(src: WireDtype, bytes: Uint8Array, count: number, out: FloatArray, at: number): void {
  if (count === 0) return;
  const size = WIRE_DTYPES[src].bytes;
  const b = bytes.byteOffset % size === 0 ? bytes : bytes.slice(0, count * size);
  switch (src) {
    case 'F32':
      out.set(new Float32Array(b.buffer, b.byteOffset, count), at);
      return;
    case 'F64':
      out.set(new Float64Array(b.buffer, b.byteOffset, count), at);
      return;
    case 'BF16': {
      // A bfloat16 is the high half of a float32.
      const halves = new Uint16Array(b.buffer, b.byteOffset, count);
      if (out instanceof Float32Array) {
        const words = new Uint32Array(out.buffer, out.byteOffset + at * 4, count);
        for (let i = 0; i < count; i++) words[i] = halves[i]! << 16;
      } else {
        const word = new Uint32Array(1);
        const value = new Float32Array(word.buffer);
        for (let i = 0; i < count; i++) {
          word[0] = halves[i]! << 16;
          out[at + i] = value[0]!;
        }
      }
      return;
    }
    case 'F16': {
      const halves = new Uint16Array(b.buffer, b.byteOffset, count);
      const table = halfTable();
      for (let i = 0; i < count; i++) out[at + i] = table[halves[i]!]!;
      return;
    }
  }
}

/**
 * A sink for the bytes of `count` elements of type `src`, arriving in pieces of any length (as a
 * stream delivers them), written widened into out[start…]. Same-type bytes are copied as bytes.
 * `done()` tells whether every element arrived.
 */
export function elementSink(src: WireDtype, out: FloatArray, start: number, count: number) {
  const size = WIRE_DTYPES[src].bytes;
  const sameType = size === out.BYTES_PER_ELEMENT;
  const outBytes = new Uint8Array(out.buffer, out.byteOffset + start * out.BYTES_PER_ELEMENT, count * out.BYTES_PER_ELEMENT);
  const carry = new Uint8Array(8);
  let carried = 0;
  let written = 0; // bytes (same type) or elements (widening)
  return {
    write(piece: Uint8Array): void {
      if (sameType) {
        outBytes.set(piece, written);
        written += piece.length;
        return;
      }
      let p = piece;
      if (carried > 0) {
        const take = Math.min(size - carried, p.length);
        carry.set(p.subarray(0, take), carried);
        carried += take;
        p = p.subarray(take);
        if (carried < size) return;
        convert(src, carry, 1, out, start + written++);
        carried = 0;
      }
      const whole = Math.floor(p.length / size);
      convert(src, p, whole, out, start + written);
      written += whole;
      const rest = p.subarray(whole * size);
      carry.set(rest);
      carried = rest.length;
    },
    done(): boolean {
      return sameType ? written === outBytes.length : written === count && carried === 0;
    },
  };
}

/** Index of the first NaN or ±Infinity in a[start, end), or -1. */
export function firstNonFiniteIn(a: FloatArray, start = 0, end = a.length): number {
  for (let i = start; i < end; i++) {
    const x = a[i]!;
    if (x - x !== 0) return i;
  }
  return -1;
}

/** The little-endian bytes of a typed array (a view, no copy). */
export function bytesOf(a: FloatArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
