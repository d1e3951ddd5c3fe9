// Frozen tensors on sharded hosted optimizers, through HTTP: a `null` gradient (JSON) or a tensor left
// out of a safetensors file leaves that tensor, its state and its own step count alone on every shard
// holding a piece of it, as torch skips a parameter whose .grad is None. Checked bit for bit against
// the stateless step (itself tested against torch in optim-controls and hosted-frozen) given the same
// sequence: params at every step, the state gathered from the shards (per-tensor counters included),
// clip_grad_norm_ over the tensors that have a gradient, shards evicted between steps, snapshots
// (JSON and safetensors) restored into sharded and unsharded optimizers, and Idempotency-Key retries.

import { evictDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { callBytes, postJson } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, type Created } from './helpers/optimizers.ts';
import { decodeValues, encodeValues, readSafetensors, writeSafetensors } from './helpers/safetensors.ts';
import { leavesOf } from './helpers/trees.ts';

type Json = Record<string, any>;
type Grads = Record<string, unknown>;

const ST = 'application/vnd.safetensors';
const DTYPE = 'float32';

// 13 elements in 10 rows: with 4 or 7 shards some tensors are cut between shards.
const PARAMS = { a: [0.5, -1.25, 2, 0.125, -3, 1.5], b: [[1, -0.5], [0.25, 3], [-2, 0.75]], c: [-0.75] };
const G = (k: number) => ({
  a: [0.1 * k, -0.2, 0.3 + k, -0.05 * k, 0.6, -1.1 + 0.2 * k],
  b: [[0.05, -0.4 * k], [0.7, -0.01], [0.3 * k, 0.2]],
  c: [0.9 - 0.1 * k],
});

/** Which tensors are frozen at each step: b first, then a, none, two, all, none, c... */
const FROZEN: string[][] = [['b'], ['a'], [], ['b', 'c'], ['a', 'b', 'c'], [], ['c'], []];
const gradsAt = (s: number, frozen = FROZEN): Grads => Object.fromEntries(Object.entries(G(s + 1)).map(([k, v]) => [k, frozen[s]!.includes(k) ? null : v]));

interface Case {
  optimizer: string;
  hyperparams: Json;
  shards: number;
}

const CASES: Case[] = [
  // clip_grad_norm_'s total norm counts only the tensors that have a gradient.
  { optimizer: 'adam', hyperparams: { lr: 0.01, weight_decay: 0.1, amsgrad: true, clip_grad_norm: 0.5 }, shards: 4 },
  { optimizer: 'sgd', hyperparams: { lr: 0.1, momentum: 0.9, nesterov: true }, shards: 7 },
  { optimizer: 'nadam', hyperparams: { lr: 0.02 }, shards: 4 },
  { optimizer: 'adamw', hyperparams: { lr: 0.01, clip_grad_value: 0.5 }, shards: 3 },
];

const evictAll = async (opt: Created, shards: number) => {
  for (let i = 0; i < shards; i++) await evictDurableObject(env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/${i}`)));
  await evictDurableObject(env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(opt.id)));
};

/** The state fields of a JSON snapshot (everything that is not metadata, params or groups). */
function stateOf(snapshot: Json): Json {
  const { id: _i, optimizer: _o, dtype: _d, hyperparams: _h, param_groups: _g, schedule: _s, scheduler_state: _ss, params: _p, created_at: _c, updated_at: _u, ...state } = snapshot;
  return state;
}

/** Every leaf, null included, by path: equal means bit for bit (Object.is). */
function diffs(label: string, actual: unknown, expected: unknown): string[] {
  const a = new Map(leavesOf(actual).map((l) => [l.path, l.value]));
  const e = new Map(leavesOf(expected).map((l) => [l.path, l.value]));
  const out: string[] = [];
  for (const k of new Set([...a.keys(), ...e.keys()])) if (!Object.is(a.get(k), e.get(k))) out.push(`${label}${k}: ${a.get(k)} != ${e.get(k)}`);
  return out;
}

async function stateless(c: Case, params: unknown, grads: Grads, state: Json | null): Promise<Json> {
  const r = await postJson(`/v1/${c.optimizer}/step`, { params, grads, dtype: DTYPE, hyperparams: c.hyperparams, ...(state ? { state } : {}) });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}

/** One hosted step: JSON with nulls, or safetensors leaving the frozen tensors out (in reverse order). */
async function hosted(opt: Created, grads: Grads, format: 'json' | 'safetensors', headers: Record<string, string> = {}): Promise<{ status: number; type: string; body: Json }> {
  if (format === 'json') return opCall('POST', opt, '/step', { grads }, headers);
  const file = writeSafetensors(
    Object.entries(grads)
      .filter(([, v]) => v !== null)
      .reverse()
      .map(([name, v]) => ({ name, dtype: 'F32' as const, shape: Array.isArray((v as unknown[])[0]) ? [(v as unknown[]).length, ((v as unknown[])[0] as unknown[]).length] : [(v as unknown[]).length], data: encodeValues(leavesOf(v).map((l) => l.value as number), 'F32') })),
  );
  return callBytes('POST', `/v1/optimizers/${opt.id}/step`, file, authed(opt.token, { 'content-type': ST, accept: 'application/json', ...headers }));
}

/** The stateless state restricted to what a hosted snapshot carries (SGD: the hosted optimizer counts steps anyway). */
function comparable(c: Case, state: Json, snap: Json): [Json, Json] {
  const { shards: _shards, ...got } = stateOf(snap);
  const want = { ...state };
  if (c.optimizer === 'sgd' && want.step === undefined) delete got.step;
  return [got, want];
}

describe.each(CASES.map((c) => ({ c, name: `${c.optimizer} over ${c.shards} shards` })))('$name: frozen tensors equal the stateless step', ({ c }) => {
  it('bit for bit at every step (JSON nulls and safetensors files without the tensor), across eviction, snapshots and restores', { timeout: 180_000 }, async () => {
    const opt = await createOptimizer({ optimizer: c.optimizer, dtype: DTYPE, params: PARAMS, hyperparams: c.hyperparams, shards: c.shards });
    expect(opt.body.shards).toBe(c.shards);
    let params: unknown = PARAMS;
    let state: Json | null = null;
    const problems: string[] = [];
    for (let s = 0; s < FROZEN.length; s++) {
      const want = await stateless(c, params, gradsAt(s), state);
      params = want.params;
      state = want.state;
      const got = await hosted(opt, gradsAt(s), s % 2 === 0 ? 'json' : 'safetensors');
      expect(got.status, JSON.stringify(got.body)).toBe(200);
      expect(got.body.step).toBe(s + 1);
      if (want.grad_norm !== undefined) expect(got.body.grad_norm, `step ${s} grad_norm`).toBe(want.grad_norm);
      problems.push(...diffs(`step ${s} params`, got.body.params, want.params));
      if (s === 2 || s === 4) await evictAll(opt, c.shards); // the shards' per-piece counters come back from storage
      const snap = await opCall('GET', opt, '/state');
      expect(snap.status).toBe(200);
      const [g, w] = comparable(c, want.state, snap.body);
      problems.push(...diffs(`step ${s} state`, g, w));
    }
    expect(problems.slice(0, 10)).toEqual([]);
    if (c.optimizer === 'adam' || c.optimizer === 'nadam') expect(Object.keys(state!.tensors ?? {}).length).toBeGreaterThan(0);

    // The checkpoint's step/<name> carries each tensor's own count, gathered from the shards.
    const file = await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, authed(opt.token, { accept: ST }));
    expect(file.status).toBe(200);
    const ckpt = readSafetensors(file.bytes);
    if (c.optimizer !== 'sgd') {
      for (const name of ['a', 'b', 'c']) {
        const own = (state!.tensors?.[name]?.step ?? state!.step) as number;
        expect(decodeValues(ckpt.tensors.get(`step/${name}`)!), name).toEqual([own]);
      }
    }
    // Snapshots restored into new optimizers, sharded (another count) and not, go on as the stateless step does.
    const json = await opCall('GET', opt, '/state');
    const next = (s: number): Grads => Object.fromEntries(Object.entries(G(20 + s)).map(([k, v]) => [k, s === 0 && k === 'a' ? null : v]));
    const wants: Json[] = [];
    let p2 = params;
    let s2 = state;
    for (let s = 0; s < 2; s++) {
      const w = await stateless(c, p2, next(s), s2);
      wants.push(w);
      p2 = w.params;
      s2 = w.state;
    }
    for (const [body, shards] of [[json.body, 2], [file.bytes, 5], [json.body, undefined], [file.bytes, undefined]] as const) {
      const into = await createOptimizer({ optimizer: c.optimizer, dtype: DTYPE, params: PARAMS, hyperparams: c.hyperparams, ...(shards ? { shards } : {}) });
      const put = body instanceof Uint8Array ? await callBytes('PUT', `/v1/optimizers/${into.id}/state`, body, authed(into.token, { 'content-type': ST })) : await opCall('PUT', into, '/state', body);
      expect(put.status, JSON.stringify(put.body)).toBe(200);
      const back = await opCall('GET', into, '/state');
      const [g0, w0] = comparable(c, state!, back.body);
      expect(diffs(`restored into ${shards ?? 1}`, g0, w0)).toEqual([]);
      for (let s = 0; s < 2; s++) {
        const got = await hosted(into, next(s), s === 0 ? 'safetensors' : 'json');
        expect(got.status, JSON.stringify(got.body)).toBe(200);
        expect(diffs(`after restore into ${shards ?? 1}, step ${s} params`, got.body.params, wants[s]!.params)).toEqual([]);
      }
      if (shards) await evictAll(into, shards);
      const snap = await opCall('GET', into, '/state');
      const [g, w] = comparable(c, wants[1]!.state, snap.body);
      expect(diffs(`after restore into ${shards ?? 1} state`, g, w)).toEqual([]);
    }
  });
});

describe('frozen tensors on a sharded optimizer: retries, every tensor frozen, bad nulls', () => {
  const hp = { lr: 0.01 };
  it('an Idempotency-Key retry with the same frozen tensors replays (in either format); with others it is a 422 and changes nothing', async () => {
    const opt = await createOptimizer({ optimizer: 'adam', dtype: DTYPE, params: PARAMS, hyperparams: hp, shards: 4 });
    const key = { 'idempotency-key': 'sharded-frozen-1' };
    const first = await hosted(opt, gradsAt(0), 'json', key);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    const again = await hosted(opt, gradsAt(0), 'safetensors', key);
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body.replayed).toBe(true);
    expect(again.body.step).toBe(1);
    // b frozen before; now a frozen instead, or b sent as zeros: other steps under the same key.
    const other = await hosted(opt, gradsAt(1), 'json', key);
    expectProblem(other, 422, 'Idempotency-Key');
    const zeros = await hosted(opt, { ...gradsAt(0), b: [[0, 0], [0, 0], [0, 0]] }, 'json', key);
    expectProblem(zeros, 422, 'Idempotency-Key');
    const info = await opCall('GET', opt, '');
    expect(info.body.step).toBe(1);
    // And the state is that of the one step.
    const want = await stateless({ optimizer: 'adam', hyperparams: hp, shards: 4 }, PARAMS, gradsAt(0), null);
    const snap = await opCall('GET', opt, '/state');
    expect(diffs('state', comparable({ optimizer: 'adam', hyperparams: hp, shards: 4 }, want.state, snap.body)[0], want.state)).toEqual([]);
  });

  it('every tensor frozen: the step counts, nothing else changes (torch: no parameter has a gradient)', async () => {
    const c = { optimizer: 'nadam', hyperparams: { lr: 0.02 }, shards: 4 };
    const opt = await createOptimizer({ optimizer: c.optimizer, dtype: DTYPE, params: PARAMS, hyperparams: c.hyperparams, shards: c.shards });
    const all: Grads = { a: null, b: null, c: null };
    const s0 = await stateless(c, PARAMS, gradsAt(0), null);
    const s1 = await stateless(c, s0.params, all, s0.state);
    const s2 = await stateless(c, s1.params, gradsAt(2), s1.state);
    for (const [g, want] of [[gradsAt(0), s0], [all, s1], [gradsAt(2), s2]] as const) {
      const r = await hosted(opt, g, 'json');
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(diffs('params', r.body.params, want.params)).toEqual([]);
    }
    const snap = await opCall('GET', opt, '/state');
    const [g, w] = comparable(c, s2.state, snap.body);
    expect(diffs('state', g, w)).toEqual([]);
  });

  it('clip_grad_norm_ stacks the norms of the tensors that have a gradient only (12 tensors: a frozen one would shift the lanes)', async () => {
    const names = Array.from({ length: 12 }, (_, i) => `p${String(i).padStart(2, '0')}`);
    const params = Object.fromEntries(names.map((n, i) => [n, [Math.sin(i + 1), Math.cos(i + 2), 0.5 * i]]));
    const c = { optimizer: 'sgd', hyperparams: { lr: 0.1, clip_grad_norm: 0.25 }, shards: 3 };
    const opt = await createOptimizer({ optimizer: c.optimizer, dtype: DTYPE, params, hyperparams: c.hyperparams, shards: c.shards });
    let p: unknown = params;
    for (let s = 0; s < 16; s++) {
      // Magnitudes far apart, so the order of the sum of squares shows in the last bits.
      const grads: Grads = Object.fromEntries(names.map((n, i) => [n, (i + s) % 4 === 0 ? null : [Math.exp(i - 6) * (1 + s / 7), -Math.exp(3 - i) / 3, Math.tan(i + s) / 9]]));
      const want = await stateless(c, p, grads, null);
      p = want.params;
      // SGD without momentum keeps no state: each step is the stateless step from the current params.
      const got = await hosted(opt, grads, s % 2 === 0 ? 'json' : 'safetensors');
      expect(got.status, JSON.stringify(got.body)).toBe(200);
      expect(got.body.grad_norm, `step ${s}`).toBe(want.grad_norm);
      expect(diffs(`step ${s} params`, got.body.params, want.params)).toEqual([]);
    }
  });

  it('a null that names no tensor, and an empty safetensors file, are 422s that change nothing', async () => {
    const opt = await createOptimizer({ optimizer: 'adam', dtype: DTYPE, params: PARAMS, hyperparams: hp, shards: 4 });
    const bad = await opCall('POST', opt, '/step', { grads: { ...G(1), d: null } });
    expectProblem(bad, 422);
    const empty = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, writeSafetensors([]), authed(opt.token, { 'content-type': ST, accept: 'application/json' }));
    expectProblem(empty, 422, 'safetensors');
    expect((await opCall('GET', opt, '')).body.step).toBe(0);
    const ok = await hosted(opt, gradsAt(0), 'json');
    expect(ok.status).toBe(200);
    expect(ok.body.step).toBe(1);
  });
});
