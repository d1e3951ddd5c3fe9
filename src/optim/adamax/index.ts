// torch.optim.Adamax, torch 1.13 single-tensor path (adamax.py:205-236).

import { dtypeOps } from '../dtype-ops.ts';
import { beta, MAXIMIZE, nonNegative, type OptimizerDef, type StepArgs } from '../optimizer.ts';

export interface AdamaxHyperparams {
  [key: string]: number | boolean;
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weight_decay: number;
  maximize: boolean;
}

/**
 * g = ±grad (+ wd·p); m = β1·m + (1-β1)·g; u = max(β2·u, |g| + eps) (eps before the max, so
 * u >= eps); p -= lr/(1-β1^t) · m / u.
 */
function step({ dtype, hp, params, grads, slots, step }: StepArgs<AdamaxHyperparams>): Record<string, number> {
  const { r, fma } = dtypeOps(dtype);
  const t = Math.fround(step + 1); // :212 step_t += 1
  const clr = hp.lr / (1 - hp.beta1 ** t); // :233-234 host double
  const wd = r(hp.weight_decay), eps = r(hp.eps), negClr = r(-clr);
  const b1 = r(hp.beta1), oneMinusB1 = r(1 - hp.beta1), b2 = r(hp.beta2);
  const sign = hp.maximize ? -1 : 1;
  const m = slots.exp_avg!, u = slots.exp_inf!;
  const n = params.length;
  for (let i = 0; i < n; i++) {
    const p = params[i]!;
    let g = sign * grads[i]!; // :207
    if (hp.weight_decay !== 0) g = fma(p, wd, g); // :216
    const mi = fma(g, oneMinusB1, r(m[i]! * b1)); // :225 exp_avg.mul_(beta1).add_(grad, alpha=1-beta1)
    m[i] = mi;
    const ui = Math.max(r(u[i]! * b2), r(Math.abs(g) + eps)); // :227-231 cat([exp_inf*beta2, |g|+eps]).amax
    u[i] = ui;
    params[i] = r(p + r(r(negClr * mi) / ui)); // :236 param.addcdiv_(exp_avg, exp_inf, value=-clr)
  }
  return {};
}

export const adamax: OptimizerDef<AdamaxHyperparams> = {
  name: 'adamax',
  torch: 'torch.optim.Adamax',
  description: 'Adamax (Kingma and Ba 2015): Adam with the infinity norm in place of the second moment.',
  hyperparams: {
    lr: nonNegative(0.002, 'Learning rate (torch `lr`).'),
    beta1: beta(0.9, 'Decay of the first moment (torch `betas[0]`), in [0, 1).'),
    beta2: beta(0.999, 'Decay of the infinity norm (torch `betas[1]`), in [0, 1).'),
    eps: nonNegative(1e-8, 'Added to |g| before the max (torch `eps`).'),
    weight_decay: nonNegative(0, 'L2 penalty added to the gradient (torch `weight_decay`).'),
    maximize: MAXIMIZE,
  },
  slots: [
    { name: 'exp_avg', description: 'First moment (torch `exp_avg`).', present: () => true, initial: () => 0 },
    { name: 'exp_inf', description: 'Exponentially weighted infinity norm (torch `exp_inf`).', present: () => true, initial: () => 0, nonNegative: true },
  ],
  scalars: [],
  stepCounter: 'float32',
  step,
};
