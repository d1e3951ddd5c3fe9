// Part of `npm run bench` (alone: `npm run bench:http`): the hosted step over HTTP under plain
// workerd, what production runs (scripts/workerd-serve.ts: `workerd serve` on the bundle of
// `wrangler deploy --dry-run`), beside a bare echo of the same bytes through the same workerd (the
// floor); GET params; requests/s of a small stateless step beside /healthz (wrk); and a few
// newcomer figures through `wrangler dev`. Writes the HTTP section of BENCHMARKS.md (between
// <!-- http:begin --> and <!-- http:end -->, nothing else) and docs/step-latency.svg.
// Not a test: numbers vary by machine and load, and CI does not run it.
//
// Options: --quick (short budgets, for trying the script), --no-write (print only), --no-wrk,
// --no-wrangler-dev.

import { execFileSync, spawn } from 'node:child_process';
import http from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LIMITS, MAX_JSON_HOSTED_ELEMENTS } from '../src/lib/config.ts';
import { renderLineChart } from '../src/plot/line-chart.ts';
import { freePort, startWorkerd } from './workerd-serve.ts';

const ROOT = join(import.meta.dirname, '..');
const argv = new Set(process.argv.slice(2));
for (const a of argv) if (!['--quick', '--no-write', '--no-wrk', '--no-wrangler-dev'].includes(a)) throw new Error(`unknown option ${a}`);
const QUICK = argv.has('--quick');

const SIZES = [1e3, 1e5, 1e6, 4e6];
/** Rounds over every cell of a size (samples pooled), so slow phases of a shared machine hit all of them. */
const ROUNDS = QUICK ? 1 : 3;
/** Timed requests per cell and round: about this many milliseconds' worth, within [MIN_RUNS, MAX_RUNS]. */
const BUDGET_MS = QUICK ? 250 : 1000;
const MIN_RUNS = QUICK ? 2 : 4;
const MAX_RUNS = QUICK ? 20 : 60;
/** wrk: seconds per measurement, rounds of (healthz, stateless step). */
const WRK_SECONDS = QUICK ? 2 : 5;
const WRK_ROUNDS = QUICK ? 1 : 3;
const WRK_CONNECTIONS = 8;
/** Vars changed from wrangler.toml's for this run (reported in BENCHMARKS.md): none. */
const OVERRIDES: Record<string, string> = {};
/** Elements per part of the raw upload that fills a new optimizer. */
const UPLOAD_PART = 1 << 20;

type Format = 'json' | 'raw' | 'safetensors';
type Variant = 'none' | 'params';
const FORMATS: Format[] = ['raw', 'safetensors', 'json'];
const VARIANTS: Variant[] = ['none', 'params'];
const MEDIA: Record<Format, string> = { json: 'application/json', raw: 'application/octet-stream', safetensors: 'application/vnd.safetensors' };
const FORMAT_NAME: Record<Format, string> = { json: 'JSON', raw: 'raw', safetensors: 'safetensors' };

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Nearest-rank percentile (with fewer than 100 samples, p99 is the slowest). */
function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** Milliseconds with three significant digits or so. */
const ms = (x: number) => (x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0));
const ratio = (x: number) => `${x < 10 ? x.toFixed(2) : x.toFixed(1)}×`;
const mb = (bytes: number) => (bytes < 1e4 ? `${bytes} B` : bytes < 1e6 ? `${(bytes / 1e3).toFixed(1)} kB` : `${(bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 1)} MB`);
const sizeLabel = (n: number) => {
  const e = Math.floor(Math.log10(n));
  const m = n / 10 ** e;
  return m === 1 ? `1e${e}` : `${m}e${e}`;
};

interface Stat {
  samples: number[];
  p50: number;
  p99: number;
}
const stat = (samples: number[]): Stat => ({ samples, p50: median(samples), p99: percentile(samples, 99) });
const cellText = (s: Stat | undefined) => (s ? `${ms(s.p50)} / ${ms(s.p99)}` : 'n/a');

// ---------------------------------------------------------------------------------------------
// HTTP

// node:http with a keep-alive agent, one connection per origin. Not fetch: undici's fetch sends a
// body as a web stream and took about 3× as long as node:http or curl to upload 4 MB to the echo
// worker here (71 vs 25 ms), which would inflate the floor with client time.
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

interface RequestInit {
  method?: string;
  headers?: Record<string, string>;
  body?: Uint8Array;
}

/** One request, its answer read to the end (counted; kept as text only when `keep` or an error). */
function request(url: string, init: RequestInit = {}, keep = false): Promise<{ status: number; bytes: number; text: string }> {
  return new Promise((resolve, reject) => {
    const { body } = init;
    const headers = { ...init.headers, ...(body ? { 'content-length': String(body.length) } : {}) };
    const req = http.request(url, { method: init.method ?? 'GET', agent, headers }, (res) => {
      const status = res.statusCode!;
      const chunks: Buffer[] = [];
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (keep || status >= 300) chunks.push(chunk);
      });
      res.on('end', () => resolve({ status, bytes, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** One request, its answer read to the end; returns the answer's byte count. Throws unless `expect`. */
async function call(url: string, init: RequestInit = {}, expect = 200): Promise<number> {
  const res = await request(url, init);
  if (res.status !== expect) throw new Error(`${init.method ?? 'GET'} ${url}: HTTP ${res.status} (expected ${expect}) ${res.text.slice(0, 400)}`);
  return res.bytes;
}

async function callJson<T>(url: string, init: RequestInit = {}, expect = 200): Promise<T> {
  const res = await request(url, init, true);
  if (res.status !== expect) throw new Error(`${init.method ?? 'GET'} ${url}: HTTP ${res.status} (expected ${expect}) ${res.text.slice(0, 400)}`);
  return JSON.parse(res.text) as T;
}

/** A timed cell: one kind of request, repeated. */
class Cell {
  samples: number[] = [];
  /** Answer bytes of the last call. */
  answerBytes = 0;
  readonly run: () => Promise<number>;
  constructor(run: () => Promise<number>) {
    this.run = run;
  }
}

/**
 * One round over `cells`: a warm-up request of each (untimed; it sizes the round: about BUDGET_MS
 * of requests per cell, within [MIN_RUNS, MAX_RUNS]), then the timed requests in sweeps, each
 * sweep one request of every cell still running, so a slow phase of the machine hits all cells.
 */
async function round(cells: Cell[]): Promise<void> {
  const runs: number[] = [];
  for (const cell of cells) {
    const t0 = performance.now();
    cell.answerBytes = await cell.run();
    const warm = performance.now() - t0;
    runs.push(Math.min(MAX_RUNS, Math.max(MIN_RUNS, Math.round(BUDGET_MS / Math.max(warm, 0.05)))));
  }
  for (let i = 0; i < Math.max(...runs); i++) {
    for (let c = 0; c < cells.length; c++) {
      if (i >= runs[c]!) continue;
      const t = performance.now();
      await cells[c]!.run();
      cells[c]!.samples.push(performance.now() - t);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Bodies

/** Gradient-like float32 values (deterministic). */
function gradients(n: number): Float32Array {
  const g = new Float32Array(n);
  for (let i = 0; i < n; i++) g[i] = 0.01 * Math.sin(i * 0.37 + 2);
  return g;
}

/** The safetensors file of one F32 tensor `w`. */
function safetensorsOf(values: Float32Array): Uint8Array {
  let header = JSON.stringify({ w: { dtype: 'F32', shape: [values.length], data_offsets: [0, values.byteLength] } });
  header += ' '.repeat((8 - (header.length % 8)) % 8);
  const out = new Uint8Array(8 + header.length + values.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(new TextEncoder().encode(header), 8);
  out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), 8 + header.length);
  return out;
}

/**
 * Bytes of `{"grads":{"w":[…]}}` with each float32 value printed shortest as a double (what a client
 * sends from `tensor.tolist()` and json.dumps), without building it.
 */
function jsonLength(values: Float32Array): number {
  let n = '{"grads":{"w":[]}}'.length + Math.max(0, values.length - 1);
  for (const x of values) n += String(x).length;
  return n;
}

const jsonBody = (values: Float32Array) => Buffer.from(`{"grads":{"w":[${values.join(',')}]}}`);

// ---------------------------------------------------------------------------------------------
// Plain workerd: hosted step, echo floor, GET params

interface SizeResult {
  n: number;
  requestBytes: Record<Format, number>;
  /** Step answers' bytes, by format and variant. */
  answerBytes: Partial<Record<`${Format} ${Variant}`, number>>;
  step: Partial<Record<`${Format} ${Variant}`, Stat>>;
  floor: Partial<Record<`${Format} ${Variant}`, Stat>>;
  getParams: Stat;
  getFloor: Stat;
  /** The raw gradient echoed after a Durable Object stored it in SQLite (the floor of a stored step). */
  durableFloor: Stat;
  /** Why JSON was not measured at this size, with the server's answer. */
  jsonNa: string | null;
}

async function createOptimizer(base: string, n: number): Promise<{ id: string; auth: Record<string, string> }> {
  const created = await callJson<{ id: string; token: string }>(`${base}/v1/optimizers`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: Buffer.from(JSON.stringify({ shapes: { w: [n] }, dtype: 'float32' })),
  }, 201);
  const auth = { authorization: `Bearer ${created.token}` };
  const params = new Float32Array(n);
  for (let i = 0; i < n; i++) params[i] = Math.sin(i * 0.37 + 1);
  for (let offset = 0; offset < n; offset += UPLOAD_PART) {
    const part = params.subarray(offset, Math.min(n, offset + UPLOAD_PART));
    await call(`${base}/v1/optimizers/${created.id}/params?offset=${offset}`, {
      method: 'PUT',
      headers: { ...auth, 'content-type': MEDIA.raw },
      body: new Uint8Array(part.buffer, part.byteOffset, part.byteLength),
    });
  }
  return { id: created.id, auth };
}

async function benchSize(base: string, echo: string, vars: Record<string, string>, n: number): Promise<SizeResult> {
  const { id, auth } = await createOptimizer(base, n);
  const g = gradients(n);
  const raw = new Uint8Array(g.buffer);
  const bodies: Partial<Record<Format, Uint8Array>> = { raw, safetensors: safetensorsOf(g) };
  const maxBody = Number(vars.MAX_BODY_BYTES ?? DEFAULT_LIMITS.maxBodyBytes);
  const requestBytes: Record<Format, number> = { raw: raw.length, safetensors: bodies.safetensors!.length, json: jsonLength(g) };
  let jsonNa: string | null = null;
  if (n > MAX_JSON_HOSTED_ELEMENTS) jsonNa = `more than the ${MAX_JSON_HOSTED_ELEMENTS.toLocaleString('en')} elements of a JSON tree sent to a hosted optimizer`;
  else if (requestBytes.json > maxBody) {
    // Confirm the server refuses it (it answers from Content-Length, before reading the body).
    const big = jsonBody(g);
    let answer: string;
    try {
      const res = await request(`${base}/v1/optimizers/${id}/step?return=none`, { method: 'POST', headers: { ...auth, 'content-type': MEDIA.json }, body: big });
      answer = `the server answered ${res.status}`;
    } catch (e) {
      answer = `the server closed the connection (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
    }
    jsonNa = `the JSON body is ${mb(big.length)}, above MAX_BODY_BYTES (${maxBody} bytes = ${(maxBody / 2 ** 20).toFixed(0)} MiB): ${answer}`;
  } else bodies.json = jsonBody(g);

  const stepUrl = (v: Variant) => `${base}/v1/optimizers/${id}/step${v === 'none' ? '?return=none' : ''}`;
  const steps = new Map<string, Cell>();
  const floors = new Map<string, Cell>();
  for (const f of FORMATS) {
    const body = bodies[f];
    if (!body) continue;
    for (const v of VARIANTS) {
      const init: RequestInit = { method: 'POST', headers: { ...auth, 'content-type': MEDIA[f], accept: MEDIA[f] }, body };
      const step = new Cell(() => call(stepUrl(v), init));
      steps.set(`${f} ${v}`, step);
      // The floor sends the same body and gets as many bytes as the step's answer had.
      floors.set(`${f} ${v}`, new Cell(() => call(`${echo}/?bytes=${step.answerBytes}`, { method: 'POST', body })));
    }
  }
  const getParams = new Cell(() => call(`${base}/v1/optimizers/${id}/params`, { headers: { ...auth, accept: MEDIA.raw } }));
  const getFloor = new Cell(() => call(`${echo}/?bytes=${4 * n}`));
  const durableFloor = new Cell(() => call(`${echo}/?durable=1&bytes=0`, { method: 'POST', body: raw }));

  // Floors after their steps: a floor answers as many bytes as its step's warm-up answer had.
  const cells = [...[...steps.keys()].flatMap((k) => [steps.get(k)!, floors.get(k)!]), getParams, getFloor, durableFloor];
  for (let r = 0; r < ROUNDS; r++) await round(cells);
  const rawParams = steps.get('raw params')!;
  if (rawParams.answerBytes !== 4 * n) throw new Error(`a raw step answer had ${rawParams.answerBytes} bytes, expected ${4 * n}`);
  if (getParams.answerBytes !== 4 * n) throw new Error(`GET params answered ${getParams.answerBytes} bytes, expected ${4 * n}`);
  const result: SizeResult = {
    n,
    requestBytes,
    answerBytes: {},
    step: {},
    floor: {},
    getParams: stat(getParams.samples),
    getFloor: stat(getFloor.samples),
    durableFloor: stat(durableFloor.samples),
    jsonNa,
  };
  for (const [key, step] of steps) {
    const k = key as `${Format} ${Variant}`;
    result.step[k] = stat(step.samples);
    result.floor[k] = stat(floors.get(key)!.samples);
    result.answerBytes[k] = step.answerBytes;
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Requests/s: wrk against loopback

interface WrkResult {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
}

function hasWrk(): boolean {
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
    return true;
  } catch (e) {
    // wrk --version prints its usage and exits 1; only a missing binary is ENOENT.
    return (e as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

const toMs = (value: string, unit: string) => Number(value) * ({ us: 1e-3, ms: 1, s: 1e3, m: 6e4 } as Record<string, number>)[unit]!;

function wrk(url: string, seconds: number, script: string | null): WrkResult {
  const args = ['-t2', `-c${WRK_CONNECTIONS}`, `-d${seconds}s`, '--latency', ...(script ? ['-s', script] : []), url];
  const out = execFileSync('wrk', args, { encoding: 'utf8' });
  const bad = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  if (bad) throw new Error(`wrk ${url}: ${bad[1]} answers were not 2xx:\n${out}`);
  if (/Socket errors/.test(out)) throw new Error(`wrk ${url}: socket errors:\n${out}`);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p50 = /\s50%\s+([\d.]+)(us|ms|s|m)\b/.exec(out);
  const p99 = /\s99%\s+([\d.]+)(us|ms|s|m)\b/.exec(out);
  const total = /(\d+) requests in/.exec(out);
  if (!rps || !p50 || !p99 || !total) throw new Error(`cannot read wrk's output:\n${out}`);
  return { rps: Number(rps[1]), p50: toMs(p50[1]!, p50[2]!), p99: toMs(p99[1]!, p99[2]!), requests: Number(total[1]) };
}

interface RpsResult {
  healthz: WrkResult[];
  step: WrkResult[];
  /** The echo worker: a GET answering as many bytes as /healthz, and a POST of the step's body answering as many bytes as the step. */
  bareGet: WrkResult[];
  barePost: WrkResult[];
  body: string;
  /** Answer bytes of /healthz and of the step. */
  healthzBytes: number;
  stepBytes: number;
}

/** Rounds of (GET /healthz, a 10-element stateless step with its state) at concurrency 8. */
async function benchRps(base: string, echo: string, dir: string): Promise<RpsResult> {
  const params = Array.from({ length: 10 }, (_, i) => Math.fround(Math.sin(i + 1)));
  const grads = Array.from({ length: 10 }, (_, i) => Math.fround(0.01 * Math.cos(i + 1)));
  // A mid-training request: params, grads, and the state a previous step returned.
  const first = await callJson<{ params: number[]; state: unknown }>(`${base}/v1/adam/step`, {
    method: 'POST',
    headers: { 'content-type': MEDIA.json },
    body: Buffer.from(JSON.stringify({ params, grads })),
  });
  const body = JSON.stringify({ params: first.params, grads, state: first.state });
  const stepBytes = await call(`${base}/v1/adam/step`, { method: 'POST', headers: { 'content-type': MEDIA.json }, body: Buffer.from(body) });
  const healthzBytes = await call(`${base}/healthz`);
  const script = join(dir, 'step.lua');
  writeFileSync(script, `wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[${body}]==]\n`);
  // The runtime's own floor of the same two exchanges: no routing, middleware, parsing or step.
  const cells: Array<[keyof Pick<RpsResult, 'healthz' | 'step' | 'bareGet' | 'barePost'>, string, string | null]> = [
    ['healthz', `${base}/healthz`, null],
    ['step', `${base}/v1/adam/step`, script],
    ['bareGet', `${echo}/?bytes=${healthzBytes}`, null],
    ['barePost', `${echo}/?bytes=${stepBytes}`, script],
  ];
  for (const [, url, lua] of cells) wrk(url, 1, lua); // warm-up
  const result: RpsResult = { healthz: [], step: [], bareGet: [], barePost: [], body, healthzBytes, stepBytes };
  for (let r = 0; r < WRK_ROUNDS; r++) {
    for (const [key, url, lua] of cells) result[key].push(wrk(url, WRK_SECONDS, lua));
    console.log(`  round ${r + 1}: ` + cells.map(([key]) => `${key} ${result[key].at(-1)!.rps.toFixed(0)}/s`).join(', '));
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// wrangler dev (newcomer figures)

const WRANGLER_SIZES = [1e3, 1e6];

async function benchWranglerDev(): Promise<Map<number, Partial<Record<`${Format} ${Variant}`, Stat>>>> {
  const persist = mkdtempSync(join(tmpdir(), 'adam-bench-wrangler-'));
  const [port, inspector] = [await freePort(), await freePort()];
  const base = `http://127.0.0.1:${port}`;
  const child = spawn(
    process.execPath,
    [join(ROOT, 'node_modules', 'wrangler', 'bin', 'wrangler.js'), 'dev', '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', String(inspector),
      '--persist-to', persist, '--show-interactive-dev-session=false', '--log-level', 'error'],
    { cwd: ROOT, detached: true, env: { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_SEND_METRICS: 'false' }, stdio: 'ignore' },
  );
  const kill = () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {}
    rmSync(persist, { recursive: true, force: true });
  };
  process.on('exit', kill);
  const out = new Map<number, Partial<Record<`${Format} ${Variant}`, Stat>>>();
  try {
    let up = false;
    for (let i = 0; i < 240 && !up; i++) {
      try {
        up = (await request(`${base}/healthz`)).status === 200;
      } catch {}
      if (!up) await new Promise((r) => setTimeout(r, 250));
    }
    if (!up) throw new Error('wrangler dev did not start within 60 s');
    for (const n of WRANGLER_SIZES) {
      const { id, auth } = await createOptimizer(base, n);
      const g = gradients(n);
      const bodies: Record<Format, Uint8Array> = { raw: new Uint8Array(g.buffer), safetensors: safetensorsOf(g), json: jsonBody(g) };
      const row: Partial<Record<`${Format} ${Variant}`, Stat>> = {};
      for (const f of FORMATS) {
        for (const v of VARIANTS) {
          const cell = new Cell(() =>
            call(`${base}/v1/optimizers/${id}/step${v === 'none' ? '?return=none' : ''}`, { method: 'POST', headers: { ...auth, 'content-type': MEDIA[f], accept: MEDIA[f] }, body: bodies[f] }),
          );
          await round([cell]);
          row[`${f} ${v}`] = stat(cell.samples);
        }
      }
      out.set(n, row);
      console.log(`  ${sizeLabel(n)}: ${FORMATS.map((f) => `${FORMAT_NAME[f]} ${cellText(row[`${f} none`])} | ${cellText(row[`${f} params`])}`).join('; ')}`);
    }
  } finally {
    kill();
    process.off('exit', kill);
    rmSync(persist, { recursive: true, force: true });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Plot: renderLineChart draws at most two series on a linear x axis, so the chart is drawn with
// one series holding every point (for the axes, log y scale and the points' coordinates), then
// that polyline is replaced by one per series; x is log10(elements), its ticks relabelled 1eK.

interface PlotSeries {
  label: string;
  x: number[];
  y: number[];
  color: string;
  dash?: string;
}

function multiSeriesChart(series: PlotSeries[], title: string, yLabel: string, width: number, height: number): string {
  const all = { label: 'all', x: series.flatMap((s) => s.x.map(Math.log10)), y: series.flatMap((s) => s.y) };
  let svg = renderLineChart([all], { title, xLabel: 'float32 elements (log scale)', yLabel, logY: true, width, height });
  const polyline = /<polyline class="series"[^>]*points="([^"]*)"\/>\n?/.exec(svg);
  if (!polyline) throw new Error('plot: no polyline in the chart');
  const coords = polyline[1]!.split(' ');
  svg = svg.replace(polyline[0], '').replace(/<g class="markers"[^>]*>[\s\S]*?<\/g>\n?/, '');
  // x tick labels: 3 → 1e3; labels between decades dropped (their tick lines stay).
  svg = svg.replace(/(<g class="axis x-axis"[\s\S]*?<\/g>)/, (axis) =>
    axis.replace(/(<text [^>]*text-anchor="middle">)([^<]*)(<\/text>)/g, (whole, open: string, label: string, close: string) => {
      if (/class="axis-label"/.test(open)) return whole;
      const v = Number(label);
      return Number.isInteger(v) ? `${open}1e${v}${close}` : '';
    }),
  );
  const parts: string[] = [];
  let k = 0;
  series.forEach((s, i) => {
    const pts = coords.slice(k, k + s.x.length);
    k += s.x.length;
    parts.push(
      `<polyline class="series" data-series="${s.label}" data-points="${pts.length}" fill="none" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''} ` +
        `stroke-linejoin="round" stroke-linecap="round" points="${pts.join(' ')}"/>`,
    );
    parts.push(`<g class="markers" fill="${s.color}">${pts.map((c) => `<circle cx="${c.split(',')[0]}" cy="${c.split(',')[1]}" r="3"/>`).join('')}</g>`);
    const ly = 62 + i * 17;
    parts.push(`<line x1="92" x2="116" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    parts.push(`<text x="122" y="${ly}" fill="#111827">${s.label}</text>`);
  });
  const legend = `<rect x="86" y="${62 - 14}" width="200" height="${series.length * 17 + 6}" fill="#ffffff" fill-opacity="0.85" stroke="#e5e7eb"/>`;
  return svg.replace('</svg>', `${legend}\n${parts.join('\n')}\n</svg>`);
}

const COLORS = { json: '#dc2626', raw: '#2563eb', safetensors: '#16a34a', floor: '#6b7280', floorJson: '#9ca3af', get: '#9333ea' };

function plot(results: SizeResult[], date: string): string {
  const width = 820;
  const height = 440;
  const panel = (v: Variant) => {
    const line = (label: string, color: string, pick: (r: SizeResult) => number | undefined, dash?: string): PlotSeries => {
      const pts = results.map((r) => [r.n, pick(r)] as const).filter((p): p is readonly [number, number] => p[1] !== undefined);
      return { label, color, dash, x: pts.map((p) => p[0]), y: pts.map((p) => p[1]) };
    };
    const series = [
      line('JSON step', COLORS.json, (r) => r.step[`json ${v}`]?.p50),
      line('raw step', COLORS.raw, (r) => r.step[`raw ${v}`]?.p50),
      line('safetensors step', COLORS.safetensors, (r) => r.step[`safetensors ${v}`]?.p50),
      line('echo floor, raw bytes', COLORS.floor, (r) => r.floor[`raw ${v}`]?.p50, '6 4'),
      line('echo floor, JSON bytes', COLORS.floorJson, (r) => r.floor[`json ${v}`]?.p50, '2 4'),
    ];
    if (v === 'params') series.push(line('GET params (raw)', COLORS.get, (r) => r.getParams.p50, '8 3 2 3'));
    const what = v === 'none' ? 'params not returned (?return=none)' : 'params returned (in the request\'s format)';
    return multiSeriesChart(series, `Hosted step under plain workerd, p50: ${what}`, 'milliseconds (log scale)', width, height);
  };
  const strip = (svg: string) => svg.replace(/^<\?xml[^>]*\?>\n/, '');
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${2 * height + 24}" viewBox="0 0 ${width} ${2 * height + 24}" role="img">`,
    `<title>adam-api: hosted step latency against size, by format, beside the echo floor (scripts/bench-http.ts, ${date})</title>`,
    `<rect width="${width}" height="${2 * height + 24}" fill="#ffffff"/>`,
    `<svg x="0" y="0" width="${width}" height="${height}">${strip(panel('none'))}</svg>`,
    `<svg x="0" y="${height}" width="${width}" height="${height}">${strip(panel('params'))}</svg>`,
    `<text x="${width / 2}" y="${2 * height + 16}" text-anchor="middle" font-family="system-ui, sans-serif" font-size="11" fill="#6b7280">` +
      `Node client (node:http) on loopback, one keep-alive connection; ${date}; see BENCHMARKS.md for p99, runs and load.</text>`,
    '</svg>',
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Main

const uptime = () => execFileSync('uptime', { encoding: 'utf8' }).trim();
const load = () => loadavg().map((x) => x.toFixed(2)).join(', ');
const date = new Date().toISOString().slice(0, 10);
const cpu = cpus();
const loads: Array<[string, string]> = [['start', load()]];
console.log(`bench-http: ${uptime()}`);

const work = mkdtempSync(join(tmpdir(), 'adam-bench-http-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const results: SizeResult[] = [];
let rps: RpsResult | null = null;
let rpsSkipped: string | null = null;
let version = '';
let vars: Record<string, string> = {};
const server = await startWorkerd({ vars: OVERRIDES, log: (m) => console.log(`  ${m}`) });
try {
  version = server.version;
  vars = server.vars;
  for (const n of SIZES) {
    const r = await benchSize(server.url, server.echoUrl, vars, n);
    results.push(r);
    console.log(`${sizeLabel(n)}: ` + FORMATS.map((f) => `${FORMAT_NAME[f]} ${cellText(r.step[`${f} none`])} | ${cellText(r.step[`${f} params`])} (floor ${cellText(r.floor[`${f} none`])} | ${cellText(r.floor[`${f} params`])})`).join('; ') +
      `; GET params ${cellText(r.getParams)} (floor ${cellText(r.getFloor)})${r.jsonNa ? `; JSON n/a: ${r.jsonNa}` : ''}`);
  }
  loads.push(['after the latency runs', load()]);
  if (argv.has('--no-wrk')) rpsSkipped = 'skipped (--no-wrk)';
  else if (!hasWrk()) {
    rpsSkipped = 'skipped: wrk is not installed (Debian: apt-get install wrk)';
    console.log(`requests/s ${rpsSkipped}`);
  } else {
    console.log(`requests/s at concurrency ${WRK_CONNECTIONS} (wrk):`);
    rps = await benchRps(server.url, server.echoUrl, work);
    loads.push(['after wrk', load()]);
  }
} finally {
  await server.stop();
  rmSync(work, { recursive: true, force: true });
}

let wranglerDev: Awaited<ReturnType<typeof benchWranglerDev>> | null = null;
if (!argv.has('--no-wrangler-dev')) {
  console.log('through wrangler dev:');
  wranglerDev = await benchWranglerDev();
  loads.push(['after wrangler dev', load()]);
}
console.log(`bench-http: ${uptime()}`);

// --- BENCHMARKS.md section

const at = (n: number) => results.find((r) => r.n === n)!;
const runsOf = (r: SizeResult) => {
  const counts = [...Object.values(r.step), ...Object.values(r.floor), r.getParams, r.getFloor].map((s) => s!.samples.length);
  const lo = Math.min(...counts);
  const hi = Math.max(...counts);
  return lo === hi ? String(lo) : `${lo}–${hi}`;
};

const stepTable = (v: Variant) => {
  const rows = [
    `| elements | format | request${v === 'params' ? ' / answer' : ''} | step p50 / p99 | echo floor p50 / p99 | step ÷ floor (p50) | runs |`,
    '|---:|---|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    for (const f of FORMATS) {
      const s = r.step[`${f} ${v}`];
      const fl = r.floor[`${f} ${v}`];
      if (!s || !fl) {
        rows.push(`| ${sizeLabel(r.n)} | ${FORMAT_NAME[f]} | ${mb(r.requestBytes[f])} | n/a (${r.jsonNa}) | | | |`);
        continue;
      }
      const bytes = v === 'params' ? `${mb(r.requestBytes[f])} / ${mb(r.answerBytes[`${f} ${v}`]!)}` : mb(r.requestBytes[f]);
      rows.push(`| ${sizeLabel(r.n)} | ${FORMAT_NAME[f]} | ${bytes} | ${cellText(s)} | ${cellText(fl)} | ${ratio(s.p50 / fl.p50)} | ${s.samples.length} / ${fl.samples.length} |`);
    }
  }
  return rows;
};

const getTable = [
  '| elements | answer | GET params p50 / p99 | echo floor p50 / p99 | GET ÷ floor | raw step ÷ GET (none / params) | safetensors step ÷ GET (none / params) | runs |',
  '|---:|---:|---:|---:|---:|---:|---:|---:|',
  ...results.map((r) => {
    const q = (f: Format, v: Variant) => ratio(r.step[`${f} ${v}`]!.p50 / r.getParams.p50);
    return `| ${sizeLabel(r.n)} | ${mb(4 * r.n)} | ${cellText(r.getParams)} | ${cellText(r.getFloor)} | ${ratio(r.getParams.p50 / r.getFloor.p50)} | ${q('raw', 'none')} / ${q('raw', 'params')} | ${q('safetensors', 'none')} / ${q('safetensors', 'params')} | ${r.getParams.samples.length} / ${r.getFloor.samples.length} |`;
  }),
];

const durableTable = [
  '| elements | raw step, `return=none` | echo floor | durable echo floor | step ÷ echo | step ÷ durable echo |',
  '|---:|---:|---:|---:|---:|---:|',
  ...results.map((r) => {
    const s = r.step['raw none']!;
    const e = r.floor['raw none']!;
    return `| ${sizeLabel(r.n)} | ${cellText(s)} | ${cellText(e)} | ${cellText(r.durableFloor)} | ${ratio(s.p50 / e.p50)} | ${ratio(s.p50 / r.durableFloor.p50)} |`;
  }),
];

const m = at(1e6);
const BINARY = ['raw', 'safetensors'] as const;
const VARIANT_NAME: Record<Variant, string> = { none: '`return=none`', params: 'params returned' };
/** One line per target: the verdict over every binary format and variant, then each ratio. */
function verdict(label: string, bound: number, upper: boolean, value: (f: (typeof BINARY)[number], v: Variant) => [number, number]): string {
  const cases = BINARY.flatMap((f) => VARIANTS.map((v) => ({ f, v, q: value(f, v) })));
  const ok = cases.filter((c) => (upper ? c.q[0] / c.q[1] <= bound : c.q[0] / c.q[1] >= bound));
  const worst = cases.reduce((a, b) => ((upper ? b.q[0] / b.q[1] > a.q[0] / a.q[1] : b.q[0] / b.q[1] < a.q[0] / a.q[1]) ? b : a));
  const r = worst.q[0] / worst.q[1];
  const summary =
    ok.length === cases.length
      ? 'met'
      : `${ok.length ? `met in ${ok.length} of ${cases.length} cases, ` : ''}not met: at worst ${ratio(r)} (${upper ? `${ratio(r / bound)} over; the step would need ${((1 - bound / r) * 100).toFixed(0)}% less time` : `the binary step would need to be ${ratio(bound / r)} faster`})`;
  const each = cases.map((c) => `${FORMAT_NAME[c.f]}, ${VARIANT_NAME[c.v]}: ${ms(c.q[0])} ÷ ${ms(c.q[1])} ms = ${ratio(c.q[0] / c.q[1])}`).join('; ');
  return `- **${label}: ${summary}.** ${each}.`;
}
const verdicts = [
  verdict('Binary step p50 ≤ 3× the echo floor (same bytes each way)', 3, true, (f, v) => [m.step[`${f} ${v}`]!.p50, m.floor[`${f} ${v}`]!.p50]),
  verdict('JSON p50 ÷ binary p50 ≥ 10×', 10, false, (f, v) => [m.step[`json ${v}`]!.p50, m.step[`${f} ${v}`]!.p50]),
  verdict('Binary step p50 ≤ 4× a binary GET params p50 of the same optimizer', 4, true, (f, v) => [m.step[`${f} ${v}`]!.p50, m.getParams.p50]),
];

// What the floors measured in this run allow: a hosted step is acknowledged only once stored, so
// no step can beat the durable echo floor (the same gradient written to a Durable Object's SQLite).
const durable = m.durableFloor.p50;
const echoNone = m.floor['raw none']!.p50;
const jsonNone = m.step['json none']?.p50;
const rawNone = m.step['raw none']!.p50;
const bounds = [
  `- **What the floors allow.** A step stored before its answer cannot take less than the durable echo floor (${ms(durable)} ms at 1e6, raw, \`return=none\`):`,
  `  - ≤ 3× the echo floor: the durable floor alone is ${ratio(durable / echoNone)} the echo floor (${ms(durable)} ÷ ${ms(echoNone)} ms); ` +
    (durable / echoNone > 3 ? 'so the target needs a step faster than storing its own gradient: out of reach for any stored step on this machine.' : 'so the target is within reach of a stored step.'),
  ...(jsonNone === undefined
    ? []
    : [
        `  - JSON ÷ binary ≥ 10×: a binary step at the durable floor would give ${ratio(jsonNone / durable)} (${ms(jsonNone)} ÷ ${ms(durable)} ms); ` +
          (jsonNone / durable < 10 ? 'so the target needs a binary step faster than its storage, or a slower JSON step: out of reach.' : 'so the target is within reach.'),
      ]),
  `  - ≤ 4× GET params: the durable floor is ${ratio(durable / m.getParams.p50)} a GET params (${ms(durable)} ÷ ${ms(m.getParams.p50)} ms); ` +
    `the raw step (\`return=none\`) is ${ratio(rawNone / durable)} the durable floor (${ms(rawNone)} ÷ ${ms(durable)} ms): the step's own work besides storing its gradient ` +
    '(the Worker → Durable Object hop, decoding into the kernel\'s memory, the kernel, and a share of the state rewritten with the journal entry).',
];

let rpsLines: string[];
if (rps) {
  const h = median(rps.healthz.map((x) => x.rps));
  const s = median(rps.step.map((x) => x.rps));
  const perRound = rps.step.map((x, i) => x.rps / rps!.healthz[i]!.rps);
  const row = (label: string, xs: WrkResult[]) =>
    `| ${label} | ${median(xs.map((x) => x.rps)).toFixed(0)} | ${xs.map((x) => x.rps.toFixed(0)).join(', ')} | ${ms(median(xs.map((x) => x.p50)))} | ${ms(median(xs.map((x) => x.p99)))} |`;
  const us = (xs: WrkResult[]) => 1e6 / median(xs.map((x) => x.rps));
  const [uh, usStep, ug, up] = [us(rps.healthz), us(rps.step), us(rps.bareGet), us(rps.barePost)];
  rpsLines = [
    `wrk, 2 threads, ${WRK_CONNECTIONS} connections, ${WRK_ROUNDS} rounds of ${WRK_SECONDS} s per endpoint, alternating (after a 1 s warm-up of each). The stateless step is ` +
      `\`POST /v1/adam/step\` with 10 float32 elements: params, grads and the state a previous step returned (${rps.body.length} bytes of JSON; its answer ${rps.stepBytes} bytes). wrk runs on the same 2 CPUs as workerd. ` +
      `The bare GET and POST go to the echo worker of the same workerd (no routing, middleware, parsing or step): the GET answers ${rps.healthzBytes} bytes, as /healthz does; the POST sends the step's body and answers as many bytes as the step.`,
    '',
    '| endpoint | requests/s (median) | each round | latency p50 (ms, median of rounds) | p99 (ms) |',
    '|---|---:|---|---:|---:|',
    row('`GET /healthz`', rps.healthz),
    row('stateless step, 10 elements', rps.step),
    row('bare GET (echo worker)', rps.bareGet),
    row('bare POST of the step\'s bytes (echo worker)', rps.barePost),
    '',
    `- Per request (the inverse of the median rate, µs): /healthz ${uh.toFixed(0)}, the step ${usStep.toFixed(0)}; bare GET ${ug.toFixed(0)}, bare POST ${up.toFixed(0)}. ` +
      `Of the step's ${(usStep - uh).toFixed(0)} µs over /healthz, the runtime's exchange of its body and answer accounts for ${(up - ug).toFixed(0)} (bare POST − bare GET); ` +
      `the other ${(usStep - uh - (up - ug)).toFixed(0)} µs are the Worker's own: reading and checking the JSON body (value scan, parse, zod validation), the step, and its JSON answer. ` +
      `0.7× needs the step at ≤ ${(uh / 0.7).toFixed(0)} µs, so that share at ≤ ${Math.max(0, uh / 0.7 - uh - (up - ug)).toFixed(0)} µs.`,
    `- **Stateless step ≥ 0.7× /healthz**: ${s.toFixed(0)} ÷ ${h.toFixed(0)} = ${s / h >= 0.7 ? `${(s / h).toFixed(2)}× ≥ 0.7×: met` : `${(s / h).toFixed(2)}× < 0.7×: not met (${((0.7 / (s / h) - 1) * 100).toFixed(0)}% more requests/s needed)`} ` +
      `(per round: ${perRound.map((x) => x.toFixed(2)).join(', ')}).`,
  ];
} else rpsLines = [`Requests/s: ${rpsSkipped}.`];

const wranglerLines: string[] = wranglerDev
  ? [
      '### Newcomer figures: through `wrangler dev`',
      '',
      '`npm run dev` serves through wrangler\'s local proxy, which adds a few milliseconds per request and caps near 400 requests/s here: these are the figures a newcomer sees, not the server\'s. ' +
        `Same client and bodies, default vars, one round (about ${BUDGET_MS} ms of requests per cell after a warm-up); milliseconds, p50 / p99.`,
      '',
      '| elements | JSON, `return=none` | JSON, params | raw, `return=none` | raw, params | safetensors, `return=none` | safetensors, params | runs |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...[...wranglerDev].map(([n, row]) => {
        const counts = Object.values(row).map((s) => s!.samples.length);
        return `| ${sizeLabel(n)} | ${(['json', 'raw', 'safetensors'] as const).flatMap((f) => VARIANTS.map((v) => cellText(row[`${f} ${v}`]))).join(' | ')} | ${Math.min(...counts)}–${Math.max(...counts)} |`;
      }),
      '',
    ]
  : [];

const section = [
  '<!-- http:begin -->',
  '## Hosted step over HTTP under plain workerd (loopback, float32, default hyperparameters)',
  '',
  'Generated by `npm run bench` (scripts/bench-http.ts; alone: `npm run bench:http`).',
  '',
  `- Date: ${date}. Machine: ${cpu[0]?.model.trim()}, ${cpu.length} logical CPUs, shared with other jobs. Load averages (1, 5, 15 min): ${loads.map(([w, l]) => `${l} (${w})`).join('; ')}.`,
  `- Server: ${version} (\`workerd serve\` on the bundle of \`wrangler deploy --dry-run\`, scripts/workerd-serve.ts), the Durable Object's SQLite on a temporary local disk, ` +
    `the vars of wrangler.toml${Object.keys(OVERRIDES).length ? ` except ${Object.entries(OVERRIDES).map(([k, v]) => `${k}=${v}`).join(', ')}` : ' (none raised)'}. No \`wrangler dev\` proxy.`,
  `- Client: Node ${process.version} \`node:http\` with a keep-alive agent (not fetch: undici's fetch took about 3× as long as node:http or curl to upload 4 MB here), one connection per server, one request at a time, on the same machine. A request's time runs from the call to the last byte of the answer read; ` +
    'bodies are encoded before timing and answers are not decoded. ' +
    `${ROUNDS} rounds over all cells of a size, samples pooled; in a round each cell gets a warm-up request, then about ${BUDGET_MS} ms of timed requests (${MIN_RUNS} to ${MAX_RUNS}), ` +
    'run in sweeps (one request of each cell in turn) so that slow phases of the shared machine hit steps and floors alike. p50 is the median; p99 is nearest-rank, so with fewer than 100 runs it is the slowest run. Runs: step / floor.',
  `- Optimizer: one per size, created by \`shapes\` (\`{"w": [n]}\`) and filled by raw \`PUT …/params\` uploads; every step sends the same gradient. ` +
    'Raw: `application/octet-stream`, n little-endian float32. Safetensors: one F32 tensor `w`. JSON: `{"grads": {"w": [...]}}` with each float32 printed shortest as a double (as `tensor.tolist()` and `json.dumps` send it). ' +
    'The answer is in the request\'s format (`Accept` = the body\'s type).',
  '- Noise: other jobs share the 2 CPUs; between runs an hour apart on this machine the same p50 moved by up to 2× (e.g. the 1e6 JSON step), so compare ratios within one run, and read p99 as the tail of a busy machine.',
  '- **Echo floor**: a second worker in the same workerd process, on its own socket, reads the same request body whole and answers as many bytes as the step\'s answer had ' +
    '(a few bytes with `return=none`, the params otherwise): HTTP, the runtime and the client, without the Worker → Durable Object hop, decoding, the step and storage.',
  '',
  '### Step, params not returned (`?return=none`)',
  '',
  'Milliseconds.',
  '',
  ...stepTable('none'),
  '',
  '### Step, params returned',
  '',
  'Milliseconds; the answer is the new params in the request\'s format.',
  '',
  ...stepTable('params'),
  '',
  '### `GET /v1/optimizers/{id}/params` (`Accept: application/octet-stream`)',
  '',
  'Milliseconds; the floor is a GET of as many bytes from the echo worker; step ÷ GET compares p50s.',
  '',
  ...getTable,
  '',
  '### The floor of a stored step',
  '',
  'A hosted step is acknowledged only once it is stored (journalled gradient and a share of the state, one SQLite transaction), so the bare echo is not its floor: ' +
    'here the echo worker first hands the raw gradient to a Durable Object that writes it into its SQLite storage (1 MiB rows, one transaction) and answers nothing. ' +
    'Milliseconds, p50 / p99.',
  '',
  ...durableTable,
  '',
  '### Targets at 1e6 elements (p50, this run)',
  '',
  'Binary = raw and safetensors, each with `return=none` and with the params returned; each is compared with its own floor (same bytes each way).',
  '',
  ...verdicts,
  ...bounds,
  '',
  '### Requests/s at concurrency 8',
  '',
  ...rpsLines,
  '',
  '### Plot',
  '',
  '![Hosted step p50 against size for JSON, raw and safetensors, beside the echo floor](docs/step-latency.svg)',
  '',
  ...wranglerLines,
  '<!-- http:end -->',
].join('\n');

console.log(`\n${section}\n`);
if (!argv.has('--no-write')) {
  const file = join(ROOT, 'BENCHMARKS.md');
  const text = readFileSync(file, 'utf8');
  const marked = /<!-- http:begin -->[\s\S]*<!-- http:end -->/;
  writeFileSync(file, marked.test(text) ? text.replace(marked, () => section) : `${text.trimEnd()}\n\n${section}\n`);
  mkdirSync(join(ROOT, 'docs'), { recursive: true });
  writeFileSync(join(ROOT, 'docs', 'step-latency.svg'), plot(results, date));
  console.log(`updated ${file} and docs/step-latency.svg`);
}
