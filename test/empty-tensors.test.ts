// Tensors and optimizers with no elements: an optimizer of empty trees through its whole
// lifecycle (steps in every format, checkpoint round trip, eviction), and an empty tensor at the end
// of a layout whose size is a multiple of the storage chunk (65,536 float32 elements): its upload
// once wrote a chunk past the last one, after which every load threw and the object answered 500 to
// everything, DELETE included (fixed in 61c00d8).

import { evictDurableObject } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE, call } from './helpers/http.ts';
import { authed, createOptimizer, opCall, parse } from './helpers/optimizers.ts';
import { readSafetensors, writeSafetensors } from './helpers/safetensors.ts';

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));

async function send(opt: { id: string; token: string }, method: string, path: string, body: BodyInit | undefined, headers: Record<string, string>) {
  const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}${path}`, { method, body, headers: authed(opt.token, headers) }));
  return { status: res.status, bytes: new Uint8Array(await res.arrayBuffer()), type: res.headers.get('content-type') };
}

describe('empty optimizer', () => {
  for (const params of [[], { a: [] }, { a: [[], []], b: { c: [] } }]) {
    it(`params ${JSON.stringify(params)}: steps (JSON, raw, safetensors), checkpoint round trip, eviction`, async () => {
      const opt = await createOptimizer({ params });
      expect((await opCall('POST', opt, '/step', { grads: params })).status).toBe(200);
      const r = await send(opt, 'POST', '/step', new Uint8Array(0), { 'content-type': 'application/octet-stream' });
      expect(r.status).toBe(200);
      const ck = await send(opt, 'GET', '/state', undefined, { accept: 'application/vnd.safetensors' });
      expect(ck.status).toBe(200);
      readSafetensors(ck.bytes);
      const put = await send(opt, 'PUT', '/state', ck.bytes, { 'content-type': 'application/vnd.safetensors' });
      expect(put.status, new TextDecoder().decode(put.bytes)).toBe(200);
      await evictDurableObject(stubOf(opt.id));
      const info = await opCall('GET', opt, '');
      expect(info.status).toBe(200);
      expect(info.body.step).toBe(2);
      const json = await opCall('GET', opt, '/state');
      expect(json.status).toBe(200);
      const back = await opCall('PUT', opt, '/state', json.body);
      expect(back.status, JSON.stringify(back.body)).toBe(200);
    });
  }
});

describe('empty tensor at a chunk boundary', () => {
  it('JSON upload of an empty trailing tensor survives eviction', async () => {
    const opt = await createOptimizer({ shapes: { a: [65536], b: [0] }, init: 'zeros' });
    const up = await opCall('PUT', opt, '/params', { params: { a: new Array(65536).fill(0.5), b: [] } });
    expect(up.status, JSON.stringify(up.body)).toBe(200);
    const s = await opCall('POST', opt, '/step', { grads: { a: new Array(65536).fill(0.1), b: [] } });
    expect(s.status, JSON.stringify(s.body)).toBe(200);
    await evictDurableObject(stubOf(opt.id));
    const after = await opCall('GET', opt, '');
    expect(after.status, JSON.stringify(after.body)).toBe(200);
    expect(after.body.step).toBe(1);
  });

  it('safetensors upload of only the empty trailing tensor survives eviction (size = 0 mod chunk)', async () => {
    const opt = await createOptimizer({ params: { a: new Array(65536).fill(0.25), b: [] } });
    const file = writeSafetensors([{ name: 'b', dtype: 'F32', shape: [0], data: new Uint8Array(0) }]);
    const up = await parse(await call('PUT', `/v1/optimizers/${opt.id}/params`, file, authed(opt.token, { 'content-type': 'application/vnd.safetensors' })));
    expect(up.status, JSON.stringify(up.body)).toBe(200);
    await evictDurableObject(stubOf(opt.id));
    const after = await opCall('GET', opt, '');
    expect(after.status, JSON.stringify(after.body)).toBe(200);
  });

  it('every route still works after the reload (before the fix: all 500, DELETE included)', async () => {
    const opt = await createOptimizer({ params: { a: new Array(65536).fill(0.25), b: [] } });
    await opCall('PUT', opt, '/params', { params: { b: [] } });
    await evictDurableObject(stubOf(opt.id));
    const statuses = [];
    for (const [m, path, body] of [['GET', '', undefined], ['GET', '/state', undefined], ['PUT', '/params', { params: { a: new Array(65536).fill(1) } }], ['DELETE', '', undefined]] as const) {
      const init: RequestInit = { method: m, headers: authed(opt.token, body ? { 'content-type': 'application/json' } : {}), body: body ? JSON.stringify(body) : undefined };
      const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}${path}`, init));
      await res.arrayBuffer();
      statuses.push(`${m} ${path}: ${res.status}`);
    }
    expect(statuses).toEqual(['GET : 200', 'GET /state: 200', 'PUT /params: 200', 'DELETE : 204']);
  });
});
