// Schedules applied inside steps: the stateless step's `schedule`/`metrics`, and hosted optimizers
// with schedules, PATCHed schedules, reduce-on-plateau fed by step losses, and the history plot.

import { describe, expect, it } from 'vitest';
import cosine from './fixtures/schedules/cosine.json';
import cosineRestarts from './fixtures/schedules/cosine_restarts.json';
import cyclic from './fixtures/schedules/cyclic.json';
import exponential from './fixtures/schedules/exponential.json';
import inverseSqrt from './fixtures/schedules/inverse_sqrt.json';
import linear from './fixtures/schedules/linear.json';
import oneCycle from './fixtures/schedules/one_cycle.json';
import polynomial from './fixtures/schedules/polynomial.json';
import sequential from './fixtures/schedules/sequential.json';
import step from './fixtures/schedules/step.json';
import warmup from './fixtures/schedules/warmup.json';
import { call, postJson } from './helpers/http.ts';
import { createOptimizer, expectProblem, opCall } from './helpers/optimizers.ts';

interface FixtureCase {
  name: string;
  schedule: { type: string };
  steps?: number[];
  lr: number[];
  not_bit_exact?: string;
  lr_correctly_rounded?: Record<string, number>;
}

/** Every step-only torch fixture (test/fixtures/schedules), with torch's value per step as the server must give it. */
const TORCH_CASES = [step, exponential, linear, polynomial, cosine, cosineRestarts, cyclic, oneCycle, sequential, warmup, inverseSqrt]
  .flatMap((f) => (f as unknown as { cases: FixtureCase[] }).cases)
  .filter((c) => !c.not_bit_exact)
  .map((c) => ({
    ...c,
    steps: c.steps ?? c.lr.map((_, k) => k),
    // torch's value with a correctly rounded cos/pow where glibc's differs (see test/schedules.test.ts)
    want: c.lr.map((v, i) => c.lr_correctly_rounded?.[String(i)] ?? v),
  }));

/** At most `n` indices of a case spread over its length, with its last and those where glibc's libm mattered. */
function sample(c: (typeof TORCH_CASES)[number], n: number): number[] {
  const picked = new Set<number>([c.lr.length - 1, ...Object.keys(c.lr_correctly_rounded ?? {}).map(Number).slice(0, 4)]);
  for (let i = 0; i < n; i++) picked.add(Math.floor((i * (c.lr.length - 1)) / Math.max(1, n - 1)));
  return [...picked].filter((i) => c.steps[i] as number <= 2 ** 24).sort((a, b) => a - b);
}

describe('server-side schedules in steps equal torch bit for bit', () => {
  it.each(TORCH_CASES.map((c) => [c.name, c] as const))('stateless step at sampled steps: %s', async (_, c) => {
    for (const i of sample(c, 6)) {
      const k = c.steps[i] as number;
      const r = await postJson('/v1/adam/step', { params: [1], grads: [0.5], state: { step: k, m: [0.1], v: [0.01] }, schedule: c.schedule, dtype: 'float64' });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      if (!Object.is(r.body.lr, c.want[i])) expect.fail(`${c.name}: lr at step ${k} = ${r.body.lr}, torch ${c.want[i]}`);
    }
  });

  it.each(TORCH_CASES.filter((c) => !c.name.includes('long')).map((c) => [c.name, c] as const))('hosted optimizer, first 25 steps: %s', async (_, c) => {
    const opt = await createOptimizer({ params: [1], schedule: c.schedule, dtype: 'float64' });
    const n = Math.min(25, c.lr.length);
    for (let k = 0; k < n; k++) {
      const r = await opCall('POST', opt, '/step', { grads: [0.5] });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      if (!Object.is(r.body.lr, c.want[k])) expect.fail(`${c.name}: hosted lr at step ${k} = ${r.body.lr}, torch ${c.want[k]}`);
    }
  });
});

const COSINE = { type: 'cosine', lr: 0.1, total_steps: 10 };

async function evaluate(schedule: unknown, steps: number[], metrics?: number[]) {
  const r = await postJson('/v1/schedules/evaluate', { schedule, steps, ...(metrics ? { metrics } : {}) });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.lr as number[];
}

describe('stateless step with a schedule', () => {
  it('applies schedule(state.step) and reports it', async () => {
    const expected = await evaluate(COSINE, [0, 1, 2, 3, 4, 5]);
    let params: unknown = [1, -1];
    let state: unknown;
    for (let k = 0; k < 6; k++) {
      const r = await postJson('/v1/adam/step', { params, grads: [0.5, 0.25], state, schedule: COSINE, dtype: 'float64' });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.lr).toBe(expected[k]);
      // Same as a plain step with that lr.
      const plain = await postJson('/v1/adam/step', { params, grads: [0.5, 0.25], state, hyperparams: { lr: expected[k] }, dtype: 'float64' });
      expect(r.body.params).toEqual(plain.body.params);
      params = r.body.params;
      state = r.body.state;
    }
  });

  it('reduce_on_plateau uses the rate after the metrics replayed so far', async () => {
    const schedule = { type: 'reduce_on_plateau', lr: 0.1, patience: 1, factor: 0.5 };
    const metrics = [1, 1, 1, 1];
    const lrs = await evaluate(schedule, [0, 4], metrics);
    const r = await postJson('/v1/adam/step', { params: [1], grads: [1], schedule, metrics });
    expect(r.body.lr).toBe(lrs[1]);
    expect(r.body.lr).toBeLessThan(0.1);
    const none = await postJson('/v1/adam/step', { params: [1], grads: [1], schedule, metrics: [] });
    expect(none.body.lr).toBe(0.1);
  });

  it('rejects contradictory or incomplete schedule input', async () => {
    expectProblem(await postJson('/v1/adam/step', { params: [1], grads: [1], schedule: COSINE, hyperparams: { lr: 0.5 } }), 422, 'hyperparams.lr');
    expectProblem(await postJson('/v1/adam/step', { params: [1], grads: [1], schedule: { type: 'reduce_on_plateau', lr: 0.1 } }), 422, 'metrics');
    expectProblem(await postJson('/v1/adam/step', { params: [1], grads: [1], schedule: COSINE, metrics: [1] }), 422, 'metrics');
    expectProblem(await postJson('/v1/adam/step', { params: [1], grads: [1], schedule: { type: 'nope' } }), 422, 'schedule.type');
    expectProblem(await postJson('/v1/adam/step', { params: [1], grads: [1], schedule: { type: 'cosine', lr: 0.1, total_steps: 0 } }), 422, 'schedule.total_steps');
  });
});

describe("a rate out of reach of torch's recursion", () => {
  // PolynomialLR is recursive in torch (each rate from the previous one, with pow); reaching step
  // k replays k factors. One stateless step may spend 2^25 units (about 210,000 pow steps), a
  // hosted one 2^28 (src/lib/learning-rate.ts).
  const FAR = { type: 'polynomial', lr: 0.1, total_steps: 100_000_000, power: 2 };
  const adamState = (step: number) => ({ step, m: [0.1], v: [0.01] });

  it('is a 422 naming the schedule in a stateless step, and a near step still answers', async () => {
    const far = await postJson('/v1/adam/step', { params: [1], grads: [0.5], state: adamState(300_000), schedule: FAR });
    expectProblem(far, 422, 'schedule');
    expect(far.body.detail).toContain("torch's recursive get_lr()");
    const near = await postJson('/v1/adam/step', { params: [1], grads: [0.5], state: adamState(1000), schedule: FAR });
    expect(near.status, JSON.stringify(near.body)).toBe(200);
    expect(near.body.lr).toBe((await evaluate(FAR, [1000]))[0]);
    // A closed form is never out of reach: the step that comes after T is 0 at any distance.
    const settled = await postJson('/v1/adam/step', { params: [1], grads: [0.5], state: adamState(2 ** 24), schedule: { ...FAR, total_steps: 10 } });
    expect(settled.status, JSON.stringify(settled.body)).toBe(200);
    expect(settled.body.lr).toBe(0);
  });

  it('is a 422 for a hosted step restored far away, which changes nothing; next_lr is null', async () => {
    const opt = await createOptimizer({ params: [1], schedule: FAR });
    expect((await opCall('POST', opt, '/step', { grads: [0.5] })).status).toBe(200);
    const snap = (await opCall('GET', opt, '/state')).body;
    const put = await opCall('PUT', opt, '/state', { ...snap, step: 16_000_000 });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    const info = await opCall('GET', opt, '');
    expect(info.body.next_lr).toBeNull();
    const before = (await opCall('GET', opt, '/state')).body;
    const step = await opCall('POST', opt, '/step', { grads: [0.5] });
    expectProblem(step, 422, 'schedule');
    expect((await opCall('GET', opt, '/state')).body).toEqual(before);
    // Back near: the hosted budget covers far more than a stateless step's (300,000 pow steps).
    expect((await opCall('PUT', opt, '/state', { ...snap, step: 300_000 })).status).toBe(200);
    const ok = await opCall('POST', opt, '/step', { grads: [0.5] });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    // Beyond what evaluate may replay, so checked against the closed form; 300,000 rounded factors drift from it by ~1e-12.
    const closed = 0.1 * (1 - 300_000 / 100_000_000) ** 2;
    expect(Math.abs(ok.body.lr / closed - 1)).toBeLessThan(1e-10);
  });
});

describe('hosted optimizer with a schedule', () => {
  it('applies the schedule at each step, reports next_lr, and follows a PATCHed schedule', async () => {
    const expected = await evaluate(COSINE, [0, 1, 2, 3, 4]);
    const opt = await createOptimizer({ params: [1, 2], schedule: COSINE });
    expect(opt.body.schedule).toMatchObject(COSINE);
    expect(opt.body.next_lr).toBe(expected[0]);
    for (let k = 0; k < 3; k++) {
      const r = await opCall('POST', opt, '/step', { grads: [1, 1] });
      expect(r.body.lr).toBe(expected[k]);
    }
    expect((await opCall('GET', opt, '')).body.next_lr).toBe(expected[3]);
    const step = { type: 'step', lr: 0.5, step_size: 2, gamma: 0.5 };
    const patched = await opCall('PATCH', opt, '', { schedule: step });
    expect(patched.body.next_lr).toBe((await evaluate(step, [3]))[0]);
    expect((await opCall('POST', opt, '/step', { grads: [1, 1] })).body.lr).toBe(0.25);
    const cleared = await opCall('PATCH', opt, '', { schedule: null });
    expect(cleared.body.schedule).toBeNull();
    expect(cleared.body.next_lr).toBe(0.001);
  });

  it('feeds step losses to reduce_on_plateau, and the snapshot carries its state', async () => {
    const schedule = { type: 'reduce_on_plateau', lr: 0.1, patience: 1, factor: 0.5, cooldown: 1 };
    const losses = [1, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99];
    const expected = await evaluate(schedule, losses.map((_, k) => k), losses);
    const opt = await createOptimizer({ params: [1], schedule });
    for (let k = 0; k < losses.length; k++) {
      const r = await opCall('POST', opt, '/step', { grads: [1], loss: losses[k] });
      expect(r.body.lr, `step ${k}`).toBe(expected[k]);
    }
    const snap = await opCall('GET', opt, '/state');
    expect(snap.body.scheduler_state).toMatchObject({ num_reports: losses.length });
    const restored = await opCall('PUT', opt, '/state', snap.body);
    expect(restored.status).toBe(200);
    expectProblem(await opCall('PUT', opt, '/state', { ...snap.body, schedule: COSINE }), 422, 'scheduler_state');
    expectProblem(await opCall('PUT', opt, '/state', { ...snap.body, scheduler_state: { lr: -1 } }), 422);
  });

  it('plots the history as SVG', async () => {
    const opt = await createOptimizer({ params: [1], schedule: COSINE });
    expectProblem(await opCall('GET', opt, '/history/plot'), 409);
    for (let k = 0; k < 7; k++) await opCall('POST', opt, '/step', { grads: [1], ...(k % 2 ? { loss: 1 / (k + 1) } : {}) });
    const res = await call('GET', `/v1/optimizers/${opt.id}/history/plot?log_scale=true`, undefined, { authorization: `Bearer ${opt.token}` });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^image\/svg\+xml/);
    const svg = await res.text();
    expect(svg).toMatch(/^(<\?xml[^>]*\?>\s*)?<svg[\s>]/);
    expect(svg).toContain('data-series="loss" data-points="3"');
    expect(svg).toContain('data-series="learning rate" data-points="7"');
    const bad = await call('GET', `/v1/optimizers/${opt.id}/history/plot?log_scale=maybe`, undefined, { authorization: `Bearer ${opt.token}` });
    expect(bad.status).toBe(422);
    const unauth = await call('GET', `/v1/optimizers/${opt.id}/history/plot`);
    expect(unauth.status).toBe(401);
  });
});
