// Review probe: does a GET state that is refused, abandoned or read slowly release the optimizer's lock?

import { exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from '../helpers/http.ts';
import { authed, createOptimizer, opCall } from '../helpers/optimizers.ts';

const ST = 'application/vnd.safetensors';
const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms))]);

describe('snapshot lock', () => {
  it('a GET state refused with 406 (colliding dotted names) does not hold the lock', async () => {
    const opt = await createOptimizer({ params: { 'a.b': [1], a: { b: [2] } } });
    const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { headers: authed(opt.token, { accept: ST }) }));
    expect(res.status).toBe(406);
    await res.arrayBuffer();
    const step = await within(opCall('POST', opt, '/step', { grads: { 'a.b': [1], a: { b: [1] } } }), 5000);
    expect(step === 'timeout' ? 'timeout' : step.status).toBe(200);
  });

  for (const accept of ['application/json', ST]) {
    it(`an abandoned GET state (${accept}) releases the lock`, async () => {
      const opt = await createOptimizer({ shapes: { w: [300000] }, init: 'zeros' });
      // complete the upload
      const up = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/params`, { method: 'PUT', body: new Uint8Array(1200000), headers: authed(opt.token, { 'content-type': 'application/octet-stream' }) }));
      expect(up.status).toBe(200);
      const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { headers: authed(opt.token, { accept }) }));
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      await reader.read();
      await reader.cancel();
      const step = await within(exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/step?return=none`, { method: 'POST', body: new Uint8Array(1200000), headers: authed(opt.token, { 'content-type': 'application/octet-stream' }) })), 5000);
      expect(step === 'timeout' ? 'timeout' : step.status).toBe(200);
    });

    it(`a GET state (${accept}) never read at all: later steps`, async () => {
      const opt = await createOptimizer({ params: { w: [1, 2, 3] } });
      const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { headers: authed(opt.token, { accept }) }));
      expect(res.status).toBe(200);
      await res.body!.cancel();
      const step = await within(opCall('POST', opt, '/step', { grads: { w: [1, 1, 1] } }), 5000);
      expect(step === 'timeout' ? 'timeout' : step.status).toBe(200);
    });
  }
});
