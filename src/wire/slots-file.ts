// Stateless steps in safetensors: tensors named `<slot>/<name>` (params, grads, and the state
// under torch's names: exp_avg, momentum_buffer, …), the step count and options in `__metadata__`
// or the query string. Decoding checks everything the JSON path checks, naming the tensor.

import type { Dtype, FloatArray } from '../optim/optimizer.ts';
import type { SparseRows } from '../optim/sparse.ts';
import { type NamedLeaf, layoutOfNamed, leafIndex } from '../tensors/names.ts';
import { MAX_TENSORS, type TensorLayout, layoutSize, layoutWeight } from '../tensors/tree.ts';
import { WIRE_DTYPES, bytesOf, elementSink, firstNonFiniteIn, fitsInto, wireDtypeOf, type WireDtype } from './dtypes.ts';
import { WireError, encodeHeader, headerLength, parseHeader, type EntrySpec, type IndexEntry, type TensorEntry } from './safetensors.ts';

/**
 * A sparse (row) gradient in a step file: `grads.indices/<name>` (I64 or I32, shape [k] or torch's
 * `_indices()` shape [1, k]) and `grads.values/<name>` (shape [k, …the row's shape]), in place of
 * `grads/<name>`.
 */
export const SPARSE_INDICES = 'grads.indices';
export const SPARSE_VALUES = 'grads.values';

/** `<slot>/<name>` (or just `<slot>` for a single unnamed tensor). */
export const slotTensorName = (slot: string, name: string) => (name === '' ? slot : `${slot}/${name}`);

function splitName(name: string, slots: readonly string[]): { slot: string; leaf: string } {
  const cut = name.indexOf('/');
  const slot = cut < 0 ? name : name.slice(0, cut);
  if (!slots.includes(slot)) {
    throw new WireError(422, ['safetensors', name], `tensor "${name}" is not named <slot>/<name> with a slot among ${slots.join(', ')}`, name);
  }
  return { slot, leaf: cut < 0 ? '' : name.slice(cut + 1) };
}

/** The header and where its data starts, for a whole body (with `sparse`, `grads.indices/…` may be integers). */
export function readHeader(body: Uint8Array, sparse = false) {
  if (body.length < 8) throw new WireError(422, ['safetensors'], `a safetensors body has at least 8 bytes, got ${body.length}`);
  const n = headerLength(body.subarray(0, 8), body.length);
  const indices = sparse ? (name: string) => name === SPARSE_INDICES || name.startsWith(`${SPARSE_INDICES}/`) : undefined;
  const header = parseHeader(body.subarray(8, 8 + n), body.length - 8 - n, { indices });
  return { ...header, dataStart: 8 + n };
}

/** A decoded file of `<slot>/<name>` tensors over the params' layout. */
export interface SlotsFile {
  layout: TensorLayout;
  dtype: Dtype;
  params: FloatArray;
  grads: FloatArray;
  /** Every other slot: its values, or null when the file has none of its tensors. */
  slots: Record<string, FloatArray | null>;
  /** With `partial`: for grads and each non-null slot, which params tensors (in order) have one. */
  present: Record<string, boolean[]>;
  /** With `partial`: per params tensor (in order), its gradient's rows when sent sparse, else null. */
  sparse: Array<SparseRows | null>;
  metadata: Record<string, string>;
}

/**
 * Decodes a stateless step body whose tensors are `params/…`, `grads/…` and `<slot>/…` for each of
 * `slots` (each slot all or nothing). `dtype` (from the query), else `__metadata__.dtype`, wins;
 * otherwise float64 when any params tensor is F64, else float32. `maxBytes` bounds the decoded arrays.
 */
export function decodeSlotsFile(body: Uint8Array, slots: readonly string[], requestedDtype: Dtype | undefined, maxBytes: number, partial = false): SlotsFile {
  const { entries, indexEntries, metadata, dataStart } = readHeader(body, partial);
  // Any other metadata dtype is refused by the handler's options schema.
  const metadataDtype = metadata?.dtype === 'float32' || metadata?.dtype === 'float64' ? metadata.dtype : undefined;
  const names = ['params', 'grads', ...(partial ? [SPARSE_VALUES] : []), ...slots];
  const bySlot = new Map<string, Map<string, TensorEntry>>(names.map((s) => [s, new Map()]));
  for (const e of entries) {
    const { slot, leaf } = splitName(e.name, names);
    bySlot.get(slot)!.set(leaf, e);
  }
  const indicesByName = new Map<string, IndexEntry>(indexEntries.map((e) => [splitName(e.name, [SPARSE_INDICES]).leaf, e]));
  const paramEntries = [...bySlot.get('params')!.entries()].map(([name, e]) => ({ name, shape: e.shape, entry: e }));
  if (paramEntries.length === 0) throw new WireError(422, ['safetensors', 'params'], 'no params/<name> tensors: the file must hold the parameters');
  if (paramEntries.length > MAX_TENSORS) throw new WireError(422, ['safetensors', 'params'], `more than ${MAX_TENSORS} parameter tensors`);
  const dtype: Dtype = requestedDtype ?? metadataDtype ?? (paramEntries.some((p) => p.entry.dtype === 'F64') ? 'float64' : 'float32');
  const layout = layoutOfNamed(paramEntries, ['safetensors', 'params']);
  const index = leafIndex(layout)!; // names of one file are distinct
  const size = layoutSize(layout);
  // A dimension of 0 counts as 1 here: an answer in JSON writes such a tensor as nested empty arrays.
  const weight = layoutWeight(layout);
  if (names.length * weight * (dtype === 'float32' ? 4 : 8) > maxBytes) {
    throw new WireError(413, ['safetensors', 'params'], `${weight} elements (a dimension of 0 counting as 1) per tensor tree do not fit the stateless step's memory budget; use a hosted optimizer`);
  }
  const make = () => (dtype === 'float32' ? new Float32Array(size) : new Float64Array(size));

  /** Decodes slot `slot` (every param tensor, same shapes) into a new array; null when absent and optional. */
  const present: Record<string, boolean[]> = {};
  const decodeSlot = (slot: string, required: boolean): FloatArray | null => {
    const found = bySlot.get(slot)!;
    if (found.size === 0 && !required) return null;
    for (const name of found.keys()) {
      if (!index.has(name)) throw new WireError(422, ['safetensors', slotTensorName(slot, name)], `"${slotTensorName(slot, name)}" has no params/${name} to match`);
    }
    const out = make();
    const has: boolean[] = (present[slot] = []);
    for (const leaf of index.values()) {
      const e = found.get(leaf.name);
      const where = ['safetensors', slotTensorName(slot, leaf.name)];
      has.push(e !== undefined);
      // A missing grads tensor is a frozen one, a missing state tensor one torch keeps as None.
      if (!e && partial && slot !== 'params') continue;
      if (!e) throw new WireError(422, where, `tensor "${slotTensorName(slot, leaf.name)}" is missing (every params tensor needs its ${slot} tensor)`);
      checkEntry(e, leaf, dtype, where);
      elementSink(e.dtype, out, leaf.offset, leaf.size).write(body.subarray(dataStart + e.start, dataStart + e.end));
      // With `partial`, the caller checks the gradients itself (a skipping step accepts NaN/Inf there).
      if (partial && slot === 'grads') continue;
      const bad = firstNonFiniteIn(out, leaf.offset, leaf.offset + leaf.size);
      if (bad >= 0) throw new WireError(422, [...where, bad - leaf.offset], `element ${bad - leaf.offset} is ${out[bad]}: every value must be finite`);
    }
    return out;
  };

  if (bySlot.get('grads')!.size === 0 && indicesByName.size === 0 && (bySlot.get(SPARSE_VALUES)?.size ?? 0) === 0) {
    throw new WireError(422, ['safetensors', 'grads'], 'no grads/<name> tensors: the file must hold the gradients (a frozen tensor\'s may be left out)');
  }
  const params = decodeSlot('params', true)!;
  const grads = decodeSlot('grads', true)!;
  const sparse = partial ? decodeSparse(body, dataStart, index, bySlot.get(SPARSE_VALUES)!, indicesByName, bySlot.get('grads')!, dtype) : [];
  const decoded = Object.fromEntries(slots.map((s) => [s, decodeSlot(s, false)]));
  return { layout, dtype, params, grads, slots: decoded, present, sparse, metadata: metadata ?? {} };
}

/** Each params tensor's gradient rows (`grads.indices/…` with `grads.values/…`), or null; checked as the JSON form is. */
function decodeSparse(
  body: Uint8Array,
  dataStart: number,
  index: Map<string, NamedLeaf>,
  values: Map<string, TensorEntry>,
  indices: Map<string, IndexEntry>,
  dense: Map<string, TensorEntry>,
  dtype: Dtype,
): Array<SparseRows | null> {
  for (const [slot, names] of [[SPARSE_VALUES, values.keys()], [SPARSE_INDICES, indices.keys()]] as const) {
    for (const name of names) {
      if (!index.has(name)) throw new WireError(422, ['safetensors', slotTensorName(slot, name)], `"${slotTensorName(slot, name)}" has no params/${name} to match`);
    }
  }
  return [...index.values()].map((leaf) => {
    const v = values.get(leaf.name);
    const ix = indices.get(leaf.name);
    if (!v && !ix) return null;
    const at = (slot: string) => ['safetensors', slotTensorName(slot, leaf.name)];
    if (!v || !ix) {
      const missing = v ? SPARSE_INDICES : SPARSE_VALUES;
      throw new WireError(422, at(missing), `"${slotTensorName(missing, leaf.name)}" is missing: a sparse gradient is ${SPARSE_INDICES}/… and ${SPARSE_VALUES}/… together`);
    }
    if (dense.has(leaf.name)) throw new WireError(422, at('grads'), `tensor "${leaf.name}" has a dense gradient (grads/…) and rows (${SPARSE_INDICES}/…): send one`);
    if (leaf.shape.length === 0) throw new WireError(422, at(SPARSE_INDICES), 'a 0-d tensor has no rows: send its gradient as grads/…');
    const k = ix.shape.length === 1 ? ix.shape[0]! : ix.shape.length === 2 && ix.shape[0] === 1 ? ix.shape[1]! : -1;
    if (k < 0) throw new WireError(422, [...at(SPARSE_INDICES), 'shape'], `row indices have shape [k] or [1, k] (torch's _indices()), got [${ix.shape.join(', ')}]`);
    const rowShape = leaf.shape.slice(1);
    const want = [k, ...rowShape];
    if (v.shape.length !== want.length || v.shape.some((d, i) => d !== want[i])) {
      throw new WireError(422, [...at(SPARSE_VALUES), 'shape'], `shape [${v.shape.join(', ')}] is not [${want.join(', ')}]: one row of the parameter's shape per index`);
    }
    if (!fitsInto(v.dtype, dtype)) throw new WireError(422, [...at(SPARSE_VALUES), 'dtype'], `dtype ${v.dtype} does not fit a ${dtype} step (it would round); send ${wireDtypeOf(dtype)} or narrower`, v.dtype);
    // Copied: the data section need not be aligned for the integer view.
    const raw = body.slice(dataStart + ix.start, dataStart + ix.end);
    const ints = ix.dtype === 'I64' ? new BigInt64Array(raw.buffer, 0, k) : new Int32Array(raw.buffer, 0, k);
    const rows = new Int32Array(k);
    for (let i = 0; i < k; i++) {
      const r = Number(ints[i]!);
      if (!(r >= 0 && r < leaf.shape[0]!)) throw new WireError(422, [...at(SPARSE_INDICES), i], `must be a row index: an integer in [0, ${leaf.shape[0]! - 1}]`, String(ints[i]));
      rows[i] = r;
    }
    const rowSize = rowShape.reduce((a, b) => a * b, 1);
    const out = dtype === 'float32' ? new Float32Array(k * rowSize) : new Float64Array(k * rowSize);
    elementSink(v.dtype, out, 0, out.length).write(body.subarray(dataStart + v.start, dataStart + v.end));
    return { rows, values: out, rowSize };
  });
}

/** A tensor of the file must have its parameter's shape and a dtype that widens into the optimizer's. */
function checkEntry(e: TensorEntry, leaf: NamedLeaf, dtype: Dtype, where: Array<string | number>): void {
  if (e.shape.length !== leaf.shape.length || e.shape.some((d, i) => d !== leaf.shape[i])) {
    throw new WireError(422, [...where, 'shape'], `shape [${e.shape.join(', ')}] differs from the parameter's [${leaf.shape.join(', ')}]`);
  }
  if (!fitsInto(e.dtype, dtype)) {
    throw new WireError(422, [...where, 'dtype'], `dtype ${e.dtype} does not fit a ${dtype} step (it would round); send ${wireDtypeOf(dtype)} or narrower`, e.dtype);
  }
}

/** A safetensors file of `slots` (name prefix, values) over the layout's leaves, data slot after slot. */
export function encodeSlots(
  slots: ReadonlyArray<readonly [string, FloatArray]>,
  leaves: readonly NamedLeaf[],
  dtype: WireDtype,
  metadata: Record<string, string>,
  /** Per slot, which tensors to write (all when absent): torch has None for the others. */
  present: Record<string, readonly boolean[]> = {},
): Uint8Array {
  const specs: EntrySpec[] = [];
  const has = (slot: string, i: number) => present[slot]?.[i] ?? true;
  for (const [slot] of slots) leaves.forEach((leaf, i) => has(slot, i) && specs.push({ name: slotTensorName(slot, leaf.name), dtype, shape: leaf.shape }));
  const { header, dataLength } = encodeHeader(specs, metadata);
  const out = new Uint8Array(header.length + dataLength);
  out.set(header);
  let offset = header.length;
  for (const [slot, values] of slots) {
    if (!present[slot] || present[slot].every(Boolean)) {
      out.set(bytesOf(values), offset);
      offset += values.byteLength;
      continue;
    }
    leaves.forEach((leaf, i) => {
      if (!has(slot, i)) return;
      const part = values.subarray(leaf.offset, leaf.offset + leaf.size);
      out.set(bytesOf(part), offset);
      offset += part.byteLength;
    });
  }
  if (offset !== out.length || WIRE_DTYPES[dtype].bytes !== slots[0]![1].BYTES_PER_ELEMENT) throw new Error('internal: safetensors data does not match its header');
  return out;
}

function throwCollision(): never {
  throw new WireError(406, ['params'], 'two tensors have the same dotted name (e.g. "a.b" and {"a": {"b"}}): safetensors cannot name them apart; ask for JSON');
}

export { throwCollision };
