// Part of `npm run bench`: latency of one hosted step (POST /v1/optimizers/{id}/step) and of one
// stateless step (POST /v1/adam/step, state round-tripped) through `wrangler dev` on loopback, for
// 1e3, 1e5 and 1e6 float32 elements; writes median and p99 into BENCHMARKS.md.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SIZES = [1e3, 1e5, 1e6];
const PORT = 8790 + Math.floor(Math.random() * 100);
const BASE = `http://127.0.0.1:${PORT}`;
const ROOT = join(import.meta.dirname, '..');

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

async function waitReady(): Promise<void> {
  for (let i = 0; i < 120; i++) {
    try {
      if ((await fetch(`${BASE}/healthz`)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error('wrangler dev did not start');
}

async function post(path: string, body: string, headers: Record<string, string> = {}) {
  const res = await fetch(BASE + path, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  const text = await res.text();
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return text;
}

const series = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + seed));

/** Times `runs` calls of fn (after 2 warm-ups); milliseconds. */
async function time(runs: number, fn: () => Promise<unknown>): Promise<number[]> {
  await fn();
  await fn();
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

const persist = mkdtempSync(join(tmpdir(), 'adam-bench-'));
// The stateless limits are raised for this run only, so the 1e6 stateless step can be measured.
// Run wrangler's JS entry with this Node (24): a bare `wrangler` could resolve to an older system Node.
const wrangler = spawn(
  process.execPath,
  [join(ROOT, 'node_modules', 'wrangler', 'bin', 'wrangler.js'), 'dev', '--ip', '127.0.0.1', '--port', String(PORT), '--persist-to', persist, '--show-interactive-dev-session=false', '--log-level', 'error',
    '--var', 'MAX_ELEMENTS:1000000', '--var', 'MAX_BODY_BYTES:134217728'],
  { cwd: ROOT, env: { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_SEND_METRICS: 'false' }, stdio: 'ignore' },
);

const rows: string[] = [];
try {
  await waitReady();
  for (const n of SIZES) {
    const runs = n >= 1e6 ? 15 : n >= 1e5 ? 40 : 200;
    const params = series(n, 1);
    const grads = JSON.stringify({ grads: series(n, 2) });
    const created = JSON.parse(await post('/v1/optimizers', JSON.stringify({ params, dtype: 'float32' })));
    const auth = { authorization: `Bearer ${created.token}` };
    const hosted = await time(runs, () => post(`/v1/optimizers/${created.id}/step?return=none`, grads, auth));
    const hostedParams = await time(runs, () => post(`/v1/optimizers/${created.id}/step`, grads, auth));

    // Stateless: the client sends params, grads and state, and gets them back.
    let state: unknown;
    let current: unknown = params;
    const g = series(n, 2);
    const stateless = await time(runs, async () => {
      const res = JSON.parse(await post('/v1/adam/step', JSON.stringify({ params: current, grads: g, state, dtype: 'float32' })));
      current = res.params;
      state = res.state;
    });
    const fmt = (xs: number[]) => `${percentile(xs, 50).toFixed(1)} / ${percentile(xs, 99).toFixed(1)}`;
    rows.push(`| 1e${Math.log10(n)} | ${fmt(hosted)} | ${fmt(hostedParams)} | ${fmt(stateless)} | ${runs} |`);
    console.log(rows.at(-1));
  }
} finally {
  wrangler.kill('SIGTERM');
  rmSync(persist, { recursive: true, force: true });
}

const section = [
  '<!-- http:begin -->',
  '## Step latency through `wrangler dev` (loopback, float32, default hyperparameters)',
  '',
  'Milliseconds, median / p99, measured by a Node client on the same machine (JSON encode, HTTP, Worker, Durable Object, JSON decode).',
  'Hosted: the client sends only gradients; `return=none` omits the params from the response. Stateless: the client sends params,',
  'gradients and state and receives them back (limits raised with `--var` for this run so 1e6 fits; the default MAX_ELEMENTS is 250,000).',
  '',
  '| elements | hosted, `return=none` | hosted, params returned | stateless | runs |',
  '|---:|---:|---:|---:|---:|',
  ...rows,
  '',
  '<!-- http:end -->',
].join('\n');

const file = join(ROOT, 'BENCHMARKS.md');
let text = readFileSync(file, 'utf8');
text = /<!-- http:begin -->[\s\S]*<!-- http:end -->/.test(text)
  ? text.replace(/<!-- http:begin -->[\s\S]*<!-- http:end -->/, section)
  : `${text.trimEnd()}\n\n${section}\n`;
writeFileSync(file, text);
console.log(`updated ${file}`);
