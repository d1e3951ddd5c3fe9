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

describe('If-Match outside steps', () => {
  it('a stale If-Match on PATCH, PUT params (JSON and raw), PUT state and DELETE is a 412 carrying the current ETag, and nothing changes', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2] } });
    const stale = opt.etag!;
    const stepped = await opCall('POST', opt, '/step', { grads: { w: [1, 1] } });
    const current = stepped.headers.get('etag')!;
    const snap = (await opCall('GET', opt, '/state')).body;
    const results = [
      await opCall('PATCH', opt, '', { hyperparams: { lr: 0.5 } }, { 'if-match': stale }),
      await opCall('PUT', opt, '/params', { params: { w: [9, 9] } }, { 'if-match': stale }),
      await send(`/v1/optimizers/${opt.id}/params`, 'PUT', encodeValues([9, 9], 'F32'), authed(opt.token, { 'content-type': RAW, 'if-match': stale })),
      await opCall('PUT', opt, '/state', { ...snap, step: 0 }, { 'if-match': stale }),
      await opCall('DELETE', opt, '', undefined, { 'if-match': stale }),
    ];
    for (const r of results) {
      expectProblem(r, 412);
      expect(r.headers.get('etag')).toBe(current);
    }
    const after = await opCall('GET', opt, '/state');
    expect(after.body).toEqual(snap);
    expect(after.headers.get('etag')).toBe(current);
  });

  it('the current ETag (or *) lets each of them through', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2] } });
    let tag = opt.etag!;
    const next = (r: { status: number; headers: Headers; body: unknown }) => {
      expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
      tag = r.headers.get('etag') ?? tag;
    };
    next(await opCall('PATCH', opt, '', { hyperparams: { lr: 0.5 } }, { 'if-match': tag }));
    next(await opCall('PUT', opt, '/params', { params: { w: [3, 4] } }, { 'if-match': `"other", ${tag}` }));
    const snap = (await opCall('GET', opt, '/state')).body;
    next(await opCall('PUT', opt, '/state', snap, { 'if-match': tag }));
    next(await opCall('PATCH', opt, '', { hyperparams: { lr: 0.1 } }, { 'if-match': '*' }));
    expect((await opCall('DELETE', opt, '', undefined, { 'if-match': tag })).status).toBe(204);
  });

  it('every tag ever issued is distinct (steps, PATCH, uploads, restores, eviction), and only the current one matches a step', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2] } });
    const tags = [opt.etag!];
    const record = (r: { headers: Headers; status: number }) => {
      expect(r.status).toBeLessThan(300);
      tags.push(r.headers.get('etag')!);
    };
    record(await opCall('POST', opt, '/step', { grads: { w: [1, 1] } }));
    record(await opCall('PATCH', opt, '', { hyperparams: { lr: 0.01 } }));
    record(await opCall('PUT', opt, '/params', { params: { w: [3, 4] } }));
    const snap = await opCall('GET', opt, '/state');
    record(await opCall('PUT', opt, '/state', { ...snap.body, step: 0 }));
    record(await opCall('POST', opt, '/step', { grads: { w: [1, 1] } }));
    await evictDurableObject(stubOf(opt.id));
    record(await opCall('PATCH', opt, '', { hyperparams: {} }));
    expect(new Set(tags).size, tags.join(' ')).toBe(tags.length);
    for (const old of tags.slice(0, -1)) expect((await opCall('POST', opt, '/step', { grads: { w: [1, 1] } }, { 'if-match': old })).status, old).toBe(412);
    expect((await opCall('POST', opt, '/step', { grads: { w: [1, 1] } }, { 'if-match': `W/${tags.at(-1)}, ${tags.at(-1)}` })).status).toBe(200);
  });
});

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
