// The safetensors format (Hugging Face): an 8-byte little-endian header length N, N bytes of JSON
// naming each tensor's `dtype`, `shape` and `data_offsets` (byte range in the data that follows)
// plus an optional `__metadata__` object of strings, then the data: row-major, little-endian,
// covering the data section exactly, without holes or overlaps. Every number in a header is
// checked before it is used; a bad file is a WireError naming what is wrong, never a read out of range.

import { MAX_NAME_LENGTH, MAX_RANK } from '../tensors/tree.ts';
import { WIRE_DTYPES, isWireDtype, type WireDtype } from './dtypes.ts';

/** Largest header accepted (bytes of JSON). */
export const MAX_HEADER_BYTES = 16 << 20;
/** Most tensors in one file (a checkpoint holds up to five per parameter tensor). */
export const MAX_ENTRIES = 60_000;

/** A request body that cannot be used; `path` names the part (e.g. ["safetensors", "fc.weight", "shape"]). */
export class WireError extends Error {
  readonly status: 406 | 413 | 415 | 422;
  readonly path: ReadonlyArray<string | number>;
  readonly value: unknown;
  constructor(status: 406 | 413 | 415 | 422, path: ReadonlyArray<string | number>, message: string, value?: unknown) {
    super(message);
    this.name = 'WireError';
    this.status = status;
    this.path = path;
    this.value = value;
  }
}

export interface TensorEntry {
  name: string;
  dtype: WireDtype;
  shape: number[];
  /** Byte range in the data section (after the header). */
  start: number;
  end: number;
}

/** An integer tensor (a sparse gradient's row indices), accepted only where the caller allows one. */
export interface IndexEntry {
  name: string;
  dtype: IndexDtype;
  shape: number[];
  start: number;
  end: number;
}

/** Integer element types of row indices: safetensors' I64 (torch's `long`) and I32. */
export type IndexDtype = 'I64' | 'I32';
export const INDEX_DTYPES: Readonly<Record<IndexDtype, { bytes: number }>> = { I64: { bytes: 8 }, I32: { bytes: 4 } };

export interface SafetensorsHeader {
  /** The tensors in data order (by start offset). */
  entries: TensorEntry[];
  /** With `options.indices`: the integer tensors it allowed, in data order. */
  indexEntries: IndexEntry[];
  metadata: Record<string, string> | null;
  /** Bytes of the data section: the end of the last tensor. */
  dataLength: number;
}

const ROOT = ['safetensors'] as const;
const at = (...path: Array<string | number>) => [...ROOT, ...path];

/** The header's JSON length from the first 8 bytes (an unsigned 64-bit little-endian integer). */
export function headerLength(first8: Uint8Array, bodyLength: number | null): number {
  const view = new DataView(first8.buffer, first8.byteOffset, 8);
  const n = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
  if (n > MAX_HEADER_BYTES) throw new WireError(413, at('header'), `the header length is ${n} bytes; at most ${MAX_HEADER_BYTES} are accepted`, n);
  if (n < 2) throw new WireError(422, at('header'), `the header length is ${n} bytes: too short for a JSON object`, n);
  if (bodyLength !== null && 8 + n > bodyLength) {
    throw new WireError(422, at('header'), `the header length ${n} reaches beyond the body (${bodyLength} bytes)`, n);
  }
  return n;
}

/** The top-level keys of a JSON object text in order, with repeats (JSON.parse silently keeps the last). */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 0x22) {
      // a string: find its end, honouring escapes
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(text.slice(i, j + 1)) as string);
      expectKey = false;
      i = j;
    } else if (ch === 0x7b || ch === 0x5b) {
      depth++;
      expectKey = ch === 0x7b && depth === 1;
    } else if (ch === 0x7d || ch === 0x5d) {
      depth--;
    } else if (ch === 0x2c && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

const isIndex = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;

/**
 * Parses and checks a header. `dataLength`, when known (the body's length minus the header),
 * must equal the end of the last tensor.
 */
export function parseHeader(json: Uint8Array, dataLength: number | null, options: { indices?: (name: string) => boolean } = {}): SafetensorsHeader {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(json);
  } catch {
    throw new WireError(422, at('header'), 'the header is not UTF-8 text');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new WireError(422, at('header'), 'the header is not JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new WireError(422, at('header'), 'the header must be a JSON object');
  const names = topLevelKeys(text);
  const seen = new Set<string>();
  for (const name of names) {
    if (seen.has(name)) throw new WireError(422, at(name), `tensor name "${name}" appears twice in the header`, name);
    seen.add(name);
  }
  const record = parsed as Record<string, unknown>;

  let metadata: Record<string, string> | null = null;
  if (Object.hasOwn(record, '__metadata__')) {
    const m = record.__metadata__;
    if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new WireError(422, at('__metadata__'), '__metadata__ must be an object of strings');
    for (const [k, v] of Object.entries(m)) {
      if (typeof v !== 'string') throw new WireError(422, at('__metadata__', k), `__metadata__ values must be strings (safetensors stores text), got ${typeof v}`);
    }
    metadata = m as Record<string, string>;
  }

  const entries: TensorEntry[] = [];
  const indexEntries: IndexEntry[] = [];
  for (const [name, info] of Object.entries(record)) {
    if (name === '__metadata__') continue;
    if (entries.length === MAX_ENTRIES) throw new WireError(413, at('header'), `more than ${MAX_ENTRIES} tensors`);
    // Room for a checkpoint's slot prefix ("max_exp_avg_sq/") on top of the longest tensor name.
    if (name.length > MAX_NAME_LENGTH + 32) throw new WireError(422, at(name.slice(0, 40) + '…'), `a tensor name is ${name.length} characters long; at most ${MAX_NAME_LENGTH + 32} are allowed`);
    if (info === null || typeof info !== 'object' || Array.isArray(info)) throw new WireError(422, at(name), 'must be an object with dtype, shape and data_offsets');
    const { dtype, shape, data_offsets: offsets, ...rest } = info as Record<string, unknown>;
    const extra = Object.keys(rest)[0];
    if (extra !== undefined) throw new WireError(422, at(name, extra), `unknown field "${extra}" (a tensor has dtype, shape and data_offsets)`);
    if (typeof dtype !== 'string') throw new WireError(422, at(name, 'dtype'), 'dtype is required (e.g. "F32")');
    const isIndices = options.indices?.(name) ?? false;
    if (isIndices && !Object.hasOwn(INDEX_DTYPES, dtype)) throw new WireError(422, at(name, 'dtype'), `row indices are I64 or I32, got ${dtype}`, dtype);
    if (!isIndices && !isWireDtype(dtype)) {
      throw new WireError(422, at(name, 'dtype'), `dtype ${dtype} is not supported; use one of ${Object.keys(WIRE_DTYPES).join(', ')}`, dtype);
    }
    if (!Array.isArray(shape) || !shape.every(isIndex)) throw new WireError(422, at(name, 'shape'), 'shape must be an array of non-negative integers');
    if (shape.length > MAX_RANK) throw new WireError(422, at(name, 'shape'), `more than ${MAX_RANK} dimensions`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex)) {
      throw new WireError(422, at(name, 'data_offsets'), 'data_offsets must be [begin, end], two non-negative integers');
    }
    const [start, end] = offsets as [number, number];
    if (end < start) throw new WireError(422, at(name, 'data_offsets'), `data_offsets [${start}, ${end}] end before they begin`);
    let elements = 1;
    for (const d of shape as number[]) elements *= d;
    const bytes = elements * (isIndices ? INDEX_DTYPES[dtype as IndexDtype] : WIRE_DTYPES[dtype as WireDtype]).bytes;
    if (!Number.isSafeInteger(bytes) || bytes !== end - start) {
      throw new WireError(422, at(name, 'data_offsets'), `shape [${(shape as number[]).join(', ')}] of ${dtype} needs ${bytes} bytes, but data_offsets [${start}, ${end}] hold ${end - start}`);
    }
    if (isIndices) indexEntries.push({ name, dtype: dtype as IndexDtype, shape: shape as number[], start, end });
    else entries.push({ name, dtype: dtype as WireDtype, shape: shape as number[], start, end });
  }

  entries.sort((a, b) => a.start - b.start || a.end - b.end);
  indexEntries.sort((a, b) => a.start - b.start || a.end - b.end);
  const all: Array<{ name: string; start: number; end: number }> = [...entries, ...indexEntries].sort((a, b) => a.start - b.start || a.end - b.end);
  let cursor = 0;
  for (const e of all) {
    if (e.start < cursor) throw new WireError(422, at(e.name, 'data_offsets'), `data_offsets [${e.start}, ${e.end}] overlap another tensor's bytes`);
    if (e.start > cursor) throw new WireError(422, at(e.name, 'data_offsets'), `data_offsets [${e.start}, ${e.end}] leave bytes ${cursor}–${e.start} unused (the data must have no holes)`);
    cursor = e.end;
  }
  if (dataLength !== null && cursor !== dataLength) {
    throw new WireError(422, at('data'), `the tensors cover ${cursor} bytes of data but the body holds ${dataLength} after the header`);
  }
  return { entries, indexEntries, metadata, dataLength: cursor };
}

/** One tensor to write: its name, type, shape (its bytes follow in the same order). */
export interface EntrySpec {
  name: string;
  dtype: WireDtype;
  shape: readonly number[];
}

/**
 * The first 8 + N bytes of a safetensors file holding `tensors` in the given order, their data
 * laid out back to back in that order. The JSON is padded with spaces to a multiple of 8 bytes, so
 * the data section starts 8-byte aligned (as the Python and Rust writers do).
 */
export function encodeHeader(tensors: readonly EntrySpec[], metadata: Record<string, string> | null): { header: Uint8Array; dataLength: number } {
  const object: Record<string, unknown> = Object.create(null);
  if (metadata) object.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    let elements = 1;
    for (const d of t.shape) elements *= d;
    const end = offset + elements * WIRE_DTYPES[t.dtype].bytes;
    object[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, end] };
    offset = end;
  }
  const json = new TextEncoder().encode(JSON.stringify(object));
  if (json.length > MAX_HEADER_BYTES) throw new WireError(406, at('header'), `the safetensors header would be ${json.length} bytes, more than ${MAX_HEADER_BYTES}; ask for JSON instead`);
  const padded = Math.ceil(json.length / 8) * 8;
  const header = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(header.buffer).setUint32(0, padded, true); // < 2^32: bounded by MAX_HEADER_BYTES
  header.set(json, 8);
  return { header, dataLength: offset };
}

/** Bytes of `text` in UTF-8 (a lone surrogate counts 3, as TextEncoder writes U+FFFD). */
export function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/**
 * At least as many bytes as encodeHeader's JSON takes for one tensor entry whose name is
 * `nameBytes` bytes as a JSON string (quotes and escapes included), with data offsets of at most
 * `offsetDigits` digits: `"<name>":{"dtype":"F32","shape":[…],"data_offsets":[a,b]},`.
 */
export function entryBytesBound(nameBytes: number, shape: readonly number[], offsetDigits: number): number {
  return nameBytes + shape.join(',').length + 2 * offsetDigits + 48;
}

/**
 * Tensors in the order `__metadata__.layout` lists their names (the storage order, which raw bodies
 * follow); without it, the order of their data (writers that sort names would otherwise reorder).
 */
export function inLayoutOrder<T extends { name: string }>(tensors: T[], order: string[] | undefined): T[] {
  if (order === undefined) return tensors;
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const sorted = order.map((name) => byName.get(name));
  if (order.length !== tensors.length || new Set(order).size !== order.length || sorted.some((t) => t === undefined)) {
    throw new WireError(422, ['__metadata__', 'layout'], 'must list each tensor name of the file once (the order of raw bodies)');
  }
  return sorted as T[];
}

