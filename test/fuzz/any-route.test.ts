// Property-based fuzzing of every route openapi.yaml lists, with any method, path parameters,
// query string, headers and body: near-valid JSON (one subtree replaced by anything), arbitrary
// JSON, deep nesting, random bytes. Every answer must be a status the operation documents (the
// contract check in `send`), never a 5xx, within the time limit, and a rejection a small
// problem+json. Requests aimed at an existing optimizer without its token must leave it bit for
// bit as it was. Seeds and case counts: test/helpers/fuzz.ts.

import fc from 'fast-check';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import specText from '../../openapi.yaml?raw';
import { Obj, Raw, anyJson, contentType, headerText, junkHeaders, junkQuery, setAt, writeJson, textStyle, type Json } from '../helpers/arbitraries.ts';
import { PROPERTY_TIMEOUT_MS, expectSane, expectUnchanged, fuzz, hostedBytes, reportCases, send, type HostedBytes, type Req } from '../helpers/fuzz.ts';
import { OPTIMIZER_NAMES } from '../../src/optim/registry.ts';
import { createOptimizer, opCall, type Created } from '../helpers/optimizers.ts';

afterAll(() => reportCases('any-route'));

const spec = parseYaml(specText) as { paths: Record<string, Record<string, unknown>> };
/** Every documented operation: [path template, METHOD]. */
const OPERATIONS = Object.entries(spec.paths).flatMap(([template, item]) => Object.keys(item).map((m) => [template, m.toUpperCase()] as const));

const SCHEDULE_TYPES = ['constant', 'step', 'multistep', 'exponential', 'linear', 'polynomial', 'cosine', 'cosine_restarts', 'cyclic', 'one_cycle', 'warmup_cosine', 'warmup_linear', 'inverse_sqrt', 'sequential', 'reduce_on_plateau'];

/** A valid body per operation, to mutate (the rest get arbitrary bodies). */
const SAMPLE_BODIES: Record<string, Json> = {
  'POST /v1/adam/step': new Obj([['params', new Obj([['w', [1, 2]], ['b', 0.5]])], ['grads', new Obj([['w', [0.1, -0.2]], ['b', 1]])], ['hyperparams', new Obj([['lr', 0.01]])]]),
  'POST /v1/schedules/evaluate': new Obj([['schedule', new Obj([['type', 'cosine'], ['lr', 0.1], ['total_steps', 10]])], ['steps', new Obj([['start', 0], ['stop', 20]])]]),
  'POST /v1/schedules/plot': new Obj([['schedule', new Obj([['type', 'step'], ['lr', 0.1], ['step_size', 3]])], ['log_scale', true], ['width', 300]]),
  'POST /v1/optimizers': new Obj([['params', new Obj([['w', [1, 2]], ['b', 0.5]])], ['hyperparams', new Obj([['lr', 0.01]])]]),
  'POST /v1/optimizers/{id}/step': new Obj([['grads', new Obj([['w', [0.1, -0.2]], ['b', 1]])], ['loss', 0.5]]),
  'PUT /v1/optimizers/{id}/params': new Obj([['params', new Obj([['w', [3, 4]]])]]),
  'PATCH /v1/optimizers/{id}': new Obj([['hyperparams', new Obj([['lr', 0.5]])]]),
  // Every registry optimizer's stateless step (SGD needs lr; the rest take defaults).
  ...Object.fromEntries(
    OPTIMIZER_NAMES.filter((n) => n !== 'adam').map((n) => [
      `POST /v1/${n}/step`,
      // 2-D: Muon steps matrices only.
      new Obj([['params', new Obj([['w', [[1, 2], [3, 4]]]])], ['grads', new Obj([['w', [[0.1, -0.2], [0.3, 0]]]])], ['hyperparams', new Obj([['lr', 0.01]])]]),
    ]),
  ),
};

let target: Created;
let baseline: HostedBytes;

beforeAll(async () => {
  target = await createOptimizer({ params: { w: [1, 2], b: 0.5 }, hyperparams: { lr: 0.01, amsgrad: true } });
  expect((await opCall('POST', target, '/step', { grads: { w: [0.1, -0.2], b: 1 }, loss: 0.5 })).status).toBe(200);
  baseline = await hostedBytes(target);
});

/** Path parameters: real and unknown ids, schedule types, optimizer and asset names, and junk. */
const junkSegment = fc.oneof(
  fc.constantFrom('', '..', '.', '%00', '%2F', '%E2%82%AC', 'x'.repeat(3000), '0'.repeat(64), 'f'.repeat(64), 'nope', '__proto__', 'constructor', ' ', '%20'),
  fc.string({ maxLength: 20 }).map(encodeURIComponent),
  fc.stringMatching(/^[0-9a-f]{64}$/),
);
const idSegment = fc.oneof({ weight: 3, arbitrary: fc.constant('TARGET') }, { weight: 2, arbitrary: junkSegment });
const typeSegment = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...SCHEDULE_TYPES) }, { weight: 1, arbitrary: junkSegment });
const fileSegment = fc.oneof({ weight: 2, arbitrary: fc.constantFrom('swagger-ui.css', 'init.js') }, { weight: 1, arbitrary: junkSegment });
const nameSegment = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...OPTIMIZER_NAMES, 'lion', 'lbfgs', 'SGD', 'Adam') }, { weight: 1, arbitrary: junkSegment });

/** A path of a documented operation with its parameters filled, at times mangled (trailing slash, case, extra segment). */
const pathArb = fc
  .record({ op: fc.constantFrom(...OPERATIONS), id: idSegment, type: typeSegment, file: fileSegment, name: nameSegment, mangle: fc.constantFrom('', '', '', '/', '//', '/x', 'UPPER', '/..') })
  .map(({ op: [template, method], id, type, file, name, mangle }) => {
    let path = template.replace('{id}', id).replace('{type}', type).replace('{file}', file).replace('{name}', name);
    if (mangle === 'UPPER') path = path.toUpperCase(); // TARGET stays TARGET
    else path += mangle;
    return { template, method, path };
  });

const methodArb = fc.oneof({ weight: 6, arbitrary: fc.constant('') }, { weight: 1, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD') });

/** A body: none, the operation's sample with one subtree replaced by anything, arbitrary JSON, deep nesting, random bytes. */
function bodyArb(key: string) {
  const sample = SAMPLE_BODIES[key];
  const mutated = sample
    ? fc.tuple(fc.array(fc.oneof(fc.constantFrom('params', 'grads', 'w', 'b', 'schedule', 'hyperparams', 'lr', 'type', 'steps', 'loss', 'state', 'betas', 'step'), fc.nat({ max: 2 })), { minLength: 1, maxLength: 3 }), anyJson, textStyle).map(([path, v, style]) =>
        writeJson(setAt(sample, path, v), style),
      )
    : fc.constant('{}');
  return fc.oneof(
    { weight: 1, arbitrary: fc.constant(undefined) },
    { weight: 4, arbitrary: mutated },
    { weight: 1, arbitrary: sample ? fc.constant(writeJson(sample)) : fc.constant('') },
    { weight: 2, arbitrary: fc.tuple(anyJson, textStyle).map(([v, s]) => writeJson(v, s)) },
    { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 70, max: 100_000 }), fc.boolean()).map(([d, arrays]) => (arrays ? `${'['.repeat(d)}0${']'.repeat(d)}` : `${'{"a":'.repeat(d)}0${'}'.repeat(d)}`)) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 20_000 }).map((n) => `[${'1,'.repeat(n)}1]`) },
    { weight: 1, arbitrary: fc.constantFrom('[', '{"a":', 'null', '"x"', '1e999', 'NaN', '{"__proto__":{"x":1}}', '\ufeff{}', '{}garbage').map((t) => new Raw(t).text) },
    { weight: 2, arbitrary: fc.uint8Array({ maxLength: 512 }) },
  );
}

const requestArb = pathArb.chain((p) =>
  fc.record({
    p: fc.constant(p),
    method: methodArb,
    query: fc.oneof({ weight: 3, arbitrary: fc.constant('') }, { weight: 2, arbitrary: junkQuery }),
    headers: junkHeaders,
    body: bodyArb(`${p.method} ${p.template}`),
    json: fc.boolean(),
  }),
);

describe('every route, any request', () => {
  it('answers with a documented status, never a 5xx, in time, a rejection as a small problem; a token-less request changes no optimizer', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(requestArb, async ({ p, method, query, headers, body, json }) => {
        const m = method || p.method;
        const h = { ...headers };
        // Half the time a JSON Content-Type, so that bodies get past content negotiation.
        if (json && typeof body === 'string') h['content-type'] = 'application/json';
        // The token is never sent: whatever the request, the target must not change.
        if (h.authorization?.includes(target.token)) delete h.authorization;
        const req: Req = { method: m, path: p.path.replace('TARGET', target.id) + query, headers: h, ...(body === undefined || m === 'GET' || m === 'HEAD' ? {} : { body }) };
        const a = await send(req);
        expectSane(req, a);
        // HEAD is GET without the body.
        if (m === 'HEAD') expect(a.status, `HEAD ${req.path}`).toBe((await send({ ...req, method: 'GET' })).status);
        if (req.path.includes(target.id)) await expectUnchanged(target, baseline, `${req.method} ${req.path}`);
      }),
      1500,
    );
  });

  it('Content-Type, Content-Encoding and Accept junk on JSON routes: a sane answer', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    const routes = Object.keys(SAMPLE_BODIES);
    await fuzz(
      fc.asyncProperty(fc.constantFrom(...routes), contentType, headerText, fc.constantFrom('identity', 'gzip', 'br', '', 'x'), async (key, type, acceptText, encoding) => {
        const [method, template] = key.split(' ') as [string, string];
        const path = template.replace('{id}', target.id);
        const req: Req = { method, path, headers: { 'content-type': type, accept: acceptText, 'content-encoding': encoding, authorization: 'Bearer wrong' }, body: writeJson(SAMPLE_BODIES[key]!) };
        expectSane(req, await send(req));
      }),
      300,
    );
    await expectUnchanged(target, baseline, 'junk headers');
  });
});
