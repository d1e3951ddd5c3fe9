// The WebAssembly SIMD Adam kernel (adam.wat, assembled into adam.wasm by `npm run build:wasm`)
// behind the AdamKernel interface of src/optim/adam.ts. Bit-identical to the JS kernels.
//
// Usage in the Worker (workerd compiles only imported modules, never bytes):
//   import adamWasm from './optim/wasm/adam.wasm';
//   useWasmKernel(createWasmAdam(adamWasm));
// In Node: createWasmAdam(new WebAssembly.Module(readFileSync('src/optim/wasm/adam.wasm'))).
//
// Arrays outside the module's memory are processed in chunks: copied in, stepped, copied out, so
// the memory stays small (CHUNK elements per array) and the chunk stays in cache. Arrays that are
// views of a workspace() are stepped where they are, with no copy.

import type { AdamHyperparams, AdamKernel, Dtype, FloatArray, KernelArgs, StepScalars } from '../adam.ts';

/** Elements per array in one copy-in / step / copy-out round. */
export const CHUNK = 16384;
const ARRAYS = 5; // params, grads, m, v, v_max
const SCRATCH_BYTES = ARRAYS * CHUNK * 8;
const PAGE = 65536;

type KernelFn = (
  pp: number, pg: number, pm: number, pv: number, pvm: number, n: number, flags: number,
  sign: number, b1: number, omb1: number, b2: number, omb2: number,
  eps: number, wd: number, decay: number, bc2s: number, nss: number,
) => number;

interface Exports {
  memory: WebAssembly.Memory;
  adam_f32: KernelFn;
  adam_f64: KernelFn;
}

/** Arrays of one step that live in the kernel's memory (see WasmAdam.workspace). */
export interface Workspace<A extends FloatArray = FloatArray> {
  params: A;
  grads: A;
  m: A;
  v: A;
  vMax: A | null;
}

export interface WasmAdam extends AdamKernel {
  /** The module's linear memory (grows for workspaces; never shrinks). */
  readonly memory: WebAssembly.Memory;
  /**
   * Counters since creation: steps run (run() calls accepted), kernel calls (one per chunk),
   * elements stepped, and vectors redone on the scalar path (4-lane float32 vectors with a
   * possible double rounding, 2-lane float64 vectors with a non-finite fused multiply-add).
   */
  readonly stats: { steps: number; calls: number; elements: number; slowVectors: number };
  /**
   * Arrays of n elements inside the module's memory. An in-place step (adamStepInPlace) on them
   * runs with no copy. Valid until the next workspace() call, which reuses and may grow (and so
   * detach) the memory.
   */
  workspace(dtype: 'float32', n: number, amsgrad: boolean): Workspace<Float32Array>;
  workspace(dtype: 'float64', n: number, amsgrad: boolean): Workspace<Float64Array>;
  workspace(dtype: Dtype, n: number, amsgrad: boolean): Workspace;
}

/**
 * Whether any two of `arrays` are the same array or share memory. `buffers` receives each array's
 * buffer, read once (the getter is not free).
 */
function anyShared(arrays: FloatArray[], buffers: ArrayBufferLike[]): boolean {
  for (let i = 0; i < arrays.length; i++) buffers[i] = arrays[i]!.buffer;
  for (let i = 0; i < arrays.length; i++) {
    const x = arrays[i]!;
    for (let j = i + 1; j < arrays.length; j++) {
      if (buffers[i] !== buffers[j]) continue;
      const y = arrays[j]!;
      if (x === y || (x.byteOffset < y.byteOffset + y.byteLength && y.byteOffset < x.byteOffset + x.byteLength)) return true;
    }
  }
  return false;
}

/** Instantiates the kernel module synchronously (no imports) and wraps it. */
export function createWasmAdam(module: WebAssembly.Module): WasmAdam {
  const exports = new WebAssembly.Instance(module, {}).exports as unknown as Exports;
  const { memory } = exports;
  const stats = { steps: 0, calls: 0, elements: 0, slowVectors: 0 };

  const ensureBytes = (bytes: number) => {
    const missing = bytes - memory.buffer.byteLength;
    if (missing > 0) memory.grow(Math.ceil(missing / PAGE));
  };
  ensureBytes(SCRATCH_BYTES);

  // Scratch views for the copy path: array k at byte k*CHUNK*8 (both dtypes).
  let viewsBuffer: ArrayBuffer | null = null;
  let scratch32: Float32Array[] = [];
  let scratch64: Float64Array[] = [];
  const scratch = (dtype: Dtype): FloatArray[] => {
    if (viewsBuffer !== memory.buffer) {
      viewsBuffer = memory.buffer;
      scratch32 = [0, 1, 2, 3, 4].map((k) => new Float32Array(memory.buffer, k * CHUNK * 8, CHUNK));
      scratch64 = [0, 1, 2, 3, 4].map((k) => new Float64Array(memory.buffer, k * CHUNK * 8, CHUNK));
    }
    return dtype === 'float32' ? scratch32 : scratch64;
  };

  /** Calls the kernel on n elements at the given byte offsets. */
  const call = (dtype: Dtype, pp: number, pg: number, pm: number, pv: number, pvm: number, n: number, hp: AdamHyperparams, s: StepScalars, amsgrad: boolean): void => {
    const l2 = !hp.decoupled_weight_decay && hp.weight_decay !== 0;
    const flags = (l2 ? 1 : 0) | (amsgrad ? 2 : 0);
    const sign = hp.maximize ? -1 : 1;
    let slow: number;
    if (dtype === 'float32') {
      const f = Math.fround;
      slow = exports.adam_f32(
        pp, pg, pm, pv, pvm, n, flags, sign,
        f(hp.beta1), f(1 - hp.beta1), f(hp.beta2), f(1 - hp.beta2),
        f(hp.eps), f(hp.weight_decay), hp.decoupled_weight_decay ? f(s.decay) : 1, f(s.bc2Sqrt), f(-s.stepSize),
      );
    } else {
      slow = exports.adam_f64(
        pp, pg, pm, pv, pvm, n, flags, sign,
        hp.beta1, 1 - hp.beta1, hp.beta2, 1 - hp.beta2,
        hp.eps, hp.weight_decay, hp.decoupled_weight_decay ? s.decay : 1, s.bc2Sqrt, -s.stepSize,
      );
    }
    stats.calls++;
    stats.elements += n;
    stats.slowVectors += slow;
  };

  const run = (dtype: Dtype, a: KernelArgs<FloatArray>, hp: AdamHyperparams, s: StepScalars): boolean => {
    const { params, grads, m, v, vMax, outParams, outM, outV, outVMax } = a;
    // The inputs, and each output that is not its own input (in place), must not share memory:
    // the JS kernel defines what aliased arrays do, element by element.
    const arrays: FloatArray[] = [params, grads, m, v];
    if (vMax !== null) arrays.push(vMax);
    if (outParams !== params) arrays.push(outParams);
    if (outM !== m) arrays.push(outM);
    if (outV !== v) arrays.push(outV);
    if (outVMax !== null && outVMax !== vMax) arrays.push(outVMax);
    const n = params.length;
    const Ctor = dtype === 'float32' ? Float32Array : Float64Array;
    for (const x of arrays) if (x.length !== n || !(x instanceof Ctor)) return false;
    if (vMax !== null && outVMax === null) return false;
    const buffers: ArrayBufferLike[] = [];
    if (anyShared(arrays, buffers)) return false;
    const amsgrad = vMax !== null;
    const inPlace = arrays.length === (amsgrad ? 5 : 4);
    const mem = memory.buffer;
    stats.steps++;
    if (inPlace && buffers.every((b) => b === mem)) {
      // In place on views of this memory: no copy.
      call(dtype, params.byteOffset, grads.byteOffset, m.byteOffset, v.byteOffset, vMax === null ? 0 : vMax.byteOffset, n, hp, s, amsgrad);
      return true;
    }
    const [sp, sg, sm, sv, svm] = scratch(dtype) as [FloatArray, FloatArray, FloatArray, FloatArray, FloatArray];
    const stride = CHUNK * 8;
    for (let off = 0; off < n; off += CHUNK) {
      const len = Math.min(CHUNK, n - off);
      const end = off + len;
      sp.set(params.subarray(off, end));
      sg.set(grads.subarray(off, end));
      sm.set(m.subarray(off, end));
      sv.set(v.subarray(off, end));
      if (amsgrad) svm.set(vMax.subarray(off, end));
      call(dtype, 0, stride, 2 * stride, 3 * stride, 4 * stride, len, hp, s, amsgrad);
      outM.set(sm.subarray(0, len), off);
      outV.set(sv.subarray(0, len), off);
      if (amsgrad) outVMax!.set(svm.subarray(0, len), off); // non-null: checked above
      outParams.set(sp.subarray(0, len), off);
    }
    return true;
  };

  const workspace = (dtype: Dtype, n: number, amsgrad: boolean): Workspace => {
    const size = dtype === 'float32' ? 4 : 8;
    const stride = Math.ceil((n * size) / 16) * 16;
    ensureBytes(SCRATCH_BYTES + ARRAYS * stride);
    const make = (k: number) =>
      dtype === 'float32' ? new Float32Array(memory.buffer, SCRATCH_BYTES + k * stride, n) : new Float64Array(memory.buffer, SCRATCH_BYTES + k * stride, n);
    const ws = { params: make(0), grads: make(1), m: make(2), v: make(3), vMax: amsgrad ? make(4) : null };
    for (const x of [ws.params, ws.grads, ws.m, ws.v, ws.vMax]) x?.fill(0);
    return ws;
  };

  return { name: 'wasm-simd128', memory, stats, run, workspace: workspace as WasmAdam['workspace'] };
}
