// Helpers of the e2e tests: the base URL of the running `wrangler dev`, locating external tools
// (skip when missing on a developer machine, fail when CI is set), and running a command.

import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { inject, type TestContext } from 'vitest';

export const ROOT = join(import.meta.dirname, '..', '..');

/** Base URL of the Worker under test, started by global-setup.ts. */
export const baseUrl = (): string => inject('baseUrl');

/** True when the CI environment variable is set (CI systems set CI=true): missing tools then fail. */
export const IN_CI = (() => {
  const value = (process.env.CI ?? '').trim().toLowerCase();
  return value !== '' && value !== '0' && value !== 'false';
})();

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The first candidate that is an executable file: absolute paths as they are, bare names looked up
 * on PATH.
 */
export function findExecutable(...candidates: string[]): string | undefined {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  for (const candidate of candidates) {
    if (candidate.includes('/')) {
      if (isExecutable(candidate)) return candidate;
      continue;
    }
    for (const dir of dirs) {
      const full = join(dir, candidate);
      if (isExecutable(full)) return full;
    }
  }
  return undefined;
}

/**
 * Returns the tool's path. When it is missing: on CI (CI set) the test fails; elsewhere the test is
 * skipped with a message saying what to install.
 */
export function requireTool(ctx: TestContext, what: string, path: string | undefined, install: string): string {
  if (path) return path;
  const message = `${what} not found; ${install}`;
  if (IN_CI) throw new Error(`${message} (required because CI is set)`);
  console.warn(`[e2e] skipping "${ctx.task.name}": ${message}`);
  return ctx.skip(message);
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (no shell), collecting its output; kills it after timeoutMs. */
export function run(command: string, args: string[], options: { env?: Record<string, string>; timeoutMs?: number; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A readable dump of a command's result for assertion messages. */
export const describeRun = (r: RunResult): string =>
  `exit ${r.code ?? r.signal}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
