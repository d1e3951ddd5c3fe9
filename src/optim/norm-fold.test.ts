// norm2 folded piece by piece (normFoldStart / normFoldPiece / normFoldEnd), for a tensor split by
// element range across Durable Objects (docs/scale-out.md): wherever the cuts fall (inside a block of
// 8, inside the float32 tail, empty pieces), the fold must give norm2 of the whole tensor bit for
// bit; and, independently of norm2, torch 1.13's total norms of test/fixtures/optim/clip.json.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import clipFile from '../../test/fixtures/optim/clip.json';
import { norm2, normFoldEnd, normFoldPiece, normFoldStart, type NormFold } from './clip.ts';
import type { Dtype } from './optimizer.ts';

const DTYPES: Dtype[] = ['float32', 'float64'];

function deepFreeze(s: NormFold): NormFold {
  Object.freeze(s.lanes);
  Object.freeze(s.tail);
  return Object.freeze(s);
}

/** The fold of `x` cut at `cuts` (sorted, each in [0, x.length]; repeats give empty pieces). Each state crosses a structured clone, and JSON when finite, as between Durable Objects. */
function foldInPieces(dtype: Dtype, x: ArrayLike<number>, cuts: readonly number[]): number {
  const total = x.length;
  const bounds = [0, ...cuts, total];
  let state = normFoldStart(dtype);
  for (let k = 0; k + 1 < bounds.length; k++) {
    const piece = Array.prototype.slice.call(x, bounds[k]!, bounds[k + 1]!) as number[];
    state = structuredClone(normFoldPiece(dtype, deepFreeze(state), piece, bounds[k]!, total));
    if ([...state.lanes, ...state.tail].every(Number.isFinite)) state = JSON.parse(JSON.stringify(state)) as NormFold;
  }
  return normFoldEnd(dtype, deepFreeze(state), total);
}

/** A deterministic generator of cut points (xorshift32), for the fixture cases. */
function cutter(seed: number): (n: number, count: number) => number[] {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
  return (n, count) => Array.from({ length: count }, () => next() % (n + 1)).sort((a, b) => a - b);
}

describe('normFold: equals norm2 of the whole tensor, bit for bit', () => {
  const f32 = fc.oneof(
    { weight: 6, arbitrary: fc.float({ min: -8, max: 8, noNaN: true }) },
    { weight: 2, arbitrary: fc.float({ noNaN: true, noDefaultInfinity: true }) }, // squares overflow or underflow
    { weight: 2, arbitrary: fc.float({ min: Math.fround(-1e-20), max: Math.fround(1e-20), noNaN: true }) },
    { weight: 1, arbitrary: fc.float() }, // NaN, ±Infinity, -0
  );
  const f64 = fc.oneof(
    { weight: 6, arbitrary: fc.double({ min: -8, max: 8, noNaN: true }) },
    { weight: 2, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
    { weight: 2, arbitrary: fc.double({ min: -1e-160, max: 1e-160, noNaN: true }) },
    { weight: 1, arbitrary: fc.double() },
  );
  const tensor = (el: fc.Arbitrary<number>) =>
    fc.oneof({ weight: 3, arbitrary: fc.array(el, { maxLength: 70 }) }, { weight: 1, arbitrary: fc.array(el, { minLength: 900, maxLength: 3000 }) });
  const withCuts = (el: fc.Arbitrary<number>) =>
    tensor(el).chain((x) =>
      fc.tuple(
        fc.constant(x),
        fc.array(fc.integer({ min: 0, max: x.length }), { maxLength: 4 }).map((c) => c.sort((a, b) => a - b)),
      ),
    );

  it.each([
    ['float32', f32],
    ['float64', f64],
  ] as const)('%s: random tensors (0..70 and 900..3000 elements, mixed magnitudes) in 1..5 pieces', (dtype, el) => {
    fc.assert(
      fc.property(withCuts(el), ([x, cuts]) => {
        expect(Object.is(foldInPieces(dtype, x, cuts), norm2(dtype, x))).toBe(true);
      }),
      { numRuns: 400 },
    );
  });

  it.each(DTYPES)('%s: every pair of cuts of tensors of 0..24 elements (cuts in blocks, at block ends, in the tail)', (dtype) => {
    const r = dtype === 'float32' ? Math.fround : (v: number) => v;
    for (let n = 0; n <= 24; n++) {
      // Magnitudes far apart, so that the order of additions shows in the last bit.
      const x = Array.from({ length: n }, (_, i) => r((i % 3 === 0 ? 1e3 : 1) * Math.sin(7 * i + n) + 1e-4 * Math.cos(i)));
      const whole = norm2(dtype, x);
      for (let a = 0; a <= n; a++) {
        for (let b = a; b <= n; b++) expect(Object.is(foldInPieces(dtype, x, [a, b]), whole), `n=${n} cuts ${a},${b}`).toBe(true);
      }
    }
  });
});

describe('normFold: torch 1.13 total norms (test/fixtures/optim/clip.json)', () => {
  type Nested = number | Nested[];
  type Grads = Nested[] | Record<string, Nested>;
  interface NormCase {
    name: string;
    kind: string;
    dtype: Dtype;
    clip?: { type: string };
    grads: Grads | Grads[];
    expected: { total_norm?: number } | { total_norm?: number }[];
  }
  const flat = (t: Nested): number[] => (Array.isArray(t) ? t.flatMap(flat) : [t]);
  const tensors = (g: Grads): number[][] => (Array.isArray(g) ? [flat(g)] : Object.values(g).map(flat));
  const cases = clipFile.cases as unknown as NormCase[];
  // Each (gradients, torch's total norm) pair: clip_grad_norm cases, and every step of clip_then_step with clip by norm.
  const pairs: Array<[string, Dtype, number[][], number]> = [];
  for (const c of cases) {
    if (c.kind === 'clip_grad_norm') pairs.push([c.name, c.dtype, tensors(c.grads as Grads), (c.expected as { total_norm: number }).total_norm]);
    if (c.kind === 'clip_then_step' && c.clip?.type === 'norm') {
      (c.grads as Grads[]).forEach((g, i) => pairs.push([`${c.name} step ${i}`, c.dtype, tensors(g), (c.expected as { total_norm: number }[])[i]!.total_norm]));
    }
  }

  it('has the cases', () => {
    expect(pairs.length).toBeGreaterThanOrEqual(20 + 6 * 3 * 2 + 30 * 2 * 2);
    expect(pairs.some(([, , ts]) => ts.some((t) => t.length === 1003))).toBe(true);
  });

  it.each(pairs.map((p) => [p[0], p] as const))('%s: per-tensor norms folded in pieces, then their norm', (_name, [, dtype, ts, expected]) => {
    const cuts = cutter(ts.reduce((a, t) => a + t.length, 7));
    for (let round = 0; round < 4; round++) {
      const norms = ts.map((t) => foldInPieces(dtype, t, cuts(t.length, round)));
      // The norm of norms too, as a coordinator folding them in pieces would.
      expect(foldInPieces(dtype, norms, cuts(norms.length, round % 3))).toBe(expected);
    }
  });
});

describe('normFold: misuse is refused', () => {
  it('a piece out of order, past the end, or an end with elements missing', () => {
    const s = normFoldPiece('float32', normFoldStart('float32'), [1, 2, 3], 0, 10);
    expect(() => normFoldPiece('float32', s, [4], 4, 10)).toThrow(/in order/);
    expect(() => normFoldPiece('float32', s, [4, 5, 6, 7, 8, 9, 10, 11], 3, 10)).toThrow(/past/);
    expect(() => normFoldEnd('float32', s, 10)).toThrow(/missing/);
    expect(() => normFoldEnd('float64', s, 3)).toThrow(/lanes/);
    expect(() => normFoldPiece('float32', s, [4], 3, 2.5)).toThrow(/total/);
  });

  it('a state whose NaN lane went through JSON (null) throws instead of folding a zero', () => {
    const s = normFoldPiece('float64', normFoldStart('float64'), [NaN], 0, 2);
    const viaJson = JSON.parse(JSON.stringify(s)) as NormFold;
    expect(viaJson.lanes).toEqual([null]);
    expect(() => normFoldPiece('float64', viaJson, [1], 1, 2)).toThrow(TypeError);
    expect(Object.is(normFoldEnd('float64', normFoldPiece('float64', s, [1], 1, 2), 2), NaN)).toBe(true);
  });
});
