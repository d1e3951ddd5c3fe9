// Review probe: the hosted memory budget at exactly its boundaries.

import { exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from '../helpers/http.ts';
import { authed, opCall, parse } from '../helpers/optimizers.ts';
import { writeSafetensors } from '../helpers/safetensors.ts';

const ST = 'application/vnd.safetensors';
const RAW = 'application/octet-stream';

async function send(path: string, method: string, body: BodyInit | undefined, headers: Record<string, string>) {
  return parse(await exports.default.fetch(new Request(`${BASE}${path}`, { method, body, headers })));
}

const MOST = { float32: 4_194_304, float64: 2_097_152 } as const;

describe('hosted memory budget', () => {
  for (const dtype of ['float32', 'float64'] as const) {
    it(`${dtype}: ${MOST[dtype]} by shapes → 201, +1 → 413; amsgrad at the limit; checkpoint over budget → 413`, { timeout: 300_000 }, async () => {
      const over = await send('/v1/optimizers', 'POST', JSON.stringify({ shapes: { w: [MOST[dtype] + 1] }, init: 'zeros', dtype }), { 'content-type': 'application/json' });
      expect(over.status, JSON.stringify(over.body)).toBe(413);
      const c = await send('/v1/optimizers', 'POST', JSON.stringify({ shapes: { w: [MOST[dtype]] }, init: 'zeros', dtype }), { 'content-type': 'application/json' });
      expect(c.status, JSON.stringify(c.body)).toBe(201);
      const opt = { id: c.body.id, token: c.body.token };
      const item = dtype === 'float32' ? 4 : 8;
      const up = await send(`/v1/optimizers/${opt.id}/params`, 'PUT', new Uint8Array(MOST[dtype] * item), authed(opt.token, { 'content-type': RAW }));
      expect(up.status, JSON.stringify(up.body)).toBe(200);
      const p = await opCall('PATCH', opt, '', { hyperparams: { amsgrad: true } });
      expect(p.status).toBe(200);
      const g = new Uint8Array(MOST[dtype] * item);
      const s = await send(`/v1/optimizers/${opt.id}/step?return=none`, 'POST', g, authed(opt.token, { 'content-type': RAW }));
      expect(s.status, JSON.stringify(s.body)).toBe(200);
      // A checkpoint one element over the budget is refused and changes nothing.
      const n = MOST[dtype] + 1;
      const dt = dtype === 'float32' ? 'F32' : 'F64';
      const zeros = new Uint8Array(n * item);
      const file = writeSafetensors(
        ['params/w', 'exp_avg/w', 'exp_avg_sq/w'].map((name) => ({ name, dtype: dt, shape: [n], data: zeros })),
        { step: '1', hyperparams: '{}', schedule: 'null' },
      );
      const put = await send(`/v1/optimizers/${opt.id}/state`, 'PUT', file, authed(opt.token, { 'content-type': ST }));
      expect(put.status, JSON.stringify(put.body)).toBe(413);
      const info = await opCall('GET', opt, '');
      expect(info.body.step).toBe(1);
      expect(info.body.hyperparams.amsgrad).toBe(true);
      expect((await opCall('DELETE', opt, '')).status).toBe(204);
    });
  }

  it('stateless safetensors step: where is the size bound', async () => {
    // 5 arrays x 4 B x size <= 2 x MAX_BODY_BYTES: the bound is not MAX_ELEMENTS (JSON only).
    const n = 300_000;
    const data = new Uint8Array(n * 4);
    const file = writeSafetensors([{ name: 'params', dtype: 'F32', shape: [n], data }, { name: 'grads', dtype: 'F32', shape: [n], data }]);
    const r = await exports.default.fetch(new Request(`${BASE}/v1/adam/step`, { method: 'POST', body: file, headers: { 'content-type': ST, accept: ST } }));
    await r.arrayBuffer();
    expect(r.status).toBe(200);
  });
});
