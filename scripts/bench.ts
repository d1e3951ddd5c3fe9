// `npm run bench`: times the Adam step for 1e3..1e7 elements in float32 and float64 on three
// kernels: the JS kernel (src/optim/adam.ts), the WebAssembly SIMD kernel (src/optim/wasm) on
// ordinary typed arrays (copied in and out in chunks) and on workspace views of its memory (stepped
// in place, no copy); and torch's CPU Adam step on the same machine in the same run when
// /usr/bin/python3 has torch. Writes the medians and ratios to BENCHMARKS.md (keeping the section
// scripts/bench-http.ts maintains). Not a test: numbers vary by machine.

import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { ADAM_DEFAULTS, adamStepInPlace, initAdamState, useWasmKernel, type AdamStepInput, type Dtype } from '../src/optim/adam.ts';
import { createWasmAdam } from '../src/optim/wasm/kernel.ts';

const SIZES = [1e3, 1e4, 1e5, 1e6, 1e7];
const DTYPES: Dtype[] = ['float32', 'float64'];
const PYTHON = '/usr/bin/python3';
// Node compiles the module from bytes (workerd cannot, so @cloudflare/workers-types declares no such constructor).
const ModuleFromBytes = WebAssembly.Module as unknown as new (bytes: Uint8Array) => WebAssembly.Module;
const WASM = createWasmAdam(new ModuleFromBytes(readFileSync(join(import.meta.dirname, '..', 'src', 'optim', 'wasm', 'adam.wasm'))));

/** js: the JS kernel; wasm-copy: the wasm kernel on ordinary arrays; wasm-views: on workspace views. */
type Kernel = 'js' | 'wasm-copy' | 'wasm-views';
const KERNELS: Kernel[] = ['js', 'wasm-copy', 'wasm-views'];

interface Row {
  n: number;
  dtype: Dtype;
  medianS: number;
  runs: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Deterministic pseudo-random normals (Box-Muller on a xorshift stream). */
function randn(n: number, seed: number): Float64Array {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return ((x >>> 0) + 1) / 4294967297;
  };
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(next())) * Math.cos(2 * Math.PI * next());
  return out;
}

function benchKernel(n: number, dtype: Dtype, kernel: Kernel, budgetMs = 1000, maxRuns = 1000): Row {
  const make = (seed: number) => (dtype === 'float32' ? Float32Array.from(randn(n, seed)) : randn(n, seed));
  let input: AdamStepInput;
  if (kernel === 'wasm-views') {
    const ws = WASM.workspace(dtype, n, false);
    ws.params.set(make(1));
    ws.grads.set(make(2));
    input = { dtype, hyperparams: ADAM_DEFAULTS, params: ws.params, grads: ws.grads, state: { step: 0, m: ws.m, v: ws.v, vMax: null } };
  } else {
    input = { dtype, hyperparams: ADAM_DEFAULTS, params: make(1), grads: make(2), state: initAdamState(dtype, n, false) };
  }
  useWasmKernel(kernel === 'js' ? null : WASM);
  // Warm up for 200 ms (at least 3 steps) so the JIT has tiered up before timing starts.
  const warmUntil = performance.now() + 200;
  for (let i = 0; i < 3 || performance.now() < warmUntil; i++) adamStepInPlace(input);
  const times: number[] = [];
  const start = performance.now();
  while (times.length < maxRuns && (times.length < 5 || performance.now() - start < budgetMs)) {
    const t0 = performance.now();
    adamStepInPlace(input);
    times.push((performance.now() - t0) / 1000);
  }
  useWasmKernel(null);
  return { n, dtype, medianS: median(times), runs: times.length };
}

function benchTorch(): { version: string; rows: Row[] } | null {
  if (!existsSync(PYTHON)) return null;
  try {
    const out = execFileSync(PYTHON, [join(import.meta.dirname, 'bench_torch.py'), ...SIZES.map(String)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const parsed = JSON.parse(out) as { torch: string; results: Array<{ n: number; dtype: Dtype; median_s: number; runs: number }> };
    return { version: parsed.torch, rows: parsed.results.map((r) => ({ n: r.n, dtype: r.dtype, medianS: r.median_s, runs: r.runs })) };
  } catch (e) {
    console.error(`torch benchmark skipped: ${(e as Error).message.split('\n')[0]}`);
    return null;
  }
}

const fmtRate = (n: number, s: number) => `${((n / s) / 1e6).toFixed(1)} M/s`;
const fmtTime = (s: number) => (s < 1e-3 ? `${(s * 1e6).toFixed(1)} µs` : `${(s * 1e3).toFixed(2)} ms`);
const fmtN = (n: number) => `1e${Math.round(Math.log10(n))}`;

function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('model name'));
    if (line) return line.split(':')[1]!.trim();
  } catch {}
  return cpus()[0]?.model ?? 'unknown CPU';
}

const ours: Record<Kernel, Row[]> = { js: [], 'wasm-copy': [], 'wasm-views': [] };
let slow32 = 0; // float32 4-lane vectors that took the wasm kernel's scalar path
let elements32 = 0;
for (const dtype of DTYPES) {
  for (const n of SIZES) {
    for (const kernel of KERNELS) {
      const { slowVectors, elements } = WASM.stats;
      const row = benchKernel(n, dtype, kernel);
      if (dtype === 'float32') {
        slow32 += WASM.stats.slowVectors - slowVectors;
        elements32 += WASM.stats.elements - elements;
      }
      ours[kernel].push(row);
      console.log(`adam-api ${kernel} ${dtype} n=${fmtN(n)}: ${fmtTime(row.medianS)} (${fmtRate(n, row.medianS)}), ${row.runs} runs`);
    }
  }
}
const slowShare = (4 * slow32) / Math.max(1, elements32);
console.log(`wasm float32: ${slow32} of ${elements32 / 4} vectors took the scalar path`);
const torch = benchTorch();
if (torch) for (const r of torch.rows) console.log(`torch ${r.dtype} n=${fmtN(r.n)}: ${fmtTime(r.medianS)} (${fmtRate(r.n, r.medianS)})`);

const lines: string[] = [];
lines.push('# Benchmarks', '');
lines.push('Generated by `npm run bench` (scripts/bench.ts). Numbers are medians over repeated runs on one machine; re-run to refresh.', '');
lines.push(`- Date: ${new Date().toISOString().slice(0, 10)}`);
lines.push(`- Machine: ${cpuModel()}, ${cpus().length} logical CPUs, Linux`);
lines.push(`- adam-api: Node ${process.version} (V8, the engine of workerd), \`adamStepInPlace\` on typed arrays, single thread`);
lines.push(`- Peer: ${torch ? `torch ${torch.version} CPU, \`torch.optim.Adam(foreach=False)\`, \`torch.set_num_threads(1)\`, same machine, same run` : 'torch not available in this run (needs /usr/bin/python3 with python3-torch)'}`);
lines.push('');
lines.push('## Adam step kernel (default hyperparameters), elements per second', '');
lines.push(
  'Three kernels, all bit-identical to each other (and, in float32, to torch): **JS** (src/optim/adam.ts); **wasm, copy** = the ' +
    'WebAssembly SIMD kernel (src/optim/wasm) called through `adamStepInPlace` on ordinary typed arrays, copied into its memory ' +
    'and back in chunks of 16,384 elements (what the Worker does); **wasm, in place** = the same kernel on arrays that live in its ' +
    'memory (`workspace()` views), with no copy. Ratio = adam-api throughput / torch throughput (above 1: adam-api is faster).',
  '',
);
lines.push('| dtype | elements | JS | wasm, copy | wasm, in place | torch | JS / torch | wasm copy / torch | wasm in place / torch |');
lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
ours.js.forEach((js, i) => {
  const copy = ours['wasm-copy'][i]!;
  const views = ours['wasm-views'][i]!;
  const t = torch?.rows.find((x) => x.n === js.n && x.dtype === js.dtype);
  const cell = (r: Row) => `${fmtRate(r.n, r.medianS)} (${fmtTime(r.medianS)})`;
  const ratio = (r: Row) => (t ? (t.medianS / r.medianS).toFixed(2) : 'n/a');
  lines.push(
    `| ${js.dtype} | ${fmtN(js.n)} | ${cell(js)} | ${cell(copy)} | ${cell(views)} | ${t ? cell(t) : 'n/a'} | ${ratio(js)} | ${ratio(copy)} | ${ratio(views)} |`,
  );
});
lines.push('');
lines.push(
  'float32 needs torch\'s fused multiply-adds rounded once. The JS kernel pays a `Math.fround` per operation and an exact ' +
    'fused multiply-add emulation. The wasm kernel runs 4 lanes: each fused multiply-add is computed in f64 (exact product) and ' +
    'rounded to f32 once, and a lane whose f64 sum is a float32 midpoint or lands in the subnormal range sends its 4 elements ' +
    `through an exact scalar path (${(slowShare * 100).toPrecision(2)}% of the elements in this run). Its floor is the ` +
    'divider: a sqrt and two divisions per element, 4 lanes at a time (SIMD128), where torch uses 8-lane AVX2. ' +
    'float64 emulates torch\'s fused multiply-adds with Dekker/TwoSum error terms (2 lanes in wasm), which is why it is slower than float32.',
);
lines.push('');
lines.push(
  'Compare ratios within one run. On this 2-vCPU machine torch\'s float32 throughput at 1e5–1e6 elements varied between runs ' +
    'from about 200 to 890 M/s (a shared VM: we did not pin down the cause), while the wasm kernel stayed at 290–430 M/s ' +
    '(copy) and 530–590 M/s (in place). So the target "at least as fast as torch float32 per element" holds at 1e3, 1e4 and 1e7 ' +
    'in every run seen, and at 1e5–1e6 it depends on the run: where torch reaches its fast level there (700–890 M/s), torch is faster, by up to about 2.8× against the copy path the Worker uses.',
);
lines.push('');

// Keep the HTTP latency section that scripts/bench-http.ts writes into the same file.
const out = join(import.meta.dirname, '..', 'BENCHMARKS.md');
const previous = existsSync(out) ? readFileSync(out, 'utf8') : '';
const http = /<!-- http:begin -->[\s\S]*<!-- http:end -->/.exec(previous);
writeFileSync(out, lines.join('\n') + (http ? `\n${http[0]}\n` : ''));
console.log(`wrote ${out}`);
