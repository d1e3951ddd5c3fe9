// param_groups on hosted optimizers, through HTTP. torch 1.13's trajectories with several groups
// (test/fixtures/optim/param_groups.json) replayed through hosted optimizers created with the
// case's groups (gradients as JSON, raw bytes and safetensors): params after every step and
// GET /state at every recorded step equal torch's bit for bit, including torch's None (null) for a
// slot a group keeps none of. Hosted steps equal the stateless step with the same groups, bit for
// bit, with schedules (each group's lr driven from its own), clipping, per-tensor counters (NAdam),
// Adagrad's sum from the top-level initial_accumulator_value (as torch) and slots kept by some groups
// only; through snapshots (JSON and safetensors), PATCH (replace, clear), eviction (the journal replays each group's steps) and the
// 422s of the stateless step.

import { evictDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import groupsFile from './fixtures/optim/param_groups.json';
import { callBytes, postJson } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, type Created } from './helpers/optimizers.ts';
import { decodeValues, encodeValues, readSafetensors, writeSafetensors } from './helpers/safetensors.ts';
import { leavesOf, zipLeaves } from './helpers/trees.ts';

type Tree = unknown;
type Json = Record<string, any>;

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));
const ST = 'application/vnd.safetensors';
const RAW = 'application/octet-stream';
const DT = { float32: 'F32', float64: 'F64' } as const;

interface GroupCase {
  name: string;
  optimizer: string;
  dtype: 'float32' | 'float64';
  defaults: Record<string, number | boolean>;
  param_groups: Array<{ params: string[]; hyperparams: Record<string, number | boolean> }>;
  params: Record<string, Tree>;
  grads: Array<Record<string, Tree>>;
  expected: Array<{ step_index: number; params: Tree; state: Record<string, unknown> }>;
}

const CASES = groupsFile.cases as unknown as GroupCase[];

function diffs(label: string, actual: unknown, expected: unknown): string[] {
  return zipLeaves(actual, expected)
    .filter(({ a, e }) => !Object.is(a, e))
    .map(({ path, a, e }) => `${label}${path}: ${a} != ${e}`);
}

/** The state fields of a JSON snapshot (everything that is not metadata, params or groups). */
function stateOf(snapshot: Json): Json {
  const { id: _i, optimizer: _o, dtype: _d, hyperparams: _h, param_groups: _g, schedule: _s, scheduler_state: _ss, params: _p, created_at: _c, updated_at: _u, shards: _n, ...state } = snapshot;
  return state;
}

const flat = (tree: Tree) => leavesOf(tree).map((l) => l.value as number);

/** One hosted step of `grads` (a tree of named tensors) as JSON, raw bytes or safetensors; returns the answer's body. */
async function step(opt: Created, grads: Record<string, Tree>, format: 'json' | 'raw' | 'safetensors', dtype: 'float32' | 'float64', extra: Json = {}): Promise<Json> {
  if (format === 'json') {
    const r = await opCall('POST', opt, '/step', { grads, ...extra });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body;
  }
  const layout = opt.body.layout as Array<{ name: string; shape: number[] }>;
  const body =
    format === 'raw'
      ? encodeValues(layout.flatMap((l) => flat(grads[l.name])), DT[dtype])
      : writeSafetensors(layout.map((l) => ({ name: l.name, dtype: DT[dtype], shape: l.shape, data: encodeValues(flat(grads[l.name]), DT[dtype]) })));
  const query = extra.loss === undefined ? '' : `?loss=${extra.loss}`;
  const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step${query}`, body, authed(opt.token, { 'content-type': format === 'raw' ? RAW : ST, accept: 'application/json' }));
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}

const FORMATS = ['json', 'raw', 'safetensors'] as const;

/** The case's groups as the API takes them. */
const groupsOf = (c: GroupCase) => c.param_groups.map((g) => ({ params: g.params, ...g.hyperparams }));

async function hostedFor(c: GroupCase): Promise<Created> {
  const opt = await createOptimizer({ optimizer: c.optimizer, dtype: c.dtype, params: c.params, hyperparams: c.defaults, param_groups: groupsOf(c) });
  expect(opt.body.param_groups).toEqual(groupsOf(c));
  return opt;
}

/** Steps `from`..`to` of the case; params after every recorded step and the JSON snapshot's state against torch's. */
async function replay(c: GroupCase, opt: Created, from = 0, to = c.grads.length): Promise<string[]> {
  const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
  const out: string[] = [];
  for (let s = from; s < to; s++) {
    const answer = await step(opt, c.grads[s]!, FORMATS[s % 3]!, c.dtype);
    expect(answer.step).toBe(s + 1);
    const e = byIndex.get(s);
    if (!e) continue;
    out.push(...diffs(`step ${s} params`, answer.params, e.params));
    const snap = await opCall('GET', opt, '/state');
    expect(snap.status).toBe(200);
    expect(snap.body.param_groups).toEqual(groupsOf(c));
    // torch's state as recorded (SGD keeps no step count; the hosted optimizer counts anyway).
    const want = { step: s + 1, ...e.state };
    const got = stateOf(snap.body);
    expect(Object.keys(got).sort(), `step ${s} state keys`).toEqual(Object.keys(want).sort());
    out.push(...diffs(`step ${s} state`, got, want));
  }
  return out;
}

describe('hosted param_groups against torch 1.13 (param_groups.json)', () => {
  it('the fixtures hold torch\'s None for a slot a group keeps none of (SGD\'s buffer without momentum)', () => {
    const sgd = CASES.find((c) => c.name === 'pg-sgd-two-groups-f32')!;
    expect((sgd.expected[0]!.state.momentum_buffer as Record<string, unknown>)['fc1.bias']).toBeNull();
  });

  it.each(CASES.map((c) => ({ c, name: c.name })))('$name: every step (JSON, raw and safetensors gradients), params and state', { timeout: 120_000 }, async ({ c }) => {
    const opt = await hostedFor(c);
    expect((await replay(c, opt)).slice(0, 10)).toEqual([]);
  });

  it.each(CASES.filter((c) => /three-groups/.test(c.name)).map((c) => ({ c, name: c.name })))(
    '$name: JSON and safetensors snapshots restored mid-way (into optimizers created without groups) continue as torch',
    { timeout: 120_000 },
    async ({ c }) => {
      const half = Math.floor(c.grads.length / 2);
      const opt = await hostedFor(c);
      expect(await replay(c, opt, 0, half)).toEqual([]);
      const json = await opCall('GET', opt, '/state');
      const file = await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, authed(opt.token, { accept: ST }));
      expect(file.status).toBe(200);
      const ckpt = readSafetensors(file.bytes);
      expect(JSON.parse(ckpt.metadata!.param_groups!)).toEqual(groupsOf(c));
      // torch's state_dict has no entry where it has None: neither has the checkpoint.
      for (const [name, tree] of Object.entries((json.body.momentum_buffer ?? {}) as Record<string, unknown>)) {
        expect(ckpt.tensors.has(`momentum_buffer/${name}`), name).toBe(tree !== null);
      }
      for (const body of [json.body, file.bytes]) {
        const into = await createOptimizer({ optimizer: c.optimizer, dtype: c.dtype, params: c.params, hyperparams: c.defaults });
        const put =
          body instanceof Uint8Array
            ? await callBytes('PUT', `/v1/optimizers/${into.id}/state`, body, authed(into.token, { 'content-type': ST }))
            : await opCall('PUT', into, '/state', body);
        expect(put.status, JSON.stringify(put.body)).toBe(200);
        expect(put.body.param_groups).toEqual(groupsOf(c));
        expect(stateOf((await opCall('GET', into, '/state')).body)).toEqual(stateOf(json.body));
        expect(await replay(c, into, half)).toEqual([]);
      }
      expect(await replay(c, opt, half)).toEqual([]);
    },
  );
});

/** A hosted optimizer and the stateless step side by side: each step's answer and the state after it must be the same. */
async function sideBySide(
  optimizer: string,
  dtype: 'float32' | 'float64',
  params: Json,
  hyperparams: Json,
  groups: Json[],
  grads: Json[],
  options: { schedule?: Json; losses?: number[]; shards?: number | undefined } = {},
): Promise<{ opt: Created; state: Json; params: Json }> {
  const opt = await createOptimizer({ optimizer, dtype, params, hyperparams, param_groups: groups, ...(options.schedule ? { schedule: options.schedule } : {}), ...(options.shards ? { shards: options.shards } : {}) });
  expect(opt.body.shards).toBe(options.shards ?? 1);
  let p: Json = params;
  let state: Json | undefined;
  const metrics: number[] = [];
  for (const [k, g] of grads.entries()) {
    const loss = options.losses?.[k];
    const hosted = await step(opt, g, FORMATS[k % 3]!, dtype, loss === undefined ? {} : { loss });
    const stateless = await postJson(`/v1/${optimizer}/step`, {
      params: p,
      grads: g,
      dtype,
      hyperparams,
      param_groups: groups,
      ...(state ? { state } : {}),
      ...(options.schedule ? { schedule: options.schedule } : {}),
      ...(options.schedule?.type === 'reduce_on_plateau' ? { metrics: [...metrics] } : {}),
    });
    expect(stateless.status, JSON.stringify(stateless.body)).toBe(200);
    if (loss !== undefined) metrics.push(loss);
    expect(hosted.params, `step ${k} params`).toEqual(stateless.body.params);
    expect(diffs(`step ${k} params`, hosted.params, stateless.body.params)).toEqual([]);
    expect(hosted.lr, `step ${k} lr`).toBe(stateless.body.lr);
    expect(hosted.grad_norm, `step ${k} grad_norm`).toBe(stateless.body.grad_norm);
    p = stateless.body.params;
    state = stateless.body.state;
    const snap = await opCall('GET', opt, '/state');
    const got = stateOf(snap.body);
    expect(got, `step ${k} state`).toEqual(state);
    expect(diffs(`step ${k} state`, got, state)).toEqual([]);
  }
  return { opt, state: state!, params: p };
}

const P = { 'enc.w': [[0.5, -0.25], [1, 2]], 'enc.b': [0.1, -0.1], 'head.w': [[0.75, -1.5]], 'head.b': [0.25] };
const G = (k: number) => ({
  'enc.w': [[Math.sin(k + 1), Math.cos(k + 2)], [0.5 - k / 7, Math.sin(3 * k)]],
  'enc.b': [Math.cos(k) / 3, -0.25],
  'head.w': [[0.125 * (k + 1), -Math.sin(k / 2)]],
  'head.b': [1 - k / 5],
});
const GRADS = Array.from({ length: 6 }, (_, k) => G(k));

// Unsharded, and sharded over 3 objects (each shard keeps the groups its pieces are in, and a tensor's own counters).
describe.each([{ shards: undefined, title: '' }, { shards: 3, title: ' (sharded over 3 objects)' }])('hosted param_groups equal the stateless step with the same groups, bit for bit$title', ({ shards }) => {
  const over = shards ? { shards } : {};
  it('SGD: momentum, dampening and nesterov per group, a group without momentum (its buffer null), clip_grad_norm', async () => {
    await sideBySide('sgd', 'float32', P, { lr: 0.1, momentum: 0.9, clip_grad_norm: 2 }, [{ params: ['*.b'], lr: 0.05, momentum: 0 }, { params: ['head.w'], dampening: 0.5, weight_decay: 0.01 }], GRADS, over);
  });

  it('NAdam: a group with other betas keeps its own mu_product (per-tensor counters, as torch keeps it per parameter)', async () => {
    const { opt, state } = await sideBySide('nadam', 'float64', P, { lr: 0.01 }, [{ params: ['head.*'], beta1: 0.8, momentum_decay: 0.01 }], GRADS, over);
    expect(Object.keys(state.tensors).sort()).toEqual(['head.b', 'head.w']);
    // Round trips: the JSON snapshot carries the counters, the checkpoint each tensor's mu_product.
    const json = await opCall('GET', opt, '/state');
    expect(json.body.tensors).toEqual(state.tensors);
    const file = readSafetensors((await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, authed(opt.token, { accept: ST }))).bytes);
    expect(decodeValues(file.tensors.get('mu_product/head.w')!)).toEqual([Math.fround(state.tensors['head.w'].mu_product)]);
    expect(decodeValues(file.tensors.get('mu_product/enc.w')!)).toEqual([Math.fround(state.mu_product)]);
    // Into optimizers of another shard count (or none).
    const a = await createOptimizer({ optimizer: 'nadam', dtype: 'float64', params: P, ...(shards ? {} : { shards: 2 }) });
    const b = await createOptimizer({ optimizer: 'nadam', dtype: 'float64', params: P, ...(shards ? { shards: 2 } : {}) });
    expect((await opCall('PUT', a, '/state', json.body)).status).toBe(200);
    expect((await callBytes('PUT', `/v1/optimizers/${b.id}/state`, (await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, authed(opt.token, { accept: ST }))).bytes, authed(b.token, { 'content-type': ST }))).status).toBe(200);
    const next = await opCall('POST', opt, '/step', { grads: G(9) });
    for (const copy of [a, b]) {
      expect(stateOf((await opCall('GET', copy, '/state')).body)).toEqual(stateOf(json.body));
      expect((await opCall('POST', copy, '/step', { grads: G(9) })).body.params).toEqual(next.body.params);
    }
    // A tensor's own step count may lag (frozen steps: test/hosted-frozen.test.ts), but is a count.
    expectProblem(await opCall('PUT', a, '/state', { ...json.body, tensors: { 'head.w': { step: 1.5, mu_product: 0.5 } } }), 422, 'tensors["head.w"].step');
    expectProblem(await opCall('PUT', a, '/state', { ...json.body, tensors: { nope: { step: json.body.step } } }), 422, 'tensors.nope');
  });

  it('Adagrad: each group\'s lr and lr_decay, every sum from the top-level initial_accumulator_value (torch 1.13 ignores a group\'s), as if each tensor were stepped alone', async () => {
    const groups = [{ params: ['enc.*'], initial_accumulator_value: 0.5, lr: 0.1 }, { params: ['head.w'], lr_decay: 0.1 }];
    const { state } = await sideBySide('adagrad', 'float64', P, { lr: 0.05, initial_accumulator_value: 2 }, groups, GRADS.slice(0, 3), over);
    // torch 1.13's Adagrad.__init__ fills each parameter's sum from the constructor's initial_accumulator_value,
    // whatever its group sets (values against torch: test/optim-controls.test.ts).
    for (const [name, hp] of [['enc.w', { lr: 0.1, initial_accumulator_value: 2 }], ['head.w', { lr: 0.05, initial_accumulator_value: 2, lr_decay: 0.1 }], ['head.b', { lr: 0.05, initial_accumulator_value: 2 }]] as const) {
      let p: unknown = (P as Json)[name];
      let s: unknown;
      for (const g of GRADS.slice(0, 3)) {
        const r = await postJson('/v1/adagrad/step', { params: p, grads: (g as Json)[name], dtype: 'float64', hyperparams: hp, ...(s ? { state: s } : {}) });
        p = r.body.params;
        s = r.body.state;
      }
      expect(state.sum[name], name).toEqual((s as Json).sum);
    }
  });

  it('Adam: amsgrad in one group only (max_exp_avg_sq null elsewhere, as torch keeps none), a step schedule driving each group\'s lr', async () => {
    const schedule = { type: 'step', lr: 0.1, step_size: 2, gamma: 0.5 };
    const { state } = await sideBySide('adam', 'float32', P, { weight_decay: 0.01 }, [{ params: ['head.*'], amsgrad: true, lr: 0.02 }], GRADS, { schedule, ...over });
    // /v1/adam/step and adam snapshots name max_exp_avg_sq v_max.
    expect(state.v_max).toMatchObject({ 'enc.w': null, 'enc.b': null });
    expect(state.v_max['head.w']).not.toBeNull();
  });

  it('RMSprop: centered and momentum in one group (their slots null elsewhere), float64, with a cosine schedule', async () => {
    const schedule = { type: 'cosine', lr: 0.01, total_steps: 5 };
    const { state } = await sideBySide('rmsprop', 'float64', P, {}, [{ params: ['enc.w'], centered: true, momentum: 0.5, lr: 0.03 }], GRADS, { schedule, ...over });
    expect(state.grad_avg).toMatchObject({ 'enc.b': null, 'head.w': null, 'head.b': null });
  });

  it('reduce_on_plateau: each group\'s rate is reduced on its own from its lr, as torch reduces each param group\'s; the snapshot carries the rates', async () => {
    const schedule = { type: 'reduce_on_plateau', lr: 0.1, factor: 0.5, patience: 0, min_lr: 0.01 };
    const losses = [1, 2, 3, 4, 5, 6];
    const { opt } = await sideBySide('sgd', 'float64', P, {}, [{ params: ['head.*'], lr: 1 }, { params: ['enc.b'], momentum: 0.5 }], GRADS, { schedule, losses, ...over });
    const snap = await opCall('GET', opt, '/state');
    // Five bad reports after the first, each a reduction (patience 0): 0.1 → 0.05 → 0.025 → 0.0125 → 0.01
    // (min_lr) → 0.01; the group's own: 1 → 0.5 → 0.25 → 0.125 → 0.0625 → 0.03125.
    expect(snap.body.scheduler_state).toMatchObject({ lr: 0.01, num_reports: 6, group_lrs: [0.03125, null] });
    const copy = await createOptimizer({ optimizer: 'sgd', dtype: 'float64', params: P, hyperparams: { lr: 1 }, ...over });
    const restored = await opCall('PUT', copy, '/state', snap.body);
    expect(restored.status, JSON.stringify(restored.body)).toBe(200);
    const a = await opCall('POST', opt, '/step', { grads: G(7), loss: 7 });
    const b = await opCall('POST', copy, '/step', { grads: G(7), loss: 7 });
    expect(b.body).toEqual(a.body);
    expectProblem(await opCall('PUT', copy, '/state', { ...snap.body, scheduler_state: { ...snap.body.scheduler_state, group_lrs: [0.5] } }), 422, 'scheduler_state.group_lrs');
    expectProblem(await opCall('PUT', copy, '/state', { ...snap.body, scheduler_state: { ...snap.body.scheduler_state, group_lrs: [0.5, 0.5] } }), 422, 'scheduler_state.group_lrs[1]');
  });
});

describe('hosted param_groups: create, GET, PATCH and the stateless step\'s 422s', () => {
  const p = { 'enc.a': [1, 2], 'enc.b': [3], 'head.w': [4, 5], 'head.bias': [6] };
  const g = { 'enc.a': [0.5, -0.5], 'enc.b': [1], 'head.w': [0.25, 0.25], 'head.bias': [2] };

  it('match names and * patterns, each group with its own lr; GET reports them; none without groups', async () => {
    const groups = [{ params: ['enc.*'], lr: 0.5 }, { params: ['*.bias'], lr: 0 }];
    const opt = await createOptimizer({ optimizer: 'sgd', dtype: 'float64', params: p, hyperparams: { lr: 1 }, param_groups: groups });
    const r = await opCall('POST', opt, '/step', { grads: g });
    expect(r.body.params).toEqual({ 'enc.a': [1 - 0.25, 2 + 0.25], 'enc.b': [3 - 0.5], 'head.w': [4 - 0.25, 5 - 0.25], 'head.bias': [6] });
    expect(r.body.lr).toBe(1);
    expect((await opCall('GET', opt, '')).body.param_groups).toEqual(groups);
    expect((await createOptimizer({ params: [1] })).body).not.toHaveProperty('param_groups');
    // torch's betas spelling in a group, as in the stateless step.
    const adam = await createOptimizer({ params: p, param_groups: [{ params: ['head.*'], betas: [0.8, 0.9] }] });
    expect(adam.body.param_groups).toEqual([{ params: ['head.*'], beta1: 0.8, beta2: 0.9 }]);
  });

  it('refuse what the stateless step refuses, with the same fields, and create nothing', async () => {
    const cases: Array<[Json, string]> = [
      [{ param_groups: [{ params: ['enc.*'] }, { params: ['head.w', 'enc.b'] }] }, 'param_groups[1].params[1]'],
      [{ param_groups: [{ params: ['dec.*'] }] }, 'param_groups[0].params[0]'],
      [{ param_groups: [{ params: ['enc.a'], momentum: -1 }] }, 'param_groups[0].momentum'],
      [{ param_groups: [{ params: ['enc.a'], beta1: 0.9 }] }, 'param_groups[0].beta1'],
      [{ param_groups: [{ params: ['enc.a'], lr: -1 }] }, 'param_groups[0].lr'],
      [{ param_groups: [{ params: [] }] }, 'param_groups[0].params'],
      [{ param_groups: [{ lr: 1 }] }, 'param_groups[0].params'],
      [{ param_groups: { params: ['enc.a'] } }, 'param_groups'],
    ];
    for (const [extra, field] of cases) {
      const res = await callBytes('POST', '/v1/optimizers', { optimizer: 'sgd', params: p, hyperparams: { lr: 1 }, ...extra });
      expectProblem({ status: res.status, type: res.type, body: res.body }, 422, field);
      // The stateless step names the same field.
      const stateless = await postJson('/v1/sgd/step', { params: p, grads: g, hyperparams: { lr: 1 }, ...extra });
      expect(stateless.status).toBe(422);
      expect(stateless.body.errors.map((e: { field: string }) => e.field)).toContain(field);
    }
    // SGD's lr is required only where a tensor uses the top-level hyperparameters.
    const some = await callBytes('POST', '/v1/optimizers', { optimizer: 'sgd', params: p, param_groups: [{ params: ['enc.*'], lr: 0.5 }] });
    expectProblem({ status: some.status, type: some.type, body: some.body }, 422, 'hyperparams.lr');
    const all = await createOptimizer({ optimizer: 'sgd', dtype: 'float64', params: { a: [1] }, param_groups: [{ params: ['*'], lr: 0.5 }] });
    expect((await opCall('POST', all, '/step', { grads: { a: [1] } })).body.params).toEqual({ a: [0.5] });
  });

  it('a safetensors create takes __metadata__.param_groups, checked the same way', async () => {
    const file = (groups: string) =>
      writeSafetensors([{ name: 'enc.a', dtype: 'F64', shape: [2], data: encodeValues([1, 2], 'F64') }, { name: 'head.w', dtype: 'F64', shape: [1], data: encodeValues([4], 'F64') }], { param_groups: groups, hyperparams: '{"lr": 1}' });
    const ok = await callBytes('POST', '/v1/optimizers?optimizer=sgd', file('[{"params": ["head.*"], "lr": 0.5}]'), { 'content-type': ST });
    expect(ok.status, JSON.stringify(ok.body)).toBe(201);
    expect(ok.body.param_groups).toEqual([{ params: ['head.*'], lr: 0.5 }]);
    const opt = { id: ok.body.id, token: ok.body.token };
    expect((await opCall('POST', opt, '/step', { grads: { 'enc.a': [1, 1], 'head.w': [1] } })).body.params).toEqual({ 'enc.a': [0, 1], 'head.w': [3.5] });
    for (const [groups, field] of [['[{"params": ["nope"]}]', '__metadata__.param_groups[0].params[0]'], ['[{"params": ["head.w"], "momentum": -1}]', '__metadata__.param_groups[0].momentum'], ['{', '__metadata__.param_groups']]) {
      const bad = await callBytes('POST', '/v1/optimizers?optimizer=sgd', file(groups!), { 'content-type': ST });
      expectProblem({ status: bad.status, type: bad.type, body: bad.body }, 422, field);
    }
  });

  it('PATCH replaces the groups (each tensor keeps its state; one whose new group keeps a slot it lacks starts it as torch would), clears them (null), and refuses bad ones changing nothing', async () => {
    const hp = { lr: 0.1, momentum: 0.9, dampening: 0.5 };
    const opt = await createOptimizer({ optimizer: 'sgd', dtype: 'float64', params: p, hyperparams: hp, param_groups: [{ params: ['*.bias', 'enc.b'], momentum: 0 }] });
    await opCall('POST', opt, '/step', { grads: g });
    let snap = await opCall('GET', opt, '/state');
    expect(snap.body.momentum_buffer).toMatchObject({ 'enc.b': null, 'head.bias': null });
    const before = await opCall('GET', opt, '');
    for (const [groups, field] of [[[{ params: ['nope'] }], 'param_groups[0].params[0]'], [[{ params: ['enc.a'], dampening: 0.5, momentum: -1 }], 'param_groups[0].momentum'], [[{ params: ['enc.a'], foo: 1 }], 'param_groups[0].foo'], ['x', 'param_groups']] as const) {
      expectProblem(await opCall('PATCH', opt, '', { param_groups: groups }), 422, field);
    }
    const after = await opCall('GET', opt, '');
    expect(after.headers.get('etag')).toBe(before.headers.get('etag'));
    expect(after.body.param_groups).toEqual(before.body.param_groups);

    // Momentum for enc.b from now on: torch creates its buffer from the next gradient (a clone, no dampening).
    const patched = await opCall('PATCH', opt, '', { param_groups: [{ params: ['*.bias'], momentum: 0 }] });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect(patched.body.param_groups).toEqual([{ params: ['*.bias'], momentum: 0 }]);
    snap = await opCall('GET', opt, '/state');
    const stateless = await postJson('/v1/sgd/step', { params: snap.body.params, grads: g, dtype: 'float64', hyperparams: hp, param_groups: [{ params: ['*.bias'], momentum: 0 }], state: stateOf(snap.body) });
    const hosted = await opCall('POST', opt, '/step', { grads: g });
    expect(hosted.body.params).toEqual(stateless.body.params);
    snap = await opCall('GET', opt, '/state');
    expect(stateOf(snap.body)).toEqual(stateless.body.state);
    expect(snap.body.momentum_buffer['enc.b']).toEqual(g['enc.b']);

    const cleared = await opCall('PATCH', opt, '', { param_groups: null });
    expect(cleared.status).toBe(200);
    expect(cleared.body).not.toHaveProperty('param_groups');
    expect((await opCall('GET', opt, '/state')).body).not.toHaveProperty('param_groups');
    const plain = await postJson('/v1/sgd/step', { params: hosted.body.params, grads: g, dtype: 'float64', hyperparams: hp, state: stateless.body.state });
    expect((await opCall('POST', opt, '/step', { grads: g })).body.params).toEqual(plain.body.params);
    // Omitted: unchanged.
    expect((await opCall('PATCH', opt, '', { hyperparams: { lr: 0.2 } })).body).not.toHaveProperty('param_groups');
  });

  it('a group\'s fields not given follow hyperparams, also after a PATCH of them', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', dtype: 'float64', params: p, hyperparams: { lr: 1 }, param_groups: [{ params: ['head.*'], lr: 0.5 }] });
    await opCall('PATCH', opt, '', { hyperparams: { lr: 0.25, weight_decay: 1 } });
    const r = await opCall('POST', opt, '/step', { grads: g });
    const s = await postJson('/v1/sgd/step', { params: p, grads: g, dtype: 'float64', hyperparams: { lr: 0.25, weight_decay: 1 }, param_groups: [{ params: ['head.*'], lr: 0.5 }] });
    expect(r.body.params).toEqual(s.body.params);
  });
});

describe('hosted param_groups across eviction: the journal replays each group\'s step', () => {
  it('a float32 AdamW over more than two checkpoint chunks, its groups crossing chunk boundaries, evicted after every step, equals the stateless step', { timeout: 120_000 }, async () => {
    // 70,000 + 70,000 + 3 float32 elements: three 64 Ki-element chunks, so steps are journalled.
    const n = 70_000;
    const params = { a: Array.from({ length: n }, (_, i) => Math.sin(i) / 2), b: Array.from({ length: n }, (_, i) => Math.cos(i) / 3), c: [1, 2, 3] };
    const grads = (k: number) => ({ a: params.a.map((x, i) => Math.sin(x + k + i)), b: params.b.map((x, i) => Math.cos(x * k + i) / 4), c: [k, -k, 0.5] });
    const groups = [{ params: ['b'], lr: 0.003, weight_decay: 0.1, amsgrad: true }, { params: ['c'], betas: [0.5, 0.75] }];
    const opt = await createOptimizer({ optimizer: 'adamw', dtype: 'float32', params, hyperparams: { lr: 0.001 }, param_groups: groups });
    let p: Json = params;
    let state: Json | undefined;
    for (let k = 0; k < 4; k++) {
      const hosted = await callBytes('POST', `/v1/optimizers/${opt.id}/step?return=none`, encodeValues([...grads(k).a, ...grads(k).b, ...grads(k).c], 'F32'), authed(opt.token, { 'content-type': RAW }));
      expect(hosted.status, JSON.stringify(hosted.body)).toBe(200);
      await evictDurableObject(stubOf(opt.id));
      const s = await postJson('/v1/adamw/step', { params: p, grads: grads(k), dtype: 'float32', hyperparams: { lr: 0.001 }, param_groups: groups, ...(state ? { state } : {}) });
      expect(s.status).toBe(200);
      p = s.body.params;
      state = s.body.state;
    }
    const raw = await callBytes('GET', `/v1/optimizers/${opt.id}/params`, undefined, authed(opt.token, { accept: RAW }));
    expect(decodeValues({ name: '', dtype: 'F32', shape: [], data: raw.bytes })).toEqual([...p.a, ...p.b, ...p.c]);
    const snap = await opCall('GET', opt, '/state');
    expect(stateOf(snap.body)).toEqual(state);
  });
});
