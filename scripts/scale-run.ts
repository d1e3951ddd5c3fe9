// The scale run of one hosted optimizer (not a test; `node scripts/scale-run.ts`): under plain
// workerd (scripts/workerd-serve.ts), creates an optimizer by shapes at the per-object limit,
// uploads its params in raw parts, steps it with raw gradients, reads its params and its
// safetensors checkpoint, and reports the workerd process's resident memory after each phase
// beside the README's arithmetic (docs/scale-out.md: the per-object budget a sharded optimizer
// is built from). Local workerd enforces no memory limit, so the process's RSS is what shows
// whether the budget is real.
//
// Options: --optimizer NAME (default adam), --elements N (default: the optimizer's limit),
// --steps N (default 5).

import { freePort, startWorkerd } from './workerd-serve.ts';
import { Isolate, expectOk, request, rssMb } from './scale-helpers.ts';

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : fallback;
};
const OPTIMIZER = option('optimizer', 'adam');
const STEPS = Number(option('steps', '5'));
const PART = 1 << 20; // elements per upload part (4 MiB of float32)

const inspectorPort = await freePort();
const server = await startWorkerd({ log: (m) => console.error(m), inspectorPort });
const isolate = await Isolate.open(inspectorPort);
try {
  const base = server.url;
  const rows: Array<[string, string, string, string, string]> = [];
  /** One phase: its requests run while the isolate is sampled; then its settled size and the process's RSS. */
  const phase = async <T>(name: string, run: () => Promise<T>, timing?: (r: T) => string): Promise<T> => {
    isolate.startSampling();
    const r = await run();
    const peak = await isolate.stopSampling();
    const settled = await isolate.settledMb(`${server.url}/healthz`);
    const rss = rssMb(server.pid);
    const settledText = settled === null ? 'n/a (no collection within 5 s)' : `${settled.toFixed(1)} MB`;
    rows.push([name, timing ? timing(r) : '', `${peak.toFixed(1)} MB`, settledText, `${rss.toFixed(0)} MB`]);
    console.log(`${name}: ${timing ? timing(r) + ', ' : ''}isolate peak ${peak.toFixed(1)} MB, settled ${settledText}, workerd RSS ${rss.toFixed(0)} MB`);
    return r;
  };
  await phase('idle (served /healthz)', async () => null);

  // The optimizer's limit, from the server (GET /v1/optimizers/{id} reports max_elements).
  const probe = await expectOk('probe create', request(`${base}/v1/optimizers`, 'POST', { 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ optimizer: OPTIMIZER, shapes: { w: [1] }, dtype: 'float32', ...(OPTIMIZER === 'sgd' ? { hyperparams: { lr: 0.01 } } : {}) }))), 201);
  const probeBody = JSON.parse(probe.body.toString());
  const described = await expectOk('describe', request(`${base}/v1/optimizers/${probeBody.id}`, 'GET', { authorization: `Bearer ${probeBody.token}` }));
  const limit = Number(JSON.parse(described.body.toString()).max_elements);
  await expectOk('delete probe', request(`${base}/v1/optimizers/${probeBody.id}`, 'DELETE', { authorization: `Bearer ${probeBody.token}` }), 204);
  const n = Number(option('elements', String(limit)));
  console.log(`${OPTIMIZER}, float32, ${n.toLocaleString('en')} elements (limit ${limit.toLocaleString('en')})`);

  const created = JSON.parse((await expectOk('create', request(`${base}/v1/optimizers`, 'POST', { 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ optimizer: OPTIMIZER, shapes: { w: [n] }, init: 'zeros', dtype: 'float32', ...(OPTIMIZER === 'sgd' ? { hyperparams: { lr: 0.01, momentum: 0.9 } } : {}) }))), 201)).body.toString());
  const auth = { authorization: `Bearer ${created.token}` };
  const url = `${base}/v1/optimizers/${created.id}`;
  const params = new Float32Array(n);
  for (let i = 0; i < n; i++) params[i] = Math.sin(i * 0.37 + 1);
  await phase(
    'create by shapes, upload in raw parts of 4 MiB',
    async () => {
      let ms = 0;
      for (let offset = 0; offset < n; offset += PART) {
        const part = params.subarray(offset, Math.min(n, offset + PART));
        ms += (await expectOk('upload', request(`${url}/params?offset=${offset}`, 'PUT', { ...auth, 'content-type': 'application/octet-stream' }, new Uint8Array(part.buffer, part.byteOffset, part.byteLength)))).ms;
      }
      return ms;
    },
    (ms) => `${(ms / 1000).toFixed(2)} s`,
  );

  const grads = new Float32Array(n);
  for (let i = 0; i < n; i++) grads[i] = 0.01 * Math.sin(i * 0.37 + 2);
  const raw = new Uint8Array(grads.buffer);
  await phase(
    `${STEPS} steps, raw gradients, return=none`,
    async () => {
      const times: number[] = [];
      for (let s = 0; s < STEPS; s++) times.push((await expectOk('step', request(`${url}/step?return=none`, 'POST', { ...auth, 'content-type': 'application/octet-stream' }, raw))).ms);
      return times.sort((a, b) => a - b)[times.length >> 1]!;
    },
    (ms) => `median ${ms.toFixed(0)} ms`,
  );
  await phase(
    'a step returning the params (raw)',
    async () => (await expectOk('step', request(`${url}/step`, 'POST', { ...auth, 'content-type': 'application/octet-stream', accept: 'application/octet-stream' }, raw))).ms,
    (ms) => `${ms.toFixed(0)} ms`,
  );
  await phase(
    'GET params, raw',
    async () => {
      const got = await expectOk('params', request(`${url}/params`, 'GET', { ...auth, accept: 'application/octet-stream' }));
      if (got.body.length !== 4 * n) throw new Error(`GET params returned ${got.body.length} bytes, expected ${4 * n}`);
      return got.ms;
    },
    (ms) => `${ms.toFixed(0)} ms`,
  );
  const checkpoint = await phase(
    'GET state, safetensors checkpoint',
    async () => expectOk('checkpoint', request(`${url}/state`, 'GET', { ...auth, accept: 'application/vnd.safetensors' })),
    (r) => `${r.ms.toFixed(0)} ms, ${(r.body.length / 2 ** 20).toFixed(1)} MiB`,
  );
  await phase(
    'PUT state, the same checkpoint',
    async () => (await expectOk('restore', request(`${url}/state`, 'PUT', { ...auth, 'content-type': 'application/vnd.safetensors' }, checkpoint.body))).ms,
    (ms) => `${ms.toFixed(0)} ms`,
  );

  const arrays = Math.round(Number(server.vars.MAX_HOSTED_BYTES) / (4 * limit));
  console.log(`\n${OPTIMIZER}, float32, ${n.toLocaleString('en')} elements: ${arrays} arrays × 4 B = ${((arrays * n * 4) / 2 ** 20).toFixed(1)} MiB of tensors by the README's arithmetic (MAX_HOSTED_BYTES ${server.vars.MAX_HOSTED_BYTES})`);
  console.log('\n| phase | time | isolate peak | isolate settled (after GC) | workerd RSS |\n|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  await expectOk('delete', request(url, 'DELETE', auth), 204);
} finally {
  isolate.close();
  await server.stop();
}
