// Bridges JSON tensor trees and the optimizer core: flattens request trees into typed arrays
// (or rejects them with field-level problems) and rebuilds trees for responses.

import { type AdamHyperparams, type AdamState, type Dtype, type FloatArray, initAdamState, toDtype } from '../optim/adam.ts';
import {
  ElementLimitError,
  TensorError,
  type FieldPath,
  type FlatTensors,
  type TensorLayout,
  flattenLike,
  flattenTree,
  unflatten,
} from '../tensors/tree.ts';
import { ProblemError, fieldError, formatPath, validationProblem } from './problem.ts';

/** Runs a tensor operation, turning tensor errors into 413/422 problems. */
export function withTensorProblems<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ElementLimitError) {
      throw new ProblemError(
        413,
        'payload-too-large',
        `${formatPath(e.path.slice(0, 1))} has more than ${e.limit} elements (the configured limit)`,
        [fieldError(e.path.slice(0, 1), `more than ${e.limit} elements`)],
        { limit: e.limit },
      );
    }
    if (e instanceof TensorError) throw validationProblem([fieldError(e.path, e.message, e.value)]);
    throw e;
  }
}

/** Parses `params` (which defines the layout) with the element limit. */
export function parseParams(value: unknown, path: FieldPath, maxElements: number): FlatTensors {
  return withTensorProblems(() => flattenTree(value, path, maxElements));
}

/** Parses a tree that must mirror `layout` into the dtype's array type. */
export function parseLike(value: unknown, layout: TensorLayout, path: FieldPath, dtype: Dtype): FloatArray {
  const flat = withTensorProblems(() => flattenLike(value, layout, path));
  return dtype === 'float64' ? flat.values : toDtype(dtype, flat.values);
}

/** Tensor state as sent by a client (the JSON shape of AdamStateSchema). */
export interface StateInput {
  step: number;
  m: unknown;
  v: unknown;
  v_max?: unknown;
}

/** Builds typed-array Adam state from a client's state (or a fresh one), checking shapes against params. */
export function parseState(
  state: StateInput | undefined,
  layout: TensorLayout,
  size: number,
  dtype: Dtype,
  hp: AdamHyperparams,
  path: FieldPath,
): AdamState {
  if (state === undefined) return initAdamState(dtype, size, hp.amsgrad);
  const m = parseLike(state.m, layout, [...path, 'm'], dtype);
  const v = parseLike(state.v, layout, [...path, 'v'], dtype);
  let vMax: FloatArray | null = null;
  if (hp.amsgrad) {
    if (state.v_max !== undefined) vMax = parseLike(state.v_max, layout, [...path, 'v_max'], dtype);
    else if (state.step === 0) vMax = toDtype(dtype, new Float64Array(size));
    else throw validationProblem([fieldError([...path, 'v_max'], 'is required when amsgrad is true and step > 0')]);
  }
  const negative = firstNegative(v) ?? (vMax ? firstNegative(vMax) : null);
  if (negative !== null) {
    const which = firstNegative(v) !== null ? 'v' : 'v_max';
    throw validationProblem([fieldError([...path, which], `second moments are never negative; element ${negative} is`)]);
  }
  return { step: state.step, m, v, vMax };
}

function firstNegative(a: FloatArray): number | null {
  for (let i = 0; i < a.length; i++) if (a[i]! < 0) return i;
  return null;
}

/** JSON form of state for a response: v_max only with amsgrad. */
export function stateJson(layout: TensorLayout, state: AdamState) {
  return {
    step: state.step,
    m: unflatten(layout, state.m),
    v: unflatten(layout, state.v),
    ...(state.vMax ? { v_max: unflatten(layout, state.vMax) } : {}),
  };
}
