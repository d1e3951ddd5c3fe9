// Drives adam-api through the TypeScript client generated from openapi.yaml (openapi-typescript +
// openapi-fetch) against wrangler dev. Every call below is type-checked against the spec by
// `npm run typecheck`, and a middleware checks at run time that each answer's status and media type
// are ones openapi.yaml declares for that operation: a spec/implementation mismatch fails either the
// type-check or this test.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Middleware } from 'openapi-fetch';
import { parse } from 'yaml';
import { describe, expect, test } from 'vitest';
import { AdamApiError, bearer, createAdamApiClient, unwrap, type Schemas } from '../../clients/typescript/client.ts';
import { ADAM_DEFAULTS, adamStep, type AdamState } from '../../src/optim/adam.ts';
import { baseUrl, describeRun, ROOT, run } from './helpers.ts';

interface SpecOperation {
  responses: Record<string, { content?: Record<string, unknown> }>;
}
const spec = parse(readFileSync(join(ROOT, 'openapi.yaml'), 'utf8')) as { paths: Record<string, Record<string, SpecOperation>> };

/** Every answer the client receives, with whatever the spec does not declare about it. */
const seen: { call: string; status: number }[] = [];
const violations: string[] = [];
const contract: Middleware = {
  onResponse({ request, response, schemaPath }) {
    const method = request.method.toLowerCase();
    const call = `${request.method} ${schemaPath}`;
    seen.push({ call, status: response.status });
    const operation = spec.paths[schemaPath]?.[method];
    if (!operation) return void violations.push(`${call}: no such operation in openapi.yaml`);
    const declared = operation.responses[String(response.status)];
    if (!declared) return void violations.push(`${call}: status ${response.status} is not declared (declared: ${Object.keys(operation.responses).join(', ')})`);
    const media = (response.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    const declaredMedia = Object.keys(declared.content ?? {});
    if (response.status === 204 || declaredMedia.length === 0) {
      if (response.headers.get('content-length') && response.headers.get('content-length') !== '0') violations.push(`${call} ${response.status}: a body where none is declared`);
    } else if (!declaredMedia.includes(media)) {
      violations.push(`${call} ${response.status}: content-type ${media || '(none)'} is not one of ${declaredMedia.join(', ')}`);
    }
    return undefined;
  },
};

// Type-level guards, checked by `npm run typecheck`: tensors are typed (not \`any\`), and request
// fields with a default are optional.
// @ts-expect-error a string is not a tensor tree
const notATensor: Schemas['TensorTree'] = 'not a tensor';
// @ts-expect-error nested arrays hold numbers only
const notATensor2: Schemas['Tensor'] = [[1, 'x']];
const tensors: Schemas['TensorTree'][] = [0, [1, 2], [[1, 2], [3, 4]], { 'fc.weight': [[1]], 'fc.bias': [0], nested: { x: 1 } }];
const lrOnly: Schemas['AdamHyperparams'] = { lr: 0.01 };
void [notATensor, notATensor2, tensors, lrOnly];

const api = () => {
  const client = createAdamApiClient(baseUrl());
  client.use(contract);
  return client;
};

describe('TypeScript client generated from openapi.yaml', () => {
  test('service and stateless steps', async () => {
    const client = api();
    expect((await unwrap(client.GET('/healthz'))).status).toBe('ok');
    const info = await unwrap(client.GET('/'));
    expect(info.links.step).toBe('/v1/adam/step');

    const body: Schemas['StepRequest'] = { params: [1, -2, 3], grads: [0.1, -0.2, 0.3], hyperparams: { lr: 0.01 }, dtype: 'float64' };
    const first = await unwrap(client.POST('/v1/adam/step', { body }));
    expect(first.params).toEqual([0.9900000009999999, -1.9900000005, 2.990000000333333]);
    expect(first.state.step).toBe(1);
    const second = await unwrap(client.POST('/v1/adam/step', { body: { ...body, params: first.params!, state: { step: first.state.step, m: first.state.m!, v: first.state.v! } } }));
    expect(second.state.step).toBe(2);

    const { error, response } = await client.POST('/v1/adam/step', { body: { params: [1], grads: [0.1], hyperparams: { lr: -1 } } });
    expect(response.status).toBe(422);
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(error?.type).toBe('urn:adam-api:problem:validation-error');
    expect(error?.errors?.[0]?.field).toBe('hyperparams.lr');

    const schedule = await unwrap(client.POST('/v1/schedules/evaluate', { body: { schedule: { type: 'cosine', lr: 0.1, total_steps: 100 }, steps: [0, 50, 100] } }));
    // torch 1.13's CosineAnnealingLR (recursive) gives 0.05000000000000004 at step 50 of 100.
    expect(schedule).toEqual({ steps: [0, 50, 100], lr: [0.1, 0.05000000000000004, 0] });
    const viaQuery = await unwrap(client.GET('/v1/schedules/{type}', { params: { path: { type: 'cosine' }, query: { lr: '0.1', total_steps: '100', steps: '0,50,100' } } }));
    expect(viaQuery).toEqual(schedule);
  });

  test('a hosted optimizer, its whole life', async () => {
    const client = api();

    // Create.
    const created = await client.POST('/v1/optimizers', { body: { params: { w: [0, 0], b: 0 }, hyperparams: { lr: 0.1 } } });
    expect(created.response.status).toBe(201);
    const opt = created.data!;
    expect(opt.id).toMatch(/^[0-9a-f]{64}$/);
    expect(opt.step).toBe(0);
    expect(opt.shapes).toEqual({ w: [2], b: [] });
    expect(created.response.headers.get('location')).toBe(`/v1/optimizers/${opt.id}`);
    const createdTag = created.response.headers.get('etag')!;
    expect(createdTag).toMatch(/^"[^"]+"$/);
    const path = { id: opt.id };
    const auth = bearer(opt.token);

    // Step with an Idempotency-Key, then the retry: replayed, not applied twice.
    const grads: Schemas['TensorTree'] = { w: [0.5, -0.25], b: 0.1 };
    const step1 = await client.POST('/v1/optimizers/{id}/step', { params: { path, header: { ...auth, 'idempotency-key': 'ts-client-1' } }, body: { grads, loss: 0.75 } });
    expect(step1.response.status).toBe(200);
    expect(step1.data).toMatchObject({ step: 1, lr: 0.1 });
    expect(step1.data?.replayed).toBeFalsy();
    const step1Tag = step1.response.headers.get('etag')!;
    // The step's success answers are 200 (applied) and 202 (a contribution to an accumulated step): this one is a 200.
    const step1Params = step1.data && 'params' in step1.data ? step1.data.params : undefined;
    expect(step1Tag).not.toBe(createdTag);
    const retry = await client.POST('/v1/optimizers/{id}/step', { params: { path, header: { ...auth, 'idempotency-key': 'ts-client-1' } }, body: { grads, loss: 0.75 } });
    expect(retry.data).toEqual({ ...step1.data, replayed: true });
    expect(retry.response.headers.get('idempotent-replayed')).toBe('true');

    // Stale-update guards: expected_step (409) and If-Match (412).
    const stale = await client.POST('/v1/optimizers/{id}/step', { params: { path, header: auth }, body: { grads, expected_step: 0 } });
    expect(stale.response.status).toBe(409);
    expect(stale.error?.status).toBe(409);
    const staleEtag = await client.POST('/v1/optimizers/{id}/step', { params: { path, header: { ...auth, 'if-match': createdTag } }, body: { grads } });
    expect(staleEtag.response.status).toBe(412);

    // Read params, metadata and the full state.
    const params = await unwrap(client.GET('/v1/optimizers/{id}/params', { params: { path, header: auth } }));
    expect(params).toEqual({ step: 1, params: step1Params });
    const meta = await unwrap(client.GET('/v1/optimizers/{id}', { params: { path, header: auth } }));
    expect(meta).toMatchObject({ id: opt.id, step: 1, next_lr: 0.1, dtype: 'float32', size: 3, schedule: null });
    const snapshot = await unwrap(client.GET('/v1/optimizers/{id}/state', { params: { path, header: auth } }));
    expect(snapshot).toMatchObject({ id: opt.id, step: 1, params: step1Params });
    expect(snapshot.m).toBeDefined();
    expect(snapshot.v).toBeDefined();

    // One more step (without params in the answer), then PUT the snapshot back: step 1 again.
    const step2 = await unwrap(client.POST('/v1/optimizers/{id}/step', { params: { path, query: { return: 'none' }, header: { ...auth, 'if-match': step1Tag } }, body: { grads: { w: [1, 1], b: 1 }, loss: 0.5 } }));
    expect(step2.step).toBe(2);
    expect('params' in step2 ? step2.params : undefined).toBeUndefined();
    const restored = await unwrap(
      client.PUT('/v1/optimizers/{id}/state', {
        params: { path, header: auth },
        body: { ...snapshot, params: snapshot.params!, m: snapshot.m!, v: snapshot.v! },
      }),
    );
    expect(restored.step).toBe(1);
    expect((await unwrap(client.GET('/v1/optimizers/{id}/params', { params: { path, header: auth } }))).params).toEqual(step1Params);

    // PATCH hyperparameters, then a schedule.
    const patched = await unwrap(client.PATCH('/v1/optimizers/{id}', { params: { path, header: auth }, body: { hyperparams: { lr: 0.05 } } }));
    expect(patched.hyperparams.lr).toBe(0.05);
    expect(patched.next_lr).toBe(0.05);
    const scheduled = await unwrap(client.PATCH('/v1/optimizers/{id}', { params: { path, header: auth }, body: { schedule: { type: 'step', lr: 0.05, step_size: 1, gamma: 0.5 } } }));
    expect(scheduled.schedule).toMatchObject({ type: 'step' });
    expect(scheduled.next_lr).toBeCloseTo(0.025, 15); // step 1 of StepLR(step_size=1, gamma=0.5) from 0.05

    // History and its chart.
    const history = await unwrap(client.GET('/v1/optimizers/{id}/history', { params: { path, query: { limit: 10 }, header: auth } }));
    expect(history.entries[0]).toMatchObject({ step: 1, lr: 0.1, loss: 0.75 });
    expect(typeof history.kept).toBe('number');
    const plot = await client.GET('/v1/optimizers/{id}/history/plot', { params: { path, header: auth }, parseAs: 'text' });
    expect(plot.response.status).toBe(200);
    expect(plot.data).toMatch(/<svg[\s>]/);

    // Wrong token, then DELETE and 404.
    const denied = await client.GET('/v1/optimizers/{id}/params', { params: { path, header: bearer('not-the-token') } });
    expect(denied.response.status).toBe(401);
    expect(denied.error?.type).toBe('urn:adam-api:problem:unauthorized');
    const deleted = await client.DELETE('/v1/optimizers/{id}', { params: { path, header: auth } });
    expect(deleted.response.status).toBe(204);
    const gone = await client.GET('/v1/optimizers/{id}', { params: { path, header: auth } });
    expect(gone.response.status).toBe(404);
    expect(gone.error?.type).toBe('urn:adam-api:problem:not-found');
    await expect(unwrap(client.GET('/v1/optimizers/{id}/params', { params: { path, header: auth } }))).rejects.toSatisfy(
      (err: unknown) => err instanceof AdamApiError && err.status === 404 && err.problem?.type === 'urn:adam-api:problem:not-found',
    );
  });

  test('examples/typescript/binary.ts: raw and bfloat16 steps equal the reference kernel; a checkpoint restores exactly', async () => {
    const result = await run(process.execPath, [join(ROOT, 'examples', 'typescript', 'binary.ts')], { env: { ADAM_API: baseUrl() }, timeoutMs: 120_000 });
    expect(result.code, describeRun(result)).toBe(0);
    expect(result.stdout).toContain('layout: fc.weight@0+200704, fc.bias@200704+256');
    expect(result.stdout).toMatch(/restored params identical: true/);
    // The same three steps on the pure kernel (itself checked against torch fixtures), bfloat16 rounding included.
    const size = 200_960;
    let params: Float32Array = new Float32Array(size).map((_, i) => Math.sin(i) * 0.05);
    let state: AdamState = { step: 0, m: new Float32Array(size), v: new Float32Array(size), vMax: null };
    const toBf16 = (a: Float32Array) => {
      const w = new Uint32Array(a.buffer);
      return new Float32Array(new Uint32Array(a.length).map((_, i) => ((w[i]! + 0x7fff + ((w[i]! >>> 16) & 1)) >>> 16) << 16).buffer);
    };
    const lines = result.stdout.split('\n').filter((l) => l.startsWith('step '));
    for (let k = 0; k < 3; k++) {
      let grads: Float32Array = new Float32Array(size).map((_, i) => Math.cos(i * (k + 1)) * 0.01);
      if (k === 2) grads = toBf16(grads);
      ({ params, state } = adamStep({ dtype: 'float32', hyperparams: { ...ADAM_DEFAULTS, lr: 1e-3 }, params, grads, state }) as { params: Float32Array; state: AdamState });
      expect(lines[k]).toBe(`step ${k + 1} lr 0.001: params[0] = ${params[0]}, params[${size - 1}] = ${params[size - 1]}`);
    }
  });

  test('examples/typescript/quickstart.ts runs in plain Node (type stripping, no build step)', async () => {
    const result = await run(process.execPath, [join(ROOT, 'examples', 'typescript', 'quickstart.ts')], { env: { ADAM_API: baseUrl() }, timeoutMs: 60_000 });
    expect(result.code, describeRun(result)).toBe(0);
    expect(result.stdout).toMatch(/^stateless: 2 \[ 0\.98/m);
    expect(result.stdout).toMatch(/^hosted: 1 \{/m);
    expect(result.stdout).toContain('error: 422 hyperparams.lr');
  });

  test('every answer above has a status and media type that openapi.yaml declares for its operation', () => {
    expect(seen.length).toBeGreaterThanOrEqual(20); // the middleware did run
    expect(violations, `answers that openapi.yaml does not declare:\n${violations.join('\n')}`).toEqual([]);
  });
});
