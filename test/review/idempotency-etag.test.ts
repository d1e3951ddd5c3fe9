// Review probe: idempotent replays and ETags across uploads, restores, eviction and formats.

import { evictDurableObject } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from '../helpers/http.ts';
import { authed, createOptimizer, opCall, parse } from '../helpers/optimizers.ts';
import { encodeValues } from '../helpers/safetensors.ts';

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));
const RAW = 'application/octet-stream';

async function send(path: string, method: string, body: BodyInit | undefined, headers: Record<string, string>) {
  return parse(await exports.default.fetch(new Request(`${BASE}${path}`, { method, body, headers })));
}

describe('idempotency and ETags', () => {
  it('a replay after an upload (same seq) answers the params the step produced, not the uploaded ones', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2] }, hyperparams: { lr: 0.1 } });
    const first = await opCall('POST', opt, '/step', { grads: { w: [1, 1] } }, { 'idempotency-key': 'k1' });
    expect(first.status).toBe(200);
    const up = await opCall('PUT', opt, '/params', { params: { w: [100, 200] } });
    expect(up.status).toBe(200);
    const retry = await opCall('POST', opt, '/step', { grads: { w: [1, 1] } }, { 'idempotency-key': 'k1' });
    expect(retry.status).toBe(200);
    expect(retry.body.replayed).toBe(true);
    // Either the original params, or none (as after later steps); never the uploaded values as the step's result.
    expect(retry.body.params === undefined || JSON.stringify(retry.body.params) === JSON.stringify(first.body.params), JSON.stringify(retry.body)).toBe(true);
  });

  it('binary and JSON bodies of the same values are one key; across eviction; after a restore the key is forgotten', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2] }, hyperparams: { lr: 0.1 } });
    const a = await send(`/v1/optimizers/${opt.id}/step?loss=0.5`, 'POST', encodeValues([0.25, -0.5], 'F32'), authed(opt.token, { 'content-type': RAW, 'idempotency-key': 'k', accept: 'application/json' }));
    expect(a.status).toBe(200);
    await evictDurableObject(stubOf(opt.id));
    const b = await opCall('POST', opt, '/step', { grads: { w: [0.25, -0.5] }, loss: 0.5 }, { 'idempotency-key': 'k' });
    expect(b.body.replayed).toBe(true);
    const bf = await send(`/v1/optimizers/${opt.id}/step?loss=0.5`, 'POST', encodeValues([0.25, -0.5], 'BF16'), authed(opt.token, { 'content-type': `${RAW}; dtype=bfloat16`, 'idempotency-key': 'k', accept: 'application/json' }));
    expect(bf.body.replayed).toBe(true);
    const otherLoss = await opCall('POST', opt, '/step', { grads: { w: [0.25, -0.5] }, loss: 0.6 }, { 'idempotency-key': 'k' });
    expect(otherLoss.status).toBe(422);
    expect((await opCall('GET', opt, '')).body.step).toBe(1);
  });

  it('If-Match: every tag ever issued is distinct, and only the current one matches', async () => {
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
    record(await opCall('PATCH', opt, '', { hyperparams: { amsgrad: true } }));
    await evictDurableObject(stubOf(opt.id));
    record(await opCall('PATCH', opt, '', { hyperparams: {} }));
    expect(new Set(tags).size, tags.join(' ')).toBe(tags.length);
    for (const old of tags.slice(0, -1)) expect((await opCall('POST', opt, '/step', { grads: { w: [1, 1] } }, { 'if-match': old })).status, old).toBe(412);
    expect((await opCall('POST', opt, '/step', { grads: { w: [1, 1] } }, { 'if-match': `W/${tags.at(-1)}, ${tags.at(-1)}` })).status).toBe(200);
  });
});
