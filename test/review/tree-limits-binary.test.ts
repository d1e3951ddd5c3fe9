// Review probe: the documented tensor-tree limits (10,000 tensors, names of 1,000 characters) hold
// for JSON bodies; do they hold for safetensors creates and checkpoints, which would otherwise make
// optimizers that JSON can no longer address or restore?

import { exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from '../helpers/http.ts';
import { authed, parse } from '../helpers/optimizers.ts';
import { encodeValues, writeSafetensors } from '../helpers/safetensors.ts';

const ST = 'application/vnd.safetensors';

async function send(method: string, path: string, body: BodyInit | undefined, headers: Record<string, string>) {
  return parse(await exports.default.fetch(new Request(`${BASE}${path}`, { method, body, headers })));
}

describe('tree limits over safetensors', () => {
  it('create from a file of 10,001 tensors is refused like JSON (at most 10,000 tensors)', async () => {
    const one = encodeValues([1], 'F32');
    const file = writeSafetensors(Array.from({ length: 10_001 }, (_, i) => ({ name: `t${i}`, dtype: 'F32' as const, shape: [1], data: one })));
    const r = await send('POST', '/v1/optimizers', file, { 'content-type': ST });
    if (r.status === 201) {
      // Show the consequence: the JSON snapshot of this optimizer cannot be PUT back.
      const opt = { id: r.body.id, token: r.body.token };
      const snap = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { headers: authed(opt.token) }));
      const text = await snap.text();
      const put = await send('PUT', `/v1/optimizers/${opt.id}/state`, text, authed(opt.token, { 'content-type': 'application/json' }));
      console.log('JSON GET state → PUT state of a 10,001-tensor optimizer:', put.status, put.body?.detail);
    }
    expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(422);
  });

  it('create from a file with a 1,001-character name is refused like JSON (names of at most 1,000)', async () => {
    const file = writeSafetensors([{ name: 'n'.repeat(1001), dtype: 'F32', shape: [1], data: encodeValues([1], 'F32') }]);
    const r = await send('POST', '/v1/optimizers', file, { 'content-type': ST });
    expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(422);
  });
});
