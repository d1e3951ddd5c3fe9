// The fused step of one run of tensors, in place, that a hosted optimizer gives the engine
// (src/optim/engine.ts) at each step and uses when it replays its journal. Adam and AdamW run on
// the WebAssembly kernel given (a hosted optimizer's own instance, whose memory holds its arrays:
// no copy); every other optimizer on its definition's step.
// Pure: no HTTP, no storage. The caller has checked shapes, finiteness and hyperparameters.

import { adamStepInPlace, type AdamHyperparams, type AdamKernel } from './adam.ts';
import type { Hyperparams, OptimizerDef, StepArgs } from './optimizer.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;

/** Whether `def` is Adam or AdamW, which run on the Adam kernel (WebAssembly SIMD when given). */
export const usesAdamKernel = (def: AnyDef) => def.name === 'adam' || def.name === 'adamw';

/** Adam's kernel hyperparameters from `def`'s (AdamW decouples its weight decay). */
function adamHyperparams(def: AnyDef, hp: Hyperparams): AdamHyperparams {
  return {
    lr: hp.lr as number,
    beta1: hp.beta1 as number,
    beta2: hp.beta2 as number,
    eps: hp.eps as number,
    weight_decay: hp.weight_decay as number,
    decoupled_weight_decay: def.name === 'adamw' || hp.decoupled_weight_decay === true,
    amsgrad: hp.amsgrad === true,
    maximize: hp.maximize === true,
  };
}

/**
 * `def`'s fused step of one run of tensors (src/optim/engine.ts), with Adam and AdamW on the kernel
 * given (a hosted optimizer's own instance, whose memory holds the arrays: no copy).
 */
export function stepRunFor(def: AnyDef, adamKernel: AdamKernel | null): (args: StepArgs<Hyperparams>) => Record<string, number> {
  if (!usesAdamKernel(def)) return (args) => def.step(args);
  return ({ dtype, hp, params, grads, slots, step }) => {
    const hyperparams = adamHyperparams(def, hp);
    const state = { step, m: slots.exp_avg!, v: slots.exp_avg_sq!, vMax: hyperparams.amsgrad ? slots.max_exp_avg_sq! : null };
    adamStepInPlace({ dtype, hyperparams, params, grads, state }, adamKernel);
    return {};
  };
}
