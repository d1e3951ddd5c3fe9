// Replays every PyTorch fixture (test/fixtures/adam, made by generate.py with torch 1.13) through
// POST /v1/adam/step, feeding the returned state back each step.
// Tolerances held: float32 bit-identical (params, m, v, v_max) at every step;
// float64 |Δp| <= 1e-12·max(|p|, lr), |Δm| <= 1e-12·max(|m|, sqrt(v)), |Δv| <= 1e-12·|v| + 1e-300.

import { describe, expect, it } from 'vitest';
import adam from './fixtures/adam/adam.json';
import adamw from './fixtures/adam/adamw.json';
import amsgrad from './fixtures/adam/amsgrad.json';
import edge from './fixtures/adam/edge.json';
import fromState from './fixtures/adam/from_state.json';
import large from './fixtures/adam/large.json';
import trajectories from './fixtures/adam/trajectories.json';
import { postJson } from './helpers/http.ts';
import { skeleton, zipLeaves } from './helpers/trees.ts';

interface Expected {
  step_index: number;
  params: unknown;
  state: { step: number; m: unknown; v: unknown; v_max?: unknown };
}
interface Case {
  name: string;
  dtype: 'float32' | 'float64';
  hyperparams: Record<string, number | boolean> & { lr: number };
  params: unknown;
  state: Expected['state'] | null;
  grads: unknown[];
  expected: Expected[];
}

const files = { adam, adamw, amsgrad, edge, from_state: fromState, trajectories, large } as unknown as Record<string, { cases: Case[] }>;

/** Float64 agreement per the documented tolerance; counts exact matches for the report. */
function checkF64(actual: Expected, expected: Expected, lr: number, where: string, stats: { exact: number; total: number }) {
  const vPairs = zipLeaves(actual.state.v, expected.state.v);
  for (const { path, a, e } of zipLeaves(actual.params, expected.params)) {
    stats.total++;
    if (a === e) stats.exact++;
    const tol = 1e-12 * Math.max(Math.abs(e), lr);
    if (!(Math.abs(a - e) <= tol)) expect.fail(`${where} params${path}: ${a} vs torch ${e} (|Δ| ${Math.abs(a - e)} > ${tol})`);
  }
  zipLeaves(actual.state.m, expected.state.m).forEach(({ path, a, e }, i) => {
    const tol = 1e-12 * Math.max(Math.abs(e), Math.sqrt(vPairs[i]!.e));
    if (!(Math.abs(a - e) <= tol)) expect.fail(`${where} m${path}: ${a} vs torch ${e}`);
  });
  for (const { path, a, e } of vPairs) {
    if (!(Math.abs(a - e) <= 1e-12 * Math.abs(e) + 1e-300)) expect.fail(`${where} v${path}: ${a} vs torch ${e}`);
  }
  if (expected.state.v_max !== undefined) {
    for (const { path, a, e } of zipLeaves(actual.state.v_max, expected.state.v_max)) {
      if (!(Math.abs(a - e) <= 1e-12 * Math.abs(e) + 1e-300)) expect.fail(`${where} v_max${path}: ${a} vs torch ${e}`);
    }
  }
}

/** float32: every value must be the very float32 torch produced. */
function checkF32(actual: Expected, expected: Expected, where: string) {
  const trees: Array<[string, unknown, unknown]> = [
    ['params', actual.params, expected.params],
    ['m', actual.state.m, expected.state.m],
    ['v', actual.state.v, expected.state.v],
  ];
  if (expected.state.v_max !== undefined) trees.push(['v_max', actual.state.v_max, expected.state.v_max]);
  for (const [name, a, e] of trees) {
    for (const p of zipLeaves(a, e)) {
      if (!Object.is(p.a, p.e)) expect.fail(`${where} ${name}${p.path}: ${p.a} vs torch ${p.e} (not bit-identical)`);
    }
  }
}

const f64Stats = { exact: 0, total: 0 };

for (const [file, { cases }] of Object.entries(files)) {
  describe(`torch fixtures: ${file}.json`, () => {
    for (const c of cases) {
      it(c.name, async () => {
        let params = c.params;
        let state: Expected['state'] | undefined = c.state ?? undefined;
        const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
        for (let i = 0; i < c.grads.length; i++) {
          const res = await postJson('/v1/adam/step', { params, grads: c.grads[i], state, hyperparams: c.hyperparams, dtype: c.dtype });
          if (res.status !== 200) expect.fail(`${c.name} step ${i}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
          params = res.body.params;
          state = res.body.state;
          expect(res.body.lr).toBe(c.hyperparams.lr);
          const want = byIndex.get(i);
          if (!want) continue;
          const got = { step_index: i, params, state: state! };
          expect(state!.step).toBe(want.state.step);
          expect(skeleton(params)).toEqual(skeleton(want.params));
          expect(Object.keys(state!).sort()).toEqual(Object.keys(want.state).sort());
          if (c.dtype === 'float32') checkF32(got, want, `${c.name} step ${i}`);
          else checkF64(got, want, c.hyperparams.lr, `${c.name} step ${i}`, f64Stats);
        }
      });
    }
  });
}

describe('float64 report', () => {
  it('states how many float64 params matched torch bit for bit', () => {
    console.log(`float64: ${f64Stats.exact}/${f64Stats.total} checked params bit-identical to torch`);
    expect(f64Stats.total).toBeGreaterThan(0);
  });
});
