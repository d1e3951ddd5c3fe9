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

  it('journals steps, rewrites chunks in turn, keeps every row within 1 MiB, and replays exactly', async () => {
    const n = 600_000; // 2.4 MB per float32 tensor
    const params = Array.from({ length: n }, (_, i) => Math.sin(i));
    const opt = await createOptimizer({ params, dtype: 'float32', hyperparams: { lr: 0.01 } });
    const grads = Array.from({ length: n }, (_, i) => Math.cos(i));
    let last: any;
    for (let k = 0; k < 3; k++) {
      last = await opCall('POST', opt, k < 2 ? '/step?return=none' : '/step', { grads });
      expect(last.status).toBe(200);
    }
    const stored = await runInDurableObject(stubOf(opt.id), (_instance, state) => {
      const sql = state.storage.sql;
      return {
        biggest: sql.exec<{ b: number }>('SELECT max(b) AS b FROM (SELECT max(length(bytes)) AS b FROM slot_chunks UNION ALL SELECT max(length(bytes)) FROM journal_parts UNION ALL SELECT max(length(bytes)) FROM tensor_chunks)').one().b,
        chunks: sql.exec<{ slot: string; idx: number; seq: number }>('SELECT slot, idx, seq FROM slot_chunks ORDER BY slot, idx').toArray(),
        journal: sql.exec<{ seq: number }>('SELECT seq FROM journal ORDER BY seq').toArray().map((r) => r.seq),
      };
    });
    expect(stored.biggest).toBe(1 << 20); // a journalled gradient's rows; checkpoint chunks are 256 KiB
    // 600,000 float32 elements are ten 256 KiB chunks per slot; a step rewrites ceil(10 / 8) = 2 of
    // them in turn (all slots together): chunks 0-1 at step 1, 2-3 at 2, 4-5 at 3, the rest still at 0.
    const expected = [1, 1, 2, 2, 3, 3, 0, 0, 0, 0].map((seq, idx) => [idx, seq]);
    for (const slot of ['params', 'exp_avg', 'exp_avg_sq']) {
      expect(stored.chunks.filter((c) => c.slot === slot).map((c) => [c.idx, c.seq])).toEqual(expected);
    }
    // Chunks 6-9 missed steps 1-3, so all three gradients stay journalled.
    expect(stored.journal).toEqual([1, 2, 3]);
    await evictDurableObject(stubOf(opt.id));
    const reloaded = await opCall('GET', opt, '/params');
    expect(reloaded.body).toEqual({ step: 3, params: last.body.params });
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

describe('stored format', () => {
  it('reads an optimizer stored before the journal (version 1), migrates it, and steps on exactly', async () => {
    // Written here as the version 1 code wrote it: whole tensors in 1 MiB tensor_chunks rows.
    const ns = env.HOSTED_OPTIMIZER;
    const id = ns.newUniqueId();
    const token = 'legacy-token';
    const tokenHash = [...new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(token)))].map((b) => b.toString(16).padStart(2, '0')).join('');
    const params = Float32Array.from([0.5, -1.25, 2, 3]);
    const m = Float32Array.from([0.01, -0.02, 0.03, 0]);
    const v = Float32Array.from([1e-4, 4e-4, 9e-4, 0]);
    const hyperparams = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0, decoupled_weight_decay: false, amsgrad: false, maximize: false };
    const layout = { kind: 'named', entries: [{ name: 'w', layout: { kind: 'tensor', shape: [3] } }, { name: 'b', layout: { kind: 'tensor', shape: [] } }] };
    await runInDurableObject(ns.get(id), (_instance, state) => {
      const sql = state.storage.sql;
      sql.exec('CREATE TABLE tensor_chunks (tensor TEXT NOT NULL, idx INTEGER NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (tensor, idx))');
      sql.exec('CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)');
      sql.exec('CREATE TABLE history (seq INTEGER PRIMARY KEY, step INTEGER NOT NULL, lr REAL NOT NULL, loss REAL, at TEXT NOT NULL)');
      sql.exec('CREATE TABLE idempotency (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, fingerprint TEXT NOT NULL, step INTEGER NOT NULL, lr REAL NOT NULL)');
      const meta = { version: 1, id: id.toString(), tokenHash, createdAt: '2026-11-26T00:00:00.000Z', updatedAt: '2026-11-26T00:00:00.000Z', step: 7, dtype: 'float32', size: 4, hyperparams, schedule: null, plateau: null, seq: 7 };
      sql.exec('INSERT INTO meta (k, v) VALUES (?, ?)', 'meta', JSON.stringify(meta));
      sql.exec('INSERT INTO tensor_chunks VALUES (?, 0, ?)', 'layout', new TextEncoder().encode(JSON.stringify(layout)));
      for (const [name, a] of [['params', params], ['m', m], ['v', v]] as const) sql.exec('INSERT INTO tensor_chunks VALUES (?, 0, ?)', name, new Uint8Array(a.buffer));
      sql.exec('INSERT INTO history VALUES (7, 7, 0.01, NULL, ?)', '2026-11-26T00:00:00.000Z');
    });
    await evictDurableObject(ns.get(id));
    const opt = { id: id.toString(), token };
    const snap = await opCall('GET', opt, '/state');
    expect(snap.status, JSON.stringify(snap.body)).toBe(200);
    expect(snap.body).toMatchObject({ step: 7, dtype: 'float32', params: { w: [0.5, -1.25, 2], b: 3 }, hyperparams });
    expect(snap.body.m).toEqual({ w: [...m.slice(0, 3)], b: m[3] });
    expect(snap.headers.get('etag')).not.toBe('"step-7"'); // never an ETag the old version issued
    // The next step equals the stateless step from the same state.
    const grads = { w: [0.1, 0.2, -0.3], b: 1 };
    const hosted = await opCall('POST', opt, '/step', { grads });
    const stateless = await postJson('/v1/adam/step', { params: snap.body.params, grads, state: { step: 7, m: snap.body.m, v: snap.body.v }, hyperparams, dtype: 'float32' });
    expect(hosted.body).toEqual({ step: 8, lr: 0.01, params: stateless.body.params });
    expect((await opCall('GET', opt, '/history')).body.entries.map((e: { step: number }) => e.step)).toEqual([7, 8]);
    const left = await runInDurableObject(ns.get(id), (_i, state) =>
      state.storage.sql.exec<{ tensor: string }>('SELECT DISTINCT tensor FROM tensor_chunks ORDER BY tensor').toArray().map((r) => r.tensor),
    );
    expect(left).toEqual(['layout']);
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
