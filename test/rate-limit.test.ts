import { rateLimitKey } from '../src/lib/rate-limit.ts';
// Rate limiting (src/lib/rate-limit.ts) through workerd's own rate-limiting binding. The Worker gets
// RATE_LIMITER_TEST (5 requests per 10 s, declared in vitest.config.ts) as its RATE_LIMITER, so a
// test can exceed it in a few requests; wrangler.toml's RATE_LIMITER (1000 per 10 s) is checked
// to exist with the period the code announces. Windows are aligned to the wall clock, so one may
// roll over mid-test: a test sends until the first 429, which must come after at least LIMIT
// successes and within two windows' worth (2 * LIMIT + 1 requests). Every bucket is new per test.

import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import wranglerToml from '../wrangler.toml?raw';
import { RATE_LIMIT_PERIOD_SECONDS } from '../src/lib/rate-limit.ts';
import { bearer, send } from './helpers/keys.ts';
import { expectProblem } from './helpers/optimizers.ts';

const LIMIT = 5;
const testLimiter = (env as unknown as { RATE_LIMITER_TEST: RateLimit }).RATE_LIMITER_TEST;
/** Worker variables: the small limiter, and any others. */
const vars = (more: Record<string, string> = {}) => ({ RATE_LIMITER: testLimiter, ...more });
const ip = (address: string) => ({ 'cf-connecting-ip': address });

type Answer = Awaited<ReturnType<typeof send>>;

/** Sends `request(i)` until the first 429; the successes before it (each a 2xx) and the 429. */
async function untilLimited(request: (i: number) => Promise<Answer>) {
  let ok = 0;
  for (let i = 0; i <= 2 * LIMIT; i++) {
    const res = await request(i);
    if (res.status === 429) return { ok, limited: res };
    expect(res.status, JSON.stringify(res.body)).toBeLessThan(300);
    ok++;
  }
  throw new Error(`no 429 after ${2 * LIMIT + 1} requests`);
}

function expectRateLimited(res: Answer) {
  expectProblem(res, 429);
  expect(res.body.type).toBe('urn:adam-api:problem:rate-limited');
  expect(res.headers.get('retry-after')).toBe(String(RATE_LIMIT_PERIOD_SECONDS));
}

describe('rate limit', () => {
  it('wrangler.toml binds RATE_LIMITER with the period the Worker announces in Retry-After', () => {
    expect(typeof env.RATE_LIMITER.limit).toBe('function');
    const block = /\[\[ratelimits\]\]\s*\nname = "RATE_LIMITER"[^[]*?simple = \{ limit = (\d+), period = (\d+) \}/.exec(wranglerToml);
    expect(block, 'a [[ratelimits]] block named RATE_LIMITER').not.toBeNull();
    expect(Number(block![2])).toBe(RATE_LIMIT_PERIOD_SECONDS);
    expect(Number(block![1])).toBe(1000);
  });

  it('without API keys: per client IP (CF-Connecting-IP), a 429 problem with Retry-After beyond the limit', async () => {
    const { ok, limited } = await untilLimited(() => send(vars(), 'GET', '/v1/algorithms', undefined, ip('203.0.113.10')));
    expect(ok).toBeGreaterThanOrEqual(LIMIT);
    expectRateLimited(limited);
    expect(limited.body.detail).toContain('client address');
    // Another address has its own bucket; service description and health are never limited.
    expect((await send(vars(), 'GET', '/v1/algorithms', undefined, ip('203.0.113.11'))).status).toBe(200);
    expect((await send(vars(), 'GET', '/healthz', undefined, ip('203.0.113.10'))).status).toBe(200);
    expect((await send(vars(), 'GET', '/', undefined, ip('203.0.113.10'))).status).toBe(200);
  });

  it('counts every /v1 route, stateless steps and hosted ones alike, and a limited request changes nothing', async () => {
    const address = ip('203.0.113.20');
    const created = await send(vars(), 'POST', '/v1/optimizers', { params: [1, 2], hyperparams: { lr: 0.1 } }, address);
    expect(created.status).toBe(201);
    const { id, token } = created.body;
    const step = () => send(vars(), 'POST', `/v1/optimizers/${id}/step`, { grads: [1, 1] }, { ...address, ...bearer(token) });
    const { ok, limited } = await untilLimited((i) => (i % 2 ? send(vars(), 'POST', '/v1/adam/step', { params: [1], grads: [1] }, address) : step()));
    expect(ok + 1).toBeGreaterThanOrEqual(LIMIT); // the creation counted too
    expectRateLimited(limited);
    // The refused request, whichever it was, did nothing: the optimizer made exactly the steps that got a 2xx (asked from another address).
    const after = await send(vars(), 'GET', `/v1/optimizers/${id}`, undefined, { ...ip('203.0.113.21'), ...bearer(token) });
    expect(after.status).toBe(200);
    expect(after.body.step).toBe(Math.ceil(ok / 2));
  });

  it('with API keys: per key on service routes, whatever the address; other keys unaffected; hosted routes per IP', async () => {
    const keys = { API_KEYS: 'rl-key-a-7c1d,rl-key-b-99e0' };
    const { ok, limited } = await untilLimited((i) => send(vars(keys), 'GET', '/v1/optimizers', undefined, { ...bearer('rl-key-a-7c1d'), ...ip(`198.51.100.${i}`) }));
    expect(ok).toBeGreaterThanOrEqual(LIMIT);
    expectRateLimited(limited);
    expect(limited.body.detail).toContain('API key');
    expect(JSON.stringify(limited.body)).not.toContain('rl-key-a-7c1d');
    expect((await send(vars(keys), 'GET', '/v1/optimizers', undefined, { ...bearer('rl-key-b-99e0'), ...ip('198.51.100.1') })).status).toBe(200);
    // Without a valid key the answer is the 401, whatever the bucket: keys are checked first.
    expectProblem(await send(vars(keys), 'GET', '/v1/optimizers', undefined, ip('198.51.100.1')), 401);
    // A hosted route carries no API key: it counts against the client's address.
    const created = await send(vars(keys), 'POST', '/v1/optimizers', { params: [1] }, { ...bearer('rl-key-b-99e0'), ...ip('198.51.100.200') });
    expect(created.status).toBe(201);
    const hosted = (address: string) => send(vars(keys), 'GET', `/v1/optimizers/${created.body.id}`, undefined, { ...bearer(created.body.token), ...ip(address) });
    const byIp = await untilLimited(() => hosted('198.51.100.201'));
    expect(byIp.ok).toBeGreaterThanOrEqual(LIMIT);
    expectRateLimited(byIp.limited);
    expect((await hosted('198.51.100.202')).status).toBe(200);
  });

  it('a request with neither a key nor a client address (local tools only) is not limited', async () => {
    for (let i = 0; i < 3 * LIMIT; i++) expect((await send(vars(), 'GET', '/v1/algorithms')).status).toBe(200);
  });

  it('a loopback client (wrangler dev, load tests and benchmarks on this machine) is not limited', async () => {
    for (const address of ['127.0.0.1', '::1', '::ffff:127.0.0.1']) {
      for (let i = 0; i < 3 * LIMIT; i++) expect((await send(vars(), 'GET', '/v1/algorithms', undefined, ip(address))).status).toBe(200);
    }
    expect(rateLimitKey(null, '127.0.0.2')).toBeNull();
    expect(rateLimitKey(null, '128.0.0.1')).toBe('ip:128.0.0.1');
  });
});
