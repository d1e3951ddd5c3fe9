// Two Vitest projects, both run by `npm test`:
// - workerd: every unit and HTTP integration test, inside workerd (the Workers runtime) through the
//   Cloudflare plugin;
// - e2e: tests in Node against a real `wrangler dev` that test/e2e/global-setup.ts starts: the curl
//   and Python examples, the generated TypeScript client and the docs page in headless Chromium.

import { cloudflareTest } from '@cloudflare/vitest-plugin';
import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // The Worker logs one JSON line per request (src/lib/observability.ts); thousands of them would
    // bury the test report. test/observability.test.ts checks them by spying on console.log.
    onConsoleLog: (log) => !log.startsWith('{"type":"request"'),
    projects: [
      {
        extends: false,
        plugins: [
          cloudflareTest({
            wrangler: { configPath: './wrangler.toml' },
            remoteBindings: false,
            // A second rate limiter with a small limit, for test/rate-limit.test.ts (which hands it to
            // the Worker as RATE_LIMITER): wrangler.toml's own allows 1000 requests per 10 s.
            miniflare: { ratelimits: { RATE_LIMITER_TEST: { namespace_id: '9001', simple: { limit: 5, period: 10 } } } },
          }),
        ],
        test: {
          name: 'workerd',
          include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, 'test/e2e/**'],
          testTimeout: 60_000,
        },
      },
      {
        extends: false,
        test: {
          name: 'e2e',
          environment: 'node',
          include: ['test/e2e/**/*.test.ts'],
          globalSetup: ['test/e2e/global-setup.ts'],
          testTimeout: 180_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
