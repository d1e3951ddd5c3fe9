// Every stateless step's documented example (what the docs page's "Try it out" sends) is a valid
// step: POSTed as it stands, it answers 200.

import { describe, expect, it } from 'vitest';
import { getJson, postJson } from './helpers/http.ts';

describe('the OpenAPI examples of the stateless steps', () => {
  it('each answers 200', async () => {
    const doc = (await getJson('/openapi.json')).body as {
      paths: Record<string, { post?: { requestBody?: { content: Record<string, { schema: { $ref?: string } }> } } }>;
      components: { schemas: Record<string, { example?: unknown }> };
    };
    const steps = Object.entries(doc.paths).filter(([path, item]) => /^\/v1\/[a-z_]+\/step$/.test(path) && item.post);
    expect(steps.length).toBeGreaterThanOrEqual(12);
    for (const [path, item] of steps) {
      const ref = item.post!.requestBody!.content['application/json']!.schema.$ref!;
      const example = doc.components.schemas[ref.split('/').at(-1)!]!.example;
      expect(example, `${path}: no example`).toBeDefined();
      const r = await postJson(path, example);
      expect(r.status, `${path}: ${JSON.stringify(r.body)}`).toBe(200);
    }
  });
});
