// The WebAssembly SIMD kernel (src/optim/wasm) against the JS kernels of src/optim/adam.ts, in
// workerd, with the .wasm imported as a module as the Worker does. "Bit-identical" is Object.is on
// every element of params, m, v and v_max (so NaN, Infinity and -0 positions must match too).
// (a) every case of every torch fixture, replayed step by step; float32 must also equal torch.
// (b) seeded random inputs over sizes, magnitudes, special values and every hyperparameter mode.
// (c) crafted fused multiply-adds whose double rounding lands on a float32 midpoint.
// Each path of the wrapper is used: adamStep (copy in/out, in chunks) and adamStepInPlace on
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
import { fma32 } from '../src/optim/fma.ts';
import adamWasm from '../src/optim/wasm/adam.wasm';
import { CHUNK, createWasmAdam } from '../src/optim/wasm/kernel.ts';
import adam from './fixtures/adam/adam.json';
import adamw from './fixtures/adam/adamw.json';
import amsgrad from './fixtures/adam/amsgrad.json';
import edge from './fixtures/adam/edge.json';
import fromState from './fixtures/adam/from_state.json';
import large from './fixtures/adam/large.json';
import trajectories from './fixtures/adam/trajectories.json';
import { leavesOf } from './helpers/trees.ts';

const wasm = createWasmAdam(adamWasm);

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

/** The same step on the wasm kernel through adamStep (copy path); checks that wasm really ran. */
function stepWasmCopy(input: Input): AdamStepResult {
  useWasmKernel(wasm);
  const before = wasm.stats.steps;
  const r = adamStep(input);
  useWasmKernel(null);
  expect(wasm.stats.steps, 'the wasm kernel ran').toBe(before + 1);
  return r;
}

/** The same step on workspace views with adamStepInPlace (no copy); returns copies of the results. */
function stepWasmViews(input: Input): AdamStepResult {
  const { dtype, hyperparams, params, grads, state } = input;
  const ws = wasm.workspace(dtype, params.length, hyperparams.amsgrad);
  ws.params.set(params);
  ws.grads.set(grads);
  ws.m.set(state.m);
  ws.v.set(state.v);
  if (ws.vMax) ws.vMax.set(state.vMax!);
  const st: AdamState = { step: state.step, m: ws.m, v: ws.v, vMax: ws.vMax };
  useWasmKernel(wasm);
  const before = wasm.stats.calls;
  adamStepInPlace({ dtype, hyperparams, params: ws.params, grads: ws.grads, state: st });
  useWasmKernel(null);
  expect(wasm.stats.calls, 'the wasm kernel ran once, in place').toBe(before + 1);
  return { params: make(dtype, ws.params), state: copyState(dtype, st) };
}

/** Runs the step on all three and checks the wasm results against the JS ones; returns JS's. */
function checkStep(input: Input, where: string): AdamStepResult {
  const want = stepJs(input);
  expectSame(want, stepWasmCopy(input), `${where} (adamStep)`);
  expectSame(want, stepWasmViews(input), `${where} (workspace views)`);
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
          const slowBefore = wasm.stats.slowVectors;
          const want = checkStep(input, `${c.name} n=${n} at ${pos}`);
          // The element's vector (not the scalar tail) took the scalar path, in both wasm runs.
          if (pos < n - (n % 4)) expect(wasm.stats.slowVectors - slowBefore).toBeGreaterThanOrEqual(2);
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

describe('scalar path', () => {
  it('is not taken for zero gradients over subnormal moments (a parameter whose v decays)', () => {
    const n = 1024;
    const state: AdamState = { step: 70_000, m: new Float32Array(n).fill(-3e-39), v: new Float32Array(n).fill(1e-39), vMax: null };
    const input: Input = { dtype: 'float32', hyperparams: ADAM_DEFAULTS, params: new Float32Array(n).fill(0.5), grads: new Float32Array(n), state };
    const before = wasm.stats.slowVectors;
    const want = checkStep(input, 'zero gradients, subnormal moments');
    expect(wasm.stats.slowVectors).toBe(before);
    expect(want.state.v[0]).toBe(f(f(1e-39) * f(0.999)));
  });

  it('is taken, and exact, for nonzero gradients with subnormal moments', () => {
    const n = 1024;
    const r = rng(7);
    const grads = Float32Array.from({ length: n }, () => r.normal() * 1e-19);
    const state: AdamState = { step: 5, m: Float32Array.from(grads, (g) => g * 0.3), v: new Float32Array(n).fill(1e-40), vMax: null };
    const before = wasm.stats.slowVectors;
    checkStep({ dtype: 'float32', hyperparams: ADAM_DEFAULTS, params: new Float32Array(n).fill(1), grads, state }, 'tiny gradients');
    expect(wasm.stats.slowVectors - before).toBeGreaterThan(0);
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
