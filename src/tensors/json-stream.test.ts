// The streamed JSON of a tensor tree must equal JSON.stringify of the rebuilt tree.

import { describe, expect, it } from 'vitest';
import { textStream, treeJsonPieces } from './json-stream.ts';
import { flattenTree, unflatten } from './tree.ts';

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
