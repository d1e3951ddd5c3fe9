// Review probe: journalled storage under crashes at every point of a mixed sequence (steps in
// float32/float64, bfloat16/float16/float32-narrow gradients, PATCH lr and amsgrad, raw uploads
// behind the journal, a rejected non-finite step), compared bit for bit with the pure kernel.

import { abortAllDurableObjects, evictDurableObject } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { ADAM_DEFAULTS, adamStep, initAdamState, type AdamHyperparams, type AdamState, type Dtype, type FloatArray } from '../../src/optim/adam.ts';
import { BASE } from '../helpers/http.ts';
import { authed, createOptimizer, parse, type Created } from '../helpers/optimizers.ts';
import { readSafetensors } from '../helpers/safetensors.ts';

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));
const RAW = 'application/octet-stream';
const ST = 'application/vnd.safetensors';

async function send(opt: Created, method: string, path: string, body: Uint8Array | string | undefined, headers: Record<string, string>) {
  const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}${path}`, { method, body, headers: authed(opt.token, headers) }));
  return parse(res);
}

/** Round to bfloat16 (truncate low half) so the values are exact in BF16. */
function bf16Bytes(values: Float32Array): { bytes: Uint8Array; widened: Float32Array } {
  const words = new Uint32Array(values.buffer.slice(0));
  const halves = new Uint16Array(values.length);
  for (let i = 0; i < words.length; i++) halves[i] = words[i]! >>> 16;
  const w = new Uint32Array(values.length);
  for (let i = 0; i < w.length; i++) w[i] = halves[i]! << 16;
  return { bytes: new Uint8Array(halves.buffer), widened: new Float32Array(w.buffer) };
}

async function stateBytes(opt: Created) {
  const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { headers: authed(opt.token, { accept: ST }) }));
  expect(res.status).toBe(200);
  const file = readSafetensors(new Uint8Array(await res.arrayBuffer()));
  return file;
}

const bytesOf = (a: FloatArray) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function expectSame(file: ReturnType<typeof readSafetensors>, ref: { params: FloatArray; state: AdamState }, what: string) {
  const eq = (name: string, a: FloatArray) => {
    const got = file.tensors.get(name)!.data;
    const want = bytesOf(a);
    let first = -1;
    if (got.length !== want.length) first = -2;
    else for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) { first = i; break; }
    expect(first, `${what}: ${name} first differing byte`).toBe(-1);
  };
  eq('params/w', ref.params);
  eq('exp_avg/w', ref.state.m);
  eq('exp_avg_sq/w', ref.state.v);
  if (ref.state.vMax) eq('max_exp_avg_sq/w', ref.state.vMax);
  else expect(file.tensors.has('max_exp_avg_sq/w'), what).toBe(false);
  expect(file.metadata!.step, what).toBe(String(ref.state.step));
}

for (const dtype of ['float32', 'float64'] as Dtype[]) {
  const per = dtype === 'float32' ? 65536 : 32768;
  const N = per * 9 + 3; // 10 chunks: the journal is on (more than 8)
  describe(`journal ${dtype}, ${N} elements`, () => {
    it('crash after every operation, state = pure kernel bit for bit', { timeout: 300_000 }, async () => {
      const Arr = dtype === 'float32' ? Float32Array : Float64Array;
      const opt = await createOptimizer({ shapes: { w: [N] }, init: 'zeros', dtype, hyperparams: { lr: 0.01 } });
      let hp: AdamHyperparams = { ...ADAM_DEFAULTS, lr: 0.01 };
      const ref: { params: FloatArray; state: AdamState } = { params: new Arr(N), state: initAdamState(dtype, N, false) };
      for (let i = 0; i < N; i++) ref.params[i] = Math.sin(i) * 2;
      const up = await send(opt, 'PUT', '/params', bytesOf(ref.params), { 'content-type': RAW });
      expect(up.status, JSON.stringify(up.body)).toBe(200);

      const crash = async (k: number) => {
        if (k % 3 === 0) await abortAllDurableObjects();
        else if (k % 3 === 1) await evictDurableObject(stubOf(opt.id));
        expectSame(await stateBytes(opt), ref, `after op ${k}`);
      };

      for (let k = 0; k < 24; k++) {
        const g32 = new Float32Array(N);
        for (let i = 0; i < N; i++) g32[i] = Math.cos(i * 0.37 + k) * (1 + (k % 5));
        let body: Uint8Array;
        let ct = RAW;
        let grads: FloatArray;
        if (k % 4 === 1) {
          const b = bf16Bytes(g32);
          body = b.bytes;
          ct = `${RAW}; dtype=bfloat16`;
          grads = dtype === 'float32' ? b.widened : Float64Array.from(b.widened);
        } else if (k % 4 === 2 && dtype === 'float64') {
          body = bytesOf(g32);
          ct = `${RAW}; dtype=float32`;
          grads = Float64Array.from(g32);
        } else {
          grads = dtype === 'float32' ? g32 : Float64Array.from(g32, (x, i) => x + i * 1e-9);
          body = bytesOf(grads);
        }
        const r = await send(opt, 'POST', '/step?return=none', body, { 'content-type': ct });
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        const out = adamStep({ dtype, hyperparams: hp, params: ref.params, grads, state: ref.state });
        ref.params = out.params;
        ref.state = out.state;
        await crash(k);

        if (k === 5) {
          const p = await send(opt, 'PATCH', '', JSON.stringify({ hyperparams: { lr: 0.003, weight_decay: 0.01 } }), { 'content-type': 'application/json' });
          expect(p.status).toBe(200);
          hp = { ...hp, lr: 0.003, weight_decay: 0.01 };
          await crash(100 + k);
        }
        if (k === 9) {
          const p = await send(opt, 'PATCH', '', JSON.stringify({ hyperparams: { amsgrad: true } }), { 'content-type': 'application/json' });
          expect(p.status).toBe(200);
          hp = { ...hp, amsgrad: true };
          ref.state = { ...ref.state, vMax: new Arr(N) };
          await crash(100 + k);
        }
        if (k === 12 || k === 18) {
          // Upload a run that straddles a chunk boundary, behind the journal.
          const off = per * 3 - 7;
          const vals = new Arr(per + 20).map((_, i) => -0.5 + i * 1e-6);
          const u = await send(opt, 'PUT', `/params?offset=${off}`, bytesOf(vals), { 'content-type': RAW });
          expect(u.status, JSON.stringify(u.body)).toBe(200);
          ref.params.set(vals, off);
          await crash(100 + k);
        }
        if (k === 15) {
          // A step that overflows is refused and changes nothing (reload replays the journal).
          const huge = new Arr(N).fill(dtype === 'float32' ? 3e38 : 1e308);
          const bad = await send(opt, 'POST', '/step?return=none', bytesOf(huge), { 'content-type': RAW });
          expect(bad.status, JSON.stringify(bad.body)).toBe(422);
          expectSame(await stateBytes(opt), ref, 'after refused step');
          await crash(100 + k);
        }
        if (k === 20) {
          const p = await send(opt, 'PATCH', '', JSON.stringify({ hyperparams: { amsgrad: false } }), { 'content-type': 'application/json' });
          expect(p.status).toBe(200);
          hp = { ...hp, amsgrad: false };
          ref.state = { ...ref.state, vMax: null };
          await crash(100 + k);
        }
      }
    });
  });
}
