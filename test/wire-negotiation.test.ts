// Content-Type / Accept forms and safetensors headers that are odd but valid. Whitespace before the
// `;` of a JSON Content-Type (`application/json ; charset=utf-8`, valid per RFC 9110) was a 415 from
// the OpenAPI routes' JSON validator: every Content-Type is now brought to one spelling first.

import { exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { BASE } from './helpers/http.ts';
import { authed, createOptimizer, opCall, parse } from './helpers/optimizers.ts';
import { decodeValues, encodeValues, rawSafetensors, readSafetensors, writeSafetensors } from './helpers/safetensors.ts';

const ST = 'application/vnd.safetensors';
const RAW = 'application/octet-stream';

async function send(path: string, method: string, body: BodyInit | undefined, headers: Record<string, string>) {
  const res = await exports.default.fetch(new Request(`${BASE}${path}`, { method, body, headers }));
  const bytes = new Uint8Array(await res.arrayBuffer());
  const type = res.headers.get('content-type') ?? '';
  let json: any;
  if (/json/.test(type)) json = JSON.parse(new TextDecoder().decode(bytes));
  return { status: res.status, type, bytes, body: json, headers: res.headers };
}

describe('content types on the hosted step', () => {
  const cases: Array<[string, number]> = [
    ['application/json', 200],
    ['application/json; charset=utf-8', 200],
    ['application/json;charset=UTF-8', 200],
    ['APPLICATION/JSON', 200],
    ['application/vnd.api+json', 200],
    ['Application/Json ; charset="utf-8"', 200],
    ['application/json ; charset=utf-8', 200],
    ['application/json; charset="utf-8"', 200],
    ['application/json ', 200],
    ['application/json; charset=latin1', 415],
    ['text/plain', 415],
  ];
  for (const [ct, want] of cases) {
    it(`JSON body with Content-Type ${ct} → ${want}`, async () => {
      const opt = await createOptimizer({ params: [1, 2] });
      const r = await send(`/v1/optimizers/${opt.id}/step`, 'POST', JSON.stringify({ grads: [1, 1] }), authed(opt.token, { 'content-type': ct }));
      expect(r.status, JSON.stringify(r.body)).toBe(want);
    });
  }

  const rawCases: Array<[string, number]> = [
    [`${RAW};dtype=bfloat16`, 200],
    [`${RAW}; DTYPE="BF16"`, 200],
    [`${RAW}; dtype=float32`, 200],
    [`${RAW}; dtype=F32 ; foo=bar`, 200],
    [`${RAW}; dtype=float64`, 422],
    [`${RAW}; dtype=int8`, 415],
    [`${RAW}; dtype=`, 415],
  ];
  for (const [ct, want] of rawCases) {
    it(`raw Content-Type ${ct} → ${want}`, async () => {
      const opt = await createOptimizer({ params: [1, 2] });
      const bf = /bfloat16|BF16/.test(ct);
      const body = bf ? encodeValues([1, -1], 'BF16') : encodeValues([1, -1], 'F32');
      const r = await send(`/v1/optimizers/${opt.id}/step`, 'POST', body, authed(opt.token, { 'content-type': ct }));
      expect(r.status, JSON.stringify(r.body)).toBe(want);
    });
  }
});

describe('Accept on the hosted step', () => {
  const cases: Array<[string, number, string]> = [
    ['*/*', 200, RAW],
    ['application/*', 200, RAW],
    ['application/octet-stream;q=0, */*', 200, 'application/json'],
    ['*/*;q=0', 406, ''],
    ['application/json;q=0.5, application/vnd.safetensors;q=0.9', 200, ST],
    ['text/html, application/xhtml+xml, application/xml;q=0.9, */*;q=0.8', 200, RAW],
    ['application/problem+json', 200, 'application/json'],
    ['application/json;q=0', 406, ''],
  ];
  for (const [accept, want, type] of cases) {
    it(`Accept ${accept} → ${want} ${type}`, async () => {
      const opt = await createOptimizer({ params: [1, 2] });
      const r = await send(`/v1/optimizers/${opt.id}/step`, 'POST', encodeValues([1, -1], 'F32'), authed(opt.token, { 'content-type': RAW, accept }));
      expect(r.status).toBe(want);
      if (want === 200) expect(r.type.split(';')[0]).toBe(type);
    });
  }
});

describe('safetensors headers odd but valid', () => {
  it('whitespace, unicode, `/` and `.` names, escapes, metadata {}, 0-size tensor: create, step, checkpoint round trip', async () => {
    const names = ['layer.0/weight', 'ünï©ødé 名前', 'a\\"b', 'e\u0000f', '__proto__', 'x/y/z'];
    const tensors = names.map((name, i) => ({ name, dtype: 'F32' as const, shape: [2], data: encodeValues([i, -i], 'F32') }));
    tensors.push({ name: 'empty', dtype: 'F32', shape: [0, 3], data: new Uint8Array(0) });
    const header: Record<string, unknown> = Object.create(null);
    header.__metadata__ = {};
    let off = 0;
    for (const t of tensors) {
      Object.defineProperty(header, t.name, { enumerable: true, value: { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.data.length] } });
      off += t.data.length;
    }
    const text = '\n\t ' + JSON.stringify(header, null, 3) + '   \n';
    const file = rawSafetensors(text, tensors.map((t) => t.data));
    const c = await send('/v1/optimizers', 'POST', file, { 'content-type': ST });
    expect(c.status, JSON.stringify(c.body)).toBe(201);
    const opt = { id: c.body.id, token: c.body.token };
    expect(c.body.layout.map((l: { name: string }) => l.name)).toEqual([...names, 'empty']);
    // Step by safetensors, names as given.
    const g = rawSafetensors(text, tensors.map((t) => (t.data.length ? encodeValues([0.5, 0.5], 'F32') : t.data)));
    const s = await send(`/v1/optimizers/${opt.id}/step`, 'POST', g, authed(opt.token, { 'content-type': ST }));
    expect(s.status, JSON.stringify(s.body)).toBe(200);
    const back = readSafetensors(s.bytes);
    expect([...back.tensors.keys()].sort()).toEqual([...names, 'empty'].sort());
    // Checkpoint round trip into a fresh optimizer.
    const ck = await send(`/v1/optimizers/${opt.id}/state`, 'GET', undefined, authed(opt.token, { accept: ST }));
    expect(ck.status).toBe(200);
    const other = await createOptimizer({ params: [0] });
    const put = await send(`/v1/optimizers/${other.id}/state`, 'PUT', ck.bytes, authed(other.token, { 'content-type': ST }));
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    const ck2 = await send(`/v1/optimizers/${other.id}/state`, 'GET', undefined, authed(other.token, { accept: ST }));
    const a = readSafetensors(ck.bytes);
    const b = readSafetensors(ck2.bytes);
    for (const [k, t] of a.tensors) expect(decodeValues(b.tensors.get(k)!), k).toEqual(decodeValues(t));
  });

  it('a BOM before the header JSON', async () => {
    const t = { name: 'w', dtype: 'F32' as const, shape: [1], data: encodeValues([1], 'F32') };
    const file = rawSafetensors('\ufeff{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', [t.data]);
    const r = await send('/v1/optimizers', 'POST', file, { 'content-type': ST });
    expect(r.status, JSON.stringify(r.body)).toBe(422);
  });

  for (const [what, meta, want] of [
    ['__metadata__ null', 'null', 422],
    ['__metadata__ array', '[]', 422],
    ['__metadata__ number value', '{"a":1}', 422],
    ['__metadata__ nested object', '{"a":{}}', 422],
    ['__metadata__ empty', '{}', 201],
  ] as const) {
    it(`${what} → ${want}`, async () => {
      const text = `{"__metadata__":${meta},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`;
      const r = await send('/v1/optimizers', 'POST', rawSafetensors(text, [encodeValues([1], 'F32')]), { 'content-type': ST });
      expect(r.status, JSON.stringify(r.body)).toBe(want);
    });
  }

  for (const n of [0, 1, 2, 16 << 20, (16 << 20) + 1, 2 ** 40]) {
    it(`header length ${n} (body shorter) → 4xx`, async () => {
      const opt = await createOptimizer({ params: { w: [1] } });
      const r = await send(`/v1/optimizers/${opt.id}/step`, 'POST', rawSafetensors('{}', [], n), authed(opt.token, { 'content-type': ST }));
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(r.status).toBeLessThan(500);
    });
  }

  it('a body longer than its header says, and a chunked one', async () => {
    const opt = await createOptimizer({ params: { w: [1] } });
    const good = writeSafetensors([{ name: 'w', dtype: 'F32', shape: [1], data: encodeValues([1], 'F32') }]);
    const long = new Uint8Array(good.length + 3);
    long.set(good);
    const r = await send(`/v1/optimizers/${opt.id}/step`, 'POST', long, authed(opt.token, { 'content-type': ST }));
    expect(r.status).toBe(422);
    const chunked = new ReadableStream({ start(c) { c.enqueue(long.slice(0, 5)); c.enqueue(long.slice(5)); c.close(); } });
    const r2 = await send(`/v1/optimizers/${opt.id}/step`, 'POST', chunked, authed(opt.token, { 'content-type': ST }));
    expect(r2.status).toBe(422);
    const chunkedGood = new ReadableStream({ start(c) { for (const b of good) c.enqueue(new Uint8Array([b])); c.close(); } });
    const r3 = await send(`/v1/optimizers/${opt.id}/step`, 'POST', chunkedGood, authed(opt.token, { 'content-type': ST }));
    expect(r3.status).toBe(200);
    expect((await opCall('GET', opt, '')).body.step).toBe(1);
  });
});
