// The WebAssembly SIMD Adam kernel (adam.wat, assembled into adam.wasm by `npm run build:wasm`)
// behind the AdamKernel interface of src/optim/adam.ts. Bit-identical to the JS kernels.
//
// Usage in the Worker (workerd compiles only imported modules, never bytes):
//   import adamWasm from './optim/wasm/adam.wasm';
//   useWasmKernel(createWasmAdam(adamWasm));
// In Node: createWasmAdam(new WebAssembly.Module(readFileSync('src/optim/wasm/adam.wasm'))).
//
// Two kernel variants per dtype live in the one module: the exact one (standard SIMD128 only, fused
// multiply-adds emulated) and one built on relaxed SIMD's f32x4/f64x2.relaxed_madd. The relaxed one
// runs only where a probe at createWasmAdam showed relaxed_madd to be a true fused multiply-add
// (one rounding, subnormals kept), which is what torch's AVX2 kernels compute; elsewhere (a CPU
// without FMA, where the engine lowers it to a multiply and an add) the exact variant runs.
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
  adam_f32_fma: KernelFn;
  adam_f64_fma: KernelFn;
  fma_probe: (ptr: number) => void;
  first_nonfinite_f32: (ptr: number, n: number) => number;
  first_nonfinite_f64: (ptr: number, n: number) => number;
}

/**
 * Probe cases (a, b, c, fused result) for relaxed_madd, 4 float32 lanes and 4 float64 lanes. In
 * each, a*b + c rounded twice (multiply, then add) differs from the fused result; the second float32
 * case is also one where an f64 product+sum demoted to f32 differs (its sum is a float32
 * midpoint), and the subnormal cases catch a flush to zero. test/wasm-kernel.test.ts checks the
 * fused results with exact arithmetic.
 */
export const FMA_PROBE_F32: ReadonlyArray<readonly [number, number, number, number]> = [
  [1 + 2 ** -23, 1 - 2 ** -23, -1, -(2 ** -46)],
  [1 + 2 ** -15, 2 ** -24 * (1 - 2 ** -15), 1 + 2 ** -23, 1 + 2 ** -23],
  [1 + 2 ** -12, 2 ** -125 * (1 + 2 ** -12), -(2 ** -125) * (1 + 2 ** -11), 2 ** -149],
  [-(1 + 2 ** -12), 2 ** -125 * (1 + 2 ** -12), 2 ** -125 * (1 + 2 ** -11), -(2 ** -149)],
];
export const FMA_PROBE_F64: ReadonlyArray<readonly [number, number, number, number]> = [
  [1 + 2 ** -52, 1 - 2 ** -52, -1, -(2 ** -104)],
  [-(1 + 2 ** -52), 1 - 2 ** -52, 1, 2 ** -104],
  [1 + 2 ** -27, 2 ** -1021 * (1 + 2 ** -26), -(2 ** -1021) * (1 + 2 ** -26 + 2 ** -27), 2 ** -1074],
  [-(1 + 2 ** -27), 2 ** -1021 * (1 + 2 ** -26), 2 ** -1021 * (1 + 2 ** -26 + 2 ** -27), -(2 ** -1074)],
];

/**
 * Runs fma_probe of an instance's exports on the cases above (in its memory at bytes 0-191, before
 * anything else uses them) and tells, per dtype, whether every lane came out fused. V8 lowers
 * relaxed_madd the same way in every tier (one helper picks vfmadd when the CPU has FMA3, else a
 * multiply and an add), so the probe speaks for the kernels; the tests also replay the kernels
 * against the JS ones.
 */
export function probeFusedMultiplyAdd(exports: {
  memory: WebAssembly.Memory;
  fma_probe?: (ptr: number) => void;
}): { float32: boolean; float64: boolean } {
  if (typeof exports.fma_probe !== 'function') return { float32: false, float64: false };
  const f32 = new Float32Array(exports.memory.buffer, 0, 16);
  const f64 = new Float64Array(exports.memory.buffer, 64, 16);
  FMA_PROBE_F32.forEach(([a, b, c], i) => {
    f32[i] = a;
    f32[4 + i] = b;
    f32[8 + i] = c;
  });
  // f64 vectors: a, b, c, result at bytes 64, 80, 96, 112 (lanes 0-1) and 128, 144, 160, 176 (lanes 2-3)
  FMA_PROBE_F64.forEach(([a, b, c], i) => {
    const base = i < 2 ? i : 8 + (i - 2);
    f64[base] = a;
    f64[base + 2] = b;
    f64[base + 4] = c;
  });
  exports.fma_probe(0);
  const float32 = FMA_PROBE_F32.every(([, , , want], i) => Object.is(f32[12 + i], Math.fround(want)));
  const float64 = FMA_PROBE_F64.every(([, , , want], i) => Object.is(f64[(i < 2 ? i : 8 + (i - 2)) + 6], want));
  new Uint8Array(exports.memory.buffer, 0, 192).fill(0);
  return { float32, float64 };
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
   * Per dtype, whether steps run on the relaxed-SIMD kernel (relaxed_madd proved fused by the
   * start-up probe, and not turned off by the `relaxed` option) or on the exact SIMD128 one.
   */
  readonly fusedMultiplyAdd: { readonly float32: boolean; readonly float64: boolean };
  /**
   * Counters since creation: steps run (run() calls accepted), kernel calls (one per chunk),
   * elements stepped, and vectors redone on the scalar path: on the exact kernels, 4-lane float32
   * vectors with a possible double rounding and 2-lane float64 vectors with a non-finite fused
   * multiply-add; on the relaxed ones, none in float32 and float64 vectors with a non-finite fused
   * multiply-add or a factor outside [2^-400, 2^400).
   */
  readonly stats: { steps: number; calls: number; elements: number; slowVectors: number };
  /**
   * Arrays of n elements inside the module's memory. An in-place step (adamStepInPlace) on them
   * runs with no copy. Valid until the next workspace() call, which reuses and may grow (and so
   * detach) the memory.
   */
  /**
   * Index of the first NaN or ±Infinity in `a`, or -1: a SIMD scan when `a` lives in this
   * kernel's memory (workspace views), a plain loop otherwise.
   */
  firstNonFinite(a: FloatArray): number;
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

export interface WasmAdamOptions {
  /** false: never use the relaxed-SIMD kernels (tests of the exact path). Default: the probe decides. */
  relaxed?: boolean;
}

// The relaxed float32 kernel divides sqrt(s) by bc2s as a product with 1/bc2s (exact for bc2s in
// [2^-60, 1], see adam.wat); the relaxed float64 kernel's proof needs 1-beta1 and 1-beta2 in
// [2^-53, 1] and, for L2, wd in [2^-400, 2^400). Validated hyperparameters are always inside
// (bc2s = sqrt(1 - beta2^t) >= 2^-27 for beta2 < 1); other direct run() calls take the exact kernel.
const BC2S_MIN = 2 ** -60;
const OMB64_MIN = 2 ** -53;
const WD64_MIN = 2 ** -400;
const WD64_MAX = 2 ** 400;

/** Instantiates the kernel module synchronously (no imports), probes relaxed_madd and wraps it. */
export function createWasmAdam(module: WebAssembly.Module, options: WasmAdamOptions = {}): WasmAdam {
  const exports = new WebAssembly.Instance(module, {}).exports as unknown as Exports;
  const { memory } = exports;
  const probed = options.relaxed === false ? { float32: false, float64: false } : probeFusedMultiplyAdd(exports);
  const fusedMultiplyAdd = Object.freeze(probed);
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
      const bc2s = f(s.bc2Sqrt);
      const kernel = fusedMultiplyAdd.float32 && bc2s >= BC2S_MIN && bc2s <= 1 ? exports.adam_f32_fma : exports.adam_f32;
      slow = kernel(
        pp, pg, pm, pv, pvm, n, flags, sign,
        f(hp.beta1), f(1 - hp.beta1), f(hp.beta2), f(1 - hp.beta2),
        f(hp.eps), f(hp.weight_decay), hp.decoupled_weight_decay ? f(s.decay) : 1, bc2s, f(-s.stepSize),
      );
    } else {
      const omb1 = 1 - hp.beta1;
      const omb2 = 1 - hp.beta2;
      const inRange =
        omb1 >= OMB64_MIN && omb1 <= 1 && omb2 >= OMB64_MIN && omb2 <= 1 && (!l2 || (hp.weight_decay >= WD64_MIN && hp.weight_decay < WD64_MAX));
      const kernel = fusedMultiplyAdd.float64 && inRange ? exports.adam_f64_fma : exports.adam_f64;
      slow = kernel(
        pp, pg, pm, pv, pvm, n, flags, sign,
        hp.beta1, omb1, hp.beta2, omb2,
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

  const firstNonFinite = (a: FloatArray): number => {
    if (a.buffer === memory.buffer) {
      return a instanceof Float32Array ? exports.first_nonfinite_f32(a.byteOffset, a.length) : exports.first_nonfinite_f64(a.byteOffset, a.length);
    }
    for (let i = 0; i < a.length; i++) {
      const x = a[i]!;
      if (x - x !== 0) return i;
    }
    return -1;
  };

  return { name: 'wasm-simd128', memory, fusedMultiplyAdd, stats, run, firstNonFinite, workspace: workspace as WasmAdam['workspace'] };
}
