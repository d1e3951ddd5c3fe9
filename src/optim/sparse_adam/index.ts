// torch.optim.SparseAdam (torch 1.13, sparse_adam.py + _functional.sparse_adam): Adam for sparse
// (row) gradients, lazily: only the rows a gradient names change, in params and in both moments.

import { dtypeOps } from '../dtype-ops.ts';
import { beta, MAXIMIZE, type OptimizerDef, type SparseStepArgs } from '../optimizer.ts';
import { coalesce } from '../sparse.ts';

interface SparseAdamHyperparams extends Record<string, number | boolean | string> {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  maximize: boolean;
}

/**
 * One step on the rows of a coalesced gradient, in torch's order (fixtures README, SparseAdam):
 * the moments move as old + (1-b)·(g - old), eps is added after the sqrt, and the bias
 * corrections are folded into one host step size lr·sqrt(1 - b2^t) / (1 - b1^t).
 */
function sparseStep({ dtype, hp, params, grad, slots, step }: SparseStepArgs<SparseAdamHyperparams>): Record<string, number> {
  const { r } = dtypeOps(dtype);
  const t = step + 1; // torch increments the Python int before the math
  const g = coalesce(dtype, hp.maximize ? { ...grad, values: grad.values.map((x) => -x) } : grad);
  const bc1 = 1 - hp.beta1 ** t;
  const bc2 = 1 - hp.beta2 ** t;
  const negStepSize = r(-((hp.lr * Math.sqrt(bc2)) / bc1));
  const s1 = r(1 - hp.beta1);
  const s2 = r(1 - hp.beta2);
  const eps = r(hp.eps);
  const m = slots.exp_avg!;
  const v = slots.exp_avg_sq!;
  const { rowSize } = g;
  for (let k = 0; k < g.rows.length; k++) {
    const base = g.rows[k]! * rowSize;
    for (let j = 0; j < rowSize; j++) {
      const i = base + j;
      const x = g.values[k * rowSize + j]!;
      const old = m[i]!;
      const upd = r(r(x - old) * s1); // grad.sub(old).mul_(1 - beta1)
      m[i] = r(old + upd);
      const oldSq = v[i]!;
      const updSq = r(r(r(x * x) - oldSq) * s2); // grad.pow(2).sub_(old).mul_(1 - beta2)
      v[i] = r(oldSq + updSq);
      const numer = r(upd + old);
      const denom = r(r(Math.sqrt(r(updSq + oldSq))) + eps);
      params[i] = r(params[i]! + r(negStepSize * r(numer / denom)));
    }
  }
  return {};
}

export const sparseAdam: OptimizerDef<SparseAdamHyperparams> = {
  name: 'sparse_adam',
  torch: 'torch.optim.SparseAdam',
  description: 'Adam for sparse (row) gradients such as an embedding\'s: only the rows a gradient names change (torch.optim.SparseAdam). Gradients must be sparse.',
  hyperparams: {
    lr: { type: 'number', default: 1e-3, min: 0, minExclusive: true, description: 'Learning rate (torch `lr`), > 0.' },
    beta1: beta(0.9, 'Decay of the first moment (torch `betas[0]`), in [0, 1).'),
    beta2: beta(0.999, 'Decay of the second moment (torch `betas[1]`), in [0, 1).'),
    eps: { type: 'number', default: 1e-8, min: 0, minExclusive: true, description: 'Added to the denominator after the square root (torch `eps`), > 0.' },
    maximize: MAXIMIZE,
  },
  slots: [
    { name: 'exp_avg', description: 'First moment: exp_avg[rows] += (g - exp_avg[rows])·(1 - beta1) (torch `exp_avg`).', present: () => true, initial: () => 0 },
    {
      name: 'exp_avg_sq',
      description: 'Second moment: exp_avg_sq[rows] += (g² - exp_avg_sq[rows])·(1 - beta2) (torch `exp_avg_sq`).',
      present: () => true,
      initial: () => 0,
      nonNegative: true,
    },
  ],
  scalars: [],
  stepCounter: 'integer',
  sparse: 'only',
  step() {
    throw new Error('internal: SparseAdam steps sparse gradients only (sparseStep)');
  },
  sparseStep,
  checkSparseGrad(shape, rows) {
    if (rows > 0 || shape.length < 2 || shape[shape.length - 1] === 0) return null;
    // sparse_adam.py: grad.coalesce() of no rows has values of shape [0], which fit exp_avg's rows only
    // when their last dimension is 0 (checked with torch 1.13: 1 raises "values has incorrect size")
    return 'torch.optim.SparseAdam raises for a sparse gradient without rows on a tensor of two or more dimensions whose last is not 0 (a size mismatch); send null to leave the tensor as it is';
  },
};
