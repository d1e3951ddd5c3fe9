// Service routes: index with links, health check.

import { describe, expect, it } from 'vitest';
import { call, getJson } from './helpers/http.ts';

describe('service routes', () => {
  it('GET / describes the service and links to its resources', async () => {
    const r = await getJson('/');
    expect(r.status).toBe(200);
    expect(r.body.name).toBe('adam-api');
    // The Worker entry registers the WebAssembly kernel, so every HTTP test runs on it.
    expect(r.body.kernel).toBe('wasm-simd128');
    expect(r.body.links.step).toBe('/v1/adam/step');
    expect(r.body.links.openapi_yaml).toBe('/openapi.yaml');
    // Every GET link resolves (the step link is POST-only and answers GET with 405).
    for (const link of Object.values(r.body.links) as string[]) {
      const res = await call('GET', link);
      await res.arrayBuffer();
      // Without API_KEYS optimizers belong to no key, so their listing is a 403 (test/key-registry.test.ts).
      expect(link === '/v1/optimizers' ? [403] : [200, 405], link).toContain(res.status);
    }
  });

  it('GET /healthz', async () => {
    const r = await getJson('/healthz');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ status: 'ok' });
  });
});
