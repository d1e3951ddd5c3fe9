// The stateless step of every optimizer beyond Adam, through HTTP: real torch 1.13 trajectories
// (test/fixtures/optim) replayed the way a client runs them, the state each answer returns sent
// with the next step; params and state must equal torch's bit for bit at every recorded step, in
// JSON and in safetensors. Then the catalogue, torch's defaults and the 4xx rules.

import { describe, expect, it } from 'vitest';
import adadeltaCases from './fixtures/optim/adadelta.json';
import adagradCases from './fixtures/optim/adagrad.json';
import adamaxCases from './fixtures/optim/adamax.json';
import nadamCases from './fixtures/optim/nadam.json';
import radamCases from './fixtures/optim/radam.json';
import rmspropCases from './fixtures/optim/rmsprop.json';
import sgdCases from './fixtures/optim/sgd.json';
import lionFile from './fixtures/optim/lion.json';
import muonFile from './fixtures/optim/muon.json';
import sparseAdamFile from './fixtures/optim/sparseadam.json';
import { callBytes, getJson, postJson } from './helpers/http.ts';
import { decodeValues, encodeValues, readSafetensors, writeSafetensors, type TestTensor } from './helpers/safetensors.ts';
import { leavesOf, zipLeaves } from './helpers/trees.ts';

interface Case {
  name: string;
  optimizer: string;
  dtype: 'float32' | 'float64';
  hyperparams: Record<string, number | boolean>;
  params: unknown;
  state: Record<string, unknown> | null;
  grads: unknown[];
  expected: Array<{ step_index: number; params: unknown; state: Record<string, unknown> }>;
}

const FILES: Record<string, { cases: unknown[] }> = {
  sgd: sgdCases,
  rmsprop: rmspropCases,
  adagrad: adagradCases,
  adamax: adamaxCases,
  nadam: nadamCases,
  radam: radamCases,
  adadelta: adadeltaCases,
  // No torch 1.13 reference: independent numpy implementations of the papers/torch 2.9 (independent.py).
  lion: { cases: lionFile.cases.map((c) => ({ ...c, optimizer: 'lion' })) },
  muon: { cases: muonFile.cases.map((c) => ({ ...c, optimizer: 'muon' })) },
  // Gradients as rows ({indices, values}), JSON only.
  sparse_adam: { cases: sparseAdamFile.cases.map((c) => ({ ...c, optimizer: 'sparse_adam' })) },
};

const INDEPENDENT = new Set(['lion', 'muon']);

/** Leaf-by-leaf differences from torch, bit for bit. */
function diffs(label: string, actual: unknown, expected: unknown, signedZeros = true): string[] {
  return zipLeaves(actual, expected)
    .filter(({ a, e }) => !(Object.is(a, e) || (!signedZeros && a === 0 && e === 0)))
    .map(({ path, a, e }) => `${label}${path}: ${a} != torch ${e}`);
}

/** What the API must answer for torch's recorded state (torch keeps None where we keep nothing). */
function expectedState(state: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(state).filter(([, v]) => v !== null && leavesOf(v).some((l) => l.value !== null)));
}

/** A "defaults" case sends no hyperparameters: the API's defaults must be torch's. */
const hyperparamsToSend = (c: Case) => (/defaults/.test(c.name) ? {} : c.hyperparams);

async function replayJson(c: Case): Promise<string[]> {
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
    // independent.py writes every zero as +0 (numpy's signs of zero are not a reference).
    const signedZeros = !INDEPENDENT.has(c.optimizer);
    out.push(...diffs(`step ${s} params`, params, e.params, signedZeros));
    // SGD keeps no step; the API counts steps for every optimizer (schedules need them).
    const want = { step: ((c.state?.step as number | undefined) ?? 0) + s + 1, ...expectedState(e.state) };
    expect(Object.keys(state!).sort(), `step ${s} state keys`).toEqual(Object.keys(want).sort());
    out.push(...diffs(`step ${s} state`, state, want, signedZeros));
  }
  return out;
}

describe.each(Object.entries(FILES).map(([name, f]) => ({ name, cases: f.cases as Case[] })))('POST /v1/$name/step against torch 1.13', ({ cases }) => {
  it.each(cases.map((c) => ({ c, name: c.name })))('$name', async ({ c }) => {
    expect((await replayJson(c)).slice(0, 10)).toEqual([]);
  });
});

// ---- safetensors ----

const DT = { float32: 'F32', float64: 'F64' } as const;

/** Named flat tensors of a fixture tree: {name: values} (a bare tensor is named ''). */
function namedTensors(tree: unknown): Array<{ name: string; shape: number[]; values: number[] }> {
  const shapeOf = (t: unknown): number[] => (Array.isArray(t) ? [t.length, ...shapeOf(t[0])] : []);
  if (tree !== null && typeof tree === 'object' && !Array.isArray(tree)) {
    return Object.entries(tree as Record<string, unknown>).map(([name, t]) => ({ name, shape: shapeOf(t), values: leavesOf(t).map((l) => l.value as number) }));
  }
  return [{ name: '', shape: shapeOf(tree), values: leavesOf(tree).map((l) => l.value as number) }];
}

const tensorName = (slot: string, name: string) => (name === '' ? slot : `${slot}/${name}`);

function slotTensors(slot: string, tree: unknown, dt: 'F32' | 'F64'): TestTensor[] {
  return namedTensors(tree).map((t) => ({ name: tensorName(slot, t.name), dtype: dt, shape: t.shape, data: encodeValues(t.values, dt) }));
}

describe('safetensors stateless steps of every optimizer', () => {
  const picks = Object.entries(FILES).filter(([name]) => name !== 'sparse_adam').map(([, f]) => f).flatMap((f) => (f.cases as Case[]).filter((c) => /all|five-named|named|nesterov|centered/.test(c.name)).slice(0, 4));

  it.each(picks.map((c) => ({ c, name: c.name })))('$name, state carried in the files', async ({ c }) => {
    expect(picks.length).toBeGreaterThan(20);
    const dt = DT[c.dtype];
    const names = namedTensors(c.params).map((t) => t.name);
    let params: Record<string, number[]> = Object.fromEntries(namedTensors(c.params).map((t) => [t.name, t.values]));
    const shapes = Object.fromEntries(namedTensors(c.params).map((t) => [t.name, t.shape]));
    let slots: Record<string, Record<string, number[]>> = {};
    let metadata: Record<string, string> = { hyperparams: JSON.stringify(c.hyperparams), dtype: c.dtype };
    if (c.state) {
      metadata.step = String(c.state.step ?? 0);
      if (c.state.mu_product !== undefined) metadata.mu_product = String(c.state.mu_product);
      for (const [k, v] of Object.entries(c.state)) {
        if (k === 'step' || k === 'mu_product' || v === null || leavesOf(v).some((l) => l.value === null)) continue;
        slots[k] = Object.fromEntries(namedTensors(v).map((t) => [t.name, t.values]));
      }
    }
    const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
    for (let s = 0; s < c.grads.length; s++) {
      const tensors: TestTensor[] = [];
      const put = (slot: string, values: Record<string, number[]>) => {
        for (const n of names) tensors.push({ name: tensorName(slot, n), dtype: dt, shape: shapes[n]!, data: encodeValues(values[n]!, dt) });
      };
      put('params', params);
      tensors.push(...slotTensors('grads', c.grads[s], dt));
      for (const [slot, values] of Object.entries(slots)) put(slot, values);
      const r = await callBytes('POST', `/v1/${c.optimizer}/step`, writeSafetensors(tensors, metadata), { 'content-type': 'application/vnd.safetensors' });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.type).toBe('application/vnd.safetensors');
      const file = readSafetensors(r.bytes);
      const read = (slot: string) =>
        Object.fromEntries(
          names.map((n) => {
            const t = file.tensors.get(tensorName(slot, n));
            if (!t) throw new Error(`no ${tensorName(slot, n)} among ${[...file.tensors.keys()].join(', ')}`);
            return [n, decodeValues(t)];
          }),
        );
      params = read('params');
      const slotNames = [...new Set([...file.tensors.keys()].map((k) => k.split('/')[0]!))].filter((k) => k !== 'params');
      slots = Object.fromEntries(slotNames.map((k) => [k, read(k)]));
      const meta = file.metadata!;
      metadata = { hyperparams: JSON.stringify(c.hyperparams), dtype: c.dtype, step: meta.step!, ...(meta.mu_product ? { mu_product: meta.mu_product } : {}) };
      const e = byIndex.get(s);
      if (!e) continue;
      const want = (tree: unknown) => Object.fromEntries(namedTensors(tree).map((t) => [t.name, t.values]));
      expect(diffs(`step ${s} params`, params, want(e.params))).toEqual([]);
      const wantState = expectedState(e.state);
      expect(slotNames.sort()).toEqual(Object.keys(wantState).filter((k) => k !== 'step' && k !== 'mu_product').sort());
      for (const k of slotNames) expect(diffs(`step ${s} ${k}`, slots[k], want(wantState[k]))).toEqual([]);
      if (wantState.step !== undefined) expect(Number(meta.step)).toBe(wantState.step);
      if (wantState.mu_product !== undefined) expect(Number(meta.mu_product)).toBe(wantState.mu_product);
    }
  });
});

// ---- catalogue and rules ----

describe('GET /v1/algorithms', () => {
  it('lists every optimizer with torch 1.13 defaults (as the fixtures recorded torch\'s param_groups)', async () => {
    const r = await getJson('/v1/algorithms');
    expect(r.status).toBe(200);
    const byName = new Map(r.body.algorithms.map((a: { name: string }) => [a.name, a]));
    expect([...byName.keys()]).toEqual(expect.arrayContaining(['adam', 'adamw', 'sgd', 'rmsprop', 'adagrad', 'adamax', 'nadam', 'radam', 'adadelta']));
    for (const [name, file] of Object.entries(FILES)) {
      const a = byName.get(name) as { hyperparams: Record<string, { default?: unknown; required: boolean }>; step_route: string; torch: string };
      expect(a.step_route).toBe(`/v1/${name}/step`);
      const torchDefaults = (file.cases as Case[]).find((c) => /defaults/.test(c.name))?.hyperparams;
      if (torchDefaults) for (const [k, v] of Object.entries(torchDefaults)) expect(a.hyperparams[k]?.default, `${name}.${k}`).toBe(v);
      expect(Object.keys(a.hyperparams).sort()).toEqual(Object.keys((file.cases[0] as Case).hyperparams).sort());
    }
    const sgd = byName.get('sgd') as { hyperparams: Record<string, { default?: unknown; required: boolean }> };
    expect(sgd.hyperparams.lr).toMatchObject({ required: true });
    expect(sgd.hyperparams.lr!.default).toBeUndefined();
    const nadam = (await getJson('/v1/algorithms/nadam')).body;
    expect(nadam.state).toEqual({
      step: 'float32',
      slots: [expect.objectContaining({ name: 'exp_avg' }), expect.objectContaining({ name: 'exp_avg_sq' })],
      scalars: [expect.objectContaining({ name: 'mu_product', initial: 1 })],
    });
    const missing = await getJson('/v1/algorithms/lbfgs');
    expect(missing.status).toBe(404);
    expect(missing.body.detail).toMatch(/sgd/);
  });
});

describe('stateless step rules', () => {
  const p = [1, -2, 3];
  const g = [0.1, 0.2, -0.3];

  async function expect422(path: string, body: unknown, field: string) {
    const r = await postJson(path, body);
    expect(r.status, JSON.stringify(r.body)).toBe(422);
    expect(r.type).toMatch(/problem\+json/);
    expect(r.body.errors.map((e: { field: string }) => e.field)).toContain(field);
    return r.body;
  }

  it('SGD needs lr (torch has no default), unless a schedule sets it', async () => {
    const body = await expect422('/v1/sgd/step', { params: p, grads: g }, 'hyperparams.lr');
    expect(body.detail).toMatch(/torch\.optim\.SGD has no default lr/);
    const scheduled = await postJson('/v1/sgd/step', { params: p, grads: g, dtype: 'float64', schedule: { type: 'constant', lr: 0.5 } });
    expect(scheduled.status).toBe(200);
    expect(scheduled.body.params).toEqual([1 - 0.5 * 0.1, -2 - 0.5 * 0.2, 3 + 0.5 * 0.3]);
    expect(scheduled.body.lr).toBe(0.5);
  });

  it('applies torch\'s constructor rules', async () => {
    await expect422('/v1/sgd/step', { params: p, grads: g, hyperparams: { lr: 0.1, nesterov: true } }, 'hyperparams.nesterov');
    await expect422('/v1/sgd/step', { params: p, grads: g, hyperparams: { lr: 0.1, momentum: 0.9, dampening: 0.1, nesterov: true } }, 'hyperparams.nesterov');
    await expect422('/v1/sgd/step', { params: p, grads: g, hyperparams: { lr: -0.1 } }, 'hyperparams.lr');
    await expect422('/v1/adamax/step', { params: p, grads: g, hyperparams: { beta1: 1 } }, 'hyperparams.beta1');
    await expect422('/v1/adadelta/step', { params: p, grads: g, hyperparams: { rho: 1.5 } }, 'hyperparams.rho');
    await expect422('/v1/rmsprop/step', { params: p, grads: g, hyperparams: { alpha: -0.5 } }, 'hyperparams.alpha');
    // torch 1.13's NAdam and RAdam have no maximize.
    await expect422('/v1/nadam/step', { params: p, grads: g, hyperparams: { maximize: true } }, 'hyperparams.maximize');
    // torch accepts alpha > 1 and any dampening: so does the API.
    const alpha = await postJson('/v1/rmsprop/step', { params: p, grads: g, hyperparams: { alpha: 1.5 }, state: { step: 1, square_avg: [1, 1, 1] } });
    expect(alpha.status, JSON.stringify(alpha.body)).toBe(200);
    expect((await postJson('/v1/sgd/step', { params: p, grads: g, hyperparams: { lr: 0.1, momentum: 0.9, dampening: -3 } })).status).toBe(200);
  });

  it('Muon steps 2-D tensors within its size limit, each on its own; other shapes are a 422 naming the tensor', async () => {
    const w = [[1, 2], [3, 4]];
    await expect422('/v1/muon/step', { params: { w, b: [1, 2] }, grads: { w, b: [0.1, 0.2] } }, 'params.b');
    await expect422('/v1/muon/step', { params: { w: Array.from({ length: 257 }, () => new Array(257).fill(0)) }, grads: { w: Array.from({ length: 257 }, () => new Array(257).fill(0)) } }, 'params.w');
    await expect422('/v1/muon/step', { params: { w }, grads: { w }, hyperparams: { ns_steps: 2.5 } }, 'hyperparams.ns_steps');
    await expect422('/v1/muon/step', { params: { w }, grads: { w }, hyperparams: { adjust_lr_fn: 'rms' } }, 'hyperparams.adjust_lr_fn');
    const ok = await postJson('/v1/muon/step', { params: { w }, grads: { w }, hyperparams: { adjust_lr_fn: 'match_rms_adamw' } });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    const cat = (await getJson('/v1/algorithms/muon')).body;
    expect(cat.hyperparams.adjust_lr_fn).toMatchObject({ type: 'string', enum: ['original', 'match_rms_adamw'], default: 'original' });
    expect(cat.hyperparams.ns_steps).toMatchObject({ type: 'integer', default: 5 });
  });

  it('accepts torch\'s betas spelling, not together with beta1/beta2', async () => {
    const split = await postJson('/v1/adamax/step', { params: p, grads: g, hyperparams: { beta1: 0.8, beta2: 0.99 } });
    const torchSpelling = await postJson('/v1/adamax/step', { params: p, grads: g, hyperparams: { betas: [0.8, 0.99] } });
    expect(torchSpelling.status).toBe(200);
    expect(torchSpelling.body).toEqual(split.body);
    await expect422('/v1/adamax/step', { params: p, grads: g, hyperparams: { betas: [0.8, 0.99], beta1: 0.8 } }, 'hyperparams.betas');
    await expect422('/v1/adamax/step', { params: p, grads: g, hyperparams: { betas: [0.8] } }, 'hyperparams.betas');
    await expect422('/v1/adamax/step', { params: p, grads: g, hyperparams: { betas: [1.5, 0.9] } }, 'hyperparams.beta1');
  });

  it('requires the state torch keeps once step > 0, and checks it', async () => {
    await expect422('/v1/rmsprop/step', { params: p, grads: g, state: { step: 3 } }, 'state.square_avg');
    await expect422('/v1/rmsprop/step', { params: p, grads: g, hyperparams: { centered: true }, state: { step: 3, square_avg: [1, 1, 1] } }, 'state.grad_avg');
    await expect422('/v1/rmsprop/step', { params: p, grads: g, state: { step: 3, square_avg: [1, -1, 1] } }, 'state.square_avg[1]');
    await expect422('/v1/nadam/step', { params: p, grads: g, state: { step: 3, exp_avg: [0, 0, 0], exp_avg_sq: [0, 0, 0] } }, 'state.mu_product');
    await expect422('/v1/adagrad/step', { params: p, grads: g, state: { step: 1, sum: [1, 1] } }, 'state.sum');
    await expect422('/v1/adagrad/step', { params: p, grads: g, state: { step: 1, sum: [1, 1, 1], exp_avg: [1, 1, 1] } }, 'state.exp_avg');
    // SGD's buffer is created from the first gradient: it may be absent or null at any step.
    const sgd = await postJson('/v1/sgd/step', { params: p, grads: g, dtype: 'float64', hyperparams: { lr: 1, momentum: 0.9 }, state: { step: 5, momentum_buffer: null } });
    expect(sgd.status).toBe(200);
    expect(sgd.body.state).toEqual({ step: 6, momentum_buffer: g });
    // Without momentum torch keeps no buffer: a sent one is ignored and none comes back.
    const plain = await postJson('/v1/sgd/step', { params: p, grads: g, hyperparams: { lr: 1 }, state: { step: 1, momentum_buffer: [5, 5, 5] } });
    expect(plain.body.state).toEqual({ step: 2 });
  });

  it('answers 422 for a non-finite result, naming where, and 404 for an unknown optimizer', async () => {
    const r = await postJson('/v1/adagrad/step', { params: [0, 0], grads: [0, 1], hyperparams: { eps: 0 } });
    expect(r.status).toBe(422);
    expect(r.body.type).toMatch(/non-finite-result/);
    expect(r.body.errors[0].field).toBe('grads[0]');
    expect((await postJson('/v1/lbfgs/step', { params: p, grads: g })).status).toBe(404);
  });

  it('refuses hyperparameters in the query with a JSON body', async () => {
    const r = await postJson('/v1/sgd/step?lr=0.1', { params: p, grads: g, hyperparams: { lr: 0.1 } });
    expect(r.status).toBe(422);
    expect(r.body.errors[0].field).toBe('lr');
  });
});
