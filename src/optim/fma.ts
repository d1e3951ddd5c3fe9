// Fused multiply-add in host double arithmetic, reproducing torch's AVX2 CPU kernels, which compute
// `add_(x, alpha=a)` and `addcmul_` as one fused multiply-add (a*b + c rounded once).

const fround = Math.fround;

/**
 * float32 fma(a, b, c) for float32 inputs, correctly rounded to float32.
 * a*b of two float32 values is exact in double, so only the final addition can round twice
 * (to double, then to float32). That matters only when the double sum lands exactly halfway
 * between two float32 values while the exact sum does not: then the sum's rounding error
 * decides the direction.
 */
export function fma32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = fround(s);
  const d = s - r; // exact: s and r are within one float32 ulp
  if (d !== 0) {
    const other = r + 2 * d; // the float32 on the other side, if s is a midpoint
    if (fround(other) === other) {
      // s is a midpoint of [r, other]; the exact sum is s + err.
      const bb = s - p;
      const err = p - (s - bb) + (c - bb);
      if (err !== 0) return (err > 0) === (d > 0) ? other : r;
    }
  }
  return r;
}

const SPLIT = 134217729; // 2^27 + 1, Dekker's splitter for doubles

/**
 * float64 fma(a, b, c): the exact product error (Dekker) and the exact sum error (Knuth's TwoSum)
 * are added back to the rounded result. Equal to the correctly rounded fma except in rare
 * double-rounding ties and when the split overflows (|a| or |b| above ~1e300) or underflows,
 * where it falls back to a*b + c.
 */
export function fma64(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  let t = SPLIT * a;
  const aHi = t - (t - a);
  const aLo = a - aHi;
  t = SPLIT * b;
  const bHi = t - (t - b);
  const bLo = b - bHi;
  const productErr = aHi * bHi - p + aHi * bLo + aLo * bHi + aLo * bLo;
  const bb = s - p;
  const sumErr = p - (s - bb) + (c - bb);
  const r = s + (productErr + sumErr);
  // A zero correction leaves s exact, sign of zero included (-0 + +0 would give +0).
  if (r - s === 0) return s;
  return Number.isFinite(r) ? r : s;
}
