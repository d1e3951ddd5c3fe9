// Muon as torch 2.9's `torch.optim.Muon` (torch/optim/_muon.py: `_single_tensor_muon`,
// `_zeropower_via_newtonschulz`, `_adjust_lr`) as an OptimizerDef, for 2-D tensors. The one
// deliberate difference: torch runs Newton-Schulz in bfloat16, this runs it in the param dtype
// (see zeropowerViaNewtonSchulz). test/fixtures/optim/independent.py checks it bit for bit
// (README.md there, "Muon").

import { fma32, fma64 } from '../fma.ts';
import type { Dtype, FloatArray, OptimizerDef, StepArgs } from '../optimizer.ts';

/** torch's `adjust_lr_fn` values (`None` means `original`). */
export const ADJUST_LR_FNS = ['original', 'match_rms_adamw'] as const;
export type AdjustLrFn = (typeof ADJUST_LR_FNS)[number];

/** torch.optim.Muon's arguments; `ns_coefficients` split into `ns_a`, `ns_b`, `ns_c`. */
export type MuonHyperparams = {
  lr: number;
  weight_decay: number;
  momentum: number;
  nesterov: boolean;
  ns_a: number;
  ns_b: number;
  ns_c: number;
  eps: number;
  ns_steps: number;
  adjust_lr_fn: string;
};

/**
 * Largest min(rows, cols) Muon steps. Newton-Schulz works on the m×n orientation (m = min, n = max)
 * and costs m²n/2 + m³/2 + m²n multiply-adds per iteration (X·Xᵀ and its square are symmetric), at
 * most 2·m·rows·cols. Measured 2026-12-02, CPU time (process.cpuUsage) under Node 24 on a shared
 * 2-vCPU AMD EPYC at load average ~9, so upper-side figures; one iteration: 128×128 3 ms,
 * 256×256 23-30 ms, 256×1024 61-65 ms, 512×512 142-149 ms, 1024×1024 1.4-1.8 s (about 1.5·10⁹
 * multiply-adds a second). A whole default step (5 iterations): 256×256 0.11-0.13 s,
 * 256×1024 and 1024×256 0.24-0.28 s, 512×512 0.60-0.66 s; under workerd (vitest, wall time, same
 * load) 256×1024 0.9-1.2 s. So 256 here, with MUON_MAX_ELEMENTS, keeps a default step near a
 * quarter of a second of CPU, and torch's largest ns_steps (99) at 256×1024 took 4.6-5.2 s, inside
 * the Workers paid plan's default 30 s CPU limit.
 */
export const MUON_MAX_MIN_DIM = 256;

/**
 * Largest rows·cols Muon steps: 256×1024, or e.g. 64×4096 (a default step 0.10-0.11 s), 1×262144
 * (0.06 s). See MUON_MAX_MIN_DIM for the measurements.
 */
export const MUON_MAX_ELEMENTS = 262_144;

/**
 * ATen's CPU `lerp` with a scalar weight (the vectorized kernel, checked bit for bit against
 * torch 1.13's `lerp_`): |w| < 0.5 ? fma(w, end - start, start) : fma(w - 1, end - start, end),
 * with w, w - 1 and end - start in the dtype. Writes into `out` (may alias `start` or `end`).
 */
function lerp(dtype: Dtype, start: FloatArray, end: FloatArray, weight: number, out: FloatArray): void {
  const n = out.length;
  if (dtype === 'float32') {
    const f = Math.fround;
    const w = f(weight);
    const small = Math.abs(w) < 0.5;
    const coeff = small ? w : f(w - 1);
    for (let i = 0; i < n; i++) {
      const s = start[i]!, e = end[i]!;
      out[i] = fma32(coeff, f(e - s), small ? s : e);
    }
  } else {
    const small = Math.abs(weight) < 0.5;
    const coeff = small ? weight : weight - 1;
    for (let i = 0; i < n; i++) {
      const s = start[i]!, e = end[i]!;
      out[i] = fma64(coeff, e - s, small ? s : e);
    }
  }
}

const identity = (x: number) => x;

/**
 * out = x·xᵀ for x m×n row-major (out m×m, exactly symmetric), unrounded doubles: entry (i, j) is
 * Σ_k x(i,k)·x(j,k), summed from 0.0 over k ascending. Rows are taken two by two so that each
 * loaded element feeds two or four sums; every sum keeps its own order.
 */
function symmetricProduct(x: Float64Array, m: number, n: number, out: Float64Array): void {
  let i = 0;
  for (; i + 1 < m; i += 2) {
    const r0 = i * n, r1 = r0 + n;
    let d00 = 0, d01 = 0, d11 = 0;
    for (let k = 0; k < n; k++) {
      const a = x[r0 + k]!, b = x[r1 + k]!;
      d00 += a * a;
      d01 += a * b;
      d11 += b * b;
    }
    out[i * m + i] = d00;
    out[i * m + i + 1] = out[(i + 1) * m + i] = d01;
    out[(i + 1) * m + i + 1] = d11;
    let j = i + 2;
    for (; j + 1 < m; j += 2) {
      const s0 = j * n, s1 = s0 + n;
      let e00 = 0, e01 = 0, e10 = 0, e11 = 0;
      for (let k = 0; k < n; k++) {
        const a = x[r0 + k]!, b = x[r1 + k]!, c = x[s0 + k]!, d = x[s1 + k]!;
        e00 += a * c;
        e01 += a * d;
        e10 += b * c;
        e11 += b * d;
      }
      out[i * m + j] = out[j * m + i] = e00;
      out[i * m + j + 1] = out[(j + 1) * m + i] = e01;
      out[(i + 1) * m + j] = out[j * m + i + 1] = e10;
      out[(i + 1) * m + j + 1] = out[(j + 1) * m + i + 1] = e11;
    }
    if (j < m) {
      const s0 = j * n;
      let e0 = 0, e1 = 0;
      for (let k = 0; k < n; k++) {
        const c = x[s0 + k]!;
        e0 += x[r0 + k]! * c;
        e1 += x[r1 + k]! * c;
      }
      out[i * m + j] = out[j * m + i] = e0;
      out[(i + 1) * m + j] = out[j * m + i + 1] = e1;
    }
  }
  if (i < m) {
    // The last row when m is odd: its dot products with the rows before it are done already.
    const r0 = i * n;
    let d = 0;
    for (let k = 0; k < n; k++) d += x[r0 + k]! * x[r0 + k]!;
    out[i * m + i] = d;
  }
}

/**
 * out = round(a·x + b·x) (scalar a, b m×m, x m×n): each entry's Σ_k b(i,k)·x(k,j) summed in double
 * from 0.0 over k ascending, then a·x(i,j) added in double and the total rounded once. Two output
 * rows and two k at a time, each sum keeping its order; `acc0`, `acc1` are scratch rows of length n.
 */
function affineProduct(
  a: number,
  b: Float64Array,
  x: Float64Array,
  m: number,
  n: number,
  out: Float64Array,
  round: (v: number) => number,
  acc0: Float64Array,
  acc1: Float64Array,
): void {
  let i = 0;
  for (; i < m; i += 2) {
    const two = i + 1 < m;
    const b0 = i * m, b1 = two ? b0 + m : b0;
    acc0.fill(0);
    acc1.fill(0);
    let k = 0;
    for (; k + 1 < m; k += 2) {
      const p = b[b0 + k]!, q = b[b0 + k + 1]!, s = b[b1 + k]!, t = b[b1 + k + 1]!;
      const rk = k * n, rk1 = rk + n;
      for (let j = 0; j < n; j++) {
        const u = x[rk + j]!, v = x[rk1 + j]!;
        acc0[j] = acc0[j]! + p * u + q * v;
        acc1[j] = acc1[j]! + s * u + t * v;
      }
    }
    if (k < m) {
      const p = b[b0 + k]!, s = b[b1 + k]!;
      const rk = k * n;
      for (let j = 0; j < n; j++) {
        const u = x[rk + j]!;
        acc0[j] = acc0[j]! + p * u;
        acc1[j] = acc1[j]! + s * u;
      }
    }
    const o0 = i * n;
    for (let j = 0; j < n; j++) out[o0 + j] = round(a * x[o0 + j]! + acc0[j]!);
    if (two) for (let j = 0; j < n; j++) out[o0 + n + j] = round(a * x[o0 + n + j]! + acc1[j]!);
  }
}

/**
 * torch's `_zeropower_via_newtonschulz(update, (a, b, c), steps, eps)` computed in `dtype`, on a
 * rows×cols row-major matrix; returns the rows×cols result as doubles holding dtype values.
 *
 * torch casts the update to bfloat16 (for GPU tensor-core throughput) and returns bfloat16. This
 * computes in the param dtype instead: bfloat16's 8-bit significand makes the result depend on how
 * the matmul kernel blocks and accumulates (oneDNN, cuBLAS and MKL all differ), so there is no one
 * torch answer to be exact to; the param dtype gives a deterministic, more accurate
 * orthogonalization, and the rest of the step follows torch op for op.
 *
 * Operation order (rounding r() = to the dtype; every product entry is accumulated in double,
 * starting from 0.0, inner index ascending, one rounded product added at a time):
 * ```
 * norm = r(sqrt(Σ x²))                     # squares summed in double in row-major order of the update
 * X = updateᵀ if rows > cols else update   # m×n, m <= n
 * X = r(X / max(norm, r(eps)))             # ortho_grad.div_(ortho_grad.norm().clamp(min=eps))
 * repeat steps times (none if steps <= 0):
 *   A = r(X·Xᵀ)                            # gram_matrix = ortho_grad @ ortho_grad.T
 *   B = r(r(b)·A + r(c)·(A·A))             # torch.addmm(A, A, A, beta=b, alpha=c), sum in double
 *   X = r(r(a)·X + B·X)                    # torch.addmm(X, B, X, beta=a), sum in double
 * return Xᵀ if rows > cols else X
 * ```
 * Note the clamp: torch divides by max(norm, eps), not norm + eps (Keller Jordan's original).
 */
export function zeropowerViaNewtonSchulz(
  dtype: Dtype,
  update: ArrayLike<number>,
  rows: number,
  cols: number,
  coefficients: readonly [number, number, number],
  steps: number,
  eps: number,
): Float64Array {
  const r = dtype === 'float32' ? Math.fround : identity;
  const total = rows * cols;
  let sumsq = 0;
  for (let i = 0; i < total; i++) {
    const x = update[i]!;
    sumsq += x * x;
  }
  const norm = r(Math.sqrt(sumsq));
  const denom = Math.max(norm, r(eps));
  const transposed = rows > cols;
  const m = transposed ? cols : rows;
  const n = transposed ? rows : cols;
  let x = new Float64Array(total);
  if (transposed) {
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) x[j * rows + i] = r(update[i * cols + j]! / denom);
  } else {
    for (let i = 0; i < total; i++) x[i] = r(update[i]! / denom);
  }
  const sa = r(coefficients[0]), sb = r(coefficients[1]), sc = r(coefficients[2]);
  let next = new Float64Array(total);
  const gram = new Float64Array(m * m);
  const gramSquared = new Float64Array(m * m);
  const acc0 = new Float64Array(n);
  const acc1 = new Float64Array(n);
  for (let s = 0; s < steps; s++) {
    symmetricProduct(x, m, n, gram); // gram_matrix = X·Xᵀ
    for (let i = 0; i < gram.length; i++) gram[i] = r(gram[i]!);
    symmetricProduct(gram, m, m, gramSquared); // gram² = gram·gramᵀ (gram is symmetric)
    for (let i = 0; i < gram.length; i++) gramSquared[i] = r(sb * gram[i]! + sc * gramSquared[i]!); // gram_update
    affineProduct(sa, gramSquared, x, m, n, next, r, acc0, acc1); // a·X + gram_update·X
    [x, next] = [next, x];
  }
  if (!transposed) return x;
  const out = new Float64Array(total);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[i * cols + j] = x[j * rows + i]!;
  return out;
}

/** torch's `_adjust_lr(lr, adjust_lr_fn, param.shape)`, in host doubles. */
export function adjustLr(lr: number, fn: string, rows: number, cols: number): number {
  const ratio = fn === 'match_rms_adamw' ? 0.2 * Math.sqrt(Math.max(rows, cols)) : Math.sqrt(Math.max(1, rows / cols));
  return lr * ratio;
}

/**
 * torch 2.9's `_single_tensor_muon` for one 2-D param, in place:
 * ```
 * buf = lerp(buf, grad, s(1 - momentum))                  # buf.lerp_(grad, 1 - momentum)
 * update = lerp(grad, buf, s(momentum)) if nesterov else buf   # grad.lerp(buf, momentum)
 * O = zeropowerViaNewtonSchulz(update)                    # in the param dtype (torch: bfloat16)
 * adjusted = lr * ratio(adjust_lr_fn, rows, cols)         # host double
 * p = p * s(1 - lr*weight_decay)                          # param.mul_(...): the UNadjusted lr
 * p = fma(O, s(-adjusted), p)                             # param.add_(O, alpha=-adjusted_lr)
 * ```
 */
function step({ dtype, hp, params, grads, shape, slots }: StepArgs<MuonHyperparams>): Record<string, number> {
  const rows = shape[0]!, cols = shape[1]!;
  const n = params.length;
  if (n === 0) return {};
  const buf = slots.momentum_buffer as FloatArray;
  lerp(dtype, buf, grads, 1 - hp.momentum, buf);
  let update: FloatArray = buf;
  if (hp.nesterov) {
    update = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
    lerp(dtype, grads, buf, hp.momentum, update);
  }
  const ortho = zeropowerViaNewtonSchulz(dtype, update, rows, cols, [hp.ns_a, hp.ns_b, hp.ns_c], hp.ns_steps, hp.eps);
  const adjusted = adjustLr(hp.lr, hp.adjust_lr_fn, rows, cols);
  const decay = 1 - hp.lr * hp.weight_decay;
  if (dtype === 'float32') {
    const f = Math.fround;
    const d = f(decay), alpha = f(-adjusted);
    for (let i = 0; i < n; i++) params[i] = fma32(ortho[i]!, alpha, f(params[i]! * d));
  } else {
    const alpha = -adjusted;
    for (let i = 0; i < n; i++) params[i] = fma64(ortho[i]!, alpha, params[i]! * decay);
  }
  return {};
}

/**
 * Muon (torch 2.9 `torch.optim.Muon`): SGD momentum (lerp form) whose update is orthogonalized by
 * a quintic Newton-Schulz iteration, with decoupled weight decay and a shape-dependent lr. 2-D
 * tensors only. State: `momentum_buffer` (zeros, as torch's `zeros_like` at the first step); no
 * step counter (torch keeps none). No `maximize` (torch's Muon has none).
 */
export const muon: OptimizerDef<MuonHyperparams> = {
  name: 'muon',
  torch: 'torch.optim.Muon',
  description:
    "Muon (torch 2.9 torch.optim.Muon): momentum orthogonalized by Newton-Schulz, for 2-D tensors. Newton-Schulz runs in the param dtype, where torch uses bfloat16.",
  hyperparams: {
    lr: { type: 'number', default: 1e-3, min: 0, description: 'Learning rate (torch `lr`), >= 0; scaled by adjust_lr_fn for the update, not for the decay.' },
    weight_decay: {
      type: 'number',
      default: 0.1,
      min: 0,
      description: 'Decoupled weight decay: p *= 1 - lr·weight_decay before the update (torch `weight_decay`), >= 0.',
    },
    momentum: {
      type: 'number',
      default: 0.95,
      min: 0,
      description: 'Momentum factor (torch `momentum`): buf.lerp_(grad, 1 - momentum); >= 0 (torch sets no upper bound).',
    },
    nesterov: {
      type: 'boolean',
      default: true,
      description: 'Orthogonalize grad.lerp(buf, momentum) instead of buf (torch `nesterov`).',
    },
    ns_a: { type: 'number', default: 3.4445, description: 'Newton-Schulz coefficient a, of X (torch `ns_coefficients[0]`).' },
    ns_b: { type: 'number', default: -4.775, description: 'Newton-Schulz coefficient b, of (X·Xᵀ)·X (torch `ns_coefficients[1]`).' },
    ns_c: { type: 'number', default: 2.0315, description: 'Newton-Schulz coefficient c, of (X·Xᵀ)²·X (torch `ns_coefficients[2]`).' },
    eps: {
      type: 'number',
      default: 1e-7,
      description: 'The update is divided by max(its Frobenius norm, eps) before Newton-Schulz (torch `eps`, unchecked by torch: eps <= 0 with an all-zero update gives NaN there too).',
    },
    ns_steps: {
      type: 'number',
      default: 5,
      max: 99,
      integer: true,
      description: 'Newton-Schulz iterations (torch `ns_steps`, a Python int; torch raises at 100 or more; 0 or fewer: normalization only).',
    },
    adjust_lr_fn: {
      type: 'enum',
      values: ADJUST_LR_FNS,
      default: 'original',
      description:
        "lr scale for the update (torch `adjust_lr_fn`, None = 'original'): 'original' sqrt(max(1, rows/cols)) (Keller Jordan), 'match_rms_adamw' 0.2·sqrt(max(rows, cols)) (Moonshot).",
    },
  },
  check(hp) {
    if (!Number.isInteger(hp.ns_steps)) return { field: 'ns_steps', message: 'ns_steps must be an integer (torch passes it to range())' };
    if (!(ADJUST_LR_FNS as readonly string[]).includes(hp.adjust_lr_fn)) {
      return { field: 'adjust_lr_fn', message: `adjust_lr_fn must be one of ${ADJUST_LR_FNS.join(', ')}` };
    }
    return null;
  },
  checkShape(shape) {
    if (shape.length !== 2) {
      return `Muon only steps 2-D tensors (torch.optim.Muon raises for any other); this one has shape [${shape.join(', ')}]`;
    }
    const [rows, cols] = shape as [number, number];
    if (Math.min(rows, cols) > MUON_MAX_MIN_DIM || rows * cols > MUON_MAX_ELEMENTS) {
      return `Muon steps matrices with min(rows, cols) <= ${MUON_MAX_MIN_DIM} and rows·cols <= ${MUON_MAX_ELEMENTS} (Newton-Schulz's CPU time); this one is ${rows}x${cols}`;
    }
    return null;
  },
  slots: [
    {
      name: 'momentum_buffer',
      description: 'Momentum buffer: buf.lerp_(grad, 1 - momentum) each step (torch `momentum_buffer`).',
      present: () => true,
      initial: () => 0,
    },
  ],
  scalars: [],
  stepCounter: 'none',
  // Newton-Schulz orthogonalizes each matrix on its own.
  perTensor: true,
  step,
};

export default muon;
