// torch.optim.Adam and torch.optim.AdamW in the optimizer interface, with torch's state names
// (exp_avg, exp_avg_sq, max_exp_avg_sq). The kernels are src/optim/adam.ts's (WebAssembly SIMD
// when registered); `/v1/adam/step` keeps its own route and m/v/v_max names, `adam` here serves the
// catalogue and hosted optimizers, `adamw` the generic `/v1/adamw/step` with AdamW's defaults.

import { adamStepInPlace, type AdamHyperparams } from '../adam.ts';
import { beta, flag, MAXIMIZE, nonNegative, type OptimizerDef, type SlotDef, type StepArgs } from '../optimizer.ts';

export interface AdamDefHyperparams {
  [key: string]: number | boolean;
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weight_decay: number;
  amsgrad: boolean;
  maximize: boolean;
}

function adamSlots<H extends AdamDefHyperparams>(): Array<SlotDef<H>> {
  return [
    { name: 'exp_avg', description: 'First moment (torch `exp_avg`), without bias correction.', present: () => true, initial: () => 0 },
    { name: 'exp_avg_sq', description: 'Second moment (torch `exp_avg_sq`), without bias correction.', present: () => true, initial: () => 0, nonNegative: true },
    {
      name: 'max_exp_avg_sq',
      description: 'Running max of exp_avg_sq (torch `max_exp_avg_sq`), made by a step with amsgrad; while amsgrad is off it is kept unchanged, unread.',
      present: (hp) => hp.amsgrad,
      initial: () => 0,
      nonNegative: true,
    },
  ];
}

function stepWith(decoupled: (hp: AdamDefHyperparams) => boolean) {
  return ({ dtype, hp, params, grads, slots, step }: StepArgs<AdamDefHyperparams>): Record<string, number> => {
    const hyperparams: AdamHyperparams = {
      lr: hp.lr,
      beta1: hp.beta1,
      beta2: hp.beta2,
      eps: hp.eps,
      weight_decay: hp.weight_decay,
      decoupled_weight_decay: decoupled(hp),
      amsgrad: hp.amsgrad,
      maximize: hp.maximize,
    };
    const state = { step, m: slots.exp_avg!, v: slots.exp_avg_sq!, vMax: hp.amsgrad ? slots.max_exp_avg_sq! : null };
    adamStepInPlace({ dtype, hyperparams, params, grads, state });
    return {};
  };
}

const COMMON = {
  lr: nonNegative(0.001, 'Learning rate (torch `lr`).'),
  beta1: beta(0.9, 'Decay of the first moment (torch `betas[0]`), in [0, 1).'),
  beta2: beta(0.999, 'Decay of the second moment (torch `betas[1]`), in [0, 1).'),
  eps: nonNegative(1e-8, 'Added to the bias-corrected sqrt(v) (torch `eps`).'),
};

export interface AdamFlagHyperparams extends AdamDefHyperparams {
  decoupled_weight_decay: boolean;
}

export const adam: OptimizerDef<AdamFlagHyperparams> = {
  name: 'adam',
  torch: 'torch.optim.Adam',
  description: 'Adam (Kingma and Ba 2015), or AdamW with `decoupled_weight_decay`.',
  hyperparams: {
    ...COMMON,
    weight_decay: nonNegative(0, 'L2 penalty added to the gradient, or decoupled decay with decoupled_weight_decay (torch `weight_decay`).'),
    decoupled_weight_decay: flag(false, 'AdamW: p *= 1 - lr·weight_decay before the update instead of an L2 term.'),
    amsgrad: flag(false, 'AMSGrad: normalise by the running max of exp_avg_sq (torch `amsgrad`).'),
    maximize: MAXIMIZE,
  },
  slots: adamSlots(),
  scalars: [],
  stepCounter: 'float32',
  step: stepWith((hp) => hp.decoupled_weight_decay === true) as OptimizerDef<AdamFlagHyperparams>['step'],
};

export const adamw: OptimizerDef<AdamDefHyperparams> = {
  name: 'adamw',
  torch: 'torch.optim.AdamW',
  description: 'AdamW (Loshchilov and Hutter 2019): Adam with decoupled weight decay, p *= 1 - lr·weight_decay before each update.',
  hyperparams: {
    ...COMMON,
    weight_decay: nonNegative(0.01, 'Decoupled weight decay (torch `weight_decay`, default 1e-2 in AdamW).'),
    amsgrad: flag(false, 'AMSGrad: normalise by the running max of exp_avg_sq (torch `amsgrad`).'),
    maximize: MAXIMIZE,
  },
  slots: adamSlots(),
  scalars: [],
  stepCounter: 'float32',
  step: stepWith(() => true),
};
