// Sparse (row) gradients as torch's embedding backward makes them: row indices of the first
// dimension and one value row each, possibly repeated. Pure.

import { dtypeOps } from './dtype-ops.ts';
import type { Dtype, FloatArray } from './optimizer.ts';

/** Why clip_grad_value cannot go with a sparse gradient (stateless and hosted steps refuse it so). */
export const SPARSE_CLIP_VALUE =
  'torch 1.13 refuses clip_grad_value_ with a sparse gradient (clamp_ has no sparse kernel: NotImplementedError); use clip_grad_norm, or send the gradient dense';

/** A gradient given as rows: `values` holds rows.length rows of `rowSize` elements. */
export interface SparseRows {
  rows: Int32Array;
  values: FloatArray;
  rowSize: number;
  /**
   * When these rows are one shard's part of a tensor's gradient (src/durable-objects/shards.ts):
   * the whole gradient's entry count as sent and once coalesced (addSparse's kernel depends on it).
   */
  whole?: { rows: number; unique: number };
}

/**
 * torch's `coalesce()`: rows sorted ascending, a repeated row's values summed (the first copied,
 * each further one added and rounded to the dtype). torch orders repeats as `std::sort` leaves
 * them: input order up to 16 indices (insertion sort); above that its introsort is unstable, so
 * a row present three or more times among more than 16 indices may be summed in another order
 * there. Here repeats are always summed in input order.
 */
export function coalesce(dtype: Dtype, g: SparseRows): SparseRows {
  const n = g.rows.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => g.rows[a]! - g.rows[b]! || a - b);
  const unique: number[] = [];
  for (const i of order) if (unique.length === 0 || unique[unique.length - 1] !== g.rows[i]) unique.push(g.rows[i]!);
  const { rowSize } = g;
  const values = dtype === 'float32' ? new Float32Array(unique.length * rowSize) : new Float64Array(unique.length * rowSize);
  let k = -1;
  let last = -1;
  for (const i of order) {
    const src = i * rowSize;
    if (g.rows[i] !== last) {
      k++;
      last = g.rows[i]!;
      for (let j = 0; j < rowSize; j++) values[k * rowSize + j] = g.values[src + j]!;
    } else {
      for (let j = 0; j < rowSize; j++) values[k * rowSize + j] = values[k * rowSize + j]! + g.values[src + j]!;
    }
  }
  return { rows: Int32Array.from(unique), values, rowSize, ...(g.whole ? { whole: { rows: g.whole.unique, unique: g.whole.unique } } : {}) };
}

/** torch's `-grad` of a sparse gradient (maximize): the values negated, the rows as they were. */
export function negated(g: SparseRows): SparseRows {
  return { ...g, values: g.values.map((x) => -x) };
}

/**
 * ATen's `dense.add_(sparse, alpha=alpha)` (add_out_dense_sparse_cpu) for a gradient made as
 * `torch.sparse_coo_tensor(indices, values)`: every entry is added on its own, in the order given
 * (a repeated row is not summed first), as `fma(v, alpha, dst)` (an axpy per row). torch flags a
 * sparse tensor of one entry coalesced, and adds that to a 1-D tensor without fusion:
 * `dst + r(alpha·v)`. Measured against torch 1.13 (test/fixtures/optim/README.md, "Sparse SGD").
 */
export function addSparse(dtype: Dtype, dst: FloatArray, g: SparseRows, alpha: number, shape: readonly number[]): void {
  const { r, fma } = dtypeOps(dtype);
  const { rows, values, rowSize } = g;
  // The whole gradient's entries decide (a shard's part of a cut vector may hold one of several).
  const fused = shape.length > 1 || (g.whole?.rows ?? rows.length) !== 1;
  for (let k = 0; k < rows.length; k++) {
    const base = rows[k]! * rowSize;
    for (let j = 0; j < rowSize; j++) {
      const i = base + j;
      const v = values[k * rowSize + j]!;
      dst[i] = fused ? fma(v, alpha, dst[i]!) : r(dst[i]! + r(alpha * v));
    }
  }
}
