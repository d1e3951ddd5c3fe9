// A hosted optimizer runs one operation at a time; these check that nothing holds its lock for good:
// a binary body that stalls (or drips) is cut at TRANSFER_PACE with a 408 that changes nothing, a
// steady snapshot reader gets every byte however long it takes, a reader that stops is cut, and
// snapshots that are refused, abandoned or asked for with HEAD release the lock.
// TRANSFER_PACE is shrunk here (30 s grace in production) so the cuts take a fraction of a second.

import { exports } from 'cloudflare:workers';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TRANSFER_PACE } from '../src/wire/stream.ts';
import { BASE } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, parse } from './helpers/optimizers.ts';
import { encodeValues } from './helpers/safetensors.ts';

const ST = 'application/vnd.safetensors';
const RAW = 'application/octet-stream';
const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms))]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A body stream that sends `first` and then waits for the test (ctl) to send more, end it or fail it. */
function stalling(first: Uint8Array) {
  let ctl!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      ctl = c;
      c.enqueue(first);
    },
  });
  return { body, ctl };
}

const post = (opt: { id: string; token: string }, path: string, body: BodyInit, headers: Record<string, string>) =>
  exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}${path}`, { method: 'POST', body, headers: authed(opt.token, headers), duplex: 'half' } as RequestInit));
const put = (opt: { id: string; token: string }, path: string, body: BodyInit, headers: Record<string, string>) =>
  exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}${path}`, { method: 'PUT', body, headers: authed(opt.token, headers), duplex: 'half' } as RequestInit));

const saved = { ...TRANSFER_PACE };
beforeEach(() => Object.assign(TRANSFER_PACE, { graceMs: 300, bytesPerSecond: 64 * 1024 }));
afterEach(() => Object.assign(TRANSFER_PACE, saved));

describe('binary bodies keep pace (the lock is held while they arrive)', () => {
  for (const [what, path, send] of [
    ['step', '/step', post],
    ['upload', '/params', put],
  ] as const) {
    it(`a ${what} whose body stalls is a 408 within the grace time; meanwhile and afterwards other calls run, and nothing changed`, async () => {
      const opt = await createOptimizer({ params: { w: [1, 2, 3, 4] } });
      const before = await opCall('GET', opt, '/params');
      const { body } = stalling(new Uint8Array(8)); // 2 of 4 float32, then nothing
      const stalled = send(opt, path, body, { 'content-type': RAW });
      await sleep(50);
      const t0 = Date.now();
      const info = await within(opCall('GET', opt, ''), 5000);
      expect(info === 'timeout' ? 'timeout' : info.status, 'GET metadata while a body stalls').toBe(200);
      expect(Date.now() - t0).toBeLessThan(3000);
      const r = await parse(await stalled);
      expectProblem(r, 408, 'body');
      expect(r.body.type).toBe('urn:adam-api:problem:request-timeout');
      const after = await opCall('GET', opt, '/params');
      expect(after.body).toEqual(before.body);
      expect(after.headers.get('etag')).toBe(before.headers.get('etag'));
    });
  }

  it('a checkpoint restore that stalls is a 408 and the state is as it was', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2, 3] }, hyperparams: { lr: 0.1 } });
    await opCall('POST', opt, '/step', { grads: { w: [1, 1, 1] } });
    const ck = new Uint8Array(await (await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { headers: authed(opt.token, { accept: ST }) }))).arrayBuffer());
    const before = await opCall('GET', opt, '/state');
    const { body } = stalling(ck.slice(0, ck.length - 4));
    const r = await parse(await put(opt, '/state', body, { 'content-type': ST }));
    expect(r.status, JSON.stringify(r.body)).toBe(408);
    expect((await opCall('GET', opt, '/state')).body).toEqual(before.body);
  });

  it('a body that keeps arriving at the pace is read to its end, however long it takes', async () => {
    Object.assign(TRANSFER_PACE, { graceMs: 200, bytesPerSecond: 40 });
    const opt = await createOptimizer({ params: { w: [1, 2, 3, 4] } });
    const { body, ctl } = stalling(new Uint8Array(4));
    const p = post(opt, '/step?return=none', body, { 'content-type': RAW });
    // 4 more bytes every 150 ms (27 B/s after the grace: under 40 B/s on average, never idle long): ~450 ms, more than the grace.
    for (let k = 0; k < 3; k++) {
      await sleep(150);
      ctl.enqueue(encodeValues([0.5], 'F32'));
    }
    ctl.close();
    const r = await parse(await p);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect((await opCall('GET', opt, '')).body.step).toBe(1);
  });

  it('a body whose stream errors mid-way is a 422 and nothing changes', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2, 3, 4] } });
    const { body, ctl } = stalling(new Uint8Array(8));
    const p = post(opt, '/step', body, { 'content-type': RAW });
    setTimeout(() => ctl.error(new Error('client gone')), 50);
    const r = await parse(await p);
    expect(r.status, JSON.stringify(r.body)).toBe(422);
    expect((await opCall('GET', opt, '')).body.step).toBe(0);
  });

  it('a chunked raw step (no Content-Length) that ends early, runs long or is empty is a 422', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2, 3, 4] } });
    for (const n of [12, 20, 0]) {
      const { body, ctl } = stalling(new Uint8Array(n));
      ctl.close();
      const r = await parse(await post(opt, '/step', body, { 'content-type': RAW }));
      expect(r.status, `${n}: ${JSON.stringify(r.body)}`).toBe(422);
    }
    expect((await opCall('GET', opt, '')).body.step).toBe(0);
  });
});

describe('snapshots keep pace', () => {
  it('a steady reader at the pace gets the whole checkpoint, though it takes longer than the grace time', async () => {
    Object.assign(TRANSFER_PACE, { graceMs: 200, bytesPerSecond: 2 << 20 });
    const opt = await createOptimizer({ shapes: { w: [1 << 18] }, init: 'zeros' });
    expect((await put(opt, '/params', new Uint8Array(1 << 20), { 'content-type': RAW })).status).toBe(200);
    const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { headers: authed(opt.token, { accept: ST }) }));
    const reader = res.body!.getReader();
    const t0 = Date.now();
    let bytes = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      bytes += value.length;
      // A steady 3 MiB/s: the 3 MiB checkpoint takes about a second, five times the grace.
      const due = t0 + bytes / 3145.728;
      if (due > Date.now()) await sleep(due - Date.now());
    }
    expect(bytes).toBeGreaterThan(3 << 20);
    expect(Date.now() - t0).toBeGreaterThan(800);
  });

  it('a reader that stops is cut and the lock is free again', async () => {
    Object.assign(TRANSFER_PACE, { graceMs: 200, bytesPerSecond: 16 << 20 });
    const opt = await createOptimizer({ shapes: { w: [1 << 18] }, init: 'zeros' });
    expect((await put(opt, '/params', new Uint8Array(1 << 20), { 'content-type': RAW })).status).toBe(200);
    const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { headers: authed(opt.token, { accept: ST }) }));
    const reader = res.body!.getReader();
    await reader.read(); // then never again
    const step = await within(post(opt, '/step?return=none', new Uint8Array(1 << 20), { 'content-type': RAW }), 5000);
    expect(step === 'timeout' ? 'timeout' : step.status).toBe(200);
    await expect(
      (async () => {
        for (;;) if ((await reader.read()).done) return 'ended';
      })(),
    ).rejects.toThrow();
  });

  it('a GET state refused with 406 (names that collide once dotted) does not hold the lock', async () => {
    const opt = await createOptimizer({ params: { 'a.b': [1], a: { b: [2] } } });
    const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { headers: authed(opt.token, { accept: ST }) }));
    expect(res.status).toBe(406);
    await res.arrayBuffer();
    const step = await within(opCall('POST', opt, '/step', { grads: { 'a.b': [1], a: { b: [1] } } }), 5000);
    expect(step === 'timeout' ? 'timeout' : step.status).toBe(200);
  });

  for (const accept of ['application/json', ST]) {
    it(`a GET state (${accept}) cancelled after one piece, or never read, or asked for with HEAD, releases the lock`, async () => {
      const opt = await createOptimizer({ shapes: { w: [300_000] }, init: 'zeros' });
      expect((await put(opt, '/params', new Uint8Array(1_200_000), { 'content-type': RAW })).status).toBe(200);
      const partly = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { headers: authed(opt.token, { accept }) }));
      const reader = partly.body!.getReader();
      await reader.read();
      await reader.cancel();
      const unread = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { headers: authed(opt.token, { accept }) }));
      await unread.body!.cancel();
      await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/state`, { method: 'HEAD', headers: authed(opt.token, { accept }) }));
      const step = await within(post(opt, '/step?return=none', new Uint8Array(1_200_000), { 'content-type': RAW }), 5000);
      expect(step === 'timeout' ? 'timeout' : step.status).toBe(200);
    });
  }
});

describe('params answers: small ones are copies, large ones stream under the lock', () => {
  for (const accept of [RAW, ST]) {
    it(`a GET params (${accept}) of up to 4 MiB, never read, holds nothing: a step runs at once`, async () => {
      Object.assign(TRANSFER_PACE, { graceMs: 60_000 }); // a held lock would outlast the test
      const opt = await createOptimizer({ shapes: { w: [1 << 20] }, init: 'zeros' }); // 4 MiB of float32
      expect((await put(opt, '/params', new Uint8Array(1 << 22), { 'content-type': RAW })).status).toBe(200);
      const unread = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/params`, { headers: authed(opt.token, { accept }) }));
      expect(unread.status).toBe(200);
      const step = await within(post(opt, '/step?return=none', new Uint8Array(1 << 22), { 'content-type': RAW }), 5000);
      expect(step === 'timeout' ? 'timeout' : step.status).toBe(200);
      await unread.body!.cancel();
    });
  }

  it('a larger GET params streams: a reader that stops is cut at the pace, and the lock is free again', async () => {
    Object.assign(TRANSFER_PACE, { graceMs: 200, bytesPerSecond: 16 << 20 });
    const n = (1 << 20) + 1024; // just over 4 MiB
    const opt = await createOptimizer({ shapes: { w: [n] }, init: 'zeros' });
    expect((await put(opt, '/params', new Uint8Array(4 * n), { 'content-type': RAW })).status).toBe(200);
    const res = await exports.default.fetch(new Request(`${BASE}/v1/optimizers/${opt.id}/params`, { headers: authed(opt.token, { accept: RAW }) }));
    const reader = res.body!.getReader();
    await reader.read(); // then never again
    const step = await within(post(opt, '/step?return=none', new Uint8Array(4 * n), { 'content-type': RAW }), 5000);
    expect(step === 'timeout' ? 'timeout' : step.status).toBe(200);
    await reader.cancel().catch(() => {});
  });
});
