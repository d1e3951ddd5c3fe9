// The stateless step of every optimizer beyond Adam, through HTTP: real torch 1.13 trajectories
// (test/fixtures/optim) replayed the way a client runs them, in JSON and in safetensors, bit for bit
// (test/helpers/optim-replay.ts), here for SGD, RMSprop, Adagrad and Adamax (the others:
// test/optim-routes-*.test.ts, a few fixture files each). Then the catalogue, torch's defaults and
// the 4xx rules.

import { describe, expect, it } from 'vitest';
import adagradCases from './fixtures/optim/adagrad.json';
import adamaxCases from './fixtures/optim/adamax.json';
import rmspropCases from './fixtures/optim/rmsprop.json';
import sgdCases from './fixtures/optim/sgd.json';
import { callBytes, getJson, postJson } from './helpers/http.ts';
import { readSafetensors } from './helpers/safetensors.ts';
import { replaySuites } from './helpers/optim-replay.ts';

replaySuites({ sgd: sgdCases, rmsprop: rmspropCases, adagrad: adagradCases, adamax: adamaxCases });

// ---- catalogue and rules ----

describe('GET /v1/algorithms', () => {
  it('lists every optimizer with torch 1.13 defaults (as the fixtures recorded torch\'s param_groups)', async () => {
    const r = await getJson('/v1/algorithms');
    expect(r.status).toBe(200);
    const byName = new Map(r.body.algorithms.map((a: { name: string }) => [a.name, a]));
    expect([...byName.keys()]).toEqual(expect.arrayContaining(['adam', 'adamw', 'sgd', 'rmsprop', 'adagrad', 'adamax', 'nadam', 'radam', 'adadelta']));
    // Each optimizer's defaults against its torch fixtures: test/helpers/optim-replay.ts (the catalogue suite).
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
    // Without momentum torch reads no buffer but keeps one it holds (momentum turned off): it comes back unchanged.
    const plain = await postJson('/v1/sgd/step', { params: p, grads: g, hyperparams: { lr: 1 }, state: { step: 1, momentum_buffer: [5, 5, 5] } });
    expect(plain.body.state).toEqual({ step: 2, momentum_buffer: [5, 5, 5] });
    expect((await postJson('/v1/sgd/step', { params: p, grads: g, hyperparams: { lr: 1 } })).body.state).toEqual({ step: 1 });
  });

  it('answers 422 for a non-finite result, naming where, and 404 for an unknown optimizer', async () => {
    const r = await postJson('/v1/adagrad/step', { params: [0, 0], grads: [0, 1], hyperparams: { eps: 0 } });
    expect(r.status).toBe(422);
    expect(r.body.type).toMatch(/non-finite-result/);
    expect(r.body.errors[0].field).toBe('grads[0]');
    expect((await postJson('/v1/lbfgs/step', { params: p, grads: g })).status).toBe(404);
  });

  it('keeps the sign of a zero scalar (NAdam mu_product -0 stays -0, in JSON and safetensors; found by test/fuzz/family-step.test.ts)', async () => {
    // mu_product' = mu_product · mu: -0 · mu is -0, as torch's float keeps it; JSON.stringify and String() wrote 0.
    const body = '{"params": [1], "grads": [0.5], "state": {"step": 1, "exp_avg": [0], "exp_avg_sq": [0], "mu_product": -0.0}}';
    const r = await callBytes('POST', '/v1/nadam/step', body, { 'content-type': 'application/json', accept: 'application/json' });
    expect(r.status).toBe(200);
    expect(new TextDecoder().decode(r.bytes)).toMatch(/"mu_product":-0\.0[,}]/);
    expect(Object.is(r.body.state.mu_product, -0)).toBe(true);
    const st = await callBytes('POST', '/v1/nadam/step', body, { 'content-type': 'application/json', accept: 'application/vnd.safetensors' });
    expect(st.status).toBe(200);
    expect(readSafetensors(st.bytes).metadata?.mu_product).toBe('-0');
  });

  it('answers 422 when a state scalar overflows, not a 200 with null (found by test/fuzz/family-step.test.ts)', async () => {
    // float32 NAdam: mu_product' = fround(1e300 · mu) = Infinity, while the params stay finite.
    for (const accept of ['application/json', 'application/vnd.safetensors']) {
      const r = await callBytes('POST', '/v1/nadam/step', { params: [1, 2], grads: [0.5, -1], state: { step: 1, exp_avg: [0, 0], exp_avg_sq: [0, 0], mu_product: 1e300 } }, { accept });
      expect(r.status, accept).toBe(422);
      expect(r.body.type).toMatch(/non-finite-result/);
      expect(r.body.errors[0].field).toBe('state.mu_product');
    }
  });

  it('refuses hyperparameters in the query with a JSON body', async () => {
    const r = await postJson('/v1/sgd/step?lr=0.1', { params: p, grads: g, hyperparams: { lr: 0.1 } });
    expect(r.status).toBe(422);
    expect(r.body.errors[0].field).toBe('lr');
  });
});
