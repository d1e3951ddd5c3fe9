// Property-based fuzzing of the schedule routes: POST /v1/schedules/evaluate and /plot, GET
// /v1/schedules/{type} and /{type}/plot, and a schedule inside the stateless step.
// - a valid spec (every type, parameters at their bounds, nested sequential, plateau metrics)
//   evaluates (or is the documented 422 for an overflowing rate), and the same spec gives the same
//   rates bit for bit as query parameters, wrapped in a one-child sequential, and in a step's `lr`;
//   its chart has one point per step;
// - a spec, steps or metrics with one thing wrong is a small 4xx; junk query strings too.
// The rates themselves are checked against torch by test/schedules.test.ts. Seeds: test/helpers/fuzz.ts.

import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { Obj, junkQuery, setAt, textStyle, writeJson, wrongType, type Json } from '../helpers/arbitraries.ts';
import { PROPERTY_TIMEOUT_MS, fuzz, reportCases, sendSane } from '../helpers/fuzz.ts';

afterAll(() => reportCases('schedules'));

const JSON_TYPE = { 'content-type': 'application/json' };

type Spec = Record<string, unknown> & { type: string };
type Steps = number[] | { start: number; stop: number; every: number } | undefined;

const rate = fc.oneof(fc.constantFrom(0, 1e-3, 0.1, 1, 1e10, 1e308, Number.MIN_VALUE), fc.double({ min: 0, max: 1, noNaN: true }));
const positive = fc.oneof(fc.constantFrom(Number.MIN_VALUE, 1e-10, 0.1, 0.5, 1, 2, 1e10), fc.double({ min: 1e-3, max: 2, noNaN: true }));
const unit = fc.oneof(fc.constantFrom(0, 1, 0.5, Number.MIN_VALUE, 1 - 2 ** -53), fc.double({ min: 0, max: 1, noNaN: true }));
const count = (min: number) => fc.oneof(fc.integer({ min, max: 200 }), fc.constantFrom(min, min + 1, 1000, 2 ** 24, 2 ** 31, Number.MAX_SAFE_INTEGER));
const sorted = (max: number, min = 0) =>
  fc.array(fc.oneof(fc.integer({ min, max: 300 }), fc.constantFrom(min, 2 ** 24, Number.MAX_SAFE_INTEGER)), { maxLength: max }).map((a) => a.sort((x, y) => x - y));

/** Optional fields: present or left to their defaults. */
const opt = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined, freq: 2 });
const spec = (type: string, fields: Record<string, fc.Arbitrary<unknown>>) =>
  fc.record(fields).map((r) => ({ type, ...Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) }) as Spec);

/** Valid specs of every type that is a function of the step. */
const flatStepSpec: fc.Arbitrary<Spec> = fc.oneof(
  spec('constant', { lr: rate }),
  spec('step', { lr: rate, step_size: count(1), gamma: opt(positive) }),
  spec('multistep', { lr: rate, milestones: sorted(8), gamma: opt(positive) }),
  spec('exponential', { lr: rate, gamma: positive }),
  spec('linear', { lr: rate, start_factor: opt(unit.filter((x) => x > 0)), end_factor: opt(unit), total_steps: opt(count(1)) }),
  spec('polynomial', { lr: rate, total_steps: opt(count(1)), power: opt(fc.oneof(fc.constantFrom(0, 0.5, 1, 2, 100), fc.double({ min: 0, max: 5, noNaN: true }))) }),
  fc.tuple(rate, unit, count(1)).map(([lr, f, T]) => ({ type: 'cosine', lr, total_steps: T, min_lr: lr * f })),
  fc.tuple(rate, unit, count(1), opt(count(1).map((n) => Math.min(n, 5)))).map(([lr, f, T, mult]) => ({ type: 'cosine_restarts', lr, period: T, min_lr: lr * f, ...(mult === undefined ? {} : { period_mult: mult }) })),
  fc
    .record({ base: rate, up: rate, size: opt(count(1)), down: opt(count(1)), mode: opt(fc.constantFrom('triangular', 'triangular2', 'exp_range')), gamma: opt(unit.filter((x) => x > 0)) })
    .map((r) => ({ type: 'cyclic', base_lr: r.base, max_lr: r.base + r.up, ...(r.size === undefined ? {} : { step_size_up: r.size }), ...(r.down === undefined ? {} : { step_size_down: r.down }), ...(r.mode ? { mode: r.mode } : {}), ...(r.gamma === undefined ? {} : { gamma: r.gamma }) })),
  fc
    .record({ max_lr: rate, total_steps: count(1), pct_start: opt(unit), anneal_strategy: opt(fc.constantFrom('cos', 'linear')), div_factor: opt(positive), final_div_factor: opt(positive), three_phase: opt(fc.boolean()) })
    .filter((r) => (r.pct_start ?? 0.3) * r.total_steps - 1 !== 0)
    .map((r) => ({ type: 'one_cycle', ...Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) }) as Spec),
  fc.tuple(rate, unit, count(1), unit).map(([lr, f, total, w]) => ({ type: 'warmup_cosine', lr, total_steps: total, warmup_steps: Math.floor(total * w), min_lr: lr * f })),
  fc.tuple(rate, count(1), unit).map(([lr, total, w]) => ({ type: 'warmup_linear', lr, total_steps: total, warmup_steps: Math.floor(total * w) })),
  spec('inverse_sqrt', { lr: rate, warmup_steps: count(1) }),
);

/** Sequential specs of up to 3 children, nested twice at most. */
const stepSpec: fc.Arbitrary<Spec> = fc.letrec<{ spec: Spec }>((tie) => ({
  spec: fc.oneof(
    { depthSize: 'small', maxDepth: 2 },
    flatStepSpec,
    fc
      .array(tie('spec'), { minLength: 1, maxLength: 3 })
      .chain((schedules) => sorted(schedules.length - 1, 1).filter((m) => m.length === schedules.length - 1).map((milestones) => ({ type: 'sequential', schedules, milestones }))),
  ),
})).spec;

const plateauSpec = fc
  .record({ lr: rate, mode: opt(fc.constantFrom('min', 'max')), factor: opt(unit.filter((x) => x < 1)), patience: opt(count(0).map((n) => Math.min(n, 20))), threshold: opt(unit), threshold_mode: opt(fc.constantFrom('rel', 'abs')), cooldown: opt(fc.integer({ min: 0, max: 5 })), min_lr: opt(unit), eps: opt(unit) })
  .map((r) => ({ type: 'reduce_on_plateau', ...Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) }) as Spec);

const metricValue = fc.oneof(fc.double({ min: -10, max: 10, noNaN: true }), fc.constantFrom(0, -0, 1e308, -1e308, Number.MIN_VALUE, 1e-300));

interface Request {
  schedule: Spec;
  steps: Steps;
  metrics?: number[];
}

const stepList = fc.array(fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.constantFrom(0, 2 ** 24, 2 ** 31, Number.MAX_SAFE_INTEGER)), { minLength: 1, maxLength: 20 });
const stepRange = fc
  .record({ start: fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.constantFrom(2 ** 24, 2 ** 52)), n: fc.integer({ min: 1, max: 300 }), every: fc.oneof(fc.integer({ min: 1, max: 10 }), fc.constantFrom(1000, 2 ** 30)) })
  .filter((r) => r.start + r.n * r.every <= Number.MAX_SAFE_INTEGER)
  .map((r) => ({ start: r.start, stop: r.start + (r.n - 1) * r.every + 1, every: r.every }));

const request: fc.Arbitrary<Request> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ schedule: stepSpec, steps: fc.oneof(fc.constant(undefined), stepList, stepRange) }) },
  {
    weight: 1,
    arbitrary: fc
      .record({ schedule: plateauSpec, metrics: fc.array(metricValue, { maxLength: 40 }), pick: fc.array(fc.nat(), { maxLength: 10 }) })
      .map(({ schedule, metrics, pick }) => ({ schedule, metrics, steps: pick.length === 0 ? undefined : pick.map((k) => k % (metrics.length + 1)) })),
  },
);

const stepCount = (r: Request) => (r.steps === undefined ? (r.metrics ? r.metrics.length + 1 : 100) : Array.isArray(r.steps) ? r.steps.length : Math.ceil((r.steps.stop - r.steps.start) / r.steps.every));
const firstStep = (r: Request) => (r.steps === undefined ? 0 : Array.isArray(r.steps) ? r.steps[0]! : r.steps.start);

const body = (r: Request, extra: Record<string, unknown> = {}) => ({ schedule: r.schedule, ...(r.steps === undefined ? {} : { steps: r.steps }), ...(r.metrics ? { metrics: r.metrics } : {}), ...extra });

/** The same request as a GET query string: flat parameters (lists comma-separated), or the spec as JSON for sequential. */
function queryOf(r: Request): string {
  const q = new URLSearchParams();
  if (r.schedule.type === 'sequential') q.set('schedule', JSON.stringify(r.schedule));
  else for (const [k, v] of Object.entries(r.schedule)) if (k !== 'type') q.set(k, Array.isArray(v) ? v.join(',') : String(v));
  if (Array.isArray(r.steps)) q.set('steps', r.steps.join(','));
  else if (r.steps) q.set('steps', `${r.steps.start}:${r.steps.stop}:${r.steps.every}`);
  if (r.metrics) q.set('metrics', r.metrics.join(','));
  return `?${q}`;
}

/** A 422 for an overflowing rate, or for a rate beyond the replay budget of torch's recursion. */
function expectDocumentedRefusal(text: string): void {
  const problem = JSON.parse(text) as { type: string; detail: string };
  if (problem.type === 'urn:adam-api:problem:validation-error') expect(problem.detail, text.slice(0, 300)).toContain("torch's recursive get_lr()");
  else expect(problem.type, text.slice(0, 300)).toBe('urn:adam-api:problem:non-finite-result');
}

/** Bitwise equality of two rate lists. */
function sameRates(a: number[], b: number[], what: string): void {
  expect(a.length, what).toBe(b.length);
  a.forEach((x, i) => {
    if (!Object.is(x, b[i])) expect.fail(`${what}: lr[${i}] ${x} vs ${b[i]}`);
  });
}

describe('schedule routes', () => {
  it('a valid spec evaluates (or overflows as documented), and gives the same rates as query parameters, in a one-child sequential, and in a step', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(request, textStyle, fc.boolean(), async (r, style, logScale) => {
        const posted = await sendSane({ method: 'POST', path: '/v1/schedules/evaluate', headers: JSON_TYPE, body: writeJson(toJson(body(r)), style) });
        if (posted.status !== 200) {
          // Only an overflowing rate (exponential growth, a huge lr times a factor), or a step whose
          // rate needs more of torch's recursion replayed than one request may, is refused.
          expect(posted.status, posted.text.slice(0, 300)).toBe(422);
          expectDocumentedRefusal(posted.text);
          return;
        }
        const out = JSON.parse(posted.text) as { steps: number[]; lr: number[] };
        expect(out.lr).toHaveLength(stepCount(r));
        const viaQuery = await sendSane({ method: 'GET', path: `/v1/schedules/${r.schedule.type}${queryOf(r)}` });
        expect(viaQuery.status, viaQuery.text.slice(0, 300)).toBe(200);
        expect(viaQuery.text).toBe(posted.text);
        if (r.schedule.type !== 'reduce_on_plateau') {
          const wrapped = await sendSane({ method: 'POST', path: '/v1/schedules/evaluate', headers: JSON_TYPE, body: JSON.stringify({ ...body(r), schedule: { type: 'sequential', schedules: [r.schedule], milestones: [] } }) });
          expect(wrapped.status, wrapped.text.slice(0, 300)).toBe(200);
          sameRates(JSON.parse(wrapped.text).lr, out.lr, 'one-child sequential');
          // The stateless step applies lr(step) (float64: the rate as is).
          const k = firstStep(r);
          if (k <= 2 ** 24) {
            const step = await sendSane({ method: 'POST', path: '/v1/adam/step', headers: JSON_TYPE, body: JSON.stringify({ params: [1], grads: [1], state: { step: k, m: [0], v: [0] }, schedule: r.schedule, dtype: 'float64' }) });
            if (step.status === 200) expect(Object.is(JSON.parse(step.text).lr, out.lr[0]), `step lr ${JSON.parse(step.text).lr} vs ${out.lr[0]}`).toBe(true);
            else expectDocumentedRefusal(step.text);
          }
        }
        const plot = await sendSane({ method: 'POST', path: '/v1/schedules/plot', headers: JSON_TYPE, body: JSON.stringify(body(r, { log_scale: logScale })) });
        if (plot.status === 200) expect(plot.text).toContain(`data-points="${out.lr.length}"`);
        else expect(plot.status, plot.text.slice(0, 300)).toBe(422); // a log scale over a rate <= 0, or rates no chart can scale
        const plotQuery = await sendSane({ method: 'GET', path: `/v1/schedules/${r.schedule.type}/plot${queryOf(r)}&log_scale=${logScale}` });
        expect(plotQuery.status).toBe(plot.status);
      }),
      700,
    );
  });

  it('a spec, steps or metrics with one thing wrong is a small 4xx', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    const field = fc.constantFrom('lr', 'base_lr', 'max_lr', 'step_size', 'gamma', 'milestones', 'total_steps', 'min_lr', 'period', 'period_mult', 'start_factor', 'end_factor', 'power', 'warmup_steps', 'pct_start', 'div_factor', 'mode', 'factor', 'patience', 'type');
    const badValue = fc.oneof(wrongType, fc.constantFrom<Json>(-1, -1e-300, 1.5, 0, 1e309 as number, [3, 1], [-1], 'nope'));
    const mutation = fc.oneof(
      // A field of the spec given a wrong type or value (only when the field exists, or is required: it may also be a valid value, then skipped).
      fc.tuple(field, badValue).map(([k, v]) => ({ what: `schedule.${k} = ${writeJson(v)}`, mayPass: true, apply: (b: Obj) => (b.get('schedule') instanceof Obj && (b.get('schedule') as Obj).get(k) !== undefined ? setAt(b, ['schedule', k], v) : setAt(b, ['schedule', 'x'], 1)) })),
      fc.constantFrom('nope', 'unknown', '__proto__', 'constructor').map((k) => ({ what: `unknown field ${k}`, mayPass: false, apply: (b: Obj) => setAt(b, ['schedule', k], 1) })),
      fc.constantFrom<Json>('', 'Constant', 'sgd', null, 1).map((t) => ({ what: `type ${writeJson(t)}`, mayPass: false, apply: (b: Obj) => setAt(b, ['schedule', 'type'], t) })),
      fc.constantFrom<Json>([], [-1], [1.5], ['1'], [2 ** 53], new Obj([['start', 5], ['stop', 5]]), new Obj([['stop', 200_001]]), new Obj([['start', 0], ['stop', 10], ['every', 0]]), new Obj([['stop', 10], ['x', 1]]), 'x').map((s) => ({
        what: `steps ${writeJson(s)}`,
        mayPass: false,
        apply: (b: Obj) => setAt(b, ['steps'], s),
      })),
      fc.constant({ what: 'metrics without reduce_on_plateau, or plateau without metrics', mayPass: false, apply: (b: Obj) => ((b.get('schedule') as Obj).get('type') === 'reduce_on_plateau' ? setAt(b, ['metrics'], undefined) : setAt(b, ['metrics'], [1])) }),
      fc.constant({ what: 'nested 9 deep', mayPass: false, apply: (b: Obj) => setAt(b, ['schedule'], nest(9)) }),
      fc.constant({ what: '33 schedules', mayPass: false, apply: (b: Obj) => setAt(b, ['schedule'], new Obj([['type', 'sequential'], ['schedules', Array.from({ length: 32 }, () => new Obj([['type', 'constant'], ['lr', 1]]))], ['milestones', Array.from({ length: 31 }, (_, i) => i)]])) }),
      fc.constant({ what: '1001 milestones', mayPass: false, apply: (b: Obj) => setAt(b, ['schedule'], new Obj([['type', 'multistep'], ['lr', 1], ['milestones', Array.from({ length: 1001 }, (_, i) => i)]])) }),
      fc.constant({ what: 'a plateau child of sequential', mayPass: false, apply: (b: Obj) => setAt(b, ['schedule'], new Obj([['type', 'sequential'], ['schedules', [new Obj([['type', 'reduce_on_plateau'], ['lr', 1]])]], ['milestones', []]])) }),
      fc.constantFrom<[string, Json]>(['log_scale', 1], ['width', 199], ['height', 3001], ['title', 'x'.repeat(201)], ['width', 1.5]).map(([k, v]) => ({ what: `plot ${k} = ${writeJson(v)}`, mayPass: false, plot: true, apply: (b: Obj) => setAt(b, [k], v) })),
    );
    await fuzz(
      fc.asyncProperty(request, mutation, textStyle, async (r, m, style) => {
        const mutated = m.apply(toJson(body(r)) as Obj);
        const a = await sendSane({ method: 'POST', path: 'plot' in m ? '/v1/schedules/plot' : '/v1/schedules/evaluate', headers: JSON_TYPE, body: writeJson(mutated, style) });
        if (!m.mayPass) expect(a.status, `${m.what}: ${a.text.slice(0, 300)}`).toBeGreaterThanOrEqual(400);
      }),
      700,
    );
  });

  it('junk query strings on the GET routes: a sane answer', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(fc.constantFrom('constant', 'step', 'multistep', 'cosine', 'one_cycle', 'sequential', 'reduce_on_plateau', 'nope'), fc.boolean(), junkQuery, request, async (type, plot, junk, r) => {
        await sendSane({ method: 'GET', path: `/v1/schedules/${type}${plot ? '/plot' : ''}${junk}` });
        // A valid query with one junk pair appended.
        await sendSane({ method: 'GET', path: `/v1/schedules/${r.schedule.type}${plot ? '/plot' : ''}${queryOf(r)}${junk.replace('?', '&')}` });
      }),
      300,
    );
  });
});

/** A sequential spec nested `depth` levels. */
function nest(depth: number): Json {
  let s: Json = new Obj([['type', 'constant'], ['lr', 1]]);
  for (let i = 0; i < depth; i++) s = new Obj([['type', 'sequential'], ['schedules', [s]], ['milestones', []]]);
  return s;
}

/** A plain value as the JSON model (objects keep their key order). */
function toJson(v: unknown): Json {
  if (Array.isArray(v)) return v.map(toJson);
  if (v !== null && typeof v === 'object') return new Obj(Object.entries(v).map(([k, c]) => [k, toJson(c)]));
  return v as Json;
}
