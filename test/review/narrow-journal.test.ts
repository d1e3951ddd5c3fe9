// Review probe: safetensors gradients narrower than the optimizer (F16, BF16, F32 into float64),
// in file order unlike the layout, mixed types, journalled and replayed: a twin that reloads after
// every step equals one that never reloads. And restores that change size and dtype mid-journal.

import { evictDurableObject } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from '../helpers/http.ts';
import { authed, createOptimizer, parse, type Created } from '../helpers/optimizers.ts';
import { readSafetensors, writeSafetensors, type Dt } from '../helpers/safetensors.ts';

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));
const RAW = 'application/octet-stream';
const ST = 'application/vnd.safetensors';

async function fetchOpt(opt: { id: string; token: string }, method: string, path: string, body?: BodyInit, headers: Record<string, string> = {}) {
  return exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}${path}`, { method, body, headers: authed(opt.token, headers) }));
}
async function state(opt: Created) {
  const r = await fetchOpt(opt, 'GET', '/state', undefined, { accept: ST });
  expect(r.status).toBe(200);
  return new Uint8Array(await r.arrayBuffer());
}
function same(a: Uint8Array, b: Uint8Array, what: string) {
  const x = readSafetensors(a);
  const y = readSafetensors(b);
  for (const [k, t] of x.tensors) expect(Buffer.compare(Buffer.from(t.data), Buffer.from(y.tensors.get(k)!.data)), `${what}: ${k}`).toBe(0);
  expect(y.metadata!.step).toBe(x.metadata!.step);
}

/** n values exact in half precision: small integers over 64. */
function halfExact(n: number, k: number, dtype: Dt): Uint8Array {
  const size = dtype === 'F64' ? 8 : dtype === 'F32' ? 4 : 2;
  const out = new Uint8Array(n * size);
  const v = new DataView(out.buffer);
  for (let i = 0; i < n; i++) {
    const x = (((i * 7 + k * 13) % 41) - 20) / 64;
    if (dtype === 'F64') v.setFloat64(i * 8, x, true);
    else if (dtype === 'F32') v.setFloat32(i * 4, x, true);
    else if (dtype === 'BF16') {
      const f = new DataView(new ArrayBuffer(4));
      f.setFloat32(0, x);
      v.setUint16(i * 2, f.getUint32(0) >>> 16, true);
    } else {
      // float16 of x (exact: |x| < 1, multiple of 1/64)
      const s = x < 0 ? 0x8000 : 0;
      const a = Math.abs(x);
      let h = 0;
      if (a !== 0) {
        const e = Math.floor(Math.log2(a));
        const m = a / 2 ** e - 1;
        h = ((e + 15) << 10) | Math.round(m * 1024);
      }
      v.setUint16(i * 2, s | h, true);
    }
  }
  return out;
}

describe('narrow journalled gradients', () => {
  it('float64, 10 chunks, two tensors: F16, BF16, F32, mixed, reversed file order; twin with reloads = twin without', { timeout: 300_000 }, async () => {
    const A = 32768 * 6 + 5;
    const B = 32768 * 3 + 9;
    const make = () => createOptimizer({ shapes: { a: [A], b: [B] }, init: 'zeros', dtype: 'float64', hyperparams: { lr: 0.05, amsgrad: true } });
    const steady = await make();
    const crashy = await make();
    const p = new Float64Array(A + B).map((_, i) => Math.sin(i));
    for (const o of [steady, crashy]) expect((await fetchOpt(o, 'PUT', '/params', new Uint8Array(p.buffer), { 'content-type': RAW })).status).toBe(200);
    const kinds: Array<[Dt, Dt]> = [['F16', 'F16'], ['BF16', 'BF16'], ['F32', 'F32'], ['F16', 'BF16'], ['F64', 'F64'], ['BF16', 'F32'], ['F16', 'F16'], ['BF16', 'BF16'], ['F32', 'F32'], ['F16', 'F16'], ['BF16', 'BF16']];
    for (let k = 0; k < kinds.length; k++) {
      const [da, db] = kinds[k]!;
      const tensors = [
        { name: 'b', dtype: db, shape: [B], data: halfExact(B, k + 100, db) },
        { name: 'a', dtype: da, shape: [A], data: halfExact(A, k, da) },
      ];
      const file = writeSafetensors(k % 2 ? tensors : tensors.reverse());
      for (const o of [steady, crashy]) {
        const r = await parse(await fetchOpt(o, 'POST', '/step?return=none', file, { 'content-type': ST, accept: 'application/json' }));
        expect(r.status, JSON.stringify(r.body)).toBe(200);
      }
      await evictDurableObject(stubOf(crashy.id));
      same(await state(steady), await state(crashy), `step ${k} (${da}, ${db})`);
    }
  });

  it('restores that change size and dtype with journal entries pending, then steps and reloads', { timeout: 300_000 }, async () => {
    const N = 32768 * 9 + 1;
    const opt = await createOptimizer({ shapes: { w: [N] }, init: 'zeros', dtype: 'float64', hyperparams: { lr: 0.05 } });
    expect((await fetchOpt(opt, 'PUT', '/params', new Uint8Array(new Float64Array(N).fill(0.25).buffer), { 'content-type': RAW })).status).toBe(200);
    for (let k = 0; k < 3; k++) expect((await fetchOpt(opt, 'POST', '/step?return=none', halfExact(N, k, 'F64'), { 'content-type': RAW })).status).toBe(200);
    // A small float32 checkpoint from another optimizer (other names).
    const small = await createOptimizer({ params: { x: [1, 2, 3] }, hyperparams: { lr: 0.1 } });
    await fetchOpt(small, 'POST', '/step', JSON.stringify({ grads: { x: [1, 1, 1] } }), { 'content-type': 'application/json' }).then((r) => r.arrayBuffer());
    const smallCk = await state(small);
    const put = await parse(await fetchOpt(opt, 'PUT', '/state', smallCk, { 'content-type': ST }));
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect(put.body.dtype).toBe('float32');
    await evictDurableObject(stubOf(opt.id));
    same(smallCk, await state(opt), 'after restore to small float32');
    // And back to a large float64 one (float32 checkpoint of the large shape).
    const big = await createOptimizer({ shapes: { w: [65536 * 9 + 7] }, init: 'zeros', dtype: 'float32' });
    expect((await fetchOpt(big, 'PUT', '/params', new Uint8Array(new Float32Array(65536 * 9 + 7).fill(1).buffer), { 'content-type': RAW })).status).toBe(200);
    for (let k = 0; k < 3; k++) expect((await fetchOpt(big, 'POST', '/step?return=none', halfExact(65536 * 9 + 7, k, 'BF16'), { 'content-type': `${RAW}; dtype=bfloat16` })).status).toBe(200);
    const bigCk = await state(big);
    expect((await fetchOpt(opt, 'PUT', '/state', bigCk, { 'content-type': ST })).status).toBe(200);
    for (let k = 0; k < 4; k++) {
      for (const o of [opt, big]) expect((await fetchOpt(o, 'POST', '/step?return=none', halfExact(65536 * 9 + 7, k + 9, 'BF16'), { 'content-type': `${RAW}; dtype=bfloat16` })).status).toBe(200);
      await evictDurableObject(stubOf(opt.id));
      same(await state(big), await state(opt), `restored twin, step ${k}`);
    }
  });
});
