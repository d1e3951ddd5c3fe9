// Many workers feeding one sharded optimizer (accumulate over shards), through HTTP in workerd. Each
// contribution's slices are stored by the shards holding them; the last one of a set has every shard
// reduce the set (ascending worker id, float32: acc = g0; acc = acc + g1; …; acc / N) and the step
// goes on as any sharded step, clip_grad_norm_ folded across shards from the reduced gradient. The
// reference is computed independently (Math.fround after each add and the division, numpy's float32)
// and fed to a plain unsharded optimizer of the same kind: the sharded one must equal it bit for bit
// whatever the arrival order and format, with duplicates, late and bad contributions, shards and
// coordinator evicted, and a coordinator that fails after its decision.

import { evictDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { SHARD_FAULTS } from '../src/durable-objects/shards.ts';
import { ProblemError } from '../src/lib/problem.ts';
import { PARAMS, contribute, expectSame, grad, info, order, reduced, tree, type Format, type Json } from './helpers/accumulate.ts';
import { authed, createOptimizer, expectProblem, opCall, type Created } from './helpers/optimizers.ts';
import { callBytes } from './helpers/http.ts';

interface Case {
  optimizer: string;
  hyperparams: Json;
  n: number;
  reduce: 'mean' | 'sum';
  shards: number;
  formats: Format[];
}

const CASES: Case[] = [
  // w (3 rows of 7) is cut between shards: its norm is folded from one shard into the next.
  { optimizer: 'adam', hyperparams: { lr: 0.01, weight_decay: 0.1, amsgrad: true, clip_grad_norm: 0.75 }, n: 3, reduce: 'mean', shards: 3, formats: ['json', 'raw', 'safetensors'] },
  { optimizer: 'sgd', hyperparams: { lr: 0.05, momentum: 0.9, nesterov: true }, n: 4, reduce: 'sum', shards: 2, formats: ['raw'] },
  { optimizer: 'adamw', hyperparams: { lr: 0.02, clip_grad_norm: 2, clip_grad_value: 0.8 }, n: 2, reduce: 'mean', shards: 4, formats: ['safetensors', 'json'] },
  { optimizer: 'nadam', hyperparams: { lr: 0.01 }, n: 3, reduce: 'sum', shards: 3, formats: ['json', 'raw'] },
];

async function pair(c: Case, extra: Json = {}) {
  const acc = await createOptimizer({ optimizer: c.optimizer, params: PARAMS, hyperparams: { ...c.hyperparams, ...extra }, accumulate: { contributions: c.n, reduce: c.reduce }, shards: c.shards });
  expect(acc.body.shards).toBe(c.shards);
  const ref = await createOptimizer({ optimizer: c.optimizer, params: PARAMS, hyperparams: { ...c.hyperparams, ...extra } });
  return { acc, ref };
}

async function referenceStep(ref: Created, s: number, c: Case) {
  const r = await opCall('POST', ref, '/step', { grads: tree(reduced(Array.from({ length: c.n }, (_, w) => grad(s, w)), c.reduce)) });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body as Json;
}

const evictAll = async (opt: Created, shards: number) => {
  for (let i = 0; i < shards; i++) await evictDurableObject(env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/${i}`)));
  await evictDurableObject(env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(opt.id)));
};

describe.each(CASES.map((c) => ({ c, title: `${c.optimizer}, ${c.n} workers (${c.reduce}) over ${c.shards} shards` })))('$title', ({ c }) => {
  it('every step equals one unsharded step with the reduced gradient, bit for bit, whatever the arrival order and format', { timeout: 120_000 }, async () => {
    const { acc, ref } = await pair(c);
    for (let s = 0; s < 4; s++) {
      const want = await referenceStep(ref, s, c);
      const ids = order(c.n, s);
      for (const [k, w] of ids.entries()) {
        const r = await contribute(acc, w, grad(s, w), s, c.formats[(s + k) % c.formats.length]);
        if (k < c.n - 1) {
          expect(r.status, JSON.stringify(r.body)).toBe(202);
          expect(r.body).toMatchObject({ pending: true, worker: w, step: s, missing: c.n - 1 - k, replayed: false });
          // Held contributions live on the shards: evicting every object loses none.
          if (s === 1 && k === 0) await evictAll(acc, c.shards);
        } else {
          expect(r.status, JSON.stringify(r.body)).toBe(200);
          expect(r.body.step).toBe(s + 1);
          expectSame(r.body.params, want.params);
          if (want.grad_norm !== undefined) expect(r.body.grad_norm, `step ${s} grad_norm`).toBe(want.grad_norm);
        }
      }
    }
    const [a, b] = [await opCall('GET', acc, '/state'), await opCall('GET', ref, '/state')];
    const { id: _a, created_at: _c1, updated_at: _u1, shards: _s, accumulate: _acc, ...gotState } = a.body;
    const { id: _b, created_at: _c2, updated_at: _u2, ...wantState } = b.body;
    expectSame(gotState, wantState);
    expect((await info(acc)).accumulate).toMatchObject({ received: [], missing: c.n });
  });
});

describe('sharded contributions: duplicates, late ones, bad ones, failures', () => {
  const c = CASES[0]!;

  it('the same contribution again is idempotent (any format); other values from the same worker are a 409 that changes no shard; a late one is a 409', async () => {
    const { acc, ref } = await pair(c);
    expect((await contribute(acc, 1, grad(0, 1), 0, 'json')).status).toBe(202);
    const again = await contribute(acc, 1, grad(0, 1), 0, 'raw');
    expect(again.status).toBe(202);
    expect(again.body).toMatchObject({ worker: 1, received: [1], replayed: true });
    // Other values from worker 1 would overwrite its slices on the shards if they were sent: they are a 409, and the set still reduces worker 1's first ones.
    expectProblem(await contribute(acc, 1, grad(9, 1), 0, 'safetensors'), 409, 'worker');
    expect((await contribute(acc, 0, grad(0, 0), 0)).status).toBe(202);
    const last = await contribute(acc, 2, grad(0, 2), 0, 'safetensors');
    expect(last.status, JSON.stringify(last.body)).toBe(200);
    expectSame(last.body.params, (await referenceStep(ref, 0, c)).params);
    expectProblem(await contribute(acc, 0, grad(0, 0), 0), 409, 'expected_step');
  });

  it('a reduced gradient that overflows is a 422 changing nothing; with nonfinite: "skip" the step is skipped, and the next set steps', async () => {
    const big = (w: number) => grad(0, w).map((x, i) => (i === 7 ? 3e38 : x));
    const sum: Case = { ...c, reduce: 'sum', n: 2 };
    const { acc } = await pair(sum);
    expect((await contribute(acc, 0, big(0), 0)).status).toBe(202);
    const over = await contribute(acc, 1, big(1), 0, 'raw');
    expectProblem(over, 422, 'grads[7]');
    expect((await info(acc)).step).toBe(0);
    expect((await info(acc)).accumulate.received).toEqual([0]);

    const skipping = await pair(sum, { nonfinite: 'skip' });
    expect((await contribute(skipping.acc, 0, big(0), 0)).status).toBe(202);
    const skipped = await contribute(skipping.acc, 1, big(1), 0);
    expect(skipped.status, JSON.stringify(skipped.body)).toBe(200);
    expect(skipped.body).toMatchObject({ step: 0, skipped: true });
    expect((await info(skipping.acc)).accumulate.received).toEqual([]);
    // The next set (still for step 1) steps as the reference's first step does.
    for (const w of [1, 0]) {
      const r = await contribute(skipping.acc, w, grad(0, w), 0, w === 1 ? 'json' : 'raw');
      if (w === 0) expectSame(r.body.params, (await referenceStep(skipping.ref, 0, sum)).params);
    }
  });

  it('the coordinator fails after its decision and every object is evicted: the next call completes the step, each shard reducing the set again', async () => {
    const { acc, ref } = await pair(c);
    expect((await contribute(acc, 0, grad(0, 0), 0)).status).toBe(202);
    expect((await contribute(acc, 2, grad(0, 2), 0, 'raw')).status).toBe(202);
    SHARD_FAULTS.afterDecision = () => {
      throw new ProblemError(409, 'conflict', 'injected: coordinator failed after its decision');
    };
    try {
      expectProblem(await contribute(acc, 1, grad(0, 1), 0, 'safetensors', { 'idempotency-key': 'last' }), 409);
    } finally {
      SHARD_FAULTS.afterDecision = undefined;
    }
    await evictAll(acc, c.shards);
    const want = await referenceStep(ref, 0, c);
    const params = await opCall('GET', acc, '/params');
    expect(params.body.step).toBe(1);
    expectSame(params.body.params, want.params);
    const retry = await contribute(acc, 1, grad(0, 1), 0, 'json', { 'idempotency-key': 'last' });
    expect(retry.body).toMatchObject({ step: 1, replayed: true });
    // And the next set steps on from there.
    for (const w of [2, 1, 0]) {
      const r = await contribute(acc, w, grad(1, w), 1, 'raw');
      if (w === 0) expectSame(r.body.params, (await referenceStep(ref, 1, c)).params);
    }
  });

  it('PATCH accumulate: set on a sharded optimizer, refused while contributions are held; a restore drops them', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: PARAMS, hyperparams: { lr: 0.5 }, shards: 2 });
    const set = await opCall('PATCH', opt, '', { accumulate: { contributions: 2, reduce: 'sum' } });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    expect(set.body.accumulate).toMatchObject({ contributions: 2, reduce: 'sum', received: [] });
    const snapshot = await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, authed(opt.token, { accept: 'application/vnd.safetensors' }));
    expect((await contribute(opt, 1, grad(0, 1), 0)).status).toBe(202);
    expectProblem(await opCall('PATCH', opt, '', { accumulate: { contributions: 3 } }), 409, 'accumulate');
    const restored = await callBytes('PUT', `/v1/optimizers/${opt.id}/state`, snapshot.bytes, authed(opt.token, { 'content-type': 'application/vnd.safetensors' }));
    expect(restored.status, JSON.stringify(restored.body)).toBe(200);
    expect((await info(opt)).accumulate.received).toEqual([]);
    // Worker 1's slices left on the shards count for nothing: the set is worker 0's and worker 1's next ones.
    expect((await contribute(opt, 0, grad(2, 0), 0)).status).toBe(202);
    const last = await contribute(opt, 1, grad(2, 1), 0, 'raw');
    const ref = await createOptimizer({ optimizer: 'sgd', params: PARAMS, hyperparams: { lr: 0.5 } });
    expectSame(last.body.params, (await opCall('POST', ref, '/step', { grads: tree(reduced([grad(2, 0), grad(2, 1)], 'sum')) })).body.params);
  });
});
