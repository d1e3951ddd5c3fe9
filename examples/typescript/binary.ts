// Binary tensors from TypeScript with plain fetch: a hosted optimizer created by shapes, params
// uploaded in raw parts, steps with Float32Array gradients (and bfloat16 ones, half the bytes),
// params back as a Float32Array, and a safetensors checkpoint restored into a second optimizer.
//   npx node examples/typescript/binary.ts        (Node 22.18+ runs TypeScript directly)
// Server: $ADAM_API, or http://localhost:8787 (`npm run dev`).

export {};

const API = process.env.ADAM_API ?? 'http://localhost:8787';
const RAW = 'application/octet-stream';
const SAFETENSORS = 'application/vnd.safetensors';

async function call(path: string, init: RequestInit & { token?: string } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (init.token) headers.set('authorization', `Bearer ${init.token}`);
  const res = await fetch(API + path, { ...init, headers });
  if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path}: ${res.status} ${await res.text()}`);
  return res;
}

/** The little-endian bytes of a typed array (every platform Workers and Node run on is little-endian). */
const bytes = (a: Float32Array) => new Uint8Array(a.buffer as ArrayBuffer, a.byteOffset, a.byteLength);

/** bfloat16: the high 16 bits of each float32 (rounded to nearest even), half the upload. */
function bfloat16(a: Float32Array): Uint8Array<ArrayBuffer> {
  const words = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const out = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = (words[i]! + 0x7fff + ((words[i]! >>> 16) & 1)) >>> 16;
  return new Uint8Array(out.buffer);
}

// A model of two tensors, created by shapes: nothing but its layout crosses the wire at first.
const shapes = { 'fc.weight': [256, 784], 'fc.bias': [256] };
const created = await (
  await call('/v1/optimizers', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ shapes, hyperparams: { lr: 1e-3 } }) })
).json();
const { id, token } = created as { id: string; token: string };
const layout = (created as { layout: Array<{ name: string; offset: number; size: number }> }).layout;
console.log('layout:', layout.map((t) => `${t.name}@${t.offset}+${t.size}`).join(', '));

// Upload the initial params tensor by tensor (each PUT could also be a range: ?tensor=…&offset=…).
const size = layout.reduce((n, t) => n + t.size, 0);
const init = new Float32Array(size).map((_, i) => Math.sin(i) * 0.05);
for (const t of layout) {
  await call(`/v1/optimizers/${id}/params?tensor=${encodeURIComponent(t.name)}`, {
    method: 'PUT', token, headers: { 'content-type': RAW }, body: bytes(init.subarray(t.offset, t.offset + t.size)),
  });
}

// Steps: gradients as raw float32 (or bfloat16), new params back as raw float32.
let params = init;
for (let k = 0; k < 3; k++) {
  const grads = new Float32Array(size).map((_, i) => Math.cos(i * (k + 1)) * 0.01);
  const res = await call(`/v1/optimizers/${id}/step`, {
    method: 'POST', token,
    headers: k === 2 ? { 'content-type': `${RAW}; dtype=bfloat16`, accept: RAW } : { 'content-type': RAW, accept: RAW },
    body: k === 2 ? bfloat16(grads) : bytes(grads),
  });
  params = new Float32Array(await res.arrayBuffer());
  console.log(`step ${res.headers.get('step')} lr ${res.headers.get('lr')}: params[0] = ${params[0]}, params[${size - 1}] = ${params[size - 1]}`);
}

// A safetensors checkpoint (params, exp_avg, exp_avg_sq, step; torch's names) restored elsewhere.
const checkpoint: Uint8Array<ArrayBuffer> = new Uint8Array(await (await call(`/v1/optimizers/${id}/state`, { token, headers: { accept: SAFETENSORS } })).arrayBuffer());
const copy = (await (await call('/v1/optimizers', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ params: [0] }) })).json()) as { id: string; token: string };
await call(`/v1/optimizers/${copy.id}/state`, { method: 'PUT', token: copy.token, headers: { 'content-type': SAFETENSORS }, body: checkpoint });
const copied = new Float32Array(await (await call(`/v1/optimizers/${copy.id}/params`, { token: copy.token, headers: { accept: RAW } })).arrayBuffer());
const same = copied.length === params.length && copied.every((x, i) => Object.is(x, params[i]));
console.log(`checkpoint: ${checkpoint.length} bytes; restored params identical: ${same}`);

for (const o of [{ id, token }, copy]) await call(`/v1/optimizers/${o.id}`, { method: 'DELETE', token: o.token });
if (!same) process.exit(1);
