// The limits of tensor trees hold whatever format brings the tree in (JSON, shapes, a safetensors
// create, a checkpoint restore, a stateless safetensors step):
// - a dimension of 0 counts as 1 toward the element limits: a tensor of shape [N, 0] has no
//   elements, but its JSON form is N empty arrays, so a few bytes of shape must not buy an answer
//   of any size;
// - at most 10,000 tensors, names of at most 1,000 characters;
// - a hosted optimizer's names and shapes must leave its safetensors checkpoint header within
//   16 MiB, so GET state → PUT state round-trips (checked before anything is stored).

import { exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE, call } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, parse } from './helpers/optimizers.ts';
import { encodeValues, readSafetensors, writeSafetensors } from './helpers/safetensors.ts';

const ST = 'application/vnd.safetensors';
const send = async (method: string, path: string, body: BodyInit | undefined, headers: Record<string, string>) =>
  parse(await exports.default.fetch(new Request(`${BASE}${path}`, { method, body, headers })));
const empty = (shape: number[]) => [
  { name: 'params/w', dtype: 'F32' as const, shape, data: new Uint8Array(0) },
  { name: 'grads/w', dtype: 'F32' as const, shape, data: new Uint8Array(0) },
];

describe('tree limits over safetensors, as for JSON', () => {
  const one = encodeValues([1], 'F32');
  it('create from a file of 10,001 tensors is a 422 (at most 10,000 tensors)', async () => {
    const file = writeSafetensors(Array.from({ length: 10_001 }, (_, i) => ({ name: `t${i}`, dtype: 'F32' as const, shape: [1], data: one })));
    expectProblem(await send('POST', '/v1/optimizers', file, { 'content-type': ST }), 422, 'safetensors');
  });

  it('create from a file with a 1,001-character name is a 422; 1,000 characters are fine', async () => {
    const bad = await send('POST', '/v1/optimizers', writeSafetensors([{ name: 'n'.repeat(1001), dtype: 'F32', shape: [1], data: one }]), { 'content-type': ST });
    expectProblem(bad, 422);
    expect(bad.body.errors[0].message).toMatch(/1001 characters long; at most 1000/);
    const good = await send('POST', '/v1/optimizers', writeSafetensors([{ name: 'n'.repeat(1000), dtype: 'F32', shape: [1], data: one }]), { 'content-type': ST });
    expect(good.status).toBe(201);
  });

  it('a checkpoint restore with a 1,001-character name is a 422 and changes nothing', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2] } });
    const name = 'n'.repeat(1001);
    const ck = writeSafetensors(
      ['params', 'exp_avg', 'exp_avg_sq'].map((slot) => ({ name: `${slot}/${name}`, dtype: 'F32' as const, shape: [1], data: one })),
      { step: '0', hyperparams: '{}', schedule: 'null' },
    );
    expectProblem(await send('PUT', `/v1/optimizers/${opt.id}/state`, ck, authed(opt.token, { 'content-type': ST })), 422);
    expect((await opCall('GET', opt, '')).body.shapes).toEqual({ w: [2] });
  });
});
