// Review probe: steps, uploads, restores, PATCHes and slow GET state streams all at once on a
// journalled optimizer; afterwards the state in memory equals the state reloaded from storage.

import { abortAllDurableObjects, evictDurableObject } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from '../helpers/http.ts';
import { authed, createOptimizer, parse } from '../helpers/optimizers.ts';
import { readSafetensors } from '../helpers/safetensors.ts';

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));
const RAW = 'application/octet-stream';
const ST = 'application/vnd.safetensors';
const N = 32768 * 9 + 11; // float64: 10 chunks, journalled

async function fetchOpt(opt: { id: string; token: string }, method: string, path: string, body?: BodyInit, headers: Record<string, string> = {}) {
  return exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}${path}`, { method, body, headers: authed(opt.token, headers) }));
}

async function slowRead(res: Response, delayMs: number): Promise<Uint8Array> {
  const reader = res.body!.getReader();
  const parts: Uint8Array[] = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    await new Promise((r) => setTimeout(r, delayMs));
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function stateBytes(opt: { id: string; token: string }) {
  const res = await fetchOpt(opt, 'GET', '/state', undefined, { accept: ST });
  expect(res.status).toBe(200);
  return new Uint8Array(await res.arrayBuffer());
}

function sameTensors(a: Uint8Array, b: Uint8Array, what: string) {
  const x = readSafetensors(a);
  const y = readSafetensors(b);
  expect([...y.tensors.keys()], what).toEqual([...x.tensors.keys()]);
  for (const [k, t] of x.tensors) expect(Buffer.compare(Buffer.from(t.data), Buffer.from(y.tensors.get(k)!.data)), `${what}: ${k}`).toBe(0);
  expect(y.metadata!.step, what).toBe(x.metadata!.step);
}

describe('everything at once', () => {
  it('interleaved steps, uploads, PATCHes, restore and slow snapshot reads: memory = storage afterwards', { timeout: 300_000 }, async () => {
    const opt = await createOptimizer({ shapes: { w: [N] }, init: 'zeros', dtype: 'float64', hyperparams: { lr: 0.01 } });
    const p0 = Float64Array.from({ length: N }, (_, i) => Math.sin(i));
    expect((await fetchOpt(opt, 'PUT', '/params', new Uint8Array(p0.buffer), { 'content-type': RAW })).status).toBe(200);
    for (let k = 0; k < 3; k++) await (await fetchOpt(opt, 'POST', '/step?return=none', new Uint8Array(Float64Array.from({ length: N }, (_, i) => Math.cos(i + k)).buffer), { 'content-type': RAW })).arrayBuffer();
    const checkpoint = await stateBytes(opt);

    const ops: Array<Promise<{ what: string; status: number }>> = [];
    const t0 = Date.now();
    const track = (what: string, p: Promise<Response>, read: (r: Response) => Promise<unknown> = (r) => r.arrayBuffer()) =>
      ops.push(p.then(async (r) => {
        const t1 = Date.now() - t0;
        await read(r);
        console.log(what, r.status, 'headers at', t1, 'body done at', Date.now() - t0);
        return { what, status: r.status };
      }));
    for (let k = 0; k < 14; k++) {
      const g = Float64Array.from({ length: N }, (_, i) => Math.cos(i * 0.1 + k));
      track(`step ${k}`, fetchOpt(opt, 'POST', '/step?return=none', new Uint8Array(g.buffer), { 'content-type': RAW }));
      if (k % 3 === 0) track(`snapshot ${k}`, fetchOpt(opt, 'GET', '/state', undefined, { accept: k % 2 ? ST : 'application/json' }), (r) => slowRead(r, 5));
      if (k % 4 === 1) track(`upload ${k}`, fetchOpt(opt, 'PUT', `/params?offset=${k * 15000}`, new Uint8Array(new Float64Array(40000).fill(k / 10).buffer), { 'content-type': RAW }));
      if (k === 5) track('patch lr', fetchOpt(opt, 'PATCH', '', JSON.stringify({ hyperparams: { lr: 0.002 } }), { 'content-type': 'application/json' }));
      if (k === 7) track('patch amsgrad', fetchOpt(opt, 'PATCH', '', JSON.stringify({ hyperparams: { amsgrad: true } }), { 'content-type': 'application/json' }));
      if (k === 9) track('restore', fetchOpt(opt, 'PUT', '/state', checkpoint, { 'content-type': ST }));
      if (k === 11) track('params', fetchOpt(opt, 'GET', '/params', undefined, { accept: RAW }));
    }
    const results = await Promise.all(ops);
    expect(results.filter((r) => r.status >= 300), JSON.stringify(results)).toEqual([]);

    const before = await stateBytes(opt);
    await evictDurableObject(stubOf(opt.id));
    sameTensors(before, await stateBytes(opt), 'after eviction');
    await abortAllDurableObjects();
    sameTensors(before, await stateBytes(opt), 'after abort');
  });

  it('abort while steps and a restore are in flight: the object reloads a consistent state', { timeout: 300_000 }, async () => {
    const opt = await createOptimizer({ shapes: { w: [N] }, init: 'zeros', dtype: 'float64', hyperparams: { lr: 0.01 } });
    expect((await fetchOpt(opt, 'PUT', '/params', new Uint8Array(new Float64Array(N).fill(0.5).buffer), { 'content-type': RAW })).status).toBe(200);
    const checkpoint = await stateBytes(opt);
    const inflight: Array<Promise<number>> = [];
    for (let k = 0; k < 10; k++) {
      inflight.push(fetchOpt(opt, 'POST', '/step?return=none', new Uint8Array(new Float64Array(N).fill(k / 7).buffer), { 'content-type': RAW }).then((r) => r.status, () => -1));
      if (k === 4) inflight.push(fetchOpt(opt, 'PUT', '/state', checkpoint, { 'content-type': ST }).then((r) => r.status, () => -1));
    }
    await new Promise((r) => setTimeout(r, 30));
    await abortAllDurableObjects();
    const statuses = await Promise.all(inflight);
    const before = await stateBytes(opt);
    await evictDurableObject(stubOf(opt.id));
    sameTensors(before, await stateBytes(opt), 'after abort then eviction');
    const r = await fetchOpt(opt, 'POST', '/step?return=none', new Uint8Array(new Float64Array(N).fill(1).buffer), { 'content-type': RAW });
    expect(r.status).toBe(200);
    console.log('statuses of in-flight requests', statuses.join(','));
  });
});
