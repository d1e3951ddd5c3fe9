// The 10,000-piece bound on params still to upload, at its boundary.

import { evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from './helpers/http.ts';
import { authed, createOptimizer, opCall, parse } from './helpers/optimizers.ts';

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));
const RAW = 'application/octet-stream';

describe('missing-range fragmentation', () => {
  it('10,000 pieces are allowed, 10,001 are a 422 that changes nothing', async () => {
    const n = 4 * 10_000;
    const opt = await createOptimizer({ shapes: { w: [n] }, init: 'zeros' });
    // Store 9,999 missing pieces [4i, 4i+3) directly, then reload.
    await runInDurableObject(stubOf(opt.id), async (_instance, state) => {
      const row = state.storage.sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = 'meta'").one();
      const meta = JSON.parse(row.v);
      meta.missing = Array.from({ length: 9_999 }, (_, i) => [4 * i, 4 * i + 3]);
      state.storage.sql.exec("UPDATE meta SET v = ? WHERE k = 'meta'", JSON.stringify(meta));
    });
    await evictDurableObject(stubOf(opt.id));
    const one = (offset: number) => exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/params?offset=${offset}`, { method: 'PUT', body: new Uint8Array(new Float32Array([7]).buffer), headers: authed(opt.token, { 'content-type': RAW }) }));
    const ok = await parse(await one(1));
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.upload.missing_elements).toBe(9_999 * 3 - 1);
    const t0 = Date.now();
    const bad = await parse(await one(5));
    expect(bad.status, JSON.stringify(bad.body)).toBe(422);
    const info = await opCall('GET', opt, '');
    console.log('upload + GET with 10,000 pieces took', Date.now() - t0, 'ms');
    expect(info.body.upload.missing_elements).toBe(9_999 * 3 - 1);
    const params = await parse(await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/params`, { headers: authed(opt.token) })));
    expect(params.body.params.w.slice(0, 8)).toEqual([0, 7, 0, 0, 0, 0, 0, 0]);
    await evictDurableObject(stubOf(opt.id));
    expect((await opCall('GET', opt, '')).body.upload.missing_elements).toBe(9_999 * 3 - 1);
  });
});
