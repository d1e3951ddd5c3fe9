// torch.optim.Adadelta, torch 1.13 single-tensor path (adadelta.py:189-206).

import { dtypeOps } from '../dtype-ops.ts';
import { MAXIMIZE, nonNegative, type OptimizerDef, type StepArgs } from '../optimizer.ts';

export interface AdadeltaHyperparams {
  [key: string]: number | boolean;
  lr: number;
  rho: number;
  eps: number;
  weight_decay: number;
  maximize: boolean;
}

/**
 * g = ±grad (+ wd·p); v = ρ·v + (1-ρ)·g²; Δ = sqrt(u + eps)/sqrt(v + eps)·g (eps inside both
 * roots); u = ρ·u + (1-ρ)·Δ²; p -= lr·Δ.
 */
function step({ dtype, hp, params, grads, slots }: StepArgs<AdadeltaHyperparams>): Record<string, number> {
  const { r, fma } = dtypeOps(dtype);
  const wd = r(hp.weight_decay), eps = r(hp.eps), negLr = r(-hp.lr);
  const rho = r(hp.rho), oneMinusRho = r(1 - hp.rho);
  const sign = hp.maximize ? -1 : 1;
  const sq = slots.square_avg!, acc = slots.acc_delta!;
  const n = params.length;
  for (let i = 0; i < n; i++) {
    const p = params[i]!;
    let g = sign * grads[i]!; // :190
    if (hp.weight_decay !== 0) g = fma(p, wd, g); // :193
    const v = fma(r(oneMinusRho * g), g, r(sq[i]! * rho)); // :200 square_avg.mul_(rho).addcmul_(g, g, value=1-rho)
    sq[i] = v;
    const std = r(Math.sqrt(r(v + eps))); // :201 square_avg.add(eps).sqrt_()
    const delta = r(r(r(Math.sqrt(r(acc[i]! + eps))) / std) * g); // :202 acc_delta.add(eps).sqrt_().div_(std).mul_(grad)
    acc[i] = fma(r(oneMinusRho * delta), delta, r(acc[i]! * rho)); // :203 acc_delta.mul_(rho).addcmul_(delta, delta, value=1-rho)
    params[i] = fma(delta, negLr, p); // :206 param.add_(delta, alpha=-lr)
  }
  return {};
}

export const adadelta: OptimizerDef<AdadeltaHyperparams> = {
  name: 'adadelta',
  torch: 'torch.optim.Adadelta',
  description: 'Adadelta (Zeiler 2012): steps scaled by the ratio of running root mean squares of updates and gradients.',
  hyperparams: {
    lr: nonNegative(1.0, 'Scale applied to the delta (torch `lr`, default 1.0).'),
    rho: { type: 'number', default: 0.9, min: 0, max: 1, description: 'Decay of the running averages (torch `rho`), in [0, 1].' },
    eps: nonNegative(1e-6, 'Added inside both square roots (torch `eps`).'),
    weight_decay: nonNegative(0, 'L2 penalty added to the gradient (torch `weight_decay`).'),
    maximize: MAXIMIZE,
  },
  slots: [
    { name: 'square_avg', description: 'Running average of the squared gradient (torch `square_avg`).', present: () => true, initial: () => 0, nonNegative: true },
    { name: 'acc_delta', description: 'Running average of the squared delta (torch `acc_delta`).', present: () => true, initial: () => 0, nonNegative: true },
  ],
  scalars: [],
  stepCounter: 'integer',
  step,
};
