// Hosted optimizers stored before the optimizer registry (version 2 metadata with no `optimizer`,
// `slots` or `scalars`; Adam's state in slot_chunks rows named exp_avg, exp_avg_sq,
// max_exp_avg_sq; journal entries with Adam's hyperparameters and no scalars) load and keep
// stepping bit-identically. The rows are written here as that code wrote them (the tables and
// JSON it used, copied), not through today's store.

import { evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { postJson } from './helpers/http.ts';
import { opCall } from './helpers/optimizers.ts';

/** The tables of the pre-registry store (src/durable-objects/store.ts at c098241). */
const LEGACY_SCHEMA = [
  'CREATE TABLE IF NOT EXISTS tensor_chunks (tensor TEXT NOT NULL, idx INTEGER NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (tensor, idx))',
  'CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)',
  'CREATE TABLE IF NOT EXISTS slot_chunks (slot TEXT NOT NULL, idx INTEGER NOT NULL, seq INTEGER NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (slot, idx))',
  'CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL)',
  'CREATE TABLE IF NOT EXISTS journal_parts (seq INTEGER NOT NULL, part INTEGER NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (seq, part))',
  'CREATE TABLE IF NOT EXISTS history (seq INTEGER PRIMARY KEY, step INTEGER NOT NULL, lr REAL NOT NULL, loss REAL, at TEXT NOT NULL)',
  'CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, fingerprint TEXT NOT NULL, step INTEGER NOT NULL, lr REAL NOT NULL)',
];

const sha256Hex = async (text: string) =>
  [...new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)))].map((b) => b.toString(16).padStart(2, '0')).join('');

const f32 = (values: unknown) => new Uint8Array(Float32Array.from((values as { w: number[]; b: number }).w.concat((values as { b: number }).b)).buffer);

describe('an optimizer stored before the registry (Adam layout, no optimizer name)', () => {
  it.each([false, true])('amsgrad %s: loads, replays its journal, answers snapshots with m/v/v_max and steps exactly as /v1/adam/step', async (amsgrad) => {
    const hyperparams = { lr: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-8, weight_decay: 0.1, decoupled_weight_decay: false, amsgrad, maximize: false };
    const p0 = { w: [0.5, -1.25, 2], b: 3 };
    const grads = [
      { w: [0.1, 0.2, -0.3], b: 1 },
      { w: [-0.4, 0.05, 0.3], b: -0.5 },
      { w: [0.25, -0.125, 0.7], b: 0.01 },
    ];
    // The stateless Adam (tested against torch) gives the states after each step.
    const states: Array<{ params: any; state: any }> = [];
    let params: unknown = p0;
    let state: unknown;
    for (const g of grads) {
      const r = await postJson('/v1/adam/step', { params, grads: g, state, hyperparams, dtype: 'float32' });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      ({ params, state } = r.body);
      states.push({ params, state });
    }

    // Stored as the old code stored it after 2 steps: chunk 0 at step 1, step 2 in the journal.
    const ns = env.HOSTED_OPTIMIZER;
    const id = ns.newUniqueId();
    const token = 'pre-registry-token';
    const tokenHash = await sha256Hex(token);
    const layout = { kind: 'named', entries: [{ name: 'w', layout: { kind: 'tensor', shape: [3] } }, { name: 'b', layout: { kind: 'tensor', shape: [] } }] };
    await runInDurableObject(ns.get(id), (_instance, st) => {
      const sql = st.storage.sql;
      for (const statement of LEGACY_SCHEMA) sql.exec(statement);
      const meta = {
        version: 2, id: id.toString(), tokenHash, createdAt: '2026-11-30T00:00:00.000Z', updatedAt: '2026-11-30T00:00:00.000Z',
        step: 2, seq: 2, revision: 2, dtype: 'float32', size: 4, hyperparams, schedule: null, plateau: null, cursor: 0, missing: [],
      };
      sql.exec('INSERT INTO meta (k, v) VALUES (?, ?)', 'meta', JSON.stringify(meta));
      sql.exec('INSERT INTO tensor_chunks VALUES (?, 0, ?)', 'layout', new TextEncoder().encode(JSON.stringify(layout)));
      const s1 = states[0]!;
      const rows: Array<[string, unknown]> = [['params', s1.params], ['exp_avg', s1.state.m], ['exp_avg_sq', s1.state.v]];
      if (amsgrad) rows.push(['max_exp_avg_sq', s1.state.v_max]);
      for (const [slot, values] of rows) sql.exec('INSERT INTO slot_chunks (slot, idx, seq, bytes) VALUES (?, 0, 1, ?)', slot, f32(values));
      sql.exec('INSERT INTO journal (seq, entry) VALUES (2, ?)', JSON.stringify({ seq: 2, step: 1, lr: 0.01, hyperparams }));
      sql.exec('INSERT INTO journal_parts (seq, part, bytes) VALUES (2, 0, ?)', f32(grads[1]));
      sql.exec('INSERT INTO history VALUES (1, 1, 0.01, NULL, ?)', '2026-11-30T00:00:00.000Z');
      sql.exec('INSERT INTO history VALUES (2, 2, 0.01, NULL, ?)', '2026-11-30T00:00:00.000Z');
    });
    await evictDurableObject(ns.get(id));
    const opt = { id: id.toString(), token };

    const info = await opCall('GET', opt, '');
    expect(info.status, JSON.stringify(info.body)).toBe(200);
    expect(info.body).toMatchObject({ optimizer: 'adam', step: 2, hyperparams });

    const snap = await opCall('GET', opt, '/state');
    expect(snap.status).toBe(200);
    const s2 = states[1]!;
    expect(snap.body).toMatchObject({ optimizer: 'adam', step: 2, params: s2.params, m: s2.state.m, v: s2.state.v });
    if (amsgrad) expect(snap.body.v_max).toEqual(s2.state.v_max);
    else expect(snap.body.v_max).toBeUndefined();

    const hosted = await opCall('POST', opt, '/step', { grads: grads[2] });
    expect(hosted.body).toEqual({ step: 3, lr: 0.01, params: states[2]!.params });
    await evictDurableObject(ns.get(id));
    const after = await opCall('GET', opt, '/state');
    expect(after.body).toMatchObject({ step: 3, params: states[2]!.params, m: states[2]!.state.m, v: states[2]!.state.v });
    expect((await opCall('GET', opt, '/history')).body.entries.map((e: { step: number }) => e.step)).toEqual([1, 2, 3]);
    // The rows keep torch's names; the metadata now names the optimizer and its slots.
    const stored = await runInDurableObject(ns.get(id), (_i, st) => ({
      slots: st.storage.sql.exec<{ slot: string }>('SELECT DISTINCT slot FROM slot_chunks ORDER BY slot').toArray().map((r) => r.slot),
      meta: JSON.parse(st.storage.sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = 'meta'").one().v),
    }));
    expect(stored.slots).toEqual(amsgrad ? ['exp_avg', 'exp_avg_sq', 'max_exp_avg_sq', 'params'] : ['exp_avg', 'exp_avg_sq', 'params']);
    expect(stored.meta).toMatchObject({ optimizer: 'adam', step: 3 });
  });
});
