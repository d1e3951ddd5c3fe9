// What a service API key holds: GET /v1/optimizers lists the optimizers the key created (a page at a
// time), quotas bound how many and how large, and the key's registry (a Durable Object of its own)
// stays right when an optimizer is deleted, expires, or disappears without telling it. Each test
// uses keys of its own: the registries of one test file share storage.

import { runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { call } from './helpers/http.ts';
import { bearer, send, sha256 } from './helpers/keys.ts';
import { expectProblem, parse } from './helpers/optimizers.ts';
import { encodeValues, writeSafetensors } from './helpers/safetensors.ts';

afterEach(() => vi.useRealTimers());

/** Worker variables with these API keys (and any other variables). */
const keys = (list: string[], more: Record<string, string> = {}) => ({ API_KEYS: list.join(','), ...more });

async function create(vars: Record<string, string>, key: string, body: unknown) {
  const res = await send(vars, 'POST', '/v1/optimizers', body, bearer(key));
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body as { id: string; token: string; size: number; created_at: string };
}

const list = (vars: Record<string, string>, key: string, query = '') => send(vars, 'GET', `/v1/optimizers${query}`, undefined, bearer(key));

/** Every optimizer of the key, following the cursors; the pages' sizes too. */
async function listAll(vars: Record<string, string>, key: string, limit: number) {
  const ids: string[] = [];
  const sizes: number[] = [];
  let cursor: string | null = null;
  do {
    const res = await list(vars, key, `?limit=${limit}${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    ids.push(...res.body.optimizers.map((o: { id: string }) => o.id));
    sizes.push(res.body.optimizers.length);
    cursor = res.body.next_cursor;
  } while (cursor !== null);
  return { ids, sizes };
}

const hosted = (vars: Record<string, string>, opt: { id: string; token: string }, method: string, path = '', body?: unknown) =>
  send(vars, method, `/v1/optimizers/${opt.id}${path}`, body, bearer(opt.token));

/** The registry of a key, for reaching into its storage the way a crash would leave it. */
const registryStub = async (key: string) => env.KEY_REGISTRY.get(env.KEY_REGISTRY.idFromName(await sha256(key)));
const optimizerStub = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));

/**
 * Deletes `opt` and then puts its entry back into the key's registry (the `size` it had, added
 * now): what the registry holds when the deletion's notice was lost.
 */
async function vanish(vars: Record<string, string>, key: string, opt: { id: string; token: string }, size: number) {
  expect((await hosted(vars, opt, 'DELETE')).status).toBe(204);
  await runInDurableObject(await registryStub(key), (_, state) => {
    expect(state.storage.sql.exec('SELECT count(*) AS n FROM optimizers WHERE id = ?', opt.id).one().n).toBe(0);
    state.storage.sql.exec('INSERT INTO optimizers (id, size, added_at) VALUES (?, ?, ?)', opt.id, size, Date.now());
  });
}

describe('GET /v1/optimizers', () => {
  it("lists the key's own optimizers, oldest first, a page at a time, with live step, size and times", async () => {
    const vars = keys(['list-a-7f3e', 'list-b-91cd']);
    const bodies = [{ params: [1] }, { params: { w: [[1, 2], [3, 4]], b: [0, 0] } }, { shapes: { e: [10, 3] } }, { params: [1, 2, 3], dtype: 'float64' }, { params: 0.5 }];
    const mine = [];
    for (const body of bodies) mine.push(await create(vars, 'list-a-7f3e', body));
    const theirs = await create(vars, 'list-b-91cd', { params: [9, 9] });
    expect(mine.map((o) => o.size)).toEqual([1, 6, 30, 3, 1]);

    const stepped = mine[1]!;
    for (let i = 0; i < 2; i++) expect((await hosted(vars, stepped, 'POST', '/step', { grads: { w: [[1, 1], [1, 1]], b: [1, 1] } })).status).toBe(200);
    const meta = await hosted(vars, stepped, 'GET');

    const first = await list(vars, 'list-a-7f3e');
    expect(first.status).toBe(200);
    expect(first.body.optimizers.map((o: { id: string }) => o.id)).toEqual(mine.map((o) => o.id));
    expect(first.body.next_cursor).toBeNull();
    expect(first.body.usage).toEqual({ optimizers: 5, elements: 1 + 6 + 30 + 3 + 1 });
    expect(first.body.limits).toEqual({ optimizers: 100, elements: 50_000_000 });
    const shown = first.body.optimizers[1];
    expect(shown).toEqual({
      id: stepped.id,
      optimizer: 'adam',
      step: 2,
      size: 6,
      dtype: 'float32',
      created_at: stepped.created_at,
      updated_at: meta.body.updated_at,
      expires_at: meta.body.expires_at,
    });
    expect(first.body.optimizers[3]).toMatchObject({ step: 0, size: 3, dtype: 'float64' });
    expect(JSON.stringify(first.body)).not.toContain(stepped.token);

    const paged = await listAll(vars, 'list-a-7f3e', 2);
    expect(paged).toEqual({ ids: mine.map((o) => o.id), sizes: [2, 2, 1] });
    expect((await listAll(vars, 'list-a-7f3e', 5)).sizes).toEqual([5]);

    const other = await list(vars, 'list-b-91cd');
    expect(other.body.optimizers.map((o: { id: string }) => o.id)).toEqual([theirs.id]);
    expect(other.body.usage).toEqual({ optimizers: 1, elements: 2 });
  });

  it('drops deleted and expired optimizers from the list and the usage', async () => {
    const vars = keys(['gone-c-22aa']);
    const [a, b, c] = [await create(vars, 'gone-c-22aa', { params: [1, 2] }), await create(vars, 'gone-c-22aa', { params: [1, 2, 3], ttl: 60 }), await create(vars, 'gone-c-22aa', { params: [1] })];
    expect((await hosted(vars, a, 'DELETE')).status).toBe(204);
    let page = await list(vars, 'gone-c-22aa');
    expect(page.body.optimizers.map((o: { id: string }) => o.id)).toEqual([b.id, c.id]);
    expect(page.body.usage).toEqual({ optimizers: 2, elements: 4 });

    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 61_000);
    expect(await runDurableObjectAlarm(optimizerStub(b.id))).toBe(true);
    page = await list(vars, 'gone-c-22aa');
    expect(page.body.optimizers.map((o: { id: string }) => o.id)).toEqual([c.id]);
    expect(page.body.usage).toEqual({ optimizers: 1, elements: 1 });
  });

  it('never shows an optimizer that vanished without telling the registry, and forgets it once the grace period is over', async () => {
    const key = 'stale-d-5b5b';
    const vars = keys([key]);
    const live = await create(vars, key, { params: [1] });
    const vanished = await create(vars, key, { params: [1, 2] });
    await vanish(vars, key, vanished, 2);
    // A reservation whose creation is still under way (young) and one whose creation died (old).
    const underWay = env.HOSTED_OPTIMIZER.newUniqueId().toString();
    const died = env.HOSTED_OPTIMIZER.newUniqueId().toString();
    await runInDurableObject(await registryStub(key), (_, state) => {
      state.storage.sql.exec('INSERT INTO optimizers (id, size, added_at) VALUES (?, 7, ?), (?, 9, ?)', underWay, Date.now(), died, Date.now() - 11 * 60_000);
    });

    let page = await list(vars, key);
    expect(page.body.optimizers.map((o: { id: string }) => o.id)).toEqual([live.id]);
    // The dead reservation is dropped at once; the others may still be creations under way.
    expect(page.body.usage).toEqual({ optimizers: 3, elements: 1 + 2 + 7 });

    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 10 * 60_000);
    page = await list(vars, key);
    expect(page.body.optimizers.map((o: { id: string }) => o.id)).toEqual([live.id]);
    expect(page.body.usage).toEqual({ optimizers: 1, elements: 1 });
  });

  it('needs API keys on the server (403 without them), a key (401), and a valid limit and cursor (422)', async () => {
    expectProblem(await parse(await call('GET', '/v1/optimizers')), 403);
    const vars = keys(['query-e-0c0c']);
    expectProblem(await send(vars, 'GET', '/v1/optimizers'), 401);
    for (const [query, field] of [['?limit=0', 'limit'], ['?limit=101', 'limit'], ['?limit=1e1', 'limit'], ['?cursor=abc', 'cursor'], ['?cursor=0', 'cursor'], ['?cursor=-3', 'cursor'], ['?page=2', 'page'], ['?limit=1&limit=2', 'limit']]) {
      const res = await list(vars, 'query-e-0c0c', query);
      expectProblem(res, 422, field);
    }
    const bad = await list(vars, 'query-e-0c0c', '?cursor=abc');
    expect(bad.body.errors[0].value).toBe('abc');
    expect((await list(vars, 'query-e-0c0c', '?cursor=99999')).body).toMatchObject({ optimizers: [], next_cursor: null });
    expectProblem(await send(vars, 'GET', '/v1/optimizers', undefined, { ...bearer('query-e-0c0c'), accept: 'text/csv' }), 406);
  });
});

describe('quotas', () => {
  it('most optimizers per key (KEY_MAX_OPTIMIZERS): a 403 naming the limit and usage, nothing created', async () => {
    const vars = keys(['count-f-1a1a', 'count-g-2b2b'], { KEY_MAX_OPTIMIZERS: '2' });
    const a = await create(vars, 'count-f-1a1a', { params: [1] });
    await create(vars, 'count-f-1a1a', { params: [1] });
    const refused = await send(vars, 'POST', '/v1/optimizers', { params: [1] }, bearer('count-f-1a1a'));
    expectProblem(refused, 403);
    expect(refused.body).toMatchObject({ type: 'urn:adam-api:problem:quota-exceeded', quota: 'optimizers', limit: 2, usage: 2 });
    expect((await list(vars, 'count-f-1a1a')).body.usage).toEqual({ optimizers: 2, elements: 2 });
    // Another key has its own quota; deleting frees a place.
    await create(vars, 'count-g-2b2b', { params: [1] });
    expect((await hosted(vars, a, 'DELETE')).status).toBe(204);
    await create(vars, 'count-f-1a1a', { params: [1] });
    expect((await list(vars, 'count-f-1a1a')).body).toMatchObject({ usage: { optimizers: 2 }, limits: { optimizers: 2 } });
  });

  it('most elements per key (KEY_MAX_ELEMENTS), counted from params, shapes or a safetensors file, and checked on restore', async () => {
    const key = 'elems-h-3c3c';
    const vars = keys([key], { KEY_MAX_ELEMENTS: '10' });
    await create(vars, key, { params: [[1, 2, 3], [4, 5, 6]] });
    const byShapes = await send(vars, 'POST', '/v1/optimizers', { shapes: { a: [2, 3] } }, bearer(key));
    expectProblem(byShapes, 403, 'shapes');
    expect(byShapes.body).toMatchObject({ quota: 'elements', limit: 10, usage: 6, requested: 6 });
    expect(byShapes.body.errors[0].value).toBe(6);
    const file = writeSafetensors([{ name: 'w', dtype: 'F32', shape: [5], data: encodeValues([1, 2, 3, 4, 5], 'F32') }]);
    const byFile = await send(vars, 'POST', '/v1/optimizers', file, { ...bearer(key), 'content-type': 'application/vnd.safetensors' });
    expectProblem(byFile, 403, 'params');
    expect(byFile.body).toMatchObject({ quota: 'elements', requested: 5 });

    const small = await create(vars, key, { params: [1, 2, 3, 4] }); // 6 + 4 = 10: exactly the limit
    expect((await list(vars, key)).body.usage).toEqual({ optimizers: 2, elements: 10 });

    // A restore that grows the optimizer must fit too; the refused one changes nothing.
    const snapshot = (await hosted(vars, small, 'GET', '/state')).body;
    const grown = { ...snapshot, params: [1, 2, 3, 4, 5], m: [0, 0, 0, 0, 0], v: [0, 0, 0, 0, 0] };
    const refused = await hosted(vars, small, 'PUT', '/state', grown);
    expectProblem(refused, 403, 'params');
    expect(refused.body).toMatchObject({ quota: 'elements', limit: 10, usage: 6, requested: 5 });
    expect((await hosted(vars, small, 'GET', '/state')).body).toEqual(snapshot);
    const shrunk = { ...snapshot, params: [1, 2], m: [0, 0], v: [0, 0] };
    expect((await hosted(vars, small, 'PUT', '/state', shrunk)).status).toBe(200);
    expect((await list(vars, key)).body.usage).toEqual({ optimizers: 2, elements: 8 });
    await create(vars, key, { params: [1, 2] });
  });

  it('a sharded optimizer\'s restore of another layout is checked too: refused, it leaves no shard it created', async () => {
    const key = 'elems-s-5e5e';
    // Adam at 100 bytes an object holds 5 float32 elements: 12 need a third shard.
    const vars = keys([key], { KEY_MAX_ELEMENTS: '10', MAX_HOSTED_BYTES: '100' });
    const opt = await create(vars, key, { params: [1, 2, 3, 4], shards: 2 });
    const snapshot = (await hosted(vars, opt, 'GET', '/state')).body;
    const metadata = { optimizer: 'adam', step: '0', dtype: 'float32', hyperparams: JSON.stringify(snapshot.hyperparams), schedule: 'null' };
    const fileOf = (n: number) =>
      writeSafetensors(['params', 'exp_avg', 'exp_avg_sq'].map((slot) => ({ name: `${slot}/w`, dtype: 'F32', shape: [n], data: encodeValues(Array.from({ length: n }, (_, i) => (slot === 'params' ? i + 1 : 0)), 'F32') })), metadata);
    const put = (file: Uint8Array) => send(vars, 'PUT', `/v1/optimizers/${opt.id}/state`, file, { ...bearer(opt.token), 'content-type': 'application/vnd.safetensors' });
    const refused = await put(fileOf(12));
    expectProblem(refused, 403, 'params');
    expect(refused.body).toMatchObject({ quota: 'elements', limit: 10, requested: 12 });
    expect((await hosted(vars, opt, 'GET', '/state')).body).toEqual(snapshot);
    const third = env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/2`));
    const tables = await runInDurableObject(third, (_o, state) => state.storage.sql.exec("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\'").one().n);
    expect(tables).toBe(0);
    const r = await put(fileOf(10));
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.shards).toBe(2);
    expect((await list(vars, key)).body.usage).toEqual({ optimizers: 1, elements: 10 });
  });

  it('is re-checked against the optimizers before refusing: entries of vanished ones do not count', async () => {
    const key = 'recheck-i-4d4d';
    const vars = keys([key], { KEY_MAX_OPTIMIZERS: '2' });
    await create(vars, key, { params: [1] });
    const vanished = await create(vars, key, { params: [1] });
    await vanish(vars, key, vanished, 1);
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 11 * 60_000);
    await create(vars, key, { params: [1] });
    expect((await list(vars, key)).body.usage).toEqual({ optimizers: 2, elements: 2 });
  });

  it('holds under concurrent creations: of 8 at once with room for 3 optimizers (or 10 elements), exactly 3 are created', async () => {
    for (const [key, more, body] of [
      ['race-j-5e5e', { KEY_MAX_OPTIMIZERS: '3' }, { params: [1] }],
      ['race-k-6f6f', { KEY_MAX_ELEMENTS: '10' }, { params: [1, 2, 3] }],
    ] as const) {
      const vars = keys([key], more);
      const answers = await Promise.all(Array.from({ length: 8 }, () => send(vars, 'POST', '/v1/optimizers', body, bearer(key))));
      const statuses = answers.map((a) => a.status).sort();
      expect(statuses, key).toEqual([201, 201, 201, 403, 403, 403, 403, 403]);
      for (const a of answers) if (a.status === 403) expect(a.body.type).toBe('urn:adam-api:problem:quota-exceeded');
      const page = await list(vars, key);
      expect(page.body.optimizers.map((o: { id: string }) => o.id).sort()).toEqual(answers.filter((a) => a.status === 201).map((a) => a.body.id).sort());
      expect(page.body.usage).toEqual({ optimizers: 3, elements: 3 * body.params.length });
    }
  });

  it('does not apply without API keys', async () => {
    const vars = { KEY_MAX_OPTIMIZERS: '1', KEY_MAX_ELEMENTS: '1' };
    for (let i = 0; i < 3; i++) expect((await send(vars, 'POST', '/v1/optimizers', { params: [1, 2, 3] })).status).toBe(201);
  });
});
