// clients/typescript/hosted.ts against wrangler dev: a small model trained end to end through a
// hosted optimizer (binary on the wire) equals the same training on the reference kernel
// (src/optim/adam.ts, itself checked against torch fixtures) bit for bit at every step; a retried
// step is applied once; snapshot/restore, attach, by-name and frozen gradients.

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
