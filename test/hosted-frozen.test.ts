// Frozen tensors on hosted optimizers, through HTTP: a `null` gradient (JSON) or a tensor left out
// of a safetensors file leaves that tensor, its state and its own step count alone, as torch skips
// a parameter whose .grad is None. A hosted optimizer given a sequence of such steps equals the
// stateless step (POST /v1/{optimizer}/step, itself tested against torch in optim-controls) given
// the same sequence, bit for bit: params, state and per-tensor counters, across eviction (per-tensor
// counters are stored), JSON and safetensors snapshots restored into new optimizers, and
// Idempotency-Key retries (a retry freezing other tensors is another request).

import { evictDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { callBytes, postJson } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, type Created } from './helpers/optimizers.ts';
import { decodeValues, encodeValues, readSafetensors, writeSafetensors } from './helpers/safetensors.ts';
import { leavesOf } from './helpers/trees.ts';

type Json = Record<string, any>;
type Grads = Record<string, unknown>;

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));
const ST = 'application/vnd.safetensors';

const PARAMS = { a: [0.5, -1.25, 2], b: [[1, -0.5], [0.25, 3]], c: [-0.75] };
const G = (k: number) => ({ a: [0.1 * k, -0.2, 0.3 + k], b: [[0.05, -0.4 * k], [0.7, -0.01]], c: [0.9 - 0.1 * k] });

/** Which tensors are frozen at each step: b first, then a, none, two, all, none, c... */
const FROZEN: string[][] = [['b'], ['a'], [], ['b', 'c'], ['a', 'b', 'c'], [], ['c'], []];

const gradsAt = (s: number): Grads => Object.fromEntries(Object.entries(G(s + 1)).map(([k, v]) => [k, FROZEN[s]!.includes(k) ? null : v]));

interface Case {
  optimizer: string;
  hyperparams: Json;
}

const CASES: Case[] = [
  { optimizer: 'adam', hyperparams: { lr: 0.01, weight_decay: 0.1, amsgrad: true } },
  { optimizer: 'sgd', hyperparams: { lr: 0.1, momentum: 0.9, nesterov: true } },
  { optimizer: 'nadam', hyperparams: { lr: 0.02 } },
];

const DTYPE = 'float32';

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

/** One stateless step from `state` (null: fresh). */
async function stateless(c: Case, params: unknown, grads: Grads, state: Json | null): Promise<Json> {
  const r = await postJson(`/v1/${c.optimizer}/step`, { params, grads, dtype: DTYPE, hyperparams: c.hyperparams, ...(state ? { state } : {}) });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}

/** One hosted step: JSON with nulls, or safetensors leaving the frozen tensors out. */
async function hosted(opt: Created, grads: Grads, format: 'json' | 'safetensors', headers: Record<string, string> = {}): Promise<{ status: number; body: Json }> {
  if (format === 'json') return opCall('POST', opt, '/step', { grads }, headers);
  const file = writeSafetensors(
    Object.entries(grads)
      .filter(([, v]) => v !== null)
      .map(([name, v]) => ({ name, dtype: 'F32' as const, shape: Array.isArray((v as unknown[])[0]) ? [(v as unknown[]).length, ((v as unknown[])[0] as unknown[]).length] : [(v as unknown[]).length], data: encodeValues(leavesOf(v).map((l) => l.value as number), 'F32') })),
  );
  return callBytes('POST', `/v1/optimizers/${opt.id}/step`, file, authed(opt.token, { 'content-type': ST, accept: 'application/json', ...headers }));
}

/** The stateless state restricted to what a hosted snapshot carries: same keys (SGD: the hosted optimizer counts steps anyway). */
function comparable(c: Case, state: Json, snap: Json): [Json, Json] {
  const got = stateOf(snap);
  const want = { ...state };
  if (c.optimizer === 'sgd' && want.step === undefined) delete got.step;
  return [got, want];
}

describe.each(CASES.map((c) => ({ c, name: c.optimizer })))('$name: frozen tensors on a hosted optimizer equal the stateless step', ({ c }) => {
  it('bit for bit at every step (JSON nulls and safetensors files without the tensor), across eviction and snapshots', { timeout: 120_000 }, async () => {
    const opt = await createOptimizer({ optimizer: c.optimizer, dtype: DTYPE, params: PARAMS, hyperparams: c.hyperparams });
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
      problems.push(...diffs(`step ${s} params`, got.body.params, want.params));
      if (s === 2 || s === 4) await evictDurableObject(stubOf(opt.id)); // the per-tensor counters come back from storage
      const snap = await opCall('GET', opt, '/state');
      expect(snap.status).toBe(200);
      const [g, w] = comparable(c, want.state, snap.body);
      problems.push(...diffs(`step ${s} state`, g, w));
    }
    expect(problems.slice(0, 10)).toEqual([]);
    // The counts do differ by now (so the comparison above covered per-tensor counters).
    if (c.optimizer !== 'sgd') expect(Object.keys(state!.tensors ?? {}).length).toBeGreaterThan(0);
    if (c.optimizer === 'sgd') expect(state!.momentum_buffer).not.toBeNull();

    // The checkpoint's step/<name> carries each tensor's own count (SGD has none).
    const file = await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, authed(opt.token, { accept: ST }));
    expect(file.status).toBe(200);
    const ckpt = readSafetensors(file.bytes);
    if (c.optimizer !== 'sgd') {
      for (const name of ['a', 'b', 'c']) {
        const own = (state!.tensors?.[name]?.step ?? state!.step) as number;
        expect(decodeValues(ckpt.tensors.get(`step/${name}`)!), name).toEqual([own]);
      }
    }
    // Snapshots restored into new optimizers go on as the stateless step does.
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
    for (const body of [json.body, file.bytes]) {
      const into = await createOptimizer({ optimizer: c.optimizer, dtype: DTYPE, params: PARAMS, hyperparams: c.hyperparams });
      const put = body instanceof Uint8Array ? await callBytes('PUT', `/v1/optimizers/${into.id}/state`, body, authed(into.token, { 'content-type': ST })) : await opCall('PUT', into, '/state', body);
      expect(put.status, JSON.stringify(put.body)).toBe(200);
      const back = await opCall('GET', into, '/state');
      const [g0, w0] = comparable(c, state!, back.body);
      expect(diffs('restored', g0, w0)).toEqual([]);
      for (let s = 0; s < 2; s++) {
        const got = await hosted(into, next(s), s === 0 ? 'safetensors' : 'json');
        expect(got.status, JSON.stringify(got.body)).toBe(200);
        expect(diffs(`after restore ${s} params`, got.body.params, wants[s]!.params)).toEqual([]);
      }
      await evictDurableObject(stubOf(into.id));
      const snap = await opCall('GET', into, '/state');
      const [g, w] = comparable(c, wants[1]!.state, snap.body);
      expect(diffs('after restore state', g, w)).toEqual([]);
    }
  });
});

describe.each([
  { optimizer: 'adam', hyperparams: { lr: 0.001 } },
  { optimizer: 'sgd', hyperparams: { lr: 0.01, momentum: 0.9 } },
])('$optimizer over three checkpoint chunks, evicted after every step', ({ optimizer, hyperparams }) => {
  it('a step with frozen tensors is stored whole (a journal replay would step every tensor), and equals the stateless step', { timeout: 120_000 }, async () => {
    // 70,000 + 70,000 + 3 float32 elements: three 64 Ki-element chunks, so other steps are journalled.
    const n = 70_000;
    const params = { a: Array.from({ length: n }, (_, i) => Math.sin(i) / 2), b: Array.from({ length: n }, (_, i) => Math.cos(i) / 3), c: [1, 2, 3] };
    const grads = (k: number) => ({ a: params.a.map((x, i) => Math.sin(x + k + i)), b: params.b.map((x, i) => Math.cos(x * k + i) / 4), c: [k, -k, 0.5] });
    const frozen = [['c'], [], ['a'], [], ['b', 'c']];
    const opt = await createOptimizer({ optimizer, dtype: 'float32', params, hyperparams });
    const c: Case = { optimizer, hyperparams };
    let p: unknown = params;
    let state: Json | null = null;
    for (let k = 0; k < frozen.length; k++) {
      const g: Grads = Object.fromEntries(Object.entries(grads(k)).map(([name, v]) => [name, frozen[k]!.includes(name) ? null : v]));
      const got = await hosted(opt, g, 'safetensors', {});
      expect(got.status, JSON.stringify(got.body)).toBe(200);
      await evictDurableObject(stubOf(opt.id));
      const want = await stateless(c, p, g, state);
      p = want.params;
      state = want.state;
    }
    const snap = await opCall('GET', opt, '/state');
    expect(diffs('params', snap.body.params, p).slice(0, 5)).toEqual([]);
    const [g, w] = comparable(c, state!, snap.body);
    expect(diffs('state', g, w).slice(0, 5)).toEqual([]);
  });
});

describe('frozen tensors: SGD\'s lazy buffer, retries and bad nulls', () => {
  it('a tensor never stepped keeps no momentum buffer (null in the snapshot, absent from the checkpoint), also after eviction', async () => {
    const hp = { lr: 0.1, momentum: 0.9 };
    const opt = await createOptimizer({ optimizer: 'sgd', dtype: 'float64', params: { a: [1], b: [2] }, hyperparams: hp });
    const r = await opCall('POST', opt, '/step', { grads: { a: [1], b: null } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.params).toEqual({ a: [0.9], b: [2] });
    await evictDurableObject(stubOf(opt.id));
    const snap = await opCall('GET', opt, '/state');
    expect(snap.body.momentum_buffer).toEqual({ a: [1], b: null });
    const file = await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, authed(opt.token, { accept: ST }));
    const ckpt = readSafetensors(file.bytes);
    expect(ckpt.tensors.has('momentum_buffer/a')).toBe(true);
    expect(ckpt.tensors.has('momentum_buffer/b')).toBe(false);
    const next = await opCall('POST', opt, '/step', { grads: { a: [1], b: [1] } });
    expect(next.status).toBe(200);
    const after = await opCall('GET', opt, '/state');
    expect(after.body.momentum_buffer).toEqual({ a: [1.9], b: [1] }); // b's buffer starts as a clone of its gradient
  });

  it('an Idempotency-Key retry with the same frozen tensors replays; with others it is a 422 and changes nothing', async () => {
    const opt = await createOptimizer({ optimizer: 'adam', dtype: 'float64', params: { a: [1], b: [2] }, hyperparams: { lr: 0.1 } });
    const key = { 'idempotency-key': 'frozen-1' };
    const first = await opCall('POST', opt, '/step', { grads: { a: [1], b: null } }, key);
    expect(first.status).toBe(200);
    const again = await opCall('POST', opt, '/step', { grads: { a: [1], b: null } }, key);
    expect(again.status).toBe(200);
    expect(again.body.replayed).toBe(true);
    // A zero gradient is not a frozen tensor: another request.
    expectProblem(await opCall('POST', opt, '/step', { grads: { a: [1], b: [0] } }, key), 422, 'Idempotency-Key');
    const other = await hosted(opt, { a: null, b: [0] }, 'safetensors', key);
    expect(other.status).toBe(422);
    const snap = await opCall('GET', opt, '/state');
    expect(snap.body.step).toBe(1);
    expect(snap.body.tensors).toEqual({ b: { step: 0 } });
    expect(snap.body.params).toEqual({ a: [first.body.params.a[0]], b: [2] });
  });

  it('a null that names no tensor (an object of tensors, an unknown name) is a 422 naming it', async () => {
    const opt = await createOptimizer({ optimizer: 'adam', params: { enc: { w: [1], b: [2] }, head: [3] }, hyperparams: { lr: 0.1 } });
    expectProblem(await opCall('POST', opt, '/step', { grads: { enc: null, head: [1] } }), 422, 'grads.enc');
    expectProblem(await opCall('POST', opt, '/step', { grads: { enc: { w: [1], b: [1] }, head: [1], extra: null } }), 422, 'grads.extra');
    expectProblem(await opCall('POST', opt, '/step', { grads: { enc: { w: null }, head: [1] } }), 422);
    const ok = await opCall('POST', opt, '/step', { grads: { enc: { w: null, b: null }, head: null } });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.params).toEqual({ enc: { w: [1], b: [2] }, head: [3] });
    expect(ok.body.step).toBe(1);
  });

  it('PUT /state takes per-tensor step counts (checked) and the next step uses each tensor\'s own', async () => {
    const hp = { lr: 0.1 };
    const opt = await createOptimizer({ optimizer: 'adam', dtype: 'float64', params: { a: [1], b: [2] }, hyperparams: hp });
    const state = { step: 3, m: { a: [0.1], b: [0.2] }, v: { a: [0.01], b: [0.04] }, tensors: { b: { step: 1 } } };
    const put = await opCall('PUT', opt, '/state', { optimizer: 'adam', dtype: 'float64', hyperparams: hp, schedule: null, params: { a: [1], b: [2] }, ...state });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    const want = await postJson('/v1/adam/step', { params: { a: [1], b: [2] }, grads: { a: [0.5], b: [0.5] }, dtype: 'float64', hyperparams: hp, state });
    const got = await opCall('POST', opt, '/step', { grads: { a: [0.5], b: [0.5] } });
    expect(got.body.params).toEqual(want.body.params);
    expect((await opCall('GET', opt, '/state')).body.tensors).toEqual(want.body.state.tensors);
    const bad = await opCall('PUT', opt, '/state', { optimizer: 'adam', dtype: 'float64', hyperparams: hp, schedule: null, params: { a: [1], b: [2] }, ...state, tensors: { b: { step: 1.5 } } });
    expectProblem(bad, 422, 'tensors.b.step');
  });
});
