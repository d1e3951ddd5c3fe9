// Bad input to POST /v1/adam/step: every case must be a 4xx application/problem+json naming the field.

import { describe, expect, it } from 'vitest';
import { call, postJson } from './helpers/http.ts';

const OK = { params: [1, 2, 3], grads: [0.1, 0.2, 0.3] };

async function expectProblem(res: { status: number; type: string; body: any }, status: number, field?: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.type).toMatch(/^application\/problem\+json/);
  expect(res.body.status).toBe(status);
  expect(typeof res.body.title).toBe('string');
  expect(typeof res.body.detail).toBe('string');
  expect(res.body.type).toMatch(/^urn:adam-api:problem:/);
  if (field !== undefined) {
    const fields = (res.body.errors ?? []).map((e: { field: string }) => e.field);
    expect(fields, res.body.detail).toContain(field);
  }
}

/** Sends raw JSON text (so 1e999, which parses to Infinity, can reach the server). */
async function postRaw(text: string, contentType = 'application/json') {
  const res = await call('POST', '/v1/adam/step', text, { 'content-type': contentType });
  const body = await res.text();
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: body ? JSON.parse(body) : undefined };
}

describe('POST /v1/adam/step rejects bad input', () => {
  it('malformed JSON → 400', async () => {
    await expectProblem(await postRaw('{"params": [1, 2'), 400);
  });

  it('non-JSON content type → 415', async () => {
    await expectProblem(await postRaw(JSON.stringify(OK), 'text/plain'), 415);
  });

  it('missing body → 4xx', async () => {
    const res = await call('POST', '/v1/adam/step');
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(res.headers.get('content-type')).toMatch(/problem\+json/);
  });

  it('JSON that is not an object → 422', async () => {
    await expectProblem(await postRaw('[1,2,3]'), 422);
  });

  it('missing params / grads → 422 naming them', async () => {
    await expectProblem(await postJson('/v1/adam/step', { grads: [1] }), 422, 'params');
    await expectProblem(await postJson('/v1/adam/step', { params: [1] }), 422, 'grads');
  });

  it('unknown top-level and hyperparameter fields → 422', async () => {
    await expectProblem(await postJson('/v1/adam/step', { ...OK, betas: [0.9, 0.99] }), 422, 'betas');
    await expectProblem(await postJson('/v1/adam/step', { ...OK, hyperparams: { learning_rate: 0.1 } }), 422, 'hyperparams.learning_rate');
  });

  it('wrong types → 422 with the value', async () => {
    const r = await postJson('/v1/adam/step', { ...OK, hyperparams: { lr: '0.1' } });
    await expectProblem(r, 422, 'hyperparams.lr');
    expect(r.body.errors[0].value).toBe('0.1');
    await expectProblem(await postJson('/v1/adam/step', { ...OK, hyperparams: { amsgrad: 'yes' } }), 422, 'hyperparams.amsgrad');
    await expectProblem(await postJson('/v1/adam/step', { ...OK, dtype: 'float16' }), 422, 'dtype');
    await expectProblem(await postJson('/v1/adam/step', { params: 'abc', grads: 'abc' }), 422, 'params');
    await expectProblem(await postJson('/v1/adam/step', { params: [1, 'x'], grads: [1, 2] }), 422, 'params[1]');
    await expectProblem(await postJson('/v1/adam/step', { params: [1, null], grads: [1, 2] }), 422, 'params[1]');
    await expectProblem(await postJson('/v1/adam/step', { params: [1, true], grads: [1, 2] }), 422, 'params[1]');
    await expectProblem(await postJson('/v1/adam/step', { ...OK, state: [1] }), 422, 'state');
  });

  it('negative, NaN-like and infinite lr → 422', async () => {
    const neg = await postJson('/v1/adam/step', { ...OK, hyperparams: { lr: -0.001 } });
    await expectProblem(neg, 422, 'hyperparams.lr');
    expect(neg.body.errors[0].value).toBe(-0.001);
    expect(neg.body.detail).toContain('-0.001');
    await expectProblem(await postRaw('{"params":[1],"grads":[1],"hyperparams":{"lr":1e999}}'), 422, 'hyperparams.lr');
    await expectProblem(await postRaw('{"params":[1],"grads":[1],"hyperparams":{"lr":-1e999}}'), 422, 'hyperparams.lr');
    await expectProblem(await postRaw('{"params":[1],"grads":[1],"hyperparams":{"lr":NaN}}'), 400);
    await expectProblem(await postJson('/v1/adam/step', { ...OK, hyperparams: { lr: null } }), 422, 'hyperparams.lr');
  });

  it('betas outside [0, 1) → 422', async () => {
    for (const [name, value] of [['beta1', 1], ['beta1', -0.1], ['beta2', 1], ['beta2', 1.5], ['beta2', -1e-9]] as const) {
      await expectProblem(await postJson('/v1/adam/step', { ...OK, hyperparams: { [name]: value } }), 422, `hyperparams.${name}`);
    }
  });

  it('negative eps or weight_decay → 422', async () => {
    await expectProblem(await postJson('/v1/adam/step', { ...OK, hyperparams: { eps: -1e-8 } }), 422, 'hyperparams.eps');
    await expectProblem(await postJson('/v1/adam/step', { ...OK, hyperparams: { weight_decay: -0.01 } }), 422, 'hyperparams.weight_decay');
  });

  it('non-integer, negative or too large state.step → 422', async () => {
    const state = { m: [0, 0, 0], v: [0, 0, 0] };
    await expectProblem(await postJson('/v1/adam/step', { ...OK, state: { ...state, step: 1.5 } }), 422, 'state.step');
    await expectProblem(await postJson('/v1/adam/step', { ...OK, state: { ...state, step: -1 } }), 422, 'state.step');
    await expectProblem(await postJson('/v1/adam/step', { ...OK, state: { ...state, step: 2 ** 24 + 1 } }), 422, 'state.step');
    await expectProblem(await postJson('/v1/adam/step', { ...OK, state: { ...state, step: '3' } }), 422, 'state.step');
    await expectProblem(await postJson('/v1/adam/step', { ...OK, state: { m: [0, 0, 0], v: [0, 0, 0] } }), 422, 'state.step');
  });

  it('lengths and structures that differ between params, grads and state → 422', async () => {
    await expectProblem(await postJson('/v1/adam/step', { params: [1, 2, 3], grads: [1, 2] }), 422, 'grads');
    await expectProblem(await postJson('/v1/adam/step', { params: [[1, 2], [3, 4]], grads: [1, 2, 3, 4] }), 422, 'grads');
    await expectProblem(await postJson('/v1/adam/step', { params: [1, 2, 3, 4], grads: [[1, 2], [3, 4]] }), 422, 'grads');
    await expectProblem(await postJson('/v1/adam/step', { params: { w: [1, 2] }, grads: { w: [1, 2], b: [1] } }), 422, 'grads.b');
    await expectProblem(await postJson('/v1/adam/step', { params: { w: [1, 2], b: [1] }, grads: { w: [1, 2] } }), 422, 'grads.b');
    await expectProblem(await postJson('/v1/adam/step', { params: { w: [1, 2] }, grads: [1, 2] }), 422, 'grads');
    await expectProblem(
      await postJson('/v1/adam/step', { ...OK, state: { step: 1, m: [0, 0], v: [0, 0, 0] } }),
      422,
      'state.m',
    );
    await expectProblem(
      await postJson('/v1/adam/step', { ...OK, state: { step: 1, m: [0, 0, 0], v: { a: [0, 0, 0] } } }),
      422,
      'state.v',
    );
  });

  it('ragged nested arrays → 422 naming the row', async () => {
    const r = await postJson('/v1/adam/step', { params: [[1, 2], [3]], grads: [[1, 2], [3]] });
    await expectProblem(r, 422, 'params[1]');
    expect(r.body.detail).toMatch(/ragged/);
    await expectProblem(await postJson('/v1/adam/step', { params: [[1, 2], 3], grads: [[1, 2], 3] }), 422, 'params[1]');
    await expectProblem(await postJson('/v1/adam/step', { params: [1, [2]], grads: [1, [2]] }), 422, 'params[1]');
  });

  it('non-finite numbers in tensors → 422 naming the element', async () => {
    await expectProblem(await postRaw('{"params":[1,1e999],"grads":[1,2]}'), 422, 'params[1]');
    await expectProblem(await postRaw('{"params":[1,2],"grads":[[1],[2]]}'), 422, 'grads[0]');
    await expectProblem(await postRaw('{"params":{"w":[[1,2]]},"grads":{"w":[[-1e999,2]]}}'), 422, 'grads.w[0][0]');
    await expectProblem(await postRaw('{"params":[1,2],"grads":[1,2],"state":{"step":1,"m":[0,1e999],"v":[0,0]}}'), 422, 'state.m[1]');
  });

  it('amsgrad with step > 0 needs v_max; negative v is impossible → 422', async () => {
    await expectProblem(
      await postJson('/v1/adam/step', { ...OK, hyperparams: { amsgrad: true }, state: { step: 3, m: [0, 0, 0], v: [0, 0, 0] } }),
      422,
      'state.v_max',
    );
    await expectProblem(await postJson('/v1/adam/step', { ...OK, state: { step: 3, m: [0, 0, 0], v: [0, -1, 0] } }), 422, 'state.v[1]');
  });

  it('a result that overflows float32 → 422, not a 500 or a NaN', async () => {
    const r = await postJson('/v1/adam/step', { params: [1, 2], grads: [1, 1e25], dtype: 'float32' });
    await expectProblem(r, 422);
    expect(r.body.type).toBe('urn:adam-api:problem:non-finite-result');
  });

  it('eps = 0 with a zero gradient and zero state gives 0/0 → 422', async () => {
    await expectProblem(await postJson('/v1/adam/step', { params: [1, 2], grads: [0, 1], hyperparams: { eps: 0 } }), 422);
  });

  it('more elements than MAX_ELEMENTS → 413', async () => {
    const n = 250_001;
    const zeros = new Array(n).fill(0);
    const r = await postJson('/v1/adam/step', { params: zeros, grads: zeros });
    await expectProblem(r, 413, 'params');
    expect(r.body.limit).toBe(250_000);
    // Split over named tensors counts the total.
    const half = new Array(125_001).fill(0);
    await expectProblem(await postJson('/v1/adam/step', { params: { a: half, b: half }, grads: { a: half, b: half } }), 413);
  });

  it('a body over MAX_BODY_BYTES → 413, with or without Content-Length', async () => {
    const big = '{"params":[' + '0,'.repeat(17_000_000) + '0],"grads":[0]}';
    await expectProblem(await postRaw(big), 413);
    const bytes = new TextEncoder().encode(big);
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 1 << 20) controller.enqueue(bytes.subarray(i, i + (1 << 20)));
        controller.close();
      },
    });
    const res = await call('POST', '/v1/adam/step', undefined, { 'content-type': 'application/json' });
    await res.text();
    const chunked = await (await import('cloudflare:workers')).exports.default.fetch(
      new Request('http://adam-api.test/v1/adam/step', { method: 'POST', body: stream, headers: { 'content-type': 'application/json' }, duplex: 'half' } as RequestInit),
    );
    expect(chunked.status).toBe(413);
    expect(chunked.headers.get('content-type')).toMatch(/problem\+json/);
  });

  it('wrong method → 405 with Allow; unknown path → 404', async () => {
    const r = await call('GET', '/v1/adam/step');
    expect(r.status).toBe(405);
    expect(r.headers.get('allow')).toBe('POST');
    expect(r.headers.get('content-type')).toMatch(/problem\+json/);
    const nf = await call('GET', '/v1/nope');
    expect(nf.status).toBe(404);
    expect(nf.headers.get('content-type')).toMatch(/problem\+json/);
  });

  it('a request no operation takes gets its documented answer, whatever its body headers (found by test/fuzz/any-route.test.ts)', async () => {
    // The body checks (size, JSON values, Content-Encoding, charset) ran before routing, so these
    // answered 413 or 415, statuses the operation (or the 404/405 fallback) does not document.
    const cases: Array<[string, string, Record<string, string>, string | undefined, number]> = [
      ['GET', '/', { 'content-type': 'application/octet-stream', 'content-encoding': 'br' }, undefined, 200],
      ['GET', '/healthz', { 'content-type': 'application/vnd.safetensors', 'content-encoding': 'gzip' }, undefined, 200],
      ['PUT', '/v1/schedules/cosine/plot/', { 'content-type': 'application/json', 'content-encoding': 'br' }, '{}', 404],
      ['POST', '/healthz', { 'content-type': 'application/json', 'content-encoding': 'gzip' }, '{}', 405],
      ['PATCH', '/v1/adam/step', { 'content-type': 'application/json; charset=latin1' }, '{}', 405],
      ['POST', '/openapi.json', { 'content-type': 'application/json' }, `[${'0,'.repeat(300_000)}0]`, 405],
    ];
    for (const [method, path, headers, body, status] of cases) {
      const res = await call(method, path, body, headers);
      expect(res.status, `${method} ${path}`).toBe(status);
    }
  });
});
