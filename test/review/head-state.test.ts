// Review probe: HEAD on GET routes that stream a snapshot (the body is dropped: is the lock released?).

import { exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from '../helpers/http.ts';
import { authed, createOptimizer, opCall } from '../helpers/optimizers.ts';

const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms))]);

describe('HEAD state', () => {
  for (const accept of ['application/json', 'application/vnd.safetensors']) {
    it(`HEAD /state (${accept}) then a step`, async () => {
      const opt = await createOptimizer({ params: { w: [1, 2, 3] } });
      const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { method: 'HEAD', headers: authed(opt.token, { accept }) }));
      console.log('HEAD status', res.status, 'body null?', res.body === null);
      const step = await within(opCall('POST', opt, '/step', { grads: { w: [1, 1, 1] } }), 5000);
      expect(step === 'timeout' ? 'timeout' : step.status).toBe(200);
    });
  }
});
