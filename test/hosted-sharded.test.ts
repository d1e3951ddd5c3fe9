// Sharded hosted optimizers (src/durable-objects/shards.ts, docs/scale-out.md) through HTTP: real
// torch 1.13 trajectories (test/fixtures/optim; other optimizers in test/hosted-sharded-*.test.ts)
// replayed through optimizers spread over 2 or 3 Durable Objects, in JSON, raw and safetensors
// bodies, must equal torch bit for bit at every recorded step,
// clip_grad_norm_ included (its norm folded across tensors split between shards); a step is
// applied by every shard or by none (bad input, overflow, a coordinator that fails before or
// after its decision, shards evicted in between); retries never apply a step twice.

import { evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, it } from 'vitest';
import { SHARD_FAULTS } from '../src/durable-objects/shards.ts';
import { ProblemError } from '../src/lib/problem.ts';
import clipFile from './fixtures/optim/clip.json';
import sgdCases from './fixtures/optim/sgd.json';
import { call, callBytes, callWithVars } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, parse, type Created } from './helpers/optimizers.ts';
import { decodeValues, readSafetensors, writeSafetensors } from './helpers/safetensors.ts';
import { bytesOf, diffs, flat, plain, replaySharded, type Case } from './helpers/sharded-replay.ts';
import { leavesOf } from './helpers/trees.ts';

const CASES: Case[] = [...plain(sgdCases), ...plain(clipFile).filter((c) => (c as { kind?: string }).kind === 'clip_then_step')];
replaySharded('SGD, and Adam, AdamW and SGD after clip_grad_norm_ or clip_grad_value_', CASES, ['sgd', 'adam', 'adamw']);

afterEach(() => {
  SHARD_FAULTS.beforeDecision = undefined;
  SHARD_FAULTS.afterDecision = undefined;
});

interface ClipCase {
  name: string;
  kind: string;
  dtype: Case['dtype'];
  max_norm: number;
  grads: unknown;
  expected: { total_norm: number; grads: unknown };
}
const CLIP_NORM = (clipFile.cases as unknown as ClipCase[]).filter((c) => c.kind === 'clip_grad_norm');

describe('clip_grad_norm_ across shards', () => {
  it('the cases include single tensors, split between shards', () => {
    expect(CLIP_NORM.filter((c) => Array.isArray(c.grads)).length).toBeGreaterThanOrEqual(4);
  });

  // SGD with lr 1 from zeros: the params after one step are minus torch's clipped gradient, exactly.
  it.each(CLIP_NORM.map((c) => [c.name, c] as const))('%s: the total norm and the clipped gradient are torch\'s', async (_name, c) => {
    const zeros = JSON.parse(JSON.stringify(c.grads), (_k, v) => (typeof v === 'number' ? 0 : v));
    let opt: Created | null = null;
    for (const shards of [4, 3, 2]) {
      const r = await parse(await call('POST', '/v1/optimizers', { optimizer: 'sgd', dtype: c.dtype, params: zeros, hyperparams: { lr: 1, clip_grad_norm: c.max_norm }, shards }));
      if (r.status === 201) {
        opt = { id: r.body.id, token: r.body.token, body: r.body, location: null, etag: null };
        break;
      }
    }
    if (!opt) return expect(leavesOf(c.grads).length, 'only a single element cannot be sharded').toBe(1);
    const r = await opCall('POST', opt, '/step', { grads: c.grads });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.grad_norm).toBe(Number.isFinite(c.expected.total_norm) ? c.expected.total_norm : null);
    const negated = JSON.parse(JSON.stringify(c.expected.grads), (_k, v) => (typeof v === 'number' ? (v === 0 ? 0 : -v) : v));
    expect(diffs('params', r.body.params, negated)).toEqual([]);
  });
});

/** SGD with momentum over a [6, 2] matrix and a [3] vector, 3 shards (the matrix cut on a row). */
async function sgdOver3(extra: Record<string, unknown> = {}): Promise<Created> {
  const opt = await createOptimizer({ optimizer: 'sgd', params: { w: [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]], b: [1, 2, 3] }, hyperparams: { lr: 0.5, momentum: 0.9, ...extra }, shards: 3 });
  expect(opt.body.shards).toBe(3);
  return opt;
}
const GRADS = { w: [[1, 1], [1, 1], [1, 1], [2, 2], [2, 2], [2, 2]], b: [4, 4, 4] };
/** SGD's first step with momentum (buffer = grad): p − lr·g, exact in binary here. */
const AFTER_ONE = { w: [[0.5, 1.5], [2.5, 3.5], [4.5, 5.5], [6, 7], [8, 9], [10, 11]], b: [-1, 0, 1] };
const AFTER_TWO = { w: [[-0.45, 0.55], [1.55, 2.55], [3.55, 4.55], [4.1, 5.1], [6.1, 7.1], [8.1, 9.1]], b: [-4.8, -3.8, -2.8] };
const f = Math.fround;
/** Second step by hand: buf = 0.9·g + g, p −= 0.5·buf, in float32. */
const second = (p: number, g: number) => f(p - f(f(0.5) * f(f(f(0.9) * g) + g)));

async function everything(opt: Created) {
  const params = await opCall('GET', opt, '/params');
  const state = await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, authed(opt.token, { accept: 'application/vnd.safetensors' }));
  const info = await opCall('GET', opt, '');
  const read = readSafetensors(state.bytes);
  return { params: params.body.params, step: info.body.step, etag: info.headers.get('etag'), state: Object.fromEntries(read.order.map((n) => [n, decodeValues(read.tensors.get(n)!)])) };
}

describe('a step is applied by every shard or by none', () => {
  it('hand-derived SGD with momentum over 3 shards; the snapshot spans every shard under torch\'s names', async () => {
    const opt = await sgdOver3();
    expect((await opCall('POST', opt, '/step', { grads: GRADS })).body.params).toEqual(AFTER_ONE);
    const r = await opCall('POST', opt, '/step', { grads: GRADS });
    const want = (tree: typeof AFTER_ONE, g: typeof GRADS) => ({ w: tree.w.map((row, i) => row.map((p, j) => second(p, g.w[i]![j]!))), b: tree.b.map((p, i) => second(p, g.b[i]!)) });
    expect(r.body.params).toEqual(want(AFTER_ONE, GRADS));
    void AFTER_TWO;
    const all = await everything(opt);
    // momentum_buffer after two steps: 0.9·g + g.
    expect(all.state['momentum_buffer/w']).toEqual(flat(GRADS.w).map((g) => f(f(f(0.9) * g) + g)));
    expect(all.state['momentum_buffer/b']).toEqual(GRADS.b.map((g) => f(f(f(0.9) * g) + g)));
    expect(all.state['params/w']).toEqual(flat(want(AFTER_ONE, GRADS).w));
  });

  it('a NaN in one shard\'s slice: 422 naming the element, nothing changed on any shard', async () => {
    const opt = await sgdOver3();
    await opCall('POST', opt, '/step', { grads: GRADS });
    const before = await everything(opt);
    const g = flat(GRADS.w).concat(GRADS.b);
    g[13] = NaN; // b[1], on the last shard: the first two have already prepared theirs
    const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, bytesOf('float32', g), authed(opt.token, { 'content-type': 'application/octet-stream' }));
    expectProblem(r, 422, 'grads[13]');
    expect(await everything(opt)).toEqual(before);
    // The next good step is step 2, applied once.
    expect((await opCall('POST', opt, '/step', { grads: GRADS })).body.step).toBe(2);
  });

  it('a raw body of the wrong length: 422, nothing changed', async () => {
    const opt = await sgdOver3();
    const before = await everything(opt);
    expectProblem(await callBytes('POST', `/v1/optimizers/${opt.id}/step`, bytesOf('float32', [1, 2, 3]), authed(opt.token, { 'content-type': 'application/octet-stream' })), 422);
    expect(await everything(opt)).toEqual(before);
  });

  it('a step that overflows on one shard only: 422 non-finite-result naming the element, nothing changed anywhere', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: { a: [1, 2], b: [3, 3.4e38] }, hyperparams: { lr: 1 }, shards: 2 });
    const before = await everything(opt);
    const r = await opCall('POST', opt, '/step', { grads: { a: [1, 1], b: [1, -1e38] } });
    expectProblem(r, 422, 'grads.b[1]');
    expect(r.body.type).toMatch(/non-finite-result/);
    expect(await everything(opt)).toEqual(before);
  });

  it('nonfinite: "skip": a NaN on one shard skips the step on all (counted, recorded), and the next step applies', async () => {
    const opt = await sgdOver3({ nonfinite: 'skip' });
    const before = await everything(opt);
    const g = flat(GRADS.w).concat(GRADS.b);
    g[0] = Infinity;
    const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, bytesOf('float32', g), authed(opt.token, { 'content-type': 'application/octet-stream', accept: 'application/json' }));
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ step: 0, skipped: true });
    const after = await everything(opt);
    expect(after).toEqual(before);
    expect((await opCall('GET', opt, '')).body.skipped_steps).toBe(1);
    expect((await opCall('POST', opt, '/step', { grads: GRADS })).body).toMatchObject({ step: 1, skipped: false, params: AFTER_ONE });
  });

  it('an Idempotency-Key retry answers the step without applying it again; other gradients under the key: 422', async () => {
    const opt = await sgdOver3();
    const first = await opCall('POST', opt, '/step', { grads: GRADS }, { 'idempotency-key': 'k1' });
    const again = await opCall('POST', opt, '/step', { grads: GRADS }, { 'idempotency-key': 'k1' });
    expect(again.body).toMatchObject({ step: 1, replayed: true, params: first.body.params });
    // The same gradient as raw bytes is the same step.
    const raw = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, bytesOf('float32', flat(GRADS.w).concat(GRADS.b)), authed(opt.token, { 'content-type': 'application/octet-stream', 'idempotency-key': 'k1', accept: 'application/json' }));
    expect(raw.body).toMatchObject({ step: 1, replayed: true });
    expectProblem(await opCall('POST', opt, '/step', { grads: { ...GRADS, b: [0, 0, 0] } }, { 'idempotency-key': 'k1' }), 422, 'Idempotency-Key');
    expect((await everything(opt)).params).toEqual(AFTER_ONE);
  });

  it('the coordinator fails after every shard applied in memory, before its decision: the step is not applied; a retry applies it once', async () => {
    const opt = await sgdOver3();
    SHARD_FAULTS.beforeDecision = () => {
      throw new ProblemError(409, 'conflict', 'injected: coordinator failed before its decision');
    };
    expectProblem(await opCall('POST', opt, '/step', { grads: GRADS }, { 'idempotency-key': 'k' }), 409);
    SHARD_FAULTS.beforeDecision = undefined;
    // Shards hold the step in memory only: every read sees the stored state.
    expect((await everything(opt)).params).toEqual({ w: [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]], b: [1, 2, 3] });
    const retry = await opCall('POST', opt, '/step', { grads: GRADS }, { 'idempotency-key': 'k' });
    expect(retry.body).toMatchObject({ step: 1, params: AFTER_ONE });
    expect(retry.body.replayed).toBeUndefined();
  });

  it('an attempt that failed before its decision leaves nothing behind: a retry in another format (other parts) applies the step once', async () => {
    const opt = await sgdOver3();
    SHARD_FAULTS.beforeDecision = () => {
      throw new ProblemError(409, 'conflict', 'injected');
    };
    const raw = bytesOf('float32', [9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
    expectProblem(await callBytes('POST', `/v1/optimizers/${opt.id}/step`, raw, authed(opt.token, { 'content-type': 'application/octet-stream' })), 409);
    SHARD_FAULTS.beforeDecision = undefined;
    for (let i = 0; i < 3; i++) await evictDurableObject(env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/${i}`)));
    const file = writeSafetensors([
      { name: 'b', dtype: 'F32', shape: [3], data: bytesOf('float32', GRADS.b) },
      { name: 'w', dtype: 'F32', shape: [6, 2], data: bytesOf('float32', flat(GRADS.w)) },
    ]);
    const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, file, authed(opt.token, { 'content-type': 'application/vnd.safetensors', 'idempotency-key': 'st', accept: 'application/json' }));
    expect(r.body).toMatchObject({ step: 1, params: AFTER_ONE });
    // The same gradient in JSON under the same key is the same step (the fingerprint does not depend on the format or the file's order).
    expect((await opCall('POST', opt, '/step', { grads: GRADS }, { 'idempotency-key': 'st' })).body).toMatchObject({ step: 1, replayed: true });
  });

  it('a shard whose store fails after the decision: the step is answered (applied), and the next call completes it from the shard\'s prepared slice', async () => {
    // SGD, lr 1, 2 shards: a = [1, 2] on shard 0, b = [3, 4] on shard 1.
    const opt = await createOptimizer({ optimizer: 'sgd', params: { a: [1, 2], b: [3, 4] }, hyperparams: { lr: 1 }, shards: 2 });
    const shard1 = env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/1`));
    // Shard 1's next write of a state chunk fails (a storage error in its store transaction).
    await runInDurableObject(shard1, (_o, state) => {
      state.storage.sql.exec("CREATE TRIGGER boom BEFORE INSERT ON slot_chunks BEGIN SELECT RAISE(ABORT, 'injected storage failure'); END");
    });
    const r = await opCall('POST', opt, '/step', { grads: { a: [1, 1], b: [1, 1] } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.step).toBe(1);
    await runInDurableObject(shard1, (_o, state) => {
      state.storage.sql.exec('DROP TRIGGER boom');
    });
    expect((await opCall('GET', opt, '/params')).body).toEqual({ step: 1, params: { a: [0, 1], b: [2, 3] } });
    expect((await opCall('POST', opt, '/step', { grads: { a: [1, 1], b: [1, 1] } })).body.params).toEqual({ a: [-1, 0], b: [1, 2] });
  });

  it('the coordinator fails after its decision, and every shard is evicted: the next call completes the step on every shard, once', async () => {
    const opt = await sgdOver3();
    SHARD_FAULTS.afterDecision = () => {
      throw new ProblemError(409, 'conflict', 'injected: coordinator failed after its decision');
    };
    expectProblem(await opCall('POST', opt, '/step', { grads: GRADS }, { 'idempotency-key': 'k' }), 409);
    SHARD_FAULTS.afterDecision = undefined;
    // Shards lose what they held in memory: the prepared slices are durable.
    for (let i = 0; i < 3; i++) await evictDurableObject(env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/${i}`)));
    await evictDurableObject(env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(opt.id)));
    const retry = await opCall('POST', opt, '/step', { grads: GRADS }, { 'idempotency-key': 'k' });
    expect(retry.body).toMatchObject({ step: 1, replayed: true, params: AFTER_ONE });
    const two = await opCall('POST', opt, '/step', { grads: GRADS });
    expect(two.body.step).toBe(2);
    expect((await opCall('GET', opt, '/history')).body.entries.map((e: { step: number }) => e.step)).toEqual([1, 2]);
  });

  it('after a decision, a read completes the step first (never a mix of steps)', async () => {
    const opt = await sgdOver3();
    SHARD_FAULTS.afterDecision = () => {
      throw new ProblemError(409, 'conflict', 'injected');
    };
    await opCall('POST', opt, '/step', { grads: GRADS });
    SHARD_FAULTS.afterDecision = undefined;
    await evictDurableObject(env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/1`)));
    const r = await opCall('GET', opt, '/params');
    expect(r.body).toEqual({ step: 1, params: AFTER_ONE });
  });
});

describe('param_groups across shards', () => {
  // SGD: w (split over two shards) with the top-level lr 0.5 and momentum 0.9; b in a group with lr 0.1 and no momentum.
  const groups = [{ params: ['b'], lr: 0.1, momentum: 0 }];
  const plainStep = (p: number, g: number) => f(p - f(f(0.1) * g));

  it('each group steps with its own hyperparameters (torch\'s SGD by hand), the snapshot holds momentum_buffer for w only, and it restores', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: { w: [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]], b: [1, 2, 3] }, hyperparams: { lr: 0.5, momentum: 0.9 }, param_groups: groups, shards: 3 });
    expect(opt.body).toMatchObject({ shards: 3, param_groups: groups });
    const one = await opCall('POST', opt, '/step', { grads: GRADS });
    expect(one.body.params).toEqual({ w: AFTER_ONE.w, b: [1, 2, 3].map((p, i) => plainStep(p, GRADS.b[i]!)) });
    const snapshot = await opCall('GET', opt, '/state');
    expect(snapshot.body.momentum_buffer).toEqual({ w: GRADS.w, b: null });
    const ck = await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, authed(opt.token, { accept: 'application/vnd.safetensors' }));
    expect(readSafetensors(ck.bytes).order).not.toContain('momentum_buffer/b');
    const twice = { w: AFTER_ONE.w.map((row, i) => row.map((p, j) => second(p, GRADS.w[i]![j]!))), b: one.body.params.b.map((p: number, i: number) => plainStep(p, GRADS.b[i]!)) };
    expect((await opCall('POST', opt, '/step', { grads: GRADS })).body.params).toEqual(twice);
    // Its own checkpoint (and JSON snapshot) restore, and step on alike.
    for (const put of [
      () => callBytes('PUT', `/v1/optimizers/${opt.id}/state`, ck.bytes, authed(opt.token, { 'content-type': 'application/vnd.safetensors' })),
      () => opCall('PUT', opt, '/state', snapshot.body),
    ]) {
      const r = await put();
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect((await opCall('POST', opt, '/step', { grads: GRADS })).body).toMatchObject({ step: 2, params: twice });
    }
    // The same run on one object: the same numbers.
    const single = await createOptimizer({ optimizer: 'sgd', params: { w: [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]], b: [1, 2, 3] }, hyperparams: { lr: 0.5, momentum: 0.9 }, param_groups: groups });
    await opCall('POST', single, '/step', { grads: GRADS });
    expect((await opCall('POST', single, '/step', { grads: GRADS })).body.params).toEqual(twice);
  });

  it('a PATCH of a group\'s lr applies; so does a change of the groups (test/hosted-sharded-patch.test.ts)', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: { w: [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]], b: [1, 2, 3] }, hyperparams: { lr: 0.5, momentum: 0.9 }, param_groups: groups, shards: 3 });
    expect((await opCall('PATCH', opt, '', { hyperparams: { lr: 0.25 } })).status).toBe(200);
    const r = await opCall('POST', opt, '/step', { grads: GRADS });
    expect(r.body.params.w[0]).toEqual([f(1 - f(f(0.25) * 1)), f(2 - f(f(0.25) * 1))]);
    expect(r.body.params.b).toEqual([1, 2, 3].map((p, i) => plainStep(p, GRADS.b[i]!)));
    const regrouped = await opCall('PATCH', opt, '', { param_groups: [{ params: ['w'], lr: 0.2, momentum: 0 }] });
    expect(regrouped.status, JSON.stringify(regrouped.body)).toBe(200);
    expect(regrouped.body.param_groups).toEqual([{ params: ['w'], lr: 0.2, momentum: 0 }]);
    // b now steps with the top-level set (momentum 0.9 from its buffer), w plainly at 0.2: p − 0.2·g.
    const next = await opCall('POST', opt, '/step', { grads: GRADS });
    expect(next.body.params.w[0]).toEqual([f(r.body.params.w[0][0] - f(f(0.2) * 1)), f(r.body.params.w[0][1] - f(f(0.2) * 1))]);
  });
});

describe('checkpoints across shard counts', () => {
  const st = (opt: Created) => authed(opt.token, { accept: 'application/vnd.safetensors' });
  const put = (opt: Created, file: Uint8Array) => callBytes('PUT', `/v1/optimizers/${opt.id}/state`, file, authed(opt.token, { 'content-type': 'application/vnd.safetensors' }));
  const TWICE = { w: AFTER_ONE.w.map((row, i) => row.map((p, j) => second(p, GRADS.w[i]![j]!))), b: AFTER_ONE.b.map((p, i) => second(p, GRADS.b[i]!)) };

  it('a sharded optimizer restores its own checkpoint (PUT state, safetensors) and steps on from it', async () => {
    const opt = await sgdOver3();
    await opCall('POST', opt, '/step', { grads: GRADS });
    const ck = await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, st(opt));
    expect((await opCall('POST', opt, '/step', { grads: GRADS })).body.params).toEqual(TWICE);
    const r = await put(opt, ck.bytes);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ step: 1, shards: 3 });
    expect((await opCall('GET', opt, '/params')).body).toEqual({ step: 1, params: AFTER_ONE });
    expect((await opCall('POST', opt, '/step', { grads: GRADS })).body).toMatchObject({ step: 2, params: TWICE });
  });

  it.each([
    [1, 3],
    [3, 1],
    [3, 2],
  ])('a checkpoint of %i object(s) restores into an optimizer of %i, and steps on as the original', async (from, to) => {
    const source = await createOptimizer({ optimizer: 'sgd', params: { w: [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]], b: [1, 2, 3] }, hyperparams: { lr: 0.5, momentum: 0.9 }, shards: from });
    await opCall('POST', source, '/step', { grads: GRADS });
    const ck = await callBytes('GET', `/v1/optimizers/${source.id}/state`, undefined, st(source));
    const target = await createOptimizer({ optimizer: 'sgd', shapes: { w: [6, 2], b: [3] }, hyperparams: { lr: 0.1 }, shards: to });
    const r = await put(target, ck.bytes);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ step: 1, shards: to, hyperparams: { lr: 0.5, momentum: 0.9 } });
    expect((await opCall('POST', target, '/step', { grads: GRADS })).body).toMatchObject({ step: 2, params: TWICE });
    // The file a sharded optimizer writes is the unsharded one's, byte for byte, in the same state.
    await opCall('POST', source, '/step', { grads: GRADS });
    const a = await callBytes('GET', `/v1/optimizers/${source.id}/state`, undefined, st(source));
    const b = await callBytes('GET', `/v1/optimizers/${target.id}/state`, undefined, st(target));
    expect(readSafetensors(b.bytes).order).toEqual(readSafetensors(a.bytes).order);
    for (const name of readSafetensors(a.bytes).order) expect(decodeValues(readSafetensors(b.bytes).tensors.get(name)!), name).toEqual(decodeValues(readSafetensors(a.bytes).tensors.get(name)!));
  });

  it('a JSON snapshot restores too (as the checkpoint holding the same state)', async () => {
    const opt = await sgdOver3();
    await opCall('POST', opt, '/step', { grads: GRADS });
    const snapshot = await opCall('GET', opt, '/state');
    await opCall('POST', opt, '/step', { grads: GRADS });
    const r = await opCall('PUT', opt, '/state', snapshot.body);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect((await opCall('GET', opt, '/params')).body).toEqual({ step: 1, params: AFTER_ONE });
    expect((await opCall('POST', opt, '/step', { grads: GRADS })).body).toMatchObject({ step: 2, params: TWICE });
  });

  it('a bad checkpoint (a NaN in one shard\'s part, a slot of another shape than its param\'s) changes no shard', async () => {
    const opt = await sgdOver3();
    await opCall('POST', opt, '/step', { grads: GRADS });
    const before = await everything(opt);
    const ck = readSafetensors((await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, st(opt))).bytes);
    const tensors = ck.order.map((n) => ck.tensors.get(n)!);
    const bad = tensors.map((t) => (t.name === 'momentum_buffer/b' ? { ...t, data: bytesOf('float32', [1, NaN, 1]) } : t));
    expectProblem(await put(opt, writeSafetensors(bad, ck.metadata ?? undefined)), 422);
    expect(await everything(opt)).toEqual(before);
    const other = tensors.map((t) => (t.name === 'params/b' ? { ...t, shape: [1, 3] } : t));
    expectProblem(await put(opt, writeSafetensors(other, ck.metadata ?? undefined)), 422, 'safetensors["momentum_buffer/b"].shape');
    expect(await everything(opt)).toEqual(before);
    // And the next step is step 2, from the state as it was.
    expect((await opCall('POST', opt, '/step', { grads: GRADS })).body).toMatchObject({ step: 2, params: TWICE });
  });
});

describe('creation, uploads, limits and deletion', () => {
  it('params beyond one object\'s limit are sharded by themselves (MAX_HOSTED_BYTES lowered), and step as torch\'s SGD', async () => {
    // 5 float32 arrays of an Adam element: 20 bytes; 200 bytes hold 10 elements per object.
    const params = Array.from({ length: 25 }, (_, i) => i / 4);
    const r = await callWithVars({ MAX_HOSTED_BYTES: '200' }, 'POST', '/v1/optimizers', JSON.stringify({ optimizer: 'adam', params }), { 'content-type': 'application/json' });
    const body = (await parse(r)).body;
    expect(r.status, JSON.stringify(body)).toBe(201);
    expect(body).toMatchObject({ shards: 3, max_elements: 10, size: 25 });
  });

  it('a JSON snapshot of an optimizer larger than one object goes back by PUT (sharded), and it steps as its twin', async () => {
    const vars = { MAX_HOSTED_BYTES: '200' }; // 10 Adam float32 elements per object
    const params = Array.from({ length: 25 }, (_, i) => i / 4);
    const make = async () => {
      const r = await callWithVars(vars, 'POST', '/v1/optimizers', JSON.stringify({ optimizer: 'adam', params, hyperparams: { amsgrad: true } }), { 'content-type': 'application/json' });
      const body = (await parse(r)).body;
      expect(r.status, JSON.stringify(body)).toBe(201);
      return { id: body.id as string, token: body.token as string };
    };
    const [opt, twin] = [await make(), await make()];
    const grads = params.map((p, i) => (i % 3) - p / 8);
    for (const o of [opt, twin]) expect((await opCall('POST', o, '/step', { grads })).status).toBe(200);
    const snap = await opCall('GET', opt, '/state');
    expect(snap.body.params).toHaveLength(25);
    // Before: the Worker held a JSON snapshot to one object's limit (413 for 25 > 10).
    const put = await callWithVars(vars, 'PUT', `/v1/optimizers/${opt.id}/state`, JSON.stringify(snap.body), { authorization: `Bearer ${opt.token}`, 'content-type': 'application/json' });
    const putBody = (await parse(put)).body;
    expect(put.status, JSON.stringify(putBody)).toBe(200);
    expect(putBody).toMatchObject({ size: 25, step: 1, shards: 3 });
    const [a, b] = [await opCall('POST', opt, '/step', { grads }), await opCall('POST', twin, '/step', { grads })];
    expect(a.body.params).toEqual(b.body.params);
    const { updated_at: _u1, id: _i1, created_at: _c1, ...got } = (await opCall('GET', opt, '/state')).body;
    const { updated_at: _u2, id: _i2, created_at: _c2, ...want } = (await opCall('GET', twin, '/state')).body;
    expect(got).toEqual(want);
    // The same model as a safetensors checkpoint (one unnamed tensor: `params`, `exp_avg`, ...).
    const file = await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, { authorization: `Bearer ${opt.token}`, accept: 'application/vnd.safetensors' });
    expect([...readSafetensors(file.bytes).tensors.keys()].sort()).toEqual(['exp_avg', 'exp_avg_sq', 'max_exp_avg_sq', 'params', 'step']);
    const back = await callBytes('PUT', `/v1/optimizers/${twin.id}/state`, file.bytes, { authorization: `Bearer ${twin.token}`, 'content-type': 'application/vnd.safetensors' });
    expect(back.status, JSON.stringify(back.body)).toBe(200);
    const [c, d] = [await opCall('POST', opt, '/step', { grads }), await opCall('POST', twin, '/step', { grads })];
    expect(c.body).toMatchObject({ step: 3 });
    expect(d.body.params).toEqual(c.body.params);
    // A bad value in that file is named as one object names it (the entry alone, the element in the tensor), on a shard past the first.
    const parsed = readSafetensors(file.bytes);
    const bad = parsed.order.map((name) => {
      const t = parsed.tensors.get(name)!;
      if (name !== 'exp_avg_sq') return t;
      const data = t.data.slice();
      new DataView(data.buffer).setFloat32(4 * 17, -1, true);
      return { ...t, data };
    });
    const one = await createOptimizer({ optimizer: 'adam', params, hyperparams: { amsgrad: true } });
    for (const o of [opt, one]) {
      const r = await callBytes('PUT', `/v1/optimizers/${o.id}/state`, writeSafetensors(bad, parsed.metadata ?? undefined), { authorization: `Bearer ${o.token}`, 'content-type': 'application/vnd.safetensors' });
      expectProblem({ status: r.status, type: r.type, body: r.body }, 422, 'safetensors.exp_avg_sq[17]');
      expect(r.body.errors[0].pointer).toBe('/safetensors/exp_avg_sq/17');
    }
  });

  it('413 when no placement exists: a row larger than a shard, or more shards than rows', async () => {
    const r = await callWithVars({ MAX_HOSTED_BYTES: '200' }, 'POST', '/v1/optimizers', JSON.stringify({ optimizer: 'adam', shapes: { w: [2, 11] } }), { 'content-type': 'application/json' });
    expectProblem(await parse(r), 413);
    expectProblem(await parse(await call('POST', '/v1/optimizers', { params: [1, 2], shards: 3 })), 413);
    expectProblem(await parse(await call('POST', '/v1/optimizers', { params: [1, 2], shards: 257 })), 422, 'shards');
  });

  it('PATCH of lr, a schedule and ttl applies to the next step on every shard; a refused PATCH changes no shard', async () => {
    const opt = await sgdOver3();
    await opCall('POST', opt, '/step', { grads: GRADS });
    const patched = await opCall('PATCH', opt, '', { hyperparams: { lr: 0.25 }, ttl: 3600 });
    expect(patched.body).toMatchObject({ shards: 3, ttl: 3600, hyperparams: { lr: 0.25, momentum: 0.9 } });
    // buf = 0.9·g + g, p −= 0.25·buf, in float32.
    const r = await opCall('POST', opt, '/step', { grads: GRADS });
    const by = (p: number, g: number) => f(p - f(f(0.25) * f(f(f(0.9) * g) + g)));
    expect(r.body).toMatchObject({ step: 2, lr: 0.25, params: { w: AFTER_ONE.w.map((row, i) => row.map((p, j) => by(p, GRADS.w[i]![j]!))), b: AFTER_ONE.b.map((p, i) => by(p, GRADS.b[i]!)) } });
    // StepLR(lr 0.25, step_size 1, gamma 0.5) at step 2: 0.25 · 0.5² = 0.0625.
    expect((await opCall('PATCH', opt, '', { schedule: { type: 'step', lr: 0.25, step_size: 1, gamma: 0.5 } })).body.next_lr).toBe(0.0625);
    expect((await opCall('POST', opt, '/step', { grads: GRADS })).body.lr).toBe(0.0625);
    const before = await everything(opt);
    expectProblem(await opCall('PATCH', opt, '', { hyperparams: { momentum: -1 } }), 422, 'hyperparams.momentum');
    expectProblem(await opCall('PATCH', opt, '', { param_groups: [{ params: ['nope'] }] }), 422);
    expect(await everything(opt)).toEqual(before);
  });

  it('created by shapes and uploaded in parts across shard boundaries: 409 until complete, then steps', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', shapes: { w: [6, 2], b: [3] }, hyperparams: { lr: 0.5, momentum: 0.9 }, shards: 3 });
    expect(opt.body.upload).toMatchObject({ complete: false, missing_elements: 15 });
    const put = (values: number[], query: string) => callBytes('PUT', `/v1/optimizers/${opt.id}/params${query}`, bytesOf('float32', values), authed(opt.token, { 'content-type': 'application/octet-stream' }));
    expect((await put([1, 2, 3, 4, 5, 6, 7], '')).status).toBe(200); // shard 0 and part of shard 1
    expectProblem(await opCall('POST', opt, '/step', { grads: GRADS }), 409);
    expect((await put([8, 9, 10, 11, 12], '?offset=7')).status).toBe(200);
    const json = await opCall('PUT', opt, '/params', { params: { b: [1, 2, 3] } });
    expect(json.status, JSON.stringify(json.body)).toBe(200);
    expect(json.body.upload.complete).toBe(true);
    expect((await opCall('POST', opt, '/step', { grads: GRADS })).body.params).toEqual(AFTER_ONE);
  });

  it('an upload with a NaN for a later shard changes no shard', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', shapes: { w: [6, 2], b: [3] }, hyperparams: { lr: 0.5 }, shards: 3 });
    const values = Array.from({ length: 15 }, (_, i) => i);
    values[14] = NaN;
    expectProblem(await callBytes('PUT', `/v1/optimizers/${opt.id}/params`, bytesOf('float32', values), authed(opt.token, { 'content-type': 'application/octet-stream' })), 422);
    expect((await opCall('GET', opt, '')).body.upload.missing_elements).toBe(15);
    for (let i = 0; i < 3; i++) {
      const stub = env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/${i}`));
      const missing = await runInDurableObject(stub, (_o, state) => JSON.parse(state.storage.sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = 'meta'").one().v).missing);
      expect(missing.length, `shard ${i}`).toBe(1);
    }
  });

  it('DELETE removes every shard; shards answer no token but their coordinator\'s', async () => {
    const opt = await sgdOver3();
    const shard0 = env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/0`));
    // A shard is an object of the same namespace, but its token hash is a secret no token hashes to.
    expectProblem(await opCall('GET', { id: shard0.id.toString(), token: opt.token }, ''), 401);
    expect((await call('DELETE', `/v1/optimizers/${opt.id}`, undefined, authed(opt.token))).status).toBe(204);
    for (let i = 0; i < 3; i++) {
      const stub = env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/${i}`));
      const tables = await runInDurableObject(stub, (_o, state) => state.storage.sql.exec("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'").toArray());
      expect(tables, `shard ${i}`).toEqual([]);
    }
    expectProblem(await opCall('GET', opt, ''), 404);
  });
});
