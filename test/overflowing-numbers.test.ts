// JSON numbers that parse to ±Infinity (1e999) and query numbers likewise.

import { exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from './helpers/http.ts';
import { authed, createOptimizer, opCall, parse } from './helpers/optimizers.ts';
import { encodeValues } from './helpers/safetensors.ts';

async function raw(method: string, path: string, text: string | Uint8Array, headers: Record<string, string>) {
  return parse(await exports.default.fetch(new Request(`${BASE}${path}`, { method, body: text, headers })));
}

describe('1e999', () => {
  it('loss 1e999 in a JSON hosted step', async () => {
    const opt = await createOptimizer({ params: [1, 2], schedule: { type: 'reduce_on_plateau', lr: 0.1 } });
    const r = await raw('POST', `/v1/optimizers/${opt.id}/step`, '{"grads":[1,1],"loss":1e999}', authed(opt.token, { 'content-type': 'application/json' }));
    expect(r.status, JSON.stringify(r.body)).toBe(422);
  });
  it('loss=1e999 in the query of a binary step', async () => {
    const opt = await createOptimizer({ params: [1, 2], schedule: { type: 'reduce_on_plateau', lr: 0.1 } });
    const r = await raw('POST', `/v1/optimizers/${opt.id}/step?loss=1e999`, encodeValues([1, 1], 'F32'), authed(opt.token, { 'content-type': 'application/octet-stream', accept: 'application/json' }));
    expect(r.status, JSON.stringify(r.body)).toBe(422);
    const h = await opCall('GET', opt, '/history');
    expect(h.status).toBe(200);
  });
  for (const [field, body] of [
    ['lr', '{"params":[1],"hyperparams":{"lr":1e999}}'],
    ['weight_decay', '{"params":[1],"hyperparams":{"weight_decay":1e999}}'],
    ['eps', '{"params":[1],"hyperparams":{"eps":1e999}}'],
    ['schedule.lr', '{"params":[1],"schedule":{"type":"constant","lr":1e999}}'],
    ['params', '{"params":[1e999]}'],
    ['float32 overflow', '{"params":[1e39]}'],
  ] as const) {
    it(`create with ${field} = 1e999`, async () => {
      const r = await raw('POST', '/v1/optimizers', body, { 'content-type': 'application/json' });
      expect(r.status, JSON.stringify(r.body)).toBe(422);
    });
  }
});
