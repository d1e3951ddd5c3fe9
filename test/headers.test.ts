// Response headers: nosniff on every response, a locked-down CSP on SVGs, and CORS only for the
// origins listed in CORS_ORIGINS (none by default), preflights included.

import { describe, expect, it } from 'vitest';
import { call, callWithVars } from './helpers/http.ts';
import { authed, createOptimizer, opCall } from './helpers/optimizers.ts';

const big = '[' + '0,'.repeat(20_000_000) + '0]'; // 40 MB: over MAX_BODY_BYTES

describe('X-Content-Type-Options: nosniff on every response', () => {
  it('success, problems, 404/405, docs, SVG, YAML, 204', async () => {
    const opt = await createOptimizer({ params: [1] });
    await opCall('POST', opt, '/step', { grads: [1], loss: 1 });
    const responses: Array<[string, Response]> = [
      ['200 JSON', await call('GET', '/healthz')],
      ['201 hosted', await call('POST', '/v1/optimizers', { params: [1] })],
      ['200 relayed from the Durable Object', await call('GET', `/v1/optimizers/${opt.id}/params`, undefined, authed(opt.token))],
      ['400', await call('POST', '/v1/adam/step', '{', { 'content-type': 'application/json' })],
      ['401', await call('GET', `/v1/optimizers/${opt.id}`)],
      ['404', await call('GET', '/nope')],
      ['405', await call('DELETE', '/v1/adam/step')],
      ['413', await call('POST', '/v1/adam/step', big, { 'content-type': 'application/json' })],
      ['415', await call('POST', '/v1/adam/step', '{}', { 'content-type': 'text/plain' })],
      ['422', await call('POST', '/v1/adam/step', { params: [1] })],
      ['docs page', await call('GET', '/docs')],
      ['docs script', await call('GET', '/docs/assets/init.js')],
      ['schedule SVG', await call('GET', '/v1/schedules/constant/plot?lr=1')],
      ['history SVG', await call('GET', `/v1/optimizers/${opt.id}/history/plot`, undefined, authed(opt.token))],
      ['YAML', await call('GET', '/openapi.yaml')],
      ['204', await call('DELETE', `/v1/optimizers/${opt.id}`, undefined, authed(opt.token))],
    ];
    for (const [what, res] of responses) expect(res.headers.get('x-content-type-options'), `${what} (${res.status})`).toBe('nosniff');
  });
});

describe('SVG responses', () => {
  it("get Content-Security-Policy: default-src 'none', which the charts need nothing beyond", async () => {
    const opt = await createOptimizer({ params: [1] });
    await opCall('POST', opt, '/step', { grads: [1], loss: 1 });
    for (const res of [
      await call('GET', '/v1/schedules/cosine/plot?lr=1&total_steps=10&title=%3Cstyle%3E'),
      await call('POST', '/v1/schedules/plot', { schedule: { type: 'constant', lr: 1 } }),
      await call('GET', `/v1/optimizers/${opt.id}/history/plot`, undefined, authed(opt.token)),
    ]) {
      expect(res.headers.get('content-type')).toMatch(/^image\/svg\+xml/);
      expect(res.headers.get('content-security-policy')).toBe("default-src 'none'");
      // What default-src 'none' would block: style elements or attributes, scripts, links, external fonts or images.
      const svg = await res.text();
      expect(svg).not.toMatch(/<style|\sstyle=|<script|href=|url\(|@import|<image|<foreignObject/i);
    }
  });

  it('the docs page keeps its own policy', async () => {
    const res = await call('GET', '/docs');
    expect(res.headers.get('content-security-policy')).toMatch(/script-src 'self'/);
  });
});

describe('CORS', () => {
  const ORIGIN = 'https://app.example';
  const preflight = { origin: ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, idempotency-key' };

  it('is off by default: no CORS headers, and a preflight is an ordinary 405', async () => {
    const res = await call('GET', '/healthz', undefined, { origin: ORIGIN });
    expect([...res.headers.keys()].filter((k) => k.startsWith('access-control-'))).toEqual([]);
    const pre = await call('OPTIONS', '/v1/adam/step', undefined, preflight);
    expect(pre.status).toBe(405);
    expect(pre.headers.get('access-control-allow-origin')).toBeNull();
  });

  const vars = { CORS_ORIGINS: `${ORIGIN}, http://localhost:5173/` };

  it('answers the preflight of a listed origin with 204 and the allowed methods and headers', async () => {
    const res = await callWithVars(vars, 'OPTIONS', '/v1/optimizers/abc/step', undefined, preflight);
    expect(res.status).toBe(204);
    expect(Object.fromEntries([...res.headers].filter(([k]) => k.startsWith('access-control-') || k === 'vary'))).toEqual({
      'access-control-allow-origin': ORIGIN,
      'access-control-allow-methods': 'GET, POST, PUT, PATCH, DELETE',
      'access-control-allow-headers': 'authorization, content-type, idempotency-key, if-match',
      'access-control-max-age': '600',
      vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
    });
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    const local = await callWithVars(vars, 'OPTIONS', '/healthz', undefined, { ...preflight, origin: 'http://localhost:5173' });
    expect(local.headers.get('access-control-allow-origin')).toBe('http://localhost:5173'); // listed with a trailing slash
  });

  it('lets a listed origin read answers, errors included, and the headers clients need', async () => {
    for (const res of [
      await callWithVars(vars, 'GET', '/healthz', undefined, { origin: ORIGIN }),
      await callWithVars(vars, 'POST', '/v1/adam/step', '{"params":[1]}', { origin: ORIGIN, 'content-type': 'application/json' }),
      await callWithVars(vars, 'GET', '/nope', undefined, { origin: ORIGIN }),
    ]) {
      expect(res.headers.get('access-control-allow-origin')).toBe(ORIGIN);
      expect(res.headers.get('access-control-expose-headers')).toBe('etag, location, idempotent-replayed, step, lr, server-timing');
      expect(res.headers.get('access-control-allow-credentials')).toBeNull();
      expect(res.headers.get('vary')).toMatch(/\bOrigin\b/);
    }
  });

  it('gives an unlisted origin nothing to read cross-origin (and a preflight no 204)', async () => {
    const res = await callWithVars(vars, 'GET', '/healthz', undefined, { origin: 'https://evil.example' });
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    expect(res.headers.get('vary')).toBe('Origin');
    const pre = await callWithVars(vars, 'OPTIONS', '/v1/adam/step', undefined, { ...preflight, origin: 'https://evil.example' });
    expect(pre.status).toBe(405);
    expect(pre.headers.get('access-control-allow-origin')).toBeNull();
    const sameOrigin = await callWithVars(vars, 'GET', '/healthz'); // no Origin: not a CORS request
    expect(sameOrigin.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('`*` allows any origin, without Vary', async () => {
    const res = await callWithVars({ CORS_ORIGINS: '*' }, 'GET', '/healthz', undefined, { origin: 'https://anyone.example' });
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    expect(res.headers.get('vary')).toBeNull();
  });
});
