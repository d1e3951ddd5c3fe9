// Service API keys: with API_KEYS set, creating optimizers, the stateless step and schedules need
// `Authorization: Bearer <api key>`; hosted routes keep their per-optimizer token, which an API key
// never replaces. Without API_KEYS everything stays open (every other test file runs that way).

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { callWithVars } from './helpers/http.ts';
import { bearer, send as sendWithVars } from './helpers/keys.ts';
import { expectProblem } from './helpers/optimizers.ts';

const ALPHA = 'alpha-0f9e8d7c6b5a49382716';
const BETA = 'beta-Zq8xW3vR5tY7uI9oP1aS';
const VARS = { API_KEYS: ` ${ALPHA} ,${BETA},` };


/** A request through the Worker with API_KEYS (or other `vars`) set; the response parsed. */
const send = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}, vars: Record<string, string> = VARS) =>
  sendWithVars(vars, method, path, body, headers);

const STEP = { params: [1, -2], grads: [0.5, 0.5], hyperparams: { lr: 0.1 } };

/** One request per service operation. */
const SERVICE: Array<[string, string, unknown]> = [
  ['POST', '/v1/optimizers', { params: [1, 2] }],
  ['GET', '/v1/optimizers', undefined],
  ['POST', '/v1/adam/step', STEP],
  ['POST', '/v1/sgd/step', { params: [1, -2], grads: [0.5, 0.5], hyperparams: { lr: 0.1, momentum: 0.9 } }],
  ['POST', '/v1/adamw/step', STEP],
  ['POST', '/v1/adadelta/step', { params: [1, -2], grads: [0.5, 0.5] }],
  ['POST', '/v1/schedules/evaluate', { schedule: { type: 'constant', lr: 1 }, steps: [0, 1] }],
  ['POST', '/v1/schedules/plot', { schedule: { type: 'constant', lr: 1 } }],
  ['GET', '/v1/schedules/constant?lr=1&steps=0:2', undefined],
  ['GET', '/v1/schedules/constant/plot?lr=1', undefined],
];

function expectUnauthorized(res: { status: number; type: string; body: any; headers: Headers }) {
  expectProblem(res, 401, 'Authorization');
  expect(res.headers.get('www-authenticate')).toBe('Bearer realm="adam-api"');
}

describe('with API_KEYS set', () => {
  it.each(SERVICE)('%s %s needs a valid key: 401 without one or with a wrong one, 2xx with either key', async (method, path, body) => {
    expectUnauthorized(await send(method, path, body));
    expectUnauthorized(await send(method, path, body, bearer('gamma-not-a-key')));
    expectUnauthorized(await send(method, path, body, bearer(ALPHA.slice(0, -1))));
    expectUnauthorized(await send(method, path, body, bearer(`${ALPHA},${BETA}`)));
    expectUnauthorized(await send(method, path, body, { authorization: ALPHA })); // no scheme
    expectUnauthorized(await send(method, path, body, { authorization: `Basic ${btoa(`x:${ALPHA}`)}` }));
    for (const key of [ALPHA, BETA]) {
      const res = await send(method, path, body, bearer(key));
      expect(res.status, JSON.stringify(res.body)).toBeLessThan(300);
    }
    expect((await send(method, path, body, { authorization: `bearer   ${BETA} ` })).status).toBeLessThan(300);
  });

  it('the stateless step gives the same numbers as without keys', async () => {
    const keyed = await send('POST', '/v1/adam/step', STEP, bearer(ALPHA));
    const open = await send('POST', '/v1/adam/step', STEP, {}, {});
    expect(keyed.body).toEqual(open.body);
  });

  it('hosted routes take the optimizer token, never an API key', async () => {
    const created = await send('POST', '/v1/optimizers', { params: [1, 2], hyperparams: { lr: 0.1 } }, bearer(ALPHA));
    expect(created.status).toBe(201);
    const { id, token } = created.body;
    const path = `/v1/optimizers/${id}`;
    for (const key of [ALPHA, BETA]) {
      expectProblem(await send('GET', path, undefined, bearer(key)), 401);
      expectProblem(await send('POST', `${path}/step`, { grads: [1, 1] }, bearer(key)), 401);
      expectProblem(await send('DELETE', path, undefined, bearer(key)), 401);
    }
    expect((await send('POST', `${path}/step`, { grads: [1, 1] }, bearer(token))).body.step).toBe(1);
    expect((await send('GET', path, undefined, bearer(token))).body.step).toBe(1);
    // Nor does a token stand in for an API key.
    expectUnauthorized(await send('POST', '/v1/optimizers', { params: [1] }, bearer(token)));
  });

  it('is checked before the body is read: no key and a 40 MB body is a 401, not a 413', async () => {
    const big = '[' + '0,'.repeat(20_000_000) + '0]';
    expectUnauthorized(await send('POST', '/v1/adam/step', big));
    expectProblem(await send('POST', '/v1/adam/step', big, bearer(ALPHA)), 413);
  });

  it('leaves the service description, health, the spec, the docs, the algorithm catalogue and CORS preflights open', async () => {
    for (const path of ['/', '/healthz', '/openapi.json', '/openapi.yaml', '/docs', '/v1/algorithms', '/v1/algorithms/sgd']) expect((await send('GET', path)).status, path).toBe(200);
    const origin = 'https://app.example';
    const preflight = await callWithVars({ ...VARS, CORS_ORIGINS: origin }, 'OPTIONS', '/v1/optimizers', undefined, {
      origin,
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization, content-type',
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-headers')).toMatch(/authorization/);
  });

  it('an unknown method on a service path is still a 405, an unknown path a 404', async () => {
    const res = await send('DELETE', '/v1/adam/step');
    expectProblem(res, 405);
    expect(res.headers.get('allow')).toBe('POST');
    expectProblem(await send('GET', '/v1/nothing-here'), 404);
  });

  it('empty or blank API_KEYS leave everything open', async () => {
    for (const API_KEYS of ['', ' ', ' , ,']) {
      expect((await send('POST', '/v1/adam/step', STEP, {}, { API_KEYS })).status).toBe(200);
      expect((await send('POST', '/v1/optimizers', { params: [1] }, {}, { API_KEYS })).status).toBe(201);
    }
  });
});

describe('keys stay secret', () => {
  let lines: string[] = [];
  beforeEach(() => {
    lines = [];
    for (const level of ['log', 'warn', 'error', 'info', 'debug'] as const) {
      vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
        lines.push(args.map(String).join(' '));
      });
    }
  });
  afterEach(() => vi.restoreAllMocks());

  it('are never echoed in a problem nor written to the log', async () => {
    const wrong = `${ALPHA}-but-wrong`;
    const refused = await send('POST', '/v1/optimizers', { params: [1] }, bearer(wrong));
    const accepted = await send('POST', '/v1/optimizers', { params: [1] }, bearer(BETA));
    const stepped = await send('POST', '/v1/adam/step', STEP, bearer(ALPHA));
    expect([refused.status, accepted.status, stepped.status]).toEqual([401, 201, 200]);
    const answers = JSON.stringify([refused.body, accepted.body, stepped.body, [...refused.headers], [...accepted.headers]]);
    const logged = lines.join('\n');
    expect(logged).toContain('"route":"/v1/optimizers"'); // the request log ran
    for (const secret of [wrong, ALPHA, BETA, 'alpha-', 'beta-']) {
      expect(answers).not.toContain(secret);
      expect(logged).not.toContain(secret);
    }
  });
});

describe('openapi.yaml', () => {
  it('documents the optional API key on exactly the service operations, and the token on hosted ones', async () => {
    const { parse: parseYaml } = await import('yaml');
    const spec = parseYaml((await import('../openapi.yaml?raw')).default) as Record<string, any>;
    expect(spec.components.securitySchemes.apiKey).toMatchObject({ type: 'http', scheme: 'bearer' });
    const keyed: string[] = [];
    for (const [path, item] of Object.entries<any>(spec.paths)) {
      for (const [method, op] of Object.entries<any>(item)) {
        const security = JSON.stringify(op.security ?? []);
        if (security.includes('apiKey')) {
          keyed.push(`${method.toUpperCase()} ${path}`);
          expect(op.security, `${method} ${path}`).toEqual([{}, { apiKey: [] }]);
          expect(op.responses['401'], `${method} ${path}`).toBeDefined();
        } else if (path.startsWith('/v1/optimizers/')) {
          expect(op.security, `${method} ${path}`).toEqual([{ bearerAuth: [] }]);
        }
      }
    }
    // Every stateless step, whichever optimizer: POST /v1/{name}/step.
    const steps = Object.keys(spec.paths).filter((p) => /^\/v1\/[a-z0-9_]+\/step$/.test(p) && spec.paths[p].post);
    expect(steps).toEqual(expect.arrayContaining(['/v1/adam/step', '/v1/sgd/step', '/v1/adamw/step', '/v1/adadelta/step']));
    expect(keyed.sort()).toEqual(
      [...steps.map((p) => `POST ${p}`), 'POST /v1/optimizers', 'GET /v1/optimizers', 'POST /v1/schedules/evaluate', 'POST /v1/schedules/plot', 'GET /v1/schedules/{type}', 'GET /v1/schedules/{type}/plot'].sort(),
    );
  });
});
