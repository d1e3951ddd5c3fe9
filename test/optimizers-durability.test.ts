// Hosted optimizers under concurrency, retries, eviction, crashes and deletion, in workerd.

import { abortAllDurableObjects, evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import trajectories from './fixtures/adam/trajectories.json';
import { postJson } from './helpers/http.ts';
import { createOptimizer, expectProblem, opCall } from './helpers/optimizers.ts';

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));

describe('concurrency', () => {
  it('applies 50 concurrent steps exactly once each, in the order the object accepted them', async () => {
    const params = [0.5, -1, 2, 0.25];
    const opt = await createOptimizer({ params, hyperparams: { lr: 0.05 }, dtype: 'float32' });
    const grads = Array.from({ length: 50 }, (_, k) => params.map((_, i) => Math.sin(k * 7 + i) * (1 + k / 10)));
    const replies = await Promise.all(grads.map((g) => opCall('POST', opt, '/step', { grads: g })));
    for (const r of replies) expect(r.status, JSON.stringify(r.body)).toBe(200);
    const steps = replies.map((r) => r.body.step).sort((a, b) => a - b);
    expect(steps).toEqual(Array.from({ length: 50 }, (_, k) => k + 1));

    // Replay the same gradients sequentially, in acceptance order, through the stateless endpoint.
    const order = replies.map((r, k) => ({ step: r.body.step as number, grads: grads[k]! })).sort((a, b) => a.step - b.step);
    let p: unknown = params;
    let state: unknown;
    for (const { step, grads: g } of order) {
      const res = await postJson('/v1/adam/step', { params: p, grads: g, state, hyperparams: { lr: 0.05 }, dtype: 'float32' });
      p = res.body.params;
      state = res.body.state;
      expect(replies.find((r) => r.body.step === step)!.body.params).toEqual(p);
    }
    const final = await opCall('GET', opt, '/params');
    expect(final.body).toEqual({ step: 50, params: p });
  });
});

describe('idempotency', () => {
  it('a retried Idempotency-Key is applied once and answers like the original', async () => {
    const opt = await createOptimizer({ params: [1, 2, 3], hyperparams: { lr: 0.1 } });
    const key = crypto.randomUUID();
    const first = await opCall('POST', opt, '/step', { grads: [1, 2, 3], loss: 2 }, { 'idempotency-key': key });
    const retry = await opCall('POST', opt, '/step', { grads: [1, 2, 3], loss: 2 }, { 'idempotency-key': key });
    expect(first.status).toBe(200);
    expect(retry.status).toBe(200);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(retry.body).toEqual({ ...first.body, replayed: true });
    expect((await opCall('GET', opt, '')).body.step).toBe(1);

    // Concurrent retries of one key: still one application.
    const key2 = crypto.randomUUID();
    const burst = await Promise.all(Array.from({ length: 10 }, () => opCall('POST', opt, '/step', { grads: [3, 2, 1] }, { 'idempotency-key': key2 })));
    expect(new Set(burst.map((r) => r.body.step))).toEqual(new Set([2]));
    expect(burst.filter((r) => r.body.replayed).length).toBe(9);
    expect((await opCall('GET', opt, '')).body.step).toBe(2);

    // Once later steps happened, a replay still answers step and lr, without stale params.
    await opCall('POST', opt, '/step', { grads: [1, 1, 1] });
    const late = await opCall('POST', opt, '/step', { grads: [1, 2, 3], loss: 2 }, { 'idempotency-key': key });
    expect(late.body).toEqual({ step: 1, lr: 0.1, replayed: true });

    // The same key with other gradients is refused.
    expectProblem(await opCall('POST', opt, '/step', { grads: [9, 9, 9] }, { 'idempotency-key': key }), 422, 'Idempotency-Key');
    expect((await opCall('GET', opt, '')).body.step).toBe(3);
  });
});

describe('durability', () => {
  it('state survives eviction and abort bit for bit', async () => {
    const opt = await createOptimizer({ params: { w: [[0.1, 0.2], [0.3, 0.4]], b: [0.5] }, hyperparams: { amsgrad: true, lr: 0.01 }, dtype: 'float32' });
    for (let k = 0; k < 5; k++) await opCall('POST', opt, '/step', { grads: { w: [[k, -k], [0.5, 1e-3]], b: [k / 3] }, loss: 5 - k });
    const before = await opCall('GET', opt, '/state');
    await evictDurableObject(stubOf(opt.id));
    const afterEvict = await opCall('GET', opt, '/state');
    expect(afterEvict.body).toEqual(before.body);
    await abortAllDurableObjects();
    const afterAbort = await opCall('GET', opt, '/state');
    expect(afterAbort.body).toEqual(before.body);
    // And the trajectory continues as if nothing happened.
    const next = await opCall('POST', opt, '/step', { grads: { w: [[1, 1], [1, 1]], b: [1] } });
    expect(next.body.step).toBe(6);
    expect((await opCall('GET', opt, '/history')).body.entries).toHaveLength(6);
  });

  it('stores tensors in BLOB chunks of at most 1 MiB and reloads them exactly', async () => {
    const n = 600_000; // 2.4 MB per float32 tensor: three chunks each
    const params = Array.from({ length: n }, (_, i) => Math.sin(i));
    const opt = await createOptimizer({ params, dtype: 'float32', hyperparams: { lr: 0.01 } });
    const grads = Array.from({ length: n }, (_, i) => Math.cos(i));
    const step = await opCall('POST', opt, '/step', { grads });
    expect(step.status).toBe(200);
    const sizes = await runInDurableObject(stubOf(opt.id), (_instance, state) =>
      state.storage.sql.exec<{ tensor: string; n: number; biggest: number }>("SELECT tensor, count(*) AS n, max(length(bytes)) AS biggest FROM tensor_chunks WHERE tensor IN ('params', 'm', 'v') GROUP BY tensor ORDER BY tensor").toArray(),
    );
    expect(sizes).toEqual([
      { tensor: 'm', n: 3, biggest: 1 << 20 },
      { tensor: 'params', n: 3, biggest: 1 << 20 },
      { tensor: 'v', n: 3, biggest: 1 << 20 },
    ]);
    await evictDurableObject(stubOf(opt.id));
    const reloaded = await opCall('GET', opt, '/params');
    expect(reloaded.body.params).toEqual(step.body.params);
  });

  it('streams snapshots beyond the 32 MiB RPC limit', async () => {
    const n = 700_000; // float64 + amsgrad: four tensors, ~60 MB of JSON
    const params = Array.from({ length: n }, (_, i) => Math.sin(i) * 1e-3);
    const opt = await createOptimizer({ params, dtype: 'float64', hyperparams: { amsgrad: true } });
    expect((await opCall('POST', opt, '/step?return=none', { grads: params })).status).toBe(200);
    const snap = await opCall('GET', opt, '/state');
    expect(snap.status).toBe(200);
    expect(snap.body.step).toBe(1);
    expect(snap.body.params).toHaveLength(n);
    expect(snap.body.v_max).toHaveLength(n);
    const params1 = await opCall('GET', opt, '/params');
    expect(snap.body.params).toEqual(params1.body.params);
  });

  it('DELETE removes every stored byte', async () => {
    const opt = await createOptimizer({ params: [1, 2, 3] });
    await opCall('POST', opt, '/step', { grads: [1, 1, 1] }, { 'idempotency-key': 'k1' });
    const tablesBefore = await runInDurableObject(stubOf(opt.id), (_i, state) =>
      state.storage.sql.exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\'").toArray().length,
    );
    expect(tablesBefore).toBeGreaterThan(0);
    expect((await opCall('DELETE', opt, '')).status).toBe(204);
    const left = await runInDurableObject(stubOf(opt.id), (_i, state) => ({
      tables: state.storage.sql.exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\'").toArray(),
    }));
    expect(left.tables).toEqual([]);
    await evictDurableObject(stubOf(opt.id));
    expectProblem(await opCall('GET', opt, ''), 404);
    expectProblem(await opCall('DELETE', opt, ''), 404);
  });
});

describe('fidelity of the hosted trajectory', () => {
  const cases = (trajectories as unknown as { cases: any[] }).cases.filter((c) => c.state === null);
  for (const c of cases.slice(0, 4)) {
    it(`${c.name}: hosted = stateless = torch, bit for bit`, async () => {
      const opt = await createOptimizer({ params: c.params, hyperparams: c.hyperparams, dtype: c.dtype });
      let params: unknown = c.params;
      let state: unknown;
      const expected = new Map(c.expected.map((e: any) => [e.step_index, e]));
      for (let i = 0; i < c.grads.length; i++) {
        const hosted = await opCall('POST', opt, '/step', { grads: c.grads[i] });
        const stateless = await postJson('/v1/adam/step', { params, grads: c.grads[i], state, hyperparams: c.hyperparams, dtype: c.dtype });
        params = stateless.body.params;
        state = stateless.body.state;
        expect(hosted.body.params).toEqual(params);
        const want: any = expected.get(i);
        if (want && c.dtype === 'float32') expect(params).toEqual(want.params);
      }
    });
  }
});
