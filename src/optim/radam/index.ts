// torch.optim.RAdam, torch 1.13 single-tensor path (radam.py:203-237). No `maximize` in torch 1.13.

import { dtypeOps } from '../dtype-ops.ts';
import { beta, nonNegative, type OptimizerDef, type StepArgs } from '../optimizer.ts';

export interface RadamHyperparams {
  [key: string]: number | boolean;
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weight_decay: number;
}

/**
 * m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²; m̂ = m/(1-β1^t); ρ∞ = 2/(1-β2) - 1,
 * ρ_t = ρ∞ - 2t·β2^t/(1-β2^t); if ρ_t > 5: p -= lr·m̂·sqrt(1-β2^t)/(sqrt(v) + eps)·r_t with
 * r_t = sqrt((ρ_t-4)(ρ_t-2)ρ∞ / ((ρ∞-4)(ρ∞-2)ρ_t)); else p -= lr·m̂.
 */
function step({ dtype, hp, params, grads, slots, step }: StepArgs<RadamHyperparams>): Record<string, number> {
  const { r, fma } = dtypeOps(dtype);
  const t = Math.fround(step + 1); // :209 step_t += 1
  const bc1 = 1 - hp.beta1 ** t; // :212 host
  const bc2 = 1 - hp.beta2 ** t; // :213 host
  const rhoInf = 2 / (1 - hp.beta2) - 1; // :226
  const rhoT = rhoInf - (2 * t * hp.beta2 ** t) / bc2; // :228
  const rectified = rhoT > 5; // :230
  const rect = rectified ? Math.sqrt(((rhoT - 4) * (rhoT - 2) * rhoInf) / ((rhoInf - 4) * (rhoInf - 2) * rhoT)) : 0; // :232
  const wd = r(hp.weight_decay), eps = r(hp.eps), rBc1 = r(bc1), lr = r(hp.lr), negOne = r(-1);
  const sqrtBc2 = r(Math.sqrt(bc2)), rRect = r(rect);
  const b1 = r(hp.beta1), oneMinusB1 = r(1 - hp.beta1), b2 = r(hp.beta2), oneMinusB2 = r(1 - hp.beta2);
  const m = slots.exp_avg!, v = slots.exp_avg_sq!;
  const n = params.length;
  for (let i = 0; i < n; i++) {
    const p = params[i]!;
    let g = grads[i]!;
    if (hp.weight_decay !== 0) g = fma(p, wd, g); // :216
    const mi = fma(g, oneMinusB1, r(m[i]! * b1)); // :219
    const vi = fma(r(oneMinusB2 * g), g, r(v[i]! * b2)); // :220
    m[i] = mi;
    v[i] = vi;
    const mHat = r(mi / rBc1); // :223 exp_avg / bias_correction1
    let u: number;
    if (rectified) {
      const denom = r(r(Math.sqrt(vi)) + eps); // :233 exp_avg_sq.sqrt().add_(eps)
      const adaptive = r(r(1 / denom) * sqrtBc2); // :233 math.sqrt(bc2) / denom = denom.reciprocal() * float
      u = r(r(r(mHat * lr) * adaptive) * rRect); // :235 bias_corrected_exp_avg * lr * adaptive_lr * rect
    } else {
      u = r(mHat * lr); // :237 bias_corrected_exp_avg * lr
    }
    params[i] = fma(u, negOne, p); // :235/:237 param.add_(u, alpha=-1.0)
  }
  return {};
}

export const radam: OptimizerDef<RadamHyperparams> = {
  name: 'radam',
  torch: 'torch.optim.RAdam',
  description:
    'RAdam (Liu et al. 2020): Adam whose adaptive step is switched on, rectified, once the variance of the second moment is tractable (torch 1.13: no maximize, L2 weight decay only).',
  hyperparams: {
    lr: nonNegative(0.001, 'Learning rate (torch `lr`).'),
    beta1: beta(0.9, 'Decay of the first moment (torch `betas[0]`), in [0, 1).'),
    beta2: beta(0.999, 'Decay of the second moment (torch `betas[1]`), in [0, 1).'),
    eps: nonNegative(1e-8, 'Added to sqrt(v) in the rectified steps (torch `eps`).'),
    weight_decay: nonNegative(0, 'L2 penalty added to the gradient (torch `weight_decay`).'),
  },
  slots: [
    { name: 'exp_avg', description: 'First moment (torch `exp_avg`).', present: () => true, initial: () => 0 },
    { name: 'exp_avg_sq', description: 'Second moment (torch `exp_avg_sq`).', present: () => true, initial: () => 0, nonNegative: true },
  ],
  scalars: [],
  stepCounter: 'float32',
  step,
};
