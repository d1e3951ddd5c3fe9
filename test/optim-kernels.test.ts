// Every dense optimizer kernel (src/optim/<name>) against real torch 1.13 (test/fixtures/optim,
// foreach=False, one thread): each case's gradients are fed step by step with the state carried
// over, and every recorded param, state tensor, step and mu_product must equal torch's bit for bit,
// in float32 and in float64. Kernel level: no HTTP (the routes are tested in optim-routes.test.ts).

import { describe, expect, it } from 'vitest';
import { initState, stepInPlace, type FloatArray, type OptimizerDef, type OptimizerState } from '../src/optim/optimizer.ts';
import { adadelta } from '../src/optim/adadelta/index.ts';
import { adagrad } from '../src/optim/adagrad/index.ts';
import { adamax } from '../src/optim/adamax/index.ts';
import { nadam } from '../src/optim/nadam/index.ts';
import { radam } from '../src/optim/radam/index.ts';
import { rmsprop } from '../src/optim/rmsprop/index.ts';
import { sgd } from '../src/optim/sgd/index.ts';
import adadeltaCases from './fixtures/optim/adadelta.json';
import adagradCases from './fixtures/optim/adagrad.json';
import adamaxCases from './fixtures/optim/adamax.json';
import nadamCases from './fixtures/optim/nadam.json';
import radamCases from './fixtures/optim/radam.json';
import rmspropCases from './fixtures/optim/rmsprop.json';
import sgdCases from './fixtures/optim/sgd.json';
import { leavesOf } from './helpers/trees.ts';

interface Case {
  name: string;
  dtype: 'float32' | 'float64';
  hyperparams: Record<string, number | boolean>;
  params: unknown;
  state: Record<string, unknown> | null;
  grads: unknown[];
  expected: Array<{ step_index: number; params: unknown; state: Record<string, unknown> }>;
}

const FILES: Array<[OptimizerDef<any>, { cases: unknown[] }]> = [
  [sgd, sgdCases],
  [rmsprop, rmspropCases],
  [adagrad, adagradCases],
  [adamax, adamaxCases],
  [nadam, nadamCases],
  [radam, radamCases],
  [adadelta, adadeltaCases],
];

const flat = (tree: unknown): number[] => leavesOf(tree).map((l) => l.value as number);
const typed = (dtype: Case['dtype'], xs: number[]): FloatArray => (dtype === 'float32' ? Float32Array.from(xs) : Float64Array.from(xs));
const NON_TENSOR_KEYS = new Set(['step', 'mu_product']);

/** Leaves that differ from torch's: bit for bit (Object.is tells -0 from 0). */
function mismatches(label: string, actual: ArrayLike<number>, expected: number[]): string[] {
  const out: string[] = [];
  if (actual.length !== expected.length) return [`${label}: length ${actual.length} != ${expected.length}`];
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual[i], expected[i])) out.push(`${label}[${i}]: ${actual[i]} != torch ${expected[i]}`);
  }
  return out;
}

function run(def: OptimizerDef<any>, c: Case): { compared: number; diffs: string[] } {
  const params = typed(c.dtype, flat(c.params));
  const n = params.length;
  let state: OptimizerState = initState(def, c.hyperparams, c.dtype, n);
  if (c.state !== null) {
    state.step = (c.state.step as number | undefined) ?? 0;
    if (c.state.mu_product !== undefined) state.scalars.mu_product = c.state.mu_product as number;
    for (const [k, v] of Object.entries(c.state)) {
      if (NON_TENSOR_KEYS.has(k)) continue;
      state.slots[k] = v === null || leavesOf(v).some((l) => l.value === null) ? null : typed(c.dtype, flat(v));
    }
  }
  const diffs: string[] = [];
  let compared = 0;
  const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
  for (let s = 0; s < c.grads.length; s++) {
    state = stepInPlace({ def, dtype: c.dtype, hp: c.hyperparams, params, grads: typed(c.dtype, flat(c.grads[s])), shape: [n], state });
    const e = byIndex.get(s);
    if (e === undefined) continue;
    const p = flat(e.params);
    diffs.push(...mismatches(`step ${s} params`, params, p));
    compared += p.length;
    for (const [k, v] of Object.entries(e.state)) {
      if (k === 'step') {
        diffs.push(...mismatches(`step ${s} step`, [state.step], [v as number]));
      } else if (k === 'mu_product') {
        diffs.push(...mismatches(`step ${s} mu_product`, [state.scalars.mu_product!], [v as number]));
      } else if (v === null || leavesOf(v).every((l) => l.value === null)) {
        // torch keeps None (SGD without momentum): we keep no slot.
        if (state.slots[k] != null) diffs.push(`step ${s} ${k}: expected no slot`);
      } else {
        const slot = state.slots[k];
        if (slot == null) diffs.push(`step ${s} ${k}: slot missing`);
        else diffs.push(...mismatches(`step ${s} ${k}`, slot, flat(v)));
      }
      compared++;
    }
  }
  return { compared, diffs };
}

describe.each(FILES.map(([def, file]) => ({ def, cases: file.cases as Case[], name: def.name })))('$name against torch 1.13', ({ def, cases }) => {
  it.each(cases.map((c) => ({ c, name: c.name })))('$name', ({ c }) => {
    const { compared, diffs } = run(def, c);
    expect(compared).toBeGreaterThan(0);
    expect(diffs.slice(0, 10)).toEqual([]);
  });
});
