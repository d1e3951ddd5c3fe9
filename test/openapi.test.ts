// The committed openapi.yaml must equal what the route definitions generate (run `npm run openapi`
// after changing a route or schema), and the running app must serve the same document.

import { describe, expect, it } from 'vitest';
import committed from '../openapi.yaml?raw';
import { createApp, openApiDocument, openApiYaml } from '../src/app.ts';
import { call, getJson } from './helpers/http.ts';

describe('openapi.yaml', () => {
  it('is up to date with the code (run `npm run openapi` if this fails)', () => {
    expect(committed).toBe(openApiYaml(createApp()));
  });

  it('is served at /openapi.yaml and /openapi.json', async () => {
    const yaml = await call('GET', '/openapi.yaml');
    expect(yaml.status).toBe(200);
    expect(yaml.headers.get('content-type')).toMatch(/^application\/yaml/);
    expect(await yaml.text()).toBe(committed);
    const json = await getJson('/openapi.json');
    expect(json.status).toBe(200);
    expect(json.body).toEqual(JSON.parse(JSON.stringify(openApiDocument(createApp()))));
    expect(json.body.openapi).toBe('3.1.0');
  });

  it('documents every route the app serves', () => {
    const app = createApp();
    const doc = openApiDocument(app);
    const documented = new Set(
      Object.entries(doc.paths ?? {}).flatMap(([path, item]) =>
        Object.keys(item as object).map((m) => `${m.toUpperCase()} ${path.replace(/\{([^}]+)\}/g, ':$1')}`),
      ),
    );
    const served = app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${r.path}`);
    for (const route of served) expect(documented, route).toContain(route);
  });
});
