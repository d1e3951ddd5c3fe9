// Sharded optimizers against an unsharded one (or a completed step) where an independent review
// found them to differ: a decided step with frozen pieces completed by a shard that restarted or
// failed to store it; a skipped accumulated step whose coordinator failed to store the skip; a PATCH
// of the groups that leaves a slot kept by a group on another shard; a checkpoint without
// __metadata__.step whose tensors count different steps (the top-level count is the unsharded rule's).

import { evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, it } from 'vitest';
import { SHARD_FAULTS } from '../src/durable-objects/shards.ts';
import { ProblemError } from '../src/lib/problem.ts';
import { PARAMS, contribute, grad, info, reduced, tree } from './helpers/accumulate.ts';
import { callBytes } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, type Created } from './helpers/optimizers.ts';
import { encodeValues, writeSafetensors } from './helpers/safetensors.ts';

afterEach(() => {
  SHARD_FAULTS.afterDecision = undefined;
});

const shardStub = (opt: Created, i: number) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/${i}`));
const coordinator = (opt: Created) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(opt.id));
const failing = (table: string) => `CREATE TRIGGER boom BEFORE INSERT ON ${table} BEGIN SELECT RAISE(ABORT, 'injected storage failure'); END`;

// SGD, lr 1: a frozen tensor stays, the others move by their gradient.
const P = { a: [1, 2], b: [3, 4], c: [5, 6], d: [7, 8] };
const FROZEN = { a: null, b: [1, 1], c: null, d: [1, 1] };
const AFTER = { a: [1, 2], b: [2, 3], c: [5, 6], d: [6, 7] };

describe('a decided step with frozen pieces on a shard that also holds others', () => {
  it('is completed after the coordinator fails past its decision and every shard restarts', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: P, hyperparams: { lr: 1 }, shards: 2 });
    SHARD_FAULTS.afterDecision = () => {
      throw new ProblemError(409, 'conflict', 'injected: coordinator failed after its decision');
    };
    expectProblem(await opCall('POST', opt, '/step', { grads: FROZEN }), 409);
    SHARD_FAULTS.afterDecision = undefined;
    for (let i = 0; i < 2; i++) await evictDurableObject(shardStub(opt, i));
    await evictDurableObject(coordinator(opt));
    expect((await opCall('GET', opt, '/params')).body).toEqual({ step: 1, params: AFTER });
    expect((await opCall('POST', opt, '/step', { grads: { a: [1, 1], b: [1, 1], c: [1, 1], d: [1, 1] } })).body.params).toEqual({ a: [0, 1], b: [1, 2], c: [4, 5], d: [5, 6] });
  });

  it('is completed after a shard fails to store it (its memory reloaded)', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: P, hyperparams: { lr: 1 }, shards: 2 });
    await runInDurableObject(shardStub(opt, 1), (_o, state) => state.storage.sql.exec(failing('slot_chunks')));
    const r = await opCall('POST', opt, '/step', { grads: FROZEN });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    await runInDurableObject(shardStub(opt, 1), (_o, state) => state.storage.sql.exec('DROP TRIGGER boom'));
    expect((await opCall('GET', opt, '/params')).body).toEqual({ step: 1, params: AFTER });
  });
});

describe('a skipped accumulated step whose coordinator fails to store the skip', () => {
  it('changes nothing: the contributions held stay reducible, and the next complete set steps', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: PARAMS, hyperparams: { lr: 0.5, nonfinite: 'skip' }, shards: 2, accumulate: { contributions: 2, reduce: 'sum' } });
    const big = (w: number) => grad(0, w).map((x, i) => (i === 0 ? 3e38 : x));
    expect((await contribute(opt, 0, big(0), 0)).status).toBe(202);
    await runInDurableObject(coordinator(opt), (_o, state) => state.storage.sql.exec(failing('history')));
    // A storage failure is a 500 (undocumented: the contract check throws on it).
    await expect(contribute(opt, 1, big(1), 0)).rejects.toThrow(/→ 500/);
    await runInDurableObject(coordinator(opt), (_o, state) => state.storage.sql.exec('DROP TRIGGER boom'));
    expect((await info(opt)).accumulate.received).toEqual([0]);
    // Worker 0's overflowing contribution is still held, so the set overflows again and is skipped, this time stored.
    const skipped = await contribute(opt, 1, big(1), 0);
    expect(skipped.status, JSON.stringify(skipped.body)).toBe(200);
    expect(skipped.body).toMatchObject({ step: 0, skipped: true });
    expect((await contribute(opt, 1, grad(0, 1), 0)).status).toBe(202);
    const last = await contribute(opt, 0, grad(0, 0), 0, 'raw');
    const ref = await createOptimizer({ optimizer: 'sgd', params: PARAMS, hyperparams: { lr: 0.5 } });
    expect(last.body.params).toEqual((await opCall('POST', ref, '/step', { grads: tree(reduced([grad(0, 0), grad(0, 1)], 'sum')) })).body.params);
  });
});

describe('PATCH of the groups: a slot a group on another shard keeps stays', () => {
  it('SGD momentum off for b (alone on its shard), then the groups cleared: sharded equals unsharded', async () => {
    const params = { a: [1, 2, 3, 4], b: [5, 6, 7, 8] };
    const g = { a: [0.5, -1, 0.25, 2], b: [1, -0.5, 0.75, -2] };
    const logs: unknown[][] = [];
    for (const shards of [undefined, 2]) {
      const opt = await createOptimizer({ optimizer: 'sgd', params, hyperparams: { lr: 0.1, momentum: 0.9 }, ...(shards ? { shards } : {}) });
      const log: unknown[] = [];
      logs.push(log);
      const step = async () => log.push((await opCall('POST', opt, '/step', { grads: g })).body.params);
      await step();
      await step();
      log.push((await opCall('PATCH', opt, '', { param_groups: [{ params: ['b'], momentum: 0 }] })).status);
      await step();
      log.push((await opCall('GET', opt, '/state')).body.momentum_buffer);
      log.push((await opCall('PATCH', opt, '', { param_groups: null })).status);
      await step();
      log.push((await opCall('GET', opt, '/state')).body.momentum_buffer);
    }
    expect(logs[1]).toEqual(logs[0]);
    // (b keeps its buffer while in the group without momentum, and continues it afterwards.)
    expect((logs[0]![3] as Record<string, unknown>).b).not.toBeNull();
  });
});

describe('a checkpoint without __metadata__.step whose tensors count different steps', () => {
  it('restores the top-level count of the first tensor no group names, as unsharded', async () => {
    const params = { a: [1, 2, 3, 4], b: [5, 6, 7, 8] };
    const groups = [{ params: ['a'], lr: 0.05 }];
    const schedule = { type: 'step', lr: 0.01, step_size: 4, gamma: 0.5 };
    const F = (v: number[]) => encodeValues(v, 'F32');
    const file = writeSafetensors(
      [
        { name: 'params/a', dtype: 'F32', shape: [4], data: F(params.a) },
        { name: 'params/b', dtype: 'F32', shape: [4], data: F(params.b) },
        { name: 'exp_avg/a', dtype: 'F32', shape: [4], data: F([0.1, 0.1, 0.1, 0.1]) },
        { name: 'exp_avg/b', dtype: 'F32', shape: [4], data: F([0.1, 0.1, 0.1, 0.1]) },
        { name: 'exp_avg_sq/a', dtype: 'F32', shape: [4], data: F([0.01, 0.01, 0.01, 0.01]) },
        { name: 'exp_avg_sq/b', dtype: 'F32', shape: [4], data: F([0.01, 0.01, 0.01, 0.01]) },
        { name: 'step/a', dtype: 'F32', shape: [], data: F([3]) },
        { name: 'step/b', dtype: 'F32', shape: [], data: F([5]) },
      ],
      { optimizer: 'adam', hyperparams: JSON.stringify({ lr: 0.01 }), param_groups: JSON.stringify(groups), schedule: JSON.stringify(schedule) },
    );
    const out: unknown[] = [];
    for (const shards of [undefined, 2]) {
      const opt = await createOptimizer({ optimizer: 'adam', params, hyperparams: { lr: 0.01 }, param_groups: groups, schedule, ...(shards ? { shards } : {}) });
      const put = await callBytes('PUT', `/v1/optimizers/${opt.id}/state`, file, authed(opt.token, { 'content-type': 'application/vnd.safetensors' }));
      expect(put.status, JSON.stringify(put.body)).toBe(200);
      const snap = (await opCall('GET', opt, '/state')).body;
      const step = (await opCall('POST', opt, '/step', { grads: { a: [1, 1, 1, 1], b: [1, 1, 1, 1] } })).body;
      out.push({ step: snap.step, tensors: snap.tensors, after: step.step, lr: step.lr, params: step.params });
    }
    expect(out[1]).toEqual(out[0]);
    expect(out[0]).toMatchObject({ step: 5, tensors: { a: { step: 3 } }, after: 6 });
  });
});
