// Steps in parts on sharded optimizers (`?part_offset=`, raw bodies, one Idempotency-Key): a gradient
// larger than one request may carry arrives as consecutive element ranges, each stored by the shards,
// the norm folded on from part to part; the part reaching the last element applies the step. Checked
// against a twin optimizer stepped with the whole gradient in one request: params and grad_norm bit for
// bit, parts cut anywhere (inside tensors, across shards), float32 and bfloat16, objects evicted between
// parts; retries, out-of-order parts, bad parts and other calls in between change nothing wrongly.

import { evictDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, it } from 'vitest';
import { SHARD_FAULTS } from '../src/durable-objects/shards.ts';
import { ProblemError } from '../src/lib/problem.ts';
import { callBytes } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, type Created } from './helpers/optimizers.ts';
import { encodeValues } from './helpers/safetensors.ts';

afterEach(() => {
  SHARD_FAULTS.afterDecision = undefined;
});

// 3 + 24 + 6 + 7 = 40 elements: w (4×6) and v (7) are cut between shards.
const SHAPES = { a: [3], w: [4, 6], b: [6], v: [7] };
const SIZE = 40;
const PARAMS = { a: [0.5, -1, 2], w: Array.from({ length: 4 }, (_, r) => Array.from({ length: 6 }, (_, c) => Math.sin(r * 6 + c))), b: [1, -2, 0.25, 3, -0.5, 0.125], v: [0.1, 0.2, 0.3, -0.4, 0.5, -0.6, 0.7] };
const grad = (k: number) => Array.from({ length: SIZE }, (_, i) => Math.fround(Math.cos(i * 0.7 + k) * (1 + (i % 5)) * (k % 2 === 0 ? 3 : 0.05)));
const bf16 = (xs: number[]) => xs.map((x) => new Float32Array(new Uint32Array([new Uint32Array(new Float32Array([x]).buffer)[0]! & 0xffff0000]).buffer)[0]!);

const send = (opt: Created, bytes: Uint8Array, dtype: 'F32' | 'BF16', query: string, headers: Record<string, string> = {}) =>
  callBytes('POST', `/v1/optimizers/${opt.id}/step${query}`, bytes, authed(opt.token, { 'content-type': `application/octet-stream; dtype=${dtype}`, accept: 'application/json', ...headers }));

/** `values` sent as parts cut at `cuts` (element offsets), under `key`; the last answer. */
async function inParts(opt: Created, values: number[], cuts: number[], key: string, dtype: 'F32' | 'BF16', step: number) {
  const bounds = [0, ...cuts, values.length];
  let last;
  for (let p = 0; p + 1 < bounds.length; p++) {
    const [a, b] = [bounds[p]!, bounds[p + 1]!];
    last = await send(opt, encodeValues(values.slice(a, b), dtype), dtype, `?part_offset=${a}`, { 'idempotency-key': key });
    if (p + 2 < bounds.length) {
      expect(last.status, JSON.stringify(last.body)).toBe(202);
      expect(last.body).toEqual({ part: true, step, offset: a, received: b, missing: values.length - b, replayed: false });
    }
  }
  return last!;
}

const evictAll = async (opt: Created, shards: number) => {
  for (let i = 0; i < shards; i++) await evictDurableObject(env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/${i}`)));
  await evictDurableObject(env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(opt.id)));
};

const twins = async (hyperparams: Record<string, unknown>, shards = 3) => {
  const opt = await createOptimizer({ optimizer: 'adam', params: PARAMS, hyperparams, shards });
  const ref = await createOptimizer({ optimizer: 'adam', params: PARAMS, hyperparams });
  expect(opt.body.shards).toBe(shards);
  return { opt, ref };
};

describe('a step in parts equals the same step sent whole', () => {
  it('Adam with clip_grad_norm over 3 shards: parts cut inside tensors and across shards, float32 and bfloat16, evicted between parts', { timeout: 60_000 }, async () => {
    const { opt, ref } = await twins({ lr: 0.01, weight_decay: 0.1, clip_grad_norm: 0.5 });
    const CUTS = [[5], [1, 9, 27, 33], [8, 16, 24, 32, 39], [20]];
    for (let k = 0; k < CUTS.length; k++) {
      const dtype = k % 2 === 0 ? 'F32' : 'BF16';
      const g = dtype === 'BF16' ? bf16(grad(k)) : grad(k);
      const want = await send(ref, encodeValues(g, dtype), dtype, '');
      expect(want.status).toBe(200);
      if (k === 2) {
        // Evicted between parts: the shards hold what they were sent, the coordinator the folds.
        expect((await send(opt, encodeValues(g.slice(0, 8), dtype), dtype, '?part_offset=0', { 'idempotency-key': `k${k}` })).status).toBe(202);
        await evictAll(opt, 3);
      }
      const got = k === 2 ? await inPartsFrom(opt, g, CUTS[k]!, `k${k}`, dtype, 8) : await inParts(opt, g, CUTS[k]!, `k${k}`, dtype, k);
      expect(got.status, JSON.stringify(got.body)).toBe(200);
      expect(got.body.step).toBe(k + 1);
      expect(got.body.grad_norm, `step ${k} grad_norm`).toBe(want.body.grad_norm);
      expect(got.body.params, `step ${k} params`).toEqual(want.body.params);
    }
    // The last part again after the step: its replay.
    const again = await send(opt, encodeValues(bf16(grad(3)).slice(20), 'BF16'), 'BF16', '?part_offset=20', { 'idempotency-key': 'k3' });
    expect(again.body).toMatchObject({ step: 4, replayed: true });
  });
});

/** The parts from element `from` on (the earlier ones already received). */
async function inPartsFrom(opt: Created, values: number[], cuts: number[], key: string, dtype: 'F32' | 'BF16', from: number) {
  const bounds = [from, ...cuts.filter((c) => c > from), values.length];
  let last;
  for (let p = 0; p + 1 < bounds.length; p++) last = await send(opt, encodeValues(values.slice(bounds[p]!, bounds[p + 1]!), dtype), dtype, `?part_offset=${bounds[p]}`, { 'idempotency-key': key });
  return last!;
}

describe('parts whose norm overflows, and a NaN under nonfinite: skip', () => {
  it('an overflowing norm (Infinity) carried from part to part equals the whole step\'s; a NaN part with skip skips the step as the whole one does', async () => {
    const { opt, ref } = await twins({ lr: 0.01, clip_grad_norm: 1 });
    const huge = grad(0).map((x, i) => (i % 7 === 3 ? 3e19 : x)); // finite float32, their squares overflow
    const want = await send(ref, encodeValues(huge, 'F32'), 'F32', '');
    expect(want.body.grad_norm).toBeNull(); // Infinity, which JSON writes as null
    const got = await inParts(opt, huge, [6, 13, 29], 'inf', 'F32', 0);
    expect(got.body).toMatchObject({ step: 1, grad_norm: want.body.grad_norm });
    expect(got.body.params).toEqual(want.body.params);

    const skip = await twins({ lr: 0.01, nonfinite: 'skip' });
    const nan = grad(1);
    nan[2] = Number.NaN;
    const whole = await send(skip.ref, encodeValues(nan, 'F32'), 'F32', '');
    expect(whole.body).toMatchObject({ skipped: true, step: 0 });
    const parted = await inParts(skip.opt, nan, [10, 20], 'nan', 'F32', 0);
    expect(parted.body).toMatchObject({ skipped: true, step: 0 });
    expect(parted.body.params).toEqual(whole.body.params);
  });

  it('a NaN part let through under skip, PATCHed to nonfinite: "error" before the last part: the whole step\'s 422 (one object\'s, word for word), nothing applied', async () => {
    const { opt, ref } = await twins({ lr: 0.01, nonfinite: 'skip' });
    const nan = grad(3);
    nan[23] = Number.NEGATIVE_INFINITY; // in w, on the second part
    for (const o of [opt, ref]) expect((await opCall('PATCH', o, '', { hyperparams: { lr: 0.01, nonfinite: 'error' } })).status).toBe(200);
    const whole = await send(ref, encodeValues(nan, 'F32'), 'F32', '');
    for (const o of [opt, ref]) expect((await opCall('PATCH', o, '', { hyperparams: { lr: 0.01, nonfinite: 'skip' } })).status).toBe(200);
    expectProblem(whole, 422);
    const key = { 'idempotency-key': 'nan-patched' };
    expect((await send(opt, encodeValues(nan.slice(0, 10), 'F32'), 'F32', '?part_offset=0', key)).status).toBe(202);
    expect((await send(opt, encodeValues(nan.slice(10, 30), 'F32'), 'F32', '?part_offset=10', key)).status).toBe(202);
    expect((await opCall('PATCH', opt, '', { hyperparams: { lr: 0.01, nonfinite: 'error' } })).status).toBe(200);
    const last = await send(opt, encodeValues(nan.slice(30), 'F32'), 'F32', '?part_offset=30', key);
    expectProblem(last, 422);
    expect(last.body.detail).toBe(whole.body.detail);
    expect(last.body.errors).toEqual(whole.body.errors);
    // And the whole step to the sharded optimizer says the same (it named the element's index in its tensor: 20).
    const shardedWhole = await send(opt, encodeValues(nan, 'F32'), 'F32', '');
    expectProblem(shardedWhole, 422);
    expect(shardedWhole.body.detail).toBe(whole.body.detail);
    expect((await opCall('GET', opt, '/params')).body).toEqual((await opCall('GET', ref, '/params')).body);
  });
});

describe('parts: retries, order, bad parts, other calls in between', () => {
  it('the same part again answers the same (replayed); out of order is a 409 naming the next offset; other bytes under the key are a 422', async () => {
    const { opt, ref } = await twins({ lr: 0.01 });
    const g = grad(1);
    const key = { 'idempotency-key': 'p1' };
    expect((await send(opt, encodeValues(g.slice(0, 10), 'F32'), 'F32', '?part_offset=0', key)).body).toMatchObject({ received: 10, replayed: false });
    expect((await send(opt, encodeValues(g.slice(0, 10), 'F32'), 'F32', '?part_offset=0', key)).body).toEqual({ part: true, step: 0, offset: 0, received: 10, missing: 30, replayed: true });
    expectProblem(await send(opt, encodeValues(g.slice(0, 10).map((x) => x + 1), 'F32'), 'F32', '?part_offset=0', key), 422, 'Idempotency-Key');
    const early = await send(opt, encodeValues(g.slice(20), 'F32'), 'F32', '?part_offset=20', key);
    expectProblem(early, 409, 'part_offset');
    expect(early.body.detail).toMatch(/starts at element 10/);
    expectProblem(await send(opt, encodeValues(bf16(g.slice(10, 20)), 'BF16'), 'BF16', '?part_offset=10', key), 422, 'Content-Type');
    expectProblem(await send(opt, encodeValues(g.slice(10), 'F32'), 'F32', '?part_offset=7', { 'idempotency-key': 'other' }), 409, 'part_offset');
    // A client retrying the whole step with its key: the parts received answer again, the rest goes on.
    expect((await send(opt, encodeValues(g.slice(10, 25), 'F32'), 'F32', '?part_offset=10', key)).body).toMatchObject({ received: 25, replayed: false });
    expect((await send(opt, encodeValues(g.slice(0, 10), 'F32'), 'F32', '?part_offset=0', key)).body).toEqual({ part: true, step: 0, offset: 0, received: 25, missing: 15, replayed: true });
    expect((await send(opt, encodeValues(g.slice(10, 25), 'F32'), 'F32', '?part_offset=10', key)).body).toMatchObject({ offset: 10, received: 25, replayed: true });
    expectProblem(await send(opt, encodeValues(g.slice(5, 25), 'F32'), 'F32', '?part_offset=5', key), 409, 'part_offset');
    const last = await send(opt, encodeValues(g.slice(25), 'F32'), 'F32', '?part_offset=25', key);
    expect(last.status, JSON.stringify(last.body)).toBe(200);
    expect(last.body.params).toEqual((await send(ref, encodeValues(g, 'F32'), 'F32', '')).body.params);
  });

  it('after the step is applied, each of its parts sent again answers as the step; other bytes, offsets or lengths under its key are a 422', async () => {
    const { opt, ref } = await twins({ lr: 0.01 });
    const g = grad(2);
    const key = { 'idempotency-key': 'done-1' };
    const applied = await inParts(opt, g, [5, 20], 'done-1', 'F32', 0);
    expect(applied.status, JSON.stringify(applied.body)).toBe(200);
    const want = (await send(ref, encodeValues(g, 'F32'), 'F32', '')).body;
    expect(applied.body.params).toEqual(want.params);
    // Each part again (a client retrying the step whole, or a lost answer): the step's answer, nothing applied twice.
    for (const [a, b] of [[0, 5], [5, 20], [20, 40]] as const) {
      const again = await send(opt, encodeValues(g.slice(a, b), 'F32'), 'F32', `?part_offset=${a}`, key);
      expect(again.status, JSON.stringify(again.body)).toBe(200);
      expect(again.body).toMatchObject({ step: 1, replayed: true, params: want.params });
    }
    // What the step was not, under its key: as the whole step's key answers another gradient (422 naming the key).
    const other = g.map((x) => x * 2);
    expectProblem(await send(opt, encodeValues(other.slice(0, 5), 'F32'), 'F32', '?part_offset=0', key), 422, 'Idempotency-Key');
    expectProblem(await send(opt, encodeValues(other, 'F32'), 'F32', '?part_offset=0', key), 422, 'Idempotency-Key');
    expectProblem(await send(opt, encodeValues(g.slice(7, 20), 'F32'), 'F32', '?part_offset=7', key), 422, 'Idempotency-Key');
    expectProblem(await send(opt, encodeValues(g.slice(5, 21), 'F32'), 'F32', '?part_offset=5', key), 422, 'Idempotency-Key');
    expectProblem(await send(opt, encodeValues(g, 'F32'), 'F32', '', key), 422, 'Idempotency-Key');
    expect((await opCall('GET', opt, '/params')).body).toEqual({ step: 1, params: want.params });
  });

  it('a NaN in a part is a 422 that drops the parts received; so does another step in between; nothing is applied', async () => {
    const { opt } = await twins({ lr: 0.01 });
    const before = (await opCall('GET', opt, '/params')).body;
    const g = grad(2);
    expect((await send(opt, encodeValues(g.slice(0, 12), 'F32'), 'F32', '?part_offset=0', { 'idempotency-key': 'n' })).status).toBe(202);
    const bad = g.slice(12, 30);
    bad[4] = Number.NaN;
    expectProblem(await send(opt, encodeValues(bad, 'F32'), 'F32', '?part_offset=12', { 'idempotency-key': 'n' }), 422);
    expectProblem(await send(opt, encodeValues(g.slice(12), 'F32'), 'F32', '?part_offset=12', { 'idempotency-key': 'n' }), 409, 'part_offset');
    expect((await opCall('GET', opt, '/params')).body).toEqual(before);
    // Parts, then a whole step: the parts count for nothing.
    expect((await send(opt, encodeValues(g.slice(0, 12), 'F32'), 'F32', '?part_offset=0', { 'idempotency-key': 'm' })).status).toBe(202);
    expect((await send(opt, encodeValues(grad(5), 'F32'), 'F32', '')).body.step).toBe(1);
    expectProblem(await send(opt, encodeValues(g.slice(12), 'F32'), 'F32', '?part_offset=12', { 'idempotency-key': 'm' }), 409, 'part_offset');
    expect((await opCall('GET', opt, '')).body.step).toBe(1);
  });

  it('the coordinator fails after deciding the last part, every object is evicted: the next call completes the step', async () => {
    const { opt, ref } = await twins({ lr: 0.01, clip_grad_norm: 1 });
    const g = grad(4);
    expect((await send(opt, encodeValues(g.slice(0, 17), 'F32'), 'F32', '?part_offset=0', { 'idempotency-key': 'f' })).status).toBe(202);
    SHARD_FAULTS.afterDecision = () => {
      throw new ProblemError(409, 'conflict', 'injected: coordinator failed after its decision');
    };
    expectProblem(await send(opt, encodeValues(g.slice(17), 'F32'), 'F32', '?part_offset=17', { 'idempotency-key': 'f' }), 409);
    SHARD_FAULTS.afterDecision = undefined;
    await evictAll(opt, 3);
    const want = (await send(ref, encodeValues(g, 'F32'), 'F32', '')).body;
    expect((await opCall('GET', opt, '/params')).body).toEqual({ step: 1, params: want.params });
    expect((await send(opt, encodeValues(g.slice(17), 'F32'), 'F32', '?part_offset=17', { 'idempotency-key': 'f' })).body).toMatchObject({ step: 1, replayed: true, grad_norm: want.grad_norm });
  });

  it('what cannot be a part: an unsharded optimizer, a JSON body, no Idempotency-Key, an accumulating optimizer, a part past the end', async () => {
    const { opt, ref } = await twins({ lr: 0.01 });
    expectProblem(await send(ref, encodeValues(grad(0).slice(0, 4), 'F32'), 'F32', '?part_offset=0', { 'idempotency-key': 'u' }), 422, 'part_offset');
    expectProblem(await callBytes('POST', `/v1/optimizers/${opt.id}/step?part_offset=0`, { grads: PARAMS }, authed(opt.token, { 'idempotency-key': 'j' })), 422, 'Content-Type');
    expectProblem(await send(opt, encodeValues(grad(0).slice(0, 4), 'F32'), 'F32', '?part_offset=0'), 422, 'Idempotency-Key');
    expectProblem(await send(opt, encodeValues(grad(0), 'F32'), 'F32', '?part_offset=0', { 'idempotency-key': 'x' }).then(async () => send(opt, encodeValues([1], 'F32'), 'F32', '?part_offset=40', { 'idempotency-key': 'y' })), 409, 'part_offset');
    const acc = await createOptimizer({ optimizer: 'sgd', params: PARAMS, hyperparams: { lr: 0.1 }, shards: 2, accumulate: { contributions: 2 } });
    expectProblem(await send(acc, encodeValues(grad(0).slice(0, 4), 'F32'), 'F32', '?part_offset=0&worker=0&expected_step=0', { 'idempotency-key': 'a' }), 422, 'part_offset');
    const long = await send(opt, encodeValues(grad(0).concat([1]), 'F32'), 'F32', '?part_offset=0', { 'idempotency-key': 'z' });
    expectProblem(long, 422, 'body');
    // SparseAdam takes rows only: a dense part is refused as a whole dense step is, before anything is stored.
    const sparse = await createOptimizer({ optimizer: 'sparse_adam', params: { e: [[1, 2], [3, 4], [5, 6]] }, shards: 2 });
    expectProblem(await send(sparse, encodeValues([1, 1, 1], 'F32'), 'F32', '?part_offset=0', { 'idempotency-key': 's' }), 422, 'body');
    expect((await opCall('GET', sparse, '')).body.step).toBe(0);
  });
});
