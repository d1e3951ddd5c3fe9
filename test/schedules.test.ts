// Replays every PyTorch fixture (test/fixtures/schedules, made by generate.py with torch 1.13)
// through POST /v1/schedules/evaluate and GET /v1/schedules/{type}.
// Tolerance: |lr − torch| <= 1e-12·|torch|; where torch's value is exactly 0, |lr| <= 1e-15·(largest
// lr of the case) (an absolute floor of a few ulps of the peak, for minima that are 0 up to rounding).

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

const RTOL = 1e-12;
const ZERO_FLOOR = 1e-15;

const worst = { rel: 0, where: '' };
let checked = 0;

function stepsOf(c: Case): number[] {
  return c.steps ?? c.lr.map((_, k) => k);
}

function compare(c: Case, got: number[]) {
  expect(got).toHaveLength(c.lr.length);
  const peak = Math.max(...c.lr.map(Math.abs));
  const steps = stepsOf(c);
  c.lr.forEach((want, i) => {
    const a = got[i] as number;
    const err = Math.abs(a - want);
    const tol = want === 0 ? ZERO_FLOOR * peak : RTOL * Math.abs(want);
    expect(err, `${c.name}: lr(${steps[i]}) = ${a}, torch ${want}`).toBeLessThanOrEqual(tol);
    const rel = want === 0 ? (peak === 0 ? 0 : err / peak) : err / Math.abs(want);
    if (rel > worst.rel) {
      worst.rel = rel;
      worst.where = `${c.name} step ${steps[i]}`;
    }
    checked++;
  });
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

  it(`agree with torch within ${RTOL} relative`, () => {
    expect(checked).toBeGreaterThan(20_000);
    console.log(`schedule fixtures: ${checked} values checked, max relative error ${worst.rel.toExponential(2)} (${worst.where})`);
    expect(worst.rel).toBeLessThanOrEqual(RTOL);
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

  it('replays plateau metrics: lr[k] is the rate after k reports', async () => {
    const r = await postJson('/v1/schedules/evaluate', { schedule: { type: 'reduce_on_plateau', lr: 1, patience: 0, factor: 0.5 }, metrics: [1, 1, 1], steps: [3, 0] });
    expect(r.body).toEqual({ steps: [3, 0], lr: [0.25, 1] });
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
