// Bad input to the schedule routes: every rejection is a 4xx application/problem+json naming the
// offending field, and no input produces a 500.

import { describe, expect, it } from 'vitest';
import { call, getJson, postJson } from './helpers/http.ts';

/** Any request: status, content type, and the body parsed when it is JSON. */
async function send(method: string, path: string, body?: unknown) {
  const res = await call(method, path, body);
  const type = res.headers.get('content-type') ?? '';
  const text = await res.text();
  return { status: res.status, type, body: type.includes('json') ? JSON.parse(text) : text };
}

const EVALUATE = '/v1/schedules/evaluate';

/** Asserts a problem+json 4xx whose errors name `field` (exactly, or as a prefix with `[`/`.`). */
async function expectProblem(res: Promise<{ status: number; type: string; body: any }>, status: number, field: string) {
  const r = await res;
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.type).toBe('application/problem+json');
  expect(r.body.status).toBe(status);
  const fields: string[] = (r.body.errors ?? []).map((e: { field: string }) => e.field);
  expect(fields, JSON.stringify(r.body)).toContain(field);
  return r.body;
}

const cosine = { type: 'cosine', lr: 0.1, total_steps: 100 };

describe('422 naming the field', () => {
  it.each<[string, unknown, string]>([
    ['unknown type', { schedule: { type: 'cosine_annealing', lr: 0.1 } }, 'schedule.type'],
    ['missing type', { schedule: { lr: 0.1 } }, 'schedule.type'],
    ['missing schedule', {}, 'schedule'],
    ['missing lr', { schedule: { type: 'cosine', total_steps: 10 } }, 'schedule.lr'],
    ['missing total_steps', { schedule: { type: 'cosine', lr: 0.1 } }, 'schedule.total_steps'],
    ['missing milestones', { schedule: { type: 'multistep', lr: 0.1 } }, 'schedule.milestones'],
    ['missing max_lr', { schedule: { type: 'cyclic', base_lr: 0.1 } }, 'schedule.max_lr'],
    ['total_steps 0', { schedule: { ...cosine, total_steps: 0 } }, 'schedule.total_steps'],
    ['total_steps negative', { schedule: { type: 'one_cycle', max_lr: 1, total_steps: -5 } }, 'schedule.total_steps'],
    ['total_steps fractional', { schedule: { ...cosine, total_steps: 2.5 } }, 'schedule.total_steps'],
    ['period 0', { schedule: { type: 'cosine_restarts', lr: 0.1, period: 0 } }, 'schedule.period'],
    ['period_mult 0', { schedule: { type: 'cosine_restarts', lr: 0.1, period: 5, period_mult: 0 } }, 'schedule.period_mult'],
    ['step_size 0', { schedule: { type: 'step', lr: 0.1, step_size: 0 } }, 'schedule.step_size'],
    ['step_size_up 0', { schedule: { type: 'cyclic', base_lr: 0.1, max_lr: 1, step_size_up: 0 } }, 'schedule.step_size_up'],
    ['negative lr', { schedule: { ...cosine, lr: -0.1 } }, 'schedule.lr'],
    ['lr as a string', { schedule: { ...cosine, lr: '0.1' } }, 'schedule.lr'],
    ['unsorted milestones', { schedule: { type: 'multistep', lr: 0.1, milestones: [80, 30] } }, 'schedule.milestones[1]'],
    ['negative milestone', { schedule: { type: 'multistep', lr: 0.1, milestones: [-1, 30] } }, 'schedule.milestones[0]'],
    ['sequential milestone 0', { schedule: { type: 'sequential', schedules: [cosine, cosine], milestones: [0] } }, 'schedule.milestones[0]'],
    ['sequential unsorted milestones', { schedule: { type: 'sequential', schedules: [cosine, cosine, cosine], milestones: [20, 10] } }, 'schedule.milestones[1]'],
    ['sequential: too many milestones', { schedule: { type: 'sequential', schedules: [cosine, cosine], milestones: [10, 20] } }, 'schedule.milestones'],
    ['sequential: too few milestones', { schedule: { type: 'sequential', schedules: [cosine, cosine], milestones: [] } }, 'schedule.milestones'],
    ['sequential: no schedules', { schedule: { type: 'sequential', schedules: [], milestones: [] } }, 'schedule.schedules'],
    ['sequential containing reduce_on_plateau', { schedule: { type: 'sequential', schedules: [cosine, { type: 'reduce_on_plateau', lr: 0.1 }], milestones: [10] } }, 'schedule.schedules[1].type'],
    ['nested child error', { schedule: { type: 'sequential', schedules: [cosine, { type: 'sequential', schedules: [{ ...cosine, total_steps: 0 }], milestones: [] }], milestones: [10] } }, 'schedule.schedules[1].schedules[0].total_steps'],
    ['max_lr < base_lr', { schedule: { type: 'cyclic', base_lr: 0.1, max_lr: 0.01 } }, 'schedule.max_lr'],
    ['unknown cyclic mode', { schedule: { type: 'cyclic', base_lr: 0.1, max_lr: 1, mode: 'sine' } }, 'schedule.mode'],
    ['pct_start above 1', { schedule: { type: 'one_cycle', max_lr: 1, total_steps: 10, pct_start: 1.5 } }, 'schedule.pct_start'],
    ['zero-length one-cycle warm-up', { schedule: { type: 'one_cycle', max_lr: 1, total_steps: 10, pct_start: 0.1 } }, 'schedule.pct_start'],
    ['warmup_steps > total_steps', { schedule: { type: 'warmup_linear', lr: 0.1, warmup_steps: 200, total_steps: 100 } }, 'schedule.warmup_steps'],
    ['min_lr > lr', { schedule: { ...cosine, min_lr: 1 } }, 'schedule.min_lr'],
    ['inverse_sqrt warmup 0', { schedule: { type: 'inverse_sqrt', lr: 0.1, warmup_steps: 0 } }, 'schedule.warmup_steps'],
    ['plateau factor 1', { schedule: { type: 'reduce_on_plateau', lr: 0.1, factor: 1 }, metrics: [1] }, 'schedule.factor'],
    ['unknown field', { schedule: { ...cosine, T_max: 100 } }, 'schedule.T_max'],
    ['unknown top-level field', { schedule: cosine, step: 3 }, 'step'],
    ['steps range longer than the limit', { schedule: cosine, steps: { start: 0, stop: 100_001 } }, 'steps'],
    ['steps list longer than the limit', { schedule: cosine, steps: Array.from({ length: 100_001 }, (_, i) => i) }, 'steps'],
    ['empty steps range', { schedule: cosine, steps: { start: 10, stop: 10 } }, 'steps.stop'],
    ['negative step', { schedule: cosine, steps: [0, -1] }, 'steps[1]'],
    ['fractional step', { schedule: cosine, steps: [0.5] }, 'steps[0]'],
    ['steps as a string', { schedule: cosine, steps: '0:10' }, 'steps'],
    ['range every 0', { schedule: cosine, steps: { stop: 10, every: 0 } }, 'steps.every'],
    ['reduce_on_plateau without metrics', { schedule: { type: 'reduce_on_plateau', lr: 0.1 } }, 'metrics'],
    ['plateau steps past the reports', { schedule: { type: 'reduce_on_plateau', lr: 0.1 }, metrics: [1, 2], steps: { stop: 4 } }, 'steps'],
    ['metrics for a step schedule', { schedule: cosine, metrics: [1, 2] }, 'metrics'],
    ['a non-number metric', { schedule: { type: 'reduce_on_plateau', lr: 0.1 }, metrics: [1, null] }, 'metrics[1]'],
  ])('%s', async (_, body, field) => {
    await expectProblem(postJson(EVALUATE, body), 422, field);
  });

  it.each<[string, string, string]>([
    ['Infinity lr (1e999)', '{"schedule": {"type": "cosine", "lr": 1e999, "total_steps": 10}}', 'schedule.lr'],
    ['-Infinity gamma', '{"schedule": {"type": "exponential", "lr": 0.1, "gamma": -1e999}}', 'schedule.gamma'],
    ['Infinity step', '{"schedule": {"type": "constant", "lr": 0.1}, "steps": [1e999]}', 'steps[0]'],
    ['Infinity metric', '{"schedule": {"type": "reduce_on_plateau", "lr": 0.1}, "metrics": [1, 1e999]}', 'metrics[1]'],
    ['Infinity range stop', '{"schedule": {"type": "constant", "lr": 0.1}, "steps": {"stop": 1e999}}', 'steps.stop'],
  ])('%s', async (_, text, field) => {
    const body = await expectProblem(postJson(EVALUATE, text), 422, field);
    expect(body.detail).toMatch(/finite/);
  });

  it('NaN is not JSON: 400 malformed JSON', async () => {
    const r = await postJson(EVALUATE, '{"schedule": {"type": "cosine", "lr": NaN, "total_steps": 10}}');
    expect(r.status).toBe(400);
    expect(r.type).toBe('application/problem+json');
  });

  it('deeply nested sequential specs are refused without exhausting the stack', async () => {
    let spec: unknown = cosine;
    for (let i = 0; i < 5000; i++) {
      spec = { type: 'sequential', schedules: [spec], milestones: [] };
      // 9 levels: within the body guard's 80 levels of JSON, so the schema's 8-level rule answers.
      if (i === 8) await expectProblem(postJson(EVALUATE, { schedule: spec }), 422, 'schedule');
    }
    // 5000 levels: the body guard stops at 80 levels of JSON before parsing, naming the place.
    const res = await postJson(EVALUATE, { schedule: spec });
    expect(res.status).toBe(422);
    expect(res.body.errors[0].message).toMatch(/deeper than 80 levels/);
    const { field } = res.body.errors[0]; // 80 levels of path, elided in the middle
    expect([field.startsWith('schedule.schedules[0].schedules[0]'), field.includes('…'), field.endsWith('.schedules[0].schedules'), field.length]).toEqual([true, true, true, 300]);
  });

  it('a rate too large to plot is a 422 (evaluating it works)', async () => {
    const schedule = { type: 'cyclic', base_lr: 0, max_lr: 1.7e308, step_size_up: 3 };
    expect((await postJson(EVALUATE, { schedule })).status).toBe(200);
    await expectProblem(postJson('/v1/schedules/plot', { schedule }), 422, 'schedule');
  });

  it('a rate that overflows is a 422 naming the step', async () => {
    const body = await expectProblem(postJson(EVALUATE, { schedule: { type: 'exponential', lr: 1, gamma: 2 }, steps: [10, 5000] }), 422, 'steps[1]');
    expect(body.type).toBe('urn:adam-api:problem:non-finite-result');
  });
});

describe('GET errors name the query parameter as sent', () => {
  it.each<[string, string, string]>([
    ['unknown type', '/v1/schedules/cosine_annealing?lr=0.1', 'type'],
    ['unknown type (plot)', '/v1/schedules/nope/plot?lr=0.1', 'type'],
    ['missing parameter', '/v1/schedules/cosine?lr=0.1', 'total_steps'],
    ['not a number', '/v1/schedules/cosine?lr=abc&total_steps=10', 'lr'],
    ['non-positive total_steps', '/v1/schedules/cosine?lr=0.1&total_steps=0', 'total_steps'],
    ['Infinity', '/v1/schedules/cosine?lr=Infinity&total_steps=10', 'lr'],
    ['NaN', '/v1/schedules/cosine?lr=NaN&total_steps=10', 'lr'],
    ['unsorted milestones', '/v1/schedules/multistep?lr=0.1&milestones=80,30', 'milestones[1]'],
    ['unknown parameter', '/v1/schedules/cosine?lr=0.1&total_steps=10&T_max=10', 'T_max'],
    ['type in the query', '/v1/schedules/constant?lr=0.1&type=cosine&total_steps=10', 'type'],
    ['schedule JSON not an object', '/v1/schedules/cosine?schedule=%5B1%5D', 'schedule'],
    ['schedule JSON null', '/v1/schedules/cosine?schedule=null', 'schedule'],
    ['repeated scalar', '/v1/schedules/cosine?lr=0.1&lr=0.2&total_steps=10', 'lr'],
    ['max_lr < base_lr', '/v1/schedules/cyclic?base_lr=0.1&max_lr=0.01', 'max_lr'],
    ['bad steps', '/v1/schedules/cosine?lr=0.1&total_steps=10&steps=a:b', 'steps'],
    ['steps beyond the limit', '/v1/schedules/cosine?lr=0.1&total_steps=10&steps=0:100001', 'steps'],
    ['plateau without metrics', '/v1/schedules/reduce_on_plateau?lr=0.1', 'metrics'],
    ['sequential without schedule', '/v1/schedules/sequential?milestones=10', 'schedule'],
    ['schedule not JSON', '/v1/schedules/sequential?schedule=%7Bnope', 'schedule'],
    ['schedule type mismatch', `/v1/schedules/sequential?schedule=${encodeURIComponent('{"type":"cosine","lr":1,"total_steps":3}')}`, 'schedule.type'],
    ['schedule and parameters', `/v1/schedules/cosine?schedule=${encodeURIComponent('{"lr":1,"total_steps":3}')}&lr=2`, 'lr'],
    ['bad nested spec', `/v1/schedules/sequential?schedule=${encodeURIComponent('{"schedules":[{"type":"constant","lr":1}],"milestones":[5]}')}`, 'schedule.milestones'],
    ['bad log_scale', '/v1/schedules/cosine/plot?lr=0.1&total_steps=10&log_scale=maybe', 'log_scale'],
    ['bad width', '/v1/schedules/cosine/plot?lr=0.1&total_steps=10&width=10', 'width'],
  ])('%s', async (_, path, field) => {
    const body = await expectProblem(getJson(path), 422, field);
    // Query and path parameters are named as sent, without a JSON Pointer into a body.
    expect(body.errors.every((e: object) => !('pointer' in e))).toBe(true);
  });
});

describe('other HTTP errors are problem+json too', () => {
  it('wrong method: 405 with Allow', async () => {
    const r = await call('DELETE', EVALUATE);
    expect(r.status).toBe(405);
    expect(r.headers.get('content-type')).toBe('application/problem+json');
  });
  it('non-JSON content type: 4xx', async () => {
    const r = await call('POST', EVALUATE, '{}', { 'content-type': 'text/plain' });
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    expect(r.headers.get('content-type')).toBe('application/problem+json');
  });
});

describe('no 500s', () => {
  /** Deterministic garbage for every field of every type. */
  const GARBAGE: unknown[] = [null, true, 'x', '', -1, 0, 0.5, 1, 1e308, -1e308, 2 ** 53, [], [1], [-1, 'a'], {}, { type: 'constant' }];
  const SPECS: Array<Record<string, unknown>> = [
    { type: 'constant', lr: 1 },
    { type: 'step', lr: 1, step_size: 3 },
    { type: 'multistep', lr: 1, milestones: [2, 4] },
    { type: 'exponential', lr: 1, gamma: 0.9 },
    { type: 'linear', lr: 1 },
    { type: 'polynomial', lr: 1 },
    { type: 'cosine', lr: 1, total_steps: 10 },
    { type: 'cosine_restarts', lr: 1, period: 3, period_mult: 2 },
    { type: 'cyclic', base_lr: 0.1, max_lr: 1, step_size_up: 3, step_size_down: 2, mode: 'exp_range', gamma: 0.9 },
    { type: 'one_cycle', max_lr: 1, total_steps: 20, three_phase: true },
    { type: 'warmup_cosine', lr: 1, warmup_steps: 3, total_steps: 10, min_lr: 0.1 },
    { type: 'warmup_linear', lr: 1, warmup_steps: 3, total_steps: 10 },
    { type: 'inverse_sqrt', lr: 1, warmup_steps: 4 },
    { type: 'sequential', schedules: [{ type: 'constant', lr: 1 }, { type: 'cosine', lr: 1, total_steps: 5 }], milestones: [3] },
    { type: 'reduce_on_plateau', lr: 1, patience: 1 },
  ];

  it('survives every field of every type replaced by garbage (evaluate, plot, GET)', async () => {
    const statuses = new Map<number, number>();
    for (const spec of SPECS) {
      for (const key of Object.keys(spec)) {
        for (const bad of GARBAGE) {
          const schedule = { ...spec, [key]: bad };
          const metrics = spec.type === 'reduce_on_plateau' ? [3, 2, 2, 2, 2] : undefined;
          const requests = [
            send('POST', EVALUATE, { schedule, metrics, steps: { start: 0, stop: 50, every: 7 } }),
            send('POST', '/v1/schedules/plot', { schedule, metrics, log_scale: bad === true }),
          ];
          if (key !== 'type' && spec.type !== 'sequential') {
            const q = new URLSearchParams({ ...Object.fromEntries(Object.entries(spec).filter(([k]) => k !== 'type').map(([k, v]) => [k, String(v)])), [key]: String(bad) });
            if (metrics) q.set('metrics', metrics.join(','));
            requests.push(send('GET', `/v1/schedules/${spec.type}/plot?${q}`));
          }
          for (const r of await Promise.all(requests)) {
            statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
            expect(r.status, `${JSON.stringify(schedule)} → ${JSON.stringify(r.body).slice(0, 300)}`).toBeLessThan(500);
            if (r.status >= 400) expect(r.type).toBe('application/problem+json');
          }
        }
      }
    }
    expect(statuses.get(422)).toBeGreaterThan(500);
  });
});
