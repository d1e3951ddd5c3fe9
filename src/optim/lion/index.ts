// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2; optax's
// `lion`) as an OptimizerDef: a fused, in-place single-tensor step over flat typed arrays. torch has
// no Lion, so the operation order is ours (written the way torch's own kernels would run it) and
// test/fixtures/optim/independent.py checks it bit for bit (README.md there, "Lion").

import { fma32, fma64 } from '../fma.ts';
import type { FloatArray, OptimizerDef, StepArgs } from '../optimizer.ts';

/** Lion's hyperparameters (optax's `b1`/`b2` named `beta1`/`beta2`, as torch names betas). */
export type LionHyperparams = {
  lr: number;
  beta1: number;
  beta2: number;
  weight_decay: number;
  maximize: boolean;
};

/**
 * One step per element, in the dtype (s(x) = the double x rounded to the dtype, as torch rounds a
 * Python float handed to a float32 kernel; fma = one rounding, as torch's AVX2 `add_(alpha)`):
 *
 * ```
 * g = -grad if maximize else grad                 # negated first, as torch's maximize
 * c = fma(g, s(1 - beta1), exp_avg * s(beta1))    # exp_avg.mul(beta1).add(g, alpha=1-beta1), a new tensor
 * u = sign(c)                                     # -1, 0 or +1: sign(0) = 0 leaves the param alone
 * if weight_decay != 0: u = fma(p, s(wd), u)      # u.add_(p, alpha=wd): the OLD param, decoupled decay
 * p = fma(u, s(-lr), p)                           # p.add_(u, alpha=-lr):  p - lr*(sign(c) + wd*p)
 * exp_avg = fma(g, s(1 - beta2), exp_avg * s(beta2))   # exp_avg.mul_(beta2).add_(g, alpha=1-beta2)
 * ```
 *
 * The decay is the paper's and optax's (`add_decayed_weights` before `scale_by_learning_rate`):
 * lr·wd·p is subtracted within the same update as lr·sign(c), from the param before the step; it is
 * not lion-pytorch's separate `p.mul_(1 - lr*wd)` first (same math, one rounding fewer).
 */
function kernel32(hp: LionHyperparams, p: Float32Array, grads: Float32Array, m: Float32Array): void {
  const f = Math.fround;
  const b1 = f(hp.beta1), oneMinusB1 = f(1 - hp.beta1);
  const b2 = f(hp.beta2), oneMinusB2 = f(1 - hp.beta2);
  const wd = f(hp.weight_decay), negLr = f(-hp.lr);
  const decay = hp.weight_decay !== 0;
  const sign = hp.maximize ? -1 : 1;
  const n = p.length;
  for (let i = 0; i < n; i++) {
    const g = sign * grads[i]!;
    const mi = m[i]!;
    const c = fma32(g, oneMinusB1, f(mi * b1));
    let u = c > 0 ? 1 : c < 0 ? -1 : 0;
    const pi = p[i]!;
    if (decay) u = fma32(pi, wd, u);
    p[i] = fma32(u, negLr, pi);
    m[i] = fma32(g, oneMinusB2, f(mi * b2));
  }
}

/** The same order in float64, fused multiply-adds emulated in double (fma64). */
function kernel64(hp: LionHyperparams, p: Float64Array, grads: Float64Array, m: Float64Array): void {
  const b1 = hp.beta1, oneMinusB1 = 1 - hp.beta1;
  const b2 = hp.beta2, oneMinusB2 = 1 - hp.beta2;
  const wd = hp.weight_decay, negLr = -hp.lr;
  const decay = hp.weight_decay !== 0;
  const sign = hp.maximize ? -1 : 1;
  const n = p.length;
  for (let i = 0; i < n; i++) {
    const g = sign * grads[i]!;
    const mi = m[i]!;
    const c = fma64(g, oneMinusB1, mi * b1);
    let u = c > 0 ? 1 : c < 0 ? -1 : 0;
    const pi = p[i]!;
    if (decay) u = fma64(pi, wd, u);
    p[i] = fma64(u, negLr, pi);
    m[i] = fma64(g, oneMinusB2, mi * b2);
  }
}

function step({ dtype, hp, params, grads, slots }: StepArgs<LionHyperparams>): Record<string, number> {
  const m = slots.exp_avg as FloatArray;
  if (dtype === 'float32') kernel32(hp, params as Float32Array, grads as Float32Array, m as Float32Array);
  else kernel64(hp, params as Float64Array, grads as Float64Array, m as Float64Array);
  return {};
}

/**
 * Lion: p -= lr·(sign(β1·m + (1-β1)·g) + wd·p); m = β2·m + (1-β2)·g. One state slot, `exp_avg`
 * (zeros), the name lion-pytorch's state_dict uses (optax: `mu`).
 *
 * No step counter (`stepCounter: 'none'`): nothing in the update depends on the step (no bias
 * correction), and torch-style implementations (lion-pytorch) keep none in their state, as SGD does.
 * optax's int32 `count` exists only for schedules, which this API applies to `lr` before the step.
 */
export const lion: OptimizerDef<LionHyperparams> = {
  name: 'lion',
  torch: 'optax.lion (torch has no Lion)',
  description:
    'Lion (Chen et al. 2023, Symbolic Discovery of Optimization Algorithms): the sign of an interpolation between momentum and gradient, with decoupled weight decay. optax.lion semantics; torch has no Lion.',
  hyperparams: {
    lr: { type: 'number', default: 1e-4, min: 0, description: 'Learning rate (optax `learning_rate`), >= 0. Every element moves by exactly lr (plus the decay).' },
    beta1: {
      type: 'number',
      default: 0.9,
      min: 0,
      max: 1,
      description: 'Weight of exp_avg in the interpolation whose sign is the update (optax `b1`), in [0, 1].',
    },
    beta2: { type: 'number', default: 0.99, min: 0, max: 1, description: 'Decay of exp_avg (optax `b2`), in [0, 1].' },
    weight_decay: {
      type: 'number',
      default: 0,
      min: 0,
      description: 'Decoupled weight decay: lr·weight_decay·p is subtracted with the update (optax `weight_decay`, whose default is 1e-3; 0 here), >= 0.',
    },
    maximize: { type: 'boolean', default: false, description: 'Ascend instead of descend (torch `maximize`): the gradient is negated first.' },
  },
  slots: [
    {
      name: 'exp_avg',
      description: 'Momentum m = β2·m + (1-β2)·g (optax `mu`; lion-pytorch `exp_avg`).',
      present: () => true,
      initial: () => 0,
    },
  ],
  scalars: [],
  stepCounter: 'none',
  step,
};

export default lion;
