// POST /v1/adam/step takes what every optimizer's step takes (param_groups, clipping, frozen
// tensors, nonfinite: "skip", torch's `betas`) in its own JSON dialect: the state is m, v and v_max.
// Checked against torch 1.13 (test/fixtures/optim/{param_groups,clip}.json, made for torch.optim.AdamW
// and torch.optim.Adam) with torch's state names mapped to the route's.

import { describe, expect, it } from 'vitest';
import clipFile from './fixtures/optim/clip.json';
import groupsFile from './fixtures/optim/param_groups.json';
import { callBytes, postJson } from './helpers/http.ts';
import { expectProblem } from './helpers/optimizers.ts';
import { decodeValues, encodeValues, readSafetensors, writeSafetensors } from './helpers/safetensors.ts';
import { zipLeaves } from './helpers/trees.ts';

type Tree = unknown;
const TORCH_TO_ROUTE: Record<string, string> = { exp_avg: 'm', exp_avg_sq: 'v', max_exp_avg_sq: 'v_max' };
const routeState = (state: Record<string, unknown>) => Object.fromEntries(Object.entries(state).map(([k, v]) => [TORCH_TO_ROUTE[k] ?? k, v]));

function diffs(label: string, actual: unknown, expected: unknown): string[] {
  return zipLeaves(actual, expected)
    .filter(({ a, e }) => !Object.is(a, e))
    .map(({ path, a, e }) => `${label}${path}: ${a} != torch ${e}`);
}

interface Expected {
  step_index: number;
  total_norm?: number;
  params: Tree;
  state: Record<string, unknown>;
}

/** Replays a torch trajectory through /v1/adam/step; differences from torch, bit for bit. */
async function replay(body: Record<string, unknown>, grads: Tree[], expected: Expected[]): Promise<string[]> {
  let params = body.params;
  let state: Record<string, unknown> | undefined;
  const byIndex = new Map(expected.map((e) => [e.step_index, e]));
  const problems: string[] = [];
  for (let s = 0; s < grads.length; s++) {
    const r = await postJson('/v1/adam/step', { ...body, params, grads: grads[s], ...(state ? { state } : {}) });
    expect(r.status, JSON.stringify(r.body).slice(0, 400)).toBe(200);
    ({ params, state } = r.body);
    const e = byIndex.get(s);
    if (!e) continue;
    if (e.total_norm !== undefined) expect(r.body.grad_norm, `step ${s} grad_norm`).toBe(e.total_norm);
    const want = { step: s + 1, ...routeState(e.state) };
    expect(Object.keys(state!).sort()).toEqual(Object.keys(want).sort());
    problems.push(...diffs(`step ${s} params`, params, e.params), ...diffs(`step ${s} state`, state, want));
  }
  return problems;
}

describe('POST /v1/adam/step with param_groups, against torch.optim.AdamW 1.13', () => {
  const cases = (groupsFile.cases as unknown as Array<{ name: string; optimizer: string; dtype: string; defaults: Record<string, unknown>; param_groups: Array<{ params: string[]; hyperparams: Record<string, unknown> }>; params: Tree; grads: Tree[]; expected: Expected[] }>).filter((c) => c.optimizer === 'adamw');

  it.each(cases.map((c) => ({ c, name: c.name })))('$name', async ({ c }) => {
    expect(cases.length).toBeGreaterThanOrEqual(4);
    // AdamW is Adam with decoupled weight decay; each group names its own weight_decay.
    const body = {
      params: c.params,
      dtype: c.dtype,
      hyperparams: { ...c.defaults, decoupled_weight_decay: true },
      param_groups: c.param_groups.map((g) => ({ params: g.params, ...g.hyperparams })),
    };
    expect((await replay(body, c.grads, c.expected)).slice(0, 10)).toEqual([]);
  });
});

describe('POST /v1/adam/step with clipping, against torch 1.13 (clip_grad_norm_ / clip_grad_value_, then Adam.step)', () => {
  const cases = (clipFile.cases as unknown as Array<{ name: string; kind: string; optimizer?: string; dtype: string; hyperparams: Record<string, unknown>; clip: { type: string; max_norm?: number; clip_value?: number }; params: Tree; grads: Tree[]; expected: Expected[] }>).filter(
    (c) => c.kind === 'clip_then_step' && c.optimizer === 'adam',
  );

  it.each(cases.map((c) => ({ c, name: c.name })))('$name', async ({ c }) => {
    expect(cases.length).toBeGreaterThanOrEqual(4);
    const clip = c.clip.type === 'norm' ? { clip_grad_norm: c.clip.max_norm } : { clip_grad_value: c.clip.clip_value };
    const body = { params: c.params, dtype: c.dtype, hyperparams: { ...c.hyperparams, ...clip } };
    expect((await replay(body, c.grads, c.expected)).slice(0, 10)).toEqual([]);
  });

  it('answers grad_norm null when the norm overflows float32, and steps with zeroed gradients as torch does', async () => {
    // ‖(1e20, 1e20)‖ overflows float32: torch's total_norm is inf, clip_coef = 1 / (inf + 1e-6) = 0,
    // so every gradient becomes 0 and Adam's first step moves nothing (m = v = 0, update 0 / (0 + eps)).
    const r = await postJson('/v1/adam/step', { params: [1, 2], grads: [1e20, 1e20], hyperparams: { clip_grad_norm: 1 } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.grad_norm).toBeNull();
    expect(r.body.params).toEqual([1, 2]);
    expect(r.body.state).toEqual({ step: 1, m: [0, 0], v: [0, 0] });
  });
});

describe('POST /v1/adam/step: frozen tensors, skipping, torch\'s spelling', () => {
  it('leaves a tensor whose gradient is null alone, and counts its steps apart', async () => {
    const r = await postJson('/v1/adam/step', { params: { a: [1], b: [2] }, grads: { a: [0.5], b: null }, hyperparams: { lr: 0.1 }, dtype: 'float64' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    // Adam's first step: m̂ = g, v̂ = g², so p − lr · g / (|g| + eps).
    expect(r.body.params.a[0]).toBeCloseTo(1 - (0.1 * 0.5) / (0.5 + 1e-8), 15);
    expect(r.body.params.b).toEqual([2]);
    // torch: exp_avg = 0·0.9 + g·(1 − 0.9), exp_avg_sq = 0·0.999 + g²·(1 − 0.999). b keeps its fresh zeros
    // and a step count of 0 (torch would create the same on b's first step).
    expect(r.body.state).toEqual({ step: 1, m: { a: [0.5 * (1 - 0.9)], b: [0] }, v: { a: [0.25 * (1 - 0.999)], b: [0] }, tensors: { b: { step: 0 } } });
  });

  it('skips a step whose result overflows with nonfinite: "skip", state as sent; without it, a 422', async () => {
    // grad + weight_decay · p = 3.4e308 overflows float64.
    const state = { step: 3, m: [0.1], v: [0.01] };
    const body = { params: [1.7e308], grads: [1.7e308], state, dtype: 'float64' };
    const skipped = await postJson('/v1/adam/step', { ...body, hyperparams: { weight_decay: 1, nonfinite: 'skip' } });
    expect(skipped.status, JSON.stringify(skipped.body)).toBe(200);
    expect(skipped.body).toMatchObject({ skipped: true, params: [1.7e308], state });
    const refused = await postJson('/v1/adam/step', { ...body, hyperparams: { weight_decay: 1 } });
    expectProblem(refused, 422);
    expect(refused.body.type).toBe('urn:adam-api:problem:non-finite-result');
  });

  it('accepts torch\'s betas, and refuses them beside beta1/beta2', async () => {
    const split = await postJson('/v1/adam/step', { params: [1, 2], grads: [0.3, -0.1], hyperparams: { beta1: 0.8, beta2: 0.99 } });
    const torchSpelling = await postJson('/v1/adam/step', { params: [1, 2], grads: [0.3, -0.1], hyperparams: { betas: [0.8, 0.99] } });
    expect(torchSpelling.status).toBe(200);
    expect(torchSpelling.body).toEqual(split.body);
    expectProblem(await postJson('/v1/adam/step', { params: [1], grads: [1], hyperparams: { betas: [0.8, 0.99], beta1: 0.8 } }), 422, 'hyperparams.betas');
  });

  it('keeps torch\'s names in safetensors, and a missing grads tensor is a frozen one', async () => {
    const f32 = (v: number[]) => encodeValues(v, 'F32');
    const file = writeSafetensors([
      { name: 'params/a', dtype: 'F32', shape: [1], data: f32([1]) },
      { name: 'params/b', dtype: 'F32', shape: [1], data: f32([2]) },
      { name: 'grads/a', dtype: 'F32', shape: [1], data: f32([0.5]) },
    ]);
    const r = await callBytes('POST', '/v1/adam/step', file, { 'content-type': 'application/vnd.safetensors' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const out = readSafetensors(r.bytes);
    expect([...out.tensors.keys()].sort()).toEqual(['exp_avg/a', 'exp_avg/b', 'exp_avg_sq/a', 'exp_avg_sq/b', 'params/a', 'params/b']);
    expect(decodeValues(out.tensors.get('exp_avg/b')!)).toEqual([0]);
    expect(decodeValues(out.tensors.get('params/b')!)).toEqual([2]);
    expect(JSON.parse(out.metadata!.tensors!)).toEqual({ b: { step: 0 } });
  });

  it('names the route\'s own state fields in errors', async () => {
    expectProblem(await postJson('/v1/adam/step', { params: [1], grads: [1], state: { step: 2, m: [0] } }), 422, 'state.v');
    expectProblem(await postJson('/v1/adam/step', { params: [1], grads: [1], state: { step: 2, m: [0], v: [-1] } }), 422, 'state.v[0]');
    expectProblem(await postJson('/v1/adam/step', { params: [1], grads: [1], state: { step: 2, exp_avg: [0], exp_avg_sq: [0] } }), 422, 'state.exp_avg');
  });
});
