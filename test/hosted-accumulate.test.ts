// Many workers, one optimizer (accumulate), through HTTP in workerd. Each step of an optimizer
// created with `accumulate: {contributions: N, reduce}` takes one contribution per worker id and is
// applied once the set is complete, with the gradients reduced in ascending worker id order in
// float32: acc = g0; acc = acc + g1; …; then acc / N for mean. The reference here is computed
// independently, with Math.fround after every add and the division (numpy's float32
// `((g0 + g1) + g2) / np.float32(3)`), and fed to a plain hosted optimizer of the same kind (itself
// bit-identical to torch, see hosted-family.test.ts): the accumulating optimizer must equal it bit
// for bit, whatever the arrival order, the body format, duplicates, evictions or concurrency (also as
// a fast-check property over random N, orders, repeats and formats; seeds: test/helpers/fuzz.ts).

import { abortAllDurableObjects, evictDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PARAMS, RAW, ST, contribute, expectSame, grad, info, order, reduced, tree, values, type Format, type Json } from './helpers/accumulate.ts';
import { fuzz } from './helpers/fuzz.ts';
import { callBytes } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, type Created } from './helpers/optimizers.ts';
import { encodeValues, writeSafetensors } from './helpers/safetensors.ts';

const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));

interface Case {
  optimizer: string;
  hyperparams: Json;
  n: number;
  reduce: 'mean' | 'sum';
  formats: Format[];
}

const CASES: Case[] = [
  { optimizer: 'adam', hyperparams: { lr: 0.01, weight_decay: 0.1, amsgrad: true }, n: 3, reduce: 'mean', formats: ['json', 'raw', 'safetensors'] },
  { optimizer: 'sgd', hyperparams: { lr: 0.05, momentum: 0.9, nesterov: true }, n: 4, reduce: 'sum', formats: ['raw'] },
  { optimizer: 'sgd', hyperparams: { lr: 0.05, momentum: 0.9, dampening: 0.1 }, n: 4, reduce: 'mean', formats: ['json', 'raw'] },
];

async function pair(c: Case) {
  const acc = await createOptimizer({ optimizer: c.optimizer, params: PARAMS, hyperparams: c.hyperparams, accumulate: { contributions: c.n, reduce: c.reduce } });
  const ref = await createOptimizer({ optimizer: c.optimizer, params: PARAMS, hyperparams: c.hyperparams });
  return { acc, ref };
}

async function referenceStep(ref: Created, s: number, c: Case) {
  const g = reduced(Array.from({ length: c.n }, (_, w) => grad(s, w)), c.reduce);
  const r = await opCall('POST', ref, '/step', { grads: tree(g) });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body as Json;
}

describe('accumulated steps equal one step with the reduced gradient, bit for bit', () => {
  for (const c of CASES) {
    it(`${c.optimizer} ${JSON.stringify(c.hyperparams)}: ${c.n} contributions, ${c.reduce}, shuffled, ${c.formats.join('/')}`, async () => {
      const { acc, ref } = await pair(c);
      expect((await info(acc)).accumulate).toEqual({ contributions: c.n, reduce: c.reduce, received: [], missing: c.n });
      for (let s = 0; s < 4; s++) {
        const ids = order(c.n, s);
        const seen: number[] = [];
        let last: Json | undefined;
        for (const [k, w] of ids.entries()) {
          const r = await contribute(acc, w, grad(s, w), s, c.formats[(s + k) % c.formats.length]);
          seen.push(w);
          if (k < c.n - 1) {
            expect(r.status, JSON.stringify(r.body)).toBe(202);
            expect(r.body).toEqual({ pending: true, worker: w, step: s, contributions: c.n, reduce: c.reduce, received: [...seen].sort((a, b) => a - b), missing: c.n - seen.length, replayed: false });
            expect(r.headers.get('step')).toBe(String(s));
          } else {
            expect(r.status, JSON.stringify(r.body)).toBe(200);
            last = r.body;
          }
        }
        const want = await referenceStep(ref, s, c);
        expect(last!.step).toBe(s + 1);
        expect(last!.lr).toBe(want.lr);
        expectSame(last!.params, want.params);
        expect((await info(acc)).accumulate).toEqual({ contributions: c.n, reduce: c.reduce, received: [], missing: c.n });
      }
      // The state too (moments, momentum buffers), not only the params.
      const [a, b] = [(await opCall('GET', acc, '/state')).body, (await opCall('GET', ref, '/state')).body];
      const { id: _a, created_at: _ca, updated_at: _ua, ...sa } = a;
      const { id: _b, created_at: _cb, updated_at: _ub, ...sb } = b;
      expect(sa).toEqual(sb);
      expectSame(sa, sb);
    });
  }

  it('adds in ascending worker id order whatever the arrival order (float32 rounding shows it), then divides by N', async () => {
    // SGD with lr 1 and no momentum: params move by exactly -g. In float32, (1 + 1e8) + -1e8 = 0, while 1 + (1e8 + -1e8) = 1.
    const hp = { lr: 1 };
    const sum = await createOptimizer({ optimizer: 'sgd', params: [0, 0], hyperparams: hp, accumulate: { contributions: 3, reduce: 'sum' } });
    const mean = await createOptimizer({ optimizer: 'sgd', params: [0, 0], hyperparams: hp, accumulate: { contributions: 3 } });
    expect(mean.body.accumulate).toEqual({ contributions: 3, reduce: 'mean', received: [], missing: 3 });
    const gs = [[1, 1], [1e8, 2], [-1e8, 4]];
    for (const opt of [sum, mean]) {
      let r: Json = {};
      for (const w of [2, 1, 0]) r = await opCall('POST', opt, `/step?worker=${w}`, { grads: gs[w], expected_step: 0 });
      expect(r.status).toBe(200);
      // Sum: [0, 7]; mean: [0, fround(7 / 3)]; in descending order the first would be 1.
      expect(r.body.params).toEqual(opt === sum ? [0, -7] : [0, -Math.fround(7 / 3)]);
    }
  });
});

describe('contributions: duplicates, late ones, bad ones', () => {
  const c: Case = { optimizer: 'adam', hyperparams: { lr: 0.01 }, n: 3, reduce: 'mean', formats: ['json'] };

  it('the same contribution again is idempotent (any format); other values from the same worker are a 409; nothing changes', async () => {
    const { acc, ref } = await pair(c);
    expect((await contribute(acc, 1, grad(0, 1), 0)).status).toBe(202);
    const etag = (await opCall('GET', acc, '')).headers.get('etag');
    const again = await contribute(acc, 1, grad(0, 1), 0, 'raw');
    expect(again.status).toBe(202);
    expect(again.body).toMatchObject({ worker: 1, received: [1], missing: 2, replayed: true });
    const other = await contribute(acc, 1, grad(0, 2), 0);
    expectProblem(other, 409, 'worker');
    expect(other.body.detail).toMatch(/already contributed/);
    // Another loss is another contribution too.
    expectProblem(await contribute(acc, 1, grad(0, 1), 0, 'json', {}, 0.5), 409, 'worker');
    const now = await opCall('GET', acc, '');
    expect(now.headers.get('etag')).toBe(etag);
    expect(now.body.accumulate.received).toEqual([1]);
    expect((await contribute(acc, 0, grad(0, 0), 0)).status).toBe(202);
    const done = await contribute(acc, 2, grad(0, 2), 0);
    expect(done.status).toBe(200);
    expectSame(done.body.params, (await referenceStep(ref, 0, c)).params);
  });

  it('a contribution to a step already applied is a 409 naming the current step, or the step\'s replay with its Idempotency-Key', async () => {
    const { acc } = await pair(c);
    const key = (w: number) => ({ 'idempotency-key': `step0-worker${w}` });
    for (const w of [0, 1]) expect((await contribute(acc, w, grad(0, w), 0, 'json', key(w))).status).toBe(202);
    const done = await contribute(acc, 2, grad(0, 2), 0, 'raw', key(2));
    expect(done.status).toBe(200);
    const late = await contribute(acc, 0, grad(0, 0), 0);
    expectProblem(late, 409, 'expected_step');
    expect(late.body.step).toBe(1);
    // With the key it sent: the step's answer, not applied again (held workers' keys too).
    for (const w of [0, 1, 2]) {
      const replay = await contribute(acc, w, grad(0, w), 0, 'json', key(w));
      expect(replay.status, JSON.stringify(replay.body)).toBe(200);
      expect(replay.body).toMatchObject({ step: 1, replayed: true });
      expectSame(replay.body.params, done.body.params);
    }
    // The key with other values: the 422 of a reused key.
    expectProblem(await contribute(acc, 0, grad(0, 1), 0, 'json', key(0)), 422, 'Idempotency-Key');
    expect((await info(acc)).step).toBe(1);
    expect((await info(acc)).accumulate.received).toEqual([]);
  });

  it('bad contributions are 422s and change nothing: worker out of range or missing, no expected_step, a tensor left out, worker without accumulate', async () => {
    const { acc, ref } = await pair(c);
    expect((await contribute(acc, 0, grad(0, 0), 0)).status).toBe(202);
    const before = await opCall('GET', acc, '');
    expectProblem(await contribute(acc, 3, grad(0, 1), 0), 422, 'worker');
    expectProblem(await contribute(acc, 64, grad(0, 1), 0, 'raw'), 422, 'worker');
    expectProblem(await opCall('POST', acc, '/step', { grads: tree(grad(0, 1)), expected_step: 0 }), 422, 'worker');
    expectProblem(await opCall('POST', acc, '/step?worker=1', { grads: tree(grad(0, 1)) }), 422, 'expected_step');
    const frozen = await opCall('POST', acc, '/step?worker=1', { grads: { b: null, w: tree(grad(0, 1)).w }, expected_step: 0 });
    expectProblem(frozen, 422, 'grads');
    expect(frozen.body.detail).toMatch(/dense/);
    const partial = writeSafetensors([{ name: 'b', dtype: 'F32', shape: [5], data: encodeValues(grad(0, 1).slice(0, 5), 'F32') }]);
    expectProblem(await callBytes('POST', `/v1/optimizers/${acc.id}/step?worker=1&expected_step=0`, partial, authed(acc.token, { 'content-type': ST, accept: 'application/json' })), 422, 'grads');
    expectProblem(await contribute(acc, 1, grad(0, 1).slice(1), 0, 'raw'), 422);
    expectProblem(await contribute(acc, 1, grad(0, 1).map((x, i) => (i === 3 ? NaN : x)), 0, 'raw'), 422);
    expectProblem(await contribute(ref, 0, grad(0, 0), 0), 422, 'worker');
    const after = await opCall('GET', acc, '');
    expect(after.headers.get('etag')).toBe(before.headers.get('etag'));
    expect(after.body.accumulate.received).toEqual([0]);
    for (const w of [2, 1]) await contribute(acc, w, grad(0, w), 0);
    expectSame((await opCall('GET', acc, '/params')).body.params, (await referenceStep(ref, 0, c)).params);
  });

  it('a sparse (row) gradient is not a contribution: 422 naming the tensor, nothing held', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: { e: [[1, 2], [3, 4]] }, hyperparams: { lr: 0.1 }, accumulate: { contributions: 2, reduce: 'mean' } });
    const rows = await opCall('POST', opt, '/step?worker=0', { grads: { e: { indices: [1], values: [[0.5, 0.5]] } }, expected_step: 0 });
    expectProblem(rows, 422, 'grads.e');
    expect(rows.body.detail).toMatch(/dense/);
    expect((await opCall('GET', opt, '')).body.accumulate.received).toEqual([]);
  });

  it('a reduced gradient that overflows is a 422 changing nothing; with nonfinite: "skip" the step is skipped and the contributions dropped', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: [1], hyperparams: { lr: 0.1 }, accumulate: { contributions: 2, reduce: 'sum' } });
    expect((await opCall('POST', opt, '/step?worker=0', { grads: [3e38], expected_step: 0 })).status).toBe(202);
    const over = await opCall('POST', opt, '/step?worker=1', { grads: [3e38], expected_step: 0 });
    expectProblem(over, 422);
    expect(over.body.detail).toMatch(/overflows/);
    expect((await info(opt)).accumulate.received).toEqual([0]);
    expect((await opCall('PATCH', opt, '', { hyperparams: { nonfinite: 'skip' } })).status).toBe(200);
    const skipped = await opCall('POST', opt, '/step?worker=1', { grads: [3e38], expected_step: 0 });
    expect(skipped.status).toBe(200);
    expect(skipped.body).toMatchObject({ step: 0, skipped: true, params: [1] });
    const meta = await info(opt);
    expect(meta.skipped_steps).toBe(1);
    expect(meta.accumulate.received).toEqual([]);
  });

  it('after a skipped step, the same contribution again answers as that step (skipped, replayed) instead of joining the next set', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: [1, 1], hyperparams: { lr: 0.5, nonfinite: 'skip' }, accumulate: { contributions: 2, reduce: 'sum' } });
    const g0 = encodeValues([1, 1], 'F32');
    const raw = (worker: number, body: Uint8Array) =>
      callBytes('POST', `/v1/optimizers/${opt.id}/step?worker=${worker}&expected_step=0`, body, authed(opt.token, { 'content-type': RAW, accept: 'application/json' }));
    expect((await raw(0, g0)).status).toBe(202);
    const skipped = await raw(1, encodeValues([NaN, 1], 'F32'));
    expect(skipped.body).toMatchObject({ step: 0, skipped: true });
    // Worker 0 lost its 202 and sends the same request again (no Idempotency-Key).
    const again = await raw(0, g0);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ step: 0, skipped: true, replayed: true });
    expect((await info(opt)).accumulate.received).toEqual([]);
    // New gradients make the next set, which steps: sum [0.25, 0.5] + [0.25, 0.5].
    expect((await raw(0, encodeValues([0.25, 0.5], 'F32'))).status).toBe(202);
    const stepped = await raw(1, encodeValues([0.25, 0.5], 'F32'));
    expect(stepped.body).toMatchObject({ step: 1, params: [1 - 0.5 * 0.5, 1 - 0.5 * 1] });
  });

  it('SparseAdam (sparse gradients only) cannot accumulate dense contributions: 422 at create and PATCH', async () => {
    const created = await callBytes('POST', '/v1/optimizers', { optimizer: 'sparse_adam', params: { w: [[0, 0]] }, accumulate: { contributions: 2 } }, { 'content-type': 'application/json' });
    expectProblem(created, 422, 'accumulate');
    const opt = await createOptimizer({ optimizer: 'sparse_adam', params: { w: [[0, 0]] } });
    expectProblem(await opCall('PATCH', opt, '', { accumulate: { contributions: 2 } }), 422, 'accumulate');
    expect((await info(opt)).accumulate).toBeUndefined();
  });

  it('the mean of finite losses whose sum overflows is finite', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: [1], hyperparams: { lr: 0.1 }, accumulate: { contributions: 2, reduce: 'mean' } });
    for (const w of [0, 1]) await opCall('POST', opt, `/step?worker=${w}`, { grads: [0.5], expected_step: 0, loss: 1.7e308 });
    expect((await opCall('GET', opt, '/history')).body.entries.map((e: Json) => e.loss)).toEqual([1.7e308]);
  });
});

describe('durability and concurrency', () => {
  const c: Case = { optimizer: 'sgd', hyperparams: { lr: 0.05, momentum: 0.9 }, n: 4, reduce: 'mean', formats: ['raw'] };

  it('held contributions survive eviction and an abort of the object', async () => {
    const { acc, ref } = await pair(c);
    for (let s = 0; s < 2; s++) {
      for (const w of [3, 0]) expect((await contribute(acc, w, grad(s, w), s, 'raw')).status).toBe(202);
      await evictDurableObject(stubOf(acc.id));
      expect((await info(acc)).accumulate.received).toEqual([0, 3]);
      expect((await contribute(acc, 1, grad(s, 1), s, 'raw')).status).toBe(202);
      await abortAllDurableObjects(); // a crash, not a clean eviction
      // The same contribution after the restart is still recognised.
      expect((await contribute(acc, 3, grad(s, 3), s, 'raw')).body.replayed).toBe(true);
      const done = await contribute(acc, 2, grad(s, 2), s, 'raw');
      expect(done.status).toBe(200);
      expectSame(done.body.params, (await referenceStep(ref, s, c)).params);
    }
    await evictDurableObject(stubOf(acc.id));
    expectSame((await opCall('GET', acc, '/params')).body.params, (await opCall('GET', ref, '/params')).body.params);
  });

  it('contributions larger than one stored part (1 MiB), float32 and float64, are reduced exactly, across eviction', async () => {
    for (const [dtype, size, reduce] of [['float32', 300_007, 'mean'], ['float64', 200_003, 'sum']] as const) {
      // SGD with lr 1 from zeros: the params after the step are exactly minus the reduced gradient.
      const opt = await createOptimizer({ optimizer: 'sgd', shapes: { p: [size] }, dtype, hyperparams: { lr: 1 }, accumulate: { contributions: 3, reduce } });
      const gs = [0, 1, 2].map((w) => {
        const v = values(7 + w, size, 1 + w);
        return dtype === 'float32' ? Float32Array.from(v) : Float64Array.from(v, (x, i) => x + i * 1e-9);
      });
      const bytes = (a: Float32Array | Float64Array) => new Uint8Array(a.buffer);
      const headers = authed(opt.token, { 'content-type': `${RAW}; dtype=${dtype}`, accept: 'application/json' });
      const zeros = new Uint8Array(size * (dtype === 'float32' ? 4 : 8));
      expect((await callBytes('PUT', `/v1/optimizers/${opt.id}/params`, zeros, authed(opt.token, { 'content-type': RAW }))).status).toBe(200);
      for (const w of [2, 0]) expect((await callBytes('POST', `/v1/optimizers/${opt.id}/step?worker=${w}&expected_step=0`, bytes(gs[w]!), headers)).status).toBe(202);
      await evictDurableObject(stubOf(opt.id));
      const done = await callBytes('POST', `/v1/optimizers/${opt.id}/step?worker=1&expected_step=0&return=none`, bytes(gs[1]!), headers);
      expect(done.status, JSON.stringify(done.body)).toBe(200);
      const got = await callBytes('GET', `/v1/optimizers/${opt.id}/params`, undefined, authed(opt.token, { accept: RAW }));
      const params = dtype === 'float32' ? new Float32Array(got.bytes.slice().buffer) : new Float64Array(got.bytes.slice().buffer);
      const round = dtype === 'float32' ? Math.fround : (x: number) => x;
      let bad = 0;
      for (let i = 0; i < size; i++) {
        let acc = gs[0]![i]!;
        acc = round(acc + gs[1]![i]!);
        acc = round(acc + gs[2]![i]!);
        if (reduce === 'mean') acc = round(acc / 3);
        if (!Object.is(params[i], 0 - acc)) bad++;
      }
      expect(bad, dtype).toBe(0);
    }
  });

  it('bfloat16 contributions: the journal keeps the reduced gradient, not the last contribution (a replay after eviction equals the reference)', async () => {
    // 200,000 float32 elements: 4 checkpoint chunks, so steps are journalled and a reload replays them.
    const size = 200_000;
    const hp = { lr: 0.01 };
    const zeros = new Uint8Array(size * 4);
    const make = async (accumulate?: Json) => {
      const opt = await createOptimizer({ optimizer: 'adam', shapes: { p: [size] }, hyperparams: hp, ...(accumulate ? { accumulate } : {}) });
      expect((await callBytes('PUT', `/v1/optimizers/${opt.id}/params`, zeros, authed(opt.token, { 'content-type': RAW }))).status).toBe(200);
      return opt;
    };
    const acc = await make({ contributions: 2 });
    const ref = await make();
    /** bfloat16 values (float32 with the low 16 bits zero) and their bytes. */
    const bf16 = (seed: number) => {
      const f = Float32Array.from(values(seed, size, 2));
      const bits = new Uint32Array(f.buffer);
      const out = new Uint8Array(size * 2);
      for (let i = 0; i < size; i++) {
        bits[i] = bits[i]! & 0xffff0000;
        out[2 * i] = (bits[i]! >>> 16) & 0xff;
        out[2 * i + 1] = bits[i]! >>> 24;
      }
      return { f, out };
    };
    for (let s = 0; s < 3; s++) {
      const [g0, g1] = [bf16(50 + 2 * s), bf16(51 + 2 * s)];
      const headers = authed(acc.token, { 'content-type': `${RAW}; dtype=bfloat16`, accept: 'application/json' });
      expect((await callBytes('POST', `/v1/optimizers/${acc.id}/step?worker=1&expected_step=${s}&return=none`, g1.out, headers)).status).toBe(202);
      expect((await callBytes('POST', `/v1/optimizers/${acc.id}/step?worker=0&expected_step=${s}&return=none`, g0.out, headers)).status).toBe(200);
      const mean = Float32Array.from(g0.f, (x, i) => Math.fround(Math.fround(x + g1.f[i]!) / 2));
      expect((await callBytes('POST', `/v1/optimizers/${ref.id}/step?return=none`, new Uint8Array(mean.buffer), authed(ref.token, { 'content-type': RAW }))).status).toBe(200);
    }
    for (const opt of [acc, ref]) await evictDurableObject(stubOf(opt.id));
    const read = async (opt: Created) => (await callBytes('GET', `/v1/optimizers/${opt.id}/params`, undefined, authed(opt.token, { accept: RAW }))).bytes;
    const [a, b] = [await read(acc), await read(ref)];
    expect(a.length).toBe(size * 4);
    expect(a.every((x, i) => x === b[i])).toBe(true);
  });

  it('concurrent contributions (with duplicates) apply the step exactly once', async () => {
    const { acc, ref } = await pair(c);
    for (let s = 0; s < 2; s++) {
      const sends = [0, 1, 2, 3, 1, 3].map((w, i) => contribute(acc, w, grad(s, w), s, i % 2 ? 'raw' : 'json'));
      const answers = await Promise.all(sends);
      const statuses = answers.map((r) => r.status).sort();
      // One 200 (the last of the set); every other is a 202, or a 409 for a duplicate that came after the step.
      expect(statuses.filter((x) => x === 200)).toHaveLength(1);
      expect(statuses.every((x) => x === 200 || x === 202 || x === 409), JSON.stringify(answers.map((r) => r.body))).toBe(true);
      expect(answers.filter((r) => r.status === 202 && !r.body.replayed)).toHaveLength(3);
      const done = answers.find((r) => r.status === 200)!;
      expect(done.body.step).toBe(s + 1);
      expectSame(done.body.params, (await referenceStep(ref, s, c)).params);
    }
    expect((await info(acc)).step).toBe(2);
    expect((await opCall('GET', acc, '/history')).body.entries).toHaveLength(2);
  });

  it('the history records the mean of the contributions\' losses (when each sent one)', async () => {
    const { acc } = await pair({ ...c, n: 4 });
    const losses = [0.25, 0.5, 1.5, 0.125];
    for (const w of [2, 0, 3, 1]) await contribute(acc, w, grad(0, w), 0, w % 2 ? 'raw' : 'json', {}, losses[w]);
    await contribute(acc, 0, grad(1, 0), 1, 'json', {}, 1);
    for (const w of [1, 2, 3]) await contribute(acc, w, grad(1, w), 1);
    const { entries } = (await opCall('GET', acc, '/history')).body;
    expect(entries.map((e: Json) => e.loss)).toEqual([(((0.25 + 0.5) + 1.5) + 0.125) / 4, null]);
  });
});

describe('PATCH accumulate and waiting for a step', () => {
  it('accumulate can be set, changed and removed, but not changed while contributions are held', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: [1, 2], hyperparams: { lr: 0.5 } });
    expect(opt.body.accumulate).toBeUndefined();
    const set = await opCall('PATCH', opt, '', { accumulate: { contributions: 2 } });
    expect(set.status).toBe(200);
    expect(set.body.accumulate).toEqual({ contributions: 2, reduce: 'mean', received: [], missing: 2 });
    expect((await opCall('POST', opt, '/step?worker=1', { grads: [2, 4], expected_step: 0 })).status).toBe(202);
    const etag = (await opCall('GET', opt, '')).headers.get('etag');
    const refused = await opCall('PATCH', opt, '', { accumulate: { contributions: 3 } });
    expectProblem(refused, 409, 'accumulate');
    expectProblem(await opCall('PATCH', opt, '', { accumulate: null }), 409, 'accumulate');
    expect((await opCall('GET', opt, '')).headers.get('etag')).toBe(etag);
    // The current setting again, and other fields: allowed; the new lr applies to the pending step.
    expect((await opCall('PATCH', opt, '', { accumulate: { contributions: 2, reduce: 'mean' }, hyperparams: { lr: 0.25 } })).status).toBe(200);
    const done = await opCall('POST', opt, '/step?worker=0', { grads: [4, 8], expected_step: 0 });
    expect(done.body).toMatchObject({ step: 1, lr: 0.25, params: [1 - 0.25 * 3, 2 - 0.25 * 6] });
    expectProblem(await opCall('PATCH', opt, '', { accumulate: { contributions: 65 } }), 422);
    expectProblem(await opCall('PATCH', opt, '', { accumulate: { contributions: 1 } }), 422);
    const off = await opCall('PATCH', opt, '', { accumulate: null });
    expect(off.status).toBe(200);
    expect(off.body.accumulate).toBeUndefined();
    expect((await opCall('POST', opt, '/step', { grads: [1, 1] })).body.step).toBe(2);
  });

  it('a safetensors create takes accumulate in __metadata__ (JSON text), checked as in JSON', async () => {
    const file = (accumulate: string) =>
      writeSafetensors([{ name: 'p', dtype: 'F32', shape: [2], data: encodeValues([1, 2], 'F32') }], { optimizer: 'sgd', hyperparams: '{"lr": 0.5}', accumulate });
    const created = await callBytes('POST', '/v1/optimizers', file('{"contributions": 3, "reduce": "sum"}'), { 'content-type': ST });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body.accumulate).toEqual({ contributions: 3, reduce: 'sum', received: [], missing: 3 });
    expectProblem(await callBytes('POST', '/v1/optimizers', file('{"contributions": 99}'), { 'content-type': ST }), 422, '__metadata__.accumulate.contributions');
    expectProblem(await callBytes('POST', '/v1/optimizers', file('{"contributions": 2, "reduce": "max"}'), { 'content-type': ST }), 422, '__metadata__.accumulate.reduce');
  });

  it('a restore drops the held contributions', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: [1, 2], hyperparams: { lr: 0.5 }, accumulate: { contributions: 2 } });
    expect((await opCall('POST', opt, '/step?worker=1', { grads: [2, 4], expected_step: 0 })).status).toBe(202);
    const snap = (await opCall('GET', opt, '/state')).body;
    expect((await opCall('PUT', opt, '/state', snap)).status).toBe(200);
    const meta = await info(opt);
    expect(meta.accumulate.received).toEqual([]);
    expect((await opCall('POST', opt, '/step?worker=0', { grads: [2, 4], expected_step: 0 })).status).toBe(202);
  });

  it('GET params?min_step&wait answers when the last contribution lands, and times out with a 409', async () => {
    const opt = await createOptimizer({ optimizer: 'sgd', params: [1, 2], hyperparams: { lr: 0.5 }, accumulate: { contributions: 2 } });
    const now = await opCall('GET', opt, '/params?min_step=0&wait=5');
    expect(now.status).toBe(200);
    expect(now.body.step).toBe(0);
    const started = Date.now();
    const waiting = opCall('GET', opt, '/params?min_step=1&wait=20');
    let landed = false;
    void waiting.then(() => (landed = true));
    expect((await opCall('POST', opt, '/step?worker=0', { grads: [2, 4], expected_step: 0 })).status).toBe(202);
    await new Promise((r) => setTimeout(r, 200));
    expect(landed).toBe(false);
    expect((await opCall('POST', opt, '/step?worker=1', { grads: [2, 4], expected_step: 0 })).status).toBe(200);
    const got = await waiting;
    expect(got.status).toBe(200);
    expect(got.body).toEqual({ step: 1, params: [0, 0] });
    expect(got.headers.get('step')).toBe('1');
    expect(Date.now() - started).toBeLessThan(10_000);
    const t0 = Date.now();
    const late = await opCall('GET', opt, '/params?min_step=2&wait=1');
    expectProblem(late, 409, 'min_step');
    expect(late.body.step).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expectProblem(await opCall('GET', opt, '/params?min_step=2'), 409, 'min_step');
    expectProblem(await opCall('GET', opt, '/params?min_step=2&wait=31'), 422, 'wait');
    expectProblem(await opCall('GET', opt, '/params?wait=3'), 422, 'wait');
  });
});

describe('property: any arrival order, repeats and formats', () => {
  it('the step equals the reduced gradient computed in ascending worker id order, once', async () => {
    const g32 = fc.float({ min: -1e6, max: 1e6, noNaN: true, noDefaultInfinity: true }).map(Math.fround);
    const arb = fc
      .integer({ min: 2, max: 5 })
      .chain((n) =>
        fc.record({
          n: fc.constant(n),
          reduce: fc.constantFrom('mean' as const, 'sum' as const),
          grads: fc.array(fc.array(g32, { minLength: 3, maxLength: 3 }), { minLength: n, maxLength: n }),
          order: fc.shuffledSubarray(Array.from({ length: n }, (_, i) => i), { minLength: n, maxLength: n }),
          repeats: fc.array(fc.boolean(), { minLength: n, maxLength: n }),
          formats: fc.array(fc.constantFrom<Format>('json', 'raw'), { minLength: 2 * n, maxLength: 2 * n }),
        }),
      );
    await fuzz(
      fc.asyncProperty(arb, async ({ n, reduce, grads, order, repeats, formats }) => {
        // SGD with lr 1 from zeros: the params after the step are exactly minus the reduced gradient.
        const opt = await createOptimizer({ optimizer: 'sgd', params: [0, 0, 0], hyperparams: { lr: 1 }, accumulate: { contributions: n, reduce } });
        const send = (w: number, k: number) => {
          const body = formats[k]! === 'json' ? { grads: grads[w], expected_step: 0 } : undefined;
          return body
            ? callBytes('POST', `/v1/optimizers/${opt.id}/step?worker=${w}`, body, authed(opt.token))
            : callBytes('POST', `/v1/optimizers/${opt.id}/step?worker=${w}&expected_step=0`, encodeValues(grads[w]!, 'F32'), authed(opt.token, { 'content-type': RAW, accept: 'application/json' }));
        };
        let k = 0;
        let last: Json | undefined;
        for (const [i, w] of order.entries()) {
          const r = await send(w, k++);
          if (i < n - 1) {
            expect(r.status).toBe(202);
            if (repeats[i]) expect((await send(w, k++)).body).toMatchObject({ replayed: true, received: r.body.received });
          } else {
            expect(r.status).toBe(200);
            last = r.body;
          }
        }
        const want = reduced(grads, reduce).map((g) => 0 - g);
        expectSame(last!.params, want);
      }),
      20,
    );
  });
});
