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
  alignToLayout,
  flattenTree,
  pathOfIndex,
} from '../tensors/tree.ts';
import { WireError } from '../wire/safetensors.ts';
import { StreamLengthError, StreamTimeoutError } from '../wire/stream.ts';
import { ProblemError, fieldError, formatPath, headerError, validationProblem, type ProblemType } from './problem.ts';

const WIRE_PROBLEM: Record<WireError['status'], ProblemType> = {
  406: 'not-acceptable',
  413: 'payload-too-large',
  415: 'unsupported-media-type',
  422: 'validation-error',
};

/** The problem for an error of the wire layer or of a tensor operation; other errors pass through. */
export function tensorProblem(e: unknown): unknown {
  if (e instanceof WireError) {
    const [first] = e.path;
    const error = first === 'Content-Type' || first === 'Accept' ? headerError(first, e.message, e.value) : fieldError(e.path, e.message, e.value);
    return new ProblemError(e.status, WIRE_PROBLEM[e.status], `${error.field}: ${e.message}`, [error]);
  }
  if (e instanceof StreamLengthError) return validationProblem([fieldError(['body'], e.message)]);
  if (e instanceof StreamTimeoutError) return new ProblemError(408, 'request-timeout', `body: ${e.message}; nothing was changed`, [fieldError(['body'], e.message)]);
  if (e instanceof ElementLimitError) {
    return new ProblemError(413, 'payload-too-large', `${formatPath(e.path.slice(0, 1))} has more than ${e.limit} elements (the configured limit)`, [
      fieldError(e.path.slice(0, 1), `more than ${e.limit} elements`),
    ], { limit: e.limit });
  }
  if (e instanceof TensorError) return validationProblem([fieldError(e.path, e.message, e.value)]);
  return e;
}

/** Runs a tensor operation, turning tensor and wire errors into 4xx problems. */
export function withTensorProblems<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw tensorProblem(e);
  }
}

/** The async form of withTensorProblems. */
export async function withTensorProblemsAsync<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw tensorProblem(e);
  }
}

/** Parsed `params`: the layout every other tree must follow, and the values in the dtype's type. */
export interface ParsedParams {
  layout: TensorLayout;
  size: number;
  values: FloatArray;
}

/** Converts to the dtype; a float32 value beyond ±3.4028235e38 would become ±Infinity: 422 on its field. */
export function inDtype(flat: FlatTensors, path: FieldPath, dtype: Dtype): FloatArray {
  if (dtype === 'float64') return flat.values;
  const out = toDtype(dtype, flat.values);
  for (let i = 0; i < out.length; i++) {
    if (!Number.isFinite(out[i]!)) {
      const where = [...path, ...pathOfIndex(flat.layout, i)];
      throw validationProblem([fieldError(where, 'is beyond the float32 range (±3.4028235e38)', flat.values[i])]);
    }
  }
  return out;
}

/** Parses `params` (which defines the layout) with the element limit, in the dtype's type. */
export function parseParams(value: unknown, path: FieldPath, maxElements: number, dtype: Dtype): ParsedParams {
  const flat = withTensorProblems(() => flattenTree(value, path, maxElements));
  return { layout: flat.layout, size: flat.size, values: inDtype(flat, path, dtype) };
}

/** Flattens a tree on its own (its layout is checked against a stored one later), as doubles. */
export function flattenAlone(value: unknown, path: FieldPath, maxElements = Infinity): FlatTensors {
  return withTensorProblems(() => flattenTree(value, path, maxElements));
}

/** Values flattened as `source`, reordered to a stored `layout` and converted to its dtype (or a 422). */
export function alignTo(source: FlatTensors, layout: TensorLayout, path: FieldPath, dtype: Dtype): FloatArray {
  const values = withTensorProblems(() => alignToLayout(source.layout, source.values, layout, path));
  return inDtype({ layout, size: values.length, values }, path, dtype);
}

/** Parses a tree that must mirror `layout` into the dtype's array type. */
export function parseLike(value: unknown, layout: TensorLayout, path: FieldPath, dtype: Dtype): FloatArray {
  return inDtype(withTensorProblems(() => flattenLike(value, layout, path)), path, dtype);
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
  // torch ignores max_exp_avg_sq without amsgrad; it is still checked, to catch a mismatched tree.
  const vMax = state.v_max === undefined ? null : parseLike(state.v_max, layout, [...path, 'v_max'], dtype);
  return checkedState({ step: state.step, m, v, vMax }, layout, dtype, hp, path, { v: 'v', vMax: 'v_max' });
}

/**
 * Completes and checks decoded Adam state: v_max is required with amsgrad once step > 0 (zeros
 * before the first step), dropped without amsgrad; v and v_max must be >= 0. `names` are the
 * fields' names in the request (`v` or torch's `exp_avg_sq`).
 */
export function checkedState(
  state: AdamState,
  layout: TensorLayout,
  dtype: Dtype,
  hp: AdamHyperparams,
  path: FieldPath,
  names: { v: string; vMax: string },
): AdamState {
  let vMax: FloatArray | null = null;
  if (hp.amsgrad) {
    if (state.vMax !== null) vMax = state.vMax;
    else if (state.step === 0) vMax = toDtype(dtype, new Float64Array(state.m.length));
    else throw validationProblem([fieldError([...path, names.vMax], 'is required when amsgrad is true and step > 0')]);
  }
  for (const [which, a] of [[names.v, state.v], [names.vMax, vMax]] as const) {
    const i = a ? firstNegative(a) : null;
    if (i !== null) {
      throw validationProblem([fieldError([...path, which, ...pathOfIndex(layout, i)], 'must be >= 0 (a second moment is never negative)', a![i])]);
    }
  }
  return { step: state.step, m: state.m, v: state.v, vMax };
}

function firstNegative(a: FloatArray): number | null {
  for (let i = 0; i < a.length; i++) if (a[i]! < 0) return i;
  return null;
}
