// Beale's function (2-D): f(x, y) = (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²,
// minimum 0 at (3, 0.5); flat plateaus and steep ridges around it.

import { dtypeOps } from '../optim/dtype-ops.ts';
import type { Dtype, FloatArray } from '../optim/optimizer.ts';
import type { PreparedProblem } from './types.ts';

export interface BealeOptions {
  start?: number[] | undefined;
}

export function beale({ start }: BealeOptions): PreparedProblem {
  return {
    dimension: 2,
    start: start ?? [1, 1],
    loss(p) {
      const x = p[0]!, y = p[1]!;
      const t1 = 1.5 - x + x * y;
      const t2 = 2.25 - x + x * (y * y);
      const t3 = 2.625 - x + x * (y * y * y);
      return t1 * t1 + t2 * t2 + t3 * t3;
    },
    gradient(dtype: Dtype) {
      const { r } = dtypeOps(dtype);
      // ∂f/∂x = 2·(t1·(y − 1) + t2·(y² − 1) + t3·(y³ − 1)), ∂f/∂y = 2·(t1·x + t2·2xy + t3·3xy²),
      // each operation rounded to the dtype in this order (the fixtures' generator writes the same).
      return (p: FloatArray, g: FloatArray) => {
        const x = p[0]!, y = p[1]!;
        const y2 = r(y * y);
        const y3 = r(y2 * y);
        const xy = r(x * y), xy2 = r(x * y2), xy3 = r(x * y3);
        const t1 = r(r(1.5 - x) + xy);
        const t2 = r(r(2.25 - x) + xy2);
        const t3 = r(r(2.625 - x) + xy3);
        g[0] = r(r(r(r(t1 * r(y - 1)) + r(t2 * r(y2 - 1))) + r(t3 * r(y3 - 1))) * 2);
        g[1] = r(r(r(r(t1 * x) + r(t2 * r(2 * xy))) + r(t3 * r(3 * xy2))) * 2);
      };
    },
    optimum: { loss: 0, params: [3, 0.5] },
  };
}
