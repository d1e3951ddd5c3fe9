// The streamed JSON of a tensor tree must equal JSON.stringify of the rebuilt tree.

import { describe, expect, it } from 'vitest';
import { flattenTree, unflatten } from '../tensors/tree.ts';
import { objectJson, textStream, treeJson, treeJsonPieces } from './json.ts';

describe('treeJsonPieces', () => {
  const trees: unknown[] = [
    [1, 2.5, -3e-30],
    [[1, 2], [3, 4]],
    [],
    [[], []],
    { w: [[0.1, 0.2]], b: 3, nested: { 'a "quoted" name': [1e300, -1e-300] } },
    Array.from({ length: 50_000 }, (_, i) => Math.sin(i)),
  ];
  for (const [i, tree] of trees.entries()) {
    it(`tree ${i}`, async () => {
      const flat = flattenTree(tree, []);
      const expected = JSON.stringify(unflatten(flat.layout, flat.values));
      expect([...treeJsonPieces(flat.layout, flat.values)].join('')).toBe(expected);
      expect(await new Response(textStream(treeJsonPieces(flat.layout, flat.values))).text()).toBe(expected);
    });
  }

  it('yields bounded pieces for large tensors', () => {
    const flat = flattenTree(Array.from({ length: 100_000 }, () => 0.1), []);
    const pieces = [...treeJsonPieces(flat.layout, flat.values)];
    expect(pieces.length).toBeGreaterThan(5);
    expect(Math.max(...pieces.map((p) => p.length))).toBeLessThan(1 << 20);
  });
});

describe('treeJson and objectJson', () => {
  it('write -0 as -0.0 and nothing else differently from JSON.stringify', () => {
    const flat = flattenTree({ a: [0, -0, 1.5], b: -0 }, []);
    flat.values[1] = -0;
    flat.values[3] = -0;
    const text = treeJson(flat.layout, flat.values);
    expect(text).toBe('{"a":[0,-0.0,1.5],"b":-0.0}');
    const parsed = JSON.parse(text) as { a: number[]; b: number };
    expect(Object.is(parsed.a[1], -0)).toBe(true);
    expect(Object.is(parsed.b, -0)).toBe(true);
  });

  it('stay valid JSON whatever the tensor names hold (a name "\\u0000-0" once became a bare -0.0 key)', () => {
    const names = ['\u0000-0', '"\u0000-0"', '-0.0', '\\u0000-0', '\u2028'];
    const tree = Object.fromEntries(names.map((n) => [n, [-0, 0]]));
    const flat = flattenTree(tree, []);
    for (let i = 0; i < flat.values.length; i += 2) flat.values[i] = -0;
    const text = objectJson([['params', { json: treeJson(flat.layout, flat.values) }], ['lr', { value: 0.1 }]]);
    const parsed = JSON.parse(text) as { params: Record<string, number[]>; lr: number };
    expect(Object.keys(parsed.params)).toEqual(names);
    for (const n of names) expect(Object.is(parsed.params[n]![0], -0)).toBe(true);
    expect(parsed.lr).toBe(0.1);
  });

  it('leaves out undefined fields, as JSON.stringify does', () => {
    expect(objectJson([['a', { value: 1 }], ['b', { value: undefined }], ['c', { json: '[1]' }]])).toBe('{"a":1,"c":[1]}');
  });
});
