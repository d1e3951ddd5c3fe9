// torch.optim.Adagrad, torch 1.13 single-tensor path, dense gradients (adagrad.py:244-279).

import { dtypeOps } from '../dtype-ops.ts';
import { MAXIMIZE, nonNegative, type OptimizerDef, type StepArgs } from '../optimizer.ts';

export interface AdagradHyperparams {
  [key: string]: number | boolean;
  lr: number;
  lr_decay: number;
  weight_decay: number;
  initial_accumulator_value: number;
  eps: number;
  maximize: boolean;
}

/** g = ±grad (+ wd·p); clr = lr / (1 + (t-1)·lr_decay); sum += g²; p -= clr·g / (sqrt(sum) + eps). */
function step({ dtype, hp, params, grads, slots, step }: StepArgs<AdagradHyperparams>): Record<string, number> {
  const { r, fma } = dtypeOps(dtype);
  const t = Math.fround(step + 1); // :246 state_step += 1 (float32 tensor)
  const clr = hp.lr / (1 + (t - 1) * hp.lr_decay); // :257 host double
  const wd = r(hp.weight_decay), eps = r(hp.eps), negClr = r(-clr);
  const sign = hp.maximize ? -1 : 1;
  const sum = slots.sum!;
  const n = params.length;
  for (let i = 0; i < n; i++) {
    const p = params[i]!;
    let g = sign * grads[i]!; // :248
    if (hp.weight_decay !== 0) g = fma(p, wd, g); // :255 grad.add(param, alpha=wd)
    const s = fma(g, g, sum[i]!); // :277 state_sum.addcmul_(grad, grad, value=1)
    sum[i] = s;
    const std = r(r(Math.sqrt(s)) + eps); // :278 state_sum.sqrt().add_(eps)
    params[i] = r(p + r(r(negClr * g) / std)); // :279 param.addcdiv_(grad, std, value=-clr)
  }
  return {};
}

export const adagrad: OptimizerDef<AdagradHyperparams> = {
  name: 'adagrad',
  torch: 'torch.optim.Adagrad',
  description: 'Adagrad (Duchi et al. 2011): per-element learning rates from the sum of squared gradients.',
  hyperparams: {
    lr: nonNegative(0.01, 'Learning rate (torch `lr`).'),
    lr_decay: nonNegative(0, 'Learning-rate decay: step t uses lr / (1 + (t-1)·lr_decay) (torch `lr_decay`).'),
    weight_decay: nonNegative(0, 'L2 penalty added to the gradient (torch `weight_decay`).'),
    initial_accumulator_value: nonNegative(0, 'Starting value of the sum of squares (torch `initial_accumulator_value`).'),
    eps: nonNegative(1e-10, 'Added to sqrt(sum) (torch `eps`).'),
    maximize: MAXIMIZE,
  },
  slots: [
    {
      name: 'sum',
      description: 'Sum of squared gradients (torch `sum`), starting at initial_accumulator_value.',
      present: () => true,
      initial: (hp) => hp.initial_accumulator_value,
      nonNegative: true,
    },
  ],
  scalars: [],
  stepCounter: 'float32',
  step,
};
