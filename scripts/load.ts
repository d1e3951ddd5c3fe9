// `npm run load`: load with faults. 64 clients send hosted and stateless Adam steps for 30 s to a
// `wrangler dev` on loopback; hosted steps carry an Idempotency-Key and every failed attempt
// (connection refused or reset, 5xx, or a client timeout: the first attempt of every 10th hosted
// step gives up after a few ms, often after the server has applied it) is retried with the same
// key. 10 s in, the server's whole
// process group (wrangler, workerd, esbuild) is SIGKILLed and started again on the same
// --persist-to directory. Afterwards, each hosted optimizer must have applied every accepted key
// exactly once: its step count equals its number of distinct accepted keys, its history holds each
// accepted step once (every step's `loss` carries a unique id, so the history also gives the order
// the object applied them), and its params equal, bit for bit, the accepted gradients replayed in
// that order through the pure kernel (src/optim/adam.ts) in this process. Stateless chains are
// replayed the same way. Throughput, latency and error counts go into BENCHMARKS.md between
// <!-- load:begin --> and <!-- load:end -->. Bounded: 30 s of load, at most 90 s more to drain
// retries, 6 minutes in all; not part of `npm test`.
//
// `npm run load -- --shards N` spreads each hosted optimizer over N shard objects (a coordinator and N
// shards, docs/scale-out.md), so the SIGKILL lands inside the two-phase step; its section goes
// between <!-- load-sharded:begin --> and <!-- load-sharded:end -->.
//
// `npm run load -- --no-idempotency-key` is the negative control: the same run without keys, where
// a retried step whose answer was lost in the crash is applied twice, which the verification must
// report (it exits 1 and leaves BENCHMARKS.md alone).

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADAM_DEFAULTS, adamStep, initAdamState, type AdamHyperparams, type AdamState } from '../src/optim/adam.ts';

const ROOT = join(import.meta.dirname, '..');
const WRANGLER = join(ROOT, 'node_modules', 'wrangler', 'bin', 'wrangler.js');
const CLIENTS = 64; // even: hosted, odd: stateless
const OPTIMIZERS = 16; // two hosted clients share each optimizer, so the object orders their steps
const ELEMENTS = 256;
const LOAD_MS = 30_000;
const KILL_AT_MS = 10_000;
const DRAIN_MS = 90_000;
const HARD_LIMIT_MS = 6 * 60_000;
const ATTEMPT_TIMEOUT_MS = 10_000;
const MAX_ATTEMPTS = 500; // per step; with backoff capped at 1 s this outlasts the drain window
/** Every this many hosted steps, the first attempt is abandoned after SHORT_TIMEOUT_MS (an impatient client). */
const IMPATIENT_EVERY = 10;
const SHORT_TIMEOUT_MS = [2, 30] as const;
const WITH_KEYS = !process.argv.includes('--no-idempotency-key');
const SHARDS = process.argv.includes('--shards') ? Number(process.argv[process.argv.indexOf('--shards') + 1]) : 0;
if (process.argv.includes('--shards') && !(Number.isInteger(SHARDS) && SHARDS >= 2)) throw new Error('--shards takes a shard count of at least 2');
const MARK = SHARDS ? 'load-sharded' : 'load';
const HYPERPARAMS: AdamHyperparams = { ...ADAM_DEFAULTS, lr: 0.01, weight_decay: 0.01, decoupled_weight_decay: true, amsgrad: true };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hardStop = setTimeout(() => {
  console.error(`load: still running after ${HARD_LIMIT_MS / 1000} s; giving up`);
  process.exit(2);
}, HARD_LIMIT_MS);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// the server: wrangler dev in its own process group, so one signal reaches every process
// ---------------------------------------------------------------------------------------------

const port = await freePort();
const inspectorPort = await freePort();
const BASE = `http://127.0.0.1:${port}`;
const persistDir = mkdtempSync(join(tmpdir(), 'adam-api-load-'));
// The servers write straight into this file (not through this process), so nothing is lost when either side dies.
const serverLogPath = join(persistDir, 'wrangler.log');
const serverLog = openSync(serverLogPath, 'a');

function startServer(): ChildProcess {
  const child = spawn(
    process.execPath,
    [WRANGLER, 'dev', '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', String(inspectorPort), '--persist-to', join(persistDir, 'state'), '--show-interactive-dev-session=false', '--log-level', 'warn'],
    {
      cwd: ROOT,
      env: { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_SEND_METRICS: 'false', WRANGLER_HIDE_BANNER: 'true' },
      stdio: ['ignore', serverLog, serverLog],
      detached: true,
    },
  );
  return child;
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    try {
      process.kill(-child.pid!, signal);
    } catch {
      resolve();
    }
  });
}

async function waitHealthy(deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`${BASE}/healthz`, { signal: AbortSignal.timeout(2_000) })).ok) return;
    } catch {
      // not up yet
    }
    await sleep(100);
  }
  throw new Error(`wrangler dev did not answer ${BASE}/healthz; its output (${serverLogPath}) ends:\n${readFileSync(serverLogPath, 'utf8').slice(-3000)}`);
}

let server = startServer();
process.on('exit', () => {
  try {
    process.kill(-server.pid!, 'SIGKILL');
  } catch {
    // gone
  }
});
const bootStart = Date.now();
await waitHealthy(Date.now() + 120_000);
const firstBootMs = Date.now() - bootStart;

// ---------------------------------------------------------------------------------------------
// clients
// ---------------------------------------------------------------------------------------------

interface Attempt {
  kind: 'hosted' | 'stateless';
  ms: number;
  outcome: 'ok' | 'replayed' | 'network' | 'timeout' | '5xx' | '4xx';
  at: number;
}
const attempts: Attempt[] = [];
const unresolved: string[] = [];

/** A 4xx: the request itself is wrong, so retrying cannot help (a bug in this script or the server). */
class Rejected extends Error {}

/** POSTs until a 2xx (retrying connection errors and 5xx with the same body and headers), or gives up at the deadline. */
async function postWithRetries(kind: Attempt['kind'], path: string, body: string, headers: Record<string, string>, deadline: number, firstTimeoutMs = ATTEMPT_TIMEOUT_MS): Promise<any | null> {
  let backoff = 25;
  for (let attempt = 1; attempt <= MAX_ATTEMPTS && Date.now() < deadline; attempt++) {
    const t0 = performance.now();
    const timeoutMs = attempt === 1 ? firstTimeoutMs : ATTEMPT_TIMEOUT_MS;
    try {
      const res = await fetch(BASE + path, {
        method: 'POST',
        body,
        headers: { 'content-type': 'application/json', ...headers },
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.text();
      const ms = performance.now() - t0;
      if (res.ok) {
        const json = JSON.parse(text);
        attempts.push({ kind, ms, outcome: json.replayed ? 'replayed' : 'ok', at: Date.now() });
        return json;
      }
      attempts.push({ kind, ms, outcome: res.status >= 500 ? '5xx' : '4xx', at: Date.now() });
      if (res.status < 500) throw new Rejected(`${path}: HTTP ${res.status} ${text.slice(0, 300)}`);
    } catch (err) {
      if (err instanceof Rejected) throw err;
      const timedOut = err instanceof Error && (err.name === 'TimeoutError' || (err.cause as Error | undefined)?.name === 'TimeoutError');
      attempts.push({ kind, ms: performance.now() - t0, outcome: timedOut ? 'timeout' : 'network', at: Date.now() });
    }
    await sleep(backoff);
    backoff = Math.min(1_000, backoff * 2);
  }
  return null;
}

/** Deterministic gradients for client c's step n. */
function gradient(c: number, n: number): number[] {
  return Array.from({ length: ELEMENTS }, (_, i) => Math.sin(c * 7.1 + n * 0.37 + i * 0.013) * (1 + (i % 5)));
}
const initialParams = (seed: number) => Array.from({ length: ELEMENTS }, (_, i) => Math.cos(seed + i * 0.1));

interface HostedOptimizer {
  id: string;
  token: string;
  params0: number[];
  /** Accepted steps: loss id → gradient. */
  accepted: Map<number, number[]>;
}

const optimizers: HostedOptimizer[] = [];
for (let k = 0; k < OPTIMIZERS; k++) {
  const params0 = initialParams(k);
  const res = await fetch(`${BASE}/v1/optimizers`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ params: params0, hyperparams: HYPERPARAMS, ...(SHARDS ? { shards: SHARDS } : {}) }),
  });
  if (res.status !== 201) throw new Error(`create: HTTP ${res.status} ${await res.text()}`);
  const created = (await res.json()) as { id: string; token: string };
  optimizers.push({ id: created.id, token: created.token, params0, accepted: new Map() });
}

interface StatelessChain {
  params0: number[];
  grads: number[][];
  last: { params: number[]; state: unknown } | null;
}
const chains: StatelessChain[] = [];

const loadAverageBefore = loadavg()[0]!;
const loadStart = Date.now();
const loadEnd = loadStart + LOAD_MS;
const drainDeadline = loadEnd + DRAIN_MS;

async function hostedClient(c: number): Promise<number> {
  const opt = optimizers[(c / 2) % OPTIMIZERS]!;
  let n = 0;
  while (Date.now() < loadEnd) {
    const id = c * 1_000_000 + n; // unique per optimizer: the step's identity in the history
    const grads = gradient(c, n);
    const headers: Record<string, string> = { authorization: `Bearer ${opt.token}` };
    if (WITH_KEYS) headers['idempotency-key'] = `c${c}-${n}`;
    const impatient = n % IMPATIENT_EVERY === IMPATIENT_EVERY - 1;
    const firstTimeout = impatient ? SHORT_TIMEOUT_MS[0] + Math.floor(Math.random() * (SHORT_TIMEOUT_MS[1] - SHORT_TIMEOUT_MS[0])) : ATTEMPT_TIMEOUT_MS;
    const json = await postWithRetries('hosted', `/v1/optimizers/${opt.id}/step?return=none`, JSON.stringify({ grads, loss: id }), headers, drainDeadline, firstTimeout);
    if (json === null) unresolved.push(`hosted c${c}-${n}`);
    else opt.accepted.set(id, grads);
    n++;
  }
  return n;
}

async function statelessClient(c: number): Promise<number> {
  const chain: StatelessChain = { params0: initialParams(100 + c), grads: [], last: null };
  chains.push(chain);
  let n = 0;
  while (Date.now() < loadEnd) {
    const grads = gradient(c, n);
    const body = { params: chain.last?.params ?? chain.params0, grads, hyperparams: HYPERPARAMS, ...(chain.last ? { state: chain.last.state } : {}) };
    // A stateless step is idempotent by construction: a retry sends the same input and gets the same output.
    const json = await postWithRetries('stateless', '/v1/adam/step', JSON.stringify(body), {}, drainDeadline);
    if (json === null) {
      unresolved.push(`stateless c${c}-${n}`);
      break; // the chain cannot continue without this step's result
    }
    chain.grads.push(grads);
    chain.last = { params: json.params, state: json.state };
    n++;
  }
  return n;
}

// The fault: at KILL_AT_MS the whole server process group is killed, then started again.
const fault = (async () => {
  await sleep(KILL_AT_MS);
  const killedAt = Date.now();
  await signalGroup(server, 'SIGKILL');
  server = startServer();
  await waitHealthy(Date.now() + 120_000);
  return { killedAt, upAt: Date.now() };
})();

console.log(`load: ${CLIENTS} clients for ${LOAD_MS / 1000} s against ${BASE} (server group killed at ${KILL_AT_MS / 1000} s)`);
const steps = await Promise.all(Array.from({ length: CLIENTS }, (_, c) => (c % 2 === 0 ? hostedClient(c) : statelessClient(c))));
const { killedAt, upAt } = await fault;
const drainedAt = Date.now();

// ---------------------------------------------------------------------------------------------
// verification: exactly once, bit for bit
// ---------------------------------------------------------------------------------------------

const f32 = (xs: readonly number[]) => Float32Array.from(xs);
/** Equal bit for bit (so -0 ≠ 0, and NaN would equal only the same NaN). */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.length === y.length && x.every((w, i) => w === y[i]);
}

function replay(params0: readonly number[], gradsInOrder: readonly number[][]): Float32Array {
  let params: Float32Array = f32(params0);
  let state = initAdamState('float32', ELEMENTS, true) as AdamState<Float32Array>;
  for (const g of gradsInOrder) ({ params, state } = adamStep({ dtype: 'float32', hyperparams: HYPERPARAMS, params, grads: f32(g), state }));
  return params;
}

async function getJson(path: string, token: string): Promise<any> {
  const res = await fetch(BASE + path, { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${await res.text()}`);
  return res.json();
}

const failures: string[] = [];
let hostedAccepted = 0;
for (const opt of optimizers) {
  const meta = await getJson(`/v1/optimizers/${opt.id}`, opt.token);
  const history = (await getJson(`/v1/optimizers/${opt.id}/history?limit=10000`, opt.token)).entries as Array<{ step: number; loss: number; lr: number }>;
  const got = await getJson(`/v1/optimizers/${opt.id}/params`, opt.token);
  hostedAccepted += opt.accepted.size;
  const applied = history.map((e) => e.loss);
  const where = `optimizer ${opt.id.slice(0, 8)}`;
  if (meta.step !== opt.accepted.size) failures.push(`${where}: ${meta.step} steps applied, ${opt.accepted.size} keys accepted`);
  if (new Set(applied).size !== applied.length) failures.push(`${where}: a step was applied twice`);
  const lost = [...opt.accepted.keys()].filter((id) => !applied.includes(id));
  const extra = applied.filter((id) => !opt.accepted.has(id));
  if (lost.length > 0) failures.push(`${where}: ${lost.length} accepted steps missing from the history`);
  if (extra.length > 0) failures.push(`${where}: ${extra.length} applied steps no client saw accepted`);
  if (history.some((e, i) => e.step !== i + 1)) failures.push(`${where}: history steps are not 1..n`);
  if (lost.length === 0 && extra.length === 0) {
    const expected = replay(opt.params0, applied.map((id) => opt.accepted.get(id)!));
    if (!sameBits(f32(got.params), expected)) failures.push(`${where}: params differ from the sequential replay`);
  }
}

let statelessAccepted = 0;
for (const chain of chains) {
  statelessAccepted += chain.grads.length;
  if (chain.last && !sameBits(f32(chain.last.params), replay(chain.params0, chain.grads))) failures.push('a stateless chain differs from its replay');
}
for (const u of unresolved) failures.push(`gave up on ${u}`);

await signalGroup(server, 'SIGTERM');
clearTimeout(hardStop);

// ---------------------------------------------------------------------------------------------
// report
// ---------------------------------------------------------------------------------------------

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}
const count = (pred: (a: Attempt) => boolean) => attempts.filter(pred).length;
const row = (kind: Attempt['kind'], accepted: number) => {
  const ok = attempts.filter((a) => a.kind === kind && (a.outcome === 'ok' || a.outcome === 'replayed')).map((a) => a.ms);
  const okBeforeKill = attempts.filter((a) => a.kind === kind && a.outcome === 'ok' && a.at < killedAt).length;
  return (
    `| ${kind} | ${accepted} | ${(accepted / ((drainedAt - loadStart) / 1000)).toFixed(0)} | ${(okBeforeKill / ((killedAt - loadStart) / 1000)).toFixed(0)} | ` +
    `${percentile(ok, 50).toFixed(1)} / ${percentile(ok, 99).toFixed(1)} | ${count((a) => a.kind === kind && a.outcome === 'network')} | ` +
    `${count((a) => a.kind === kind && a.outcome === 'timeout')} | ` +
    `${count((a) => a.kind === kind && a.outcome === '5xx')} | ${count((a) => a.kind === kind && a.outcome === 'replayed')} |`
  );
};

const verdict = failures.length === 0 ? '**Nothing lost, nothing doubled**' : `**FAILED** (${failures.length} problems)`;
const section = [
  `<!-- ${MARK}:begin -->`,
  SHARDS ? `## Load with a fault, sharded optimizers (\`npm run load -- --shards ${SHARDS}\`)` : '## Load with a fault (`npm run load`)',
  '',
  `${CLIENTS} clients (${CLIENTS / 2} hosted, ${CLIENTS / 2} stateless, one request in flight each) for ${LOAD_MS / 1000} s against \`wrangler dev\` on loopback, ` +
    `float32, ${ELEMENTS} elements, AdamW with amsgrad. Hosted clients share ${OPTIMIZERS} optimizers two by two` +
    (SHARDS ? `, each spread over ${SHARDS} shard objects and a coordinator (the crash lands inside their two-phase steps),` : '') +
    ` and send each step ${WITH_KEYS ? 'with' : 'WITHOUT'} an Idempotency-Key; ` +
    'a failed attempt (connection refused or reset, 5xx, client timeout) is retried with the same key and body, backing off from 25 ms to 1 s. ' +
    `The first attempt of every ${IMPATIENT_EVERY}th hosted step gives up after ${SHORT_TIMEOUT_MS[0]}–${SHORT_TIMEOUT_MS[1]} ms (an impatient client), often after the server applied it. ` +
    `At ${KILL_AT_MS / 1000} s the server's process group (wrangler, workerd) was SIGKILLed and started again on the same \`--persist-to\`: ` +
    `down for ${((upAt - killedAt) / 1000).toFixed(1)} s (first start: ${(firstBootMs / 1000).toFixed(1)} s).`,
  '',
  `- Date: ${new Date().toISOString().slice(0, 10)}; machine: ${cpus().length} logical CPUs (${cpus()[0]?.model.trim() ?? 'unknown'}), Node ${process.version}, ` +
    `shared with other work (1-minute load average ${loadAverageBefore.toFixed(1)} before the run, ${loadavg()[0]!.toFixed(1)} after)`,
  `- Verification: ${verdict}. Checked: every optimizer's step count equals its distinct accepted keys, its history holds each accepted step once, ` +
    'and its params equal the accepted gradients replayed in the history\'s order through src/optim/adam.ts, bit for bit; stateless chains likewise.' +
    (failures.length > 0 ? ` Problems: ${failures.slice(0, 10).join('; ')}.` : ''),
  '',
  '| kind | steps accepted | steps/s over the run | steps/s before the crash | latency p50 / p99 (ms, successful attempts) | connection errors | client timeouts | 5xx | replayed |',
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  row('hosted', hostedAccepted),
  row('stateless', statelessAccepted),
  '',
  `Attempts: ${attempts.length}; the run took ${((drainedAt - loadStart) / 1000).toFixed(1)} s including the drain of retries. "Replayed" answers are retries of steps the ` +
    'server had applied before the client saw the answer (returned with `replayed: true`, not applied again). The throughput is that of `wrangler dev` ' +
    '(its proxy adds a hop to every request) on a small shared machine, not a measure of production. Negative control: `npm run load -- --no-idempotency-key` ' +
    (process.argv.includes('--no-idempotency-key') ? '(this run).' : 'must fail the verification (retried steps applied twice).'),
  `<!-- ${MARK}:end -->`,
].join('\n');

const benchPath = join(ROOT, 'BENCHMARKS.md');
const bench = readFileSync(benchPath, 'utf8');
const block = new RegExp(`<!-- ${MARK}:begin -->[\\s\\S]*?<!-- ${MARK}:end -->`);
if (WITH_KEYS && failures.length === 0) writeFileSync(benchPath, block.test(bench) ? bench.replace(block, section) : `${bench.trimEnd()}\n\n${section}\n`);
console.log(section);
console.log(`clients finished ${steps.reduce((a, b) => a + b, 0)} steps`);
closeSync(serverLog);
if (failures.length > 0) {
  console.error(`load: FAILED\n${failures.join('\n')}\n(server log kept in ${persistDir})`);
  process.exit(1);
}
rmSync(persistDir, { recursive: true, force: true });
