// Reading test/fixtures/optim/{lion,muon}.json (made by independent.py): one tensor per case,
// nested lists in row-major order, float32 values stored as their exact widening to double.

import type { Dtype, FloatArray } from '../../src/optim/optimizer.ts';

export interface FixtureStep {
  step_index: number;
  params: unknown;
  state: Record<string, unknown>;
  /** Muon: the matrix handed to Newton-Schulz, and what it returned. */
  ns_input?: unknown;
  ortho?: unknown;
  scalars?: Record<string, number>;
}

export interface FixtureCase {
  name: string;
  description: string;
  dtype: Dtype;
  shape: number[];
  hyperparams: Record<string, number | boolean | string>;
  params: unknown;
  state: Record<string, unknown> | null;
  grads: unknown[];
  expected: FixtureStep[];
}

/** Row-major leaves of a nested list. */
export function flat(tree: unknown): number[] {
  if (Array.isArray(tree)) return tree.flatMap(flat);
  if (typeof tree !== 'number') throw new TypeError(`not a number: ${String(tree)}`);
  return [tree];
}

/** A typed array of the dtype holding the tensor (float32 values round-trip exactly). */
export function typed(dtype: Dtype, tree: unknown): FloatArray {
  const values = flat(tree);
  return dtype === 'float32' ? Float32Array.from(values) : Float64Array.from(values);
}

/** Indices where two arrays differ (±0 count as equal); at most `limit` of them, plus the count. */
export function differences(actual: ArrayLike<number>, expected: ArrayLike<number>, limit = 5) {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  const first: string[] = [];
  let count = 0;
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] === expected[i]) continue;
    count++;
    if (first.length < limit) first.push(`[${i}] ${actual[i]} vs ${expected[i]}`);
  }
  return { count, first };
}
