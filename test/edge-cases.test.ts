// Edge cases found by an independent review, each with the behaviour the issues ask for.

import { describe, expect, it } from 'vitest';
import { parseXml } from './fixtures/schedules/xml.ts';
import { call, postJson } from './helpers/http.ts';
import { createOptimizer, expectProblem, opCall, parse } from './helpers/optimizers.ts';

const XML_FORBIDDEN = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

describe('PATCH merges hyperparameters', () => {
  it('changes only the named fields and keeps v_max', async () => {
    const hyperparams = { lr: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 0.1, decoupled_weight_decay: true, amsgrad: true, maximize: true };
    const opt = await createOptimizer({ params: [1, 2], hyperparams });
    await opCall('POST', opt, '/step', { grads: [0.1, 0.2] });
    const before = await opCall('GET', opt, '/state');
    const patched = await opCall('PATCH', opt, '', { hyperparams: { lr: 0.005 } });
    expect(patched.status).toBe(200);
    expect(patched.body.hyperparams).toEqual({ ...hyperparams, lr: 0.005 });
    const after = await opCall('GET', opt, '/state');
    expect(after.body.v_max).toEqual(before.body.v_max);
    expect(after.body.m).toEqual(before.body.m);
  });
});

describe('tensor trees', () => {
  it('rejects named trees nested too deeply with a 422, not a stack overflow', async () => {
    let tree: unknown = 1;
    for (let i = 0; i < 5000; i++) tree = { a: tree };
    const res = await postJson('/v1/adam/step', { params: tree, grads: tree });
    expectProblem(res, 422);
    expect(res.body.detail).toMatch(/deeper than/); // the body guard's 80 levels come before the tree's 32 named levels
    expectProblem(await parse(await call('POST', '/v1/optimizers', { params: tree })), 422);
  });

  it('caps the number of tensors and the length of their names', async () => {
    const many = Object.fromEntries(Array.from({ length: 10_001 }, (_, i) => [`t${i}`, 0]));
    expectProblem(await postJson('/v1/adam/step', { params: many, grads: many }), 422, 'params');
    const longName = { ['x'.repeat(1001)]: [1] };
    expectProblem(await postJson('/v1/adam/step', { params: longName, grads: longName }), 422, 'params');
  });

  it('stores a layout of 10,000 long-named tensors across chunks and reloads it', async () => {
    const params = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`layer.${i}.${'w'.repeat(190)}`, [i, -i]]));
    const opt = await createOptimizer({ params });
    expect(opt.body.size).toBe(20_000);
    const grads = Object.fromEntries(Object.keys(params).map((k) => [k, [1, 1]]));
    const step = await opCall('POST', opt, '/step?return=none', { grads });
    expect(step.status).toBe(200);
    const got = await opCall('GET', opt, '/params');
    expect(Object.keys(got.body.params)).toEqual(Object.keys(params));
  });

  it('rejects float32 values beyond the float32 range on the field that holds them', async () => {
    expectProblem(await postJson('/v1/adam/step', { params: [1, 1e39], grads: [1, 1], dtype: 'float32' }), 422, 'params[1]');
    expectProblem(await postJson('/v1/adam/step', { params: [1, 1], grads: [1, -1e39], dtype: 'float32' }), 422, 'grads[1]');
    expect((await postJson('/v1/adam/step', { params: [1e39], grads: [1], dtype: 'float64' })).status).toBe(200);
    expectProblem(await parse(await call('POST', '/v1/optimizers', { params: { w: [1e39] } })), 422, 'params.w[0]');
    const opt = await createOptimizer({ params: [1] });
    const snap = (await opCall('GET', opt, '/state')).body;
    expectProblem(await opCall('PUT', opt, '/state', { ...snap, v: [1e39] }), 422, 'v[0]');
  });

  it('checks state.v_max against params even without amsgrad', async () => {
    expectProblem(await postJson('/v1/adam/step', { params: [1], grads: [1], state: { step: 1, m: [0], v: [0], v_max: [1, 2, 3] } }), 422, 'state.v_max');
  });
});

describe('schedules that overflow', () => {
  it('report next_lr null and reject the step naming the schedule', async () => {
    const opt = await createOptimizer({ params: [1], schedule: { type: 'exponential', lr: 1, gamma: 10 } });
    const snap = (await opCall('GET', opt, '/state')).body;
    const restored = await opCall('PUT', opt, '/state', { ...snap, step: 400 });
    expect(restored.status).toBe(200);
    expect(restored.body.next_lr).toBeNull();
    expectProblem(await opCall('POST', opt, '/step', { grads: [1] }), 422, 'schedule');
    expectProblem(
      await postJson('/v1/adam/step', { params: [1], grads: [1], state: { step: 400, m: [0], v: [0] }, schedule: { type: 'exponential', lr: 1, gamma: 10 } }),
      422,
      'schedule',
    );
  });
});

describe('idempotency keys and restores', () => {
  it('forgets remembered keys when a snapshot is restored', async () => {
    const opt = await createOptimizer({ params: [1] });
    const snap = (await opCall('GET', opt, '/state')).body;
    await opCall('POST', opt, '/step', { grads: [1] }, { 'idempotency-key': 'k' });
    await opCall('PUT', opt, '/state', snap);
    const again = await opCall('POST', opt, '/step', { grads: [1] }, { 'idempotency-key': 'k' });
    expect(again.body.replayed).toBeUndefined();
    expect(again.body.step).toBe(1);
  });
});

describe('SVG text', () => {
  it('stays well-formed XML whatever characters the title holds', async () => {
    const res = await call('POST', '/v1/schedules/plot', { schedule: { type: 'constant', lr: 1 }, steps: [0, 1], title: 'a\u0001b\ud800c\uffffd<&>' });
    expect(res.status).toBe(200);
    const svg = await res.text();
    expect(svg).not.toMatch(XML_FORBIDDEN);
    expect(() => parseXml(svg)).not.toThrow();
    expect(svg).toContain('a\uFFFDb\uFFFDc\uFFFDd&lt;&amp;&gt;');
  });
});

describe('routing and media types', () => {
  it('a trailing slash is an unknown path (404), not a contradictory 405', async () => {
    const res = await call('POST', '/v1/adam/step/', { params: [1], grads: [1] });
    expect(res.status).toBe(404);
  });

  it('415 names the content type received', async () => {
    const res = await call('POST', '/v1/adam/step', 'x', { 'content-type': 'text/plain' });
    expect(res.status).toBe(415);
    expect((await res.json<{ detail: string }>()).detail).toContain('text/plain');
  });

  it('an over-long optimizer id is a 404', async () => {
    const opt = await createOptimizer({ params: [1] });
    expectProblem(await opCall('GET', { id: 'a'.repeat(500), token: opt.token }, ''), 404);
  });
});

describe('negative zero', () => {
  it('keeps the sign of zero, as torch does', async () => {
    // Raw text: JSON.stringify would drop the sign before it reached the server.
    const res = await call('POST', '/v1/adam/step', '{"params": [-0.0, 1], "grads": [0, 0], "dtype": "float32"}', { 'content-type': 'application/json' });
    const text = await res.text();
    expect(text).toContain('"params":[-0.0,1]');
    expect(Object.is(JSON.parse(text).params[0], -0)).toBe(true);
    const created = await parse(await call('POST', '/v1/optimizers', '{"params": [-0.0, 2]}', { 'content-type': 'application/json' }));
    const opt = { id: created.body.id as string, token: created.body.token as string };
    expect(Object.is((await opCall('POST', opt, '/step', { grads: [0, 0] })).body.params[0], -0)).toBe(true);
    expect(Object.is((await opCall('GET', opt, '/params')).body.params[0], -0)).toBe(true);
    expect(Object.is((await opCall('GET', opt, '/state')).body.params[0], -0)).toBe(true);
  });
});

describe('negative zero in float64 (torch 1.13 reference values)', () => {
  it('matches torch sign for sign', async () => {
    // torch: params [-0., -0., 1.] grads [-0., 0., -0.] from step 3 with m [-0., -0., 0.], v 0 →
    // params [0.0, -0.0, 1.0], m [-0.0, 0.0, 0.0], v [0.0, 0.0, 0.0] (float32 and float64 alike).
    for (const dtype of ['float64', 'float32']) {
      const body = `{"params":[-0.0,-0.0,1.0],"grads":[-0.0,0.0,-0.0],"dtype":"${dtype}","state":{"step":3,"m":[-0.0,-0.0,0.0],"v":[0.0,0.0,0.0]}}`;
      const res = await (await call('POST', '/v1/adam/step', body, { 'content-type': 'application/json' })).json<any>();
      const signs = (xs: number[]) => xs.map((x) => (Object.is(x, -0) ? '-0' : String(x)));
      expect(signs(res.params), dtype).toEqual(['0', '-0', '1']);
      expect(signs(res.state.m), dtype).toEqual(['-0', '0', '0']);
      expect(signs(res.state.v), dtype).toEqual(['0', '0', '0']);
    }
  });
});

describe('second review', () => {
  it('a history that cannot be charted is a 422, not a 500', async () => {
    const opt = await createOptimizer({ params: [1], hyperparams: { lr: 0.1 } });
    await opCall('POST', opt, '/step', { grads: [0], loss: 1e-301 });
    const res = await parse(await call('GET', `/v1/optimizers/${opt.id}/history/plot`, undefined, { authorization: `Bearer ${opt.token}` }));
    expectProblem(res, 422);
    expect(res.body.detail).toMatch(/cannot be plotted/);
  });

  it('PUT /state needs a complete snapshot: nothing falls back to defaults', async () => {
    const opt = await createOptimizer({ params: [1], hyperparams: { lr: 0.1 }, dtype: 'float64' });
    const snap = (await opCall('GET', opt, '/state')).body;
    for (const field of ['hyperparams', 'dtype', 'schedule']) {
      const { [field]: _omitted, ...partial } = snap;
      expectProblem(await opCall('PUT', opt, '/state', partial), 422, field);
    }
    expect((await opCall('GET', opt, '')).body).toMatchObject({ dtype: 'float64', hyperparams: { lr: 0.1 } });
  });

  it('refuses compressed and non-UTF-8 bodies with 415', async () => {
    const gz = await call('POST', '/v1/adam/step', '{"params":[1],"grads":[1]}', { 'content-type': 'application/json', 'content-encoding': 'gzip' });
    expect(gz.status).toBe(415);
    expect((await gz.json<{ detail: string }>()).detail).toMatch(/Content-Encoding gzip/);
    const utf16 = await call('POST', '/v1/adam/step', '{"params":[1],"grads":[1]}', { 'content-type': 'application/json; charset=utf-16' });
    expect(utf16.status).toBe(415);
    const utf8 = await call('POST', '/v1/adam/step', '{"params":[1],"grads":[1]}', { 'content-type': 'application/json; charset=UTF-8' });
    expect(utf8.status).toBe(200);
  });

  it('counts JSON values before parsing: a small body of many zeros is a 413', async () => {
    const zeros = '[' + '0,'.repeat(2_000_000) + '0]'; // 4 MB, far below MAX_BODY_BYTES
    const res = await parse(await call('POST', '/v1/adam/step', `{"params":${zeros},"grads":[0]}`, { 'content-type': 'application/json' }));
    expectProblem(res, 413);
    expect(res.body.detail).toMatch(/JSON values/);
    const opt = await createOptimizer({ params: [1] });
    const grads = await parse(await call('POST', `/v1/optimizers/${opt.id}/step`, `{"grads":${'[' + '0,'.repeat(4_300_000) + '0]'}}`, { authorization: `Bearer ${opt.token}`, 'content-type': 'application/json' }));
    expectProblem(grads, 413);
  });

  it('If-Match uses strong comparison: a weak tag never matches', async () => {
    const opt = await createOptimizer({ params: [1] });
    expectProblem(await opCall('POST', opt, '/step', { grads: [1] }, { 'if-match': `W/${opt.etag}` }), 412);
    expect((await opCall('POST', opt, '/step', { grads: [1] }, { 'if-match': opt.etag! })).status).toBe(200);
  });

  it('names header fields as they are written', async () => {
    const opt = await createOptimizer({ params: [1] });
    expectProblem(await opCall('POST', opt, '/step', { grads: [1] }, { 'idempotency-key': '' }), 422, 'Idempotency-Key');
    const res = await call('GET', '/v1/schedules/step/plot?lr=0.1&step_size=3&steps=0:10&width=1');
    expect(res.status).toBe(422);
    expect((await res.json<{ detail: string }>()).detail).toMatch(/width: must be >= \d+, got 1/);
  });

  it('tells states apart once the float32 step counter saturates at 2^24', async () => {
    const opt = await createOptimizer({ params: [1] });
    const snap = (await opCall('GET', opt, '/state')).body;
    await opCall('PUT', opt, '/state', { ...snap, step: 2 ** 24 - 1 });
    const a = await opCall('POST', opt, '/step', { grads: [1] }, { 'idempotency-key': 'A' });
    const b = await opCall('POST', opt, '/step', { grads: [2] }, { 'idempotency-key': 'B' });
    expect(a.body.step).toBe(2 ** 24);
    expect(b.body.step).toBe(2 ** 24);
    expect(a.headers.get('etag')).not.toBe(b.headers.get('etag'));
    const retryA = await opCall('POST', opt, '/step', { grads: [1] }, { 'idempotency-key': 'A' });
    expect(retryA.body).toEqual({ step: 2 ** 24, lr: 0.001, replayed: true }); // B's params are not A's answer
    expectProblem(await opCall('POST', opt, '/step', { grads: [1] }, { 'if-match': a.headers.get('etag')! }), 412);
  });

  it('streams large params responses past the RPC limit', async () => {
    const n = 400_000; // float64 params: ~10 MB of JSON, above the streaming threshold
    const params = Array.from({ length: n }, (_, i) => Math.cos(i) / 3);
    const opt = await createOptimizer({ params, dtype: 'float64' });
    const step = await opCall('POST', opt, '/step', { grads: params });
    expect(step.status).toBe(200);
    expect(step.body.params).toHaveLength(n);
    const got = await opCall('GET', opt, '/params');
    expect(got.body).toEqual({ step: 1, params: step.body.params });
  });
});
