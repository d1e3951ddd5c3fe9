// torch.optim.SGD, torch 1.13 single-tensor path (sgd.py:225-245).

import { dtypeOps } from '../dtype-ops.ts';
import { flag, MAXIMIZE, nonNegative, type OptimizerDef, type StepArgs } from '../optimizer.ts';

export interface SgdHyperparams {
  [key: string]: number | boolean;
  lr: number;
  momentum: number;
  dampening: number;
  weight_decay: number;
  nesterov: boolean;
  maximize: boolean;
}

/**
 * g = ±grad (+ wd·p); with momentum: buf = g on its first step (a clone: no dampening), else
 * buf = momentum·buf + (1-dampening)·g, and g = g + momentum·buf (nesterov) or buf; p -= lr·g.
 */
function step({ dtype, hp, params, grads, slots, fresh }: StepArgs<SgdHyperparams>): Record<string, number> {
  const { r, fma } = dtypeOps(dtype);
  const wd = r(hp.weight_decay), negLr = r(-hp.lr);
  const mom = r(hp.momentum), oneMinusDamp = r(1 - hp.dampening);
  const sign = hp.maximize ? -1 : 1;
  const buf = hp.momentum !== 0 ? slots.momentum_buffer! : null;
  const clone = fresh.has('momentum_buffer');
  const n = params.length;
  for (let i = 0; i < n; i++) {
    const p = params[i]!;
    let g = sign * grads[i]!; // :226 -grad if maximize
    if (hp.weight_decay !== 0) g = fma(p, wd, g); // :229 d_p.add(param, alpha=wd)
    if (buf !== null) {
      // :235 torch.clone(d_p) on the first step; :238 buf.mul_(momentum).add_(d_p, alpha=1-dampening)
      const b = clone ? g : fma(g, oneMinusDamp, r(buf[i]! * mom));
      buf[i] = b;
      g = hp.nesterov ? fma(b, mom, g) : b; // :241 d_p.add(buf, alpha=momentum) / :243 d_p = buf
    }
    params[i] = fma(g, negLr, p); // :245 param.add_(d_p, alpha=-lr)
  }
  return {};
}

export const sgd: OptimizerDef<SgdHyperparams> = {
  name: 'sgd',
  torch: 'torch.optim.SGD',
  description:
    'Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and L2 weight decay. `lr` is required, as in torch.',
  hyperparams: {
    lr: nonNegative(undefined, 'Learning rate (torch `lr`), required: torch.optim.SGD has no default.'),
    momentum: nonNegative(0, 'Momentum factor (torch `momentum`); 0 keeps no buffer.'),
    dampening: {
      type: 'number',
      default: 0,
      description: 'Dampening for momentum (torch `dampening`), not range-checked, as in torch; ignored on the step that creates the buffer.',
    },
    weight_decay: nonNegative(0, 'L2 penalty added to the gradient (torch `weight_decay`).'),
    nesterov: flag(false, 'Nesterov momentum (torch `nesterov`); needs momentum > 0 and dampening = 0.'),
    maximize: MAXIMIZE,
  },
  check(hp) {
    if (hp.nesterov && (hp.momentum <= 0 || hp.dampening !== 0)) {
      return { field: 'nesterov', message: 'Nesterov momentum requires a momentum and zero dampening (as torch.optim.SGD).' };
    }
    return null;
  },
  slots: [
    {
      name: 'momentum_buffer',
      description: 'The momentum buffer (torch `momentum_buffer`); kept only when momentum != 0, created from the first gradient.',
      present: (hp) => hp.momentum !== 0,
      initial: () => null,
    },
  ],
  scalars: [],
  stepCounter: 'none',
  step,
};
