// One interface for every optimizer (optax's init/update pair, with torch's state names): its
// hyperparameters with torch's names, defaults and bounds; its state slots (tensors like
// `exp_avg`, `momentum_buffer`) and scalars (`mu_product`); how torch counts steps; and a fused,
// in-place single-tensor step in torch 1.13's exact operation order. Schemas, routes, hosted
// storage and snapshots are derived from these definitions (src/optim/registry.ts).
// Pure: no HTTP, no JSON, no storage.

import type { SparseRows } from './sparse.ts';

export type Dtype = 'float32' | 'float64';
export type FloatArray = Float32Array | Float64Array;

/** One hyperparameter: a number with bounds, a flag, or one of a few strings. */
export type HyperparamDef =
  | {
      type: 'number';
      /** torch's default; absent when torch requires the argument (SGD's `lr`). */
      default?: number;
      /** Inclusive lower bound, or exclusive with `minExclusive`. */
      min?: number;
      minExclusive?: boolean;
      max?: number;
      maxExclusive?: boolean;
      /** Whole numbers only (torch takes a Python int, e.g. Muon's `ns_steps` goes to `range()`). */
      integer?: boolean;
      /** What it does, naming torch's argument. */
      description: string;
    }
  | { type: 'boolean'; default: boolean; description: string }
  /** A string from a fixed list (e.g. Muon's `adjust_lr_fn`). */
  | { type: 'enum'; values: readonly string[]; default: string; description: string };

export type Hyperparams = Record<string, number | boolean | string>;

/** A number >= 0 (torch's `if not 0.0 <= x: raise ValueError`). */
export function nonNegative(defaultValue: number | undefined, description: string): HyperparamDef {
  return { type: 'number', ...(defaultValue === undefined ? {} : { default: defaultValue }), min: 0, description };
}

/** A decay rate in [0, 1) (torch's betas). */
export function beta(defaultValue: number, description: string): HyperparamDef {
  return { type: 'number', default: defaultValue, min: 0, max: 1, maxExclusive: true, description };
}

/** A flag. */
export function flag(defaultValue: boolean, description: string): HyperparamDef {
  return { type: 'boolean', default: defaultValue, description };
}

/** torch's `maximize`, which every optimizer that has it applies first. */
export const MAXIMIZE = flag(false, 'Ascend the objective instead of descending it (torch `maximize`): the gradient is negated first.');

/** A state tensor of the parameter's shape, named as torch's `state_dict` names it. */
export interface SlotDef<H extends Hyperparams> {
  name: string;
  description: string;
  /** Whether torch keeps this slot with these hyperparameters (e.g. `momentum_buffer` only with momentum). */
  present(hp: H): boolean;
  /**
   * The value a fresh slot holds, or `null` for a slot torch creates lazily from the first
   * gradient (SGD's `momentum_buffer` is a clone of it): the step then receives it `fresh`.
   */
  initial(hp: H): number | null;
  /** A second moment, a sum of squares or a max of magnitudes: never negative (a sent state is checked). */
  nonNegative?: boolean;
}

/** A scalar state entry (e.g. NAdam's `mu_product`), with its fresh value. */
export interface ScalarDef {
  name: string;
  description: string;
  initial: number;
}

/**
 * How torch keeps the step count: a float32 tensor (stops counting at 2^24), a Python int, or
 * not at all (SGD). The API always reports completed steps; this tells how they saturate.
 */
export type StepCounter = 'float32' | 'integer' | 'none';

/** The state of one optimizer over a flat array of params. */
export interface OptimizerState {
  /** Completed steps. */
  step: number;
  /** Slot arrays (the params' length); null for a lazily created slot that does not exist yet. */
  slots: Record<string, FloatArray | null>;
  scalars: Record<string, number>;
}

/** Arguments of one in-place step. */
export interface StepArgs<H extends Hyperparams> {
  dtype: Dtype;
  /** The hyperparameters, `lr` already resolved (schedule applied). */
  hp: H;
  params: FloatArray;
  grads: FloatArray;
  /** The tensor's shape (params.length elements); most optimizers ignore it, Muon needs 2-D. */
  shape: readonly number[];
  /** Present slots (same length as params); written in place. */
  slots: Record<string, FloatArray>;
  /** Lazily created slots that do not exist yet: the step initialises them (see SlotDef.initial). */
  fresh: ReadonlySet<string>;
  /** Completed steps before this one. */
  step: number;
  /** Scalar state before this step; the step returns the new values. */
  scalars: Record<string, number>;
}

export interface OptimizerDef<H extends Hyperparams = Hyperparams> {
  /** The API name (`sgd`, `rmsprop`, …). */
  name: string;
  /** torch's class, e.g. `torch.optim.SGD`. */
  torch: string;
  description: string;
  hyperparams: { [K in keyof H]: HyperparamDef };
  /** Cross-field rules every param group must keep (torch's step would fail otherwise, e.g. Muon's ns_steps): a message, or null. */
  check?(hp: H): { field: string; message: string } | null;
  /**
   * Cross-field rules torch's constructor enforces on its defaults only (SGD: nesterov needs a
   * momentum and zero dampening): checked on the top-level hyperparameters, not on a param group,
   * which torch's `add_param_group` does not validate. A message, or null.
   */
  constructorCheck?(hp: H): { field: string; message: string } | null;
  /** Tensors the optimizer cannot step (e.g. Muon: 2-D only): a message, or null. */
  checkShape?(shape: readonly number[]): string | null;
  slots: ReadonlyArray<SlotDef<H>>;
  scalars: ReadonlyArray<ScalarDef>;
  stepCounter: StepCounter;
  /**
   * Whether the step needs each tensor on its own (Muon orthogonalises a matrix). Elementwise
   * optimizers step every tensor of a tree in one call, which is the same arithmetic.
   */
  perTensor?: boolean;
  /** One step in place on params and slots; returns the new scalars. */
  step(args: StepArgs<H>): Record<string, number>;
  /**
   * Sparse (row) gradients: `only` when the optimizer takes nothing else (SparseAdam), `also`
   * when it takes both; absent when a sparse gradient is refused.
   */
  sparse?: 'only' | 'also';
  /** One step on one tensor from a sparse gradient (rows as sent, not coalesced); returns the new scalars. */
  sparseStep?(args: SparseStepArgs<H>): Record<string, number>;
  /**
   * What torch refuses with a sparse gradient although it takes it dense (Adagrad's weight_decay):
   * the hyperparameter and why, or null.
   */
  checkSparse?(hp: H): { field: string; message: string } | null;
  /** Sparse gradients torch cannot step on a tensor of this shape (`rows` entries): why, or null. */
  checkSparseGrad?(shape: readonly number[], rows: number): string | null;
}

/** Arguments of a sparse step: one whole tensor and its gradient's rows. */
export interface SparseStepArgs<H extends Hyperparams> {
  dtype: Dtype;
  hp: H;
  /** The tensor's params, rows of `grad.rowSize` elements. */
  params: FloatArray;
  grad: SparseRows;
  shape: readonly number[];
  /** Present slots for this tensor. */
  slots: Record<string, FloatArray>;
  /** Lazily created slots this tensor does not hold yet (see SlotDef.initial). */
  fresh: ReadonlySet<string>;
  step: number;
  scalars: Record<string, number>;
}

/** The next step count after `step` completed steps, as the optimizer's counter holds it. */
export function nextStepCount(counter: StepCounter, step: number): number {
  return counter === 'float32' ? Math.fround(step + 1) : step + 1;
}

/** Fresh state for `n` elements: eager slots filled with their initial value, lazy ones null. */
export function initState<H extends Hyperparams>(def: OptimizerDef<H>, hp: H, dtype: Dtype, n: number): OptimizerState {
  const slots: Record<string, FloatArray | null> = {};
  for (const slot of def.slots) {
    if (!slot.present(hp)) continue;
    const initial = slot.initial(hp);
    if (initial === null) slots[slot.name] = null;
    else slots[slot.name] = (dtype === 'float32' ? new Float32Array(n) : new Float64Array(n)).fill(initial);
  }
  return { step: 0, slots, scalars: Object.fromEntries(def.scalars.map((s) => [s.name, s.initial])) };
}

/** Arguments of {@link stepInPlace}. */
export interface StepInPlaceArgs<H extends Hyperparams> {
  def: OptimizerDef<H>;
  dtype: Dtype;
  hp: H;
  params: FloatArray;
  grads: FloatArray;
  shape: readonly number[];
  state: OptimizerState;
}

/** The slots the step works on, allocating missing ones (lazy ones are marked fresh). */
function prepareSlots<H extends Hyperparams>(def: OptimizerDef<H>, dtype: Dtype, hp: H, n: number, state: OptimizerState) {
  const fresh = new Set<string>();
  const slots: Record<string, FloatArray> = {};
  for (const slot of def.slots) {
    if (!slot.present(hp)) continue;
    let a = state.slots[slot.name] ?? null;
    if (a === null) {
      a = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
      const initial = slot.initial(hp);
      // A lazy slot is created by the step itself (from the gradient); an eager one that is
      // missing (e.g. momentum switched on by a PATCH) starts from its initial value.
      if (initial === null) fresh.add(slot.name);
      else a.fill(initial);
      state.slots[slot.name] = a;
    }
    slots[slot.name] = a;
  }
  return { slots, fresh };
}

/**
 * One step in place on `state` (slots created lazily are allocated here); returns the state. The
 * caller has checked shapes and finiteness.
 */
export function stepInPlace<H extends Hyperparams>(args: StepInPlaceArgs<H>): OptimizerState {
  const { def, dtype, hp, params, grads, shape, state } = args;
  const { slots, fresh } = prepareSlots(def, dtype, hp, params.length, state);
  state.scalars = def.step({ dtype, hp, params, grads, shape, slots, fresh, step: state.step, scalars: state.scalars });
  state.step = nextStepCount(def.stepCounter, state.step);
  return state;
}

/** One tensor of a flat tree: where its elements are and its shape. */
export interface TensorSpan {
  offset: number;
  size: number;
  shape: readonly number[];
}

/**
 * One step over a tree of tensors flattened into `params`/`grads`/`state`: a single call for an
 * elementwise optimizer, one call per tensor (on views, with the same step and scalars, as torch
 * steps each parameter) when the optimizer is `perTensor`.
 */
export function stepTensors<H extends Hyperparams>(args: Omit<StepInPlaceArgs<H>, 'shape'> & { tensors: readonly TensorSpan[] }): OptimizerState {
  const { def, dtype, hp, params, grads, state, tensors } = args;
  if (!def.perTensor) return stepInPlace({ ...args, shape: [params.length] });
  const { slots, fresh } = prepareSlots(def, dtype, hp, params.length, state);
  let scalars = state.scalars;
  for (const { offset, size, shape } of tensors) {
    const view = (a: FloatArray) => a.subarray(offset, offset + size);
    const tensorSlots = Object.fromEntries(Object.entries(slots).map(([k, a]) => [k, view(a)]));
    scalars = def.step({ dtype, hp, params: view(params), grads: view(grads), shape, slots: tensorSlots, fresh, step: state.step, scalars: state.scalars });
  }
  state.scalars = scalars;
  state.step = nextStepCount(def.stepCounter, state.step);
  return state;
}
