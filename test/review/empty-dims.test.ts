// Review probe: tensors with zero elements but a huge leading dimension ([N, 0]) are accepted
// anywhere a shape is read (safetensors headers, create by shapes), and every JSON answer then
// writes N empty arrays: a few bytes of request make the Worker build an unbounded answer.

import { exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from '../helpers/http.ts';
import { authed } from '../helpers/optimizers.ts';
import { writeSafetensors } from '../helpers/safetensors.ts';

const ST = 'application/vnd.safetensors';
const empty = (shape: number[]) => [
  { name: 'params/w', dtype: 'F32' as const, shape, data: new Uint8Array(0) },
  { name: 'grads/w', dtype: 'F32' as const, shape, data: new Uint8Array(0) },
];

describe('zero-element tensors with a huge leading dimension', () => {
  it('stateless step: a 140-byte safetensors body of shape [1e6, 0] answers megabytes of JSON', async () => {
    const file = writeSafetensors(empty([1_000_000, 0]));
    const res = await exports.default.fetch(new Request(`${BASE}/v1/adam/step`, { method: 'POST', body: file, headers: { 'content-type': ST, accept: 'application/json' } }));
    const text = await res.text();
    expect(file.length).toBeLessThan(200);
    // The answer grows with the claimed dimension, not with the data (0 elements):
    expect({ status: res.status, bytes: text.length }).toEqual({ status: 200, bytes: expect.any(Number) });
    expect(text.length, 'JSON answer bytes for 0 elements').toBeLessThan(10_000);
  });

  it('the same shapes with dimension 2^53-1 are accepted (only a safetensors answer keeps it small)', async () => {
    const file = writeSafetensors(empty([Number.MAX_SAFE_INTEGER, 0]));
    const res = await exports.default.fetch(new Request(`${BASE}/v1/adam/step`, { method: 'POST', body: file, headers: { 'content-type': ST, accept: ST } }));
    await res.arrayBuffer();
    expect(res.status, 'a shape no JSON answer can be written for should be refused up front').toBe(422);
  });

  it('create by shapes accepts {"w": [1e15, 0]}; GET params as JSON cannot be answered', async () => {
    const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers`, { method: 'POST', body: JSON.stringify({ shapes: { w: [1e15, 0] }, init: 'zeros' }), headers: { 'content-type': 'application/json' } }));
    const body = (await res.json()) as { id: string; token: string };
    expect(res.status, 'create by shapes of a 1e15 x 0 tensor').toBe(422);
    if (res.status === 201) {
      // Do not actually ask for JSON (it would build 1e15 arrays); a 1e6 leading dim shows the growth.
      void body;
    }
  });

  it('hosted: create [1e6, 0] by shapes, GET params as JSON: megabytes for 0 elements', async () => {
    const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers`, { method: 'POST', body: JSON.stringify({ shapes: { w: [1_000_000, 0], b: [2] }, init: 'zeros' }), headers: { 'content-type': 'application/json' } }));
    const opt = (await res.json()) as { id: string; token: string };
    expect(res.status).toBe(201);
    const got = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/params`, { headers: authed(opt.token) }));
    const text = await got.text();
    expect(text.length, 'JSON answer bytes for 2 elements').toBeLessThan(10_000);
  });
});
