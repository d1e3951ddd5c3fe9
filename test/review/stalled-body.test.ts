// Review probe: a binary body that stalls holds the optimizer's lock; one that ends early or runs long.

import { exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from '../helpers/http.ts';
import { authed, createOptimizer, opCall, parse } from '../helpers/optimizers.ts';

const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms))]);

function stalling(first: Uint8Array) {
  let ctl!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      ctl = c;
      c.enqueue(first);
    },
  });
  return { body, ctl };
}

describe('stalled binary body', () => {
  it('a raw step whose body stalls blocks every other call on the optimizer (no read timeout)', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2, 3, 4] } });
    const { body, ctl } = stalling(new Uint8Array(8));
    const stalled = exports.default.fetch(
      new Request(`${BASE}/v1/optimizers/${opt.id}/step`, { method: 'POST', body, headers: authed(opt.token, { 'content-type': 'application/octet-stream' }), duplex: 'half' } as RequestInit),
    );
    await new Promise((r) => setTimeout(r, 200));
    const other = await within(opCall('GET', opt, ''), 3000);
    const status = other === 'timeout' ? 'timeout' : other.status;
    ctl.error(new Error('client gone'));
    const s = await parse(await stalled);
    expect(s.status).toBe(422);
    expect(status, 'GET metadata while another request stalls its body').toBe(200);
  });

  it('a raw step whose stream errors mid-body is a 4xx and nothing changes', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2, 3, 4] } });
    const { body, ctl } = stalling(new Uint8Array(8));
    const p = exports.default.fetch(
      new Request(`${BASE}/v1/optimizers/${opt.id}/step`, { method: 'POST', body, headers: authed(opt.token, { 'content-type': 'application/octet-stream' }), duplex: 'half' } as RequestInit),
    );
    setTimeout(() => ctl.error(new Error('boom')), 50);
    const r = await parse(await p);
    expect(r.status, JSON.stringify(r.body)).toBe(422);
    expect((await opCall('GET', opt, '')).body.step).toBe(0);
  });

  it('chunked raw step (no Content-Length) that ends early / runs long', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2, 3, 4] } });
    for (const n of [12, 20, 0]) {
      const { body, ctl } = stalling(new Uint8Array(n));
      ctl.close();
      const r = await parse(await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/step`, { method: 'POST', body, headers: authed(opt.token, { 'content-type': 'application/octet-stream' }), duplex: 'half' } as RequestInit)));
      expect(r.status, `${n}: ${JSON.stringify(r.body)}`).toBe(422);
    }
    expect((await opCall('GET', opt, '')).body.step).toBe(0);
  });
});
