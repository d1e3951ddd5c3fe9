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

describe('a dimension of 0 counts as 1 toward the element limits', () => {
  it('stateless safetensors step: [2^53 - 1, 0] and [1e8, 0] are a 413 (a 140-byte body once answered 9 MB of JSON for [1e6, 0])', async () => {
    for (const shape of [[Number.MAX_SAFE_INTEGER, 0], [100_000_000, 0], [0, 100_000_000]]) {
      const r = await send('POST', '/v1/adam/step', writeSafetensors(empty(shape)), { 'content-type': ST, accept: 'application/json' });
      expectProblem(r, 413, 'safetensors.params');
    }
  });

  it('stateless safetensors step: [1000, 0] is fine, and its JSON answer is the 1,000 empty arrays torch would print', async () => {
    const r = await send('POST', '/v1/adam/step', writeSafetensors(empty([1000, 0])), { 'content-type': ST, accept: 'application/json' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.params).toEqual({ w: new Array(1000).fill([]) });
  });

  it('create by shapes: {"w": [1e15, 0]} is a 413 like 1e15 elements; [limit, 0] is accepted, [limit + 1, 0] is not', async () => {
    const most = 4_194_304; // float32 at MAX_HOSTED_BYTES
    const big = await parse(await call('POST', '/v1/optimizers', { shapes: { w: [1e15, 0] }, init: 'zeros' }));
    expectProblem(big, 413);
    const over = await parse(await call('POST', '/v1/optimizers', { shapes: { w: [3, 0, most] }, init: 'zeros' }));
    expectProblem(over, 413);
    const ok = await createOptimizer({ shapes: { w: [2, 0, 3], b: [2] }, init: 'zeros' });
    const params = await opCall('GET', ok, '/params');
    expect(params.body.params).toEqual({ w: [[], []], b: [0, 0] });
  });

  it('a safetensors create or checkpoint of [1e7, 0] is a 413 and changes nothing', async () => {
    const file = writeSafetensors([{ name: 'w', dtype: 'F32', shape: [10_000_000, 0], data: new Uint8Array(0) }]);
    expectProblem(await send('POST', '/v1/optimizers', file, { 'content-type': ST }), 413);
    const opt = await createOptimizer({ params: { w: [1, 2] } });
    const ck = writeSafetensors(
      ['params/w', 'exp_avg/w', 'exp_avg_sq/w'].map((name) => ({ name, dtype: 'F32' as const, shape: [10_000_000, 0], data: new Uint8Array(0) })),
      { step: '0', hyperparams: '{}', schedule: 'null' },
    );
    expectProblem(await send('PUT', `/v1/optimizers/${opt.id}/state`, ck, authed(opt.token, { 'content-type': ST })), 413);
    expect((await opCall('GET', opt, '/params')).body.params).toEqual({ w: [1, 2] });
  });
});

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

describe('checkpoint headers fit 16 MiB', () => {
  it('3,000 tensors with 1,000-character names (a 22 MB checkpoint header) are a 422 at creation, JSON or safetensors', async () => {
    const names = Array.from({ length: 3_000 }, (_, i) => String(i).padStart(5, '0') + 'x'.repeat(995));
    const shapes = Object.fromEntries(names.map((n) => [n, [1]]));
    const byShapes = await parse(await call('POST', '/v1/optimizers', { shapes, init: 'zeros' }));
    expectProblem(byShapes, 422, 'params');
    expect(byShapes.body.errors[0].message).toMatch(/checkpoint/);
    const file = writeSafetensors(names.map((name) => ({ name, dtype: 'F32' as const, shape: [1], data: encodeValues([0], 'F32') })));
    expectProblem(await send('POST', '/v1/optimizers', file, { 'content-type': ST }), 422, 'params');
  });

  it('a checkpoint whose tensors would not fit is refused on restore and changes nothing', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2] } });
    // Only params/… tensors (4.4 MB of header): the checkpoint GET would write them five times over.
    const names = Array.from({ length: 4_000 }, (_, i) => String(i).padStart(5, '0') + 'y'.repeat(995));
    const ck = writeSafetensors(names.map((n) => ({ name: `params/${n}`, dtype: 'F32' as const, shape: [1], data: encodeValues([0], 'F32') })), {
      step: '0',
      hyperparams: '{}',
      schedule: 'null',
    });
    const r = await send('PUT', `/v1/optimizers/${opt.id}/state`, ck, authed(opt.token, { 'content-type': ST }));
    expectProblem(r, 422, 'safetensors.params');
    expect((await opCall('GET', opt, '')).body.shapes).toEqual({ w: [2] });
  });

  it('2,000 tensors with 1,000-character names (a 12 MB header): GET state as safetensors → PUT back round-trips', async () => {
    const shapes = Object.fromEntries(Array.from({ length: 2_000 }, (_, i) => [String(i).padStart(5, '0') + 'z'.repeat(995), [1]]));
    const opt = await createOptimizer({ shapes, init: 'zeros' });
    const up = await send('PUT', `/v1/optimizers/${opt.id}/params`, new Uint8Array(new Float32Array(2_000).fill(0.5).buffer), authed(opt.token, { 'content-type': 'application/octet-stream' }));
    expect(up.status).toBe(200);
    const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { headers: authed(opt.token, { accept: ST }) }));
    expect(res.status).toBe(200);
    const ck = new Uint8Array(await res.arrayBuffer());
    expect(readSafetensors(ck).tensors.size).toBe(8_000);
    const back = await send('PUT', `/v1/optimizers/${opt.id}/state`, ck, authed(opt.token, { 'content-type': ST }));
    expect(back.status, JSON.stringify(back.body).slice(0, 300)).toBe(200);
  });
});

describe('names that collide once dotted ("a.b" and {"a": {"b"}})', () => {
  it('JSON uploads address each tensor by its place in the tree (they were refused: "address them with JSON")', async () => {
    const opt = await createOptimizer({ params: { 'a.b': [1], a: { b: [2] } } });
    const up = await opCall('PUT', opt, '/params', { params: { 'a.b': [5], a: { b: [6] } } });
    expect(up.status, JSON.stringify(up.body)).toBe(200);
    expect((await opCall('GET', opt, '/params')).body.params).toEqual({ 'a.b': [5], a: { b: [6] } });
    const one = await opCall('PUT', opt, '/params', { params: { a: { b: [7] } } });
    expect(one.status).toBe(200);
    expect((await opCall('GET', opt, '/params')).body.params).toEqual({ 'a.b': [5], a: { b: [7] } });
    expectProblem(await opCall('PUT', opt, '/params', { params: { a: { c: [7] } } }), 422, 'params.a.c');
  });

  it('without a collision, a dotted JSON name still reaches a nested tensor', async () => {
    const opt = await createOptimizer({ params: { fc: { weight: [1, 2] } } });
    expect((await opCall('PUT', opt, '/params', { params: { 'fc.weight': [3, 4] } })).status).toBe(200);
    expect((await opCall('GET', opt, '/params')).body.params).toEqual({ fc: { weight: [3, 4] } });
  });
});
