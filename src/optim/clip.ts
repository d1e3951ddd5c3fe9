// Gradient clipping exactly as torch 1.13 does it on CPU (torch/nn/utils/clip_grad.py), with
// its reduction order (test/fixtures/optim/README.md, "clip_grad_norm_"). Pure.

import { fma32, fma64 } from './fma.ts';
import type { Dtype, FloatArray } from './optimizer.ts';

const f = Math.fround;

/**
 * torch.norm(x, 2) of a contiguous tensor in memory order. float32: ATen's AVX2 fast path, eight
 * fused lanes over the full blocks of 8, folded left to right; of the tail, a first chunk of 4 is
 * squared and added unfused (GCC's vectorised scalar loop), the rest fused. float64: one fused
 * accumulator (the generic reduce). The fold below given the whole tensor as one piece.
 */
export function norm2(dtype: Dtype, x: ArrayLike<number>): number {
  return normFoldEnd(dtype, normFoldPiece(dtype, normFoldStart(dtype), x, 0, x.length), x.length);
}

/**
 * Running state of `norm2` over a tensor given piece by piece, for a tensor split by element range
 * across holders (docs/scale-out.md): plain numbers and arrays, so it crosses a Durable Object RPC
 * (structured clone) as it is. JSON keeps it only while every number is finite: a NaN or infinite
 * gradient (or float32 overflow) makes a lane NaN or Infinity, which JSON.stringify writes as null
 * (`normFoldPiece` and `normFoldEnd` then throw rather than fold a null).
 */
export interface NormFold {
  /** Elements folded so far: the next piece starts here. */
  at: number;
  /** float32: the eight fused lanes over the full blocks of 8 (element i goes to lane i % 8); float64: [acc]. */
  lanes: number[];
  /**
   * float32: the tail elements seen so far (indices >= total - total % 8, at most 7), kept as they
   * are because torch does not fold them into lanes but into the folded lanes, partly unfused
   * (see `norm2`), which is decided only once the lanes are complete. float64: always empty.
   */
  tail: number[];
}

/** The state before any element. */
export function normFoldStart(dtype: Dtype): NormFold {
  return { at: 0, lanes: dtype === 'float32' ? [0, 0, 0, 0, 0, 0, 0, 0] : [0], tail: [] };
}

function checkState(dtype: Dtype, state: NormFold, total: number): void {
  if (!Number.isSafeInteger(total) || total < 0) throw new RangeError(`total must be a non-negative integer, got ${total}`);
  const { at, lanes, tail } = state;
  if (!Number.isSafeInteger(at) || at < 0 || at > total) throw new RangeError(`state.at must be an integer in [0, ${total}], got ${at}`);
  if (lanes.length !== (dtype === 'float32' ? 8 : 1)) throw new RangeError(`state.lanes must have ${dtype === 'float32' ? 8 : 1} entries for ${dtype}, got ${lanes.length}`);
  const tailSeen = dtype === 'float32' ? Math.max(0, at - (total - (total % 8))) : 0;
  if (tail.length !== tailSeen) throw new RangeError(`state.tail must hold ${tailSeen} elements at ${at} of ${total} (${dtype}), got ${tail.length}`);
  for (const v of lanes) if (typeof v !== 'number') throw new TypeError(`state.lanes must be numbers, got ${JSON.stringify(v)}`);
  for (const v of tail) if (typeof v !== 'number') throw new TypeError(`state.tail must be numbers, got ${JSON.stringify(v)}`);
}

/**
 * Folds elements [from, from + x.length) of a tensor of `total` elements into `state`, and returns
 * the new state (`state` is left as it is). Pieces are given in order: `from` must be `state.at`,
 * the previous piece's end; an empty piece is allowed. Lane order and rounding are those of `norm2`
 * on the whole tensor, so the result is bit for bit the same wherever the cuts fall.
 */
export function normFoldPiece(dtype: Dtype, state: NormFold, x: ArrayLike<number>, from: number, total: number): NormFold {
  checkState(dtype, state, total);
  const n = x.length;
  if (from !== state.at) throw new RangeError(`piece starts at ${from}, but the fold is at ${state.at}: pieces must be given in order`);
  if (from + n > total) throw new RangeError(`piece [${from}, ${from + n}) ends past the tensor's ${total} elements`);
  const lanes = state.lanes.slice();
  const tail = state.tail.slice();
  if (dtype === 'float64') {
    let acc = lanes[0]!;
    for (let i = 0; i < n; i++) acc = fma64(x[i]!, x[i]!, acc);
    lanes[0] = acc;
    return { at: from + n, lanes, tail };
  }
  // Elements [0, blocks) of x lie in the full blocks of 8; element i goes to lane (from + i) % 8.
  const blocks = Math.max(0, Math.min(n, total - (total % 8) - from));
  let i = 0;
  let j = from % 8;
  if (j !== 0) {
    for (; i < blocks && j < 8; i++, j++) lanes[j] = fma32(x[i]!, x[i]!, lanes[j]!);
  }
  for (; i + 8 <= blocks; i += 8) {
    for (j = 0; j < 8; j++) lanes[j] = fma32(x[i + j]!, x[i + j]!, lanes[j]!);
  }
  for (j = 0; i < blocks; i++, j++) lanes[j] = fma32(x[i]!, x[i]!, lanes[j]!);
  for (; i < n; i++) tail.push(x[i]!);
  return { at: from + n, lanes, tail };
}

/** The norm once every element [0, total) has been folded into `state`: equal to `norm2` of the whole tensor. */
export function normFoldEnd(dtype: Dtype, state: NormFold, total: number): number {
  checkState(dtype, state, total);
  if (state.at !== total) throw new RangeError(`the fold is at ${state.at} of ${total} elements: pieces are missing`);
  const { lanes, tail } = state;
  if (dtype === 'float64') return Math.sqrt(lanes[0]!);
  let b = lanes[0]!;
  for (let j = 1; j < 8; j++) b = f(b + lanes[j]!);
  let i = 0;
  if (tail.length >= 4) {
    for (; i < 4; i++) b = f(b + f(tail[i]! * tail[i]!));
  }
  for (; i < tail.length; i++) b = fma32(tail[i]!, tail[i]!, b);
  return f(Math.sqrt(b));
}

/**
 * torch.nn.utils.clip_grad_norm_(params, max_norm) (norm_type 2) over the gradients of the
 * tensors that have one: the norm of the per-tensor norms, then every gradient multiplied by
 * min((1 / (total + 1e-6)) · max_norm, 1), always (by exactly 1 below the threshold). Returns
 * the total norm before clipping, torch's return value. `unscaled[i]`: gradient i counts in the
 * norm but is left as it is, as torch 1.13 leaves a sparse gradient (its `g.detach().mul_(coef)`
 * scales a shallow copy of a sparse tensor; a sparse gradient is given here as its coalesced values).
 */
export function clipGradNorm(dtype: Dtype, grads: readonly FloatArray[], maxNorm: number, unscaled: readonly boolean[] = []): number {
  if (grads.length === 0) return 0;
  const norms = grads.map((g) => norm2(dtype, g));
  const total = norm2(dtype, norms);
  const coef = clipCoefficient(dtype, total, maxNorm);
  grads.forEach((g, k) => {
    if (unscaled[k]) return;
    for (let i = 0; i < g.length; i++) g[i] = g[i]! * coef;
  });
  return total;
}

/** clip_grad_norm_'s multiplier for a total norm: min((1 / (total + 1e-6)) · max_norm, 1), in the dtype's rounding. */
export function clipCoefficient(dtype: Dtype, total: number, maxNorm: number): number {
  const r = dtype === 'float32' ? f : (v: number) => v;
  const coef = r(r(1 / r(total + r(1e-6))) * r(maxNorm));
  return coef > 1 ? 1 : coef; // torch.clamp(coef, max=1.0) (a NaN stays NaN)
}

/** torch.nn.utils.clip_grad_value_: clamp_(-v, v) with v rounded to the dtype. */
export function clipGradValue(dtype: Dtype, grads: readonly FloatArray[], clipValue: number): void {
  const v = dtype === 'float32' ? f(clipValue) : clipValue;
  for (const g of grads) {
    for (let i = 0; i < g.length; i++) g[i] = Math.min(Math.max(g[i]!, -v), v);
  }
}
