// The WebAssembly SIMD kernel (src/optim/wasm) against the JS kernels of src/optim/adam.ts, in
// workerd, with the .wasm imported as a module as the Worker does. "Bit-identical" is Object.is on
// every element of params, m, v and v_max (so NaN, Infinity and -0 positions must match too).
// (a) every case of every torch fixture, replayed step by step; float32 must also equal torch.
// (b) seeded random inputs over sizes, magnitudes, special values and every hyperparameter mode.
// (c) crafted fused multiply-adds whose double rounding lands on a float32 midpoint.
// (d) the relaxed-SIMD probe, the divider-free sqrt(v)/bc2s of the relaxed float32 kernel (the
//     claim checked in plain double arithmetic, then quotients crafted next to float32 midpoints
//     through the kernel) and the range limits and double roundings of the relaxed float64 kernel.
// Every check runs on two instances: `wasm` (the start-up probe decides; on a CPU with FMA it runs
// the relaxed-SIMD kernels) and `exact` (relaxed SIMD turned off: the exact SIMD128 kernels), each
// through both paths of the wrapper: adamStep (copy in/out, in chunks) and adamStepInPlace on
// workspace views (no copy).

import { afterEach, describe, expect, it } from 'vitest';
import {
  ADAM_DEFAULTS,
  adamStep,
  adamStepInPlace,
  initAdamState,
  useWasmKernel,
  type AdamHyperparams,
  type AdamState,
  type AdamStepResult,
  type Dtype,
  type FloatArray,
} from '../src/optim/adam.ts';
import { fma32, fma64 } from '../src/optim/fma.ts';
import adamWasm from '../src/optim/wasm/adam.wasm';
import { CHUNK, createWasmAdam, FMA_PROBE_F32, FMA_PROBE_F64, probeFusedMultiplyAdd, type WasmAdam } from '../src/optim/wasm/kernel.ts';
import adam from './fixtures/adam/adam.json';
import adamw from './fixtures/adam/adamw.json';
import amsgrad from './fixtures/adam/amsgrad.json';
import edge from './fixtures/adam/edge.json';
import fromState from './fixtures/adam/from_state.json';
import large from './fixtures/adam/large.json';
import trajectories from './fixtures/adam/trajectories.json';
import { leavesOf } from './helpers/trees.ts';

const wasm = createWasmAdam(adamWasm);
const exact = createWasmAdam(adamWasm, { relaxed: false });
const INSTANCES: Array<[string, WasmAdam]> = [
  [`probed (fused: f32 ${wasm.fusedMultiplyAdd.float32}, f64 ${wasm.fusedMultiplyAdd.float64})`, wasm],
  ['exact', exact],
];

afterEach(() => {
  useWasmKernel(null);
});

interface Input {
  dtype: Dtype;
  hyperparams: AdamHyperparams;
  params: FloatArray;
  grads: FloatArray;
  state: AdamState;
}

const make = (dtype: Dtype, values: ArrayLike<number>): FloatArray => (dtype === 'float32' ? Float32Array.from(values) : Float64Array.from(values));

function copyState(dtype: Dtype, s: AdamState): AdamState {
  return { step: s.step, m: make(dtype, s.m), v: make(dtype, s.v), vMax: s.vMax && make(dtype, s.vMax) };
}

/** First element where the two arrays are not Object.is-identical, or -1. */
function firstDiff(a: ArrayLike<number> | null, b: ArrayLike<number> | null): number {
  if (a === null || b === null) return a === b ? -1 : 0;
  if (a.length !== b.length) return 0;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

function expectSame(want: AdamStepResult, got: AdamStepResult, where: string) {
  expect(got.state.step, `${where} step`).toBe(want.state.step);
  const pairs: Array<[string, FloatArray | null, FloatArray | null]> = [
    ['params', want.params, got.params],
    ['m', want.state.m, got.state.m],
    ['v', want.state.v, got.state.v],
    ['v_max', want.state.vMax, got.state.vMax],
  ];
  for (const [name, a, b] of pairs) {
    const i = firstDiff(a, b);
    if (i >= 0) expect.fail(`${where}: ${name}[${i}] is ${b?.[i]} on the wasm kernel, ${a?.[i]} on the JS kernel`);
  }
}

/** One step on the JS kernel (reference). */
function stepJs(input: Input): AdamStepResult {
  useWasmKernel(null);
  return adamStep(input);
}

/** The same step on a wasm kernel through adamStep (copy path); checks that wasm really ran. */
function stepWasmCopy(k: WasmAdam, input: Input): AdamStepResult {
  useWasmKernel(k);
  const before = k.stats.steps;
  const r = adamStep(input);
  useWasmKernel(null);
  expect(k.stats.steps, 'the wasm kernel ran').toBe(before + 1);
  return r;
}

/** The same step on workspace views with adamStepInPlace (no copy); returns copies of the results. */
function stepWasmViews(k: WasmAdam, input: Input): AdamStepResult {
  const { dtype, hyperparams, params, grads, state } = input;
  const ws = k.workspace(dtype, params.length, hyperparams.amsgrad);
  ws.params.set(params);
  ws.grads.set(grads);
  ws.m.set(state.m);
  ws.v.set(state.v);
  if (ws.vMax) ws.vMax.set(state.vMax!);
  const st: AdamState = { step: state.step, m: ws.m, v: ws.v, vMax: ws.vMax };
  useWasmKernel(k);
  const before = k.stats.calls;
  adamStepInPlace({ dtype, hyperparams, params: ws.params, grads: ws.grads, state: st });
  useWasmKernel(null);
  expect(k.stats.calls, 'the wasm kernel ran once, in place').toBe(before + 1);
  return { params: make(dtype, ws.params), state: copyState(dtype, st) };
}

/** Runs the step on JS and on both instances' two paths, checks wasm against JS; returns JS's. */
function checkStep(input: Input, where: string): AdamStepResult {
  const want = stepJs(input);
  for (const [name, k] of INSTANCES) {
    expectSame(want, stepWasmCopy(k, input), `${where} (${name}, adamStep)`);
    expectSame(want, stepWasmViews(k, input), `${where} (${name}, workspace views)`);
  }
  return want;
}

// ------------------------------------------------------------------------------------------------
// (a) torch fixtures

interface FixtureState {
  step: number;
  m: unknown;
  v: unknown;
  v_max?: unknown;
}
interface Case {
  name: string;
  dtype: Dtype;
  hyperparams: AdamHyperparams;
  params: unknown;
  state: FixtureState | null;
  grads: unknown[];
  expected: Array<{ step_index: number; params: unknown; state: FixtureState }>;
}

const flat = (tree: unknown) => leavesOf(tree).map((l) => l.value as number);
const files = { adam, adamw, amsgrad, edge, from_state: fromState, trajectories, large } as unknown as Record<string, { cases: Case[] }>;

describe('wasm kernel = JS kernel on every torch fixture (float32 also = torch)', () => {
  for (const [file, { cases }] of Object.entries(files)) {
    it(`${file}.json: ${cases.length} cases`, () => {
      let checked = 0;
      for (const c of cases) {
        const { dtype, hyperparams } = c;
        let params = make(dtype, flat(c.params));
        const n = params.length;
        let state: AdamState = c.state
          ? {
              step: c.state.step,
              m: make(dtype, flat(c.state.m)),
              v: make(dtype, flat(c.state.v)),
              vMax: hyperparams.amsgrad ? make(dtype, c.state.v_max === undefined ? new Array<number>(n).fill(0) : flat(c.state.v_max)) : null,
            }
          : initAdamState(dtype, n, hyperparams.amsgrad);
        const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
        for (let i = 0; i < c.grads.length; i++) {
          const r = checkStep({ dtype, hyperparams, params, grads: make(dtype, flat(c.grads[i])), state }, `${c.name} step ${i}`);
          const want = byIndex.get(i);
          if (want && dtype === 'float32') {
            const torch: AdamStepResult = {
              params: make(dtype, flat(want.params)),
              state: {
                step: want.state.step,
                m: make(dtype, flat(want.state.m)),
                v: make(dtype, flat(want.state.v)),
                vMax: want.state.v_max === undefined ? null : make(dtype, flat(want.state.v_max)),
              },
            };
            expectSame(torch, r, `${c.name} step ${i} vs torch`);
          }
          params = r.params;
          state = r.state;
          checked++;
        }
      }
      expect(checked).toBeGreaterThan(0);
    });
  }
});

// ------------------------------------------------------------------------------------------------
// (b) random inputs

/** mulberry32: a small seeded generator, so failures reproduce. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
  return { next, normal };
}

type Regime = 'normal' | 'tiny-1e-20' | 'tiny-1e-30' | 'subnormal' | 'huge-1e10' | 'overflow' | 'zero' | 'sparse' | 'specials';
const REGIMES: Regime[] = ['normal', 'tiny-1e-20', 'tiny-1e-30', 'subnormal', 'huge-1e10', 'overflow', 'zero', 'sparse', 'specials'];
const SPECIALS = [0, -0, NaN, Infinity, -Infinity, 1e-45, -1e-45, 3.4e38, -3.4e38, 1e-300, 1e300, 5e-324];

function gradient(r: ReturnType<typeof rng>, regime: Regime, dtype: Dtype): number {
  const g = r.normal();
  switch (regime) {
    case 'normal':
      return g;
    case 'tiny-1e-20':
      return g * 1e-20;
    case 'tiny-1e-30':
      return g * 1e-30;
    case 'subnormal':
      return dtype === 'float32' ? g * 1e-40 : g * 1e-310;
    case 'huge-1e10':
      return g * 1e10;
    case 'overflow':
      return dtype === 'float32' ? g * 10 ** (15 + 23 * r.next()) : g * 10 ** (150 + 158 * r.next());
    case 'zero':
      return 0;
    case 'sparse':
      return r.next() < 0.7 ? (r.next() < 0.5 ? 0 : -0) : g;
    case 'specials':
      return r.next() < 0.3 ? SPECIALS[Math.floor(r.next() * SPECIALS.length)]! : g * 10 ** (40 * r.next() - 20);
  }
}

const HP_MODES: Array<[string, Partial<AdamHyperparams>]> = [
  ['defaults', {}],
  ['lr=0', { lr: 0 }],
  ['beta1=0', { beta1: 0, lr: 0.01 }],
  ['beta2=0.5 eps=0', { beta2: 0.5, eps: 0, lr: 0.1 }],
];
const WD_MODES: Array<[string, Partial<AdamHyperparams>]> = [
  ['no wd', { weight_decay: 0 }],
  ['L2 wd', { weight_decay: 0.01 }],
  ['AdamW', { weight_decay: 0.1, decoupled_weight_decay: true }],
];
const SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 1003];

function randomCase(r: ReturnType<typeof rng>, dtype: Dtype, n: number, regime: Regime, hp: AdamHyperparams, fromState: boolean): Input {
  const params = make(dtype, Array.from({ length: n }, () => {
    const x = r.next();
    if (regime === 'specials' && x < 0.2) return SPECIALS[Math.floor(r.next() * SPECIALS.length)]!;
    return x < 0.05 ? 0 : x < 0.1 ? 1e6 * r.normal() : x < 0.15 ? 1e-30 * r.normal() : r.normal();
  }));
  const grads = make(dtype, Array.from({ length: n }, () => gradient(r, regime, dtype)));
  const state = initAdamState(dtype, n, hp.amsgrad);
  if (fromState) {
    state.step = Math.floor(r.next() * 1000);
    for (let i = 0; i < n; i++) {
      const g = gradient(r, regime, dtype);
      state.m[i] = 0.5 * g;
      state.v[i] = regime === 'specials' && r.next() < 0.1 ? SPECIALS[Math.floor(r.next() * SPECIALS.length)]! : 0.01 * g * g;
      if (state.vMax) state.vMax[i] = regime === 'specials' && r.next() < 0.2 ? SPECIALS[Math.floor(r.next() * SPECIALS.length)]! : state.v[i]! * (1 + r.next());
    }
  }
  return { dtype, hyperparams: hp, params, grads, state };
}

describe('wasm kernel = JS kernel on random inputs', () => {
  for (const dtype of ['float32', 'float64'] as Dtype[]) {
    for (const regime of REGIMES) {
      it(`${dtype}, ${regime} gradients: every size and hyperparameter mode, 3 steps each`, () => {
        const r = rng(dtype.length * 1000 + REGIMES.indexOf(regime));
        let runs = 0;
        for (const [hpName, hpOver] of HP_MODES) {
          for (const [wdName, wdOver] of WD_MODES) {
            for (const amsgradOn of [false, true]) {
              for (const maximize of [false, true]) {
                const hp: AdamHyperparams = { ...ADAM_DEFAULTS, ...hpOver, ...wdOver, amsgrad: amsgradOn, maximize };
                for (const n of SIZES) {
                  let input = randomCase(r, dtype, n, regime, hp, r.next() < 0.5);
                  for (let k = 0; k < 3; k++) {
                    const where = `${dtype} ${regime} ${hpName} ${wdName} amsgrad=${amsgradOn} maximize=${maximize} n=${n} step ${k}`;
                    const res = checkStep(input, where);
                    input = { ...input, params: res.params, state: res.state, grads: make(dtype, Array.from({ length: n }, () => gradient(r, regime, dtype))) };
                    runs++;
                  }
                }
              }
            }
          }
        }
        expect(runs).toBe(HP_MODES.length * WD_MODES.length * 4 * SIZES.length * 3);
      });
    }

    it(`${dtype}: several chunks (n = 2·CHUNK + 5), amsgrad and L2`, () => {
      const r = rng(99);
      const n = 2 * CHUNK + 5;
      const hp: AdamHyperparams = { ...ADAM_DEFAULTS, amsgrad: true, weight_decay: 0.01 };
      let input = randomCase(r, dtype, n, 'specials', hp, true);
      for (let k = 0; k < 3; k++) {
        const res = checkStep(input, `${dtype} chunks step ${k}`);
        input = { ...input, params: res.params, state: res.state };
      }
    });
  }
});

// ------------------------------------------------------------------------------------------------
// (c) crafted double-rounding cases

const E = (k: number) => 2 ** k;
const f = Math.fround;

/**
 * One element whose fused multiply-add fma(a, b, c) (the L2 term, m or v) lands, after the f64
 * sum, exactly on a float32 midpoint while the exact sum is not there: demoting the f64 sum gives
 * `naive`, the correct float32 is `exact`. Built like the fma32 unit tests: a*b = ±2^-24(1 - 2^-30)
 * scaled, against c with an odd last bit.
 */
interface Crafted {
  name: string;
  hp: Partial<AdamHyperparams>;
  p: number;
  g: number;
  m: number;
  v: number;
  fma: [number, number, number];
}
const CRAFTED: Crafted[] = [
  { name: 'm: below a midpoint', hp: { beta1: 1 - E(-24) + E(-39) }, p: 1, g: 1 + E(-15), m: 1 + E(-22), v: 1, fma: [1 + E(-15), E(-24) * (1 - E(-15)), 1 + E(-23)] },
  { name: 'v: below a midpoint', hp: { beta2: 1 - E(-24) + E(-38) }, p: 1, g: 1 + E(-15), m: 1, v: 1 + E(-22), fma: [f((E(-24) - E(-38)) * (1 + E(-15))), 1 + E(-15), 1 + E(-23)] },
  { name: 'L2: below a midpoint', hp: { weight_decay: E(-24) * (1 - E(-15)) }, p: 1 + E(-15), g: 1 + E(-23), m: 0, v: 0, fma: [1 + E(-15), E(-24) * (1 - E(-15)), 1 + E(-23)] },
  { name: 'L2: above a midpoint', hp: { weight_decay: E(-24) * (1 - E(-15)) }, p: -(1 + E(-15)), g: 1 + E(-23), m: 0, v: 0, fma: [-(1 + E(-15)), E(-24) * (1 - E(-15)), 1 + E(-23)] },
  { name: 'L2: subnormal, below', hp: { weight_decay: E(-75) * (1 - E(-16)) }, p: E(-75) * (1 + E(-16)), g: (E(22) + 1) * E(-149), m: 0, v: 0, fma: [E(-75) * (1 + E(-16)), E(-75) * (1 - E(-16)), (E(22) + 1) * E(-149)] },
  { name: 'L2: subnormal, above', hp: { weight_decay: E(-75) * (1 - E(-16)) }, p: -E(-75) * (1 + E(-16)), g: (E(22) + 1) * E(-149), m: 0, v: 0, fma: [-E(-75) * (1 + E(-16)), E(-75) * (1 - E(-16)), (E(22) + 1) * E(-149)] },
  { name: 'L2: largest subnormal vs 2^-126', hp: { weight_decay: E(-75) * (1 - E(-16)) }, p: E(-75) * (1 + E(-16)), g: (E(23) - 1) * E(-149), m: 0, v: 0, fma: [E(-75) * (1 + E(-16)), E(-75) * (1 - E(-16)), (E(23) - 1) * E(-149)] },
  { name: 'm: subnormal', hp: { beta1: 1 - E(-37) * (1 - E(-16)) }, p: 1, g: E(-113) * (1 + E(-16)), m: (E(22) + 1) * E(-149), v: 1, fma: [E(-113) * (1 + E(-16)), E(-37) * (1 - E(-16)), (E(22) + 1) * E(-149)] },
];

describe('crafted float32 midpoint fused multiply-adds', () => {
  for (const c of CRAFTED) {
    it(c.name, () => {
      const [a, b, cc] = c.fma;
      for (const x of [a, b, cc, c.p, c.g, c.m, c.v]) expect(f(x)).toBe(x);
      // A real double-rounding case: rounding the f64 sum is wrong, fma32 is right.
      expect(fma32(a, b, cc)).not.toBe(f(a * b + cc));
      const hp: AdamHyperparams = { ...ADAM_DEFAULTS, ...c.hp };
      for (const n of [4, 7, 8, 1003]) {
        for (const pos of [0, 1, 2, 3, n - 1]) {
          const fill = (x: number) => Float32Array.from({ length: n }, (_, i) => (i === pos ? x : 0.25 + i * 1e-3));
          const state: AdamState = { step: 3, m: fill(c.m), v: fill(c.v), vMax: null };
          const input: Input = { dtype: 'float32', hyperparams: hp, params: fill(c.p), grads: fill(c.g), state };
          const slowBefore = exact.stats.slowVectors;
          const want = checkStep(input, `${c.name} n=${n} at ${pos}`);
          // On the exact kernel, the element's vector (not the scalar tail) took the scalar path,
          // in both wasm runs. (The relaxed kernel has no such path: its fma is fused.)
          if (pos < n - (n % 4)) expect(exact.stats.slowVectors - slowBefore).toBeGreaterThanOrEqual(2);
          // And the JS kernel's (= wasm's) result is the one of the correct fma.
          const b1 = f(hp.beta1), omb1 = f(1 - hp.beta1), b2 = f(hp.beta2), omb2 = f(1 - hp.beta2);
          const l2 = hp.weight_decay !== 0;
          const gExact = l2 ? fma32(c.p, f(hp.weight_decay), c.g) : c.g;
          expect(want.state.m[pos]).toBe(fma32(gExact, omb1, f(c.m * b1)));
          expect(want.state.v[pos]).toBe(fma32(f(omb2 * gExact), gExact, f(c.v * b2)));
          if (l2) {
            const gNaive = f(c.p * f(hp.weight_decay) + c.g);
            expect(gNaive).not.toBe(gExact);
          }
        }
      }
    });
  }
});

describe('scalar path of the exact float32 kernel', () => {
  it('is not taken for zero gradients over subnormal moments (a parameter whose v decays)', () => {
    const n = 1024;
    const state: AdamState = { step: 70_000, m: new Float32Array(n).fill(-3e-39), v: new Float32Array(n).fill(1e-39), vMax: null };
    const input: Input = { dtype: 'float32', hyperparams: ADAM_DEFAULTS, params: new Float32Array(n).fill(0.5), grads: new Float32Array(n), state };
    const before = exact.stats.slowVectors;
    const want = checkStep(input, 'zero gradients, subnormal moments');
    expect(exact.stats.slowVectors).toBe(before);
    expect(want.state.v[0]).toBe(f(f(1e-39) * f(0.999)));
  });

  it('is taken, and exact, for nonzero gradients with subnormal moments', () => {
    const n = 1024;
    const r = rng(7);
    const grads = Float32Array.from({ length: n }, () => r.normal() * 1e-19);
    const state: AdamState = { step: 5, m: Float32Array.from(grads, (g) => g * 0.3), v: new Float32Array(n).fill(1e-40), vMax: null };
    const before = exact.stats.slowVectors;
    checkStep({ dtype: 'float32', hyperparams: ADAM_DEFAULTS, params: new Float32Array(n).fill(1), grads, state }, 'tiny gradients');
    expect(exact.stats.slowVectors - before).toBeGreaterThan(0);
  });
});

describe('wrapper', () => {
  it('falls back to the JS kernel when arrays share memory, and still matches it', () => {
    const n = 9;
    const r = rng(5);
    const base = randomCase(r, 'float32', n, 'normal', { ...ADAM_DEFAULTS, amsgrad: true }, true);
    const buf = new Float32Array(3 * n);
    buf.set(base.params, 0);
    buf.set(base.grads, n);
    // params and grads overlap by one element: the wasm kernel declines, the JS kernel runs.
    const params = buf.subarray(0, n);
    const grads = buf.subarray(n - 1, 2 * n - 1);
    useWasmKernel(wasm);
    const before = wasm.stats.steps;
    const got = adamStep({ ...base, params, grads });
    useWasmKernel(null);
    expect(wasm.stats.steps).toBe(before);
    expectSame(adamStep({ ...base, params, grads }), got, 'overlap');
    // v_max aliasing v (same array): JS semantics, so the JS kernel runs.
    const state = copyState('float32', base.state);
    state.vMax = state.v;
    useWasmKernel(wasm);
    adamStepInPlace({ ...base, state: state });
    useWasmKernel(null);
    expect(wasm.stats.steps).toBe(before);
  });

  it('workspace views are stepped in place with no copy, across memory growth', () => {
    for (const n of [5, 100_000, 3]) {
      const ws = wasm.workspace('float64', n, false);
      expect(ws.params.buffer).toBe(wasm.memory.buffer);
      ws.params.fill(1);
      ws.grads.fill(0.5);
      const state: AdamState = { step: 0, m: ws.m, v: ws.v, vMax: null };
      useWasmKernel(wasm);
      adamStepInPlace({ dtype: 'float64', hyperparams: ADAM_DEFAULTS, params: ws.params, grads: ws.grads, state });
      useWasmKernel(null);
      expect(state.step).toBe(1);
      expect(ws.params[n - 1]).toBeCloseTo(1 - 0.001, 9);
      expect(ws.m[0]).toBeCloseTo(0.05, 15);
    }
  });
});

// ------------------------------------------------------------------------------------------------
// (d) relaxed SIMD: the probe, the divider-free division, the float64 range limits

/** x = m * 2^e exactly, as BigInt m and integer e (finite x). */
function dyadic(x: number): { m: bigint; e: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  const sign = bits >> 63n ? -1n : 1n;
  const exp = Number((bits >> 52n) & 0x7ffn);
  const frac = bits & ((1n << 52n) - 1n);
  return exp === 0 ? { m: sign * frac, e: -1074 } : { m: sign * (frac | (1n << 52n)), e: exp - 1075 };
}

/** Sign of a*b + c - d, exactly. */
function exactCompare(a: number, b: number, c: number, d: number): number {
  const [A, B, C, D] = [a, b, c, d].map(dyadic) as [ReturnType<typeof dyadic>, ReturnType<typeof dyadic>, ReturnType<typeof dyadic>, ReturnType<typeof dyadic>];
  const terms = [{ m: A.m * B.m, e: A.e + B.e }, C, { m: -D.m, e: D.e }];
  const e0 = Math.min(...terms.map((t) => t.e));
  const sum = terms.reduce((acc, t) => acc + (t.m << BigInt(t.e - e0)), 0n);
  return sum > 0n ? 1 : sum < 0n ? -1 : 0;
}

describe('relaxed SIMD probe', () => {
  it('float32 cases: fused = fma32 (correctly rounded), and a*b + c rounded twice differs', () => {
    for (const [a, b, c, want] of FMA_PROBE_F32) {
      for (const x of [a, b, c, want]) expect(f(x)).toBe(x);
      expect(fma32(a, b, c)).toBe(want);
      expect(f(f(a * b) + c)).not.toBe(want); // unfused
    }
    // one case also defeats an fma emulated as f64 product + sum rounded to f32
    expect(FMA_PROBE_F32.some(([a, b, c, want]) => f(a * b + c) !== want)).toBe(true);
    // and two give a subnormal (a flush to zero fails them)
    expect(FMA_PROBE_F32.filter(([, , , want]) => want !== 0 && Math.abs(want) < 2 ** -126).length).toBe(2);
  });

  it('float64 cases: fused result exact (a*b + c = want), and a*b + c rounded twice differs', () => {
    for (const [a, b, c, want] of FMA_PROBE_F64) {
      expect(exactCompare(a, b, c, want)).toBe(0);
      expect(a * b + c).not.toBe(want);
    }
    expect(FMA_PROBE_F64.filter(([, , , want]) => Math.abs(want) < 2 ** -1022).length).toBe(2);
  });

  /** A stand-in for the module's fma_probe computing `madd` on its memory layout. */
  function fakeProbe(madd32: (a: number, b: number, c: number) => number, madd64: (a: number, b: number, c: number) => number) {
    const memory = new WebAssembly.Memory({ initial: 1 });
    const fma_probe = (ptr: number) => {
      const f32 = new Float32Array(memory.buffer, ptr, 16);
      for (let i = 0; i < 4; i++) f32[12 + i] = madd32(f32[i]!, f32[4 + i]!, f32[8 + i]!);
      const f64 = new Float64Array(memory.buffer, ptr + 64, 16);
      for (const base of [0, 8]) for (let i = 0; i < 2; i++) f64[base + 6 + i] = madd64(f64[base + i]!, f64[base + 2 + i]!, f64[base + 4 + i]!);
    };
    return probeFusedMultiplyAdd({ memory, fma_probe });
  }

  it('says fused only for a true fused multiply-add', () => {
    const exactFma64 = (a: number, b: number, c: number) => {
      const hit = FMA_PROBE_F64.find((x) => Object.is(x[0], a) && Object.is(x[1], b) && Object.is(x[2], c));
      return hit ? hit[3] : NaN;
    };
    expect(fakeProbe(fma32, exactFma64)).toEqual({ float32: true, float64: true });
    // unfused (multiply, round, add, round): a CPU without FMA
    expect(fakeProbe((a, b, c) => f(f(a * b) + c), (a, b, c) => a * b + c)).toEqual({ float32: false, float64: false });
    // float32 fma emulated in f64 (double rounding), float64 with Dekker/TwoSum (fma64)
    expect(fakeProbe((a, b, c) => f(a * b + c), fma64).float32).toBe(false);
    // flush to zero
    const ftz = (x: number) => (Math.abs(x) < 2 ** -126 ? 0 : x);
    expect(fakeProbe((a, b, c) => ftz(fma32(a, b, c)), exactFma64).float32).toBe(false);
    // a module without the probe export
    expect(probeFusedMultiplyAdd({ memory: new WebAssembly.Memory({ initial: 1 }) })).toEqual({ float32: false, float64: false });
  });

  it('the instances: relaxed turned off runs the exact kernels; the probe leaves the memory clean', () => {
    expect(exact.fusedMultiplyAdd).toEqual({ float32: false, float64: false });
    const fresh = createWasmAdam(adamWasm);
    expect(fresh.fusedMultiplyAdd).toEqual(wasm.fusedMultiplyAdd);
    expect(new Uint8Array(fresh.memory.buffer, 0, 256).every((b) => b === 0)).toBe(true);
  });
});

/** A float32 quotient x/c within a few 2^-48 (relative) of a float32 midpoint: X/C's digits. */
function nearMidpointNumerators(C: number, count: number, r: ReturnType<typeof rng>): number[] {
  // x = X*2^-23 in [1, 2), c = C*2^-24 in [0.5, 1): x/c = 2X/C. In units of half a float32 ulp of
  // the quotient (2^(k-24), k = 1 if X >= C else 0) it is N/C with N = X*2^(25-k); it is a
  // midpoint when that is an odd integer, so rank X by how close N mod 2C is to C.
  const found: Array<[number, number]> = [];
  const start = 2 ** 23 + Math.floor(r.next() * (2 ** 23 - 2 ** 16));
  for (let X = start; X < start + 2 ** 16; X++) {
    const N = X * 2 ** (X >= C ? 24 : 25);
    const d = Math.abs((N % (2 * C)) - C);
    if (d < C * 2 ** -10) found.push([d, X]);
  }
  found.sort((a, b) => a[0] - b[0]);
  return found.slice(0, count).map(([, X]) => X);
}

describe('relaxed float32 kernel: sqrt(s)/bc2s as f64 products with 1/bc2s', () => {
  it('the claim in double arithmetic: fround(x * (1/c)) = fround(x / c) (random and near-midpoint x, c)', () => {
    const r = rng(2024);
    let naiveWrong = 0;
    let checked = 0;
    let wrong = 0;
    for (let k = 0; k < 100; k++) {
      const C = 2 ** 23 + Math.floor(r.next() * 2 ** 23);
      const cExp = -Math.floor(r.next() * 30); // c in [2^-31, 1)
      const c = C * 2 ** (-24 + cExp);
      const rc = 1 / c;
      const xs = nearMidpointNumerators(C, 20, r).map((X) => X * 2 ** -23);
      for (let i = 0; i < 200; i++) xs.push(f(1 + r.next()));
      for (const x0 of xs) {
        const x = x0 * 2 ** (Math.floor(r.next() * 130) - 70); // x in [2^-70, 2^61)
        if (f(x * rc) !== f(x / c)) wrong++;
        if (f(x * f(1 / c)) !== f(x / c)) naiveWrong++;
        checked++;
      }
    }
    expect(wrong).toBe(0);
    // the crafted quotients are hard: a float32 reciprocal gets many of them wrong
    expect(naiveWrong).toBeGreaterThan(checked / 50);
  });

  it('bit-identical through the kernels for quotients crafted next to float32 midpoints', () => {
    const r = rng(77);
    for (let k = 0; k < 12; k++) {
      // bc2s = c: beta2 = 1 - c^2 at step 1; c spans [2^-27, 1)
      let c: number, beta2: number;
      do {
        c = f((2 ** 23 + Math.floor(r.next() * 2 ** 23)) * 2 ** (-24 - Math.floor(r.next() * 27)));
        beta2 = 1 - c * c;
      } while (f(Math.sqrt(1 - beta2 ** 1)) !== c || beta2 >= 1);
      const C = c * 2 ** (24 - Math.floor(Math.log2(c)) - 1);
      const xs = nearMidpointNumerators(C, 64, r)
        .map((X) => f(X * 2 ** (-23 + Math.floor(r.next() * 120) - 60)))
        .filter((x) => f(Math.sqrt(f(x * x))) === x);
      const n = xs.length;
      // amsgrad with v = 0, g = 0: s = max(v_max, 0) = v_max = x^2, so sqrt(s) = x; eps = 0 and
      // p = 0 make the new p = (nss*m) / (x/c), which shows any error in x/c.
      const hp: AdamHyperparams = { ...ADAM_DEFAULTS, beta2, eps: 0, amsgrad: true, lr: 0.5 };
      const state: AdamState = {
        step: 0,
        m: Float32Array.from(xs, () => 1 + r.next()),
        v: new Float32Array(n),
        vMax: Float32Array.from(xs, (x) => f(x * x)),
      };
      const input: Input = { dtype: 'float32', hyperparams: hp, params: new Float32Array(n), grads: new Float32Array(n), state };
      const want = checkStep(input, `near-midpoint quotients, bc2s=${c}`);
      // the new p is num/q for the correctly rounded q = x/c, and mostly changes with q's last bit
      const nss = f(-0.5 / (1 - 0.9));
      let sensitive = 0;
      xs.forEach((x, i) => {
        const q = f(x / c);
        const num = f(nss * f(state.m[i]! * f(0.9)));
        expect(want.params[i]).toBe(f(num / q));
        if (f(num / f(q * (1 + 2 ** -23))) !== want.params[i]) sensitive++;
      });
      expect(n).toBeGreaterThan(16);
      expect(sensitive).toBeGreaterThan(n / 2);
    }
  });

  it('bc2s outside [2^-60, 1] takes the exact kernel, still bit-identical', () => {
    // only a direct run() call can pass such scalars; Adam's bc2s is always inside
    const n = 9;
    const r = rng(3);
    for (const bc2Sqrt of [2 ** -70, 2, 1e30]) {
      const args = {
        params: Float32Array.from({ length: n }, () => r.normal()),
        grads: Float32Array.from({ length: n }, () => r.normal()),
        m: new Float32Array(n),
        v: new Float32Array(n),
        vMax: null,
      };
      const scalars = { t: 1, stepSize: 0.01, bc2Sqrt, decay: 1 };
      const out = () => ({ outParams: new Float32Array(n), outM: new Float32Array(n), outV: new Float32Array(n), outVMax: null });
      const a = { ...args, ...out() };
      const b = { ...args, ...out() };
      expect(wasm.run('float32', a, ADAM_DEFAULTS, scalars)).toBe(true);
      expect(exact.run('float32', b, ADAM_DEFAULTS, scalars)).toBe(true);
      expect(firstDiff(a.outParams, b.outParams)).toBe(-1);
    }
  });
});

describe('relaxed float64 kernel: range limits and fma64 double roundings', () => {
  it('g, p and wd at and across the [2^-400, 2^400) limits', () => {
    const edges = [2 ** -401, 2 ** -400, 2 ** -400 * (1 + 2 ** -52), 2 ** -399, 2 ** 399, 2 ** 400 * (1 - 2 ** -53), 2 ** 400, 2 ** 401, 1e-310, 5e-324, 1e300];
    const values = [...edges, ...edges.map((x) => -x), 0, -0, 1, -1.5];
    const r = rng(11);
    for (const wd of [0, 0.01, 2 ** -400, 2 ** -401, 2 ** 399, 2 ** 400]) {
      for (const decoupled of [false, true]) {
        const n = 64;
        const pick = () => values[Math.floor(r.next() * values.length)]!;
        const hp: AdamHyperparams = { ...ADAM_DEFAULTS, weight_decay: wd, decoupled_weight_decay: decoupled, amsgrad: r.next() < 0.5 };
        const state = initAdamState('float64', n, hp.amsgrad);
        const input: Input = { dtype: 'float64', hyperparams: hp, params: Float64Array.from({ length: n }, pick), grads: Float64Array.from({ length: n }, pick), state };
        checkStep(input, `float64 edges wd=${wd} decoupled=${decoupled}`);
      }
    }
  });

  it('follows fma64 where it is not the correctly rounded fma (double rounding)', () => {
    // m = fma64(g, 1-b1, m*b1) with 1-b1 = 1/2 + 2^-31 and g = 2 + 2^-22: g*(1-b1) = 1 + 2^-23 +
    // 2^-30 + 2^-53 is a double midpoint, rounded to the even p = 1 + 2^-23 + 2^-30 (error
    // 2^-53); c = m*b1 is tiny and positive, so the exact sum is above p + 2^-53 and rounds up,
    // while fma64 adds the error terms first: 2^-53 + c rounds to 2^-53, and p + 2^-53 to p.
    const beta1 = 0.5 - 2 ** -31;
    const g = 2 + 2 ** -22;
    const mPrev = 2 ** -107;
    const c = mPrev * beta1;
    const p = 1 + 2 ** -23 + 2 ** -30;
    expect(fma64(g, 1 - beta1, c)).toBe(p);
    expect(exactCompare(g, 1 - beta1, c, p + 2 ** -53)).toBe(1); // the true fma is p + 2^-52
    for (const n of [2, 4, 5]) {
      const state: AdamState = { step: 0, m: new Float64Array(n).fill(mPrev), v: new Float64Array(n), vMax: null };
      const input: Input = { dtype: 'float64', hyperparams: { ...ADAM_DEFAULTS, beta1 }, params: new Float64Array(n).fill(1), grads: new Float64Array(n).fill(g), state };
      const want = checkStep(input, `fma64 double rounding n=${n}`);
      expect(want.state.m[0]).toBe(p);
    }
  });
});

describe('finiteness scan', () => {
  it('finds the first NaN or infinity at every position, in memory and out of it, both dtypes', () => {
    const k = createWasmAdam(adamWasm);
    const special = [NaN, Infinity, -Infinity];
    for (const dtype of ['float32', 'float64'] as const) {
      const ws = k.workspace(dtype, 37, false);
      const outside = dtype === 'float32' ? new Float32Array(37) : new Float64Array(37);
      for (const a of [ws.params, outside]) {
        // Finite extremes are not flagged.
        a.set([dtype === 'float32' ? 3.4028234663852886e38 : Number.MAX_VALUE, -0, 1e-45, -1]);
        expect(k.firstNonFinite(a)).toBe(-1);
        for (let i = 0; i < a.length; i++) {
          for (const x of special) {
            a[i] = x;
            if (i + 5 < a.length) a[i + 5] = NaN; // a later one does not matter
            expect(k.firstNonFinite(a), `${dtype} ${x} at ${i}`).toBe(i);
            expect(k.firstNonFinite(a.subarray(i + 1)), `${dtype} after ${i}`).toBe(i + 5 < a.length ? 4 : -1);
            a.fill(0.5);
          }
        }
      }
    }
  });
});
