// Sparse (row) gradients as torch's embedding backward makes them: row indices of the first
// dimension and one value row each, possibly repeated. Pure.

import type { Dtype, FloatArray } from './optimizer.ts';

/** A gradient given as rows: `values` holds rows.length rows of `rowSize` elements. */
export interface SparseRows {
  rows: Int32Array;
  values: FloatArray;
  rowSize: number;
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
  return { rows: Int32Array.from(unique), values, rowSize };
}
