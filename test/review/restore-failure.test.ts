// Review probe: a checkpoint restore that fails after its data was streamed into memory (trailing
// bytes, a non-finite value in the last tensor, a stream that errors) leaves the journalled state as it was.

import { exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from '../helpers/http.ts';
import { authed, createOptimizer, parse } from '../helpers/optimizers.ts';
import { readSafetensors } from '../helpers/safetensors.ts';

const ST = 'application/vnd.safetensors';
const N = 32768 * 9 + 5;

describe('failed restores', () => {
  it('each failure mode changes nothing (no eviction in between: the in-memory state is reloaded)', { timeout: 300_000 }, async () => {
    const opt = await createOptimizer({ shapes: { w: [N] }, init: 'zeros', dtype: 'float64', hyperparams: { lr: 0.01 } });
    const send = (method: string, path: string, body?: BodyInit, headers: Record<string, string> = {}) =>
      exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}${path}`, { method, body, headers: authed(opt.token, headers), duplex: 'half' } as RequestInit));
    expect((await send('PUT', '/params', new Uint8Array(new Float64Array(N).fill(0.5).buffer), { 'content-type': 'application/octet-stream' })).status).toBe(200);
    for (let k = 0; k < 4; k++) await (await send('POST', '/step?return=none', new Uint8Array(new Float64Array(N).map((_, i) => Math.sin(i + k)).buffer), { 'content-type': 'application/octet-stream' })).arrayBuffer();
    const snap = async () => new Uint8Array(await (await send('GET', '/state', undefined, { accept: ST })).arrayBuffer());
    const before = await snap();
    // A checkpoint of other values, same layout.
    const other = await createOptimizer({ params: { w: new Array(N).fill(0) }, dtype: 'float64' });
    const ckRes = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${other.id}/state`, { headers: authed(other.token, { accept: ST }) }));
    const ck = new Uint8Array(await ckRes.arrayBuffer());
    const trailing = new Uint8Array(ck.length + 3);
    trailing.set(ck);
    const nonFinite = ck.slice();
    new DataView(nonFinite.buffer).setFloat64(nonFinite.length - 4 * 1 - 8, Infinity, true); // last exp_avg_sq element, before the F32 step scalar
    const variants: Array<[string, () => BodyInit]> = [
      ['trailing bytes, chunked', () => new ReadableStream({ start(c) { c.enqueue(trailing); c.close(); } })],
      ['non-finite last value', () => nonFinite],
      ['stream errors at the end', () => new ReadableStream({ start(c) { c.enqueue(ck.slice(0, ck.length - 10)); setTimeout(() => c.error(new Error('gone')), 20); } })],
    ];
    for (const [what, body] of variants) {
      const r = await parse(await send('PUT', '/state', body(), { 'content-type': ST }));
      expect(r.status, `${what}: ${JSON.stringify(r.body)}`).toBeGreaterThanOrEqual(400);
      expect(r.status, what).toBeLessThan(500);
      const after = await snap();
      const a = readSafetensors(before);
      const b = readSafetensors(after);
      for (const [name, t] of a.tensors) expect(Buffer.compare(Buffer.from(t.data), Buffer.from(b.tensors.get(name)!.data)), `${what}: ${name}`).toBe(0);
    }
  });
});
