// Token rotation: POST /v1/optimizers/{id}/token issues a new bearer token and the old one stops
// working at once; nothing else about the optimizer changes.

import { evictDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { call } from './helpers/http.ts';
import { createOptimizer, expectProblem, opCall, parse } from './helpers/optimizers.ts';

const rotate = (id: string, headers: Record<string, string>) => call('POST', `/v1/optimizers/${id}/token`, undefined, headers);

describe('POST /v1/optimizers/{id}/token', () => {
  it('issues a new token; the old one is a 401 from then on, and the state and ETag stay', async () => {
    const opt = await createOptimizer({ params: [1, 2], hyperparams: { lr: 0.1 } });
    await opCall('POST', opt, '/step', { grads: [1, -1] });
    const before = await opCall('GET', opt, '/params');

    const res = await parse(await rotate(opt.id, { authorization: `Bearer ${opt.token}` }));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(Object.keys(res.body).sort()).toEqual(['id', 'token']);
    expect(res.body.id).toBe(opt.id);
    expect(res.body.token).toMatch(/^[A-Za-z0-9_-]{43}$/); // 32 random bytes, base64url
    expect(res.body.token).not.toBe(opt.token);
    const renewed = { id: opt.id, token: res.body.token as string };

    for (const [method, path, body] of [['GET', '', undefined], ['GET', '/params', undefined], ['POST', '/step', { grads: [1, 1] }], ['DELETE', '', undefined]] as const) {
      const old = await opCall(method, opt, path, body);
      expectProblem(old, 401);
      expect(old.headers.get('www-authenticate')).toBe('Bearer realm="adam-api"');
    }
    expectProblem(await parse(await rotate(opt.id, { authorization: `Bearer ${opt.token}` })), 401);

    const after = await opCall('GET', renewed, '/params');
    expect(after.status).toBe(200);
    expect(after.body).toEqual(before.body);
    expect(after.headers.get('etag')).toBe(before.headers.get('etag'));
    expect((await opCall('POST', renewed, '/step', { grads: [1, -1] })).body.step).toBe(2);

    // Stored, not just remembered: a fresh instance of the object agrees.
    await evictDurableObject(env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(opt.id)));
    expect((await opCall('GET', renewed, '')).status).toBe(200);
    expectProblem(await opCall('GET', opt, ''), 401);
  });

  it('each rotation invalidates the token before it', async () => {
    const opt = await createOptimizer({ params: [1] });
    const tokens = [opt.token];
    for (let i = 0; i < 3; i++) {
      const res = await parse(await rotate(opt.id, { authorization: `Bearer ${tokens.at(-1)}` }));
      expect(res.status).toBe(200);
      tokens.push(res.body.token);
    }
    expect(new Set(tokens).size).toBe(4);
    for (const token of tokens.slice(0, -1)) expectProblem(await opCall('GET', { id: opt.id, token }, ''), 401);
    expect((await opCall('GET', { id: opt.id, token: tokens.at(-1)! }, '')).status).toBe(200);
  });

  it('refuses without the current token, for unknown ids, a query, or an Accept it cannot meet; the token then stays', async () => {
    const opt = await createOptimizer({ params: [1] });
    const missing = await parse(await rotate(opt.id, {}));
    expectProblem(missing, 401);
    expect(missing.headers.get('www-authenticate')).toBe('Bearer realm="adam-api"');
    expectProblem(await parse(await rotate(opt.id, { authorization: 'Bearer not-the-token' })), 401);
    const other = await createOptimizer({ params: [1] });
    expectProblem(await parse(await rotate(opt.id, { authorization: `Bearer ${other.token}` })), 401);
    expectProblem(await parse(await rotate('0'.repeat(64), { authorization: `Bearer ${opt.token}` })), 404);
    expectProblem(await parse(await call('POST', `/v1/optimizers/${opt.id}/token?token=x`, undefined, { authorization: `Bearer ${opt.token}` })), 422, 'token');
    expectProblem(await parse(await rotate(opt.id, { authorization: `Bearer ${opt.token}`, accept: 'text/plain' })), 406);
    expect((await opCall('GET', opt, '')).status).toBe(200);
  });
});
