// A checkpoint of another layout or dtype restored into a sharded optimizer (PUT state): placed
// again over its shards (as many as before, as many as it has rows when fewer, more when they
// cannot hold it). Checked against real torch 1.13: its checkpoints (test/fixtures/checkpoint,
// as in checkpoint-torch.test.ts) restored into sharded optimizers of other layouts, dtypes and
// shard counts, then stepped with the gradients torch was fed next, must give torch's params and
// moments bit for bit at every step. A JSON snapshot of another tree restores as into one object.
// A refused checkpoint changes nothing and leaves no shard object behind; shards a smaller
// placement leaves are removed, also when the coordinator fails after its decision.

import { evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, it } from 'vitest';
import { SHARD_FAULTS } from '../src/durable-objects/shards.ts';
import { ProblemError } from '../src/lib/problem.ts';
import fixtures from './fixtures/checkpoint/checkpoint.json';
import adamF32 from './fixtures/checkpoint/mlp-adam-f32.safetensors';
import adamL2F64 from './fixtures/checkpoint/mlp-adam-l2-f64.safetensors';
import adamwAmsgradStepLr from './fixtures/checkpoint/mlp-adamw-amsgrad-steplr-f32.safetensors';
import freshMaximize from './fixtures/checkpoint/mlp-adam-fresh-maximize-f32.safetensors';
import { callBytes, callWithVars } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, parse, type Created } from './helpers/optimizers.ts';
import { encodeValues, readSafetensors, writeSafetensors, type Dt } from './helpers/safetensors.ts';

afterEach(() => {
  SHARD_FAULTS.afterRestoreDecision = undefined;
});

type Tree = Record<string, unknown>;
interface TorchState {
  step: number;
  params: Tree;
  exp_avg: Tree;
  exp_avg_sq: Tree;
  max_exp_avg_sq?: Tree;
}
interface Case {
  name: string;
  file: string;
  dtype: 'float32' | 'float64';
  names: string[];
  shapes: Record<string, number[]>;
  export_step: number;
  exported: TorchState;
  steps: Array<TorchState & { lr: number; grads: Tree }>;
}
const FILES: Record<string, ArrayBuffer> = {
  'mlp-adam-f32.safetensors': adamF32,
  'mlp-adam-l2-f64.safetensors': adamL2F64,
  'mlp-adamw-amsgrad-steplr-f32.safetensors': adamwAmsgradStepLr,
  'mlp-adam-fresh-maximize-f32.safetensors': freshMaximize,
};
const CASES = (fixtures as unknown as { cases: Case[] }).cases;
const caseNamed = (name: string) => CASES.find((c) => c.name === name)!;

const ST = 'application/vnd.safetensors';
const RAW = 'application/octet-stream';
const flatOf = (t: unknown): number[] => (Array.isArray(t) ? (t as unknown[]).flat(Infinity) : [t]) as number[];
const zeros = (n: number) => new Array<number>(n).fill(0);
const binary = (opt: Pick<Created, 'id' | 'token'>, method: string, path: string, body?: Uint8Array, headers: Record<string, string> = {}) =>
  callBytes(method, `/v1/optimizers/${opt.id}${path}`, body, authed(opt.token, headers));
const shardStub = (opt: Created, i: number) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/${i}`));
const coordinator = (opt: Created) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(opt.id));

/** Whether shard object `i` of `opt` stores anything (a removed one stores nothing). */
const holdsState = (opt: Created, i: number) =>
  runInDurableObject(shardStub(opt, i), (_o, state) => state.storage.sql.exec("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\'").one().n as number).then((n) => n > 0);

/** An optimizer created under a lower MAX_HOSTED_BYTES (its shards' capacity stays that). */
async function createWith(vars: Record<string, string>, body: unknown): Promise<Created> {
  const r = await parse(await callWithVars(vars, 'POST', '/v1/optimizers', JSON.stringify(body), { 'content-type': 'application/json' }));
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return { id: r.body.id, token: r.body.token, body: r.body, location: null, etag: null };
}

/** The JSON snapshot's slots under torch's names. */
async function stateOf(opt: Created): Promise<TorchState> {
  const { status, body } = await opCall('GET', opt, '/state');
  expect(status, JSON.stringify(body)).toBe(200);
  return { step: body.step, params: body.params, exp_avg: body.m, exp_avg_sq: body.v, ...(body.v_max ? { max_exp_avg_sq: body.v_max } : {}) };
}
const torchState = ({ step, params, exp_avg, exp_avg_sq, max_exp_avg_sq }: TorchState): TorchState => ({ step, params, exp_avg, exp_avg_sq, ...(max_exp_avg_sq ? { max_exp_avg_sq } : {}) });

describe('torch checkpoints of another layout, dtype and size, restored into sharded optimizers', () => {
  // Adam keeps 5 arrays of 4 (float32) or 8 (float64) bytes per element: 400 bytes hold 20 float32 or 10 float64 elements per shard.
  const SMALL = { MAX_HOSTED_BYTES: '400' };
  const setups: Array<{ what: string; case: string; vars: Record<string, string>; create: Record<string, unknown>; shards: (n: number) => void }> = [
    {
      what: '2 shards of 20 elements → more (67 elements)',
      case: 'mlp-adam-f32',
      vars: SMALL,
      create: { optimizer: 'adam', params: { x: zeros(30) }, shards: 2 },
      shards: (n) => expect(n).toBeGreaterThanOrEqual(4),
    },
    {
      what: '8 shards stay 8',
      case: 'mlp-adamw-amsgrad-steplr-f32',
      vars: {},
      create: { optimizer: 'adam', params: { x: zeros(100) }, shards: 8 },
      shards: (n) => expect(n).toBe(8),
    },
    {
      what: 'float32 → float64 (10 elements a shard: at least 7)',
      case: 'mlp-adam-l2-f64',
      vars: SMALL,
      create: { optimizer: 'adam', params: { x: zeros(30) }, shards: 3 },
      shards: (n) => expect(n).toBeGreaterThanOrEqual(7),
    },
    {
      what: 'float64 → float32, 40 shards → 22 (one a row: the others removed)',
      case: 'mlp-adam-fresh-maximize-f32',
      vars: {},
      create: { optimizer: 'adam', dtype: 'float64', params: { x: zeros(40) }, shards: 40 },
      shards: (n) => expect(n).toBe(8 + 8 + 3 + 3),
    },
  ];

  it.each(setups.map((s) => [s.what, s] as const))('%s: torch\'s numbers at every step', async (_what, s) => {
    const c = caseNamed(s.case);
    const opt = await createWith(s.vars, s.create);
    const before = opt.body.shards as number;
    const put = await binary(opt, 'PUT', '/state', new Uint8Array(FILES[c.file]!), { 'content-type': ST });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect(put.body).toMatchObject({ step: c.export_step, dtype: c.dtype, shapes: c.shapes });
    s.shards(put.body.shards);
    expect((await opCall('GET', opt, '')).body.shards).toBe(put.body.shards);
    expect(await stateOf(opt)).toEqual(torchState(c.exported));
    // Shard objects beyond the new placement are gone; those in it hold their state.
    for (let i = 0; i < Math.max(before, put.body.shards); i++) expect(await holdsState(opt, i), `shard ${i}`).toBe(i < put.body.shards);

    const dt: Dt = c.dtype === 'float32' ? 'F32' : 'F64';
    const layout: Array<{ name: string }> = (await opCall('GET', opt, '')).body.layout;
    expect(layout.map((l) => l.name)).toEqual(c.names);
    for (const [k, want] of c.steps.entries()) {
      const where = `step ${want.step}`;
      if (k % 3 === 0) {
        const r = await opCall('POST', opt, '/step', { grads: want.grads });
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expect(r.body.lr, where).toBe(want.lr);
        expect(r.body.params, where).toEqual(want.params);
      } else {
        const body =
          k % 3 === 1
            ? encodeValues(layout.flatMap((l) => flatOf(want.grads[l.name])), dt)
            : writeSafetensors(c.names.toReversed().map((name) => ({ name, dtype: dt, shape: c.shapes[name]!, data: encodeValues(flatOf(want.grads[name]), dt) })));
        const r = await binary(opt, 'POST', '/step', body, { 'content-type': k % 3 === 1 ? RAW : ST, accept: RAW });
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expect(Number(r.headers.get('lr')), where).toBe(want.lr);
        expect(r.bytes, where).toEqual(encodeValues(layout.flatMap((l) => flatOf(want.params[l.name])), dt));
      }
      if (k === 4) {
        // Everything evicted: the new layout, dtype and placement are what is stored.
        for (let i = 0; i < put.body.shards; i++) await evictDurableObject(shardStub(opt, i));
        await evictDurableObject(coordinator(opt));
      }
      expect(await stateOf(opt), where).toEqual(torchState(want));
    }
  });

  it('a float64 checkpoint without __metadata__.dtype makes the sharded optimizer float64, as one object', async () => {
    const c = caseNamed('mlp-adam-l2-f64');
    const ck = readSafetensors(new Uint8Array(FILES[c.file]!));
    const { dtype: _dtype, ...metadata } = ck.metadata!;
    const file = writeSafetensors(ck.order.map((n) => ck.tensors.get(n)!), metadata);
    const sharded = await createOptimizer({ optimizer: 'adam', params: { fc1: { weight: zeros(32) } }, shards: 3 });
    const one = await createOptimizer({ optimizer: 'adam', params: [0] });
    for (const opt of [sharded, one]) {
      const r = await binary(opt, 'PUT', '/state', file, { 'content-type': ST });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.dtype).toBe('float64');
    }
    const want = c.steps[0]!;
    for (const opt of [sharded, one]) expect((await opCall('POST', opt, '/step', { grads: want.grads })).body.params).toEqual(want.params);
  });
});

describe('a JSON snapshot of another tree', () => {
  it('restores into a sharded optimizer as into one object, nesting kept, and both step on alike', async () => {
    const P = { layer: { w: [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]], b: [0.5, -0.5] }, scale: [3] };
    const G = { layer: { w: [[1, 0, -1], [2, 0, -2], [0.5, 0.25, 0], [1, 1, 1]], b: [1, -1] }, scale: [0.125] };
    const source = await createOptimizer({ optimizer: 'sgd', params: P, hyperparams: { lr: 0.1, momentum: 0.9, nesterov: true }, param_groups: [{ params: ['scale'], lr: 0.01 }] });
    for (let k = 0; k < 2; k++) await opCall('POST', source, '/step', { grads: G });
    const snapshot = (await opCall('GET', source, '/state')).body;
    const sharded = await createOptimizer({ optimizer: 'sgd', params: { x: zeros(6) }, hyperparams: { lr: 1 }, shards: 3 });
    const r = await opCall('PUT', sharded, '/state', snapshot);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.shards).toBe(3);
    expect((await opCall('GET', sharded, '/params')).body).toEqual((await opCall('GET', source, '/params')).body);
    for (let k = 0; k < 3; k++) {
      const a = await opCall('POST', source, '/step', { grads: G });
      const b = await opCall('POST', sharded, '/step', { grads: G });
      expect(b.body.params).toEqual(a.body.params);
    }
    const { id: _a, created_at: _b, updated_at: _c, ...want } = (await opCall('GET', source, '/state')).body;
    const { id: _d, created_at: _e, updated_at: _f, ...got } = (await opCall('GET', sharded, '/state')).body;
    expect(got).toEqual(want);
  });
});

describe('refused checkpoints of another layout change nothing', () => {
  const c = caseNamed('mlp-adam-f32');
  const ck = readSafetensors(new Uint8Array(FILES[c.file]!));
  const edited = (edit: (name: string, t: ReturnType<typeof ck.tensors.get> & object) => (typeof t | null), metadata = ck.metadata!) =>
    writeSafetensors(ck.order.flatMap((n) => edit(n, ck.tensors.get(n)!) ?? []), metadata);

  it('a bad tensor found by a shard created for it, a row larger than a shard, a missing step: each a 4xx; no shard left behind', async () => {
    const opt = await createWith({ MAX_HOSTED_BYTES: '400' }, { optimizer: 'adam', params: { x: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] }, shards: 2 });
    await opCall('POST', opt, '/step', { grads: { x: [1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1] } });
    const before = await opCall('GET', opt, '/state');
    const put = (file: Uint8Array) => binary(opt, 'PUT', '/state', file, { 'content-type': ST });
    const nan = edited((n, t) => (n === 'exp_avg_sq/fc2.bias' ? { ...t, data: encodeValues([1, NaN, 1], 'F32') } : t));
    expectProblem(await put(nan), 422);
    const wide = edited((n, t) => (n.endsWith('/fc2.weight') && !n.startsWith('step/') ? { ...t, shape: [1, 24] } : t)); // one row of 24 elements: more than a shard's 20
    expectProblem(await put(wide), 413);
    const noStep = edited((n, t) => (n === 'step/fc1.bias' ? null : t));
    expectProblem(await put(noStep), 422, 'safetensors["step/fc1.bias"]');
    const withOrphan = writeSafetensors([...ck.order.map((n) => ck.tensors.get(n)!), { ...ck.tensors.get('exp_avg/fc2.bias')!, name: 'exp_avg/fc3.bias' }], ck.metadata!);
    expectProblem(await put(withOrphan), 422, 'safetensors["exp_avg/fc3.bias"]');
    const after = await opCall('GET', opt, '/state');
    expect(after.body).toEqual(before.body);
    expect((await opCall('GET', opt, '')).body.shards).toBe(2);
    for (let i = 0; i < 8; i++) expect(await holdsState(opt, i), `shard ${i}`).toBe(i < 2);
    // It steps on from the state it had, and the good checkpoint still restores.
    expect((await opCall('POST', opt, '/step', { grads: { x: zeros(12) } })).body.step).toBe(2);
    expect((await put(new Uint8Array(FILES[c.file]!))).status).toBe(200);
    expect(await stateOf(opt)).toEqual(torchState(c.exported));
  });

  it('an If-Match of another state is a 412 before anything is placed', async () => {
    const opt = await createOptimizer({ optimizer: 'adam', params: { x: zeros(12) }, shards: 2 });
    const r = await binary(opt, 'PUT', '/state', new Uint8Array(FILES[c.file]!), { 'content-type': ST, 'if-match': '"nope"' });
    expectProblem(r, 412);
    expect((await opCall('GET', opt, '')).body).toMatchObject({ shards: 2, shapes: { x: [12] } });
  });
});

describe('a coordinator failing after its restore decision', () => {
  it('the shards store the restore at the next call, and those the smaller placement leaves are removed', async () => {
    const c = caseNamed('mlp-adam-f32');
    const opt = await createOptimizer({ optimizer: 'adam', params: { x: zeros(40) }, shards: 30 });
    SHARD_FAULTS.afterRestoreDecision = () => {
      throw new ProblemError(408, 'request-timeout', 'injected: coordinator failed after its restore decision');
    };
    expectProblem(await binary(opt, 'PUT', '/state', new Uint8Array(FILES[c.file]!), { 'content-type': ST }), 408);
    SHARD_FAULTS.afterRestoreDecision = undefined;
    await evictDurableObject(coordinator(opt));
    const info = (await opCall('GET', opt, '')).body;
    expect(info).toMatchObject({ shards: 22, step: c.export_step, shapes: c.shapes });
    expect(await stateOf(opt)).toEqual(torchState(c.exported));
    for (let i = 0; i < 30; i++) expect(await holdsState(opt, i), `shard ${i}`).toBe(i < 22);
    const want = c.steps[0]!;
    expect((await opCall('POST', opt, '/step', { grads: want.grads })).body.params).toEqual(want.params);
    // DELETE removes every shard.
    expect((await opCall('DELETE', opt, '')).status).toBe(204);
    for (let i = 0; i < 22; i++) expect(await holdsState(opt, i), `shard ${i}`).toBe(false);
  });
});

describe('other optimizers: a checkpoint of one object restored into shards of another layout steps on as that object', () => {
  const P = { a: [[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 0, 1]], b: [[0.5, -0.5], [1.5, 2], [-1, 1]], c: [[2, 4, 6, 8]] };
  const G = (k: number) => ({ a: [[1, -1, 0.5], [0.25, 2, -2], [1, 1, 1], [k, 0, -k]], b: [[1, 2], [-1, 0.5], [0, 1]], c: [[0.5, 0.5, -1, k]] });
  const setups: Array<[string, Record<string, unknown>, boolean]> = [
    ['nadam', { optimizer: 'nadam', hyperparams: { lr: 0.01, momentum_decay: 0.004 }, param_groups: [{ params: ['c'], betas: [0.8, 0.99] }] }, true],
    ['muon (tensors whole)', { optimizer: 'muon', hyperparams: { lr: 0.02, momentum: 0.9, weight_decay: 0.1 } }, false],
    ['rmsprop centered', { optimizer: 'rmsprop', hyperparams: { lr: 0.01, centered: true, momentum: 0.5 } }, true],
  ];
  const strip = ({ id: _a, created_at: _b, updated_at: _c, ...rest }: Record<string, unknown>) => rest;

  it.each(setups)('%s', async (_what, spec, freezes) => {
    const one = await createOptimizer({ ...spec, params: P });
    for (let k = 0; k < 3; k++) {
      const r = await opCall('POST', one, '/step', { grads: freezes && k === 1 ? { ...G(k), b: null } : G(k) });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
    const ck = await binary(one, 'GET', '/state', undefined, { accept: ST });
    const sharded = await createOptimizer({ optimizer: spec.optimizer, params: { z: [[1, 2], [3, 4]], y: [[1]], w: [[1, 2]] }, hyperparams: spec.hyperparams, shards: 3 });
    const r = await binary(sharded, 'PUT', '/state', ck.bytes, { 'content-type': ST });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.shards).toBe(3);
    expect(strip((await opCall('GET', sharded, '/state')).body)).toEqual(strip((await opCall('GET', one, '/state')).body));
    for (let k = 3; k < 6; k++) {
      const grads = freezes && k === 4 ? { ...G(k), a: null } : G(k);
      const a = await opCall('POST', one, '/step', { grads });
      const b = await opCall('POST', sharded, '/step', { grads });
      expect(b.body.params, `step ${k + 1}`).toEqual(a.body.params);
    }
    expect(strip((await opCall('GET', sharded, '/state')).body)).toEqual(strip((await opCall('GET', one, '/state')).body));
  });
});
