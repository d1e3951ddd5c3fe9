// Expiry: an optimizer untouched for its time-to-live deletes itself with a Durable Object alarm.
// The clock is Vitest's fake Date, which the optimizer's object shares with the tests (one isolate);
// `runDurableObjectAlarm` runs the scheduled alarm at once, whatever its time, as a late or early
// delivery would. Fake times lie years ahead, so no real alarm fires during the run.

import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { call } from './helpers/http.ts';
import { createOptimizer, expectProblem, opCall, parse } from './helpers/optimizers.ts';
import { encodeValues, writeSafetensors } from './helpers/safetensors.ts';

const T0 = Date.parse('2031-03-01T00:00:00.000Z');
const SECOND = 1000;
const DAY = 86_400 * SECOND;

/** Sets the clock of the tests and of every Durable Object to T0 plus `ms`. */
const at = (ms: number) => vi.setSystemTime(T0 + ms);
const iso = (ms: number) => new Date(T0 + ms).toISOString();
const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));
const scheduledAlarm = (id: string) => runInDurableObject(stubOf(id), (_, state) => state.storage.getAlarm());

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  at(0);
});
afterEach(() => vi.useRealTimers());

describe('time-to-live', () => {
  it('defaults to 30 days, reported as ttl and expires_at, with the alarm at that time', async () => {
    const opt = await createOptimizer({ params: [1, 2] });
    expect(opt.body.ttl).toBe(30 * 86_400);
    expect(opt.body.created_at).toBe(iso(0));
    expect(opt.body.expires_at).toBe(iso(30 * DAY));
    expect(await scheduledAlarm(opt.id)).toBe(T0 + 30 * DAY);

    at(30 * DAY - SECOND);
    expect(await runDurableObjectAlarm(stubOf(opt.id))).toBe(true);
    expect((await opCall('GET', opt, '')).status).toBe(200); // one second early: kept (this GET pushes it on)

    at(30 * DAY - SECOND + 30 * DAY);
    expect(await runDurableObjectAlarm(stubOf(opt.id))).toBe(true);
    expectProblem(await opCall('GET', opt, ''), 404);
  });

  it('an untouched optimizer is deleted at its deadline, with every stored byte and its alarm', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2], b: 0 }, ttl: 3600 });
    expect(opt.body.ttl).toBe(3600);
    expect(opt.body.expires_at).toBe(iso(3600 * SECOND));
    expect((await opCall('POST', opt, '/step', { grads: { w: [1, 1], b: 1 } })).status).toBe(200);

    at(3600 * SECOND);
    expect(await runDurableObjectAlarm(stubOf(opt.id))).toBe(true);
    const tables = await runInDurableObject(stubOf(opt.id), (_, state) => state.storage.sql.exec("SELECT name FROM sqlite_master WHERE type = 'table'").toArray());
    expect(tables).toEqual([]);
    expect(await scheduledAlarm(opt.id)).toBeNull();
    expectProblem(await opCall('GET', opt, ''), 404);
    expectProblem(await opCall('POST', opt, '/step', { grads: { w: [1, 1], b: 1 } }), 404);

    // A late duplicate of the alarm finds nothing to do.
    expect(await runDurableObjectAlarm(stubOf(opt.id))).toBe(false);
    await runInDurableObject(stubOf(opt.id), (instance) => instance.alarm());
    expectProblem(await opCall('GET', opt, ''), 404);
  });

  it('every successful call pushes the deadline: an early alarm re-arms itself for it', async () => {
    const opt = await createOptimizer({ params: [1, 2], ttl: 600 });
    const calls: Array<[number, () => Promise<{ status: number }>]> = [
      [500, () => opCall('POST', opt, '/step', { grads: [1, 1] })],
      [1000, () => opCall('GET', opt, '/params')],
      [1500, () => opCall('GET', opt, '/history')],
      [2000, () => opCall('GET', opt, '/state')],
      [2500, () => opCall('PUT', opt, '/params', { params: [3, 4] })],
    ];
    for (const [seconds, request] of calls) {
      at(seconds * SECOND);
      expect((await request()).status).toBe(200);
      // The first alarm (600 s) is long past: run at any time, it finds the deadline ahead and moves there.
      expect(await runDurableObjectAlarm(stubOf(opt.id))).toBe(true);
      expect(await scheduledAlarm(opt.id)).toBe(T0 + (seconds + 600) * SECOND);
    }
    at(3000 * SECOND);
    const info = await opCall('GET', opt, '');
    expect(info.body).toMatchObject({ step: 1, ttl: 600, expires_at: iso(3600 * SECOND) });
    at(3600 * SECOND);
    expect(await runDurableObjectAlarm(stubOf(opt.id))).toBe(true);
    expectProblem(await opCall('GET', opt, ''), 404);
  });

  it('rejected calls do not push it: a wrong token, a bad gradient, a stale precondition', async () => {
    const opt = await createOptimizer({ params: [1, 2], ttl: 600 });
    at(500 * SECOND);
    expectProblem(await parse(await call('GET', `/v1/optimizers/${opt.id}`, undefined, { authorization: 'Bearer wrong' })), 401);
    expectProblem(await opCall('POST', opt, '/step', { grads: [1, 1], expected_step: 5 }), 409);
    expectProblem(await opCall('POST', opt, '/step', { grads: [1, 2, 3] }), 422);
    expectProblem(await opCall('PATCH', opt, '', { ttl: 10 }), 422, 'ttl');
    at(600 * SECOND);
    expect(await runDurableObjectAlarm(stubOf(opt.id))).toBe(true);
    expectProblem(await opCall('GET', opt, ''), 404);
  });

  it('PATCH sets a new ttl from now, moving the alarm earlier when it must', async () => {
    const opt = await createOptimizer({ params: [1], ttl: 86_400 });
    at(10 * SECOND);
    const patched = await opCall('PATCH', opt, '', { ttl: 120 });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect(patched.body).toMatchObject({ ttl: 120, expires_at: iso(130 * SECOND), hyperparams: opt.body.hyperparams });
    expect(await scheduledAlarm(opt.id)).toBe(T0 + 130 * SECOND);
    expect(patched.headers.get('etag')).not.toBe(opt.etag);

    at(129 * SECOND);
    expect((await opCall('GET', opt, '')).body.expires_at).toBe(iso(249 * SECOND));
    at(249 * SECOND);
    expect(await runDurableObjectAlarm(stubOf(opt.id))).toBe(true);
    expectProblem(await opCall('GET', opt, ''), 404);
  });

  it('survives eviction: a fresh instance runs the alarm', async () => {
    const opt = await createOptimizer({ params: [1], ttl: 60 });
    await evictDurableObject(stubOf(opt.id));
    at(59 * SECOND);
    expect(await runDurableObjectAlarm(stubOf(opt.id))).toBe(true);
    await evictDurableObject(stubOf(opt.id));
    at(60 * SECOND);
    expect(await runDurableObjectAlarm(stubOf(opt.id))).toBe(true);
    expectProblem(await opCall('GET', opt, ''), 404);
  });

  it('an optimizer stored before expiry existed gets the default ttl from its next start', async () => {
    const opt = await createOptimizer({ params: [1] });
    await runInDurableObject(stubOf(opt.id), async (_, state) => {
      const meta = JSON.parse(state.storage.sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = 'meta'").one().v);
      delete meta.ttl;
      delete meta.touchedAt;
      state.storage.sql.exec("UPDATE meta SET v = ? WHERE k = 'meta'", JSON.stringify(meta));
      await state.storage.deleteAlarm();
    });
    await evictDurableObject(stubOf(opt.id));
    at(DAY);
    const info = await opCall('GET', opt, '');
    expect(info.body).toMatchObject({ ttl: 30 * 86_400, expires_at: iso(31 * DAY) });
    expect(await scheduledAlarm(opt.id)).toBe(T0 + 31 * DAY);
  });

  it('ttl is an integer number of seconds from 60 to 365 days, in the body or (safetensors) the query', async () => {
    for (const ttl of [59, 0, -1, 1.5, 365 * 86_400 + 1, '600', null]) {
      expectProblem(await parse(await call('POST', '/v1/optimizers', { params: [1], ttl })), 422, 'ttl');
    }
    const opt = await createOptimizer({ params: [1], ttl: 365 * 86_400 });
    expect(opt.body.expires_at).toBe(iso(365 * DAY));
    for (const ttl of [59, 1.5, 365 * 86_400 + 1, null]) expectProblem(await opCall('PATCH', opt, '', { ttl }), 422, 'ttl');

    const file = writeSafetensors([{ name: 'w', dtype: 'F32', shape: [2], data: encodeValues([1, 2], 'F32') }]);
    const typed = { 'content-type': 'application/vnd.safetensors' };
    const created = await parse(await call('POST', '/v1/optimizers?ttl=120&lr=0.5', file, typed));
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body).toMatchObject({ ttl: 120, expires_at: iso(120 * SECOND), hyperparams: { lr: 0.5 } });
    for (const text of ['59', '1e3', '0x78', '120.0']) expectProblem(await parse(await call('POST', `/v1/optimizers?ttl=${text}`, file, typed)), 422, 'ttl');
  });
});
