// Review probe: within the documented limits (10,000 tensors, names of 1,000 characters, 4,194,304
// float32 elements), do the object's answers fit the 32 MiB RPC limit? Names of non-ASCII
// characters take two bytes each in a serialized string.

import { exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from '../helpers/http.ts';
import { authed } from '../helpers/optimizers.ts';

describe('RPC answer size at the documented limits', () => {
  it('10,000 tensors with 1,000-character non-ASCII names, 4,194,304 float32 elements: GET params, step with params', { timeout: 300_000 }, async () => {
    const total = 4_194_304;
    const per = Math.floor(total / 10_000);
    const shapes: Record<string, number[]> = {};
    for (let i = 0; i < 10_000; i++) {
      const id = String(i).padStart(5, '0');
      shapes[id + 'é'.repeat(995)] = [i === 9_999 ? total - per * 9_999 : per];
    }
    const body = JSON.stringify({ shapes, init: 'zeros' });
    const created = await exports.default.fetch(new Request(`${BASE}/v1/optimizers`, { method: 'POST', body, headers: { 'content-type': 'application/json' } }));
    const c = (await created.json()) as { id: string; token: string; detail?: string };
    expect(created.status, c.detail).toBe(201);
    const opt = { id: c.id, token: c.token };
    const up = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/params`, { method: 'PUT', body: new Uint8Array(total * 4), headers: authed(opt.token, { 'content-type': 'application/octet-stream' }) }));
    await up.arrayBuffer();
    expect(up.status).toBe(200);
    const results: Record<string, number> = {};
    for (const [what, method, path, b] of [
      ['GET params raw', 'GET', '/params', undefined],
      ['step raw, params back', 'POST', '/step', new Uint8Array(total * 4)],
      ['GET info', 'GET', '', undefined],
    ] as const) {
      const r = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}${path}`, { method, body: b, headers: authed(opt.token, { 'content-type': 'application/octet-stream', accept: path === '' ? 'application/json' : 'application/octet-stream' }) }));
      await r.arrayBuffer();
      results[what] = r.status;
    }
    await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}`, { method: 'DELETE', headers: authed(opt.token) }));
    expect(results).toEqual({ 'GET params raw': 200, 'step raw, params back': 200, 'GET info': 200 });
  });
});
