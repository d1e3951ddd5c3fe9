// Replays every PyTorch fixture (test/fixtures/schedules, made by generate.py with torch 1.13)
// through POST /v1/schedules/evaluate and GET /v1/schedules/{type}.
// Every value must be torch's double bit for bit (Object.is). torch's own value depends on its C
// library's cos and pow; glibc's are not correctly rounded for about 0.1% of arguments, ours are
// (src/schedules/libm.ts), so where a case's value depends on such a call the fixture also holds
// `lr_correctly_rounded`: torch's value with the correctly rounded result in its place, made by the
// same torch scheduler code (generate.py). The server must give exactly that. The NoamOpt cases
// (`not_bit_exact`: a different parametrisation, not the spec's expression) keep a 1e-15 tolerance.

import { describe, expect, it } from 'vitest';
import cosine from './fixtures/schedules/cosine.json';
import cosineRestarts from './fixtures/schedules/cosine_restarts.json';
import cyclic from './fixtures/schedules/cyclic.json';
import exponential from './fixtures/schedules/exponential.json';
import inverseSqrt from './fixtures/schedules/inverse_sqrt.json';
import linear from './fixtures/schedules/linear.json';
import oneCycle from './fixtures/schedules/one_cycle.json';
import plateau from './fixtures/schedules/plateau.json';
import polynomial from './fixtures/schedules/polynomial.json';
import sequential from './fixtures/schedules/sequential.json';
import step from './fixtures/schedules/step.json';
import warmup from './fixtures/schedules/warmup.json';
import { getJson, postJson } from './helpers/http.ts';

interface Case {
  name: string;
  source: 'torch' | 'formula';
  torch: string;
  schedule: Record<string, unknown> & { type: string };
  metrics?: number[];
  steps?: number[];
  lr: number[];
  not_bit_exact?: string;
  lr_correctly_rounded?: Record<string, number>;
}

const FILES = {
  step,
  exponential,
  linear,
  polynomial,
  cosine,
  cosine_restarts: cosineRestarts,
  cyclic,
  one_cycle: oneCycle,
  sequential,
  plateau,
  warmup,
  inverse_sqrt: inverseSqrt,
} as unknown as Record<string, { torch_version: string; cases: Case[] }>;

const RTOL = 1e-15; // not_bit_exact cases only

const tally = { traces: 0, tracesAsTorch: 0, values: 0, valuesAsTorch: 0, inexact: 0 };

function stepsOf(c: Case): number[] {
  return c.steps ?? c.lr.map((_, k) => k);
}

/** torch's value at index i with a correctly rounded C library (what the server computes). */
function expectedLr(c: Case, i: number): number {
  return c.lr_correctly_rounded?.[String(i)] ?? (c.lr[i] as number);
}

function compare(c: Case, got: number[]) {
  expect(got).toHaveLength(c.lr.length);
  const steps = stepsOf(c);
  let asTorch = 0;
  c.lr.forEach((torch, i) => {
    const a = got[i] as number;
    if (c.not_bit_exact) {
      expect(Math.abs(a - torch), `${c.name}: lr(${steps[i]}) = ${a}, formula ${torch}`).toBeLessThanOrEqual(RTOL * Math.abs(torch));
      return;
    }
    const want = expectedLr(c, i);
    if (!Object.is(a, want)) expect.fail(`${c.name}: lr(${steps[i]}) = ${a}, torch ${want}${want === torch ? '' : ` (with glibc's cos/pow: ${torch})`}`);
    if (Object.is(a, torch)) asTorch++;
  });
  if (c.not_bit_exact) {
    tally.inexact += c.lr.length;
    return;
  }
  tally.traces++;
  tally.values += c.lr.length;
  tally.valuesAsTorch += asTorch;
  if (asTorch === c.lr.length) tally.tracesAsTorch++;
}

/** The request body of a case: explicit steps, except plateau cases, which rely on the default 0..len(metrics). */
function body(c: Case) {
  if (c.schedule.type === 'reduce_on_plateau') return { schedule: c.schedule, metrics: c.metrics };
  return { schedule: c.schedule, steps: c.steps ?? { start: 0, stop: c.lr.length } };
}

/** The same request as a GET query string. */
function query(c: Case): string {
  const params = new URLSearchParams();
  if (c.schedule.type === 'sequential') params.set('schedule', JSON.stringify(c.schedule));
  else {
    for (const [k, v] of Object.entries(c.schedule)) if (k !== 'type') params.set(k, Array.isArray(v) ? v.join(',') : String(v));
  }
  if (c.metrics) params.set('metrics', c.metrics.join(','));
  else params.set('steps', c.steps ? c.steps.join(',') : `0:${c.lr.length}`);
  return `/v1/schedules/${c.schedule.type}?${params}`;
}

describe.each(Object.entries(FILES))('fixtures %s.json', (_, file) => {
  it('were made with torch 1.13', () => {
    expect(file.torch_version).toMatch(/^1\.13/);
  });

  it.each(file.cases.map((c) => [c.name, c] as const))('POST evaluate %s', async (_, c) => {
    const r = await postJson('/v1/schedules/evaluate', body(c));
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.steps).toEqual(stepsOf(c));
    compare(c, r.body.lr);
  });

  it.each(file.cases.map((c) => [c.name, c] as const))('GET %s gives the same numbers as POST', async (_, c) => {
    const [viaGet, viaPost] = await Promise.all([getJson(query(c)), postJson('/v1/schedules/evaluate', body(c))]);
    expect(viaGet.status, JSON.stringify(viaGet.body)).toBe(200);
    expect(viaGet.body).toEqual(viaPost.body);
  });
});

describe('fixture coverage', () => {
  it('covers every torch scheduler and parameter family the issue lists', () => {
    const all = Object.values(FILES).flatMap((f) => f.cases);
    const types = new Set(all.map((c) => c.schedule.type));
    expect([...types].sort()).toEqual(
      ['constant', 'cosine', 'cosine_restarts', 'cyclic', 'exponential', 'inverse_sqrt', 'linear', 'multistep', 'one_cycle', 'polynomial', 'reduce_on_plateau', 'sequential', 'step', 'warmup_cosine', 'warmup_linear']
        .filter((t) => t !== 'constant')
        .sort(),
    );
    const has = (pred: (c: Case) => boolean) => all.some(pred);
    expect(has((c) => c.schedule.type === 'cosine_restarts' && c.schedule.period_mult === 2)).toBe(true);
    for (const mode of ['triangular', 'triangular2', 'exp_range']) expect(has((c) => c.schedule.type === 'cyclic' && (c.schedule.mode ?? 'triangular') === mode)).toBe(true);
    for (const strategy of ['cos', 'linear']) for (const three of [false, true]) {
      expect(has((c) => c.schedule.type === 'one_cycle' && (c.schedule.anneal_strategy ?? 'cos') === strategy && (c.schedule.three_phase ?? false) === three)).toBe(true);
    }
    expect(has((c) => c.schedule.type === 'sequential' && JSON.stringify(c.schedule).includes('"linear"') && JSON.stringify(c.schedule).includes('"cosine"'))).toBe(true);
    for (const mode of ['min', 'max']) for (const tm of ['rel', 'abs']) {
      expect(has((c) => c.schedule.type === 'reduce_on_plateau' && (c.schedule.mode ?? 'min') === mode && (c.schedule.threshold_mode ?? 'rel') === tm)).toBe(true);
    }
    expect(has((c) => c.schedule.type === 'reduce_on_plateau' && Number(c.schedule.cooldown ?? 0) > 0)).toBe(true);
    expect(has((c) => c.schedule.type === 'cosine' && c.lr.length > 2 * Number(c.schedule.total_steps))).toBe(true);
  });

  it('equal torch bit for bit (with a correctly rounded cos and pow)', () => {
    expect(tally.values).toBeGreaterThan(50_000);
    const pct = (a: number, b: number) => ((100 * a) / b).toFixed(2);
    console.log(
      `schedule fixtures: ${tally.traces} traces, ${tally.values} values, all bit for bit equal to torch with a correctly rounded libm; ` +
        `equal to torch on glibc too: ${tally.tracesAsTorch} traces, ${tally.valuesAsTorch} values (${pct(tally.valuesAsTorch, tally.values)}%); ` +
        `${tally.inexact} values of not_bit_exact formula cases within ${RTOL}`,
    );
  });
});

describe('POST /v1/schedules/evaluate', () => {
  it('defaults to steps 0..99 and fills in defaults', async () => {
    const r = await postJson('/v1/schedules/evaluate', { schedule: { type: 'step', lr: 1, step_size: 50 } });
    expect(r.status).toBe(200);
    expect(r.body.steps).toEqual(Array.from({ length: 100 }, (_, k) => k));
    expect(r.body.lr[49]).toBe(1);
    expect(r.body.lr[50]).toBeCloseTo(0.1, 15);
  });

  it('evaluates a range with a stride (stop exclusive) and lists in request order', async () => {
    const range = await postJson('/v1/schedules/evaluate', { schedule: { type: 'constant', lr: 2 }, steps: { start: 5, stop: 20, every: 5 } });
    expect(range.body).toEqual({ steps: [5, 10, 15], lr: [2, 2, 2] });
    const list = await postJson('/v1/schedules/evaluate', { schedule: { type: 'exponential', lr: 1, gamma: 0.5 }, steps: [3, 0, 1] });
    expect(list.body).toEqual({ steps: [3, 0, 1], lr: [0.125, 1, 0.5] });
  });

  it('evaluates 100 000 points, the limit, and steps up to 2^24 and beyond', async () => {
    const r = await postJson('/v1/schedules/evaluate', { schedule: { type: 'cosine', lr: 0.1, total_steps: 1000 }, steps: { start: 2 ** 24 - 99_999, stop: 2 ** 24 + 1 } });
    expect(r.status).toBe(200);
    expect(r.body.lr).toHaveLength(100_000);
    expect(r.body.steps.at(-1)).toBe(2 ** 24);
    // torch's recursion (which the cosine follows) loses ~1e-8 relative to π·k/T rounding this far out.
    expect(r.body.lr.every((v: number) => v >= 0 && v <= 0.1 * (1 + 1e-8))).toBe(true);
  });

  it('bounds the replay of torch\'s recursion per request (a 422 naming the step)', async () => {
    // 0.1·0.9999999^k never settles before ~7e9 steps: 2^30 products are over the 2^25 budget.
    const exp = { type: 'exponential', lr: 0.1, gamma: 0.9999999 };
    const far = await postJson('/v1/schedules/evaluate', { schedule: exp, steps: [5, 2 ** 30] });
    expect(far.status).toBe(422);
    expect(far.type).toMatch(/problem\+json/);
    expect(JSON.stringify(far.body)).toContain('steps');
    // 2^24 products are within it, and step schedules multiply once per step_size steps.
    const near = await postJson('/v1/schedules/evaluate', { schedule: exp, steps: [2 ** 24] });
    expect(near.status).toBe(200);
    let lr = 0.1;
    for (let k = 0; k < 2 ** 24; k++) lr *= 0.9999999;
    expect(Object.is(near.body.lr[0], lr)).toBe(true);
    const stepped = await postJson('/v1/schedules/evaluate', { schedule: { type: 'step', lr: 0.1, step_size: 64, gamma: 0.9999999 }, steps: [2 ** 30] });
    expect(stepped.status).toBe(200);
  });

  it('replays plateau metrics: lr[k] is the rate after k reports', async () => {
    const r = await postJson('/v1/schedules/evaluate', { schedule: { type: 'reduce_on_plateau', lr: 1, patience: 0, factor: 0.5 }, metrics: [1, 1, 1], steps: [3, 0] });
    expect(r.body).toEqual({ steps: [3, 0], lr: [0.25, 1] });
  });

  it('keeps the sign of a zero rate, as the step does (found by test/fuzz/schedules.test.ts)', async () => {
    // torch's LinearLR factor at k = T = 4: 1 + (0 - 0.1) / (4 * 0.1 + 3 * (0 - 0.1)); in doubles
    // 0.4 - 0.30000000000000004 = 0.09999999999999998, so the factor is 1 - 1.0000000000000002 < 0
    // and lr = 0 * factor = -0.0, which every later step keeps.
    const schedule = { type: 'linear', lr: 0, start_factor: 0.1, end_factor: 0, total_steps: 4 };
    const want = [0, 0, 0, 0, -0, -0];
    const posted = await postJson('/v1/schedules/evaluate', { schedule, steps: [0, 1, 2, 3, 4, 5] });
    const query = await getJson('/v1/schedules/linear?lr=0&start_factor=0.1&end_factor=0&total_steps=4&steps=0:6');
    const step = await postJson('/v1/adam/step', { params: [1], grads: [1], state: { step: 4, m: [0], v: [0] }, schedule, dtype: 'float64' });
    for (const [what, lr] of [['POST', posted.body.lr], ['GET', query.body.lr]] as const) {
      expect(lr.map((v: number) => (Object.is(v, -0) ? '-0' : String(v))), what).toEqual(want.map((v) => (Object.is(v, -0) ? '-0' : String(v))));
    }
    expect(Object.is(step.body.lr, -0)).toBe(true);
  });

  it('nests sequential schedules', async () => {
    const inner = { type: 'sequential', schedules: [{ type: 'constant', lr: 1 }, { type: 'constant', lr: 2 }], milestones: [1] };
    const r = await postJson('/v1/schedules/evaluate', { schedule: { type: 'sequential', schedules: [inner, { type: 'constant', lr: 3 }], milestones: [3] }, steps: [0, 1, 2, 3] });
    expect(r.body.lr).toEqual([1, 2, 2, 3]);
  });
});

describe('GET /v1/schedules/{type}', () => {
  it('parses numbers, lists and steps=start:stop', async () => {
    const r = await getJson('/v1/schedules/multistep?lr=0.1&milestones=3,5&gamma=0.5&steps=2:7');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ steps: [2, 3, 4, 5, 6], lr: [0.1, 0.05, 0.05, 0.025, 0.025] });
  });

  it('accepts start:stop:every, a comma list and booleans', async () => {
    expect((await getJson('/v1/schedules/constant?lr=1&steps=0:10:4')).body.steps).toEqual([0, 4, 8]);
    expect((await getJson('/v1/schedules/constant?lr=1&steps=7,3')).body.steps).toEqual([7, 3]);
    expect((await getJson('/v1/schedules/multistep?lr=1&milestones=1,2&steps=0,1,2')).body.lr).toEqual([1, 0.1, 0.010000000000000002]);
    // One rule for every query: a list is comma-separated, and a repeated key is a 422.
    expect((await getJson('/v1/schedules/multistep?lr=1&milestones=1&milestones=2&steps=0,1,2')).status).toBe(422);
    const three = await getJson('/v1/schedules/one_cycle?max_lr=1&total_steps=10&three_phase=true&anneal_strategy=linear&steps=4');
    expect(three.status).toBe(200);
    expect(three.body.lr[0]).toBeCloseTo(0.04, 15);
  });

  it('takes the whole spec as JSON in `schedule` (the way for sequential)', async () => {
    const spec = { schedules: [{ type: 'constant', lr: 1 }, { type: 'constant', lr: 2 }], milestones: [2] };
    const r = await getJson(`/v1/schedules/sequential?schedule=${encodeURIComponent(JSON.stringify(spec))}&steps=0:4`);
    expect(r.body).toEqual({ steps: [0, 1, 2, 3], lr: [1, 1, 2, 2] });
  });

  it('defaults plateau steps to 0..len(metrics)', async () => {
    const r = await getJson('/v1/schedules/reduce_on_plateau?lr=1&patience=0&metrics=1,1,1');
    expect(r.body).toEqual({ steps: [0, 1, 2, 3], lr: [1, 1, 0.1, 0.010000000000000002] });
  });
});
