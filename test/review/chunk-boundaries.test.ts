// Review probe: sizes around the checkpoint chunk boundaries and the journal threshold (8 chunks),
// 10 steps each with an eviction after every step, compared with the pure kernel bit for bit.

import { evictDurableObject } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { ADAM_DEFAULTS, adamStep, initAdamState, type AdamState, type Dtype, type FloatArray } from '../../src/optim/adam.ts';
import { BASE } from '../helpers/http.ts';
import { authed, createOptimizer } from '../helpers/optimizers.ts';
import { readSafetensors } from '../helpers/safetensors.ts';

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));
const bytesOf = (a: FloatArray) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

const cases: Array<[Dtype, number]> = [
  ['float32', 65536 * 8],
  ['float32', 65536 * 8 + 1],
  ['float32', 65536 * 9 - 1],
  ['float32', 65536 * 16],
  ['float32', 65536 * 17 - 1],
  ['float64', 32768 * 8 - 1],
  ['float64', 32768 * 9],
  ['float64', 32768 * 9 + 1],
  ['float64', 32768 * 25 + 3],
];

describe('chunk boundaries', () => {
  for (const [dtype, n] of cases) {
    it(`${dtype} × ${n}`, { timeout: 300_000 }, async () => {
      const Arr = dtype === 'float32' ? Float32Array : Float64Array;
      const hp = { ...ADAM_DEFAULTS, lr: 0.02, weight_decay: 0.1, decoupled_weight_decay: true, amsgrad: true };
      const opt = await createOptimizer({ shapes: { w: [n] }, init: 'zeros', dtype, hyperparams: hp });
      let params: FloatArray = new Arr(n).map((_, i) => Math.sin(i * 0.01));
      let state: AdamState = initAdamState(dtype, n, true);
      const send = (method: string, path: string, body?: Uint8Array, headers: Record<string, string> = {}) =>
        exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}${path}`, { method, body, headers: authed(opt.token, { 'content-type': 'application/octet-stream', ...headers }) }));
      expect((await send('PUT', '/params', bytesOf(params))).status).toBe(200);
      for (let k = 0; k < 10; k++) {
        const g = new Arr(n).map((_, i) => Math.cos(i * 0.003 + k) * (k + 1));
        const r = await send('POST', '/step?return=none', bytesOf(g));
        await r.arrayBuffer();
        expect(r.status).toBe(200);
        const out = adamStep({ dtype, hyperparams: hp, params, grads: g, state });
        params = out.params;
        state = out.state;
        await evictDurableObject(stubOf(opt.id));
        const ck = await send('GET', '/state', undefined, { accept: 'application/vnd.safetensors' });
        const file = readSafetensors(new Uint8Array(await ck.arrayBuffer()));
        for (const [name, a] of [['params/w', params], ['exp_avg/w', state.m], ['exp_avg_sq/w', state.v], ['max_exp_avg_sq/w', state.vMax!]] as const) {
          expect(Buffer.compare(Buffer.from(file.tensors.get(name)!.data), Buffer.from(bytesOf(a))), `step ${k + 1}: ${name}`).toBe(0);
        }
      }
      await send('DELETE', '');
    });
  }
});
