// Sparse (row) gradients on the stateless SGD and Adagrad steps, through HTTP: real torch 1.13
// trajectories (test/fixtures/optim/sgd_sparse.json, adagrad_sparse.json) replayed the way a client
// runs them, the state each answer returns sent with the next step; params and state must equal
// torch's bit for bit at every recorded step. Then the 422s for what torch refuses.

import { describe, expect, it } from 'vitest';
import adagradSparseFile from './fixtures/optim/adagrad_sparse.json';
import sgdSparseFile from './fixtures/optim/sgd_sparse.json';
import { getJson, postJson } from './helpers/http.ts';
import { leavesOf, zipLeaves } from './helpers/trees.ts';

interface Case {
  name: string;
  optimizer: 'sgd' | 'adagrad';
  dtype: 'float32' | 'float64';
  hyperparams: Record<string, number | boolean>;
  params: unknown;
  state: Record<string, unknown> | null;
  grads: unknown[];
  expected: Array<{ step_index: number; params: unknown; state: Record<string, unknown> }>;
}

const CASES = [...(sgdSparseFile.cases as unknown as Case[]), ...(adagradSparseFile.cases as unknown as Case[])];

/** Leaf-by-leaf differences from torch, bit for bit (signs of zero included). */
function diffs(label: string, actual: unknown, expected: unknown): string[] {
  return zipLeaves(actual, expected)
    .filter(({ a, e }) => !Object.is(a, e))
    .map(({ path, a, e }) => `${label}${path}: ${a} != torch ${e}`);
}

/** torch keeps None for SGD's buffer without momentum; the API then keeps nothing. */
function expectedState(state: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(state).filter(([, v]) => v !== null && leavesOf(v).some((l) => l.value !== null)));
}

/** A "defaults" case sends no hyperparameters: the API's defaults must be torch's. */
const hyperparamsToSend = (c: Case) => (/defaults/.test(c.name) ? {} : c.hyperparams);

async function replay(c: Case): Promise<string[]> {
  let state: Record<string, unknown> | undefined = c.state ?? undefined;
  let params = c.params;
  const out: string[] = [];
  const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
  for (let s = 0; s < c.grads.length; s++) {
    const r = await postJson(`/v1/${c.optimizer}/step`, { params, grads: c.grads[s], dtype: c.dtype, hyperparams: hyperparamsToSend(c), ...(state ? { state } : {}) });
    if (r.status !== 200) return [`step ${s}: HTTP ${r.status} ${JSON.stringify(r.body)}`];
    ({ params, state } = r.body);
    const e = byIndex.get(s);
    if (!e) continue;
    out.push(...diffs(`step ${s} params`, params, e.params));
    // torch's Adagrad counts its own steps; SGD keeps none, the API counts them anyway.
    const want = { step: ((c.state?.step as number | undefined) ?? 0) + s + 1, ...expectedState(e.state) };
    expect(Object.keys(state!).sort(), `step ${s} state keys`).toEqual(Object.keys(want).sort());
    out.push(...diffs(`step ${s} state`, state, want));
  }
  return out;
}

describe('sparse gradients against torch 1.13', () => {
  it('the fixtures cover both optimizers, both dtypes, repeats and momentum', () => {
    expect(CASES.length).toBeGreaterThan(100);
    for (const o of ['sgd', 'adagrad']) for (const d of ['float32', 'float64']) expect(CASES.some((c) => c.optimizer === o && c.dtype === d)).toBe(true);
    const sparseGrads = CASES.flatMap((c) => c.grads).flatMap((g) => leavesOrRows(g));
    expect(sparseGrads.some((g) => new Set(g.indices).size < g.indices.length)).toBe(true);
    expect(CASES.some((c) => c.optimizer === 'sgd' && (c.hyperparams.momentum as number) > 0 && (c.hyperparams.dampening as number) > 0)).toBe(true);
  });

  it.each(CASES.map((c) => ({ c, name: c.name })))('$name', async ({ c }) => {
    expect((await replay(c)).slice(0, 10)).toEqual([]);
  });
});

/** The sparse gradients of one step's tree. */
function leavesOrRows(g: unknown): Array<{ indices: number[] }> {
  if (g === null || typeof g !== 'object' || Array.isArray(g)) return [];
  if ('indices' in g) return [g as { indices: number[] }];
  return Object.values(g).flatMap(leavesOrRows);
}

describe('sparse gradients with the rest of a step', () => {
  const params = { emb: [[1, 2], [3, 4], [5, 6]], w: [0.5, -0.25] };
  const emb = { indices: [2, 0, 2], values: [[0.5, 0.5], [1, 1], [0.25, -1]] };

  it('a dense tensor beside a sparse one steps as it would alone (SGD with momentum, Adagrad)', async () => {
    for (const [name, hyperparams] of [['sgd', { lr: 0.1, momentum: 0.9 }], ['adagrad', { lr: 0.1 }]] as const) {
      const both = await postJson(`/v1/${name}/step`, { params, grads: { emb, w: [0.1, 0.2] }, hyperparams });
      expect(both.status, JSON.stringify(both.body)).toBe(200);
      const sparseOnly = await postJson(`/v1/${name}/step`, { params: { emb: params.emb }, grads: { emb }, hyperparams });
      const denseOnly = await postJson(`/v1/${name}/step`, { params: { w: params.w }, grads: { w: [0.1, 0.2] }, hyperparams });
      expect(both.body.params).toEqual({ ...sparseOnly.body.params, ...denseOnly.body.params });
      // Rows the gradient does not name keep their params (and Adagrad's sum, SGD's zero buffer).
      expect(both.body.params.emb[1]).toEqual([3, 4]);
    }
  });

  it('a param group applies its lr to a sparse tensor; a null gradient freezes one', async () => {
    const grouped = await postJson('/v1/adagrad/step', { params, grads: { emb, w: null }, hyperparams: { lr: 0.1 }, param_groups: [{ params: ['emb'], lr: 0.5 }] });
    expect(grouped.status, JSON.stringify(grouped.body)).toBe(200);
    const alone = await postJson('/v1/adagrad/step', { params: { emb: params.emb }, grads: { emb }, hyperparams: { lr: 0.5 } });
    expect(grouped.body.params.emb).toEqual(alone.body.params.emb);
    expect(grouped.body.params.w).toEqual(params.w);
    expect(grouped.body.state.tensors).toEqual({ w: { step: 0 } });
  });

  it('SGD: torch adds each row sent on its own, so a repeated row is not the same as its sum', async () => {
    // float32, p = 1, lr = 1, the row 2^-25 sent twice: 1 - 2^-25 is halfway between 1 - 2^-24 and 1
    // and rounds to even (1), twice. Summed first, 1 - 2^-24 is exact.
    const tiny = 2 ** -25;
    const twice = await postJson('/v1/sgd/step', { params: [[1]], grads: { indices: [0, 0], values: [[tiny], [tiny]] }, hyperparams: { lr: 1 } });
    expect(twice.status, JSON.stringify(twice.body)).toBe(200);
    expect(twice.body.params).toEqual([[1]]);
    const summed = await postJson('/v1/sgd/step', { params: [[1]], grads: { indices: [0], values: [[2 * tiny]] }, hyperparams: { lr: 1 } });
    expect(summed.body.params).toEqual([[1 - 2 ** -24]]);
    // Adagrad coalesces first: its one row is the sum. sum = (2^-24)², std = 2^-24 (+ eps 1e-10 → rounds), p -= 0.01·g/std.
    const adagrad = await postJson('/v1/adagrad/step', { params: [[1]], grads: { indices: [0, 0], values: [[tiny], [tiny]] }, dtype: 'float64', hyperparams: { eps: 0 } });
    expect(adagrad.body.params).toEqual([[0.99]]);
    expect(adagrad.body.state.sum).toEqual([[2 ** -48]]);
  });

  it('SGD with momentum returns the buffer dense: the rows sent, summed, zeros elsewhere', async () => {
    const r = await postJson('/v1/sgd/step', { params, grads: { emb, w: null }, hyperparams: { lr: 0.1, momentum: 0.9 }, dtype: 'float64' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.state.momentum_buffer).toEqual({ emb: [[1, 1], [0, 0], [0.75, -0.5]], w: null });
  });
});

describe('what torch refuses with a sparse gradient', () => {
  const params = { emb: [[1, 2], [3, 4], [5, 6]], w: [0.5] };
  const emb = { indices: [1], values: [[1, 1]] };

  it('Adagrad: weight_decay (torch raises), in hyperparams or in the sparse tensor\'s group', async () => {
    const top = await postJson('/v1/adagrad/step', { params, grads: { emb, w: [1] }, hyperparams: { weight_decay: 0.1 } });
    expect(top.status).toBe(422);
    expect(top.body.errors[0]).toMatchObject({ field: 'hyperparams.weight_decay', value: 0.1 });
    expect(top.body.errors[0].message).toMatch(/not compatible with sparse gradients/);
    const group = await postJson('/v1/adagrad/step', { params, grads: { emb, w: [1] }, param_groups: [{ params: ['emb'], weight_decay: 0.01 }] });
    expect(group.status).toBe(422);
    expect(group.body.errors[0]).toMatchObject({ field: 'param_groups[0].weight_decay', value: 0.01 });
    // weight_decay on the dense tensors only is torch's dense path: fine.
    const denseOnly = await postJson('/v1/adagrad/step', { params, grads: { emb, w: [1] }, hyperparams: { weight_decay: 0.1 }, param_groups: [{ params: ['emb'], weight_decay: 0 }] });
    expect(denseOnly.status, JSON.stringify(denseOnly.body)).toBe(200);
  });

  it('Adagrad: a gradient without rows on a 2-D tensor (torch raises); on a 1-D tensor it only counts the step', async () => {
    const empty = await postJson('/v1/adagrad/step', { params, grads: { emb: { indices: [], values: [] }, w: [1] } });
    expect(empty.status).toBe(422);
    expect(empty.body.errors[0].field).toBe('grads.emb.indices');
    const oneD = await postJson('/v1/adagrad/step', { params: [1, 2], grads: { indices: [], values: [] } });
    expect(oneD.status, JSON.stringify(oneD.body)).toBe(200);
    expect(oneD.body).toMatchObject({ params: [1, 2], state: { step: 1, sum: [0, 0] } });
  });

  it('SparseAdam: a gradient without rows on a 2-D tensor (torch 1.13 raises a size mismatch); on a 1-D tensor it only counts the step', async () => {
    const empty = await postJson('/v1/sparse_adam/step', { params: { emb: [[1, 2], [3, 4], [5, 6]] }, grads: { emb: { indices: [], values: [] } } });
    expect(empty.status).toBe(422);
    expect(empty.body.errors[0].field).toBe('grads.emb.indices');
    // torch: p stays [1, 1, 1] and state["step"] becomes 1 (checked with torch 1.13).
    const oneD = await postJson('/v1/sparse_adam/step', { params: [1, 1, 1], grads: { indices: [], values: [] } });
    expect(oneD.status, JSON.stringify(oneD.body)).toBe(200);
    expect(oneD.body).toMatchObject({ params: [1, 1, 1], state: { step: 1 } });
  });

  it('SGD: weight_decay (torch raises add(sparse, dense)) and nesterov (needs torch\'s sparse buffer)', async () => {
    const wd = await postJson('/v1/sgd/step', { params, grads: { emb, w: [1] }, hyperparams: { lr: 0.1, weight_decay: 1e-4 } });
    expect(wd.status).toBe(422);
    expect(wd.body.errors[0]).toMatchObject({ field: 'hyperparams.weight_decay', value: 1e-4 });
    const nesterov = await postJson('/v1/sgd/step', { params, grads: { emb, w: [1] }, hyperparams: { lr: 0.1, momentum: 0.9, nesterov: true } });
    expect(nesterov.status).toBe(422);
    expect(nesterov.body.errors[0]).toMatchObject({ field: 'hyperparams.nesterov', value: true });
    const groupNesterov = await postJson('/v1/sgd/step', { params, grads: { emb, w: [1] }, hyperparams: { lr: 0.1 }, param_groups: [{ params: ['emb'], momentum: 0.5, nesterov: true }] });
    expect(groupNesterov.status).toBe(422);
    expect(groupNesterov.body.errors[0].field).toBe('param_groups[0].nesterov');
    // The same hyperparameters with dense gradients are torch's dense path.
    const dense = await postJson('/v1/sgd/step', { params, grads: { emb: [[1, 1], [1, 1], [1, 1]], w: [1] }, hyperparams: { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 1e-4 } });
    expect(dense.status, JSON.stringify(dense.body)).toBe(200);
  });

  it('an index outside the tensor\'s rows, and rows that do not fit the values, name the field', async () => {
    for (const name of ['sgd', 'adagrad']) {
      for (const [bad, value] of [[3, '3'], [-1, '-1'], [0.5, '0.5']] as const) {
        const r = await postJson(`/v1/${name}/step`, { params, grads: { emb: { indices: [0, bad], values: [[1, 1], [1, 1]] }, w: null }, hyperparams: { lr: 0.1 } });
        expect(r.status).toBe(422);
        expect(r.body.errors[0]).toMatchObject({ field: 'grads.emb.indices[1]', value });
      }
      const short = await postJson(`/v1/${name}/step`, { params, grads: { emb: { indices: [0, 1], values: [[1, 1]] }, w: null }, hyperparams: { lr: 0.1 } });
      expect(short.status).toBe(422);
      expect(short.body.errors[0].field).toMatch(/^grads\.emb\.values/);
      const clip = await postJson(`/v1/${name}/step`, { params, grads: { emb, w: null }, hyperparams: { lr: 0.1, clip_grad_norm: 1 } });
      expect(clip.status).toBe(422);
      expect(clip.body.errors[0].field).toBe('hyperparams.clip_grad_norm');
    }
  });

  it('a sparse gradient to an optimizer without a sparse branch names the ones that take it', async () => {
    for (const name of ['adam', 'adamw', 'rmsprop', 'adadelta']) {
      const r = await postJson(`/v1/${name}/step`, { params, grads: { emb, w: [1] } });
      expect(r.status).toBe(422);
      expect(r.body.errors[0].field).toBe('grads.emb');
      expect(r.body.errors[0].message).toMatch(/sparse \(row\) gradients go to sgd, adagrad, sparse_adam$/);
    }
  });

  it('the catalogue says which optimizers take sparse gradients', async () => {
    for (const name of ['sgd', 'adagrad']) {
      const r = await getJson(`/v1/algorithms/${name}`);
      expect(r.status).toBe(200);
      expect(r.body.description).toMatch(/\{"indices": \[\.\.\.\], "values": \[\[row\], \.\.\.\]\}/);
    }
  });
});
