// scanJson against an independent count (a walk of JSON.parse's result) on random JSON texts, and
// the middleware's promise to leave non-JSON bodies unread.

import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { bodyGuard, isJsonMediaType, scanJson } from './body-guard.ts';
import { ProblemError } from './problem.ts';
import type { AppEnv } from './router.ts';

/** Values (keys included) and depth of a parsed JSON value. */
function reference(value: unknown, depth = 0): { values: number; depth: number } {
  if (value === null || typeof value !== 'object') return { values: 1, depth };
  const children = Array.isArray(value) ? value : Object.values(value);
  const keys = Array.isArray(value) ? 0 : children.length;
  let values = 1 + keys;
  let deepest = depth + 1;
  for (const child of children) {
    const r = reference(child, depth + 1);
    values += r.values;
    deepest = Math.max(deepest, r.depth);
  }
  return { values, depth: deepest };
}

/** Deterministic pseudo-random JSON with awkward strings (escapes, brackets, quotes, non-ASCII). */
function randomJson(seed: number): unknown {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const strings = ['', 'a', '"', '\\', '[{', '}]', 'x\\"]', 'é€😀', '\u0000\n\t', ',:'];
  const gen = (d: number): unknown => {
    const r = rnd();
    if (d > 6 || r < 0.3) {
      const k = Math.floor(rnd() * 5);
      return [null, true, false, -1.5e-7, strings[Math.floor(rnd() * strings.length)]][k];
    }
    const n = Math.floor(rnd() * 5);
    if (r < 0.65) return Array.from({ length: n }, () => gen(d + 1));
    return Object.fromEntries(Array.from({ length: n }, (_, i) => [strings[Math.floor(rnd() * strings.length)]! + i, gen(d + 1)]));
  };
  return gen(0);
}

const bytes = (text: string) => new TextEncoder().encode(text);

describe('scanJson', () => {
  it('counts every value and finds the depth, as a walk of the parsed value does', () => {
    for (let seed = 1; seed <= 500; seed++) {
      const value = randomJson(seed);
      const text = JSON.stringify(value, null, seed % 3 === 0 ? 2 : undefined);
      const want = reference(value);
      expect(scanJson(bytes(text), { maxValues: Infinity }), text).toEqual({ ok: true, values: want.values });
      if (want.values > 1) expect(scanJson(bytes(text), { maxValues: want.values - 1 }).ok, text).toBe(false);
      if (want.depth > 0) {
        expect(scanJson(bytes(text), { maxValues: Infinity, maxDepth: want.depth }).ok, text).toBe(true);
        const tooDeep = scanJson(bytes(text), { maxValues: Infinity, maxDepth: want.depth - 1 });
        expect(tooDeep.ok === false && tooDeep.kind, text).toBe('depth');
      }
    }
  });

  it('names the container that crosses a bound', () => {
    const deep = scanJson(bytes('{"a":[1,{"b\\"c":[[[]]]}]}'), { maxValues: 100, maxDepth: 4 });
    expect(deep).toEqual({ ok: false, kind: 'depth', path: ['a', 1, 'b"c', 0] });
    const wide = scanJson(bytes('{"x":[{"a":1,"b":2,"c":3}]}'), { maxValues: 100, maxMembers: 2 });
    expect(wide).toEqual({ ok: false, kind: 'members', path: ['x', 0] });
    expect(scanJson(bytes('{"x":[1,2,3,4,5]}'), { maxValues: 100, maxMembers: 2 }).ok).toBe(true); // arrays are not bounded by members
  });

  it('is not fooled by unterminated strings or stray bytes (malformed JSON is the parser\'s to reject)', () => {
    expect(scanJson(bytes('"abc\\'), { maxValues: 10 }).ok).toBe(true);
    expect(scanJson(bytes(']]]}}}'), { maxValues: 10 }).ok).toBe(true);
    expect(scanJson(bytes('[1 2 3]'), { maxValues: 3 }).ok).toBe(false);
  });
});

describe('bodyGuard middleware', () => {
  it('JSON media types: application/json and any +json, case-insensitive, with parameters', () => {
    for (const t of ['application/json', 'Application/JSON; charset=utf-8', 'application/problem+json', 'application/vnd.api+json']) expect(isJsonMediaType(t), t).toBe(true);
    for (const t of [undefined, '', 'text/json', 'application/octet-stream', 'application/vnd.safetensors', 'application/jsonx', 'text/plain']) {
      expect(isJsonMediaType(t), String(t)).toBe(false);
    }
  });

  it('leaves other bodies unread, for their handler to stream', async () => {
    const app = new Hono<AppEnv>();
    app.use('*', bodyGuard(() => 1));
    app.onError((err, c) => c.text(err instanceof ProblemError ? `${err.status}` : 'other'));
    app.post('/', async (c) => {
      const used = c.req.raw.bodyUsed;
      let n = 0;
      for await (const chunk of c.req.raw.body!) n += (chunk as Uint8Array).length;
      return c.json({ used, n });
    });
    const payload = bytes('['.repeat(100_000)); // would fail every JSON bound
    for (const type of ['application/octet-stream', 'application/vnd.safetensors']) {
      const res = await app.request('/', { method: 'POST', body: payload, headers: { 'content-type': type } });
      expect(await res.json()).toEqual({ used: false, n: 100_000 });
    }
    const json = await app.request('/', { method: 'POST', body: payload, headers: { 'content-type': 'application/json' } });
    expect(await json.text()).toBe('413');
  });
});
