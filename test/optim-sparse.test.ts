// Sparse (row) gradients on the stateless SGD and Adagrad steps, through HTTP: real torch 1.13
// trajectories (test/fixtures/optim/sgd_sparse.json, adagrad_sparse.json) replayed the way a client
// runs them, the state each answer returns sent with the next step; params and state must equal
// torch's bit for bit at every recorded step. Then the 422s for what torch refuses.

import { describe, expect, it } from 'vitest';
import adagradSparseFile from './fixtures/optim/adagrad_sparse.json';
import sgdSparseFile from './fixtures/optim/sgd_sparse.json';
import { callBytes, getJson, postJson } from './helpers/http.ts';
import { encodeValues, writeSafetensors, type Dt, type TestTensor } from './helpers/safetensors.ts';
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

type Body = { params: unknown; grads: unknown; dtype: string; hyperparams: Record<string, unknown>; state?: Record<string, unknown> };
type Send = (optimizer: string, body: Body) => Promise<{ status: number; body: any }>;

const sendJson: Send = (optimizer, body) => postJson(`/v1/${optimizer}/step`, body);

/** Named tensors of a tree; a gradient given as rows is `{indices, values}`, a null one absent. */
function tensorsOf(tree: unknown, prefix: string[] = []): Array<{ name: string; value: unknown }> {
  if (tree !== null && typeof tree === 'object' && !Array.isArray(tree) && !('indices' in tree)) {
    return Object.entries(tree as Record<string, unknown>).flatMap(([k, v]) => tensorsOf(v, [...prefix, k]));
  }
  return [{ name: prefix.join('.'), value: tree }];
}

const shapeOf = (t: unknown): number[] => (Array.isArray(t) ? [t.length, ...(t.length > 0 ? shapeOf(t[0]) : [])] : []);
const flatOf = (t: unknown): number[] => (Array.isArray(t) ? t.flatMap(flatOf) : [t as number]);
const slotName = (slot: string, name: string) => (name === '' ? slot : `${slot}/${name}`);

/**
 * The same request as a safetensors file (answered in JSON): rows as `grads.indices/<name>` (I64,
 * torch's `_indices()` shape [1, k]) and `grads.values/<name>`; the state's slots and step in the file.
 */
const sendSafetensors: Send = async (optimizer, body) => {
  const dt: Dt = body.dtype === 'float32' ? 'F32' : 'F64';
  const tensors: TestTensor[] = [];
  const dense = (slot: string, tree: unknown) => {
    for (const { name, value } of tensorsOf(tree)) if (value !== null) tensors.push({ name: slotName(slot, name), dtype: dt, shape: shapeOf(value), data: encodeValues(flatOf(value), dt) });
  };
  dense('params', body.params);
  for (const { name, value } of tensorsOf(body.grads)) {
    if (value === null) continue;
    if (typeof value === 'object' && !Array.isArray(value)) {
      const { indices, values } = value as { indices: number[]; values: unknown[] };
      const ints = new Uint8Array(BigInt64Array.from(indices.map(BigInt)).buffer);
      tensors.push({ name: slotName('grads.indices', name), dtype: 'I64' as Dt, shape: [1, indices.length], data: ints });
      const rowShape = shapeOf(values[0] ?? []);
      tensors.push({ name: slotName('grads.values', name), dtype: dt, shape: [indices.length, ...(values.length > 0 ? rowShape : shapeOf(body.params).slice(1))], data: encodeValues(values.flatMap(flatOf), dt) });
    } else tensors.push({ name: slotName('grads', name), dtype: dt, shape: shapeOf(value), data: encodeValues(flatOf(value), dt) });
  }
  const { step, ...slots } = body.state ?? {};
  for (const [slot, tree] of Object.entries(slots)) dense(slot, tree);
  const metadata = { hyperparams: JSON.stringify(body.hyperparams), dtype: body.dtype, ...(step === undefined ? {} : { step: String(step) }) };
  const r = await callBytes('POST', `/v1/${optimizer}/step`, writeSafetensors(tensors, metadata), { 'content-type': 'application/vnd.safetensors', accept: 'application/json' });
  return { status: r.status, body: r.body };
};

async function replay(c: Case, send: Send = sendJson): Promise<string[]> {
  let state: Record<string, unknown> | undefined = c.state ?? undefined;
  let params = c.params;
  const out: string[] = [];
  const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
  for (let s = 0; s < c.grads.length; s++) {
    const r = await send(c.optimizer, { params, grads: c.grads[s], dtype: c.dtype, hyperparams: hyperparamsToSend(c), ...(state ? { state } : {}) });
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

  it.each(CASES.filter((_, i) => i % 3 === 0).map((c) => ({ c, name: c.name })))('$name, in safetensors', async ({ c }) => {
    expect((await replay(c, sendSafetensors)).slice(0, 10)).toEqual([]);
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

  // torch 1.13 decides by the last dimension alone (the values of no rows have shape [0]): SparseAdam
  // runs with a last dimension 0 ((2, 0): step 1, empty moments) and raises with 1 ((3, 1)); Adagrad
  // runs with 0 or 1 ((3, 1): params and sum unchanged, step 1) and raises from 2 on ((2, 2, 2)).
  it('a gradient without rows: torch runs it when the tensor\'s last dimension is 0 (SparseAdam) or 0 or 1 (Adagrad)', async () => {
    const adamEmpty = await postJson('/v1/sparse_adam/step', { params: { e: [[], []] }, grads: { e: { indices: [], values: [] } } });
    expect(adamEmpty.status, JSON.stringify(adamEmpty.body)).toBe(200);
    expect(adamEmpty.body).toMatchObject({ params: { e: [[], []] }, state: { step: 1, exp_avg: { e: [[], []] }, exp_avg_sq: { e: [[], []] } } });
    const adamOne = await postJson('/v1/sparse_adam/step', { params: { e: [[1], [2], [3]] }, grads: { e: { indices: [], values: [] } } });
    expect(adamOne.status).toBe(422);
    expect(adamOne.body.errors[0].field).toBe('grads.e.indices');
    const adagradOne = await postJson('/v1/adagrad/step', { params: { e: [[1], [2], [3]] }, grads: { e: { indices: [], values: [] } } });
    expect(adagradOne.status, JSON.stringify(adagradOne.body)).toBe(200);
    expect(adagradOne.body).toMatchObject({ params: { e: [[1], [2], [3]] }, state: { step: 1, sum: { e: [[0], [0], [0]] } } });
    const adagradEmpty = await postJson('/v1/adagrad/step', { params: { e: [[], []] }, grads: { e: { indices: [], values: [] } } });
    expect(adagradEmpty.status, JSON.stringify(adagradEmpty.body)).toBe(200);
    expect(adagradEmpty.body).toMatchObject({ params: { e: [[], []] }, state: { step: 1, sum: { e: [[], []] } } });
    const adagradCube = await postJson('/v1/adagrad/step', { params: { e: [[[1, 2], [3, 4]], [[5, 6], [7, 8]]] }, grads: { e: { indices: [], values: [] } } });
    expect(adagradCube.status).toBe(422);
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
      const clip = await postJson(`/v1/${name}/step`, { params, grads: { emb, w: null }, hyperparams: { lr: 0.1, clip_grad_value: 1 } });
      expect(clip.status).toBe(422);
      expect(clip.body.errors[0].field).toBe('hyperparams.clip_grad_value');
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
    const all = (await getJson('/v1/algorithms')).body.algorithms as Array<{ name: string; sparse_gradients: string }>;
    expect(Object.fromEntries(all.filter((a) => a.sparse_gradients !== 'no').map((a) => [a.name, a.sparse_gradients]))).toEqual({ sgd: 'also', adagrad: 'also', sparse_adam: 'only' });
  });
});

describe('sparse gradients in safetensors', () => {
  const f32 = (v: number[]) => encodeValues(v, 'F32');
  const i64 = (v: number[]) => new Uint8Array(BigInt64Array.from(v.map(BigInt)).buffer);
  const emb = { name: 'params/emb', dtype: 'F32' as Dt, shape: [3, 2], data: f32([1, 2, 3, 4, 5, 6]) };
  const indices = (v: number[], dtype: Dt = 'I64' as Dt): TestTensor => ({ name: 'grads.indices/emb', dtype, shape: [v.length], data: dtype === ('I64' as Dt) ? i64(v) : f32(v) });
  const values = (rows: number[][]): TestTensor => ({ name: 'grads.values/emb', dtype: 'F32', shape: [rows.length, 2], data: f32(rows.flat()) });
  const send = (optimizer: string, tensors: TestTensor[], hyperparams: Record<string, unknown> = { lr: 0.5 }) =>
    callBytes('POST', `/v1/${optimizer}/step`, writeSafetensors([emb, ...tensors], { hyperparams: JSON.stringify(hyperparams) }), { 'content-type': 'application/vnd.safetensors', accept: 'application/json' });

  it('equal the JSON rows, I64 or I32 indices, [k] or [1, k]', async () => {
    const json = await postJson('/v1/sgd/step', { params: { emb: [[1, 2], [3, 4], [5, 6]] }, grads: { emb: { indices: [2, 0, 2], values: [[1, 1], [0.5, 0.25], [2, 2]] } }, hyperparams: { lr: 0.5 } });
    expect(json.status, JSON.stringify(json.body)).toBe(200);
    // SGD adds each row sent on its own: row 2 gets −0.5 and −1, row 0 −0.25 and −0.125; row 1 stays.
    expect(json.body.params).toEqual({ emb: [[0.75, 1.875], [3, 4], [3.5, 4.5]] });
    const i32 = new Uint8Array(Int32Array.from([2, 0, 2]).buffer);
    for (const ix of [indices([2, 0, 2]), { ...indices([2, 0, 2]), shape: [1, 3] }, { name: 'grads.indices/emb', dtype: 'I32' as Dt, shape: [3], data: i32 }]) {
      const r = await send('sgd', [ix, values([[1, 1], [0.5, 0.25], [2, 2]])]);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.params).toEqual(json.body.params);
    }
  });

  it('refuse half a sparse gradient, rows beside a dense gradient, bad indices and dense-only optimizers, naming the tensor', async () => {
    const cases: Array<[string, TestTensor[], string, string?]> = [
      ['indices without values', [indices([0])], 'safetensors["grads.values/emb"]'],
      ['values without indices', [values([[1, 1]])], 'safetensors["grads.indices/emb"]'],
      ['rows and a dense gradient', [indices([0]), values([[1, 1]]), { name: 'grads/emb', dtype: 'F32', shape: [3, 2], data: f32([0, 0, 0, 0, 0, 0]) }], 'safetensors["grads/emb"]'],
      ['an index past the last row', [indices([3]), values([[1, 1]])], 'safetensors["grads.indices/emb"][0]'],
      ['a negative index', [indices([-1]), values([[1, 1]])], 'safetensors["grads.indices/emb"][0]'],
      ['float indices', [indices([0], 'F32'), values([[1, 1]])], 'safetensors["grads.indices/emb"].dtype'],
      ['values of the wrong row shape', [indices([0]), { name: 'grads.values/emb', dtype: 'F32', shape: [1, 3], data: f32([1, 1, 1]) }], 'safetensors["grads.values/emb"].shape'],
      ['a dense-only optimizer', [indices([0]), values([[1, 1]])], 'safetensors["grads.indices/emb"]', 'adamw'],
    ];
    for (const [what, tensors, field, optimizer] of cases) {
      const r = await send(optimizer ?? 'sgd', tensors);
      expect(r.status, `${what}: ${JSON.stringify(r.body)}`).toBe(422);
      expect(r.body.errors[0].field, what).toBe(field);
      if (optimizer) expect(r.body.errors[0].message).toMatch(/sgd, adagrad, sparse_adam/);
    }
  });
});
