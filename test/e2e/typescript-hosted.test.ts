// clients/typescript/hosted.ts against wrangler dev: a small model trained end to end through a
// hosted optimizer (binary on the wire) equals the same training on the reference kernel
// (src/optim/adam.ts, itself checked against torch fixtures) bit for bit at every step; a retried
// step is applied once; snapshot/restore, attach, by-name and frozen gradients; workers contributing to
// one accumulated step (equal to the reference Adam with the float32 mean of their gradients); sparse rows.

import { describe, expect, test } from 'vitest';
import { createHostedOptimizer, HostedOptimizer, HostedOptimizerError } from '../../clients/typescript/hosted.ts';
import { ADAM_DEFAULTS, adamStep, type AdamState } from '../../src/optim/adam.ts';
import { baseUrl } from './helpers.ts';

/** Logistic regression on a fixed dataset: 32 points in 4 dimensions, labels from a known plane. */
const N = 32;
const D = 4;
const X = Float32Array.from({ length: N * D }, (_, i) => Math.fround(Math.sin(i * 1.7) * 2));
const Y = Float32Array.from({ length: N }, (_, n) => (X[n * D]! - 0.5 * X[n * D + 1]! + 0.25 * X[n * D + 3]! > 0 ? 1 : 0));

/** Loss and gradients of mean logistic loss at (w, b), in float32 as a training loop would compute them. */
function lossAndGrads(w: Float32Array, b: number): { loss: number; gw: Float32Array; gb: number } {
  const gw = new Float32Array(D);
  let gb = 0;
  let loss = 0;
  for (let n = 0; n < N; n++) {
    let z = b;
    for (let d = 0; d < D; d++) z = Math.fround(z + Math.fround(w[d]! * X[n * D + d]!));
    const p = Math.fround(1 / (1 + Math.exp(-z)));
    loss += -(Y[n]! * Math.log(p + 1e-12) + (1 - Y[n]!) * Math.log(1 - p + 1e-12));
    const r = Math.fround((p - Y[n]!) / N);
    for (let d = 0; d < D; d++) gw[d] = Math.fround(gw[d]! + Math.fround(r * X[n * D + d]!));
    gb = Math.fround(gb + r);
  }
  return { loss: loss / N, gw, gb };
}

describe('clients/typescript/hosted.ts', () => {
  test('trains a logistic regression end to end, equal to the reference Adam at every step', async () => {
    const w0 = new Float32Array(D);
    const opt = await createHostedOptimizer({ baseUrl: baseUrl(), params: { w: w0, b: new Float32Array(1) }, optimizer: 'adam', hyperparams: { lr: 0.05 } });
    expect(opt.layout.map((t) => [t.name, t.offset, t.size])).toEqual([['w', 0, 4], ['b', 4, 1]]);
    // The reference: the same steps on the flat params, with the pure kernel.
    let ref: Float32Array = new Float32Array(D + 1);
    let state: AdamState = { step: 0, m: new Float32Array(D + 1), v: new Float32Array(D + 1), vMax: null };
    let params = await opt.params();
    const losses: number[] = [];
    for (let k = 0; k < 40; k++) {
      const { loss, gw, gb } = lossAndGrads(opt.tensor(params, 'w') as Float32Array, opt.tensor(params, 'b')[0]!);
      losses.push(loss);
      const grads = new Float32Array([...gw, gb]);
      params = await opt.step(grads, { loss });
      ({ params: ref, state } = adamStep({ dtype: 'float32', hyperparams: { ...ADAM_DEFAULTS, lr: 0.05 }, params: ref, grads, state }) as { params: Float32Array; state: AdamState });
      const diff = params.findIndex((x, i) => !Object.is(x, ref[i]));
      expect(diff, `step ${k + 1}: params[${diff}] ${params[diff]} != reference ${ref[diff]}`).toBe(-1);
    }
    expect(losses.at(-1)!).toBeLessThan(losses[0]! / 2);
    expect(((await opt.info()) as { step: number }).step).toBe(40);

    // Snapshot → restore into a fresh optimizer; attach from "another process" and go on.
    const checkpoint = await opt.snapshot();
    const copy = await createHostedOptimizer({ baseUrl: baseUrl(), params: { w: new Float32Array(D), b: new Float32Array(1) } });
    await copy.restore(checkpoint);
    expect([...(await copy.params())]).toEqual([...params]);
    const again = await HostedOptimizer.attach(opt.id, opt.token, { baseUrl: baseUrl() });
    const grads = new Float32Array([0.1, -0.1, 0.2, 0, 0.05]);
    const a = await again.step(grads);
    const b = await copy.step(grads);
    expect([...a]).toEqual([...b]);
    await opt.delete();
    await copy.delete();
    await expect(again.params()).rejects.toSatisfy((e: unknown) => e instanceof HostedOptimizerError && e.status === 404 && e.problem?.type === 'urn:adam-api:problem:not-found');
  });

  test('a step retried after a lost answer is applied once (same Idempotency-Key)', async () => {
    let dropped = 0;
    // Delivers the first step, then "loses" its answer, as a dropped connection would.
    const flaky: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (String(input).endsWith('/step') && dropped === 0) {
        dropped++;
        throw new TypeError('fetch failed (simulated: the answer was lost)');
      }
      return res;
    };
    const opt = await createHostedOptimizer({ baseUrl: baseUrl(), params: new Float32Array([1, 2]), hyperparams: { lr: 0.1 }, fetch: flaky });
    const after = await opt.step(new Float32Array([1, 1]));
    expect(dropped).toBe(1);
    expect(((await opt.info()) as { step: number }).step).toBe(1);
    const ref = adamStep({ dtype: 'float32', hyperparams: { ...ADAM_DEFAULTS, lr: 0.1 }, params: new Float32Array([1, 2]), grads: new Float32Array([1, 1]), state: { step: 0, m: new Float32Array(2), v: new Float32Array(2), vMax: null } });
    expect([...after]).toEqual([...ref.params]);
    await opt.delete();
  });

  test('workers of an accumulating optimizer: each step is the reference Adam with the float32 mean of their gradients', async () => {
    const workers = 3;
    const creator = await createHostedOptimizer({ baseUrl: baseUrl(), params: { w: new Float32Array(D), b: new Float32Array(1) }, hyperparams: { lr: 0.05 }, accumulate: workers, worker: 0 });
    expect(((await creator.info()) as { accumulate: unknown }).accumulate).toEqual({ contributions: workers, reduce: 'mean', received: [], missing: workers });
    const others = await Promise.all([1, 2].map((w) => HostedOptimizer.attach(creator.id, creator.token, { baseUrl: baseUrl(), worker: w })));
    const all = [creator, ...others];
    let ref: Float32Array = new Float32Array(D + 1);
    let state: AdamState = { step: 0, m: new Float32Array(D + 1), v: new Float32Array(D + 1), vMax: null };
    let params = await creator.params();
    for (let k = 0; k < 5; k++) {
      // Worker i's gradient: the logistic gradient at the shared params, scaled and shifted per worker.
      const { gw, gb } = lossAndGrads(creator.tensor(params, 'w') as Float32Array, creator.tensor(params, 'b')[0]!);
      const grads = all.map((_, i) => Float32Array.from([...gw, gb], (g, j) => Math.fround(g * (i + 1) + (i - 1) * 0.01 * (j + 1))));
      // Concurrent contributions (the first worker sends last, so it waits by long-poll like the others).
      const answers = await Promise.all(all.map(async (opt, i) => (i === 0 ? new Promise((r) => setTimeout(r, 50)).then(() => opt.step(grads[0]!, { loss: 0.5 })) : opt.step(grads[i]!, { loss: 0.5 }))));
      const mean = grads[0]!.map((_, j) => Math.fround(Math.fround(Math.fround(grads[0]![j]! + grads[1]![j]!) + grads[2]![j]!) / workers));
      ({ params: ref, state } = adamStep({ dtype: 'float32', hyperparams: { ...ADAM_DEFAULTS, lr: 0.05 }, params: ref, grads: mean, state }) as { params: Float32Array; state: AdamState });
      for (const [i, got] of answers.entries()) {
        const diff = got.findIndex((x, j) => !Object.is(x, ref[j]));
        expect(diff, `step ${k + 1}, worker ${i}: params[${diff}] ${got[diff]} != reference ${ref[diff]}`).toBe(-1);
        expect(all[i]!.stepCount).toBe(k + 1);
      }
      params = answers[0]!;
    }
    // A contribution with a stale expected_step is refused (409).
    others[0]!.stepCount = 0;
    await expect(others[0]!.step(new Float32Array(D + 1))).rejects.toSatisfy((e: unknown) => e instanceof HostedOptimizerError && e.status === 409);
    await creator.update({ accumulate: null });
    expect(((await creator.info()) as { accumulate?: unknown }).accumulate ?? null).toBeNull();
    await creator.delete();
  });

  test('sparse rows: SGD steps each row sent (a repeated row twice), dense and sparse tensors in one step', async () => {
    const emb = Float32Array.from([1, 2, 3, 4, 5, 6]); // [3, 2]
    const opt = await createHostedOptimizer({ baseUrl: baseUrl(), params: { emb: { shape: [3, 2], values: emb }, bias: new Float32Array([0.5]) }, optimizer: 'sgd', hyperparams: { lr: 0.5 } });
    const rows = { indices: [2, 0, 2], values: Float32Array.from([0.5, -0.25, 1, 0.75, 2, 0.125]) };
    const got = await opt.step({ emb: rows, bias: new Float32Array([0.25]) });
    // torch's sparse add: p[r] += -lr·v, one row after another (values chosen so every result is exact).
    const want = Float32Array.from(emb);
    rows.indices.forEach((r, i) => {
      for (let j = 0; j < 2; j++) want[r * 2 + j] = want[r * 2 + j]! - 0.5 * rows.values[i * 2 + j]!;
    });
    expect([...opt.tensor(got, 'emb')]).toEqual([...want]);
    expect([...want]).toEqual([0.5, 1.625, 3, 4, 3.75, 6.0625]);
    expect(opt.tensor(got, 'bias')[0]).toBe(0.375);
    // Adam takes no rows: a 422 naming the tensor.
    const adam = await createHostedOptimizer({ baseUrl: baseUrl(), params: { emb: { shape: [3, 2], values: emb } } });
    await expect(adam.step({ emb: rows })).rejects.toSatisfy((e: unknown) => e instanceof HostedOptimizerError && e.status === 422 && JSON.stringify(e.problem).includes('grads.values/emb'));
    await opt.delete();
    await adam.delete();
  });

  test('a sharded optimizer\'s steps above stepPartBytes go in parts (one retried after its answer was lost), equal to whole steps', async () => {
    const parts: string[] = [];
    let lost = 0;
    // Counts the parts sent, and loses the answer of the second part of the second step once.
    const spy: typeof fetch = async (input, init) => {
      const url = String(input);
      const offset = /part_offset=(\d+)/.exec(url)?.[1];
      if (offset !== undefined) parts.push(offset);
      const res = await fetch(input, init);
      if (offset === '7' && parts.filter((p) => p === '0').length === 2 && lost === 0) {
        lost++;
        throw new TypeError('fetch failed (simulated: the answer was lost)');
      }
      return res;
    };
    const p0 = { w: { shape: [4, 4], values: Float32Array.from({ length: 16 }, (_, i) => Math.fround(i / 7 - 1)) }, b: new Float32Array([0.5, -0.5, 0.25]) };
    const hyperparams = { lr: 0.05, clip_grad_norm: 1 };
    // 19 float32 gradients = 76 bytes: parts of 7 elements (28 bytes), cut inside w and across shards.
    const inParts = await createHostedOptimizer({ baseUrl: baseUrl(), params: p0, optimizer: 'adamw', hyperparams, shards: 3, stepPartBytes: 30, fetch: spy });
    const whole = await createHostedOptimizer({ baseUrl: baseUrl(), params: p0, optimizer: 'adamw', hyperparams, shards: 3 });
    for (let k = 0; k < 3; k++) {
      const grads = Float32Array.from({ length: 19 }, (_, i) => Math.fround(Math.sin(i * 1.3 + k) * (k + 1)));
      const a = await inParts.step(grads);
      const b = await whole.step(grads);
      expect([...a], `step ${k + 1}`).toEqual([...b]);
    }
    expect(lost).toBe(1);
    // Three parts a step (0, 7, 14), the lost one sent twice.
    expect(parts).toEqual(['0', '7', '14', '0', '7', '7', '14', '0', '7', '14']);
    expect(((await inParts.info()) as { step: number }).step).toBe(3);
    await inParts.delete();
    await whole.delete();
  });

  test('gradients by name in any order; float64; a 4xx is a typed error', async () => {
    const opt = await createHostedOptimizer({ baseUrl: baseUrl(), params: { a: new Float64Array([1]), b: new Float64Array([2]) }, dtype: 'float64', optimizer: 'sgd', hyperparams: { lr: 0.5 } });
    // SGD: p − lr·g.
    const params = await opt.step({ b: new Float64Array([-2]), a: new Float64Array([1]) });
    expect([...params]).toEqual([0.5, 3]);
    await expect(opt.step(new Float64Array([1]))).rejects.toSatisfy((e: unknown) => e instanceof HostedOptimizerError && e.status === 422);
    await expect(createHostedOptimizer({ baseUrl: baseUrl(), params: new Float32Array([1]), optimizer: 'nope' })).rejects.toSatisfy(
      (e: unknown) => e instanceof HostedOptimizerError && e.status === 422 && (e.problem?.errors ?? []).some((f) => f.field === 'optimizer'),
    );
    await opt.delete();
  });
});
