// A noisy quadratic (the "noisy quadratic model" of Zhang et al. 2019, "Which algorithmic choices
// matter at which batch sizes?"): the objective f(x) = ½ Σ h_i x_i², minimum 0 at x = 0, with a
// stochastic gradient g_t = h ⊙ (x − σ ξ_t), the exact gradient of the sampled loss
// ½ Σ h_i (x_i − σ ξ_{t,i})², where ξ_t is a vector of `normal()` draws from src/problems/random.ts
// seeded with `seed` (ξ_0 first, then ξ_1, …, each in coordinate order). The curves report the
// noise-free f.

import { dtypeOps } from '../optim/dtype-ops.ts';
import type { Dtype, FloatArray } from '../optim/optimizer.ts';
import { Random } from './random.ts';
import type { PreparedProblem } from './types.ts';

export interface NoisyQuadraticOptions {
  dimension: number;
  /** h_i > 0 (default 1/(i+1): 1, 1/2, …, 1/n, condition number n). */
  curvatures?: number[] | undefined;
  /** σ >= 0. */
  noise: number;
  seed: number;
  start?: number[] | undefined;
}

export const defaultCurvatures = (n: number) => Array.from({ length: n }, (_, i) => 1 / (i + 1));

export function noisyQuadratic({ dimension, curvatures, noise, seed, start }: NoisyQuadraticOptions): PreparedProblem {
  const h = curvatures ?? defaultCurvatures(dimension);
  return {
    dimension,
    start: start ?? new Array<number>(dimension).fill(1),
    loss(x) {
      let total = 0;
      for (let i = 0; i < dimension; i++) total += h[i]! * x[i]! * x[i]!;
      return 0.5 * total;
    },
    gradient(dtype: Dtype) {
      const { r } = dtypeOps(dtype);
      const hr = h.map(r);
      const sigma = r(noise);
      const random = new Random(seed);
      return (x: FloatArray, g: FloatArray) => {
        for (let i = 0; i < dimension; i++) {
          const xi = r(random.normal());
          g[i] = r(hr[i]! * r(x[i]! - r(sigma * xi)));
        }
      };
    },
    optimum: { loss: 0, params: new Array<number>(dimension).fill(0) },
  };
}
