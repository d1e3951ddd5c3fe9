// Hostile JSON bodies get small, cheap 4xx answers: the raw bytes are scanned before parsing
// (values of every kind, nesting depth, members per object), and a problem lists at most 20 field
// errors whatever the input. Found by review: a 12 MB body of a million unknown fields answered
// with a 77 MB problem after 7.5 s, and 5 million nested objects slipped past a counter of `,`/`[`.

import { describe, expect, it } from 'vitest';
import { call } from './helpers/http.ts';
import { expectProblem, parse } from './helpers/optimizers.ts';

/** Largest problem body any of these inputs may produce (a problem lists at most 20 short errors). */
const SMALL = 16 * 1024;

async function post(path: string, text: string, contentType = 'application/json') {
  const res = await call('POST', path, text, { 'content-type': contentType });
  const raw = await res.clone().text();
  return { ...(await parse(res)), bytes: new TextEncoder().encode(raw).length };
}

/** `{"k0":1,"k1":1,…}` members as text, without building a JS object of that size. */
function fields(n: number, prefix = 'unknown_'): string {
  const parts = new Array<string>(n);
  for (let i = 0; i < n; i++) parts[i] = `"${prefix}${i}":1`;
  return parts.join(',');
}

describe('error amplification', () => {
  it('a 12 MB body with a million unknown fields: a small 4xx, not a 77 MB problem', async () => {
    const text = `{"params":[1],"grads":[1],${fields(1_000_000)}}`;
    expect(text.length).toBeGreaterThan(12_000_000);
    const res = await post('/v1/adam/step', text);
    expectProblem(res, 422, '(body)');
    expect(res.bytes).toBeLessThan(SMALL);
    expect(res.body.errors[0].message).toBe('has more than 10000 members');
  });

  it('thousands of unknown fields: the first 20 listed, the rest counted', async () => {
    const res = await post('/v1/adam/step', `{"params":[1],"grads":[1],${fields(9_000)},"hyperparams":{${fields(9_000, 'hp_')}}}`);
    expectProblem(res, 422, 'hyperparams.hp_0');
    expect(res.body.errors).toHaveLength(20);
    expect(res.body.errors_omitted).toBe(18_000 - 20);
    expect(res.body.errors[19]).toEqual({ field: 'hyperparams.hp_19', pointer: '/hyperparams/hp_19', message: 'unknown field', value: 1 });
    expect(res.body.detail).toMatch(/\(and 17997 more\)$/);
    expect(res.bytes).toBeLessThan(SMALL);
  });

  it('on every JSON route (schedules, hosted optimizers)', async () => {
    const schedule = await post('/v1/schedules/evaluate', `{"schedule":{"type":"constant","lr":1,${fields(5_000)}}}`);
    expectProblem(schedule, 422, 'schedule.unknown_0');
    expect(schedule.body.errors_omitted).toBe(5_000 - 20);
    expect(schedule.bytes).toBeLessThan(SMALL);
    const create = await post('/v1/optimizers', `{"params":[1],${fields(5_000)}}`);
    expectProblem(create, 422, 'unknown_0');
    expect(create.body.errors_omitted).toBe(5_000 - 20);
    expect(create.bytes).toBeLessThan(SMALL);
  });

  it('a bad metric list of 100,000 entries: 20 errors listed', async () => {
    const metrics = JSON.stringify(Array.from({ length: 100_000 }, () => 'x'));
    const res = await post('/v1/schedules/evaluate', `{"schedule":{"type":"reduce_on_plateau","lr":1},"metrics":${metrics}}`);
    expectProblem(res, 422, 'metrics[0]');
    expect(res.body.errors).toHaveLength(20);
    expect(res.body.errors_omitted).toBe(100_000 - 20);
    expect(res.bytes).toBeLessThan(SMALL);
  });

  it('megabyte-long keys and values are not echoed back whole', async () => {
    const key = 'k'.repeat(2_000_000);
    const res = await post('/v1/adam/step', `{"params":[1],"grads":[1],"${key}":"${'v'.repeat(1_000_000)}","schedule":{"type":"${'t'.repeat(1_000_000)}"}}`);
    expectProblem(res, 422);
    expect(res.bytes).toBeLessThan(SMALL);
    const unknown = res.body.errors.find((e: { message: string }) => e.message === 'unknown field');
    expect(unknown.field).toMatch(/^k+…k+$/);
    expect(unknown.field.length).toBeLessThanOrEqual(300);
    expect(unknown).not.toHaveProperty('pointer'); // an elided pointer would point nowhere
    expect(unknown).not.toHaveProperty('value');
  });
});

describe('the body guard bounds every kind of value before parsing', () => {
  // The schedule routes accept 2 × 100,000 list entries plus 10,000 other values.
  const BUDGET = 210_000;
  const over = (item: string) => `{"schedule":{"type":"constant","lr":1},"metrics":[${new Array(BUDGET + 1).fill(item).join(',')}]}`;

  it.each([
    ['numbers', '0'],
    ['strings', '""'],
    ['literals', 'null'],
    ['empty arrays', '[]'],
    ['empty objects', '{}'],
  ])('%s: over the route\'s budget is a 413', async (_, item) => {
    const res = await post('/v1/schedules/evaluate', over(item));
    expectProblem(res, 413);
    expect(res.body.limit).toBe(BUDGET);
    expect(res.body.detail).toMatch(/JSON values/);
  });

  it('object keys count as values', async () => {
    const res = await post('/v1/schedules/evaluate', `{"schedule":{"type":"constant","lr":1},"x":[{${fields(9_000)}}${',{}'.repeat(BUDGET - 18_000)}]}`);
    expectProblem(res, 413);
  });

  it('5 million nested objects (30 MB) are refused after 80 levels, naming the place', async () => {
    const text = '{"a":'.repeat(5_000_000) + '1' + '}'.repeat(5_000_000);
    expect(text.length).toBeGreaterThan(30_000_000);
    const res = await post('/v1/adam/step', text);
    expectProblem(res, 422);
    expect(res.body.errors[0].pointer).toBe('/a'.repeat(80));
    expect(res.body.errors[0].message).toBe('nests deeper than 80 levels of arrays and objects');
    expect(res.bytes).toBeLessThan(SMALL);
  });

  it('deep arrays are refused with the index path; strings with brackets and escapes are not structure', async () => {
    const deep = `{"params":[1],"grads":[1],"state":{"m":${'['.repeat(100)}${']'.repeat(100)}}}`;
    const res = await post('/v1/adam/step', deep);
    expectProblem(res, 422, `state.m${'[0]'.repeat(78)}`);
    const quoted = `{"params":[1],"grads":[1],"hyperparams":{"x\\"${'['.repeat(200)}\\\\":1}}`;
    expectProblem(await post('/v1/adam/step', quoted), 422, `hyperparams["x\\"${'['.repeat(200)}\\\\"]`);
  });

  it('an object with more than 10,000 members is a 422 naming it', async () => {
    const res = await post('/v1/adam/step', `{"params":{${fields(10_001, 't')}},"grads":[1]}`);
    expectProblem(res, 422, 'params');
    expect(res.body.errors[0].pointer).toBe('/params');
  });

  it('valid requests at the edges pass: 10,000 named tensors, 32 named levels holding a rank-32 tensor', async () => {
    const names = `{${fields(10_000, 't')}}`;
    const ok = await post('/v1/adam/step', `{"params":${names},"grads":${names},"dtype":"float64"}`);
    expect(ok.status, JSON.stringify(ok.body).slice(0, 300)).toBe(200);
    expect(Object.keys(ok.body.params)).toHaveLength(10_000);

    let tree = `${'['.repeat(32)}1${']'.repeat(32)}`;
    for (let i = 0; i < 31; i++) tree = `{"n${i}":${tree}}`; // 31 nested names under the tree's own object level
    tree = `{"top":${tree}}`;
    const body = `{"params":${tree},"grads":${tree},"state":{"step":1,"m":${tree},"v":${tree}},"dtype":"float64"}`;
    const deep = await post('/v1/adam/step', body);
    expect(deep.status, JSON.stringify(deep.body).slice(0, 300)).toBe(200);
  });
});

describe('only JSON bodies are inspected', () => {
  it('binary media types pass the guard untouched (a JSON-only route then answers 415, a binary one reads them as binary)', async () => {
    const hostile = '['.repeat(1_000_000);
    for (const type of ['application/octet-stream', 'application/vnd.safetensors']) {
      expectProblem(await post('/v1/schedules/evaluate', hostile, type), 415);
    }
    // As safetensors, these bytes claim an impossible header length: a 413 from the wire layer, not the guard.
    const asFile = await post('/v1/adam/step', hostile, 'application/vnd.safetensors');
    expectProblem(asFile, 413, 'safetensors.header');
  });

  it('`+json` types are JSON too', async () => {
    expectProblem(await post('/v1/adam/step', '{"a":'.repeat(1000), 'application/problem+json'), 422);
  });

  it('still refuses compressed and non-UTF-8 JSON with 415', async () => {
    const gz = await call('POST', '/v1/adam/step', '{}', { 'content-type': 'application/json', 'content-encoding': 'br' });
    expect(gz.status).toBe(415);
    const latin1 = await call('POST', '/v1/adam/step', '{}', { 'content-type': 'application/vnd.api+json; charset=latin1' });
    expect(latin1.status).toBe(415);
  });
});
