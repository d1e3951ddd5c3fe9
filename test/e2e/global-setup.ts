// Global setup of the e2e project: starts `wrangler dev` (the real Worker in local workerd) on a
// free loopback port with a throwaway --persist-to directory, waits for /healthz, hands the base URL
// to the tests (inject('baseUrl')) and stops wrangler when the run ends.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Base URL of the `wrangler dev` started for this run, e.g. `http://127.0.0.1:41234`. */
    baseUrl: string;
  }
}

const ROOT = join(import.meta.dirname, '..', '..');
const WRANGLER = join(ROOT, 'node_modules', 'wrangler', 'bin', 'wrangler.js');
const READY_TIMEOUT_MS = 90_000;

/** A TCP port that was free a moment ago (the OS picks it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitForHealth(baseUrl: string, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`wrangler dev exited (${child.exitCode ?? child.signalCode}) before /healthz answered:\n${output()}`);
    }
    try {
      const res = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await sleep(250);
  }
  throw new Error(`wrangler dev did not answer ${baseUrl}/healthz within ${READY_TIMEOUT_MS / 1000} s:\n${output()}`);
}

/**
 * Stops wrangler and everything it started (workerd, esbuild's service) by signalling their process
 * group. SIGTERM to wrangler alone made it exit while esbuild's Go service still waited on it, and
 * esbuild then printed a 60-line "all goroutines are asleep - deadlock!" dump; each process exiting
 * on its own signal leaves nothing to report. SIGKILL after 10 s if anything hangs.
 */
function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const group = (signal: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, signal);
      } catch {
        // the group is gone already
      }
    };
    const killTimer = setTimeout(() => group('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(killTimer);
      resolve();
    });
    group('SIGTERM');
  });
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const port = await freePort();
  const inspectorPort = await freePort();
  const persistDir = mkdtempSync(join(tmpdir(), 'adam-api-e2e-'));
  const baseUrl = `http://127.0.0.1:${port}`;

  let log = '';
  const child = spawn(
    process.execPath,
    [
      WRANGLER,
      'dev',
      '--ip', '127.0.0.1',
      '--port', String(port),
      '--inspector-port', String(inspectorPort),
      '--persist-to', persistDir,
      '--show-interactive-dev-session=false',
      '--log-level', 'warn',
    ],
    {
      cwd: ROOT,
      env: { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_SEND_METRICS: 'false', WRANGLER_HIDE_BANNER: 'true' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group, so stop() reaches workerd and esbuild too
    },
  );
  // If this process exits without the teardown (an interrupted run), take the group down with it.
  const killGroup = () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  process.once('exit', killGroup);
  // Output is kept until the teardown starts: what wrangler prints while being stopped is noise.
  let stopping = false;
  const collect = (chunk: Buffer) => {
    if (!stopping) log = (log + chunk.toString()).slice(-20_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);

  const cleanup = async () => {
    stopping = true;
    await stop(child);
    process.off('exit', killGroup);
    rmSync(persistDir, { recursive: true, force: true });
  };

  try {
    await waitForHealth(baseUrl, child, () => log);
  } catch (err) {
    await cleanup();
    throw err;
  }

  project.provide('baseUrl', baseUrl);
  return async () => {
    await cleanup();
    if (log.trim()) console.log(`[e2e] wrangler dev output:\n${log}`);
  };
}
