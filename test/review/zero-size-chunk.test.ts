// Review probe: an upload of an empty tensor at the end of a layout whose size is a multiple of the
// chunk (65,536 float32 elements) writes a checkpoint chunk beyond the last; reloading then fails.

import { evictDurableObject } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE, call } from '../helpers/http.ts';
import { createOptimizer, opCall, authed, parse } from '../helpers/optimizers.ts';
import { writeSafetensors } from '../helpers/safetensors.ts';

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));

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
