// Sparse (row) gradients on sharded hosted optimizers, through HTTP (JSON `{"indices": [...], "values":
// [[row], ...]}`, safetensors `grads.indices/<name>` with `grads.values/<name>`): the coordinator checks the rows as an unsharded step does, folds a sparse tensor's
// norm from its coalesced values (torch.norm of a sparse gradient), and sends each shard the rows of
// its pieces, rebased; a piece no row touches steps on no rows (SGD's momentum still decays it).
// Real torch 1.13 trajectories (sgd_sparse.json, adagrad_sparse.json, sparseadam.json,
// clip_sparse.json with clip_grad_norm_ over a sparse table and a dense vector) stepped over 2–3
// shards, JSON and safetensors steps alternating, tables cut between shards, shards evicted halfway:
// params equal torch's at every recorded step, state at the end. A mixed tree (dense, sparse and
// frozen tensors, param groups, a NaN row skipped) equals the stateless step at every step; a
// coordinator failing after its decision completes the step from the stored rows.

import { evictDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import adagradSparseFile from './fixtures/optim/adagrad_sparse.json';
import clipSparseFile from './fixtures/optim/clip_sparse.json';
import sgdSparseFile from './fixtures/optim/sgd_sparse.json';
import sparseAdamFile from './fixtures/optim/sparseadam.json';
import { SHARD_FAULTS } from '../src/durable-objects/shards.ts';
import { ProblemError } from '../src/lib/problem.ts';
import { call, postJson } from './helpers/http.ts';
import { createOptimizer, expectProblem, opCall, parse, type Created } from './helpers/optimizers.ts';
import { safetensorsStep } from './helpers/sparse.ts';
import { leavesOf, zipLeaves } from './helpers/trees.ts';

type Json = Record<string, any>;

interface Case {
  name: string;
  optimizer: string;
  dtype: 'float32' | 'float64';
  hyperparams: Json;
  clip?: { type: 'norm'; max_norm: number };
  params: unknown;
  state: unknown;
  grads: unknown[];
  expected: Array<{ step_index: number; params: unknown; total_norm?: number; state: Record<string, unknown> }>;
}

const rowsOfTree = (p: unknown): number => (Array.isArray(p) ? p.length : Object.values(p as Json).reduce((n: number, v) => n + rowsOfTree(v), 0));

// Fresh cases with at least three rows (so that a table is cut between shards).
const FIXTURES: Case[] = [
  ...(sgdSparseFile.cases as unknown as Case[]).map((c) => ({ ...c, optimizer: 'sgd' })),
  ...(adagradSparseFile.cases as unknown as Case[]).map((c) => ({ ...c, optimizer: 'adagrad' })),
  ...(sparseAdamFile.cases as unknown as Case[]).map((c) => ({ ...c, optimizer: 'sparse_adam' })),
  ...(clipSparseFile.cases as unknown as Case[]).map((c) => ({ ...c, optimizer: c.optimizer === 'sparseadam' ? 'sparse_adam' : c.optimizer })),
].filter((c) => c.state === null && rowsOfTree(c.params) >= 3);

const isRows = (g: unknown) => g !== null && typeof g === 'object' && !Array.isArray(g) && 'indices' in g;
/** A named tree's step as a safetensors file (rows as grads.indices/… and grads.values/…); null for a bare tensor or rows of no row. */
const fileStep = (opt: Created, grads: unknown, dtype: string, headers: Record<string, string> = {}) =>
  Array.isArray(grads) || isRows(grads) || leavesOf(grads).length === 0 || Object.values(grads as Json).some((v) => isRows(v) && (v as Json).values.length === 0)
    ? null
    : safetensorsStep(opt, grads as Record<string, unknown>, dtype, headers);

const stubOf = (name: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(name));
const evictShards = async (opt: Created, shards: number) => {
  for (let i = 0; i < shards; i++) await evictDurableObject(stubOf(`${opt.id}/shard/${i}`));
};

const diffs = (label: string, actual: unknown, expected: unknown) =>
  zipLeaves(actual, expected)
    .filter(({ a, e }) => !Object.is(a, e))
    .map(({ path, a, e }) => `${label}${path}: ${a} != ${e}`);

function sameLeaves(label: string, actual: unknown, expected: unknown): string[] {
  const a = new Map(leavesOf(actual).map((l) => [l.path, l.value]));
  const e = new Map(leavesOf(expected).map((l) => [l.path, l.value]));
  const out: string[] = [];
  for (const k of new Set([...a.keys(), ...e.keys()])) if (!Object.is(a.get(k), e.get(k))) out.push(`${label}${k}: ${a.get(k)} != ${e.get(k)}`);
  return out;
}

const kept = (state: Record<string, unknown>) => Object.fromEntries(Object.entries(state).filter(([, v]) => v !== null && leavesOf(v).some((l) => l.value !== null)));

async function createSharded(c: Case): Promise<{ opt: Created; shards: number }> {
  const hyperparams = { ...c.hyperparams, ...(c.clip ? { clip_grad_norm: c.clip.max_norm } : {}) };
  for (const shards of [3, 2]) {
    const r = await parse(await call('POST', '/v1/optimizers', { optimizer: c.optimizer, dtype: c.dtype, params: c.params, hyperparams, shards }));
    if (r.status === 201) return { opt: { id: r.body.id, token: r.body.token, body: r.body, location: null, etag: null }, shards };
    expectProblem(r, 413);
  }
  throw new Error(`${c.name}: cannot be sharded`);
}

describe('sharded sparse gradients against torch 1.13', () => {
  it('the fixtures cover SGD, Adagrad and clip_grad_norm_ with a sparse table', () => {
    expect(FIXTURES.length).toBeGreaterThan(50);
    for (const o of ['sgd', 'adagrad', 'sparse_adam']) expect(FIXTURES.some((c) => c.optimizer === o && !c.clip)).toBe(true);
    expect(FIXTURES.filter((c) => c.clip).length).toBeGreaterThanOrEqual(6);
  });

  it.each(FIXTURES.map((c) => ({ c, name: `${c.optimizer}: ${c.name}` })))('$name', { timeout: 60_000 }, async ({ c }) => {
    const { opt, shards } = await createSharded(c);
    const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
    const out: string[] = [];
    for (let s = 0; s < c.grads.length; s++) {
      const r = (s % 2 === 1 ? await fileStep(opt, c.grads[s], c.dtype) : null) ?? (await opCall('POST', opt, '/step', { grads: c.grads[s] }));
      if (r.status !== 200) throw new Error(`step ${s}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
      const e = byIndex.get(s);
      if (e) out.push(...diffs(`step ${s} params`, r.body.params, e.params));
      if (e?.total_norm !== undefined) expect(r.body.grad_norm, `step ${s} grad_norm`).toBe(e.total_norm);
      if (s === 1) await evictShards(opt, shards);
    }
    const last = c.expected[c.expected.length - 1]!;
    const snap = (await opCall('GET', opt, '/state')).body;
    for (const [k, v] of Object.entries(kept(last.state ?? {}))) out.push(...diffs(`state.${k}`, snap[k], k === 'step' ? c.grads.length : v));
    expect(out.slice(0, 10)).toEqual([]);
  });
});

// A table beside dense and frozen tensors; rows repeat; a param group.
const PARAMS = { emb: [[0.5, -1], [2, 0.25], [-0.75, 1.5], [1, 1], [0, -2], [0.125, 3]], pos: [[1, 2], [3, 4]], w: [0.5, -1.25, 2] };
const rowsOf = (k: number, n: number) => ({
  indices: [k % 6, (k + 3) % 6, k % 6].slice(0, n),
  values: [[0.1 * k, -0.2], [0.3, 0.05 * k], [-0.4, 0.7]].slice(0, n),
});
function gradsAt(k: number): Json {
  const pos = k % 3 === 0 ? null : k % 3 === 1 ? { indices: [1], values: [[0.5 * k, -0.25]] } : [[0.1, 0.2], [k, -k]];
  return { emb: rowsOf(k, 1 + (k % 3)), pos, w: k % 4 === 2 ? null : [0.1 * k, -0.3, 0.7] };
}
const MIXED = [
  { optimizer: 'sgd', hyperparams: { lr: 0.1, momentum: 0.9, dampening: 0.1, clip_grad_norm: 0.5, nonfinite: 'skip' }, param_groups: [{ params: ['pos'], lr: 0.05, momentum: 0 }] },
  { optimizer: 'adagrad', hyperparams: { lr: 0.1, lr_decay: 0.01, nonfinite: 'skip' }, param_groups: [{ params: ['w'], lr: 0.5, weight_decay: 0.1 }] },
  { optimizer: 'sparse_adam', hyperparams: { lr: 0.01, nonfinite: 'skip' }, param_groups: [{ params: ['pos'], lr: 0.1 }] },
];
/** SparseAdam takes rows only: its dense gradients are sent as every row. */
const forOptimizer = (optimizer: string, g: Json): Json =>
  optimizer !== 'sparse_adam' ? g : Object.fromEntries(Object.entries(g).map(([k, v]) => [k, Array.isArray(v) ? { indices: v.map((_, i) => i), values: v } : v]));

describe.each(MIXED.flatMap((c) => [3, 5].map((shards) => ({ c, shards, name: `${c.optimizer} over ${shards} shards` }))))('$name: dense, sparse and frozen tensors with param_groups', ({ c, shards }) => {
  it('equal the stateless step at every step, across eviction and a coordinator failing after its decision', { timeout: 120_000 }, async () => {
    const opt = await createOptimizer({ optimizer: c.optimizer, dtype: 'float32', params: PARAMS, hyperparams: c.hyperparams, param_groups: c.param_groups, shards });
    let params: unknown = PARAMS;
    let state: Json | null = null;
    const problems: string[] = [];
    for (let k = 0; k < 8; k++) {
      const g = forOptimizer(c.optimizer, gradsAt(k));
      const r = await postJson(`/v1/${c.optimizer}/step`, { params, grads: g, dtype: 'float32', hyperparams: c.hyperparams, param_groups: c.param_groups, ...(state ? { state } : {}) });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      params = r.body.params;
      state = r.body.state;
      if (k === 4) {
        // The decision is stored, the shards not told: evicted, each re-applies from its stored rows and slice.
        SHARD_FAULTS.afterDecision = () => {
          throw new ProblemError(409, 'conflict', 'injected: coordinator failed after its decision');
        };
        try {
          expectProblem(await opCall('POST', opt, '/step', { grads: g }), 409);
        } finally {
          SHARD_FAULTS.afterDecision = undefined;
        }
        await evictShards(opt, shards);
        const read = await opCall('GET', opt, '/params');
        expect(read.body.step).toBe(k + 1);
        problems.push(...sameLeaves(`step ${k} params (completed)`, read.body.params, r.body.params));
        continue;
      }
      const got = k % 2 === 1 ? (await safetensorsStep(opt, g, 'float32'))! : await opCall('POST', opt, '/step', { grads: g });
      expect(got.status, JSON.stringify(got.body)).toBe(200);
      expect(got.body.step).toBe(k + 1);
      if (r.body.grad_norm !== undefined) expect(got.body.grad_norm, `step ${k} grad_norm`).toBe(r.body.grad_norm);
      problems.push(...sameLeaves(`step ${k} params`, got.body.params, r.body.params));
      if (k === 2) await evictShards(opt, shards);
      if (k === 5) {
        // A non-finite row (safetensors carries NaN) is skipped as GradScaler skips: nothing changes.
        const skipped = await safetensorsStep(opt, { ...g, emb: { indices: [0], values: [[Number.NaN, 1]] } }, 'float32');
        expect(skipped.status, JSON.stringify(skipped.body)).toBe(200);
        expect(skipped.body).toMatchObject({ skipped: true, step: k + 1 });
        problems.push(...sameLeaves('skipped params', skipped.body.params, r.body.params));
      }
    }
    const snap = (await opCall('GET', opt, '/state')).body;
    const { id: _i, optimizer: _o, dtype: _d, hyperparams: _h, param_groups: _g, schedule: _s, scheduler_state: _ss, params: _p, created_at: _c, updated_at: _u, shards: _n, skipped_steps: _k, ...got } = snap;
    problems.push(...sameLeaves('state', got, { ...state, ...(c.optimizer === 'sgd' && state!.step === undefined ? { step: 8 } : {}) }));
    expect(problems.slice(0, 10)).toEqual([]);
  });
});

describe('sharded sparse gradients: retries and refusals change nothing', () => {
  it('an Idempotency-Key retry with the same rows replays; with other rows it is a 422; what torch refuses is a 422 before anything is sent', async () => {
    const opt = await createOptimizer({ optimizer: 'adagrad', dtype: 'float32', params: PARAMS, hyperparams: { lr: 0.1 }, shards: 4 });
    const key = { 'idempotency-key': 'rows-1' };
    const first = await opCall('POST', opt, '/step', { grads: gradsAt(1) }, key);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect((await opCall('POST', opt, '/step', { grads: gradsAt(1) }, key)).body).toMatchObject({ step: 1, replayed: true });
    const other = { ...gradsAt(1), emb: { indices: [2, 4], values: gradsAt(1).emb.values } };
    expectProblem(await opCall('POST', opt, '/step', { grads: other }, key), 422, 'Idempotency-Key');
    // A replay answers as the step did, even once the hyperparameters would refuse rows.
    expect((await opCall('PATCH', opt, '', { hyperparams: { weight_decay: 0.1 } })).status).toBe(200);
    expect((await opCall('POST', opt, '/step', { grads: gradsAt(1) }, key)).body).toMatchObject({ step: 1, replayed: true });
    expect((await opCall('PATCH', opt, '', { hyperparams: { weight_decay: 0 } })).status).toBe(200);
    // A row beyond the table, and Adagrad's weight_decay with rows (torch raises): 422s, step 1 still.
    expectProblem(await opCall('POST', opt, '/step', { grads: { ...gradsAt(2), emb: { indices: [6], values: [[1, 1]] } } }), 422);
    const decayed = await createOptimizer({ optimizer: 'adagrad', dtype: 'float32', params: PARAMS, hyperparams: { lr: 0.1, weight_decay: 0.1 }, shards: 4 });
    expectProblem(await opCall('POST', decayed, '/step', { grads: gradsAt(1) }), 422, 'hyperparams.weight_decay');
    expect((await opCall('GET', opt, '')).body.step).toBe(1);
    expect((await opCall('GET', decayed, '')).body.step).toBe(0);
  });
});
