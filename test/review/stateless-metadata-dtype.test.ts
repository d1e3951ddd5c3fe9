// Review probe: the stateless safetensors step documents `dtype` in `__metadata__`; float32 tensors
// with __metadata__.dtype = "float64" should step in float64 (as ?dtype=float64 does).

import { exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from '../helpers/http.ts';
import { encodeValues, writeSafetensors } from '../helpers/safetensors.ts';

const ST = 'application/vnd.safetensors';
const file = (metadata?: Record<string, string>) =>
  writeSafetensors(
    [
      { name: 'params', dtype: 'F32', shape: [2], data: encodeValues([1, 2], 'F32') },
      { name: 'grads', dtype: 'F32', shape: [2], data: encodeValues([0.5, 0.25], 'F32') },
    ],
    metadata,
  );

describe('stateless step dtype in __metadata__', () => {
  it('?dtype=float64 widens float32 tensors', async () => {
    const r = await exports.default.fetch(new Request(`${BASE}/v1/adam/step?dtype=float64`, { method: 'POST', body: file(), headers: { 'content-type': ST, accept: 'application/json' } }));
    expect(r.status).toBe(200);
  });
  it('__metadata__.dtype = float64 does the same', async () => {
    const r = await exports.default.fetch(new Request(`${BASE}/v1/adam/step`, { method: 'POST', body: file({ dtype: 'float64' }), headers: { 'content-type': ST, accept: 'application/json' } }));
    const text = await r.text();
    expect(r.status, text).toBe(200);
  });
});
