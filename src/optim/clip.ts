// Gradient clipping exactly as torch 1.13 does it on CPU (torch/nn/utils/clip_grad.py), with
// its reduction order (test/fixtures/optim/README.md, "clip_grad_norm_"). Pure.

import { fma32, fma64 } from './fma.ts';
import type { Dtype, FloatArray } from './optimizer.ts';

const f = Math.fround;

/**
 * torch.norm(x, 2) of a contiguous tensor in memory order. float32: ATen's AVX2 fast path, eight
 * fused lanes over the full blocks of 8, folded left to right; of the tail, a first chunk of 4 is
 * squared and added unfused (GCC's vectorised scalar loop), the rest fused. float64: one fused
 * accumulator (the generic reduce).
 */
export function norm2(dtype: Dtype, x: ArrayLike<number>): number {
  const n = x.length;
  if (dtype === 'float64') {
    let acc = 0;
    for (let i = 0; i < n; i++) acc = fma64(x[i]!, x[i]!, acc);
    return Math.sqrt(acc);
  }
  const full = n - (n % 8);
  const lanes = [0, 0, 0, 0, 0, 0, 0, 0];
  for (let k = 0; k < full; k += 8) {
    for (let j = 0; j < 8; j++) lanes[j] = fma32(x[k + j]!, x[k + j]!, lanes[j]!);
  }
  let b = lanes[0]!;
  for (let j = 1; j < 8; j++) b = f(b + lanes[j]!);
  let i = full;
  if (n - full >= 4) {
    for (const end = full + 4; i < end; i++) b = f(b + f(x[i]! * x[i]!));
  }
  for (; i < n; i++) b = fma32(x[i]!, x[i]!, b);
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
  const r = dtype === 'float32' ? f : (v: number) => v;
  let coef = r(r(1 / r(total + r(1e-6))) * r(maxNorm));
  if (coef > 1) coef = 1; // torch.clamp(coef, max=1.0) (a NaN stays NaN)
  grads.forEach((g, k) => {
    if (unscaled[k]) return;
    for (let i = 0; i < g.length; i++) g[i] = g[i]! * coef;
  });
  return total;
}

/** torch.nn.utils.clip_grad_value_: clamp_(-v, v) with v rounded to the dtype. */
export function clipGradValue(dtype: Dtype, grads: readonly FloatArray[], clipValue: number): void {
  const v = dtype === 'float32' ? f(clipValue) : clipValue;
  for (const g of grads) {
    for (let i = 0; i < g.length; i++) g[i] = Math.min(Math.max(g[i]!, -v), v);
  }
}
