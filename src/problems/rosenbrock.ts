// Rosenbrock's function in its extended form (pairs of coordinates, any even dimension n):
// f(x) = Σ_{i<n/2} b·(x_{2i+1} − x_{2i}²)² + (a − x_{2i})², minimum 0 at x = (a, a², a, a², …).
// With a = 1, b = 100 it is the classic banana valley; the usual start is (−1.2, 1) per pair.

import { dtypeOps } from '../optim/dtype-ops.ts';
import type { Dtype, FloatArray } from '../optim/optimizer.ts';
import type { PreparedProblem } from './types.ts';

export interface RosenbrockOptions {
  dimension: number;
  a: number;
  b: number;
  start?: number[] | undefined;
}

export function rosenbrock({ dimension, a, b, start }: RosenbrockOptions): PreparedProblem {
  const x0 = start ?? Array.from({ length: dimension }, (_, i) => (i % 2 === 0 ? -1.2 : 1));
  return {
    dimension,
    start: x0,
    loss(x) {
      let total = 0;
      for (let i = 0; i < dimension; i += 2) {
        const u = x[i]!, v = x[i + 1]!;
        const d = v - u * u;
        const e = a - u;
        total += b * (d * d) + e * e;
      }
      return total;
    },
    gradient(dtype: Dtype) {
      const { r } = dtypeOps(dtype);
      const ra = r(a), rb = r(b);
      // d = v − u², e = a − u, t = b·d: ∂f/∂u = −2·(2t·u + e), ∂f/∂v = 2t; each product and sum
      // rounded to the dtype in this order (the fixtures' generator writes the same tensor ops).
      return (x: FloatArray, g: FloatArray) => {
        for (let i = 0; i < dimension; i += 2) {
          const u = x[i]!, v = x[i + 1]!;
          const d = r(v - r(u * u));
          const e = r(ra - u);
          const t = r(rb * d);
          const t2 = r(t + t);
          g[i] = r(r(r(t2 * u) + e) * -2);
          g[i + 1] = t2;
        }
      };
    },
    optimum: { loss: 0, params: Array.from({ length: dimension }, (_, i) => (i % 2 === 0 ? a : a * a)) },
  };
}
