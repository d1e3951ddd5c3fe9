// One JSON log line per request (never a token), and Server-Timing phases on responses.

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ServerTiming } from '../src/lib/observability.ts';
import { call } from './helpers/http.ts';
import { authed, createOptimizer } from './helpers/optimizers.ts';

let lines: string[] = [];
beforeEach(() => {
  lines = [];
  vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
    lines.push(args.map(String).join(' '));
  });
});
afterEach(() => vi.restoreAllMocks());

/** The request log records written so far. */
const records = () => lines.filter((l) => l.startsWith('{"type":"request"')).map((l) => JSON.parse(l) as Record<string, unknown>);

describe('request log', () => {
  it('one JSON line per request: id, method, route pattern, status, duration, optimizer id', async () => {
    const TOKEN_HINT = 'Bearer ';
    const opt = await createOptimizer({ params: [1] });
    lines = [];
    await call('POST', `/v1/optimizers/${opt.id}/step`, { grads: [1] }, authed(opt.token, { 'idempotency-key': 'k1' }));
    await call('GET', '/v1/schedules/constant?lr=1&steps=0:3');
    await call('GET', '/nope');
    await call('POST', '/v1/adam/step', { params: [1] });
    const logged = records();
    expect(logged).toHaveLength(4);
    expect(logged.map(({ method, route, status }) => [method, route, status])).toEqual([
      ['POST', '/v1/optimizers/:id/step', 200],
      ['GET', '/v1/schedules/:type', 200],
      ['GET', null, 404],
      ['POST', '/v1/adam/step', 422],
    ]);
    expect(logged[0]!.optimizer_id).toBe(opt.id);
    expect(logged.slice(1).every((r) => !('optimizer_id' in r))).toBe(true);
    for (const r of logged) {
      expect(Object.keys(r).sort()).toEqual(['duration_ms', 'id', 'method', 'route', 'status', 'type', ...('optimizer_id' in r ? ['optimizer_id'] : [])].sort());
      expect(r.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(typeof r.duration_ms === 'number' && r.duration_ms >= 0).toBe(true);
    }
    // Nothing secret or user-supplied beyond the id: no token, header, query or body.
    const all = lines.join('\n');
    for (const secret of [opt.token, TOKEN_HINT, 'idempotency-key', 'k1', 'lr=1', 'grads']) expect(all).not.toContain(secret);
  });

  it('uses the cf-ray id when Cloudflare sends one', async () => {
    await call('GET', '/healthz', undefined, { 'cf-ray': '8f1e2d3c4b5a6978-SJC' });
    expect(records().at(-1)!.id).toBe('8f1e2d3c4b5a6978-SJC');
  });
});

/** `Server-Timing` entries as name → duration (RFC: `name;dur=<ms>`, comma-separated). */
function serverTiming(res: Response): Record<string, number> {
  const header = res.headers.get('server-timing') ?? '';
  return Object.fromEntries(
    header.split(',').map((entry) => {
      const m = /^\s*([A-Za-z0-9_-]+);dur=(\d+(?:\.\d+)?)\s*$/.exec(entry);
      if (!m) throw new Error(`malformed Server-Timing entry ${JSON.stringify(entry)} in ${header}`);
      return [m[1]!, Number(m[2])];
    }),
  );
}

describe('Server-Timing', () => {
  it('the stateless step reports decode, kernel and encode, and the total', async () => {
    const params = Array.from({ length: 10_000 }, (_, i) => i / 7);
    const res = await call('POST', '/v1/adam/step', { params, grads: params });
    expect(res.status).toBe(200);
    const t = serverTiming(res);
    expect(Object.keys(t)).toEqual(['decode', 'kernel', 'encode', 'total']);
    expect(t.decode! + t.kernel! + t.encode!).toBeLessThanOrEqual(t.total! + 0.03); // phases lie within the request (2-decimal rounding)
  });

  it('a hosted step reports the object\'s decode, kernel and storage, the encode, and the total', async () => {
    const opt = await createOptimizer({ params: Array.from({ length: 1000 }, (_, i) => i) });
    for (const [body, type] of [[JSON.stringify({ grads: new Array(1000).fill(0.5) }), 'application/json'], [new Uint8Array(4000), 'application/octet-stream']] as const) {
      const res = await call('POST', `/v1/optimizers/${opt.id}/step`, body, authed(opt.token, { 'content-type': type }));
      expect(res.status).toBe(200);
      const t = serverTiming(res);
      expect(Object.keys(t)).toEqual(['decode', 'kernel', 'storage', 'encode', 'total']);
      expect(t.decode! + t.kernel! + t.storage! + t.encode!).toBeLessThanOrEqual(t.total! + 0.05);
    }
  });

  it('every other response carries the total, relayed and empty ones included', async () => {
    const opt = await createOptimizer({ params: [1] });
    for (const res of [
      await call('GET', '/healthz'),
      await call('GET', '/nope'),
      await call('POST', '/v1/adam/step', '{', { 'content-type': 'application/json' }),
      await call('GET', `/v1/optimizers/${opt.id}/params`, undefined, authed(opt.token)),
      await call('DELETE', `/v1/optimizers/${opt.id}`, undefined, authed(opt.token)),
    ]) {
      expect(Object.keys(serverTiming(res)), String(res.status)).toEqual(['total']);
    }
  });

  it('ServerTiming adds repeated phases and laps from the previous phase', () => {
    let now = 100;
    vi.spyOn(performance, 'now').mockImplementation(() => now);
    const t = new ServerTiming();
    now = 103; // 3 ms of reading and parsing
    t.lap('decode');
    t.phase('kernel', () => (now += 2));
    t.phase('storage', () => (now += 1.5));
    t.phase('storage', () => (now += 0.25));
    now += 0.5;
    expect(t.header()).toBe('decode;dur=3.00, kernel;dur=2.00, storage;dur=1.75, total;dur=7.25');
  });
});
