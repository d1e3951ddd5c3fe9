// clip_grad_norm with sparse (row) gradients, as torch 1.13 does it (test/fixtures/optim/clip_sparse.json,
// made by test/fixtures/optim/generate.py): a sparse gradient counts in the total norm (the norm of its
// coalesced values) but reaches the step unscaled (torch's `g.detach().mul_(coef)` scales a shallow
// copy of a sparse tensor); dense gradients beside it are scaled. Replayed through the stateless step
// (state fed back) and a hosted optimizer (JSON and safetensors steps, evicted halfway): params, state
// and grad_norm equal torch's bit for bit at every step. clip_grad_value_ raises in torch for a sparse
// gradient: a 422 saying so, stateless and hosted.

import { evictDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import clipSparseFile from './fixtures/optim/clip_sparse.json';
import { postJson } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall } from './helpers/optimizers.ts';
import { safetensorsStep } from './helpers/sparse.ts';
import { leavesOf, zipLeaves } from './helpers/trees.ts';

interface Case {
  name: string;
  optimizer: 'sgd' | 'adagrad' | 'sparseadam';
  dtype: 'float32' | 'float64';
  clip: { type: 'norm'; max_norm: number };
  hyperparams: Record<string, number | boolean>;
  params: unknown;
  grads: Array<Record<string, unknown>>;
  expected: Array<{ step_index: number; total_norm: number; params: unknown; state: Record<string, unknown> }>;
}

const CASES = clipSparseFile.cases as unknown as Case[];
const apiName = (c: Case) => (c.optimizer === 'sparseadam' ? 'sparse_adam' : c.optimizer);
const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));

function diffs(label: string, actual: unknown, expected: unknown): string[] {
  return zipLeaves(actual, expected)
    .filter(({ a, e }) => !Object.is(a, e))
    .map(({ path, a, e }) => `${label}${path}: ${a} != torch ${e}`);
}

/** torch's state without the slots it keeps as None (SGD without momentum); the step count as the API keeps it. */
function expectedState(c: Case, s: number, state: Record<string, unknown>): Record<string, unknown> {
  const kept = Object.fromEntries(Object.entries(state).filter(([, v]) => v !== null && leavesOf(v).some((l) => l.value !== null)));
  return { ...kept, step: s + 1 };
}

describe('clip_grad_norm with sparse gradients equals torch 1.13', () => {
  it('the fixtures have sparse gradients counted but not scaled, and dense ones scaled', () => {
    expect(CASES.length).toBe(10);
    const mixed = CASES.find((c) => c.name === 'clip-sparse-norm-then-sgd-f32')!;
    const clipped = (mixed.expected[0] as unknown as { clipped_grads: Record<string, unknown> }).clipped_grads;
    expect(clipped.emb).toEqual(mixed.grads[0]!.emb);
    expect(clipped.w).not.toEqual(mixed.grads[0]!.w);
  });

  it.each(CASES.map((c) => ({ c, name: c.name })))('$name: stateless', async ({ c }) => {
    let params = c.params;
    let state: Record<string, unknown> | undefined;
    const out: string[] = [];
    for (let s = 0; s < c.grads.length; s++) {
      const r = await postJson(`/v1/${apiName(c)}/step`, { params, grads: c.grads[s], dtype: c.dtype, hyperparams: { ...c.hyperparams, clip_grad_norm: c.clip.max_norm }, ...(state ? { state } : {}) });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      ({ params, state } = r.body);
      const e = c.expected.find((x) => x.step_index === s)!;
      expect(r.body.grad_norm, `step ${s}`).toBe(e.total_norm);
      out.push(...diffs(`step ${s} params`, params, e.params));
      out.push(...diffs(`step ${s} state`, state, expectedState(c, s, e.state)));
    }
    expect(out.slice(0, 10)).toEqual([]);
  });

  it.each(CASES.map((c) => ({ c, name: c.name })))('$name: hosted (JSON and safetensors steps, evicted halfway)', { timeout: 60_000 }, async ({ c }) => {
    const opt = await createOptimizer({ optimizer: apiName(c), dtype: c.dtype, params: c.params, hyperparams: { ...c.hyperparams, clip_grad_norm: c.clip.max_norm } });
    const out: string[] = [];
    for (let s = 0; s < c.grads.length; s++) {
      const r = s % 2 === 0 ? await opCall('POST', opt, '/step', { grads: c.grads[s] }) : await safetensorsStep(opt, c.grads[s]!, c.dtype);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      const e = c.expected.find((x) => x.step_index === s)!;
      expect(r.body.grad_norm, `step ${s}`).toBe(e.total_norm);
      out.push(...diffs(`step ${s} params`, r.body.params, e.params));
      if (s === 2) await evictDurableObject(stubOf(opt.id));
    }
    const snap = await opCall('GET', opt, '/state');
    const last = c.expected[c.expected.length - 1]!;
    const want = expectedState(c, c.grads.length - 1, last.state);
    for (const k of Object.keys(want)) out.push(...diffs(`state.${k}`, snap.body[k], want[k]));
    expect(out.slice(0, 10)).toEqual([]);
    expect((await opCall('GET', opt, '/history')).body.entries.map((x: { grad_norm: number }) => x.grad_norm)).toEqual(c.expected.map((x) => x.total_norm));
  });
});

describe('clip_grad_value with a sparse gradient: torch refuses it', () => {
  const params = { emb: [[1, 2], [3, 4], [5, 6]], w: [0.5] };
  const grads = { emb: { indices: [1], values: [[1, 1]] }, w: [1] };

  it('stateless: a 422 naming hyperparams.clip_grad_value and saying torch refuses it', async () => {
    const r = await postJson('/v1/sgd/step', { params, grads, hyperparams: { lr: 0.1, clip_grad_value: 0.5 } });
    expect(r.status).toBe(422);
    expect(r.body.errors[0]).toMatchObject({ field: 'hyperparams.clip_grad_value', value: 0.5 });
    expect(r.body.errors[0].message).toMatch(/torch 1\.13 refuses clip_grad_value_ with a sparse gradient/);
    // A frozen sparse tensor is no gradient: dense ones alone are clipped.
    const dense = await postJson('/v1/sgd/step', { params, grads: { emb: null, w: [1] }, dtype: 'float64', hyperparams: { lr: 0.1, clip_grad_value: 0.5 } });
    expect(dense.status, JSON.stringify(dense.body)).toBe(200);
    expect(dense.body.params.w).toEqual([0.45]);
  });

  it('hosted: the same 422, and nothing changes', async () => {
    const opt = await createOptimizer({ optimizer: 'adagrad', dtype: 'float64', params, hyperparams: { clip_grad_value: 0.5 } });
    const before = await opCall('GET', opt, '/state');
    const r = await opCall('POST', opt, '/step', { grads });
    expectProblem(r, 422, 'hyperparams.clip_grad_value');
    expect(r.body.errors[0].message).toMatch(/torch 1\.13 refuses clip_grad_value_/);
    expect(await opCall('GET', opt, '/state')).toMatchObject({ body: before.body });
  });
});
