// The committed openapi.yaml must equal what the route definitions generate (run `npm run openapi`
// after changing a route or schema), and the running app must serve the same document.

import { describe, expect, it } from 'vitest';
import committed from '../openapi.yaml?raw';
import { createApp, openApiDocument, openApiYaml } from '../src/app.ts';
import { parse as parseYaml } from 'yaml';
import { ContractError, checkContract } from './helpers/contract.ts';
import { call, getJson } from './helpers/http.ts';

describe('openapi.yaml', () => {
  it('is up to date with the code (run `npm run openapi` if this fails)', () => {
    expect(committed).toBe(openApiYaml(createApp()));
  });

  it('is served at /openapi.yaml and /openapi.json', async () => {
    const yaml = await call('GET', '/openapi.yaml');
    expect(yaml.status).toBe(200);
    expect(yaml.headers.get('content-type')).toMatch(/^application\/yaml/);
    expect(new TextDecoder().decode(await yaml.arrayBuffer())).toBe(committed);
    const json = await getJson('/openapi.json');
    expect(json.status).toBe(200);
    expect(json.body).toEqual(JSON.parse(JSON.stringify(openApiDocument(createApp()))));
    expect(json.body.openapi).toBe('3.1.0');
  });

  it('reads the same under YAML 1.1 (PyYAML, SnakeYAML) as under YAML 1.2: 1e-8 would be a string there', () => {
    const doc = JSON.parse(JSON.stringify(openApiDocument(createApp())));
    expect(parseYaml(committed, { version: '1.1' })).toEqual(doc);
    expect(parseYaml(committed)).toEqual(doc);
    // The exponent form YAML 1.1 reads as a float: a `.` in the mantissa and a signed exponent.
    const exponents = committed.match(/:\s-?\d[\d.]*e[+-]?\d+$/gm) ?? [];
    expect(exponents.length).toBeGreaterThan(0);
    for (const e of exponents) expect(e).toMatch(/\d\.\d+e[+-]\d+$/);
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

describe('openapi.yaml completeness', () => {
  const spec = parseYaml(committed) as Record<string, any>;

  it('describes every component, property, parameter and operation', () => {
    const missing: string[] = [];
    const described = (s: any) => s && (s.description || s.$ref || (s.allOf ?? []).some((x: any) => x.description));
    const walk = (s: any, where: string) => {
      if (!s || typeof s !== 'object') return;
      for (const [k, v] of Object.entries<any>(s.properties ?? {})) {
        if (!described(v)) missing.push(`${where}.${k}`);
        walk(v, `${where}.${k}`);
      }
      for (const key of ['items', 'additionalProperties']) if (s[key] && typeof s[key] === 'object') walk(s[key], `${where}[${key}]`);
      for (const key of ['oneOf', 'anyOf', 'allOf']) (s[key] ?? []).forEach((x: any, i: number) => walk(x, `${where}.${key}[${i}]`));
    };
    for (const [name, schema] of Object.entries<any>(spec.components.schemas)) {
      if (!schema.description) missing.push(`components.schemas.${name}`);
      walk(schema, name);
    }
    for (const [path, item] of Object.entries<any>(spec.paths)) {
      for (const [method, op] of Object.entries<any>(item)) {
        if (!op.summary) missing.push(`${method} ${path}: summary`);
        if (!op.operationId) missing.push(`${method} ${path}: operationId`);
        for (const p of op.parameters ?? []) if (!p.description && !p.schema?.description) missing.push(`${method} ${path}: parameter ${p.name}`);
        for (const [status, r] of Object.entries<any>(op.responses)) {
          if (!r.description) missing.push(`${method} ${path} ${status}: description`);
          for (const c of Object.values<any>(r.content ?? {})) if (c.schema && !c.schema.$ref) walk(c.schema, `${method} ${path} ${status}`);
        }
      }
    }
    expect(missing).toEqual([]);
  });

  it('documents the bearer token, Idempotency-Key and problem+json errors', () => {
    expect(spec.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' });
    const step = spec.paths['/v1/optimizers/{id}/step'].post;
    expect(step.security).toEqual([{ bearerAuth: [] }]);
    expect(step.parameters.map((p: any) => p.name)).toEqual(expect.arrayContaining(['idempotency-key', 'if-match', 'id', 'return']));
    for (const [path, item] of Object.entries<any>(spec.paths)) {
      for (const [method, op] of Object.entries<any>(item)) {
        for (const [status, r] of Object.entries<any>(op.responses)) {
          if (Number(status) >= 400) expect(Object.keys(r.content ?? {}), `${method} ${path} ${status}`).toEqual(['application/problem+json']);
        }
      }
    }
  });
});

describe('the contract check itself', () => {
  const json = (v: unknown) => JSON.stringify(v);
  const headers = (type: string) => new Headers({ 'content-type': type });

  it('accepts a documented response and rejects undocumented statuses, fields and media types', () => {
    const url = 'http://x.test/healthz';
    expect(() => checkContract('GET', url, 200, headers('application/json'), json({ status: 'ok' }))).not.toThrow();
    expect(() => checkContract('GET', url, 200, headers('application/json'), json({ status: 'ok', extra: 1 }))).toThrow(ContractError);
    expect(() => checkContract('GET', url, 201, headers('application/json'), json({ status: 'ok' }))).toThrow(ContractError);
    expect(() => checkContract('GET', url, 200, headers('text/plain'), 'ok')).toThrow(ContractError);
    expect(() => checkContract('GET', 'http://x.test/nowhere', 200, headers('application/json'), '{}')).toThrow(ContractError);
    const problem = { type: 'urn:adam-api:problem:not-found', title: 'Not found', status: 404, detail: 'x' };
    expect(() => checkContract('GET', 'http://x.test/nowhere', 404, headers('application/problem+json'), json(problem))).not.toThrow();
    expect(() => checkContract('POST', 'http://x.test/v1/adam/step', 422, headers('application/problem+json'), json({ ...problem, status: 'x' }))).toThrow(ContractError);
  });
});
