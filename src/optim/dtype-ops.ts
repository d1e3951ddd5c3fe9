// The rounding of one dtype, for kernels written once for both: `r` rounds a double result to the
// dtype (each torch tensor op is one correctly rounded op), `fma` is torch's fused `add_(alpha)` /
// `addcmul_` in that dtype. Python floats handed to a tensor op are rounded with `r` first.

import { fma32, fma64 } from './fma.ts';
import type { Dtype } from './optimizer.ts';

export interface DtypeOps {
  r(x: number): number;
  fma(a: number, b: number, c: number): number;
}

const identity = (x: number): number => x;

export const F32_OPS: DtypeOps = { r: Math.fround, fma: fma32 };
export const F64_OPS: DtypeOps = { r: identity, fma: fma64 };

export function dtypeOps(dtype: Dtype): DtypeOps {
  return dtype === 'float32' ? F32_OPS : F64_OPS;
}
