// Review probe: an optimizer with no elements through its whole lifecycle.

import { evictDurableObject } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from '../helpers/http.ts';
import { authed, createOptimizer, opCall, parse } from '../helpers/optimizers.ts';
import { readSafetensors } from '../helpers/safetensors.ts';

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
