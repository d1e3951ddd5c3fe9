// Adam and AdamW as pure functions over flat typed arrays, following torch 1.13's single-tensor
// path (`foreach=False`) operation by operation, so float32 results are bit-identical to torch on
// AVX2 CPUs. No JSON, no HTTP: the stateless route, the Durable Object and the benchmark all call this.

import { fma32, fma64 } from './fma.ts';

export type Dtype = 'float32' | 'float64';
export type FloatArray = Float32Array | Float64Array;

/** Adam hyperparameters, named as in torch.optim.Adam (betas split into beta1/beta2). */
export interface AdamHyperparams {
  /** Learning rate (torch `lr`), >= 0. */
  lr: number;
  /** Decay of the first moment (torch `betas[0]`), in [0, 1). */
  beta1: number;
  /** Decay of the second moment (torch `betas[1]`), in [0, 1). */
  beta2: number;
  /** Added to the bias-corrected sqrt(v) (torch `eps`), >= 0. */
  eps: number;
  /** L2 penalty (Adam) or decoupled decay rate (AdamW), >= 0. */
  weight_decay: number;
  /** true: AdamW's p *= 1 - lr*wd; false: Adam's g += wd*p. */
  decoupled_weight_decay: boolean;
  /** Keep the running max of v and normalise by it (torch `amsgrad`). */
  amsgrad: boolean;
  /** Ascend instead of descend (torch `maximize`). */
  maximize: boolean;
}

/** torch.optim.Adam's defaults. */
export const ADAM_DEFAULTS: Readonly<AdamHyperparams> = Object.freeze({
  lr: 0.001,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weight_decay: 0,
  decoupled_weight_decay: false,
  amsgrad: false,
  maximize: false,
});

/** Per-parameter optimizer state, as torch keeps it: moments are stored without bias correction. */
export interface AdamState<A extends FloatArray = FloatArray> {
  /** Completed steps (torch `state["step"]`). */
  step: number;
  /** First moment (torch `exp_avg`). */
  m: A;
  /** Second moment (torch `exp_avg_sq`). */
  v: A;
  /** Running max of v (torch `max_exp_avg_sq`); null unless amsgrad. */
  vMax: A | null;
}

/**
 * torch stores the step count in a float32 scalar tensor, so it stops increasing at 2^24.
 * The next step number after `step` completed steps, as torch computes it.
 */
export function nextStep(step: number): number {
  return Math.fround(step + 1);
}

/** Largest step count torch's float32 counter can hold. */
export const MAX_STEP = 2 ** 24;

/** A new array of the dtype's element type holding `values` (rounded to float32 if needed). */
export function toDtype(dtype: Dtype, values: ArrayLike<number>): FloatArray {
  return dtype === 'float32' ? Float32Array.from(values) : Float64Array.from(values);
}

/** A zeroed array of the dtype's element type. */
export function zeros(dtype: Dtype, n: number): FloatArray {
  return dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
}

/** Fresh state for `n` elements: step 0, zero moments (torch's lazy state init). */
export function initAdamState(dtype: Dtype, n: number, amsgrad: boolean): AdamState {
  return { step: 0, m: zeros(dtype, n), v: zeros(dtype, n), vMax: amsgrad ? zeros(dtype, n) : null };
}

/** Scalars of one step, computed in double exactly as torch's Python code does. */
export interface StepScalars {
  t: number;
  stepSize: number;
  bc2Sqrt: number;
  decay: number;
}

function stepScalars(hp: AdamHyperparams, t: number): StepScalars {
  const bc1 = 1 - hp.beta1 ** t;
  const bc2 = 1 - hp.beta2 ** t;
  return { t, stepSize: hp.lr / bc1, bc2Sqrt: Math.sqrt(bc2), decay: 1 - hp.lr * hp.weight_decay };
}

/** The arrays a kernel reads and writes; `out` may alias the inputs for an in-place step. */
export interface KernelArgs<A extends FloatArray> {
  params: A;
  grads: A;
  m: A;
  v: A;
  vMax: A | null;
  outParams: A;
  outM: A;
  outV: A;
  outVMax: A | null;
}

/**
 * float32 kernel. Every scalar is rounded to float32 as torch does when it hands a Python float
 * to a float32 kernel; `add_(alpha)` and `addcmul_` are fused multiply-adds; every other op is one
 * correctly rounded float32 op (`Math.fround` of the double result is exactly that).
 */
function kernel32(a: KernelArgs<Float32Array>, hp: AdamHyperparams, s: StepScalars): void {
  const f = Math.fround;
  const b1 = f(hp.beta1), oneMinusB1 = f(1 - hp.beta1);
  const b2 = f(hp.beta2), oneMinusB2 = f(1 - hp.beta2);
  const eps = f(hp.eps), wd = f(hp.weight_decay);
  const l2 = !hp.decoupled_weight_decay && hp.weight_decay !== 0;
  const decoupled = hp.decoupled_weight_decay;
  const decay = f(s.decay);
  const bc2Sqrt = f(s.bc2Sqrt);
  const negStepSize = f(-s.stepSize);
  const sign = hp.maximize ? -1 : 1;
  const { params, grads, m, v, vMax, outParams, outM, outV, outVMax } = a;
  const n = params.length;
  for (let i = 0; i < n; i++) {
    let p = params[i]!;
    let g = sign * grads[i]!; // adam.py:342, negation before weight decay
    if (l2) g = fma32(p, wd, g); // grad.add(param, alpha=wd)
    if (decoupled) p = f(p * decay); // adamw.py:270, param.mul_(1 - lr*wd)
    const mi = fma32(g, oneMinusB1, f(m[i]! * b1)); // exp_avg.mul_(b1).add_(g, alpha=1-b1)
    const vi = fma32(f(oneMinusB2 * g), g, f(v[i]! * b2)); // exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2)
    outM[i] = mi;
    outV[i] = vi;
    let second = vi;
    if (vMax !== null) {
      second = Math.max(vMax[i]!, vi); // torch.maximum(max_exp_avg_sq, exp_avg_sq)
      outVMax![i] = second;
    }
    const denom = f(f(f(Math.sqrt(second)) / bc2Sqrt) + eps); // (sqrt(v) / bc2_sqrt).add_(eps)
    outParams[i] = f(p + f(f(negStepSize * mi) / denom)); // addcdiv_(m, denom, value=-step_size)
  }
}

/** float64 kernel: the same operation order, with the fused multiply-adds emulated in double. */
function kernel64(a: KernelArgs<Float64Array>, hp: AdamHyperparams, s: StepScalars): void {
  const b1 = hp.beta1, oneMinusB1 = 1 - hp.beta1;
  const b2 = hp.beta2, oneMinusB2 = 1 - hp.beta2;
  const eps = hp.eps, wd = hp.weight_decay;
  const l2 = !hp.decoupled_weight_decay && hp.weight_decay !== 0;
  const decoupled = hp.decoupled_weight_decay;
  const decay = s.decay;
  const bc2Sqrt = s.bc2Sqrt;
  const negStepSize = -s.stepSize;
  const sign = hp.maximize ? -1 : 1;
  const { params, grads, m, v, vMax, outParams, outM, outV, outVMax } = a;
  const n = params.length;
  for (let i = 0; i < n; i++) {
    let p = params[i]!;
    let g = sign * grads[i]!;
    if (l2) g = fma64(p, wd, g);
    if (decoupled) p *= decay;
    const mi = fma64(g, oneMinusB1, m[i]! * b1);
    const vi = fma64(oneMinusB2 * g, g, v[i]! * b2);
    outM[i] = mi;
    outV[i] = vi;
    let second = vi;
    if (vMax !== null) {
      second = Math.max(vMax[i]!, vi);
      outVMax![i] = second;
    }
    const denom = Math.sqrt(second) / bc2Sqrt + eps;
    outParams[i] = p + (negStepSize * mi) / denom;
  }
}

/**
 * A replacement for the JS kernels (the WebAssembly SIMD one, src/optim/wasm/kernel.ts). It must
 * be bit-identical to kernel32/kernel64 and may decline a call (return false), which then runs on
 * the JS kernel.
 */
export interface AdamKernel {
  /** Reported by GET / (e.g. `wasm-simd128`). */
  readonly name: string;
  run(dtype: Dtype, args: KernelArgs<FloatArray>, hp: AdamHyperparams, s: StepScalars): boolean;
}

let registeredKernel: AdamKernel | null = null;

/** Name of the kernel steps run on: the registered one, or `js`. */
export function activeKernel(): string {
  return registeredKernel?.name ?? 'js';
}

/**
 * Makes adamStep/adamStepInPlace run on `kernel` (null: back to the JS kernels) and returns the
 * kernel registered before. The Worker entry registers the WebAssembly kernel once at startup;
 * this is the module's only mutable state.
 */
export function useWasmKernel(kernel: AdamKernel | null): AdamKernel | null {
  const previous = registeredKernel;
  registeredKernel = kernel;
  return previous;
}

function runKernel(dtype: Dtype, args: KernelArgs<FloatArray>, hp: AdamHyperparams, s: StepScalars, kernel = registeredKernel): void {
  if (kernel !== null && kernel.run(dtype, args, hp, s)) return;
  if (dtype === 'float32') kernel32(args as KernelArgs<Float32Array>, hp, s);
  else kernel64(args as KernelArgs<Float64Array>, hp, s);
}

/** Inputs of one Adam step. All arrays have the same length and the dtype's element type. */
export interface AdamStepInput<A extends FloatArray = FloatArray> {
  dtype: Dtype;
  hyperparams: AdamHyperparams;
  params: A;
  grads: A;
  state: AdamState<A>;
}

/** Result of one step: new params and state (fresh arrays; the inputs are untouched). */
export interface AdamStepResult<A extends FloatArray = FloatArray> {
  params: A;
  state: AdamState<A>;
}

/**
 * One Adam/AdamW step, torch 1.13 `foreach=False` semantics:
 * g = ±grad (+ wd·p for Adam); p *= 1 - lr·wd (AdamW); m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²;
 * v_max = max(v_max, v) (amsgrad); p -= lr/(1-β1^t) · m / (sqrt(v or v_max)/sqrt(1-β2^t) + eps).
 *
 * Pure: returns new arrays. `state.vMax` must be non-null when `hyperparams.amsgrad` is true.
 * @example adamStep({ dtype: 'float64', hyperparams: ADAM_DEFAULTS, params, grads, state: initAdamState('float64', params.length, false) })
 */
export function adamStep<A extends FloatArray>(input: AdamStepInput<A>): AdamStepResult<A> {
  const { dtype, hyperparams: hp, params, grads, state } = input;
  const n = params.length;
  if (grads.length !== n || state.m.length !== n || state.v.length !== n) {
    throw new RangeError(`adamStep: length mismatch (params ${n}, grads ${grads.length}, m ${state.m.length}, v ${state.v.length})`);
  }
  if (hp.amsgrad && (state.vMax === null || state.vMax.length !== n)) {
    throw new RangeError('adamStep: amsgrad needs state.vMax of the params length');
  }
  const t = nextStep(state.step);
  const scalars = stepScalars(hp, t);
  const make = () => zeros(dtype, n) as A;
  const out = { outParams: make(), outM: make(), outV: make(), outVMax: hp.amsgrad ? make() : null };
  const args = { params, grads, m: state.m, v: state.v, vMax: hp.amsgrad ? state.vMax : null, ...out };
  runKernel(dtype, args, hp, scalars);
  return { params: out.outParams, state: { step: t, m: out.outM, v: out.outV, vMax: out.outVMax } };
}

/**
 * The same step written into the input arrays (params and state mutate). For callers that own
 * their buffers and have already validated the gradient: hosted optimizers, benchmarks. `kernel`
 * overrides the registered one (a hosted optimizer steps on its own wasm instance, whose memory
 * holds its arrays).
 */
export function adamStepInPlace<A extends FloatArray>(input: AdamStepInput<A>, kernel: AdamKernel | null = registeredKernel): void {
  const { dtype, hyperparams: hp, params, grads, state } = input;
  const t = nextStep(state.step);
  const scalars = stepScalars(hp, t);
  const vMax = hp.amsgrad ? state.vMax : null;
  const args = { params, grads, m: state.m, v: state.v, vMax, outParams: params, outM: state.m, outV: state.v, outVMax: vMax };
  runKernel(dtype, args, hp, scalars, kernel);
  state.step = t;
}

/** Index of the first non-finite element across the arrays, or -1 (JSON cannot carry NaN/Inf). */
export function firstNonFinite(...arrays: Array<FloatArray | null>): { array: number; index: number } | null {
  for (let k = 0; k < arrays.length; k++) {
    const a = arrays[k];
    if (!a) continue;
    for (let i = 0; i < a.length; i++) {
      const x = a[i]!;
      if (x - x !== 0) return { array: k, index: i }; // NaN or ±Infinity
    }
  }
  return null;
}
