// Unit tests of tensor-tree flattening and rebuilding.

import { describe, expect, it } from 'vitest';
import { alignToLayout, ElementLimitError, flattenLike, flattenTree, layoutShapes, pathOfIndex, TensorError, unflatten } from './tree.ts';

describe('flattenTree', () => {
  it('flattens flat, nested and named trees in row-major, key order', () => {
    expect([...flattenTree([1, 2, 3], []).values]).toEqual([1, 2, 3]);
    const nested = flattenTree([[1, 2], [3, 4], [5, 6]], []);
    expect(nested.layout).toEqual({ kind: 'tensor', shape: [3, 2] });
    expect([...nested.values]).toEqual([1, 2, 3, 4, 5, 6]);
    const named = flattenTree({ w: [[1, 2]], b: [3], s: 4, sub: { x: [[[5]]] } }, []);
    expect([...named.values]).toEqual([1, 2, 3, 4, 5]);
    expect(layoutShapes(named.layout)).toEqual({ w: [1, 2], b: [1], s: [], sub: { x: [1, 1, 1] } });
  });

  it('accepts empty tensors', () => {
    expect(flattenTree([], []).size).toBe(0);
    expect(flattenTree([[], []], []).size).toBe(0);
  });

  it('names the offending element', () => {
    const err = (v: unknown) => {
      try {
        flattenTree(v, ['params']);
      } catch (e) {
        return e as TensorError;
      }
      throw new Error('no error');
    };
    expect(err([[1, 2], [3]]).path).toEqual(['params', 1]);
    expect(err([[1, 2], [3, 'x']]).path).toEqual(['params', 1, 1]);
    expect(err({ a: [1, Infinity] }).path).toEqual(['params', 'a', 1]);
    expect(err({ a: null }).path).toEqual(['params', 'a']);
    expect(err('x')).toBeInstanceOf(TensorError);
  });

  it('enforces the element limit while discovering the layout', () => {
    expect(() => flattenTree({ a: [1, 2], b: [3, 4] }, [], 3)).toThrow(ElementLimitError);
    expect(flattenTree({ a: [1, 2], b: [3] }, [], 3).size).toBe(3);
  });
});

describe('a ragged tree that claims more than it holds (found in review: 875 bytes claimed 24 MB)', () => {
  it('is refused before its claimed array is allocated', () => {
    // First elements say [144, 144, 144] (2,985,984 elements); the value holds 144 + 2 numbers.
    const claim = [[Array.from({ length: 144 }, () => 0), ...Array.from({ length: 143 }, () => [])], ...Array.from({ length: 143 }, () => [[1]])];
    expect(JSON.stringify(claim).length).toBeLessThan(2000);
    const sizes: number[] = [];
    const RealFloat64Array = globalThis.Float64Array;
    globalThis.Float64Array = new Proxy(RealFloat64Array, {
      construct(target, args) {
        if (typeof args[0] === 'number') sizes.push(args[0]);
        return Reflect.construct(target, args);
      },
    });
    try {
      expect(() => flattenTree(claim, ['grads'])).toThrow(TensorError);
    } finally {
      globalThis.Float64Array = RealFloat64Array;
    }
    expect(Math.max(0, ...sizes)).toBeLessThan(65_536);
  });
});

describe('flattenLike', () => {
  it('follows the reference layout, whatever the key order', () => {
    const ref = flattenTree({ w: [1, 2], b: [3] }, []);
    expect([...flattenLike({ b: [30], w: [10, 20] }, ref.layout, []).values]).toEqual([10, 20, 30]);
  });

  it('rejects missing, extra and reshaped tensors', () => {
    const ref = flattenTree({ w: [[1, 2]], b: [3] }, []);
    expect(() => flattenLike({ w: [[1, 2]] }, ref.layout, ['grads'])).toThrow(/missing tensor "b"/);
    expect(() => flattenLike({ w: [[1, 2]], b: [3], c: [1] }, ref.layout, ['grads'])).toThrow(/unexpected tensor "c"/);
    expect(() => flattenLike({ w: [1, 2], b: [3] }, ref.layout, ['grads'])).toThrow(TensorError);
  });
});

describe('unflatten', () => {
  it('round-trips every kind of tree, including a "__proto__" name', () => {
    const trees = [[1, 2, 3], [[1, 2], [3, 4]], { a: [[1]], b: 2 }, JSON.parse('{"__proto__": [1, 2], "x": [3]}')];
    for (const t of trees) {
      const flat = flattenTree(t, []);
      expect(JSON.stringify(unflatten(flat.layout, flat.values))).toBe(JSON.stringify(t));
    }
  });

  it('maps flat indices back to paths', () => {
    const flat = flattenTree({ w: [[1, 2, 3], [4, 5, 6]], b: [7] }, []);
    expect(pathOfIndex(flat.layout, 4)).toEqual(['w', 1, 1]);
    expect(pathOfIndex(flat.layout, 6)).toEqual(['b', 0]);
  });
});

describe('alignToLayout', () => {
  const target = flattenTree({ w: [[1, 2]], b: [3], s: 4 }, []).layout;

  it('reorders values flattened in another key order', () => {
    const src = flattenTree({ s: 40, b: [30], w: [[10, 20]] }, []);
    expect([...alignToLayout(src.layout, src.values, target, [])]).toEqual([10, 20, 30, 40]);
    const same = flattenTree({ w: [[1, 2]], b: [3], s: 4 }, []);
    expect(alignToLayout(same.layout, same.values, target, [])).toBe(same.values);
  });

  it('names missing, extra and reshaped tensors', () => {
    const err = (tree: unknown) => {
      const src = flattenTree(tree, []);
      try {
        alignToLayout(src.layout, src.values, target, ['grads']);
      } catch (e) {
        return [(e as TensorError).path, (e as TensorError).message];
      }
      throw new Error('no error');
    };
    expect(err({ w: [[1, 2]], b: [3] })).toEqual([['grads', 's'], 'missing tensor "s"']);
    expect(err({ w: [[1, 2]], b: [3], s: 4, x: 1 })).toEqual([['grads', 'x'], 'unexpected tensor "x" (not in params)']);
    expect(err({ w: [1, 2], b: [3], s: 4 })).toEqual([['grads', 'w'], 'expected shape [1, 2], got [2]']);
    expect(err([1, 2, 3, 4])[0]).toEqual(['grads']);
  });
});
