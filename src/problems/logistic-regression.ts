// Logistic regression on a small synthetic dataset: params (w_1 … w_d, b), loss the mean binary
// cross-entropy (1/n) Σ softplus(z_i) − y_i z_i with z_i = x_i·w + b (torch's
// binary_cross_entropy_with_logits), gradient (1/n) Σ (σ(z_i) − y_i)·(x_i, 1).
//
// The dataset comes from `Random(seed)` (src/problems/random.ts), every value a `normal()` draw,
// in this order: the true weights w*_1 … w*_d; then for each sample i, its features x_i1 … x_id
// and one label noise ε_i. The label is y_i = 1 when (Σ_j x_ij·w*_j, summed left to right from 0)
// + label_noise·ε_i > 0, else 0. Only additions and multiplications: the same bits in any language.

import { dtypeOps } from '../optim/dtype-ops.ts';
import type { Dtype, FloatArray } from '../optim/optimizer.ts';
import { Random } from './random.ts';
import type { PreparedProblem } from './types.ts';

export interface LogisticRegressionOptions {
  samples: number;
  features: number;
  label_noise: number;
  seed: number;
  start?: number[] | undefined;
}

export interface Dataset {
  /** Row-major n × d. */
  x: Float64Array;
  y: Float64Array;
  trueWeights: Float64Array;
}

export function logisticDataset(samples: number, features: number, labelNoise: number, seed: number): Dataset {
  const random = new Random(seed);
  const trueWeights = new Float64Array(features);
  for (let j = 0; j < features; j++) trueWeights[j] = random.normal();
  const x = new Float64Array(samples * features);
  const y = new Float64Array(samples);
  for (let i = 0; i < samples; i++) {
    let dot = 0;
    for (let j = 0; j < features; j++) {
      const v = random.normal();
      x[i * features + j] = v;
      dot += v * trueWeights[j]!;
    }
    const eps = random.normal();
    y[i] = dot + labelNoise * eps > 0 ? 1 : 0;
  }
  return { x, y, trueWeights };
}

/** log(1 + e^z) without overflow. */
function softplus(z: number): number {
  return Math.max(z, 0) + Math.log1p(Math.exp(-Math.abs(z)));
}

export function logisticRegression({ samples: n, features: d, label_noise, seed, start }: LogisticRegressionOptions): PreparedProblem {
  const { x, y } = logisticDataset(n, d, label_noise, seed);
  return {
    dimension: d + 1,
    start: start ?? new Array<number>(d + 1).fill(0),
    loss(p) {
      let total = 0;
      for (let i = 0; i < n; i++) {
        let z = 0;
        for (let j = 0; j < d; j++) z += x[i * d + j]! * p[j]!;
        z += p[d]!;
        total += softplus(z) - y[i]! * z;
      }
      return total / n;
    },
    gradient(dtype: Dtype) {
      const { r } = dtypeOps(dtype);
      const xr = dtype === 'float32' ? Float32Array.from(x) : x;
      return (p: FloatArray, g: FloatArray) => {
        g.fill(0);
        for (let i = 0; i < n; i++) {
          let z = 0;
          for (let j = 0; j < d; j++) z = r(z + r(xr[i * d + j]! * p[j]!));
          z = r(z + p[d]!);
          // σ(z) without overflow: 1/(1 + e^−z) for z >= 0, e^z/(1 + e^z) below.
          let s: number;
          if (z >= 0) s = r(1 / r(1 + r(Math.exp(-z))));
          else {
            const e = r(Math.exp(z));
            s = r(e / r(1 + e));
          }
          const residual = r(s - y[i]!);
          for (let j = 0; j < d; j++) g[j] = r(g[j]! + r(residual * xr[i * d + j]!));
          g[d] = r(g[d]! + residual);
        }
        for (let j = 0; j <= d; j++) g[j] = r(g[j]! / n);
      };
    },
    optimum: null,
  };
}
