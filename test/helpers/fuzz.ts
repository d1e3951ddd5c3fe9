// Running fast-check properties against the Worker in workerd, and what every answer must be.
//
// Seeds: every property runs with the seed FUZZ_SEED (default DEFAULT_SEED, so CI runs are
// reproducible) and FUZZ_SCALE times its default number of cases (e.g. FUZZ_SCALE=10 for a longer
// hunt, 0.1 for a smoke run). A failure throws fast-check's report (seed, path, shrunk
// counterexample, the error) plus the command that replays exactly that case:
//   FUZZ_SEED=… FUZZ_PATH=… npx vitest run --project workerd test/fuzz/<file> -t "<test>"
// The variables reach workerd through vitest's `provide` (vitest.config.ts).

import fc from 'fast-check';
import { exports } from 'cloudflare:workers';
import { expect, inject } from 'vitest';
import { checkContract } from './contract.ts';
import type { Tree } from './arbitraries.ts';
import { BASE } from './http.ts';

export const DEFAULT_SEED = 20261202;

interface FuzzConfig {
  seed: string | null;
  scale: string | null;
  path: string | null;
}

const config = inject('fuzz' as never) as FuzzConfig | undefined;

function numberVar(name: string, text: string | null | undefined, fallback: number): number {
  if (text === null || text === undefined || text === '') return fallback;
  const n = Number(text);
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number, got ${JSON.stringify(text)}`);
  return n;
}

export const SEED = numberVar('FUZZ_SEED', config?.seed, DEFAULT_SEED) | 0;
export const SCALE = numberVar('FUZZ_SCALE', config?.scale, 1);
const REPLAY_PATH = config?.path || undefined;

/** Longest a single request may take, whatever it holds (the largest fuzzed bodies take ~0.5 s here). */
export const REQUEST_MS = 5_000;
/** Largest problem+json body a rejection may have (a problem lists at most 20 short errors). */
export const PROBLEM_BYTES = 8 * 1024;
/** Vitest timeout of one property: its runs, plus shrinking should one fail. */
export const PROPERTY_TIMEOUT_MS = 600_000;

/** Cases run so far in this file, reported by `reportCases`. */
let casesRun = 0;

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max / 2)}\n… (${text.length - max} characters cut) …\n${text.slice(-max / 2)}`;
}

/**
 * Checks `property` on `runs` × FUZZ_SCALE cases with the run's seed; on failure, throws the report
 * and the command that replays the failing case.
 */
export async function fuzz<Ts>(property: fc.IAsyncPropertyWithHooks<Ts>, runs: number): Promise<void> {
  const numRuns = Math.max(1, Math.round(runs * SCALE));
  const details = await fc.check(property, { seed: SEED, numRuns, includeErrorInReport: true, ...(REPLAY_PATH ? { path: REPLAY_PATH } : {}) });
  casesRun += details.numRuns;
  if (!details.failed) return;
  const { testPath, currentTestName } = expect.getState();
  const file = (testPath ?? '').replace(/^.*?(test\/)/, '$1');
  const test = (currentTestName ?? '').split(' > ').at(-1)!.replaceAll('"', '\\"');
  const replay = `FUZZ_SEED=${details.seed} FUZZ_PATH=${details.counterexamplePath} npx vitest run --project workerd ${file} -t "${test}"`;
  const report = fc.defaultReportMessage(details) ?? 'property failed';
  // Well-formed: a lone surrogate from a tensor name would break vitest's WebSocket to workerd (invalid UTF-8).
  throw new Error(`${clip(report, 6000)}\n\nseed ${details.seed}, path ${details.counterexamplePath}; replay with:\n  ${replay}`.toWellFormed());
}

/** One line per file for the CI log: how many cases ran, with which seed. */
export function reportCases(file: string): void {
  console.log(`fuzz ${file}: ${casesRun} cases, FUZZ_SEED=${SEED}${SCALE === 1 ? '' : ` FUZZ_SCALE=${SCALE}`}`);
}

// ---------------------------------------------------------------------------------------------
// requests
// ---------------------------------------------------------------------------------------------

/** A request as generated: every header and body byte is the generator's (nothing is added). */
export interface Req {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
}

export interface Answer {
  status: number;
  headers: Headers;
  /** Media type without parameters, lower-cased. */
  type: string;
  bytes: Uint8Array;
  text: string;
  ms: number;
}

const utf8 = new TextEncoder();

/** Bytes of a body (strings as UTF-8). */
export const bodyBytes = (body: Uint8Array | string | undefined) => (typeof body === 'string' ? utf8.encode(body) : body);

/** Sends a request through the Worker, times it, and checks the answer against openapi.yaml. */
export async function send(req: Req): Promise<Answer> {
  const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : bodyBytes(req.body);
  const request = new Request(BASE + req.path, { method: req.method, headers: req.headers ?? {}, ...(body === undefined ? {} : { body }) });
  const started = performance.now();
  const res = await exports.default.fetch(request);
  const bytes = new Uint8Array(await res.arrayBuffer());
  const ms = performance.now() - started;
  const text = new TextDecoder().decode(bytes);
  // HEAD answers carry no body; callers compare them with the GET answer instead.
  if (request.method !== 'HEAD') checkContract(request.method, request.url, res.status, res.headers, bytes.length === 0 ? '' : text);
  const type = (res.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  return { status: res.status, headers: res.headers, type, bytes, text, ms };
}

const show = (req: Req, a: Answer) => `${req.method} ${req.path.slice(0, 200)} → ${a.status} ${a.text.slice(0, 300)}`;

/**
 * What every answer must be: a status the operation documents (checked by `send`), never a 5xx,
 * within REQUEST_MS, and a rejection is a small problem+json whose `status` is the HTTP status.
 */
export function expectSane(req: Req, a: Answer): void {
  expect(a.status, show(req, a)).toBeLessThan(500);
  expect(a.ms, `${show(req, a)}: took ${a.ms.toFixed(0)} ms`).toBeLessThan(REQUEST_MS);
  if (req.method === 'HEAD') {
    expect(a.bytes.length, show(req, a)).toBe(0);
    return;
  }
  if (a.status >= 400) {
    expect(a.type, show(req, a)).toBe('application/problem+json');
    expect(a.bytes.length, show(req, a)).toBeLessThan(PROBLEM_BYTES);
    const problem = JSON.parse(a.text) as { status: number; type: string; detail: string };
    expect(problem.status, show(req, a)).toBe(a.status);
    expect(problem.type, show(req, a)).toMatch(/^urn:adam-api:problem:/);
  }
}

/** Sends and checks sanity; returns the answer for the property's own checks. */
export async function sendSane(req: Req): Promise<Answer> {
  const a = await send(req);
  expectSane(req, a);
  return a;
}

/** Whether two byte arrays are equal. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A short description of where two equal-length byte arrays differ. */
export function firstDifference(a: Uint8Array, b: Uint8Array): string {
  if (a.length !== b.length) return `lengths ${a.length} and ${b.length}`;
  const i = a.findIndex((x, k) => x !== b[k]);
  return i < 0 ? 'equal' : `byte ${i}: ${a[i]} vs ${b[i]}`;
}

// ---------------------------------------------------------------------------------------------
// hosted state
// ---------------------------------------------------------------------------------------------

/** Everything a hosted optimizer holds, as bytes: its JSON snapshot (GET /state) and raw params (GET /params). */
export interface HostedBytes {
  state: string;
  params: Uint8Array;
}

export async function hostedBytes(opt: { id: string; token: string }): Promise<HostedBytes> {
  const auth = { authorization: `Bearer ${opt.token}` };
  const state = await send({ method: 'GET', path: `/v1/optimizers/${opt.id}/state`, headers: auth });
  const params = await send({ method: 'GET', path: `/v1/optimizers/${opt.id}/params`, headers: { ...auth, accept: 'application/octet-stream' } });
  expect(state.status, state.text.slice(0, 200)).toBe(200);
  expect(params.status, params.text.slice(0, 200)).toBe(200);
  return { state: state.text, params: params.bytes };
}

/** The optimizer holds exactly `before`, bit for bit. */
export async function expectUnchanged(opt: { id: string; token: string }, before: HostedBytes, what: string): Promise<void> {
  const after = await hostedBytes(opt);
  if (after.state !== before.state) expect.fail(`${what} changed GET /state:\n  before ${before.state.slice(0, 400)}\n  after  ${after.state.slice(0, 400)}`);
  if (!sameBytes(after.params, before.params)) expect.fail(`${what} changed GET /params: ${firstDifference(after.params, before.params)}`);
}

// ---------------------------------------------------------------------------------------------
// comparing answers with a reference
// ---------------------------------------------------------------------------------------------

const own = (o: unknown, key: string): unknown => (o !== null && typeof o === 'object' && Object.hasOwn(o, key) ? (o as Record<string, unknown>)[key] : undefined);

/** The elements of a JSON answer's tree, read by the request's structure (names and shapes must match exactly). */
export function readTree(answer: unknown, like: Tree, where: string): number[] {
  const out: number[] = [];
  const walk = (a: unknown, t: Tree, at: string) => {
    if (t.kind === 'named') {
      expect(a !== null && typeof a === 'object' && !Array.isArray(a), `${at} is an object`).toBe(true);
      expect(Object.keys(a as object).sort(), `${at}: names`).toEqual(t.entries.map(([n]) => n).sort());
      for (const [name, child] of t.entries) walk(own(a, name), child, `${at}[${JSON.stringify(name)}]`);
      return;
    }
    const rec = (x: unknown, d: number, p: string) => {
      if (d === t.shape.length) {
        expect(typeof x, `${p} is a number`).toBe('number');
        out.push(x as number);
        return;
      }
      expect(Array.isArray(x) && x.length === t.shape[d], `${p} has length ${t.shape[d]}`).toBe(true);
      (x as unknown[]).forEach((y, i) => rec(y, d + 1, `${p}[${i}]`));
    };
    rec(a, 0, at);
  };
  walk(answer, like, where);
  return out;
}

export function expectBits(actual: ArrayLike<number>, expected: ArrayLike<number>, where: string): void {
  expect(actual.length, `${where}: length`).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual[i], expected[i])) expect.fail(`${where}[${i}]: got ${actual[i]}, the reference is ${expected[i]}`);
  }
}
