// Hosted optimizers through HTTP: lifecycle, access control, preconditions and bad input.

import { describe, expect, it } from 'vitest';
import { call, postJson } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, parse } from './helpers/optimizers.ts';

const PARAMS = { 'fc.weight': [[0.5, -0.5], [1, 2]], 'fc.bias': [0.1, -0.1] };
const GRADS = { 'fc.weight': [[0.1, 0.2], [-0.3, 0.4]], 'fc.bias': [0.05, -0.05] };

describe('hosted optimizer lifecycle', () => {
  it('creates, steps, reads, snapshots, restores, patches and deletes', async () => {
    const opt = await createOptimizer({ params: PARAMS, hyperparams: { lr: 0.01 }, dtype: 'float64' });
    expect(opt.id).toMatch(/^[0-9a-f]{64}$/);
    expect(opt.token.length).toBeGreaterThanOrEqual(40);
    expect(opt.location).toBe(`/v1/optimizers/${opt.id}`);
    expect(opt.body.step).toBe(0);
    expect(opt.body.shapes).toEqual({ 'fc.weight': [2, 2], 'fc.bias': [2] });
    expect(opt.body.hyperparams.lr).toBe(0.01);
    expect(opt.body.dtype).toBe('float64');
    expect(opt.body.schedule).toBeNull();

    const step = await opCall('POST', opt, '/step', { grads: GRADS, loss: 1.5 });
    expect(step.status, JSON.stringify(step.body)).toBe(200);
    expect(step.body.step).toBe(1);
    expect(step.body.lr).toBe(0.01);
    expect(step.headers.get('etag')).toMatch(/^"[^"]+"$/);
    expect(step.headers.get('etag')).not.toBe(opt.etag);

    // The hosted step equals the stateless step on the same inputs, bit for bit.
    const stateless = await postJson('/v1/adam/step', { params: PARAMS, grads: GRADS, hyperparams: { lr: 0.01 }, dtype: 'float64' });
    expect(step.body.params).toEqual(stateless.body.params);

    // Gradients may list their tensors in any key order.
    const reordered = await opCall('POST', opt, '/step?return=none', { grads: { 'fc.bias': GRADS['fc.bias'], 'fc.weight': GRADS['fc.weight'] }, expected_step: 99 });
    expectProblem(reordered, 409, 'expected_step'); // rejected before applying, so the step count is unchanged below

    const none = await parse(await call('POST', `/v1/optimizers/${opt.id}/step?return=none`, { grads: GRADS }, { authorization: `Bearer ${opt.token}` }));
    expect(none.status).toBe(200);
    expect(none.body).toEqual({ step: 2, lr: 0.01 });

    const info = await opCall('GET', opt, '');
    expect(info.status).toBe(200);
    expect(info.body).toMatchObject({ id: opt.id, step: 2, next_lr: 0.01, dtype: 'float64', size: 6 });
    expect(Date.parse(info.body.updated_at)).toBeGreaterThanOrEqual(Date.parse(info.body.created_at));

    const params = await opCall('GET', opt, '/params');
    expect(params.body.step).toBe(2);
    expect(Object.keys(params.body.params)).toEqual(['fc.weight', 'fc.bias']);

    const snap = await opCall('GET', opt, '/state');
    expect(snap.status).toBe(200);
    expect(snap.body).toMatchObject({ step: 2, dtype: 'float64', hyperparams: { lr: 0.01 } });
    expect(snap.body.m['fc.bias']).toHaveLength(2);

    // Two more steps, then restore the snapshot: the next step must repeat what followed it.
    const after3 = await opCall('POST', opt, '/step', { grads: GRADS });
    await opCall('POST', opt, '/step', { grads: GRADS });
    const restored = await opCall('PUT', opt, '/state', snap.body);
    expect(restored.status, JSON.stringify(restored.body)).toBe(200);
    expect(restored.body.step).toBe(2);
    const again3 = await opCall('POST', opt, '/step', { grads: GRADS });
    expect(again3.body).toEqual(after3.body);

    const patched = await opCall('PATCH', opt, '', { hyperparams: { lr: 0.001 } });
    expect(patched.status).toBe(200);
    expect(patched.body.hyperparams).toMatchObject({ lr: 0.001, beta1: 0.9 });
    expect(patched.body.next_lr).toBe(0.001);
    const slower = await opCall('POST', opt, '/step', { grads: GRADS, loss: 0.5 });
    expect(slower.body.lr).toBe(0.001);

    const history = await opCall('GET', opt, '/history');
    expect(history.status).toBe(200);
    expect(history.body.entries.map((e: { step: number }) => e.step)).toEqual([1, 2, 3, 4, 3, 4]);
    expect(history.body.entries[0]).toMatchObject({ step: 1, lr: 0.01, loss: 1.5 });
    expect(history.body.entries.at(-1)).toMatchObject({ step: 4, lr: 0.001, loss: 0.5 });

    const del = await call('DELETE', `/v1/optimizers/${opt.id}`, undefined, { authorization: `Bearer ${opt.token}` });
    expect(del.status).toBe(204);
    expect(await del.text()).toBe('');
    expectProblem(await opCall('GET', opt, ''), 404);
    expectProblem(await opCall('POST', opt, '/step', { grads: GRADS }), 404);
  });

  it('accepts gradients whose named tensors come in another key order', async () => {
    const a = await createOptimizer({ params: PARAMS });
    const b = await createOptimizer({ params: PARAMS });
    const inOrder = await opCall('POST', a, '/step', { grads: GRADS });
    const reordered = await opCall('POST', b, '/step', { grads: { 'fc.bias': GRADS['fc.bias'], 'fc.weight': GRADS['fc.weight'] } });
    expect(reordered.status).toBe(200);
    expect(reordered.body.params).toEqual(inOrder.body.params);
    expect(Object.keys(reordered.body.params)).toEqual(['fc.weight', 'fc.bias']);
  });

  it('float32 optimizers round to float32 like torch', async () => {
    const opt = await createOptimizer({ params: [0.1, 0.2, 0.3] });
    expect(opt.body.dtype).toBe('float32');
    const step = await opCall('POST', opt, '/step', { grads: [1, -1, 0.5] });
    for (const p of step.body.params) expect(Math.fround(p)).toBe(p);
    const stateless = await postJson('/v1/adam/step', { params: [0.1, 0.2, 0.3], grads: [1, -1, 0.5] });
    expect(step.body.params).toEqual(stateless.body.params);
  });

  it('amsgrad snapshots carry v_max; amsgrad off keeps it unchanged, and on again resumes from it (as torch)', async () => {
    const opt = await createOptimizer({ params: [1, 2], hyperparams: { amsgrad: true } });
    await opCall('POST', opt, '/step', { grads: [1, 1] });
    const snap = await opCall('GET', opt, '/state');
    expect(snap.body.v_max).toHaveLength(2);
    const off = await opCall('PATCH', opt, '', { hyperparams: { amsgrad: false } });
    expect(off.body.hyperparams.amsgrad).toBe(false);
    expect((await opCall('GET', opt, '/state')).body.v_max).toEqual(snap.body.v_max);
    await opCall('PATCH', opt, '', { hyperparams: { amsgrad: true } });
    const step = await opCall('POST', opt, '/step', { grads: [0.01, 0.01] });
    expect(step.status).toBe(200);
    // v = 0.999·0.001 + 0.001·1e-4 < v_max = 0.001 (the first step's): the kept max stays (a fresh one would be v).
    const after = (await opCall('GET', opt, '/state')).body;
    expect(after.v_max).toEqual(snap.body.v_max);
    expect(after.v[0]).toBeLessThan(after.v_max[0]);
  });
});

describe('access control', () => {
  it('needs the right bearer token: 401 otherwise, 404 for unknown ids', async () => {
    const a = await createOptimizer({ params: [1, 2] });
    const b = await createOptimizer({ params: [1, 2] });
    const missing = await parse(await call('GET', `/v1/optimizers/${a.id}`));
    expectProblem(missing, 401);
    expect(missing.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expectProblem(await opCall('GET', { id: a.id, token: 'nope' }, ''), 401);
    expectProblem(await opCall('GET', { id: a.id, token: b.token }, ''), 401);
    expectProblem(await parse(await call('GET', `/v1/optimizers/${a.id}`, undefined, { authorization: a.token })), 401);
    expectProblem(await opCall('POST', { id: a.id, token: b.token }, '/step', { grads: [1, 1] }), 401);
    expectProblem(await opCall('DELETE', { id: a.id, token: b.token }, ''), 401);
    expect((await opCall('GET', a, '')).status).toBe(200);
    expect((await parse(await call('GET', `/v1/optimizers/${a.id}`, undefined, { authorization: `bearer   ${a.token}` }))).status).toBe(200);

    // A missing token is reported before the body is validated.
    const anonymous = await parse(await call('PUT', `/v1/optimizers/${a.id}/state`, {}));
    expectProblem(anonymous, 401);
    expect(anonymous.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expectProblem(await parse(await call('PATCH', `/v1/optimizers/${a.id}`, { bogus: 1 })), 401);
    expectProblem(await parse(await call('GET', `/v1/optimizers/${a.id}/history?limit=0`)), 401);
    expectProblem(await opCall('GET', { id: 'not-an-id', token: a.token }, ''), 404);
    expectProblem(await opCall('GET', { id: 'f'.repeat(64), token: a.token }, ''), 404);
    // A well-formed id of this namespace that was never created.
    const { env } = await import('cloudflare:workers');
    const fresh = env.HOSTED_OPTIMIZER.newUniqueId().toString();
    expectProblem(await opCall('GET', { id: fresh, token: a.token }, ''), 404);
  });
});

describe('token before parsing', () => {
  it('checks id and token before a large body is parsed or validated', async () => {
    const opt = await createOptimizer({ params: [1, 2] });
    const garbage = '{"grads": [' + '1,'.repeat(50_000) + 'oops';
    const headers = { authorization: 'Bearer wrong', 'content-type': 'application/json' };
    // Malformed (400) or ragged (422) with the right token; 401 first with a wrong one.
    for (const [method, path] of [['POST', '/step'], ['PUT', '/state'], ['PATCH', '']] as const) {
      expectProblem(await parse(await call(method, `/v1/optimizers/${opt.id}${path}`, garbage, headers)), 401);
    }
    expectProblem(await parse(await call('POST', `/v1/optimizers/${opt.id}/step`, garbage, { ...headers, authorization: `Bearer ${opt.token}` })), 400);
    const unknown = '0'.repeat(64);
    expectProblem(await parse(await call('POST', `/v1/optimizers/${unknown}/step`, garbage, headers)), 404);
  });
});

describe('preconditions', () => {
  it('If-Match and expected_step refuse stale gradients', async () => {
    const opt = await createOptimizer({ params: [1, 2] });
    const first = await opCall('POST', opt, '/step', { grads: [1, 1] }, { 'if-match': opt.etag! });
    expect(first.status).toBe(200);
    const stale = await opCall('POST', opt, '/step', { grads: [1, 1] }, { 'if-match': opt.etag! });
    expectProblem(stale, 412);
    expect(stale.headers.get('etag')).toBe(first.headers.get('etag'));
    expect((await opCall('POST', opt, '/step', { grads: [1, 1] }, { 'if-match': '*' })).status).toBe(200);
    expectProblem(await opCall('POST', opt, '/step', { grads: [1, 1], expected_step: 0 }), 409, 'expected_step');
    expect((await opCall('POST', opt, '/step', { grads: [1, 1], expected_step: 2 })).body.step).toBe(3);
    expect((await opCall('GET', opt, '')).body.step).toBe(3);
  });
});

describe('ETags', () => {
  it('every mutation gets a new ETag, never one used before, even when the step goes back', async () => {
    const opt = await createOptimizer({ params: [1, 2] });
    const seen = new Set<string>([opt.etag!]);
    const fresh = (res: { status: number; headers: Headers }) => {
      expect(res.status).toBe(200);
      const tag = res.headers.get('etag')!;
      expect(seen.has(tag), `ETag ${tag} reused`).toBe(false);
      seen.add(tag);
      return tag;
    };
    fresh(await opCall('POST', opt, '/step', { grads: [1, 1] }));
    const snap = await opCall('GET', opt, '/state');
    const afterStep = snap.headers.get('etag')!;
    fresh(await opCall('POST', opt, '/step', { grads: [1, 1] }));
    // Restoring the step-1 snapshot, patching and restoring again: each a new version.
    const restored = fresh(await opCall('PUT', opt, '/state', snap.body));
    expect(restored).not.toBe(afterStep);
    fresh(await opCall('PATCH', opt, '', { hyperparams: { lr: 0.01 } }));
    fresh(await opCall('PATCH', opt, '', { hyperparams: { lr: 0.01 } }));
    fresh(await opCall('PUT', opt, '/state', snap.body));
    // A gradient computed against the first step-1 state is refused now.
    expectProblem(await opCall('POST', opt, '/step', { grads: [1, 1] }, { 'if-match': afterStep }), 412);
    // GET answers carry the current tag.
    const current = (await opCall('GET', opt, '')).headers.get('etag')!;
    expect((await opCall('GET', opt, '/params')).headers.get('etag')).toBe(current);
    expect((await opCall('POST', opt, '/step', { grads: [1, 1] }, { 'if-match': current })).status).toBe(200);
  });
});

describe('bad input', () => {
  it('rejects bad creation bodies', async () => {
    expectProblem(await parse(await call('POST', '/v1/optimizers', { params: [[1, 2], [3]] })), 422, 'params[1]');
    expectProblem(await parse(await call('POST', '/v1/optimizers', { params: [1], hyperparams: { lr: -1 } })), 422, 'hyperparams.lr');
    expectProblem(await parse(await call('POST', '/v1/optimizers', { params: [1], extra: 1 })), 422, 'extra');
    expectProblem(await parse(await call('POST', '/v1/optimizers', {})), 422, 'params');
    expectProblem(await parse(await call('POST', '/v1/optimizers', '{"params": [1,')), 400);
  });

  it('shards more elements than one optimizer holds (MAX_HOSTED_BYTES), per dtype; 413 beyond 256 objects', async () => {
    // 80 MiB of kernel memory, 5 arrays per element: 4,194,304 float32 or 2,097,152 float64 elements per object.
    const f64 = await parse(await call('POST', '/v1/optimizers', `{"dtype":"float64","params":[${'0,'.repeat(2_097_152)}0]}`, { 'content-type': 'application/json' }));
    expect(f64.status).toBe(201);
    expect(f64.body).toMatchObject({ size: 2_097_153, shards: 2, max_elements: 2_097_152 });
    await opCall('DELETE', { id: f64.body.id, token: f64.body.token }, '');
    expectProblem(await parse(await call('POST', '/v1/optimizers', { shapes: { a: [2048, 1024 * 256], b: [1] }, dtype: 'float64' })), 413, 'shapes');
    expectProblem(await parse(await call('POST', '/v1/optimizers', { shapes: [4_194_304 * 256 + 1] })), 413, 'shapes');
    const fits = await parse(await call('POST', '/v1/optimizers', { shapes: [4_194_304] }));
    expect(fits.status).toBe(201);
    expect(fits.body).toMatchObject({ size: 4_194_304, shards: 1 });
  });

  it('takes JSON snapshots up to 3,000,000 numbers (float64: 24 MB over RPC), and 413s beyond before parsing', async () => {
    const opt = await createOptimizer({ params: [0] });
    const zeros = (n: number) => `[${'0,'.repeat(n - 1)}0]`;
    const snapshot = (n: number) => `{"step":1,"dtype":"float64","hyperparams":{},"schedule":null,"params":${zeros(n)},"m":${zeros(n)},"v":${zeros(n)}}`;
    const ok = await parse(await call('PUT', `/v1/optimizers/${opt.id}/state`, snapshot(990_000), authed(opt.token, { 'content-type': 'application/json' })));
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.size).toBe(990_000);
    const big = await parse(await call('PUT', `/v1/optimizers/${opt.id}/state`, snapshot(1_100_000), authed(opt.token, { 'content-type': 'application/json' })));
    expectProblem(big, 413);
    expect((await opCall('GET', opt, '')).body.size).toBe(990_000);
  });

  it('rejects bad steps and leaves the state unchanged', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2], b: 3 }, dtype: 'float32' });
    await opCall('POST', opt, '/step', { grads: { w: [1, 1], b: 1 } });
    const before = await opCall('GET', opt, '/state');
    expectProblem(await opCall('POST', opt, '/step', { grads: { w: [1, 1, 1], b: 1 } }), 422, 'grads.w');
    expectProblem(await opCall('POST', opt, '/step', { grads: { w: [1, 1] } }), 422, 'grads.b');
    expectProblem(await opCall('POST', opt, '/step', { grads: { w: [1, 1], b: 1, c: 2 } }), 422, 'grads.c');
    expectProblem(await parse(await call('POST', `/v1/optimizers/${opt.id}/step`, '{"grads":{"w":[1,1e999],"b":1}}', { authorization: `Bearer ${opt.token}`, 'content-type': 'application/json' })), 422, 'grads.w[1]');
    expectProblem(await opCall('POST', opt, '/step', { grads: { w: [1, 1], b: 1 }, loss: 'high' }), 422, 'loss');
    expectProblem(await opCall('POST', opt, '/step', { grads: { w: [1, 1], b: 1e25 } }), 422); // overflows float32
    expectProblem(await opCall('POST', { id: opt.id, token: 'wrong' }, '/step', { grads: { w: [1, 1], b: 1 } }), 401);
    expectProblem(await opCall('POST', opt, '/step', { grads: { w: [1, 1], b: 1 }, lr: 0.1 }), 422, 'lr');
    const after = await opCall('GET', opt, '/state');
    expect(after.body).toEqual(before.body);
    const history = await opCall('GET', opt, '/history');
    expect(history.body.entries).toHaveLength(1);
  });

  it('rejects invalid snapshots and PATCH bodies without changing anything', async () => {
    const opt = await createOptimizer({ params: [1, 2], hyperparams: { lr: 0.1 } });
    await opCall('POST', opt, '/step', { grads: [1, 1] });
    const before = await opCall('GET', opt, '/state');
    const snap = before.body;
    expectProblem(await opCall('PUT', opt, '/state', { ...snap, m: [0] }), 422, 'm');
    expectProblem(await opCall('PUT', opt, '/state', { ...snap, v: [-1, 0] }), 422, 'v[0]');
    expectProblem(await opCall('PUT', opt, '/state', { ...snap, step: -1 }), 422, 'step');
    expectProblem(await opCall('PUT', opt, '/state', { ...snap, hyperparams: { ...snap.hyperparams, beta1: 1 } }), 422, 'hyperparams.beta1');
    expectProblem(await opCall('PUT', opt, '/state', { ...snap, surprise: true }), 422, 'surprise');
    const { params: _p, ...withoutParams } = snap;
    expectProblem(await opCall('PUT', opt, '/state', withoutParams), 422, 'params');
    expectProblem(await opCall('PATCH', opt, '', { hyperparams: { learning_rate: 1 } }), 422, 'hyperparams.learning_rate');
    expectProblem(await opCall('PATCH', opt, '', { dtype: 'float64' }), 422, 'dtype');
    expectProblem(await opCall('PATCH', opt, '', { hyperparams: { lr: -1 } }), 422, 'hyperparams.lr');
    expect((await opCall('GET', opt, '/state')).body).toEqual(snap);
  });

  it('rejects bodies over MAX_BODY_BYTES with 413', async () => {
    const opt = await createOptimizer({ params: [1] });
    const big = '{"grads":[' + '0,'.repeat(17_000_000) + '0]}';
    const res = await parse(await call('POST', `/v1/optimizers/${opt.id}/step`, big, { authorization: `Bearer ${opt.token}`, 'content-type': 'application/json' }));
    expectProblem(res, 413);
  });
});
