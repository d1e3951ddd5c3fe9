// torch.optim.RMSprop, torch 1.13 single-tensor path (rmsprop.py:232-268).

import { dtypeOps } from '../dtype-ops.ts';
import { flag, MAXIMIZE, nonNegative, type OptimizerDef, type StepArgs } from '../optimizer.ts';

export interface RmspropHyperparams {
  [key: string]: number | boolean;
  lr: number;
  alpha: number;
  eps: number;
  weight_decay: number;
  momentum: number;
  centered: boolean;
  maximize: boolean;
}

/**
 * g = ±grad (+ wd·p); v = α·v + (1-α)·g²; centered: ḡ = α·ḡ + (1-α)·g, avg = sqrt(v - ḡ²) + eps,
 * else avg = sqrt(v) + eps; momentum: buf = μ·buf + g/avg, p -= lr·buf; else p -= lr·g/avg.
 */
function step({ dtype, hp, params, grads, slots }: StepArgs<RmspropHyperparams>): Record<string, number> {
  const { r, fma } = dtypeOps(dtype);
  const wd = r(hp.weight_decay), negLr = r(-hp.lr), eps = r(hp.eps);
  const alpha = r(hp.alpha), oneMinusAlpha = r(1 - hp.alpha), mom = r(hp.momentum);
  const negOne = r(-1);
  const sign = hp.maximize ? -1 : 1;
  const sq = slots.square_avg!;
  const gAvg = hp.centered ? slots.grad_avg! : null;
  const buf = hp.momentum > 0 ? slots.momentum_buffer! : null;
  const n = params.length;
  for (let i = 0; i < n; i++) {
    const p = params[i]!;
    let g = sign * grads[i]!; // :233
    if (hp.weight_decay !== 0) g = fma(p, wd, g); // :237 grad.add(param, alpha=wd)
    const v = fma(r(oneMinusAlpha * g), g, r(sq[i]! * alpha)); // :245 mul_(alpha).addcmul_(g, g, value=1-alpha)
    sq[i] = v;
    let avg: number;
    if (gAvg !== null) {
      const ga = fma(g, oneMinusAlpha, r(gAvg[i]! * alpha)); // :251 mul_(alpha).add_(g, alpha=1-alpha)
      gAvg[i] = ga;
      avg = r(Math.sqrt(fma(r(negOne * ga), ga, v))); // :252 addcmul(ga, ga, value=-1).sqrt_()
    } else {
      avg = r(Math.sqrt(v)); // :254 square_avg.sqrt()
    }
    avg = r(avg + eps); // :259 add_(eps)
    if (buf !== null) {
      const b = r(r(buf[i]! * mom) + r(g / avg)); // :265 mul_(momentum).addcdiv_(g, avg)
      buf[i] = b;
      params[i] = fma(b, negLr, p); // :266 param.add_(buf, alpha=-lr)
    } else {
      params[i] = r(p + r(r(negLr * g) / avg)); // :268 param.addcdiv_(g, avg, value=-lr)
    }
  }
  return {};
}

export const rmsprop: OptimizerDef<RmspropHyperparams> = {
  name: 'rmsprop',
  torch: 'torch.optim.RMSprop',
  description: 'RMSprop (Hinton): divides the gradient by a running root mean square, optionally centered and with momentum.',
  hyperparams: {
    lr: nonNegative(0.01, 'Learning rate (torch `lr`).'),
    alpha: nonNegative(0.99, 'Smoothing constant of the squared-gradient average (torch `alpha`); torch accepts any alpha >= 0.'),
    eps: nonNegative(1e-8, 'Added to the root mean square, after the square root (torch `eps`).'),
    weight_decay: nonNegative(0, 'L2 penalty added to the gradient (torch `weight_decay`).'),
    momentum: nonNegative(0, 'Momentum factor (torch `momentum`); 0 keeps no buffer.'),
    centered: flag(false, 'Normalise by the estimated variance instead of the raw second moment (torch `centered`).'),
    maximize: MAXIMIZE,
  },
  slots: [
    {
      name: 'square_avg',
      description: 'Running average of the squared gradient (torch `square_avg`).',
      present: () => true,
      initial: () => 0,
      nonNegative: true,
    },
    {
      name: 'momentum_buffer',
      description: 'Momentum buffer (torch `momentum_buffer`), made by a step with momentum > 0; while momentum is 0 it is kept unchanged, unread.',
      present: (hp) => hp.momentum > 0,
      initial: () => 0,
    },
    {
      name: 'grad_avg',
      description: 'Running average of the gradient (torch `grad_avg`), made by a centered step; while centered is off it is kept unchanged, unread.',
      present: (hp) => hp.centered,
      initial: () => 0,
    },
  ],
  scalars: [],
  stepCounter: 'integer',
  step,
};
