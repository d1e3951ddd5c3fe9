// Sparse (row) gradients in hosted steps' safetensors files, as test/clip-sparse and test/hosted-sparse send them.

import { callBytes } from './http.ts';
import { authed } from './optimizers.ts';
import { encodeValues, writeSafetensors, type Dt, type TestTensor } from './safetensors.ts';

const shapeOf = (t: unknown): number[] => (Array.isArray(t) ? [t.length, ...(t.length > 0 ? shapeOf(t[0]) : [])] : []);
const flatOf = (t: unknown): number[] => (Array.isArray(t) ? t.flatMap(flatOf) : [t as number]);

/** A hosted step as a safetensors file: rows as grads.indices/<name> and grads.values/<name>, dense tensors by name. */
export async function safetensorsStep(opt: { id: string; token: string }, grads: Record<string, unknown>, dtype: string, headers: Record<string, string> = {}) {
  const dt: Dt = dtype === 'float32' ? 'F32' : 'F64';
  const tensors: TestTensor[] = [];
  for (const [name, value] of Object.entries(grads)) {
    if (value === null) continue;
    if (typeof value === 'object' && !Array.isArray(value)) {
      const { indices, values } = value as { indices: number[]; values: unknown[] };
      tensors.push({ name: `grads.indices/${name}`, dtype: 'I64' as Dt, shape: [1, indices.length], data: new Uint8Array(BigInt64Array.from(indices.map(BigInt)).buffer) });
      tensors.push({ name: `grads.values/${name}`, dtype: dt, shape: shapeOf(values), data: encodeValues(values.flatMap(flatOf), dt) });
    } else tensors.push({ name, dtype: dt, shape: shapeOf(value), data: encodeValues(flatOf(value), dt) });
  }
  const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, writeSafetensors(tensors), authed(opt.token, { 'content-type': 'application/vnd.safetensors', accept: 'application/json', ...headers }));
  return { status: r.status, body: r.body };
}
