// One rule for query strings on every route that takes them (src/schemas/query.ts): integers in
// decimal digits only, numbers as JSON writes them, each parameter once, unknown names (prototype-ish
// ones included) rejected. Found by review: `?limit=0x10` was 16 on history but hex was rejected by
// schedules; unknown parameters were ignored on some routes; `__proto__=1` was ignored while
// `constructor=1` was rejected.

import { beforeAll, describe, expect, it } from 'vitest';
import { call } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, parse, type Created } from './helpers/optimizers.ts';

let opt: Created;
beforeAll(async () => {
  opt = await createOptimizer({ params: [1, 2] });
  for (const loss of [3, 2, 1]) expect((await opCall('POST', opt, '/step', { grads: [1, 1], loss })).status).toBe(200);
});

const get = async (path: string) => parse(await call('GET', path, undefined, authed(opt.token)));
const history = (query: string) => get(`/v1/optimizers/${opt.id}/history${query}`);

/** Spellings that are not a decimal integer, each with the value the old coercion read. */
const NOT_DECIMAL = ['0x10', '1e1', '%2016', '16%20', '%2B16', '016', '16.0', '0b11', '', 'Infinity', '1_000'];

describe('integers are decimal digits, on every route', () => {
  it.each(NOT_DECIMAL)('history ?limit=%s → 422 naming limit', async (text) => {
    const res = await history(`?limit=${text}`);
    expectProblem(res, 422, 'limit');
    expect(res.body.errors[0].message).toMatch(/^must be an integer in decimal digits/);
  });

  it.each(NOT_DECIMAL)('schedules ?total_steps=%s → 422 naming total_steps', async (text) => {
    expectProblem(await get(`/v1/schedules/cosine?lr=0.1&total_steps=${text}`), 422, 'total_steps');
  });

  it.each(['0x10', '1e1', '%201'])('steps, milestones and plot sizes too (%s)', async (text) => {
    expectProblem(await get(`/v1/schedules/constant?lr=1&steps=0:${text}`), 422, 'steps');
    expectProblem(await get(`/v1/schedules/constant?lr=1&steps=1,${text}`), 422, 'steps[1]');
    expectProblem(await get(`/v1/schedules/multistep?lr=1&milestones=1,${text}`), 422, 'milestones[1]');
    expectProblem(await get(`/v1/schedules/constant/plot?lr=1&width=${text}`), 422, 'width');
  });

  it('decimal integers work, with their bounds checked', async () => {
    const res = await history('?limit=2');
    expect(res.status).toBe(200);
    expect(res.body.entries.map((e: { step: number }) => e.step)).toEqual([2, 3]);
    expectProblem(await history('?limit=0'), 422, 'limit');
    expectProblem(await history('?limit=10001'), 422, 'limit');
    expect((await get('/v1/schedules/step?lr=1&step_size=2&gamma=0.5&steps=0:5:2')).body).toEqual({ steps: [0, 2, 4], lr: [1, 0.5, 0.25] });
  });
});

describe('other numbers are written as in JSON', () => {
  it('an exponent is fine for a real-valued parameter', async () => {
    expect((await get('/v1/schedules/constant?lr=1e-3&steps=0')).body).toEqual({ steps: [0], lr: [0.001] });
    expect((await get('/v1/schedules/constant?lr=2.5E%2B2&steps=0')).body).toEqual({ steps: [0], lr: [250] });
  });

  it.each(['0x10', '.5', '5.', '%2B1', '%201', 'Infinity', 'NaN', '1e999', 'true'])('lr=%s → 422 naming lr', async (text) => {
    const res = await get(`/v1/schedules/constant?lr=${text}&steps=0`);
    expectProblem(res, 422, 'lr');
    expect(res.body.errors[0].message).toMatch(/^must be a number written as in JSON/);
  });

  it('metrics too', async () => {
    expectProblem(await get('/v1/schedules/reduce_on_plateau?lr=1&metrics=1,0x2'), 422, 'metrics[1]');
  });
});

describe('each parameter once', () => {
  it.each([
    ['history', () => `/v1/optimizers/${opt.id}/history?limit=1&limit=2`, 'limit'],
    ['history plot', () => `/v1/optimizers/${opt.id}/history/plot?log_scale=true&log_scale=true`, 'log_scale'],
    ['schedule scalar', () => '/v1/schedules/cosine?lr=0.1&lr=0.1&total_steps=10', 'lr'],
    ['schedule list', () => '/v1/schedules/multistep?lr=1&milestones=1&milestones=2', 'milestones'],
    ['steps', () => '/v1/schedules/constant?lr=1&steps=1&steps=2', 'steps'],
  ])('%s: a repeated key is a 422 naming it', async (_, path, field) => {
    const res = await get(path());
    expectProblem(res, 422, field);
    expect(res.body.errors.find((e: { field: string }) => e.field === field).message).toBe('is given 2 times; give it once');
  });

  it('hosted step ?return=none&return=none', async () => {
    const res = await parse(await call('POST', `/v1/optimizers/${opt.id}/step?return=none&return=none`, { grads: [1, 1] }, authed(opt.token)));
    expectProblem(res, 422, 'return');
  });
});

describe('unknown names are rejected, whatever the name', () => {
  const NAMES = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'prototype', 'Limit', 'limit%5B%5D', 'x'];

  it.each(NAMES)('history ?%s=1 → 422 naming it', async (name) => {
    const res = await history(`?${name}=1`);
    expectProblem(res, 422, decodeURIComponent(name));
    expect(res.body.errors[0].message).toBe('unknown query parameter');
  });

  it.each(NAMES)('schedules ?%s=1 → 422 naming it', async (name) => {
    expectProblem(await get(`/v1/schedules/constant?lr=1&${name}=1`), 422, decodeURIComponent(name));
    expectProblem(await get(`/v1/schedules/constant/plot?lr=1&${name}=1`), 422, decodeURIComponent(name));
  });

  it.each(NAMES)('history plot and hosted step ?%s=1 → 422', async (name) => {
    expectProblem(await get(`/v1/optimizers/${opt.id}/history/plot?${name}=1`), 422, decodeURIComponent(name));
    const step = await parse(await call('POST', `/v1/optimizers/${opt.id}/step?${name}=1`, { grads: [1, 1] }, authed(opt.token)));
    expectProblem(step, 422, decodeURIComponent(name));
  });

  it('a plot parameter on the evaluate route, and a parameter of another schedule type, are unknown', async () => {
    expectProblem(await get('/v1/schedules/constant?lr=1&width=300'), 422, 'width');
    const other = await get('/v1/schedules/cosine?lr=1&total_steps=3&gamma=0.5');
    expectProblem(other, 422, 'gamma');
    expect(other.body.errors[0].message).toBe('unknown field');
  });
});

describe('booleans', () => {
  it.each([['true', 200], ['1', 200], ['false', 200], ['0', 200], ['yes', 422], ['TRUE', 422], ['', 422]] as const)('log_scale=%s → %i', async (text, want) => {
    const status = async (path: string) => (await call('GET', path, undefined, authed(opt.token))).status; // SVG or problem
    expect(await status(`/v1/optimizers/${opt.id}/history/plot?log_scale=${text}`)).toBe(want);
    expect(await status(`/v1/schedules/constant/plot?lr=1&log_scale=${text}`)).toBe(want);
  });
});

describe('routes that take no query parameters reject any', () => {
  it.each(['/', '/healthz', '/openapi.json', '/openapi.yaml', '/docs'])('GET %s?x=1 → 422 naming x', async (path) => {
    const res = await parse(await call('GET', `${path}?x=1`));
    expectProblem(res, 422, 'x');
    expect((await call('GET', path)).status).toBe(200);
  });

  it('hosted reads, deletes and the JSON POST routes too', async () => {
    for (const path of ['', '/params', '/state']) expectProblem(await get(`/v1/optimizers/${opt.id}${path}?__proto__=1`), 422, '__proto__');
    expectProblem(await parse(await call('DELETE', `/v1/optimizers/${opt.id}?x=1`, undefined, authed(opt.token))), 422, 'x');
    expect((await get(`/v1/optimizers/${opt.id}`)).status).toBe(200); // not deleted
    expectProblem(await parse(await call('POST', '/v1/adam/step?dtype=float64', { params: [1], grads: [1] })), 422, 'dtype');
    expectProblem(await parse(await call('POST', '/v1/schedules/evaluate?steps=0:3', { schedule: { type: 'constant', lr: 1 } })), 422, 'steps');
  });

  it('the docs assets take their cache buster `v`, and nothing else', async () => {
    expect((await call('GET', '/docs/assets/init.js?v=5.35.0')).status).toBe(200);
    expectProblem(await parse(await call('GET', '/docs/assets/init.js?w=1')), 422, 'w');
  });
});
