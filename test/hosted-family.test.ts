// Hosted optimizers of every registry optimizer beyond Adam, through HTTP: real torch 1.13
// trajectories (test/fixtures/optim) replayed through a hosted optimizer (created with
// `optimizer`, resumed states restored with PUT /state, gradients sent as JSON, raw bytes or
// safetensors); params after every step and GET /state at every recorded step must equal torch's
// bit for bit. Snapshots (JSON and safetensors) restored into a new optimizer continue identically.

import { evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import adadeltaCases from './fixtures/optim/adadelta.json';
import adagradCases from './fixtures/optim/adagrad.json';
import adamaxCases from './fixtures/optim/adamax.json';
import lionFile from './fixtures/optim/lion.json';
import muonFile from './fixtures/optim/muon.json';
import nadamCases from './fixtures/optim/nadam.json';
import radamCases from './fixtures/optim/radam.json';
import rmspropCases from './fixtures/optim/rmsprop.json';
import sgdCases from './fixtures/optim/sgd.json';
import { callBytes } from './helpers/http.ts';
import { createOptimizer, expectProblem, opCall, type Created } from './helpers/optimizers.ts';
import { decodeValues, encodeValues, readSafetensors, writeSafetensors, type TestTensor } from './helpers/safetensors.ts';
import { leavesOf, zipLeaves } from './helpers/trees.ts';

interface Case {
  name: string;
  optimizer: string;
  dtype: 'float32' | 'float64';
  hyperparams: Record<string, number | boolean | string>;
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
  // No torch 1.13 reference: independent numpy implementations of the paper / torch 2.9 (independent.py).
  lion: { cases: lionFile.cases.map((c) => ({ ...c, optimizer: 'lion' })) },
  muon: { cases: muonFile.cases.map((c) => ({ ...c, optimizer: 'muon' })) },
};

/** independent.py writes every zero as +0 (numpy's signs of zero are not a reference). */
const INDEPENDENT = new Set(['lion', 'muon']);

const DT = { float32: 'F32', float64: 'F64' } as const;

function diffs(label: string, actual: unknown, expected: unknown, signedZeros = true): string[] {
  return zipLeaves(actual, expected)
    .filter(({ a, e }) => !(Object.is(a, e) || (!signedZeros && a === 0 && e === 0)))
    .map(({ path, a, e }) => `${label}${path}: ${a} != torch ${e}`);
}

/** torch's recorded state without what torch keeps as None (SGD's buffer without momentum). */
function expectedState(state: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(state).filter(([, v]) => v !== null && leavesOf(v).some((l) => l.value !== null)));
}

const hyperparamsToSend = (c: Case) => (/defaults/.test(c.name) ? {} : c.hyperparams);

/** A hosted optimizer for the case, at its resumed state (PUT /state) when it has one. */
async function hostedFor(c: Case): Promise<Created> {
  const opt = await createOptimizer({ optimizer: c.optimizer, params: c.params, dtype: c.dtype, hyperparams: hyperparamsToSend(c) });
  expect(opt.body.optimizer).toBe(c.optimizer);
  if (c.state) {
    const r = await opCall('PUT', opt, '/state', { optimizer: c.optimizer, step: c.state.step ?? 0, dtype: c.dtype, hyperparams: c.hyperparams, schedule: null, params: c.params, ...expectedState(c.state) });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
  }
  return opt;
}

/** The state fields of a JSON snapshot (everything that is not metadata or params). */
function stateOf(snapshot: Record<string, unknown>): Record<string, unknown> {
  const { id: _i, optimizer: _o, dtype: _d, hyperparams: _h, schedule: _s, scheduler_state: _ss, params: _p, created_at: _c, updated_at: _u, ...state } = snapshot;
  return state;
}

/** The tensors of a fixture tree in the optimizer's layout order, as raw little-endian bytes. */
function rawBytes(tree: unknown, layout: Array<{ name: string; size: number }>, dtype: 'F32' | 'F64'): Uint8Array {
  const values: number[] = [];
  for (const entry of layout) {
    const t = entry.name === '' ? tree : (tree as Record<string, unknown>)[entry.name];
    const flat = leavesOf(t).map((l) => l.value as number);
    expect(flat).toHaveLength(entry.size);
    values.push(...flat);
  }
  return encodeValues(values, dtype);
}

/** A safetensors file of a fixture tree's tensors, named as the layout names them. */
function gradsFile(tree: unknown, layout: Array<{ name: string; shape: number[] }>, dtype: 'F32' | 'F64'): Uint8Array {
  const tensors: TestTensor[] = layout.map((entry) => {
    const t = entry.name === '' ? tree : (tree as Record<string, unknown>)[entry.name];
    return { name: entry.name, dtype, shape: entry.shape, data: encodeValues(leavesOf(t).map((l) => l.value as number), dtype) };
  });
  return writeSafetensors(tensors);
}

type GradFormat = 'json' | 'raw' | 'safetensors';

/** One hosted step of `grads` in `format`; returns the params after it (as a JSON tree). */
async function step(opt: Created, grads: unknown, format: GradFormat, c: Case): Promise<unknown> {
  const layout = opt.body.layout as Array<{ name: string; shape: number[]; size: number }>;
  if (format === 'json') {
    const r = await opCall('POST', opt, '/step', { grads });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.params;
  }
  const body = format === 'raw' ? rawBytes(grads, layout, DT[c.dtype]) : gradsFile(grads, layout, DT[c.dtype]);
  const type = format === 'raw' ? 'application/octet-stream' : 'application/vnd.safetensors';
  const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, body, { authorization: `Bearer ${opt.token}`, 'content-type': type, accept: 'application/json' });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.params;
}

/**
 * Steps `from`..`to` of the case on `opt`; compares params after every recorded step and the
 * JSON snapshot's state with torch's. Returns the differences.
 */
async function replay(c: Case, opt: Created, format: GradFormat, from = 0, to = c.grads.length): Promise<string[]> {
  const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
  const out: string[] = [];
  for (let s = from; s < to; s++) {
    const params = await step(opt, c.grads[s], format, c);
    const e = byIndex.get(s);
    if (!e) continue;
    const signedZeros = !INDEPENDENT.has(c.optimizer);
    out.push(...diffs(`step ${s} params`, params, e.params, signedZeros));
    const snap = await opCall('GET', opt, '/state');
    expect(snap.status).toBe(200);
    expect(snap.body.optimizer).toBe(c.optimizer);
    const want = { step: ((c.state?.step as number | undefined) ?? 0) + s + 1, ...expectedState(e.state) };
    const got = stateOf(snap.body);
    expect(Object.keys(got).sort(), `step ${s} state keys`).toEqual(Object.keys(want).sort());
    out.push(...diffs(`step ${s} state`, got, want, signedZeros));
    out.push(...diffs(`step ${s} snapshot params`, snap.body.params, e.params, signedZeros));
  }
  return out;
}

describe.each(Object.entries(FILES).map(([name, f]) => ({ name, cases: f.cases as Case[] })))('hosted $name against torch 1.13 (JSON gradients)', ({ cases }) => {
  it.each(cases.map((c) => ({ c, name: c.name })))('$name', { timeout: 120_000 }, async ({ c }) => {
    const opt = await hostedFor(c);
    expect((await replay(c, opt, 'json')).slice(0, 10)).toEqual([]);
  });
});

/** A few rich cases of every optimizer: named tensors, every option, trajectories. */
const PICKS = Object.values(FILES).flatMap((f) => {
  const cases = f.cases as Case[];
  const patterns = [/-combined-f32$/, /-from-state-f64$|-from-state-momentum-f64$|-from-state-step4-f64$|-resumed-f64$/, /-traj-named-model-f32$|-trajectory-0-f32$/, /-large-f64$/];
  return patterns.flatMap((re) => cases.filter((c) => re.test(c.name)).slice(0, 1));
});

describe('hosted binary gradients and snapshots of every optimizer', () => {
  it('picks cover every optimizer in both dtypes', () => {
    expect(new Set(PICKS.map((c) => c.optimizer))).toEqual(new Set(Object.keys(FILES)));
    expect(PICKS.length).toBeGreaterThanOrEqual(2 * Object.keys(FILES).length + 14);
    expect(new Set(PICKS.map((c) => c.dtype))).toEqual(new Set(['float32', 'float64']));
  });

  it.each(PICKS.map((c) => ({ c, name: c.name })))('$name: raw and safetensors gradients', { timeout: 120_000 }, async ({ c }) => {
    const raw = await hostedFor(c);
    expect((await replay(c, raw, 'raw')).slice(0, 10)).toEqual([]);
    const file = await hostedFor(c);
    expect((await replay(c, file, 'safetensors')).slice(0, 10)).toEqual([]);
  });

  it.each(PICKS.map((c) => ({ c, name: c.name })))('$name: JSON and safetensors snapshots restored into new optimizers continue identically', { timeout: 120_000 }, async ({ c }) => {
    const half = Math.max(1, Math.floor(c.grads.length / 2));
    const opt = await hostedFor(c);
    expect(await replay(c, opt, 'json', 0, half)).toEqual([]);

    const json = await opCall('GET', opt, '/state');
    expect(json.status).toBe(200);
    const intoJson = await createOptimizer({ optimizer: c.optimizer, params: c.params, dtype: c.dtype, hyperparams: c.hyperparams });
    const put = await opCall('PUT', intoJson, '/state', json.body);
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect(put.body.step).toBe(json.body.step);

    const file = await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, { authorization: `Bearer ${opt.token}`, accept: 'application/vnd.safetensors' });
    expect(file.status).toBe(200);
    const parsed = readSafetensors(file.bytes);
    expect(parsed.metadata!.optimizer).toBe(c.optimizer);
    // torch's state names: every tensor is params/… or a slot torch keeps, mu_product/… for NAdam,
    // step/… unless the optimizer keeps no step count (SGD; Lion and Muon as the references keep none).
    const prefixes = new Set(parsed.order.map((n) => n.split('/')[0]));
    const want = new Set(['params', ...Object.keys(expectedState(c.expected[0]!.state))]);
    if (!['sgd', 'lion', 'muon'].includes(c.optimizer)) want.add('step');
    expect(prefixes).toEqual(want);
    const intoFile = await createOptimizer({ optimizer: c.optimizer, params: c.params, dtype: c.dtype, hyperparams: c.hyperparams });
    const putFile = await callBytes('PUT', `/v1/optimizers/${intoFile.id}/state`, file.bytes, { authorization: `Bearer ${intoFile.token}`, 'content-type': 'application/vnd.safetensors' });
    expect(putFile.status, JSON.stringify(putFile.body)).toBe(200);

    for (const restored of [intoJson, intoFile]) expect(await replay(c, restored, 'json', half)).toEqual([]);
    expect(await replay(c, opt, 'json', half)).toEqual([]);
  });
});

describe('hosted optimizers of other kinds: creation and rules', () => {
  it('GET shows the optimizer, its hyperparameters with torch defaults, and its element limit from its slot count', async () => {
    const sgd = await createOptimizer({ optimizer: 'sgd', params: [1, 2], hyperparams: { lr: 0.1 } });
    const info = await opCall('GET', sgd, '');
    expect(info.body).toMatchObject({ optimizer: 'sgd', hyperparams: { lr: 0.1, momentum: 0, dampening: 0, weight_decay: 0, nesterov: false, maximize: false } });
    // 80 MiB (MAX_HOSTED_BYTES) over params, gradient buffer and SGD's one slot: 3 arrays of 4 bytes.
    expect(info.body.max_elements).toBe(Math.floor((80 * 1024 * 1024) / (3 * 4)));
    const adam = await createOptimizer({ params: [1, 2] });
    expect(adam.body.optimizer).toBe('adam');
    expect(adam.body.max_elements).toBe(Math.floor((80 * 1024 * 1024) / (5 * 4)));
    const rms = await createOptimizer({ optimizer: 'rmsprop', params: [1, 2], dtype: 'float64' });
    expect(rms.body.max_elements).toBe(Math.floor((80 * 1024 * 1024) / (5 * 8)));
    const adagrad = await createOptimizer({ optimizer: 'adagrad', params: [1, 2] });
    expect(adagrad.body.max_elements).toBe(Math.floor((80 * 1024 * 1024) / (3 * 4)));
    // The catalogue shows the same limits: slots counted from each optimizer's state.
    const catalogue = await callBytes('GET', '/v1/algorithms');
    for (const a of catalogue.body.algorithms as Array<{ name: string; state: { slots: unknown[] }; hosted_max_elements: Record<string, number> }>) {
      const arrays = 2 + a.state.slots.length;
      expect(a.hosted_max_elements, a.name).toEqual({ float32: Math.floor((80 * 1024 * 1024) / (arrays * 4)), float64: Math.floor((80 * 1024 * 1024) / (arrays * 8)) });
    }
    const byName = new Map((catalogue.body.algorithms as Array<{ name: string; state: { slots: unknown[] } }>).map((a) => [a.name, a.state.slots.length]));
    expect([byName.get('sgd'), byName.get('adam'), byName.get('rmsprop'), byName.get('adagrad')]).toEqual([1, 3, 3, 1]);
  });

  it('torch\'s betas are accepted; the optimizer\'s own schema validates create and PATCH', async () => {
    const nadam = await createOptimizer({ optimizer: 'nadam', params: [1], hyperparams: { betas: [0.8, 0.9] } });
    expect(nadam.body.hyperparams).toMatchObject({ beta1: 0.8, beta2: 0.9, momentum_decay: 0.004 });
    for (const [body, field] of [
      [{ optimizer: 'sgd', params: [1] }, 'hyperparams.lr'],
      [{ optimizer: 'sgd', params: [1], hyperparams: { lr: 0.1, beta1: 0.9 } }, 'hyperparams.beta1'],
      [{ optimizer: 'sgd', params: [1], hyperparams: { lr: 0.1, nesterov: true } }, 'hyperparams.nesterov'],
      [{ optimizer: 'rmsprop', params: [1], hyperparams: { alpha: -1 } }, 'hyperparams.alpha'],
      [{ optimizer: 'lbfgs', params: [1] }, 'optimizer'],
      // Muon steps 2-D matrices only, within its size limit.
      [{ optimizer: 'muon', params: { w: [[1, 2], [3, 4]], b: [1, 2] } }, 'params.b'],
      [{ optimizer: 'muon', shapes: { w: [257, 257] } }, 'shapes.w'],
      [{ optimizer: 'muon', params: [[1]], hyperparams: { adjust_lr_fn: 'rms' } }, 'hyperparams.adjust_lr_fn'],
    ] as const) {
      const r = await callBytes('POST', '/v1/optimizers', body);
      expectProblem({ status: r.status, type: r.type, body: r.body }, 422, field);
    }
    const sgd = await createOptimizer({ optimizer: 'sgd', params: [1], hyperparams: { lr: 0.1, momentum: 0.9 } });
    expectProblem(await opCall('PATCH', sgd, '', { hyperparams: { nesterov: true, dampening: 0.5 } }), 422, 'hyperparams.nesterov');
    expectProblem(await opCall('PATCH', sgd, '', { hyperparams: { amsgrad: true } }), 422, 'hyperparams.amsgrad');
    expectProblem(await opCall('PATCH', sgd, '', { hyperparams: { momentum: -1 } }), 422, 'hyperparams.momentum');
    const ok = await opCall('PATCH', sgd, '', { hyperparams: { nesterov: true } });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.hyperparams).toMatchObject({ lr: 0.1, momentum: 0.9, nesterov: true });
  });

  it('SGD\'s momentum buffer is created by the first step (a clone of the gradient), kept by a PATCH that turns momentum off and resumed when it is back (as torch)', async () => {
    const sgd = await createOptimizer({ optimizer: 'sgd', params: [1, 2], hyperparams: { lr: 0.5, momentum: 0.9, dampening: 0.5 } });
    let snap = await opCall('GET', sgd, '/state');
    expect(snap.body.momentum_buffer).toBeUndefined();
    expect(snap.body.step).toBe(0);
    await opCall('POST', sgd, '/step', { grads: [0.5, -0.25] });
    snap = await opCall('GET', sgd, '/state');
    expect(snap.body.momentum_buffer).toEqual([0.5, -0.25]); // torch.clone(d_p): no dampening on the first step
    // Second step: buf = 0.9*buf + 0.5*g; p -= 0.5*buf (exact in binary for these values).
    await opCall('POST', sgd, '/step', { grads: [1, 1] });
    snap = await opCall('GET', sgd, '/state');
    expect(snap.body.momentum_buffer).toEqual([Math.fround(Math.fround(0.9 * 0.5) + 0.5), Math.fround(Math.fround(0.9 * -0.25) + 0.5)]);
    const buf = snap.body.momentum_buffer as number[];
    const before = snap.body.params as number[];
    // torch 1.13 keeps state['momentum_buffer'] while momentum is 0 (the step stores the list back unchanged).
    const off = await opCall('PATCH', sgd, '', { hyperparams: { momentum: 0 } });
    expect(off.status).toBe(200);
    snap = await opCall('GET', sgd, '/state');
    expect(snap.body.momentum_buffer).toEqual(buf);
    await opCall('POST', sgd, '/step', { grads: [1, 1] }); // p -= 0.5*g, the buffer unread
    snap = await opCall('GET', sgd, '/state');
    expect(snap.body.momentum_buffer).toEqual(buf);
    expect(snap.body.params).toEqual([Math.fround(before[0]! - 0.5), Math.fround(before[1]! - 0.5)]);
    // Back on: buf = 0.9*buf + (1 - 0.5)*g from the kept buffer (0.5*g exact; 0.9 is float32's 0.9).
    await opCall('PATCH', sgd, '', { hyperparams: { momentum: 0.9 } });
    await opCall('POST', sgd, '/step', { grads: [0.25, 0.125] });
    snap = await opCall('GET', sgd, '/state');
    expect(snap.body.momentum_buffer).toEqual([Math.fround(Math.fround(Math.fround(0.9) * buf[0]!) + 0.125), Math.fround(Math.fround(Math.fround(0.9) * buf[1]!) + 0.0625)]);
  });

  it('a snapshot of another optimizer is a 422 and changes nothing', async () => {
    const sgd = await createOptimizer({ optimizer: 'sgd', params: [1, 2], hyperparams: { lr: 0.1, momentum: 0.9 } });
    await opCall('POST', sgd, '/step', { grads: [0.5, 0.5] });
    const before = await opCall('GET', sgd, '/state');
    const adam = await createOptimizer({ params: [1, 2] });
    await opCall('POST', adam, '/step', { grads: [0.5, 0.5] });
    const adamSnap = await opCall('GET', adam, '/state');
    expectProblem(await opCall('PUT', sgd, '/state', adamSnap.body), 422, 'optimizer');
    // Without `optimizer` a snapshot is Adam's (as snapshots made before other optimizers).
    const { optimizer: _o, ...legacy } = adamSnap.body;
    expectProblem(await opCall('PUT', sgd, '/state', legacy), 422, 'optimizer');
    // Another optimizer's slot in the right optimizer's snapshot.
    expectProblem(await opCall('PUT', sgd, '/state', { ...before.body, exp_avg: [0, 0] }), 422, 'exp_avg');
    const file = await callBytes('GET', `/v1/optimizers/${adam.id}/state`, undefined, { authorization: `Bearer ${adam.token}`, accept: 'application/vnd.safetensors' });
    const r = await callBytes('PUT', `/v1/optimizers/${sgd.id}/state`, file.bytes, { authorization: `Bearer ${sgd.token}`, 'content-type': 'application/vnd.safetensors' });
    expectProblem({ status: r.status, type: r.type, body: r.body }, 422, '__metadata__.optimizer');
    const after = await opCall('GET', sgd, '/state');
    expect(after.body).toEqual(before.body);
  });

  it('NAdam\'s mu_product is required in a snapshot at step > 0', async () => {
    const nadam = await createOptimizer({ optimizer: 'nadam', params: [1, 2] });
    await opCall('POST', nadam, '/step', { grads: [0.5, 0.5] });
    const snap = await opCall('GET', nadam, '/state');
    expect(typeof snap.body.mu_product).toBe('number');
    const { mu_product: _m, ...without } = snap.body;
    expectProblem(await opCall('PUT', nadam, '/state', without), 422, 'mu_product');
  });

  it('above the optimizer\'s own element limit it is sharded (SGD holds more elements per object than Adam); 413 beyond 256 objects', async () => {
    const sgdMost = Math.floor((80 * 1024 * 1024) / (3 * 4));
    const adamMost = Math.floor((80 * 1024 * 1024) / (5 * 4));
    const sgd = await createOptimizer({ optimizer: 'sgd', shapes: [adamMost + 1], hyperparams: { lr: 0.1 } });
    expect(sgd.body).toMatchObject({ size: adamMost + 1, shards: 1 });
    await opCall('DELETE', sgd, '');
    const big = await createOptimizer({ optimizer: 'sgd', shapes: [sgdMost + 1], hyperparams: { lr: 0.1 } });
    expect(big.body).toMatchObject({ size: sgdMost + 1, shards: 2, max_elements: sgdMost });
    await opCall('DELETE', big, '');
    const adam = await createOptimizer({ shapes: [adamMost + 1] });
    expect(adam.body).toMatchObject({ shards: 2, max_elements: adamMost });
    await opCall('DELETE', adam, '');
    const beyond = await callBytes('POST', '/v1/optimizers', { shapes: [adamMost * 256 + 1] });
    expect(beyond.status, JSON.stringify(beyond.body)).toBe(413);
  });
});

describe('journal replay of other optimizers (states of more than 8 checkpoint chunks)', () => {
  // 9 chunks of 65,536 float32 elements and a bit: each step journals its gradient and rewrites 2 chunks.
  const n = 9 * 65_536 + 3;
  const raw = (values: Float32Array) => new Uint8Array(values.buffer);
  const cases = [
    ['nadam', { lr: 0.01, momentum_decay: 0.01 }],
    ['sgd', { lr: 0.1, momentum: 0.9, dampening: 0.1 }],
    ['rmsprop', { lr: 0.01, centered: true, momentum: 0.5 }],
  ] as const;

  it.each(cases)('%s: an evicted object reloads (replaying the journal) to the state it had in memory, and steps on as an object never evicted', { timeout: 240_000 }, async (optimizer, hyperparams) => {
    const params = new Float32Array(n).map((_, i) => Math.sin(i) * 2);
    const objects: Created[] = [];
    for (let k = 0; k < 2; k++) {
      const opt = await createOptimizer({ optimizer, shapes: { w: [n] }, hyperparams });
      const up = await callBytes('PUT', `/v1/optimizers/${opt.id}/params`, raw(params), { authorization: `Bearer ${opt.token}`, 'content-type': 'application/octet-stream' });
      expect(up.status, JSON.stringify(up.body)).toBe(200);
      objects.push(opt);
    }
    const stepRaw = async (opt: Created, k: number) => {
      const g = new Float32Array(n).map((_, i) => Math.cos(i * (k + 1)) * 0.1);
      const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step?return=none`, raw(g), { authorization: `Bearer ${opt.token}`, 'content-type': 'application/octet-stream' });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    };
    const checkpoint = async (opt: Created) =>
      (await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, { authorization: `Bearer ${opt.token}`, accept: 'application/vnd.safetensors' })).bytes;
    for (let k = 0; k < 5; k++) for (const opt of objects) await stepRaw(opt, k);
    const [evicted, kept] = objects as [Created, Created];
    const stub = env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(evicted.id));
    const journalled = await runInDurableObject(stub, (_i, st) => st.storage.sql.exec<{ n: number }>('SELECT count(*) AS n FROM journal').one().n);
    expect(journalled).toBeGreaterThan(0); // the reload below replays something
    const before = await checkpoint(evicted);
    await evictDurableObject(stub);
    const after = await checkpoint(evicted);
    expect(after.length).toBe(before.length);
    expect(Buffer.from(after).equals(Buffer.from(before))).toBe(true);
    await stepRaw(evicted, 5);
    await stepRaw(kept, 5);
    const a = readSafetensors(await checkpoint(evicted));
    const b = readSafetensors(await checkpoint(kept));
    expect([...a.tensors.keys()].sort()).toEqual([...b.tensors.keys()].sort());
    for (const [name, t] of a.tensors) expect(Buffer.from(t.data).equals(Buffer.from(b.tensors.get(name)!.data)), name).toBe(true);
    if (optimizer === 'nadam') expect(a.metadata!.mu_product).toBe(b.metadata!.mu_product);
  });
});

describe('safetensors creation of other optimizers', () => {
  it('takes the optimizer and its hyperparameters from the query or __metadata__, validated by its schema', async () => {
    const file = writeSafetensors([{ name: 'w', dtype: 'F32', shape: [2], data: encodeValues([1, -1], 'F32') }]);
    const post = (query: string, body = file) => callBytes('POST', `/v1/optimizers${query}`, body, { 'content-type': 'application/vnd.safetensors' });
    const sgd = await post('?optimizer=sgd&lr=0.1&momentum=0.9&nesterov=true');
    expect(sgd.status, JSON.stringify(sgd.body)).toBe(201);
    expect(sgd.body).toMatchObject({ optimizer: 'sgd', hyperparams: { lr: 0.1, momentum: 0.9, nesterov: true, dampening: 0 } });
    const withMeta = writeSafetensors([{ name: 'w', dtype: 'F32', shape: [2], data: encodeValues([1, -1], 'F32') }], { optimizer: 'adagrad', hyperparams: JSON.stringify({ lr_decay: 0.5 }) });
    const adagrad = await post('', withMeta);
    expect(adagrad.status, JSON.stringify(adagrad.body)).toBe(201);
    expect(adagrad.body).toMatchObject({ optimizer: 'adagrad', hyperparams: { lr: 0.01, lr_decay: 0.5, initial_accumulator_value: 0 } });
    for (const [query, field] of [
      ['?optimizer=sgd', 'hyperparams.lr'],
      ['?optimizer=sgd&lr=0.1&amsgrad=true', 'hyperparams.amsgrad'],
      ['?optimizer=rmsprop&alpha=-1', 'hyperparams.alpha'],
    ] as const) {
      const r = await post(query);
      expectProblem({ status: r.status, type: r.type, body: r.body }, 422, field);
    }
    const clash = await post('?optimizer=sgd&lr=0.1', withMeta);
    expectProblem({ status: clash.status, type: clash.type, body: clash.body }, 422, 'optimizer');
  });
});
