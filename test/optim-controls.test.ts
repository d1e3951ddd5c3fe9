// Parameter groups, gradient clipping, frozen tensors and skipped steps on the stateless step of
// every optimizer, against torch 1.13 (test/fixtures/optim/{param_groups,clip}.json) and hand
// derivations.

import { describe, expect, it } from 'vitest';
import { clipGradNorm, clipGradValue } from '../src/optim/clip.ts';
import clipFile from './fixtures/optim/clip.json';
import groupsFile from './fixtures/optim/param_groups.json';
import { callBytes, postJson } from './helpers/http.ts';
import { createOptimizer, expectProblem, opCall } from './helpers/optimizers.ts';
import { decodeValues, encodeValues, readSafetensors, writeSafetensors } from './helpers/safetensors.ts';
import { leavesOf, zipLeaves } from './helpers/trees.ts';

type Tree = unknown;

function diffs(label: string, actual: unknown, expected: unknown): string[] {
  return zipLeaves(actual, expected)
    .filter(({ a, e }) => !Object.is(a, e))
    .map(({ path, a, e }) => `${label}${path}: ${a} != torch ${e}`);
}

const flat = (tree: Tree): number[] => leavesOf(tree).map((l) => l.value as number);
const typed = (dtype: string, values: number[]) => (dtype === 'float32' ? Float32Array.from(values) : Float64Array.from(values));

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

describe('param_groups against torch 1.13', () => {
  it.each((groupsFile.cases as unknown as GroupCase[]).map((c) => ({ c, name: c.name })))('$name', async ({ c }) => {
    let params: Tree = c.params;
    let state: Record<string, unknown> | undefined;
    const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
    const groups = c.param_groups.map((g) => ({ params: g.params, ...g.hyperparams }));
    const problems: string[] = [];
    for (let s = 0; s < c.grads.length; s++) {
      const r = await postJson(`/v1/${c.optimizer}/step`, { params, grads: c.grads[s], dtype: c.dtype, hyperparams: c.defaults, param_groups: groups, ...(state ? { state } : {}) });
      expect(r.status, JSON.stringify(r.body).slice(0, 400)).toBe(200);
      ({ params, state } = r.body);
      const e = byIndex.get(s);
      if (!e) continue;
      problems.push(...diffs(`step ${s} params`, params, e.params));
      const want = { step: s + 1, ...e.state };
      expect(Object.keys(state!).sort()).toEqual(Object.keys(want).sort());
      problems.push(...diffs(`step ${s} state`, state, want));
    }
    expect(problems.slice(0, 10)).toEqual([]);
  });

  const p = { 'enc.a': [1, 2], 'enc.b': [3], 'head.w': [4, 5], 'head.bias': [6] };
  const g = { 'enc.a': [0.5, -0.5], 'enc.b': [1], 'head.w': [0.25, 0.25], 'head.bias': [2] };

  it('matches names and * patterns; unnamed tensors use the top-level hyperparams', async () => {
    const r = await postJson('/v1/sgd/step', { params: p, grads: g, dtype: 'float64', hyperparams: { lr: 1 }, param_groups: [{ params: ['enc.*'], lr: 0.5 }, { params: ['*.bias'], lr: 0 }] });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.params).toEqual({ 'enc.a': [1 - 0.25, 2 + 0.25], 'enc.b': [3 - 0.5], 'head.w': [4 - 0.25, 5 - 0.25], 'head.bias': [6] });
  });

  it('refuses a tensor in two groups and a pattern that matches nothing, naming them', async () => {
    const overlap = await postJson('/v1/sgd/step', { params: p, grads: g, hyperparams: { lr: 1 }, param_groups: [{ params: ['enc.*'] }, { params: ['head.w', 'enc.b'] }] });
    expect(overlap.status).toBe(422);
    expect(overlap.body.errors[0]).toMatchObject({ field: 'param_groups[1].params[1]', value: 'enc.b' });
    const none = await postJson('/v1/sgd/step', { params: p, grads: g, hyperparams: { lr: 1 }, param_groups: [{ params: ['dec.*'] }] });
    expect(none.status).toBe(422);
    expect(none.body.errors[0]).toMatchObject({ field: 'param_groups[0].params[0]', value: 'dec.*' });
    const bad = await postJson('/v1/sgd/step', { params: p, grads: g, hyperparams: { lr: 1 }, param_groups: [{ params: ['enc.a'], momentum: -1 }] });
    expect(bad.status).toBe(422);
    expect(bad.body.errors[0].field).toBe('param_groups[0].momentum');
  });

  it('SGD: nesterov is checked on the top-level set only, as torch 1.13 checks the constructor\'s defaults (a group with momentum 0 is plain SGD)', async () => {
    // torch 1.13 (add_param_group validates nothing; with momentum 0 _single_tensor_sgd never reads nesterov):
    //   a = torch.tensor([1., 2.], dtype=dt, requires_grad=True); b = torch.tensor([3.], …); c = torch.tensor([-1.], …)
    //   opt = torch.optim.SGD([{'params': [a]}, {'params': [b], 'momentum': 0}, {'params': [c], 'momentum': 0.5, 'dampening': 0.5}],
    //                         lr=0.1, momentum=0.9, nesterov=True)
    //   for ga, gb, gc in [([0.5, -1.], [2.], [0.25]), ([0.3, 0.7], [-1.5], [-0.75])]: (set .grad); opt.step(); a.tolist(), b.tolist(), c.tolist()
    const torchValues = {
      float64: [
        { a: [0.905, 2.19], b: [2.8], c: [-1.0375] },
        { a: [0.8075, 2.138], b: [2.9499999999999997], c: [-0.9500000000000001] },
      ],
      float32: [
        { a: [0.9049999713897705, 2.190000057220459], b: [2.799999952316284], c: [-1.037500023841858] },
        { a: [0.8074999451637268, 2.138000011444092], b: [2.950000047683716], c: [-0.9500000476837158] },
      ],
    };
    const grads = [
      { a: [0.5, -1], b: [2], c: [0.25] },
      { a: [0.3, 0.7], b: [-1.5], c: [-0.75] },
    ];
    const hyperparams = { lr: 0.1, momentum: 0.9, nesterov: true };
    const param_groups = [{ params: ['b'], momentum: 0 }, { params: ['c'], momentum: 0.5, dampening: 0.5 }];
    for (const dtype of ['float64', 'float32'] as const) {
      let params: unknown = { a: [1, 2], b: [3], c: [-1] };
      let state: unknown;
      const opt = await createOptimizer({ optimizer: 'sgd', dtype, params, hyperparams, param_groups });
      for (let k = 0; k < 2; k++) {
        const r = await postJson('/v1/sgd/step', { params, grads: grads[k], dtype, hyperparams, param_groups, ...(state ? { state } : {}) });
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expect(r.body.params, `${dtype} step ${k}`).toEqual(torchValues[dtype][k]);
        expect(r.body.state.momentum_buffer.b).toBeNull(); // torch: state[b]['momentum_buffer'] is None
        const hosted = await opCall('POST', opt, '/step', { grads: grads[k] });
        expect(hosted.status, JSON.stringify(hosted.body)).toBe(200);
        expect(hosted.body.params, `hosted ${dtype} step ${k}`).toEqual(torchValues[dtype][k]);
        params = r.body.params;
        state = r.body.state;
      }
    }
    // PATCHed in, as torch's add_param_group takes it; the constructor's own set still may not.
    const opt = await createOptimizer({ optimizer: 'sgd', params: { a: [1], b: [1] }, hyperparams: { lr: 0.1 } });
    expect((await opCall('PATCH', opt, '', { param_groups: [{ params: ['b'], nesterov: true }] })).status).toBe(200);
    expectProblem(await opCall('PATCH', opt, '', { hyperparams: { nesterov: true } }), 422, 'hyperparams.nesterov');
  });

  it('needs SGD\'s lr only where a tensor uses it', async () => {
    const all = await postJson('/v1/sgd/step', { params: { a: [1] }, grads: { a: [1] }, dtype: 'float64', param_groups: [{ params: ['*'], lr: 0.5 }] });
    expect(all.status, JSON.stringify(all.body)).toBe(200);
    expect(all.body.params).toEqual({ a: [0.5] });
    const some = await postJson('/v1/sgd/step', { params: p, grads: g, param_groups: [{ params: ['enc.*'], lr: 0.5 }] });
    expect(some.status).toBe(422);
    expect(some.body.errors[0].field).toBe('hyperparams.lr');
  });

  it('starts a fresh tensor\'s state as torch creates it: Adagrad\'s sum from the top-level initial_accumulator_value (a group\'s has no effect), amsgrad\'s slot only in its group', async () => {
    // torch 1.13's Adagrad.__init__ fills every state["sum"] from its constructor argument, not the group's:
    //   a = torch.tensor([1., 2.], dtype=dt, requires_grad=True); b = torch.tensor([3.], dtype=dt, requires_grad=True)
    //   opt = torch.optim.Adagrad([{'params': [a]}, {'params': [b], 'initial_accumulator_value': 0.5}], lr=0.1, initial_accumulator_value=2)
    //   a.grad = torch.tensor([0.5, -1.], dtype=dt); b.grad = torch.tensor([2.], dtype=dt); opt.step()
    //   a.tolist(), b.tolist(), opt.state[a]['sum'].tolist(), opt.state[b]['sum'].tolist()
    const torchValues = {
      float64: { a: [0.9666666666688889, 2.0577350269156294], b: [2.9183503419105605] },
      float32: { a: [0.9666666388511658, 2.057734966278076], b: [2.9183504581451416] },
    };
    for (const dtype of ['float64', 'float32'] as const) {
      const adagrad = await postJson('/v1/adagrad/step', {
        params: { a: [1, 2], b: [3] },
        grads: { a: [0.5, -1], b: [2] },
        dtype,
        hyperparams: { lr: 0.1, initial_accumulator_value: 2 },
        param_groups: [{ params: ['b'], initial_accumulator_value: 0.5 }],
      });
      expect(adagrad.status, JSON.stringify(adagrad.body)).toBe(200);
      expect(adagrad.body.params, dtype).toEqual(torchValues[dtype]);
      expect(adagrad.body.state.sum, dtype).toEqual({ a: [2.25, 3], b: [6] });
    }
    // The case: a group's initial_accumulator_value alone changes nothing (torch: a = 0.9, sum 1).
    const one = await postJson('/v1/adagrad/step', { params: { a: [1], b: [1] }, grads: { a: [1], b: [1] }, hyperparams: { lr: 0.1 }, param_groups: [{ params: ['a'], initial_accumulator_value: 0.5 }] });
    expect(one.status, JSON.stringify(one.body)).toBe(200);
    expect(one.body.params).toEqual({ a: [Math.fround(0.9)], b: [Math.fround(0.9)] });
    expect(one.body.state.sum).toEqual({ a: [1], b: [1] });

    const alone = async (route: string, params: number[], grads: number[], hyperparams: Record<string, unknown>) =>
      (await postJson(route, { params, grads, dtype: 'float64', hyperparams })).body;
    const adamw = await postJson('/v1/adamw/step', { params: { a: [1, 2], b: [3] }, grads: { a: [0.5, -1], b: [2] }, dtype: 'float64', param_groups: [{ params: ['b'], amsgrad: true }] });
    expect(adamw.status, JSON.stringify(adamw.body)).toBe(200);
    // torch keeps max_exp_avg_sq only for the parameters of an amsgrad group: None (null) for a.
    expect(adamw.body.state.max_exp_avg_sq).toEqual({ a: null, b: (await alone('/v1/adamw/step', [3], [2], { amsgrad: true })).state.max_exp_avg_sq });
  });

  it('drives each group\'s lr by the schedule from the group\'s own lr (torch: base_lrs per group)', async () => {
    // StepLR(step_size=2, gamma=0.1) at step 2: base_lr · 0.1 for each group.
    const r = await postJson('/v1/sgd/step', {
      params: { a: [1], b: [1] },
      grads: { a: [1], b: [1] },
      dtype: 'float64',
      state: { step: 2 },
      schedule: { type: 'step', lr: 0.2, step_size: 2, gamma: 0.1 },
      param_groups: [{ params: ['b'], lr: 3 }],
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.lr).toBe(0.2 * 0.1);
    expect(r.body.params).toEqual({ a: [1 - 0.2 * 0.1], b: [1 - 3 * 0.1] });
  });
});

interface ClipCase {
  name: string;
  kind: 'clip_grad_norm' | 'clip_grad_value' | 'clip_then_step';
  dtype: 'float32' | 'float64';
  max_norm?: number;
  clip_value?: number;
  clip?: { type: 'norm'; max_norm: number } | { type: 'value'; clip_value: number };
  optimizer?: string;
  hyperparams?: Record<string, number | boolean>;
  params?: Tree;
  grads: Tree;
  expected: unknown;
}

const clipCases = clipFile.cases as unknown as ClipCase[];

describe('clip_grad_norm_ and clip_grad_value_ against torch 1.13', () => {
  it.each(clipCases.filter((c) => c.kind !== 'clip_then_step').map((c) => ({ c, name: c.name })))('$name', ({ c }) => {
    const tensors = c.grads !== null && typeof c.grads === 'object' && !Array.isArray(c.grads) ? Object.values(c.grads as Record<string, Tree>) : [c.grads];
    const arrays = tensors.map((t) => typed(c.dtype, flat(t)));
    const expected = c.expected as { total_norm?: number; grads: Tree };
    if (c.kind === 'clip_grad_norm') expect(clipGradNorm(c.dtype, arrays, c.max_norm!)).toBe(expected.total_norm);
    else clipGradValue(c.dtype, arrays, c.clip_value!);
    const want = (expected.grads !== null && typeof expected.grads === 'object' && !Array.isArray(expected.grads) ? Object.values(expected.grads as Record<string, Tree>) : [expected.grads]).map(flat);
    expect(arrays.map((a) => [...a])).toEqual(want);
  });

  // torch's Adam with weight_decay 0 is AdamW with weight_decay 0 (p · (1 − lr·0) = p exactly).
  const route = (c: ClipCase) => (c.optimizer === 'adam' ? 'adamw' : c.optimizer!);
  it.each(clipCases.filter((c) => c.kind === 'clip_then_step').map((c) => ({ c, name: c.name })))('$name, through POST /v1/{optimizer}/step', async ({ c }) => {
    expect(c.optimizer === 'adam' ? c.hyperparams!.weight_decay : 0).toBe(0);
    const clip = c.clip!.type === 'norm' ? { clip_grad_norm: c.clip!.max_norm } : { clip_grad_value: (c.clip as { clip_value: number }).clip_value };
    let params = c.params;
    let state: Record<string, unknown> | undefined;
    const problems: string[] = [];
    const expected = c.expected as Array<{ step_index: number; total_norm?: number; params: Tree; state: Record<string, unknown> }>;
    const byIndex = new Map(expected.map((e) => [e.step_index, e]));
    const grads = c.grads as Tree[];
    for (let s = 0; s < grads.length; s++) {
      const r = await postJson(`/v1/${route(c)}/step`, { params, grads: grads[s], dtype: c.dtype, hyperparams: { ...c.hyperparams, ...clip }, ...(state ? { state } : {}) });
      expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(200);
      ({ params, state } = r.body);
      const e = byIndex.get(s);
      if (!e) continue;
      if (e.total_norm !== undefined) expect(r.body.grad_norm, `step ${s} grad_norm`).toBe(e.total_norm);
      else expect(r.body.grad_norm).toBeUndefined();
      problems.push(...diffs(`step ${s} params`, params, e.params));
      problems.push(...diffs(`step ${s} state`, state, { step: s + 1, ...e.state }));
    }
    expect(problems.slice(0, 10)).toEqual([]);
  });
});

describe('frozen tensors (a null gradient, as torch skips a parameter whose .grad is None)', () => {
  it('leaves the tensor, its state and its step count alone; the count is per tensor afterwards', async () => {
    const hp = { lr: 0.1, weight_decay: 0.5 };
    const p0 = { a: [1, -2], b: [3] };
    const one = await postJson('/v1/adamw/step', { params: p0, grads: { a: [0.5, 0.25], b: null }, dtype: 'float64', hyperparams: hp });
    expect(one.status, JSON.stringify(one.body)).toBe(200);
    expect(one.body.params.b).toEqual([3]); // no decay either: torch skips the parameter entirely
    expect(one.body.state.exp_avg.b).toEqual([0]);
    expect(one.body.state.step).toBe(1);
    expect(one.body.state.tensors).toEqual({ b: { step: 0 } });
    // b's first real step uses bias correction for step 1, as a fresh optimizer on b alone would.
    const two = await postJson('/v1/adamw/step', { params: one.body.params, grads: { a: [0.5, 0.25], b: [2] }, dtype: 'float64', hyperparams: hp, state: one.body.state });
    expect(two.status).toBe(200);
    const alone = await postJson('/v1/adamw/step', { params: [3], grads: [2], dtype: 'float64', hyperparams: hp });
    expect(two.body.params.b).toEqual(alone.body.params);
    expect(two.body.state.exp_avg.b).toEqual(alone.body.state.exp_avg);
    expect(two.body.state.tensors).toEqual({ b: { step: 1 } });
    expect(two.body.state.step).toBe(2);
  });

  it('keeps SGD\'s lazily created buffer null for a tensor that never stepped', async () => {
    const r = await postJson('/v1/sgd/step', { params: { a: [1], b: [2] }, grads: { a: [1], b: null }, dtype: 'float64', hyperparams: { lr: 0.1, momentum: 0.9 } });
    expect(r.status).toBe(200);
    expect(r.body.params).toEqual({ a: [0.9], b: [2] });
    expect(r.body.state.momentum_buffer).toEqual({ a: [1], b: null });
    expect(r.body.state.tensors).toBeUndefined(); // SGD counts nothing per tensor
    const next = await postJson('/v1/sgd/step', { params: r.body.params, grads: { a: [1], b: [1] }, dtype: 'float64', hyperparams: { lr: 0.1, momentum: 0.9 }, state: r.body.state });
    expect(next.body.state.momentum_buffer).toEqual({ a: [1.9], b: [1] }); // b's buffer starts as a clone of its gradient
  });

  it('leaves frozen gradients out of the clipping norm; in safetensors a missing grads tensor is frozen', async () => {
    const json = await postJson('/v1/sgd/step', { params: { a: [0, 0], b: [0] }, grads: { a: [3, 4], b: null }, dtype: 'float64', hyperparams: { lr: 1, clip_grad_norm: 1 } });
    expect(json.body.grad_norm).toBe(5);
    const coef = (1 / (5 + 1e-6)) * 1;
    expect(json.body.params).toEqual({ a: [-3 * coef, -4 * coef], b: [0] });
    const file = writeSafetensors([
      { name: 'params/a', dtype: 'F64', shape: [2], data: encodeValues([0, 0], 'F64') },
      { name: 'params/b', dtype: 'F64', shape: [1], data: encodeValues([0], 'F64') },
      { name: 'grads/a', dtype: 'F64', shape: [2], data: encodeValues([3, 4], 'F64') },
    ], { hyperparams: JSON.stringify({ lr: 1, clip_grad_norm: 1 }) });
    const r = await callBytes('POST', '/v1/sgd/step', file, { 'content-type': 'application/vnd.safetensors', accept: 'application/vnd.safetensors' });
    expect(r.status).toBe(200);
    const out = readSafetensors(r.bytes);
    expect(decodeValues(out.tensors.get('params/a')!)).toEqual(json.body.params.a);
    expect(decodeValues(out.tensors.get('params/b')!)).toEqual([0]);
    expect(out.metadata!.grad_norm).toBe('5');
  });
});

describe('nonfinite: "skip" (GradScaler)', () => {
  it('skips a step whose result overflows: params, state and step as sent', async () => {
    const body = { params: [1e308, 1], grads: [-1e308, 1], dtype: 'float64', state: { step: 3, exp_avg: [0, 0] } };
    const refused = await postJson('/v1/lion/step', { ...body, hyperparams: { lr: 10 } });
    expect(refused.status).toBe(200); // Lion's sign update cannot overflow here: use SGD instead
    const sgd = { params: [1e308, 1], grads: [-1e308, 1], dtype: 'float64', state: { step: 3 } };
    expect((await postJson('/v1/sgd/step', { ...sgd, hyperparams: { lr: 10 } })).status).toBe(422);
    const skipped = await postJson('/v1/sgd/step', { ...sgd, hyperparams: { lr: 10, nonfinite: 'skip' } });
    expect(skipped.status).toBe(200);
    expect(skipped.body).toMatchObject({ params: [1e308, 1], state: { step: 3 }, skipped: true });
    const fine = await postJson('/v1/sgd/step', { ...sgd, grads: [1, 1], hyperparams: { lr: 1, nonfinite: 'skip' } });
    expect(fine.body).toMatchObject({ params: [1e308 - 1, 0], state: { step: 4 }, skipped: false });
  });

  it('skips a step with a NaN or infinite gradient (safetensors can carry them)', async () => {
    const file = (g: number) =>
      writeSafetensors([
        { name: 'params', dtype: 'F32', shape: [2], data: encodeValues([1, 2], 'F32') },
        { name: 'grads', dtype: 'F32', shape: [2], data: encodeValues([g, 1], 'F32') },
        { name: 'exp_avg', dtype: 'F32', shape: [2], data: encodeValues([0.5, 0.5], 'F32') },
        { name: 'exp_avg_sq', dtype: 'F32', shape: [2], data: encodeValues([0.25, 0.25], 'F32') },
      ], { step: '7', hyperparams: JSON.stringify({ nonfinite: 'skip' }) });
    for (const g of [NaN, Infinity]) {
      const r = await callBytes('POST', '/v1/adamw/step', file(g), { 'content-type': 'application/vnd.safetensors', accept: 'application/vnd.safetensors' });
      expect(r.status, new TextDecoder().decode(r.bytes)).toBe(200);
      const out = readSafetensors(r.bytes);
      expect(out.metadata).toMatchObject({ skipped: 'true', step: '7' });
      expect(decodeValues(out.tensors.get('params')!)).toEqual([1, 2]);
      expect(decodeValues(out.tensors.get('exp_avg')!)).toEqual([0.5, 0.5]);
    }
  });
});

describe('sparse (row) gradients', () => {
  const params = { emb: [[1, 2], [3, 4], [5, 6]], w: [0.5] };

  it('SparseAdam changes only the named rows; repeated rows are summed first (torch coalesce)', async () => {
    const twice = await postJson('/v1/sparse_adam/step', { params, grads: { emb: { indices: [2, 0, 2], values: [[0.5, 0.5], [1, 1], [0.25, -1]] }, w: { indices: [0], values: [1] } }, dtype: 'float64' });
    expect(twice.status, JSON.stringify(twice.body)).toBe(200);
    expect(twice.body.params.emb[1]).toEqual([3, 4]);
    expect(twice.body.state.exp_avg.emb[1]).toEqual([0, 0]);
    const summed = await postJson('/v1/sparse_adam/step', { params, grads: { emb: { indices: [0, 2], values: [[1, 1], [0.75, -0.5]] }, w: { indices: [0], values: [1] } }, dtype: 'float64' });
    expect(twice.body).toEqual(summed.body);
    // One step from zeros: m = 0.1 g, v = 0.001 g², step size lr·sqrt(0.001)/0.1, so p -= lr·g/(|g| + eps·…) ≈ lr·sign(g).
    expect(twice.body.params.emb[0][0]).toBeCloseTo(1 - 1e-3, 9);
  });

  it('refuses what torch refuses, naming the tensor', async () => {
    const dense = await postJson('/v1/sparse_adam/step', { params, grads: { emb: [[1, 1], [1, 1], [1, 1]], w: [1] } });
    expect(dense.status).toBe(422);
    expect(dense.body.errors[0].field).toBe('grads.emb');
    const notSparse = await postJson('/v1/adamw/step', { params, grads: { emb: { indices: [0], values: [[1, 1]] }, w: [1] } });
    expect(notSparse.status).toBe(422);
    expect(notSparse.body.errors[0]).toMatchObject({ field: 'grads.emb' });
    expect(notSparse.body.errors[0].message).toMatch(/sparse_adam/);
    const range = await postJson('/v1/sparse_adam/step', { params, grads: { emb: { indices: [3], values: [[1, 1]] }, w: null } });
    expect(range.status).toBe(422);
    expect(range.body.errors[0]).toMatchObject({ field: 'grads.emb.indices[0]', value: '3' });
    const shape = await postJson('/v1/sparse_adam/step', { params, grads: { emb: { indices: [0, 1], values: [[1, 1]] }, w: null } });
    expect(shape.status).toBe(422);
    const clip = await postJson('/v1/sparse_adam/step', { params, grads: { emb: { indices: [0], values: [[1, 1]] }, w: null }, hyperparams: { clip_grad_value: 1 } });
    expect(clip.status).toBe(422);
    expect(clip.body.errors[0].field).toBe('hyperparams.clip_grad_value');
  });
});

describe('hyperparameter rules with no tensor to step', () => {
  it('checks the top-level hyperparameters even for an empty tree (torch validates them in the constructor)', async () => {
    const nesterov = await postJson('/v1/sgd/step', { params: {}, grads: {}, hyperparams: { lr: 0.1, nesterov: true } });
    expect(nesterov.status).toBe(422);
    expect(nesterov.body.errors[0].field).toBe('hyperparams.nesterov');
    const noLr = await postJson('/v1/sgd/step', { params: {}, grads: {} });
    expect(noLr.status).toBe(422);
    expect(noLr.body.errors[0].field).toBe('hyperparams.lr');
    const inGroups = await postJson('/v1/sgd/step', { params: { a: [1] }, grads: { a: [1] }, hyperparams: { lr: 0.1, nesterov: true }, param_groups: [{ params: ['a'], momentum: 0.9 }] });
    expect(inGroups.status).toBe(422); // the top-level set is invalid whether or not a tensor uses it
  });
});

describe('gradient controls on hosted optimizers', () => {
  it('clip as torch does (grad_norm in the answer), the same as the stateless step, and keep it across steps and PATCH', async () => {
    const hp = { lr: 0.1, momentum: 0.9, clip_grad_norm: 1 };
    const p0 = { w: [0.5, -0.5], b: [0.25] };
    const opt = await createOptimizer({ optimizer: 'sgd', dtype: 'float32', params: p0, hyperparams: hp });
    let stateless = { params: p0 as unknown, state: undefined as unknown };
    for (const g of [{ w: [3, 4], b: [1] }, { w: [0.1, 0.1], b: [0.1] }]) {
      const hosted = await opCall('POST', opt, '/step', { grads: g });
      expect(hosted.status, JSON.stringify(hosted.body)).toBe(200);
      const s = await postJson('/v1/sgd/step', { params: stateless.params, grads: g, dtype: 'float32', hyperparams: hp, ...(stateless.state ? { state: stateless.state } : {}) });
      expect(hosted.body.params).toEqual(s.body.params);
      expect(hosted.body.grad_norm).toBe(s.body.grad_norm);
      stateless = { params: s.body.params, state: s.body.state };
    }
    expect((await opCall('PATCH', opt, '', { hyperparams: { clip_grad_value: 0.01 } })).status).toBe(200);
    const clamped = await opCall('POST', opt, '/step', { grads: { w: [5, -5], b: [0] } });
    const s = await postJson('/v1/sgd/step', { params: stateless.params, grads: { w: [5, -5], b: [0] }, dtype: 'float32', hyperparams: { ...hp, clip_grad_value: 0.01 }, state: stateless.state });
    expect(clamped.body.params).toEqual(s.body.params);
  });

  it('skip a step whose result is not finite with nonfinite: skip; refuse it (422) otherwise; nothing changes either way', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', dtype: 'float64', params: { w: [1e308] }, hyperparams: { lr: 10 } });
    expect((await opCall('POST', opt, '/step', { grads: { w: [-1e308] } })).status).toBe(422);
    expect((await opCall('PATCH', opt, '', { hyperparams: { nonfinite: 'skip' } })).status).toBe(200);
    const skipped = await opCall('POST', opt, '/step', { grads: { w: [-1e308] } });
    expect(skipped.status).toBe(200);
    expect(skipped.body).toMatchObject({ step: 0, skipped: true, params: { w: [1e308] } });
    const fine = await opCall('POST', opt, '/step', { grads: { w: [1] } });
    expect(fine.body).toMatchObject({ step: 1, skipped: false, params: { w: [1e308 - 10] } });
  });
});
