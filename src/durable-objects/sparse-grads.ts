// Sparse (row) gradients of a hosted step, spelled as the stateless step spells them: in JSON a
// tensor's gradient `{"indices": [r0, ...], "values": [[row r0], ...]}` (rows of the first
// dimension), in safetensors `grads.indices/<name>` (I64 or I32, shape [k] or torch's [1, k]) with
// `grads.values/<name>`. Raw bodies carry every tensor dense. Checked here against the stored
// layout (the Worker flattens a JSON tree without knowing it); what torch refuses with a sparse
// gradient (by the tensor's group's hyperparameters) is checked before the step touches anything.

import { fieldError, validationProblem } from '../lib/problem.ts';
import { inDtype } from '../lib/tensor-input.ts';
import type { Dtype, FloatArray, Hyperparams, OptimizerDef } from '../optim/optimizer.ts';
import { denseOnlyMessage } from '../optim/registry.ts';
import { SPARSE_CLIP_VALUE, type SparseRows } from '../optim/sparse.ts';
import type { NamedLeaf } from '../tensors/names.ts';
import { describeValue, layoutSize, leaves, type FlatTensors, type TensorLayout } from '../tensors/tree.ts';
import { fitsInto, wireDtypeOf } from '../wire/dtypes.ts';
import { WireError, type IndexEntry, type SafetensorsHeader, type TensorEntry } from '../wire/safetensors.ts';
import type { Placement } from './decode.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;

export const SPARSE_INDICES = 'grads.indices';
export const SPARSE_VALUES = 'grads.values';

const shapeText = (s: readonly number[]) => `[${s.join(', ')}]`;
const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

/** Row indices checked against a tensor of `rows` rows, or a 422 at `at(k)` naming the bad one. */
function checkedRows(count: number, get: (k: number) => number | bigint, rows: number, at: (k: number) => Array<string | number>, wire: boolean): Int32Array {
  const out = new Int32Array(count);
  for (let k = 0; k < count; k++) {
    const r = get(k);
    const n = Number(r);
    if (!(Number.isInteger(n) && n >= 0 && n < rows)) {
      const message = `must be a row index: an integer in [0, ${rows - 1}]`;
      throw wire ? new WireError(422, at(k), message, String(r)) : validationProblem([fieldError(at(k), message, describeValue(r))]);
    }
    out[k] = n;
  }
  return out;
}

/**
 * A JSON gradient tree (flattened in the Worker) split into its dense tensors and, for each
 * tensor of `layout` (in layout order), its rows when the tree gives that tensor as
 * `{indices, values}`, else null. The dense part is left for `alignTo` to check against the layout
 * without those tensors.
 */
export function splitJsonRows(def: AnyDef, flat: FlatTensors, layout: TensorLayout, dtype: Dtype, root: string): { dense: FlatTensors; rows: Array<SparseRows | null> } {
  const all = leaves(layout);
  const rows: Array<SparseRows | null> = all.map(() => null);
  const indexOf = new Map(all.map((l, i) => [JSON.stringify(l.path), i]));
  const parts: Float64Array[] = [];
  const isPair = (l: TensorLayout): l is TensorLayout & { kind: 'named' } =>
    l.kind === 'named' && l.entries.length === 2 && l.entries.every((e) => (e.name === 'indices' || e.name === 'values') && e.layout.kind === 'tensor') && l.entries[0]!.name !== l.entries[1]!.name;
  const walk = (src: TensorLayout, offset: number, tgt: TensorLayout | undefined, path: string[]): TensorLayout | null => {
    if (tgt?.kind === 'tensor' && isPair(src)) {
      rows[indexOf.get(JSON.stringify(path))!] = jsonRows(def, src, flat.values, offset, tgt.shape, [root, ...path], dtype);
      return null;
    }
    if (src.kind === 'tensor') {
      parts.push(flat.values.subarray(offset, offset + layoutSize(src)));
      return src;
    }
    const entries: Array<{ name: string; layout: TensorLayout }> = [];
    let at = offset;
    for (const e of src.entries) {
      const child = tgt?.kind === 'named' ? tgt.entries.find((x) => x.name === e.name)?.layout : undefined;
      const kept = walk(e.layout, at, child, [...path, e.name]);
      if (kept !== null) entries.push({ name: e.name, layout: kept });
      at += layoutSize(e.layout);
    }
    return { kind: 'named', entries };
  };
  const kept = walk(flat.layout, 0, layout, []) ?? { kind: 'named' as const, entries: [] };
  if (!rows.some(Boolean)) return { dense: flat, rows };
  const values = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    values.set(p, at);
    at += p.length;
  }
  return { dense: { layout: kept, size: values.length, values }, rows };
}

function jsonRows(def: AnyDef, pair: TensorLayout & { kind: 'named' }, values: Float64Array, offset: number, shape: readonly number[], path: Array<string | number>, dtype: Dtype): SparseRows {
  if (!def.sparse) throw validationProblem([fieldError(path, denseOnlyMessage(def))]);
  if (shape.length === 0) throw validationProblem([fieldError(path, 'a 0-d tensor has no rows: send its gradient as a number')]);
  let at = offset;
  const place: Record<string, { shape: readonly number[]; offset: number }> = {};
  for (const e of pair.entries) {
    const s = (e.layout as { shape: readonly number[] }).shape;
    place[e.name] = { shape: s, offset: at };
    at += layoutSize(e.layout);
  }
  const ix = place.indices!;
  const v = place.values!;
  if (ix.shape.length !== 1) throw validationProblem([fieldError([...path, 'indices'], `must be an array of row indices (shape [k]), got shape ${shapeText(ix.shape)}`)]);
  const k = ix.shape[0]!;
  const rows = checkedRows(k, (i) => values[ix.offset + i]!, shape[0]!, (i) => [...path, 'indices', i], false);
  const rowShape = shape.slice(1);
  const want = [k, ...rowShape];
  if (!sameShape(v.shape, want) && !(k === 0 && sameShape(v.shape, [0]))) {
    throw validationProblem([fieldError([...path, 'values'], `expected shape ${shapeText(want)} (one row of the parameter's shape per index), got ${shapeText(v.shape)}`)]);
  }
  const rowSize = rowShape.reduce((a, b) => a * b, 1);
  const flat = values.subarray(v.offset, v.offset + k * rowSize);
  const typed = inDtype({ layout: { kind: 'tensor', shape: want }, size: flat.length, values: flat.slice() }, [...path, 'values'], dtype);
  return { rows, values: typed, rowSize };
}

/** `<slot>/<name>`, or `<slot>` alone for a layout that is one unnamed tensor (as checkpoints name them). */
const slotName = (slot: string, name: string) => (name === '' ? slot : `${slot}/${name}`);

/** The tensor a `grads.indices/…` or `grads.values/…` file entry is for, or null. */
function rowsTarget(entry: string, slot: string): string | null {
  if (entry === slot) return '';
  return entry.startsWith(`${slot}/`) ? entry.slice(slot.length + 1) : null;
}

/** Whether a safetensors tensor name is a sparse gradient's indices (and no tensor of the layout is so named). */
export const isIndicesName = (index: Map<string, NamedLeaf>) => (name: string) => rowsTarget(name, SPARSE_INDICES) !== null && !index.has(name);

/**
 * Most bytes the rows of one safetensors step may hold (indices as sent, values in the optimizer's
 * dtype): half a dense gradient's, or 8 MiB for a small optimizer (an embedding's backward repeats
 * rows). They are read aside, beside the arrays the optimizer's memory budget counts.
 */
export const rowsBudget = (size: number, dtype: Dtype) => Math.max((size * (dtype === 'float32' ? 4 : 8)) / 2, 8 * 1024 * 1024);

/** A step file's rows being read: where each `grads.values/<name>` goes, and the indices it pairs with. */
export interface FileRows {
  /** Bytes the rows may hold (rowsBudget), and those planned so far. */
  budget: number;
  planned?: number;
  byValues: Map<string, { leaf: number; name: string; ix: IndexEntry; k: number; out: FloatArray; rowSize: number; rows: number }>;
  /** Tensor name → its index in layout order. */
  order?: Map<string, number>;
}

/**
 * The placement of `e` when it is a `grads.values/<name>` of a tensor of the layout (checked with
 * its `grads.indices/<name>`), or null for a tensor placed by its own name.
 */
export function planFileRows(def: AnyDef, header: SafetensorsHeader, index: Map<string, NamedLeaf>, dtype: Dtype, plan: FileRows, e: TensorEntry): Placement | null {
  const name = index.has(e.name) ? null : rowsTarget(e.name, SPARSE_VALUES);
  const leaf = name === null ? undefined : index.get(name);
  if (name === null || !leaf) return null; // placed by name: "no tensor named …"
  const at = (slot: string) => ['safetensors', slotName(slot, name)];
  if (!def.sparse) throw new WireError(422, at(SPARSE_VALUES), denseOnlyMessage(def));
  const ix = header.indexEntries.find((x) => x.name === slotName(SPARSE_INDICES, name));
  if (!ix) throw new WireError(422, at(SPARSE_INDICES), `"${slotName(SPARSE_INDICES, name)}" is missing: a sparse gradient is ${SPARSE_INDICES}/… and ${SPARSE_VALUES}/… together`);
  if (header.entries.some((x) => x.name === name)) throw new WireError(422, ['safetensors', name], `tensor "${name}" has a dense gradient and rows (${SPARSE_INDICES}/…): send one`);
  if (leaf.shape.length === 0) throw new WireError(422, at(SPARSE_INDICES), 'a 0-d tensor has no rows: send its gradient dense');
  const k = ix.shape.length === 1 ? ix.shape[0]! : ix.shape.length === 2 && ix.shape[0] === 1 ? ix.shape[1]! : -1;
  if (k < 0) throw new WireError(422, [...at(SPARSE_INDICES), 'shape'], `row indices have shape [k] or [1, k] (torch's _indices()), got ${shapeText(ix.shape)}`);
  const rowShape = leaf.shape.slice(1);
  const want = [k, ...rowShape];
  if (!sameShape(e.shape, want)) throw new WireError(422, [...at(SPARSE_VALUES), 'shape'], `shape ${shapeText(e.shape)} is not ${shapeText(want)}: one row of the parameter's shape per index`);
  if (!fitsInto(e.dtype, dtype)) throw new WireError(422, [...at(SPARSE_VALUES), 'dtype'], `dtype ${e.dtype} does not fit a ${dtype} optimizer (it would round); send ${wireDtypeOf(dtype)} or narrower`, e.dtype);
  const rowSize = rowShape.reduce((a, b) => a * b, 1);
  plan.planned = (plan.planned ?? 0) + (ix.end - ix.start) + k * rowSize * (dtype === 'float32' ? 4 : 8);
  if (plan.planned > plan.budget) {
    throw new WireError(413, at(SPARSE_VALUES), `the sparse gradients of this step hold more than ${plan.budget} bytes (half a dense gradient of this optimizer, or 8 MiB): send fewer rows, or the gradient dense`);
  }
  const out = dtype === 'float32' ? new Float32Array(k * rowSize) : new Float64Array(k * rowSize);
  plan.order ??= new Map([...index.keys()].map((n, i) => [n, i]));
  plan.byValues.set(e.name, { leaf: plan.order.get(name)!, name, ix, k, out, rowSize, rows: leaf.shape[0]! });
  return { out, offset: 0, count: out.length, path: at(SPARSE_VALUES) };
}

/** A 422 for row indices without values (checked before any data is read). */
export function checkRowsPlan(header: SafetensorsHeader, plan: FileRows): void {
  const paired = new Set([...plan.byValues.values()].map((p) => p.ix.name));
  const lone = header.indexEntries.find((x) => !paired.has(x.name));
  if (lone) {
    const name = rowsTarget(lone.name, SPARSE_INDICES)!;
    throw new WireError(422, ['safetensors', slotName(SPARSE_VALUES, name)], `"${slotName(SPARSE_VALUES, name)}" is missing: a sparse gradient is ${SPARSE_INDICES}/… and ${SPARSE_VALUES}/… together`);
  }
}

/** Each tensor's rows (layout order) once the file is read; a 422 for an index out of range. */
export function fileRows(plan: FileRows, indexBytes: Map<string, Uint8Array>, tensorCount: number): Array<SparseRows | null> {
  const out: Array<SparseRows | null> = new Array(tensorCount).fill(null);
  for (const p of plan.byValues.values()) {
    const bytes = indexBytes.get(p.ix.name)!.slice(); // copied: aligned for the integer view
    const { k } = p;
    const ints = p.ix.dtype === 'I64' ? new BigInt64Array(bytes.buffer, 0, k) : new Int32Array(bytes.buffer, 0, k);
    const rows = checkedRows(k, (i) => ints[i]!, p.rows, (i) => ['safetensors', p.ix.name, i], true);
    out[p.leaf] = { rows, values: p.out, rowSize: p.rowSize };
  }
  return out;
}

/**
 * What a hosted step refuses with (or without) sparse gradients, as the stateless step does, before
 * anything changes: a dense gradient to an optimizer that takes rows only (SparseAdam), what torch
 * refuses with a sparse gradient in the tensor's group (Adagrad's and SGD's weight_decay, SGD's
 * nesterov), a gradient without rows torch cannot step, and clip_grad_value (torch raises).
 */
export function checkRows(args: {
  def: AnyDef;
  format: 'json' | 'raw' | 'safetensors';
  rows: ReadonlyArray<SparseRows | null>;
  frozen: readonly boolean[];
  names: readonly string[];
  paths: ReadonlyArray<readonly string[]>;
  shapes: ReadonlyArray<readonly number[]>;
  groupHp: readonly Hyperparams[];
  groupOf: readonly number[];
  hp: Hyperparams;
}): void {
  const { def, format, rows, frozen, groupHp, groupOf } = args;
  const where = (i: number, part: string): Array<string | number> => (format === 'json' ? ['grads', ...args.paths[i]!, part] : ['safetensors', slotName(`grads.${part}`, args.names[i]!)]);
  if (def.sparse === 'only') {
    const dense = rows.findIndex((r, i) => r === null && !frozen[i]);
    if (dense >= 0) {
      const at = format === 'json' ? ['grads', ...args.paths[dense]!] : format === 'raw' ? ['body'] : ['safetensors', args.names[dense]!];
      throw validationProblem([fieldError(at, `${def.torch} takes sparse gradients only: {"indices": [rows], "values": [[row], ...]} (JSON) or grads.indices/<name> with grads.values/<name> (safetensors)`)]);
    }
  }
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    if (!r || frozen[i]) continue;
    const g = groupOf[i]!;
    const rule = def.checkSparse?.(groupHp[g]!);
    if (rule) {
      const field = g === 0 ? ['hyperparams', rule.field] : ['param_groups', g - 1, rule.field];
      throw validationProblem([fieldError(field, `${rule.message} (the gradient of ${JSON.stringify(args.names[i])} is sparse)`, groupHp[g]![rule.field])]);
    }
    const message = def.checkSparseGrad?.(args.shapes[i]!, r.rows.length);
    if (message) throw validationProblem([fieldError(where(i, 'indices'), message, '[]')]);
  }
  const sparseAt = rows.findIndex((r, i) => r !== null && !frozen[i]);
  if (sparseAt >= 0 && args.hp.clip_grad_value !== undefined) {
    throw validationProblem([fieldError(['hyperparams', 'clip_grad_value'], `${SPARSE_CLIP_VALUE} (the gradient of ${JSON.stringify(args.names[sparseAt])} is sparse)`, args.hp.clip_grad_value)]);
  }
}

/** The first non-finite value among the rows (GradScaler looks at every gradient), or false. */
export const rowsNonFinite = (rows: ReadonlyArray<SparseRows | null>): boolean => rows.some((r) => r !== null && r.values.some((x) => x - x !== 0));
