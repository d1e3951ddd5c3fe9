// Gradient controls of hosted optimizers as their history and metadata record them, through HTTP:
// with clip_grad_norm each history entry carries grad_norm (torch's total norm from
// test/fixtures/optim/clip.json, or one computed here by hand); steps skipped by nonfinite: "skip"
// are counted in `skipped_steps` and recorded in the history, change no params, state, step or
// ETag, are not counted again on an Idempotency-Key retry, and a rejected request changes nothing.
// Optimizers stored before these were recorded (tables without the columns, metadata without the
// count) keep working.

import { evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { OptimizerStore } from '../src/durable-objects/store.ts';
import clipFile from './fixtures/optim/clip.json';
import { call, callBytes, postJson } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, type Created } from './helpers/optimizers.ts';
import { encodeValues, writeSafetensors, type Dt } from './helpers/safetensors.ts';

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));

interface ClipThenStep {
  name: string;
  kind: string;
  clip: { type: 'norm'; max_norm: number } | { type: 'value'; clip_value: number };
  optimizer: string;
  dtype: 'float32' | 'float64';
  hyperparams: Record<string, number | boolean>;
  params: unknown;
  grads: unknown[];
  expected: Array<{ step_index: number; total_norm?: number; params: unknown }>;
}

const TRAJECTORIES = (clipFile.cases as unknown as ClipThenStep[]).filter((c) => c.kind === 'clip_then_step');

/** Everything an optimizer holds and shows: snapshot, params, metadata (as bytes), and the ETag. */
async function everything(opt: Created) {
  const state = await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, authed(opt.token));
  const params = await callBytes('GET', `/v1/optimizers/${opt.id}/params`, undefined, authed(opt.token));
  const info = await opCall('GET', opt, '');
  const { expires_at: _e, ...infoBody } = info.body; // a successful call pushes the expiry
  return { state: new TextDecoder().decode(state.bytes), params: new TextDecoder().decode(params.bytes), etag: info.headers.get('etag'), info: infoBody };
}

const history = async (opt: Created, query = '') => (await opCall('GET', opt, `/history${query}`)).body.entries as Array<Record<string, unknown>>;

describe('grad_norm in the history', () => {
  it.each(TRAJECTORIES.map((c) => [c.name, c] as const))('%s: each entry carries the step answer\'s grad_norm, torch\'s total norm (absent with clip_grad_value)', async (_name, c) => {
    const control = c.clip.type === 'norm' ? { clip_grad_norm: c.clip.max_norm } : { clip_grad_value: c.clip.clip_value };
    const opt = await createOptimizer({ optimizer: c.optimizer, dtype: c.dtype, params: c.params, hyperparams: { ...c.hyperparams, ...control } });
    const answered: unknown[] = [];
    for (const [i, g] of c.grads.entries()) {
      const r = await opCall('POST', opt, '/step', { grads: g, loss: i + 0.5 });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      const torch = c.expected.find((e) => e.step_index === i);
      if (torch) {
        expect(r.body.params, `step ${i}`).toEqual(torch.params);
        if (c.clip.type === 'norm') expect(r.body.grad_norm, `step ${i}`).toBe(torch.total_norm);
      }
      answered.push(r.body.grad_norm);
    }
    const entries = await history(opt);
    expect(entries.map((e) => e.step)).toEqual(c.grads.map((_, i) => i + 1));
    expect(entries.map((e) => e.loss)).toEqual(c.grads.map((_, i) => i + 0.5));
    if (c.clip.type === 'norm') {
      expect(entries.map((e) => e.grad_norm)).toEqual(answered);
      for (const e of c.expected) expect(entries[e.step_index]!.grad_norm).toBe(e.total_norm);
    } else {
      for (const e of entries) expect(Object.keys(e).sort()).toEqual(['at', 'loss', 'lr', 'step']);
    }
    for (const e of entries) expect(e).not.toHaveProperty('skipped');
  });

  it.each(['float32', 'float64'] as const)('%s: the L2 norm by hand (3² + 4² + 12² = 13²), and none without clip_grad_norm', async (dtype) => {
    const opt = await createOptimizer({ optimizer: 'sgd', dtype, params: { w: [0, 0], b: [0] }, hyperparams: { lr: 0.5, clip_grad_norm: 26 } });
    const r = await opCall('POST', opt, '/step', { grads: { w: [3, 4], b: [12] } });
    // Below max_norm: torch still multiplies by the clamped coefficient, exactly 1.
    expect(r.body).toMatchObject({ step: 1, grad_norm: 13, params: { w: [-1.5, -2], b: [-6] } });
    expect(r.headers.get('grad_norm')).toBe('13');
    const half = await opCall('PATCH', opt, '', { hyperparams: { clip_grad_norm: 6.5 } });
    expect(half.status).toBe(200);
    // Above: coef = 6.5 / (13 + 1e-6), just under one half.
    const clipped = await opCall('POST', opt, '/step', { grads: { w: [3, 4], b: [12] } });
    expect(clipped.body.grad_norm).toBe(13);
    expect((await history(opt)).map((e) => e.grad_norm)).toEqual([13, 13]);

    const plain = await createOptimizer({ optimizer: 'sgd', dtype, params: { w: [0, 0], b: [0] }, hyperparams: { lr: 0.5 } });
    expect((await opCall('POST', plain, '/step', { grads: { w: [3, 4], b: [12] } })).body).not.toHaveProperty('grad_norm');
    expect(await history(plain)).toEqual([expect.not.objectContaining({ grad_norm: expect.anything() })]);
    expect(Object.keys((await history(plain))[0]!).sort()).toEqual(['at', 'loss', 'lr', 'step']);
  });

  it('a norm that overflows float32 is torch\'s inf (null in JSON, Infinity in the header): every gradient is multiplied by 0 and the step is applied', async () => {
    // torch 1.13: clip_grad_norm_ of a float32 gradient [1e20, 0] returns tensor(inf) and zeroes it.
    const opt = await createOptimizer({ optimizer: 'sgd', dtype: 'float32', params: { w: [1, 2], b: [3] }, hyperparams: { lr: 0.5, clip_grad_norm: 1 } });
    const r = await opCall('POST', opt, '/step', { grads: { w: [1e20, 0], b: [0] } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toEqual({ step: 1, lr: 0.5, grad_norm: null, params: { w: [1, 2], b: [3] } });
    expect(r.headers.get('grad_norm')).toBe('Infinity');
    expect(await history(opt)).toEqual([expect.objectContaining({ step: 1, grad_norm: null })]);
  });

  it('a retried Idempotency-Key answers the original grad_norm and records no second entry', async () => {
    const opt = await createOptimizer({ optimizer: 'adamw', dtype: 'float64', params: { w: [0, 0], b: [0] }, hyperparams: { lr: 0.1, clip_grad_norm: 1 } });
    const first = await opCall('POST', opt, '/step', { grads: { w: [3, 4], b: [12] } }, { 'idempotency-key': 'clip-1' });
    const again = await opCall('POST', opt, '/step', { grads: { w: [3, 4], b: [12] } }, { 'idempotency-key': 'clip-1' });
    expect(first.body.grad_norm).toBe(13);
    expect(again.body).toMatchObject({ step: 1, replayed: true, grad_norm: 13, params: first.body.params });
    expect(await history(opt)).toHaveLength(1);
  });
});

/**
 * A float64 Adam (lr 1e307) whose first element, 1.79e308, overflows when its gradient is -1 (the
 * update is about lr / 10 or more) and stays put when it is 0. Its one applied step (`APPLY`)
 * leaves state to compare.
 */
async function overflowing(extra: Record<string, unknown> = {}): Promise<Created> {
  const opt = await createOptimizer({ optimizer: 'adam', dtype: 'float64', params: { w: [1.79e308, 0.5] }, hyperparams: { lr: 1e307, nonfinite: 'skip', clip_grad_norm: 10, ...extra } });
  const r = await opCall('POST', opt, '/step', APPLY);
  expect(r.body).toMatchObject({ step: 1, skipped: false, grad_norm: 1 });
  return opt;
}
const APPLY = { grads: { w: [0, 1] }, loss: 4 };
/** grad_norm 1 (below clip_grad_norm 10: unchanged); after APPLY, 1.79e308 + ~0.074e308 overflows. */
const OVERFLOW = { grads: { w: [-1, 0] }, loss: 3 };

describe('skipped steps', () => {
  it('are counted in skipped_steps, recorded in the history, and change no params, state, step or ETag', async () => {
    const opt = await overflowing();
    const before = await everything(opt);
    expect(before.info).toMatchObject({ step: 1, skipped_steps: 0 });

    const skipped = await opCall('POST', opt, '/step', OVERFLOW);
    expect(skipped.status, JSON.stringify(skipped.body)).toBe(200);
    expect(skipped.body).toEqual({ step: 1, lr: 1e307, grad_norm: 1, skipped: true, params: JSON.parse(before.params).params });
    expect(skipped.headers.get('etag')).toBe(before.etag);
    // The same through a raw body (float64 bytes of the gradient): the answer's headers say so.
    const raw = await callBytes('POST', `/v1/optimizers/${opt.id}/step?loss=2&return=none`, new Uint8Array(Float64Array.from([-1, 0]).buffer), authed(opt.token, { 'content-type': 'application/octet-stream' }));
    expect(raw.status).toBe(200);
    expect([raw.headers.get('skipped'), raw.headers.get('step'), raw.headers.get('grad_norm')]).toEqual(['true', '1', '1']);

    const after = await everything(opt);
    expect(after.state).toBe(before.state);
    expect(after.params).toBe(before.params);
    expect(after.etag).toBe(before.etag);
    expect(after.info).toEqual({ ...before.info, skipped_steps: 2 });

    const entries = await history(opt);
    expect(entries.map(({ at: _a, ...e }) => e)).toEqual([
      { step: 1, lr: 1e307, loss: 4, grad_norm: 1 },
      { step: 1, lr: 1e307, loss: 3, grad_norm: 1, skipped: true },
      { step: 1, lr: 1e307, loss: 2, grad_norm: 1, skipped: true },
    ]);
    // The count is stored: it survives the object's restart.
    await evictDurableObject(stubOf(opt.id));
    expect((await opCall('GET', opt, '')).body.skipped_steps).toBe(2);
    const next = await opCall('POST', opt, '/step', APPLY);
    expect(next.body).toMatchObject({ step: 2, skipped: false });
    expect((await history(opt)).map((e) => [e.step, e.skipped ?? false])).toEqual([[1, false], [1, true], [1, true], [2, false]]);
    expect((await history(opt, '?limit=2')).map((e) => [e.step, e.skipped ?? false])).toEqual([[1, true], [2, false]]);
  });

  it('a retry with the same Idempotency-Key answers skipped again and is not counted twice', async () => {
    const opt = await overflowing();
    const first = await opCall('POST', opt, '/step', OVERFLOW, { 'idempotency-key': 'skip-1' });
    expect(first.body).toMatchObject({ step: 1, skipped: true, grad_norm: 1 });
    const before = await everything(opt);
    for (let i = 0; i < 2; i++) {
      const again = await opCall('POST', opt, '/step', OVERFLOW, { 'idempotency-key': 'skip-1' });
      expect(again.status).toBe(200);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(again.body).toEqual({ step: 1, lr: 1e307, replayed: true, grad_norm: 1, skipped: true, params: first.body.params });
    }
    const after = await everything(opt);
    expect(after).toEqual(before);
    expect(after.info.skipped_steps).toBe(1);
    expect((await history(opt)).filter((e) => e.skipped)).toHaveLength(1);
    // The key is taken: other gradients under it are a 422 that counts nothing.
    expectProblem(await opCall('POST', opt, '/step', { grads: { w: [-2, 0] }, loss: 3 }, { 'idempotency-key': 'skip-1' }), 422, 'Idempotency-Key');
    // An applied step's retry says it was not skipped, as its answer did.
    const applied = await opCall('POST', opt, '/step', APPLY, { 'idempotency-key': 'apply-1' });
    const replay = await opCall('POST', opt, '/step', APPLY, { 'idempotency-key': 'apply-1' });
    expect(replay.body).toEqual({ ...applied.body, replayed: true });
    expect(replay.body).toMatchObject({ step: 2, skipped: false, grad_norm: 1 });
    expect((await opCall('GET', opt, '')).body.skipped_steps).toBe(1);
  });

  it('a rejected request that would have been skipped changes nothing, not even the count', async () => {
    const opt = await overflowing();
    const before = await everything(opt);
    const beforeHistory = await history(opt);
    const path = `/v1/optimizers/${opt.id}/step`;
    expectProblem(await callBytes('POST', path, OVERFLOW, authed('not-the-token')), 401);
    expectProblem(await opCall('POST', opt, '/step', OVERFLOW, { 'if-match': '"s0-r0"' }), 412);
    expectProblem(await opCall('POST', opt, '/step', { ...OVERFLOW, expected_step: 0 }), 409);
    expectProblem(await opCall('POST', opt, '/step', { grads: { w: [-1, 0, 0] }, loss: 3 }), 422, 'grads.w');
    expectProblem(await opCall('POST', opt, '/step', { ...OVERFLOW, extra: 1 }), 422);
    // A NaN gradient would be skipped, but a body of the wrong length or shape is refused first.
    expectProblem(await callBytes('POST', path, new Uint8Array(Float64Array.from([Number.NaN, 0, 0]).buffer), authed(opt.token, { 'content-type': 'application/octet-stream' })), 422, 'body');
    const wrongShape = writeSafetensors([{ name: 'w', dtype: 'F64', shape: [1, 2], data: encodeValues([Number.NaN, 0], 'F64') }]);
    expectProblem(await callBytes('POST', path, wrongShape, authed(opt.token, { 'content-type': 'application/vnd.safetensors' })), 422, 'grads.w.shape');
    const after = await everything(opt);
    expect(after).toEqual(before);
    expect(after.info.skipped_steps).toBe(0);
    expect(await history(opt)).toEqual(beforeHistory);
  });

  it('without nonfinite: "skip" the same step is a 422 that counts nothing', async () => {
    const opt = await overflowing();
    expect((await opCall('PATCH', opt, '', { hyperparams: { nonfinite: 'error' } })).status).toBe(200);
    const before = await everything(opt);
    expectProblem(await opCall('POST', opt, '/step', OVERFLOW), 422);
    expect(await everything(opt)).toEqual(before);
    expect(await history(opt)).toHaveLength(1);
  });

  it('belong to the hosted optimizer, not to torch\'s state: snapshots do not carry the count, a restore keeps it, a new optimizer starts at 0', async () => {
    const opt = await overflowing();
    await opCall('POST', opt, '/step', OVERFLOW);
    const snapshot = await opCall('GET', opt, '/state');
    expect(snapshot.body).not.toHaveProperty('skipped_steps');
    const restored = await opCall('PUT', opt, '/state', snapshot.body);
    expect(restored.status, JSON.stringify(restored.body)).toBe(200);
    expect(restored.body).toMatchObject({ step: 1, skipped_steps: 1 });
    expect((await history(opt)).map((e) => e.skipped ?? false)).toEqual([false, true]);
    const copy = await createOptimizer({ optimizer: 'adam', dtype: 'float64', params: { w: [0, 0] } });
    const into = await opCall('PUT', copy, '/state', snapshot.body);
    expect(into.body).toMatchObject({ step: 1, skipped_steps: 0 });
    // The copy skips the same step (and counts it) as the original would.
    expect((await opCall('POST', copy, '/step', OVERFLOW)).body).toMatchObject({ step: 1, skipped: true });
    expect((await opCall('GET', copy, '')).body.skipped_steps).toBe(1);
  });

  it('the plot draws the applied steps and counts the skipped ones in its title; none applied is a 409', async () => {
    // Values a chart can scale: float32 SGD, where 3e38 + 1e38 overflows.
    const opt = await createOptimizer({ optimizer: 'sgd', dtype: 'float32', params: { w: [3e38] }, hyperparams: { lr: 1, nonfinite: 'skip' } });
    expect((await opCall('POST', opt, '/step', { grads: { w: [1] }, loss: 2 })).body).toMatchObject({ step: 1, skipped: false });
    for (let i = 0; i < 2; i++) expect((await opCall('POST', opt, '/step', { grads: { w: [-1e38] }, loss: 1 })).body).toMatchObject({ step: 1, skipped: true });
    const svg = await call('GET', `/v1/optimizers/${opt.id}/history/plot`, undefined, authed(opt.token));
    expect(svg.status).toBe(200);
    expect(await svg.text()).toMatch(/<title id="chart-title">[^<]*\(2 skipped steps not drawn\)<\/title>/);
    // Among the last two entries, both skipped, no step was applied.
    const recent = await opCall('GET', opt, '/history/plot?limit=2');
    expectProblem(recent, 409);
    expect(recent.body.detail).toMatch(/2 skipped/);

    const never = await createOptimizer({ optimizer: 'sgd', dtype: 'float32', params: { w: [3e38] }, hyperparams: { lr: 1, nonfinite: 'skip' } });
    expect((await opCall('POST', never, '/step', { grads: { w: [-1e38] } })).body).toMatchObject({ step: 0, skipped: true });
    expectProblem(await opCall('GET', never, '/history/plot'), 409);
  });
});

describe('NaN and ±Inf gradients in raw and safetensors bodies (JSON cannot carry them)', () => {
  const RAW = 'application/octet-stream';
  const ST = 'application/vnd.safetensors';
  const G1 = { w: [0.5, -0.25], b: [2] };
  const G2 = { w: [-0.125, 1], b: [0.5] };
  /** Bodies of non-finite gradients for params {w: [2], b: [1]}, each in another wire format. */
  const bodies = (own: Dt): Array<[string, Uint8Array, string]> => [
    [`raw ${own}, NaN`, encodeValues([Number.NaN, 0, 1], own), RAW],
    ['raw bfloat16, +Inf', encodeValues([0, Infinity, 1], 'BF16'), `${RAW}; dtype=bfloat16`],
    [`safetensors ${own}, -Inf`, writeSafetensors([{ name: 'w', dtype: own, shape: [2], data: encodeValues([1, -Infinity], own) }, { name: 'b', dtype: own, shape: [1], data: encodeValues([0], own) }]), ST],
    ['safetensors F16 and F32, NaN in b', writeSafetensors([{ name: 'b', dtype: 'F32', shape: [1], data: encodeValues([Number.NaN], 'F32') }, { name: 'w', dtype: 'F16', shape: [2], data: encodeValues([0.5, 1], 'F16') }]), ST],
  ];
  const cases = [
    { optimizer: 'adamw', dtype: 'float32' as const, own: 'F32' as Dt, hp: { lr: 0.1, clip_grad_norm: 1 }, slots: ['exp_avg', 'exp_avg_sq'] },
    { optimizer: 'sgd', dtype: 'float64' as const, own: 'F64' as Dt, hp: { lr: 0.1, momentum: 0.9, clip_grad_norm: 1 }, slots: ['momentum_buffer'] },
  ];

  it.each(cases.map((c) => [`${c.optimizer} ${c.dtype}`, c] as const))('%s with nonfinite: "skip": skipped as the stateless step skips it (nothing changes; counted, recorded, not counted again on a retry); then steps on as the stateless step does', async (_label, c) => {
    const hp = { ...c.hp, nonfinite: 'skip' };
    const opt = await createOptimizer({ optimizer: c.optimizer, dtype: c.dtype, params: { w: [1, -1], b: [0.5] }, hyperparams: hp });
    const first = await opCall('POST', opt, '/step', { grads: G1, loss: 1 });
    expect(first.body).toMatchObject({ step: 1, skipped: false });
    const before = await everything(opt);
    const sent = bodies(c.own);
    for (const [label, body, type] of sent) {
      const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step?loss=2`, body, authed(opt.token, { 'content-type': type, accept: 'application/json', 'idempotency-key': label }));
      expect(r.status, `${label}: ${JSON.stringify(r.body)}`).toBe(200);
      // GradScaler looks at the gradients before clipping: no norm is taken, as in the stateless answer.
      expect(r.body, label).toEqual({ step: 1, lr: 0.1, skipped: true, params: JSON.parse(before.params).params });
      expect(r.headers.get('etag'), label).toBe(before.etag);
    }
    // A retry is answered, not counted again.
    const [label, body, type] = sent[0]!;
    const again = await callBytes('POST', `/v1/optimizers/${opt.id}/step?loss=2`, body, authed(opt.token, { 'content-type': type, accept: 'application/json', 'idempotency-key': label }));
    expect(again.body).toMatchObject({ step: 1, skipped: true, replayed: true });
    const after = await everything(opt);
    expect(after.state).toBe(before.state);
    expect(after.params).toBe(before.params);
    expect(after.etag).toBe(before.etag);
    expect(after.info).toEqual({ ...before.info, skipped_steps: sent.length });
    expect((await history(opt)).map(({ at: _a, ...e }) => e)).toEqual([
      { step: 1, lr: 0.1, loss: 1, grad_norm: first.body.grad_norm },
      ...sent.map(() => ({ step: 1, lr: 0.1, loss: 2, skipped: true })),
    ]);

    // The skipped steps left no trace: the next step is the stateless step's second one.
    const hosted = await opCall('POST', opt, '/step', { grads: G2 });
    expect(hosted.body).toMatchObject({ step: 2, skipped: false });
    const s1 = await postJson(`/v1/${c.optimizer}/step`, { params: { w: [1, -1], b: [0.5] }, grads: G1, dtype: c.dtype, hyperparams: hp });
    const s2 = await postJson(`/v1/${c.optimizer}/step`, { params: s1.body.params, grads: G2, dtype: c.dtype, hyperparams: hp, state: s1.body.state });
    expect(hosted.body.params).toEqual(s2.body.params);
    expect(hosted.body.grad_norm).toBe(s2.body.grad_norm);
    const snapshot = (await opCall('GET', opt, '/state')).body;
    for (const slot of c.slots) expect(snapshot[slot], slot).toEqual(s2.body.state[slot]);
    // The stateless step skips such a gradient too (in safetensors, which can carry it).
    const file = writeSafetensors([
      { name: 'params/w', dtype: c.own, shape: [2], data: encodeValues([1, -1], c.own) },
      { name: 'params/b', dtype: c.own, shape: [1], data: encodeValues([0.5], c.own) },
      { name: 'grads/w', dtype: c.own, shape: [2], data: encodeValues([Number.NaN, 0], c.own) },
      { name: 'grads/b', dtype: c.own, shape: [1], data: encodeValues([1], c.own) },
    ], { hyperparams: JSON.stringify(hp) });
    const stateless = await callBytes('POST', `/v1/${c.optimizer}/step`, file, { 'content-type': ST, accept: 'application/json' });
    expect(stateless.body).toMatchObject({ params: { w: [1, -1], b: [0.5] }, state: { step: 0 }, skipped: true });
  });

  it.each(cases.map((c) => [`${c.optimizer} ${c.dtype}`, c] as const))('%s without it: a 422 naming the element (and how to skip instead), changing nothing', async (_label, c) => {
    const opt = await createOptimizer({ optimizer: c.optimizer, dtype: c.dtype, params: { w: [1, -1], b: [0.5] }, hyperparams: c.hp });
    expect((await opCall('POST', opt, '/step', { grads: G1 })).status).toBe(200);
    const before = await everything(opt);
    const fields = ['grads[0]', 'grads[1]', 'grads.w[1]', 'grads.b[0]'];
    for (const [i, [label, body, type]] of bodies(c.own).entries()) {
      const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, body, authed(opt.token, { 'content-type': type }));
      expectProblem(r, 422, fields[i]);
      expect(r.body.detail, label).toMatch(/must be finite.*nonfinite.*skip/);
    }
    expect(await everything(opt)).toEqual(before);
    expect(await history(opt)).toHaveLength(1);
    // Switched on by PATCH, the same body is skipped.
    expect((await opCall('PATCH', opt, '', { hyperparams: { nonfinite: 'skip' } })).status).toBe(200);
    const [, body, type] = bodies(c.own)[0]!;
    const skipped = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, body, authed(opt.token, { 'content-type': type, accept: 'application/json' }));
    expect(skipped.body).toMatchObject({ step: 1, skipped: true });
  });
});

describe('optimizers stored before grad_norm and skipped steps were recorded', () => {
  it('load, read their old entries and keys as before, and record and count from then on', async () => {
    const opt = await overflowing();
    const old = await opCall('POST', opt, '/step', APPLY, { 'idempotency-key': 'old-key' });
    expect(old.body.step).toBe(2);
    // As the code before stored it: no grad_norm or skipped columns, no skippedSteps in the metadata.
    await runInDurableObject(stubOf(opt.id), (_instance, state) => {
      const sql = state.storage.sql;
      for (const table of ['history', 'idempotency']) for (const column of ['grad_norm', 'skipped']) sql.exec(`ALTER TABLE ${table} DROP COLUMN ${column}`);
      const meta = JSON.parse(sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = 'meta'").one().v);
      delete meta.skippedSteps;
      sql.exec("UPDATE meta SET v = ? WHERE k = 'meta'", JSON.stringify(meta));
    });
    await evictDurableObject(stubOf(opt.id));

    expect((await opCall('GET', opt, '')).body).toMatchObject({ step: 2, skipped_steps: 0 });
    expect((await history(opt)).map((e) => Object.keys(e).sort())).toEqual([['at', 'loss', 'lr', 'step'], ['at', 'loss', 'lr', 'step']]);
    // A key remembered before answers what it could then: step and lr.
    const replay = await opCall('POST', opt, '/step', APPLY, { 'idempotency-key': 'old-key' });
    expect(replay.body).toEqual({ step: 2, lr: 1e307, replayed: true, params: old.body.params });

    const skipped = await opCall('POST', opt, '/step', OVERFLOW, { 'idempotency-key': 'new-key' });
    expect(skipped.body).toMatchObject({ step: 2, skipped: true, grad_norm: 1 });
    expect((await opCall('POST', opt, '/step', OVERFLOW, { 'idempotency-key': 'new-key' })).body).toMatchObject({ replayed: true, skipped: true });
    expect((await opCall('GET', opt, '')).body.skipped_steps).toBe(1);
    const entries = await history(opt);
    expect(entries.map(({ at: _a, ...e }) => e)).toEqual([
      { step: 1, lr: 1e307, loss: 4 },
      { step: 2, lr: 1e307, loss: 4 },
      { step: 2, lr: 1e307, loss: 3, grad_norm: 1, skipped: true },
    ]);
  });
});

describe('the store keeps the last entries and keys, skipped steps included', () => {
  it('numbers history entries after the last (rows keyed by seq before) and keeps `kept`; keeps the last `kept` keys even when skipped steps share a seq', async () => {
    const id = env.HOSTED_OPTIMIZER.newUniqueId();
    const out = await runInDurableObject(env.HOSTED_OPTIMIZER.get(id), (_instance, state) => {
      const store = new OptimizerStore(state.storage);
      store.createTables();
      const sql = state.storage.sql;
      // Entries written before: keyed by the applied step's seq.
      sql.exec("INSERT INTO history (seq, step, lr, loss, at) VALUES (7, 7, 0.1, NULL, 'then')");
      const row = (step: number, skipped: boolean) => ({ step, lr: 0.1, loss: null, at: 'now', grad_norm: null, skipped: skipped ? 1 : null });
      store.addHistory(row(8, false), 3);
      store.addHistory(row(8, true), 3);
      store.addHistory(row(8, true), 3);
      const kept = store.history(10);
      const seqs = sql.exec<{ seq: number }>('SELECT seq FROM history ORDER BY seq').toArray().map((r) => r.seq);
      // Three keys of skipped steps at seq 8, then one more: the oldest goes.
      const key = (seq: number) => ({ seq, fingerprint: 'f', step: seq, lr: 0.1, grad_norm: 2, skipped: 1 });
      for (const k of ['a', 'b', 'c', 'd']) store.rememberKey(k, key(8), 3);
      return { kept, seqs, keys: ['a', 'b', 'c', 'd'].map((k) => store.idempotency(k) ?? null) };
    });
    expect(out.seqs).toEqual([8, 9, 10]);
    expect(out.kept.map((r) => [r.step, r.skipped])).toEqual([[8, null], [8, 1], [8, 1]]);
    expect(out.keys.map((k) => k?.skipped ?? null)).toEqual([null, 1, 1, 1]);
    expect(out.keys[1]).toEqual({ seq: 8, fingerprint: 'f', step: 8, lr: 0.1, grad_norm: 2, skipped: 1 });
  });
});
