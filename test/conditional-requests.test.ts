// ETags and If-Match on every mutating hosted route (RFC 9110 §13.1.1: a stale If-Match means the
// method is not performed), and idempotent replays after other mutations.

import { evictDurableObject } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, parse } from './helpers/optimizers.ts';
import { encodeValues } from './helpers/safetensors.ts';

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));
const RAW = 'application/octet-stream';
const send = async (path: string, method: string, body: BodyInit | undefined, headers: Record<string, string>) =>
  parse(await exports.default.fetch(new Request(`${BASE}${path}`, { method, body, headers })));

describe('idempotent replays', () => {
  it('a replay after an upload does not answer the uploaded params as the step\'s result', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2] }, hyperparams: { lr: 0.1 } });
    const first = await opCall('POST', opt, '/step', { grads: { w: [1, 1] } }, { 'idempotency-key': 'k1' });
    expect(first.status).toBe(200);
    const early = await opCall('POST', opt, '/step', { grads: { w: [1, 1] } }, { 'idempotency-key': 'k1' });
    expect(early.body).toEqual({ ...first.body, replayed: true });
    expect((await opCall('PUT', opt, '/params', { params: { w: [100, 200] } })).status).toBe(200);
    const retry = await opCall('POST', opt, '/step', { grads: { w: [1, 1] } }, { 'idempotency-key': 'k1' });
    expect(retry.status).toBe(200);
    expect(retry.body).toEqual({ step: 1, lr: 0.1, replayed: true });
    await evictDurableObject(stubOf(opt.id));
    expect((await opCall('POST', opt, '/step', { grads: { w: [1, 1] } }, { 'idempotency-key': 'k1' })).body).toEqual({ step: 1, lr: 0.1, replayed: true });
  });

  it('binary and JSON bodies of the same values are one key, across eviction; other values or loss under the key are a 422', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2] }, hyperparams: { lr: 0.1 } });
    const a = await send(`/v1/optimizers/${opt.id}/step?loss=0.5`, 'POST', encodeValues([0.25, -0.5], 'F32'), authed(opt.token, { 'content-type': RAW, 'idempotency-key': 'k', accept: 'application/json' }));
    expect(a.status).toBe(200);
    await evictDurableObject(stubOf(opt.id));
    const b = await opCall('POST', opt, '/step', { grads: { w: [0.25, -0.5] }, loss: 0.5 }, { 'idempotency-key': 'k' });
    expect(b.body.replayed).toBe(true);
    const bf = await send(`/v1/optimizers/${opt.id}/step?loss=0.5`, 'POST', encodeValues([0.25, -0.5], 'BF16'), authed(opt.token, { 'content-type': `${RAW}; dtype=bfloat16`, 'idempotency-key': 'k', accept: 'application/json' }));
    expect(bf.body.replayed).toBe(true);
    expectProblem(await opCall('POST', opt, '/step', { grads: { w: [0.25, -0.5] }, loss: 0.6 }, { 'idempotency-key': 'k' }), 422, 'Idempotency-Key');
    expect((await opCall('GET', opt, '')).body.step).toBe(1);
  });
});
