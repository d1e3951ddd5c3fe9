// One step of any registry optimizer over a flat state (params, slots by torch's names, scalars,
// step count), in place: what a hosted optimizer does at each step and when it replays its
// journal. Adam and AdamW run on the WebAssembly kernel given (a hosted optimizer's own
// instance, whose memory holds its arrays: no copy); every other optimizer on its definition's
// step (stepTensors: one call, or one per tensor for a perTensor optimizer like Muon).
// Pure: no HTTP, no storage. The caller has checked shapes, finiteness and hyperparameters.

import { adamStepInPlace, type AdamHyperparams, type AdamKernel } from './adam.ts';
import { stepTensors, type Dtype, type FloatArray, type Hyperparams, type OptimizerDef, type OptimizerState, type TensorSpan } from './optimizer.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;

export interface StateStepArgs {
  def: AnyDef;
  dtype: Dtype;
  /** Hyperparameters with `lr` resolved (schedule applied). */
  hp: Hyperparams;
  /** The tensors of the flat arrays (their offsets, sizes and shapes). */
  tensors: readonly TensorSpan[];
  params: FloatArray;
  grads: FloatArray;
  /** Written in place; a lazily created slot is allocated here (see stepInPlace). */
  state: OptimizerState;
  /** The Adam kernel to run Adam and AdamW on (null: the registered one, or JS). */
  adamKernel?: AdamKernel | null;
}

/** Whether `def` is Adam or AdamW, which run on the Adam kernel (WebAssembly SIMD when given). */
export const usesAdamKernel = (def: AnyDef) => def.name === 'adam' || def.name === 'adamw';

/** One step in place; returns the state. */
export function stepState(args: StateStepArgs): OptimizerState {
  const { def, dtype, hp, tensors, params, grads, state } = args;
  if (usesAdamKernel(def)) {
    const hyperparams: AdamHyperparams = {
      lr: hp.lr as number,
      beta1: hp.beta1 as number,
      beta2: hp.beta2 as number,
      eps: hp.eps as number,
      weight_decay: hp.weight_decay as number,
      decoupled_weight_decay: def.name === 'adamw' || hp.decoupled_weight_decay === true,
      amsgrad: hp.amsgrad === true,
      maximize: hp.maximize === true,
    };
    const slot = (name: string): FloatArray => {
      const a = state.slots[name];
      if (!a) throw new Error(`stepState: ${def.name} needs its ${name} slot`);
      return a;
    };
    const adam = { step: state.step, m: slot('exp_avg'), v: slot('exp_avg_sq'), vMax: hyperparams.amsgrad ? slot('max_exp_avg_sq') : null };
    adamStepInPlace({ dtype, hyperparams, params, grads, state: adam }, args.adamKernel);
    state.step = adam.step;
    return state;
  }
  return stepTensors({ def, dtype, hp, params, grads, state, tensors });
}
