// The scale run of a sharded hosted optimizer (not a test; `node scripts/scale-run-sharded.ts`): under plain
// workerd (scripts/workerd-serve.ts), creates an optimizer of a GPT-like layout of 101,580,800
// float32 parameters by shapes (a coordinator and N shard objects, docs/scale-out.md), uploads
// its params in raw parts of 32 MiB with ?offset=, steps it with raw float32 and bfloat16
// gradients (`?return=none`), reads its params back raw once, and reports each phase's time, the
// isolate's memory (all objects of one workerd run in one isolate: divided by the object count
// for a per-object figure), the workerd process's RSS and the size of the objects' SQLite files.
//
// Options: --optimizer NAME (default adam), --shards N (default 25 for adam; absent for other
// optimizers: the server's automatic count), --steps N (default 4 per gradient dtype),
// --layers N (default 48), --vocab N (default 50000), --part-mb N (default 64: the float32 gradient
// is also sent in parts of N MiB, `?part_offset=` under one Idempotency-Key, as the clients do above
// 64 MiB; 0: not).

import { readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { freePort, startWorkerd } from './workerd-serve.ts';
import { Isolate, expectOk, request, rssMb } from './scale-helpers.ts';

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : fallback;
};
const OPTIMIZER = option('optimizer', 'adam');
const SHARDS = option('shards', OPTIMIZER === 'adam' ? '25' : '');
const STEPS = Number(option('steps', '4'));
const LAYERS = Number(option('layers', '48'));
const VOCAB = Number(option('vocab', '50000'));
const PART_MB = Number(option('part-mb', '64'));
const WIDTH = 1024;
/** Elements per upload part: 32 MiB of float32, the most one PUT of a sharded optimizer takes (SHARDED_UPLOAD_BYTES). */
const PART = (32 << 20) / 4;

// The layout of src/tensors/placement.test.ts's 100M-parameter model: an embedding and LAYERS
// layers of a 1,024 × 1,024 weight and a bias.
const shapes: Record<string, number[]> = { 'embed.weight': [VOCAB, WIDTH] };
for (let i = 0; i < LAYERS; i++) {
  shapes[`h.${i}.weight`] = [WIDTH, WIDTH];
  shapes[`h.${i}.bias`] = [WIDTH];
}
const n = Object.values(shapes).reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** float32 → bfloat16 bits, round to nearest even (as torch's `.to(torch.bfloat16)`; no NaN here). */
function toBf16(x: Float32Array): Uint8Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const b = bits[i]!;
    out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return new Uint8Array(out.buffer);
}

/** Bytes and count of the SQLite files under workerd's storage directory (scripts/workerd-serve.ts: `<cwd>/storage`). */
function storage(pid: number): { mb: number; databases: number } {
  const dir = join(readlinkSync(`/proc/${pid}/cwd`), 'storage');
  let bytes = 0;
  let databases = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        bytes += statSync(p).size;
        if (e.name.endsWith('.sqlite')) databases++;
      }
    }
  };
  walk(dir);
  return { mb: bytes / 2 ** 20, databases };
}

/**
 * Rows and BLOB bytes of each table, summed over the objects' SQLite files (opened read-only while
 * workerd runs; a file that cannot be read is counted in `unread`).
 */
function census(pid: number): { tables: Record<string, { rows: number; mb: number }>; unread: number } {
  const tables: Record<string, { rows: number; mb: number }> = {};
  let unread = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.sqlite')) {
        try {
          const db = new DatabaseSync(p, { readOnly: true });
          for (const { name } of db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%'").all() as Array<{ name: string }>) {
            const cols = (db.prepare(`PRAGMA table_info("${name}")`).all() as Array<{ name: string }>).map((c) => c.name);
            const size = cols.includes('bytes') ? 'coalesce(sum(length(bytes)), 0)' : '0';
            const r = db.prepare(`SELECT count(*) AS n, ${size} AS b FROM "${name}"`).get() as { n: number; b: number };
            const t = (tables[name] ??= { rows: 0, mb: 0 });
            t.rows += r.n;
            t.mb += r.b / 2 ** 20;
          }
          db.close();
        } catch {
          unread++;
        }
      }
    }
  };
  walk(join(readlinkSync(`/proc/${pid}/cwd`), 'storage'));
  return { tables, unread };
}

const inspectorPort = await freePort();
const server = await startWorkerd({ log: (m) => console.error(m), inspectorPort });
const isolate = await Isolate.open(inspectorPort);
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(', ');
console.log(`${server.version}; load averages ${load()}`);
let url = '';
let auth: Record<string, string> = {};
try {
  const base = server.url;
  const rows: string[][] = [];
  let objects = 1;
  /** One phase: its requests run while the isolate is sampled; then its settled size, the process's RSS and the storage on disk. */
  const phase = async <T>(name: string, run: () => Promise<T>, timing?: (r: T) => string): Promise<T> => {
    isolate.startSampling();
    const r = await run();
    const peak = await isolate.stopSampling();
    const settled = await isolate.settledMb(`${server.url}/healthz`);
    const rss = rssMb(server.pid);
    const disk = storage(server.pid);
    const settledText = settled === null ? 'n/a' : `${settled.toFixed(0)} MB (${(settled / objects).toFixed(1)} MB per object)`;
    const row = [name, timing ? timing(r) : '', `${peak.toFixed(0)} MB`, settledText, `${rss.toFixed(0)} MB`, `${disk.mb.toFixed(0)} MB in ${disk.databases} databases`];
    rows.push(row);
    console.log(row.join(' | '));
    return r;
  };
  await phase('idle (served /healthz)', async () => null);

  const hyperparams = OPTIMIZER === 'sgd' ? { lr: 0.01, momentum: 0.9 } : {};
  const createBody = { optimizer: OPTIMIZER, shapes, init: 'zeros', dtype: 'float32', ...(SHARDS ? { shards: Number(SHARDS) } : {}), hyperparams };
  const created = await phase(
    `create by shapes (${OPTIMIZER}, ${n.toLocaleString('en')} float32 elements${SHARDS ? `, shards: ${SHARDS}` : ''})`,
    async () => {
      const r = await expectOk('create', request(`${base}/v1/optimizers`, 'POST', { 'content-type': 'application/json' }, Buffer.from(JSON.stringify(createBody))), 201);
      const body = JSON.parse(r.body.toString());
      objects = 1 + Number(body.shards ?? 0);
      return { ms: r.ms, body };
    },
    (r) => `${(r.ms / 1000).toFixed(2)} s`,
  );
  auth = { authorization: `Bearer ${created.body.token}` };
  url = `${base}/v1/optimizers/${created.body.id}`;
  const info = JSON.parse((await expectOk('describe', request(url, 'GET', auth))).body.toString());
  const shardCount = Number(info.shards);
  if (objects !== 1 + shardCount) throw new Error(`created with ${objects - 1} shards, described with ${shardCount}`);
  console.log(`described: ${JSON.stringify({ size: info.size, max_elements: info.max_elements, shards: info.shards })}`.slice(0, 400));

  const params = new Float32Array(n);
  for (let i = 0; i < n; i++) params[i] = 0.02 * Math.sin(i * 0.37 + 1);
  const partMs: number[] = [];
  await phase(
    `upload in ${Math.ceil(n / PART)} raw parts of ≤ 32 MiB (?offset=)`,
    async () => {
      for (let offset = 0; offset < n; offset += PART) {
        const part = params.subarray(offset, Math.min(n, offset + PART));
        partMs.push((await expectOk('upload', request(`${url}/params?offset=${offset}`, 'PUT', { ...auth, 'content-type': 'application/octet-stream' }, new Uint8Array(part.buffer, part.byteOffset, part.byteLength)))).ms);
      }
      return partMs.reduce((a, b) => a + b, 0);
    },
    (ms) => `${(ms / 1000).toFixed(2)} s (part p50 ${median(partMs).toFixed(0)} ms, slowest ${Math.max(...partMs).toFixed(0)} ms)`,
  );

  const grads = new Float32Array(n);
  for (let i = 0; i < n; i++) grads[i] = 0.01 * Math.sin(i * 0.37 + 2);
  const f32 = new Uint8Array(grads.buffer);
  const bf16 = toBf16(grads);
  const steps: Record<string, number[]> = {};
  const serverTimings: Array<Record<string, number | string>> = [];
  const partBytes = PART_MB << 20;
  const modes: Array<readonly [string, Uint8Array, string, number]> = [
    ['F32', f32, 'application/octet-stream', 0],
    ['BF16', bf16, 'application/octet-stream; dtype=BF16', 0],
    ...(PART_MB > 0 && f32.length > partBytes ? [[`F32 in ${PART_MB} MiB parts`, f32, 'application/octet-stream', partBytes] as const] : []),
  ];
  let key = 0;
  for (const [label, body, type, part] of modes) {
    const times: number[] = (steps[label] = []);
    await phase(
      `${STEPS} steps, raw ${label} gradients (${(body.length / 1e6).toFixed(0)} MB${part ? `, ${Math.ceil(body.length / part)} requests each` : ''}), return=none`,
      async () => {
        for (let s = 0; s < STEPS; s++) {
          let r;
          if (part === 0) r = await expectOk('step', request(`${url}/step?return=none`, 'POST', { ...auth, 'content-type': type }, body));
          else {
            // Parts of consecutive elements under one key: 202 each but the last, which applies the step.
            const headers = { ...auth, 'content-type': type, 'idempotency-key': `scale-${++key}` };
            let ms = 0;
            for (let at = 0; ; at += part) {
              const last = at + part >= body.length;
              const res = await expectOk('step part', request(`${url}/step?return=none&part_offset=${at / 4}`, 'POST', headers, body.subarray(at, Math.min(body.length, at + part))), last ? 200 : 202);
              ms += res.ms;
              if (last) {
                r = { ...res, ms };
                break;
              }
            }
          }
          r = r!;
          times.push(r.ms);
          const phases = Object.fromEntries(String(r.headers['server-timing'] ?? '').split(',').map((p) => [p.trim().split(';')[0], Number(/dur=([\d.]+)/.exec(p)?.[1])]));
          serverTimings.push({ label, ...phases });
          console.log(`  ${label} step ${s + 1}: ${r.ms.toFixed(0)} ms; Server-Timing ${r.headers['server-timing'] ?? 'none'}`);
        }
        return times;
      },
      (t) => `p50 ${median(t).toFixed(0)} ms (each: ${t.map((x) => x.toFixed(0)).join(', ')})`,
    );
  }
  for (const [label] of modes) {
    const mine = serverTimings.filter((t) => t.label === label);
    const keys = [...new Set(mine.flatMap((t) => Object.keys(t).filter((k) => k !== 'label' && k !== '')))];
    console.log(`${label} Server-Timing p50: ${keys.map((k) => `${k} ${median(mine.map((t) => Number(t[k]))).toFixed(0)} ms`).join(', ')}`);
  }
  const rowsNow = census(server.pid);
  console.log(`stored rows after ${2 * STEPS} steps (all objects; unread files: ${rowsNow.unread}):`);
  for (const [name, t] of Object.entries(rowsNow.tables)) console.log(`  ${name}: ${t.rows} rows${t.mb > 0 ? `, ${t.mb.toFixed(1)} MiB of BLOBs` : ''}`);
  // Idle objects are evicted after a few seconds without requests (workerd as Cloudflare): the census
  // and the collections above take that long, so the first read may reload every shard from storage
  // (its checkpoint chunks plus the journalled steps they lag); the second is warm.
  console.log(`workerd RSS before reading the params: ${rssMb(server.pid).toFixed(0)} MB`);
  for (const which of ['first', 'again']) {
    await phase(
      `GET params, raw (${which})`,
      async () => {
        const got = await expectOk('params', request(`${url}/params`, 'GET', { ...auth, accept: 'application/octet-stream' }));
        if (got.body.length !== 4 * n) throw new Error(`GET params returned ${got.body.length} bytes, expected ${4 * n}`);
        const out = new Float32Array(got.body.buffer, got.body.byteOffset, n);
        let changed = 0;
        for (let i = 0; i < n; i++) {
          if (!Number.isFinite(out[i]!)) throw new Error(`param ${i} is ${out[i]}`);
          if (out[i] !== params[i]) changed++;
        }
        console.log(`  params: ${changed.toLocaleString('en')} of ${n.toLocaleString('en')} changed by the steps`);
        return got.ms;
      },
      (ms) => `${ms.toFixed(0)} ms (${((4 * n) / 1e6).toFixed(0)} MB)`,
    );
  }
  const history = JSON.parse((await expectOk('history', request(`${url}/history`, 'GET', auth))).body.toString());
  console.log(`history: ${JSON.stringify(history).slice(0, 300)}`);

  await phase('DELETE', async () => (await expectOk('delete', request(url, 'DELETE', auth), 204)).ms, (ms) => `${ms.toFixed(0)} ms`);
  url = '';
  console.log(`\n${OPTIMIZER}, float32, ${n.toLocaleString('en')} elements, ${shardCount} shards + 1 coordinator; load averages after: ${load()}`);
  console.log('\n| phase | time | isolate peak | isolate settled (after GC) | workerd RSS | SQLite files |\n|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
} finally {
  if (url) await request(url, 'DELETE', auth).catch(() => {});
  isolate.close();
  await server.stop();
}
