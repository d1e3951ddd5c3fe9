// The docs page and its assets come from the Worker itself: no CDN, no other host.

import { describe, expect, it } from 'vitest';
import { call } from './helpers/http.ts';

describe('GET /docs', () => {
  it('serves a Swagger UI page whose every resource is local', async () => {
    const res = await call('GET', '/docs');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("script-src 'self'");
    const html = await res.text();
    const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(refs.length).toBeGreaterThanOrEqual(3);
    for (const ref of refs) expect(ref, ref).toMatch(/^(\/|data:)/);
    for (const ref of refs.filter((r) => r.startsWith('/'))) {
      const asset = await call('GET', ref);
      expect(asset.status, ref).toBe(200);
      expect(asset.headers.get('content-type'), ref).toMatch(/^text\/(javascript|css)/);
      expect((await asset.text()).length, ref).toBeGreaterThan(100);
    }
  });

  it('points Swagger UI at this server\'s /openapi.json', async () => {
    const init = await (await call('GET', '/docs/assets/init.js')).text();
    expect(init).toContain("fetch('/openapi.json')");
    expect(init).toContain('window.location.origin');
  });

  it('rejects unknown assets', async () => {
    const res = await call('GET', '/docs/assets/evil.js');
    expect(res.status).toBe(422);
  });

  it('is linked from the service index', async () => {
    const index = await (await call('GET', '/')).json<{ links: Record<string, string> }>();
    expect(index.links.docs).toBe('/docs');
  });
});
