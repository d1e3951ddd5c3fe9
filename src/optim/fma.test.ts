// Unit tests of the emulated fused multiply-adds, against values derived by hand.

import { describe, expect, it } from 'vitest';
import { fma32, fma64 } from './fma.ts';

describe('fma32', () => {
  it('rounds once, where fround(a*b + c) would round twice', () => {
    // a*b = 2^-24 - 2^-54 (exact); c = 1 + 2^-23. The double sum rounds to the float32 midpoint
    // 1 + 2^-23 + 2^-24, which ties to even (1 + 2^-22); the exact sum is below it: 1 + 2^-23.
    const a = 1 + 2 ** -15;
    const b = 2 ** -24 * (1 - 2 ** -15);
    const c = 1 + 2 ** -23;
    expect(Math.fround(a)).toBe(a);
    expect(Math.fround(b)).toBe(b);
    expect(Math.fround(a * b + c)).toBe(1 + 2 ** -22);
    expect(fma32(a, b, c)).toBe(1 + 2 ** -23);
    // Mirror case: the exact sum is above the midpoint of an even neighbour.
    const b2 = 2 ** -24 * (1 + 2 ** -15);
    const a2 = 1 + 2 ** -15; // a2*b2 = 2^-24 + 2^-38 + 2^-54: no tie, plain rounding
    expect(fma32(a2, b2, 1)).toBe(Math.fround(1 + 2 ** -23));
  });

  it('differs from a separately rounded product', () => {
    // (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24: the product alone rounds the 2^-24 bit away.
    const a = 1 + 2 ** -12;
    expect(fma32(a, a, -1)).toBe(2 ** -11 + 2 ** -24);
    expect(Math.fround(Math.fround(a * a) - 1)).toBe(2 ** -11);
  });

  it('is exact on exact cases', () => {
    expect(fma32(2, 3, 4)).toBe(10);
    expect(fma32(0.5, -0.25, 0)).toBe(-0.125);
  });
});

describe('fma64', () => {
  it('keeps the low bits of the product', () => {
    // (1 + 2^-30)^2 - 1 = 2^-29 + 2^-60; a*a in double loses 2^-60.
    const a = 1 + 2 ** -30;
    expect(a * a - 1).toBe(2 ** -29);
    expect(fma64(a, a, -1)).toBe(2 ** -29 + 2 ** -60);
  });

  it('is exact on exact cases and survives huge operands', () => {
    expect(fma64(3, 7, -1)).toBe(20);
    expect(fma64(1e200, 1e200, 1)).toBe(Infinity);
    // The Dekker split overflows here; the fallback is the plain double expression.
    expect(Math.abs(fma64(1e300, 10, -1e300) / 9e300 - 1)).toBeLessThan(1e-15);
  });
});

describe('fma64 and the sign of zero', () => {
  it('keeps -0 where the exact result is -0 (torch: m = -0.0 for g = -0 and m = -0)', () => {
    expect(Object.is(fma64(-0, 0.1, -0), -0)).toBe(true);
    expect(Object.is(fma64(-0, 0.1, 0), 0)).toBe(true);
    expect(Object.is(fma64(0, 0.1, -0), 0)).toBe(true);
  });
});
