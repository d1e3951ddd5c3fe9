// torch.optim.NAdam, torch 1.13 single-tensor path (nadam.py:219-248). torch 1.13's NAdam has no
// `maximize` and no decoupled weight decay.

import { dtypeOps } from '../dtype-ops.ts';
import { beta, nonNegative, type OptimizerDef, type StepArgs } from '../optimizer.ts';

export interface NadamHyperparams {
  [key: string]: number | boolean;
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weight_decay: number;
  momentum_decay: number;
}

const f = Math.fround;

/**
 * μ_t = β1·(1 - 0.5·0.96^(t·ψ)); Π_t = Π_{t-1}·μ_t (float32, as torch's `mu_product` tensor);
 * m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²; d = sqrt(v/(1-β2^t)) + eps;
 * p -= lr·(1-μ_t)/(1-Π_t) · g/d + lr·μ_{t+1}/(1-Π_t·μ_t·μ_{t+1}) · m/d.
 * torch 1.13 multiplies μ_t twice into the last product (nadam.py:240); this follows it.
 */
function step({ dtype, hp, params, grads, slots, step, scalars }: StepArgs<NadamHyperparams>): Record<string, number> {
  const { r, fma } = dtypeOps(dtype);
  const t = f(step + 1); // :226 step_t += 1
  const bc2 = 1 - hp.beta2 ** t; // :229 host
  const mu = hp.beta1 * (1 - 0.5 * 0.96 ** (t * hp.momentum_decay)); // :235 host
  const muNext = hp.beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * hp.momentum_decay)); // :236 host
  // :239-240 mu_product is a float32 0-d tensor whatever the params' dtype.
  const muProduct = f(scalars.mu_product! * f(mu));
  const muProductNext = f(f(muProduct * f(mu)) * f(muNext));
  const c1 = (-hp.lr * (1 - mu)) / (1 - muProduct); // :247 host
  const c2 = (-hp.lr * muNext) / (1 - muProductNext); // :248 host
  const wd = r(hp.weight_decay), eps = r(hp.eps), rBc2 = r(bc2), rC1 = r(c1), rC2 = r(c2);
  const b1 = r(hp.beta1), oneMinusB1 = r(1 - hp.beta1), b2 = r(hp.beta2), oneMinusB2 = r(1 - hp.beta2);
  const m = slots.exp_avg!, v = slots.exp_avg_sq!;
  const n = params.length;
  for (let i = 0; i < n; i++) {
    let p = params[i]!;
    let g = grads[i]!;
    if (hp.weight_decay !== 0) g = fma(p, wd, g); // :232
    const mi = fma(g, oneMinusB1, r(m[i]! * b1)); // :243 exp_avg.mul_(beta1).add_(grad, alpha=1-beta1)
    const vi = fma(r(oneMinusB2 * g), g, r(v[i]! * b2)); // :244 exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1-beta2)
    m[i] = mi;
    v[i] = vi;
    const denom = r(r(Math.sqrt(r(vi / rBc2))) + eps); // :246 exp_avg_sq.div(bias_correction2).sqrt().add_(eps)
    p = r(p + r(r(rC1 * g) / denom)); // :247 param.addcdiv_(grad, denom, value=c1)
    params[i] = r(p + r(r(rC2 * mi) / denom)); // :248 param.addcdiv_(exp_avg, denom, value=c2)
  }
  return { mu_product: muProduct };
}

export const nadam: OptimizerDef<NadamHyperparams> = {
  name: 'nadam',
  torch: 'torch.optim.NAdam',
  description: 'NAdam (Dozat 2016): Adam with Nesterov momentum and a momentum schedule (torch 1.13: no maximize, L2 weight decay only).',
  hyperparams: {
    lr: nonNegative(0.002, 'Learning rate (torch `lr`).'),
    beta1: beta(0.9, 'Decay of the first moment (torch `betas[0]`), in [0, 1).'),
    beta2: beta(0.999, 'Decay of the second moment (torch `betas[1]`), in [0, 1).'),
    eps: nonNegative(1e-8, 'Added to the bias-corrected sqrt(v) (torch `eps`).'),
    weight_decay: nonNegative(0, 'L2 penalty added to the gradient (torch `weight_decay`).'),
    momentum_decay: nonNegative(0.004, 'Momentum schedule ψ: μ_t = β1·(1 - 0.5·0.96^(t·ψ)) (torch `momentum_decay`).'),
  },
  slots: [
    { name: 'exp_avg', description: 'First moment (torch `exp_avg`).', present: () => true, initial: () => 0 },
    { name: 'exp_avg_sq', description: 'Second moment (torch `exp_avg_sq`).', present: () => true, initial: () => 0, nonNegative: true },
  ],
  scalars: [
    {
      name: 'mu_product',
      description: 'Product of the momentum coefficients μ_1…μ_t (torch `mu_product`), a float32 number for both dtypes as torch keeps it.',
      initial: 1,
    },
  ],
  stepCounter: 'float32',
  step,
};
