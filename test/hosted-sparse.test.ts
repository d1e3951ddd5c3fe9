// Sparse (row) gradients on hosted optimizers, through HTTP: `{"indices": [...], "values": [[row], ...]}`
// per tensor in JSON, `grads.indices/<name>` with `grads.values/<name>` in safetensors, as the stateless
// step takes them. Real torch 1.13 trajectories (test/fixtures/optim/sgd_sparse.json,
// adagrad_sparse.json, sparseadam.json) stepped on hosted optimizers, JSON and safetensors steps
// alternating, evicted halfway: params equal torch's bit for bit at every recorded step, the state
// at the end. Then a mixed tree (dense, sparse and frozen tensors, param_groups, nonfinite: "skip")
// equal to the stateless step at every step, across eviction and JSON / safetensors snapshots
// restored into new optimizers; Idempotency-Key retries (rows are part of the request); bad rows
// and what torch refuses, each a 422 naming the field that changes nothing.

import { evictDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import adagradSparseFile from './fixtures/optim/adagrad_sparse.json';
import sgdSparseFile from './fixtures/optim/sgd_sparse.json';
import sparseAdamFile from './fixtures/optim/sparseadam.json';
import { callBytes, postJson } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, type Created } from './helpers/optimizers.ts';
import { encodeValues, writeSafetensors, type Dt } from './helpers/safetensors.ts';
import type { Case as FixtureCase } from './helpers/optim-replay.ts';
import { safetensorsStep } from './helpers/sparse.ts';
import { leavesOf, zipLeaves } from './helpers/trees.ts';

type Json = Record<string, any>;

/** A torch fixture case (test/fixtures/optim/*.json); the sparse files name no optimizer per case. */
type Case = Omit<FixtureCase, 'optimizer'>;

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));
const ST = 'application/vnd.safetensors';

/** Cases that start fresh (a hosted optimizer is created without state) on a named tree or one tensor. */
const FIXTURES = [
  ...(sgdSparseFile.cases as unknown as Case[]).map((c) => ({ ...c, optimizer: 'sgd' })),
  ...(adagradSparseFile.cases as unknown as Case[]).map((c) => ({ ...c, optimizer: 'adagrad' })),
  ...(sparseAdamFile.cases as unknown as Case[]).map((c) => ({ ...c, optimizer: 'sparse_adam' })),
].filter((c) => c.state === null);

function diffs(label: string, actual: unknown, expected: unknown): string[] {
  return zipLeaves(actual, expected)
    .filter(({ a, e }) => !Object.is(a, e))
    .map(({ path, a, e }) => `${label}${path}: ${a} != torch ${e}`);
}

/** Every leaf, null included, by path: equal means bit for bit (Object.is). */
function sameLeaves(label: string, actual: unknown, expected: unknown): string[] {
  const a = new Map(leavesOf(actual).map((l) => [l.path, l.value]));
  const e = new Map(leavesOf(expected).map((l) => [l.path, l.value]));
  const out: string[] = [];
  for (const k of new Set([...a.keys(), ...e.keys()])) if (!Object.is(a.get(k), e.get(k))) out.push(`${label}${k}: ${a.get(k)} != ${e.get(k)}`);
  return out;
}

/** torch's state without the slots it keeps as None (SGD without momentum). */
const kept = (state: Record<string, unknown>) => Object.fromEntries(Object.entries(state).filter(([, v]) => v !== null && leavesOf(v).some((l) => l.value !== null)));

const isRows = (g: unknown) => g !== null && typeof g === 'object' && !Array.isArray(g) && 'indices' in g;

/** A step as a safetensors file (also a tree that is one tensor: `grads.indices` / `grads.values`); null when the file cannot say it. */
async function fileStep(opt: Created, grads: unknown, dtype: string, headers: Record<string, string> = {}) {
  if (!isRows(grads)) return Array.isArray(grads) ? null : safetensorsStep(opt, grads as Record<string, unknown>, dtype, headers);
  const { indices, values } = grads as { indices: number[]; values: unknown[] };
  if (values.length === 0) return null; // the row shape of no rows: JSON says it
  const dt: Dt = dtype === 'float32' ? 'F32' : 'F64';
  const flat = leavesOf(values).map((l) => l.value as number);
  const rowShape = (v: unknown): number[] => (Array.isArray(v) ? [v.length, ...rowShape(v[0])] : []);
  const file = writeSafetensors([
    { name: 'grads.indices', dtype: 'I32' as Dt, shape: [indices.length], data: new Uint8Array(Int32Array.from(indices).buffer) },
    { name: 'grads.values', dtype: dt, shape: rowShape(values), data: encodeValues(flat, dt) },
  ]);
  const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, file, authed(opt.token, { 'content-type': ST, accept: 'application/json', ...headers }));
  return { status: r.status, body: r.body };
}

describe('hosted sparse gradients against torch 1.13', () => {
  it('the fixtures cover the three optimizers and both dtypes', () => {
    expect(FIXTURES.length).toBeGreaterThan(120);
    for (const o of ['sgd', 'adagrad', 'sparse_adam']) for (const d of ['float32', 'float64']) expect(FIXTURES.some((c) => c.optimizer === o && c.dtype === d)).toBe(true);
  });

  it.each(FIXTURES.map((c) => ({ c, name: `${c.optimizer}: ${c.name}` })))('$name', { timeout: 60_000 }, async ({ c }) => {
    const opt = await createOptimizer({ optimizer: c.optimizer, dtype: c.dtype, params: c.params, hyperparams: c.hyperparams });
    const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
    const out: string[] = [];
    for (let s = 0; s < c.grads.length; s++) {
      const r = (s % 2 === 1 ? await fileStep(opt, c.grads[s], c.dtype) : null) ?? (await opCall('POST', opt, '/step', { grads: c.grads[s] }));
      if (r.status !== 200) throw new Error(`step ${s}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
      const e = byIndex.get(s);
      if (e) out.push(...diffs(`step ${s} params`, r.body.params, e.params));
      if (s === 1) await evictDurableObject(stubOf(opt.id));
    }
    const last = c.expected[c.expected.length - 1]!;
    expect(last.step_index).toBe(c.grads.length - 1);
    const snap = (await opCall('GET', opt, '/state')).body;
    const want = kept(last.state);
    for (const [k, v] of Object.entries(want)) out.push(...diffs(`state.${k}`, snap[k], k === 'step' ? c.grads.length : v));
    expect(out.slice(0, 10)).toEqual([]);
  });
});

// A table beside dense and frozen tensors; rows repeat; two param groups.
const PARAMS = { emb: [[0.5, -1], [2, 0.25], [-0.75, 1.5], [1, 1], [0, -2]], pos: [[1, 2], [3, 4]], w: [0.5, -1.25, 2] };
const rowsOf = (k: number, n: number) => ({
  indices: [k % 5, (k + 2) % 5, k % 5].slice(0, n),
  values: [[0.1 * k, -0.2], [0.3, 0.05 * k], [-0.4, 0.7]].slice(0, n),
});
/** Step k's gradients: emb always rows, pos rows or frozen or dense, w dense or frozen. */
function gradsAt(k: number): Json {
  const pos = k % 3 === 0 ? null : k % 3 === 1 ? { indices: [1], values: [[0.5 * k, -0.25]] } : [[0.1, 0.2], [k, -k]];
  return { emb: rowsOf(k, 1 + (k % 3)), pos, w: k % 4 === 2 ? null : [0.1 * k, -0.3, 0.7] };
}

const MIXED = [
  { optimizer: 'sgd', hyperparams: { lr: 0.1, momentum: 0.9, dampening: 0.1 }, param_groups: [{ params: ['pos'], lr: 0.05, momentum: 0 }] },
  { optimizer: 'adagrad', hyperparams: { lr: 0.1, lr_decay: 0.01 }, param_groups: [{ params: ['w'], lr: 0.5, weight_decay: 0.1 }] },
  { optimizer: 'sparse_adam', hyperparams: { lr: 0.01 }, param_groups: [{ params: ['pos'], lr: 0.1 }] },
];
/** SparseAdam takes rows only: its dense gradients are sent as every row. */
const forOptimizer = (optimizer: string, g: Json): Json =>
  optimizer !== 'sparse_adam' ? g : Object.fromEntries(Object.entries(g).map(([k, v]) => [k, Array.isArray(v) ? { indices: v.map((_, i) => i), values: v } : v]));

async function stateless(c: (typeof MIXED)[number], dtype: string, params: unknown, grads: Json, state: Json | null, extra: Json = {}): Promise<Json> {
  const r = await postJson(`/v1/${c.optimizer}/step`, { params, grads, dtype, hyperparams: { ...c.hyperparams, ...extra }, param_groups: c.param_groups, ...(state ? { state } : {}) });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}

/** The state fields of a JSON snapshot. */
function stateOf(snapshot: Json): Json {
  const { id: _i, optimizer: _o, dtype: _d, hyperparams: _h, param_groups: _g, schedule: _s, scheduler_state: _ss, params: _p, created_at: _c, updated_at: _u, skipped_steps: _k, ...state } = snapshot;
  return state;
}

describe.each(MIXED.flatMap((c) => (['float32', 'float64'] as const).map((dtype) => ({ c, dtype, name: `${c.optimizer} ${dtype}` }))))('$name: dense, sparse and frozen tensors with param_groups', ({ c, dtype }) => {
  it('equal the stateless step at every step, across eviction, skipped steps and snapshots restored into new optimizers', { timeout: 120_000 }, async () => {
    const opt = await createOptimizer({ optimizer: c.optimizer, dtype, params: PARAMS, hyperparams: { ...c.hyperparams, nonfinite: 'skip' }, param_groups: c.param_groups });
    let params: unknown = PARAMS;
    let state: Json | null = null;
    const problems: string[] = [];
    const steps = 8;
    for (let k = 0; k < steps; k++) {
      const g = forOptimizer(c.optimizer, gradsAt(k));
      const want = await stateless(c, dtype, params, g, state);
      params = want.params;
      state = want.state;
      const got = k % 2 === 0 ? await opCall('POST', opt, '/step', { grads: g }) : (await fileStep(opt, g, dtype))!;
      expect(got.status, JSON.stringify(got.body)).toBe(200);
      expect(got.body.step).toBe(k + 1);
      problems.push(...sameLeaves(`step ${k} params`, got.body.params, want.params));
      if (k === 3) await evictDurableObject(stubOf(opt.id));
      if (k === 5) {
        // A non-finite row (safetensors carries NaN) is skipped as GradScaler skips: nothing changes.
        const bad = { ...g, emb: { indices: [0], values: [[Number.NaN, 1]] } };
        const skipped = (await fileStep(opt, bad, dtype))!;
        expect(skipped.status, JSON.stringify(skipped.body)).toBe(200);
        expect(skipped.body).toMatchObject({ skipped: true, step: k + 1 });
        problems.push(...sameLeaves('skipped params', skipped.body.params, want.params));
      }
    }
    const snap = await opCall('GET', opt, '/state');
    expect(snap.body.skipped_steps ?? (await opCall('GET', opt, '')).body.skipped_steps).toBe(1);
    problems.push(...sameLeaves('state', stateOf(snap.body), { ...state, ...(c.optimizer === 'sgd' && state!.step === undefined ? { step: steps } : {}) }));
    expect(problems.slice(0, 10)).toEqual([]);

    // Snapshots (JSON and the safetensors checkpoint) restored into new optimizers step on as the stateless step does.
    const file = await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, authed(opt.token, { accept: ST }));
    expect(file.status).toBe(200);
    const more = [forOptimizer(c.optimizer, gradsAt(11)), forOptimizer(c.optimizer, gradsAt(13))];
    const wants: Json[] = [];
    let p2 = params;
    let s2 = state;
    for (const g of more) {
      const w = await stateless(c, dtype, p2, g, s2);
      wants.push(w);
      p2 = w.params;
      s2 = w.state;
    }
    for (const body of [snap.body, file.bytes]) {
      const into = await createOptimizer({ optimizer: c.optimizer, dtype, params: PARAMS, hyperparams: c.hyperparams, param_groups: c.param_groups });
      const put = body instanceof Uint8Array ? await callBytes('PUT', `/v1/optimizers/${into.id}/state`, body, authed(into.token, { 'content-type': ST })) : await opCall('PUT', into, '/state', body);
      expect(put.status, JSON.stringify(put.body)).toBe(200);
      for (const [i, g] of more.entries()) {
        const got = i === 0 ? (await fileStep(into, g, dtype))! : await opCall('POST', into, '/step', { grads: g });
        expect(got.status, JSON.stringify(got.body)).toBe(200);
        expect(sameLeaves(`restored step ${i}`, got.body.params, wants[i]!.params)).toEqual([]);
      }
    }
  });
});

describe('a sparse step on an optimizer of several checkpoint chunks', () => {
  it('is stored whole (the journal keeps dense gradients only): evicted after every step, it equals the stateless step', { timeout: 120_000 }, async () => {
    // 40,000 x 2 + 3 float32 elements: two 64 Ki-element chunks, so dense steps are journalled.
    const n = 40_000;
    const params = { emb: Array.from({ length: n }, (_, i) => [Math.sin(i) / 2, Math.cos(i) / 3]), w: [1, 2, 3] };
    const hp = { lr: 0.1, momentum: 0.9 };
    const dense = (k: number) => ({ emb: params.emb.map(([a, b], i) => [Math.sin(a! + k + i), Math.cos(b! * k + i) / 4]), w: [k, -k, 0.5] });
    const rows = (k: number) => ({ emb: { indices: [k, n - 1 - k, 33_000 + k, k], values: [[0.5, -k], [k, 1], [0.25, 0.75], [-1, 2]] }, w: [0.1, 0.2, k] });
    const steps = [rows(1), dense(2), rows(3), rows(4), dense(5), rows(6)];
    const opt = await createOptimizer({ optimizer: 'sgd', dtype: 'float32', params, hyperparams: hp });
    let p: unknown = params;
    let state: Json | null = null;
    for (const [k, g] of steps.entries()) {
      const got = k % 2 === 0 ? await opCall('POST', opt, '/step', { grads: g, loss: k }) : (await fileStep(opt, g, 'float32'))!;
      expect(got.status, JSON.stringify(got.body).slice(0, 300)).toBe(200);
      await evictDurableObject(stubOf(opt.id));
      const want = await postJson('/v1/sgd/step', { params: p, grads: g, dtype: 'float32', hyperparams: hp, ...(state ? { state } : {}) });
      expect(want.status).toBe(200);
      p = want.body.params;
      state = want.body.state;
    }
    const snap = await opCall('GET', opt, '/state');
    expect(sameLeaves('params', snap.body.params, p).slice(0, 5)).toEqual([]);
    expect(sameLeaves('momentum_buffer', snap.body.momentum_buffer, state!.momentum_buffer).slice(0, 5)).toEqual([]);
    expect(snap.body.step).toBe(steps.length);
  });
});

describe('hosted sparse gradients: retries, bad rows and refusals change nothing', () => {
  const params = { emb: [[1, 2], [3, 4], [5, 6]], w: [0.5] };

  /** Everything the optimizer holds and shows. */
  const everything = async (opt: Created) => {
    const snap = await opCall('GET', opt, '/state');
    const info = await opCall('GET', opt, '');
    return { state: snap.body, etag: info.headers.get('etag'), step: info.body.step };
  };

  it('an Idempotency-Key retry with the same rows replays; with other rows (indices or values) it is a 422', async () => {
    const opt = await createOptimizer({ optimizer: 'adagrad', dtype: 'float64', params, hyperparams: { lr: 0.1 } });
    const key = { 'idempotency-key': 'rows-1' };
    const grads = { emb: { indices: [2, 0], values: [[1, 1], [0.5, 0.5]] }, w: [1] };
    const first = await opCall('POST', opt, '/step', { grads }, key);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    const again = await opCall('POST', opt, '/step', { grads }, key);
    expect(again.body).toMatchObject({ replayed: true, step: 1, params: first.body.params });
    const inFile = (await fileStep(opt, grads, 'float64', key))!;
    expect(inFile.body).toMatchObject({ replayed: true, step: 1 });
    const before = await everything(opt);
    for (const other of [
      { emb: { indices: [2, 1], values: [[1, 1], [0.5, 0.5]] }, w: [1] },
      { emb: { indices: [2, 0], values: [[1, 1], [0.5, 0.25]] }, w: [1] },
      { emb: { indices: [0, 2], values: [[0.5, 0.5], [1, 1]] }, w: [1] },
      { emb: [[0.5, 0.5], [0, 0], [1, 1]], w: [1] },
    ]) {
      expectProblem(await opCall('POST', opt, '/step', { grads: other }, key), 422, 'Idempotency-Key');
    }
    expect(await everything(opt)).toEqual(before);
    // A repeated row is torch's (summed by Adagrad's coalesce), as the stateless step has it.
    const dup = { emb: { indices: [1, 1], values: [[1, 1], [2, 2]] }, w: null };
    const want = await postJson('/v1/adagrad/step', { params: first.body.params, grads: dup, dtype: 'float64', hyperparams: { lr: 0.1 }, state: (({ step, sum }) => ({ step, sum }))(before.state) });
    const got = await opCall('POST', opt, '/step', { grads: dup });
    expect(got.status, JSON.stringify(got.body)).toBe(200);
    expect(got.body.params).toEqual(want.body.params);
  });

  it('bad rows: a 422 naming the field (JSON and safetensors), nothing changed', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', dtype: 'float32', params, hyperparams: { lr: 0.1, momentum: 0.9 } });
    expect((await opCall('POST', opt, '/step', { grads: { emb: { indices: [0], values: [[1, 1]] }, w: [1] } })).status).toBe(200);
    const before = await everything(opt);
    const json: Array<[unknown, string]> = [
      [{ indices: [0, 3], values: [[1, 1], [1, 1]] }, 'grads.emb.indices[1]'],
      [{ indices: [-1], values: [[1, 1]] }, 'grads.emb.indices[0]'],
      [{ indices: [0.5], values: [[1, 1]] }, 'grads.emb.indices[0]'],
      [{ indices: [0, 1], values: [[1, 1]] }, 'grads.emb.values'],
      [{ indices: [0], values: [[1, 1, 1]] }, 'grads.emb.values'],
      [{ indices: [[0]], values: [[1, 1]] }, 'grads.emb.indices'],
      [{ indices: [0], values: [[1e39, 1]] }, 'grads.emb.values[0][0]'],
    ];
    for (const [emb, field] of json) {
      const r = await opCall('POST', opt, '/step', { grads: { emb, w: [1] } });
      expectProblem(r, 422, field);
    }
    const bad3 = await opCall('POST', opt, '/step', { grads: { emb: { indices: [3], values: [[1, 1]] }, w: [1] } });
    expect(bad3.body.errors[0]).toMatchObject({ field: 'grads.emb.indices[0]', value: '3' });
    expect(bad3.body.errors[0].message).toMatch(/integer in \[0, 2\]/);
    // Rows for a 0-d tensor, or for a tensor that is not one.
    const scalar = await createOptimizer({ optimizer: 'sgd', params: { s: 1.5 }, hyperparams: { lr: 0.1 } });
    expectProblem(await opCall('POST', scalar, '/step', { grads: { s: { indices: [0], values: [1] } } }), 422, 'grads.s');
    expectProblem(await opCall('POST', opt, '/step', { grads: { emb: { indices: [0], values: [[1, 1]] }, w: [1], x: { indices: [0], values: [1] } } }), 422, 'grads.x');

    const i64 = (v: number[]) => new Uint8Array(BigInt64Array.from(v.map(BigInt)).buffer);
    const f32 = (v: number[]) => encodeValues(v, 'F32');
    const w = { name: 'w', dtype: 'F32' as Dt, shape: [1], data: f32([1]) };
    const files: Array<[string, Parameters<typeof writeSafetensors>[0], string]> = [
      ['an index past the last row', [{ name: 'grads.indices/emb', dtype: 'I64' as Dt, shape: [1], data: i64([3]) }, { name: 'grads.values/emb', dtype: 'F32', shape: [1, 2], data: f32([1, 1]) }, w], 'safetensors["grads.indices/emb"][0]'],
      ['indices without values', [{ name: 'grads.indices/emb', dtype: 'I64' as Dt, shape: [1], data: i64([0]) }, w], 'safetensors["grads.values/emb"]'],
      ['values without indices', [{ name: 'grads.values/emb', dtype: 'F32', shape: [1, 2], data: f32([1, 1]) }, w], 'safetensors["grads.indices/emb"]'],
      ['values of the wrong row shape', [{ name: 'grads.indices/emb', dtype: 'I64' as Dt, shape: [1], data: i64([0]) }, { name: 'grads.values/emb', dtype: 'F32', shape: [1, 3], data: f32([1, 1, 1]) }, w], 'safetensors["grads.values/emb"].shape'],
      ['rows and a dense gradient', [{ name: 'grads.indices/emb', dtype: 'I64' as Dt, shape: [1], data: i64([0]) }, { name: 'grads.values/emb', dtype: 'F32', shape: [1, 2], data: f32([1, 1]) }, { name: 'emb', dtype: 'F32', shape: [3, 2], data: f32([0, 0, 0, 0, 0, 0]) }, w], 'safetensors.emb'],
      ['float indices', [{ name: 'grads.indices/emb', dtype: 'F32', shape: [1], data: f32([0]) }, { name: 'grads.values/emb', dtype: 'F32', shape: [1, 2], data: f32([1, 1]) }, w], 'safetensors["grads.indices/emb"].dtype'],
    ];
    for (const [what, tensors, field] of files) {
      const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, writeSafetensors(tensors), authed(opt.token, { 'content-type': ST, accept: 'application/json' }));
      expect(r.status, `${what}: ${JSON.stringify(r.body)}`).toBe(422);
      expect(r.body.errors.map((e: { field: string }) => e.field), what).toContain(field);
    }
    expect(await everything(opt)).toEqual(before);
  });

  it('rows beyond the budget of a step (half a dense gradient, or 8 MiB) are a 413 before they are read, changing nothing', { timeout: 60_000 }, async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', dtype: 'float32', params: { emb: [new Array(1024).fill(0), new Array(1024).fill(0)] }, hyperparams: { lr: 0.1 } });
    const before = await everything(opt);
    const send = (k: number) => {
      const file = writeSafetensors([
        { name: 'grads.indices/emb', dtype: 'I32' as Dt, shape: [k], data: new Uint8Array(new Int32Array(k).buffer) },
        { name: 'grads.values/emb', dtype: 'F32', shape: [k, 1024], data: new Uint8Array(k * 1024 * 4) },
      ]);
      return callBytes('POST', `/v1/optimizers/${opt.id}/step`, file, authed(opt.token, { 'content-type': ST, accept: 'application/json' }));
    };
    // 2,100 rows of 1,024 float32: 8.6 MB of values.
    const big = await send(2100);
    expect(big.status, JSON.stringify(big.body)).toBe(413);
    expect(big.body.errors[0].field).toBe('safetensors["grads.values/emb"]');
    expect(await everything(opt)).toEqual(before);
    expect((await send(2000)).status).toBe(200);
  });

  it('what torch refuses with rows: Adagrad\'s weight_decay (by group), SGD\'s nesterov, clip_grad_value; PATCHed away it steps', async () => {
    const ada = await createOptimizer({ optimizer: 'adagrad', dtype: 'float64', params, hyperparams: { weight_decay: 0.1 } });
    const before = await everything(ada);
    const grads = { emb: { indices: [1], values: [[1, 1]] }, w: [1] };
    const r = await opCall('POST', ada, '/step', { grads });
    expectProblem(r, 422, 'hyperparams.weight_decay');
    expect(r.body.errors[0].message).toMatch(/not compatible with sparse gradients/);
    expect(await everything(ada)).toEqual(before);
    expect((await opCall('PATCH', ada, '', { param_groups: [{ params: ['emb'], weight_decay: 0 }] })).status).toBe(200);
    const ok = await opCall('POST', ada, '/step', { grads });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    const want = await postJson('/v1/adagrad/step', { params, grads, dtype: 'float64', hyperparams: { weight_decay: 0.1 }, param_groups: [{ params: ['emb'], weight_decay: 0 }] });
    expect(ok.body.params).toEqual(want.body.params);

    const sgd = await createOptimizer({ optimizer: 'sgd', params, hyperparams: { lr: 0.1 }, param_groups: [{ params: ['emb'], momentum: 0.5, nesterov: true }] });
    expectProblem(await opCall('POST', sgd, '/step', { grads }), 422, 'param_groups[0].nesterov');
    const clip = await createOptimizer({ optimizer: 'sgd', dtype: 'float64', params, hyperparams: { lr: 0.1, clip_grad_value: 1 } });
    expectProblem(await opCall('POST', clip, '/step', { grads }), 422, 'hyperparams.clip_grad_value');
    expect((await opCall('POST', clip, '/step', { grads: { emb: null, w: [3] } })).body.params.w).toEqual([0.4]);
  });

  it('sparse_adam hosted takes rows only: a dense gradient (JSON, safetensors, raw) is a 422 naming it', async () => {
    const opt = await createOptimizer({ optimizer: 'sparse_adam', dtype: 'float32', params, hyperparams: { lr: 0.01 } });
    expect(opt.body.optimizer).toBe('sparse_adam');
    const before = await everything(opt);
    const dense = await opCall('POST', opt, '/step', { grads: { emb: { indices: [0], values: [[1, 1]] }, w: [1] } });
    expectProblem(dense, 422, 'grads.w');
    expect(dense.body.errors[0].message).toMatch(/SparseAdam takes sparse gradients only/);
    const file = writeSafetensors([{ name: 'emb', dtype: 'F32', shape: [3, 2], data: encodeValues([1, 1, 1, 1, 1, 1], 'F32') }]);
    expectProblem(await (async () => { const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, file, authed(opt.token, { 'content-type': ST, accept: 'application/json' })); return { ...r, type: r.headers.get('content-type') ?? '' }; })(), 422, 'safetensors.emb');
    const raw = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, encodeValues([1, 1, 1, 1, 1, 1, 1], 'F32'), authed(opt.token, { 'content-type': 'application/octet-stream', accept: 'application/json' }));
    expect(raw.status).toBe(422);
    expect(raw.body.errors[0].field).toBe('body');
    expect(await everything(opt)).toEqual(before);
    const ok = await opCall('POST', opt, '/step', { grads: { emb: { indices: [0], values: [[1, 1]] }, w: null } });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
  });

  it('a dense-only optimizer refuses rows, naming the optimizers that take them', async () => {
    const opt = await createOptimizer({ optimizer: 'adam', params, hyperparams: { lr: 0.1 } });
    const r = await opCall('POST', opt, '/step', { grads: { emb: { indices: [0], values: [[1, 1]] }, w: [1] } });
    expectProblem(r, 422, 'grads.emb');
    expect(r.body.errors[0].message).toMatch(/sparse \(row\) gradients go to sgd, adagrad, sparse_adam$/);
    const file = (await fileStep(opt, { emb: { indices: [0], values: [[1, 1]] }, w: [1] }, 'float32'))!;
    expect(file.status).toBe(422);
    expect(file.body.errors[0].message).toMatch(/sgd, adagrad, sparse_adam$/);
    expect((await opCall('GET', opt, '')).body.step).toBe(0);
  });
});
