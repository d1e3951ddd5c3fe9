// Opens GET /docs (Swagger UI served by the Worker) in headless Chromium against wrangler dev:
// nothing may be fetched from another host, the operations are listed, and "Try it out" on
// POST /v1/adam/step with the example body gets a 200 shown in the page. Saves screenshots to
// test/e2e/screenshots/ (gitignored).

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { describe, expect, test } from 'vitest';
import { baseUrl, findExecutable, requireTool } from './helpers.ts';

const SCREENSHOTS = join(import.meta.dirname, 'screenshots');

// Flags from the machine notes: headless, no sandbox (root in containers), and no background
// networking, which a closed network refuses many times over.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

async function withBrowser<T>(executablePath: string, fn: (context: BrowserContext) => Promise<T>): Promise<T> {
  const userDataDir = mkdtempSync(join(tmpdir(), 'adam-api-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
    timeout: 60_000,
  });
  try {
    return await fn(context);
  } finally {
    await context.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

describe('GET /docs in headless Chromium', () => {
  test('lists the operations, runs "Try it out" on POST /v1/adam/step, and loads nothing from another host', async (ctx) => {
    const executablePath = requireTool(
      ctx,
      'Chromium',
      findExecutable(process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', '/usr/bin/chromium', 'chromium', 'chromium-browser'),
      "install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH",
    );
    const base = baseUrl();
    const origin = new URL(base).origin;

    const page0 = await fetch(`${base}/docs`);
    expect(page0.status, 'GET /docs').toBe(200);
    expect(page0.headers.get('content-type')).toMatch(/^text\/html/);

    await withBrowser(executablePath, async (context) => {
      const foreign: string[] = [];
      const local: string[] = [];
      // Every request of the page goes through here: same-origin ones continue, others are recorded and refused.
      await context.route('**/*', async (route) => {
        const url = route.request().url();
        if (new URL(url).origin === origin) {
          local.push(url);
          await route.continue();
        } else {
          foreign.push(url);
          await route.abort('blockedbyclient');
        }
      });
      const problems: string[] = [];
      const page = context.pages()[0] ?? (await context.newPage());
      page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
      page.on('console', (msg) => {
        if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
      });

      const response = await page.goto(`${base}/docs`, { waitUntil: 'load' });
      expect(response?.status()).toBe(200);

      // The operations are listed (Swagger UI keeps the raw path in data-path).
      await page.locator('.opblock').first().waitFor({ state: 'visible', timeout: 30_000 });
      const listed = await page.locator('.opblock-summary-path').evaluateAll((els) => els.map((el) => el.getAttribute('data-path') ?? el.textContent ?? ''));
      for (const path of ['/v1/adam/step', '/v1/optimizers', '/v1/optimizers/{id}', '/v1/optimizers/{id}/step', '/v1/optimizers/{id}/params', '/v1/optimizers/{id}/state', '/v1/schedules/evaluate']) {
        expect(listed, `operation ${path} listed`).toContain(path);
      }
      await expect.poll(() => page.locator('.opblock-tag').allTextContents()).toEqual(expect.arrayContaining([expect.stringContaining('Hosted optimizers')]));

      // Expand POST /v1/adam/step, "Try it out", execute the example body.
      const op = page.locator('.opblock.opblock-post').filter({ has: page.locator('.opblock-summary-path[data-path="/v1/adam/step"]') });
      await expect.poll(() => op.count()).toBe(1);
      await op.locator('.opblock-summary').first().click();
      await op.locator('button.try-out__btn').click();
      const bodyEditor = op.locator('textarea.body-param__text');
      await bodyEditor.waitFor({ state: 'visible' });
      const example = JSON.parse(await bodyEditor.inputValue());
      expect(example).toMatchObject({ params: expect.anything(), grads: expect.anything() });
      await op.locator('button.execute').click();

      const status = op.locator('.live-responses-table .response .response-col_status').first();
      await status.waitFor({ state: 'visible', timeout: 30_000 });
      expect((await status.textContent())?.trim()).toBe('200');
      const shown = (await op.locator('.live-responses-table .response .response-col_description').first().textContent()) ?? '';
      expect(shown).toContain('"params"');
      expect(shown).toContain('"state"');
      // The request went to this server, not to the spec's localhost:8787.
      expect(local.some((u) => u.startsWith(`${origin}/v1/adam/step`))).toBe(true);

      mkdirSync(SCREENSHOTS, { recursive: true });
      await op.locator('.live-responses-table').first().scrollIntoViewIfNeeded();
      await page.screenshot({ path: join(SCREENSHOTS, 'docs-try-it-out.png') });
      await page.evaluate(() => window.scrollTo(0, 0));
      await page.screenshot({ path: join(SCREENSHOTS, 'docs.png') });

      expect(foreign, `requests to other hosts: ${foreign.join(', ')}`).toEqual([]);
      expect(local.every((u) => u.startsWith(origin))).toBe(true);
      expect(problems, problems.join('\n')).toEqual([]);
    });
  });
});
