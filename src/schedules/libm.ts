// Correctly rounded cos and pow: the two C library functions torch's schedulers call, made
// platform-independent.

/**
 * The elementary functions torch 1.13's schedulers evaluate on doubles: Python's `math.cos` and a
 * float `**` (both straight calls into the C library's `cos` and `pow`). Everything else they
 * compute is IEEE-754 double arithmetic (+, −, ·, /, sqrt, floor, min, max), which JS performs
 * identically, so a schedule built from torch's own expressions differs from torch only where the
 * two C libraries round a `cos` or `pow` differently.
 *
 * Schedules take a Libm so that tests can substitute the reference C library's results.
 */
export interface Libm {
  cos(x: number): number;
  pow(x: number, y: number): number;
}

// ---------------------------------------------------------------------------------------------
// Double-double arithmetic: a value is hi + lo with |lo| <= ulp(hi)/2, about 106 bits. Results go
// to the two module registers H and L (no allocation in the hot loops).
// ---------------------------------------------------------------------------------------------

let H = 0;
let L = 0;
const SPLITTER = 134217729; // 2^27 + 1

/** Exact a·b = H + L (Dekker; |a·b| well below 2^996). */
function twoProd(a: number, b: number): void {
  const p = a * b;
  let t = SPLITTER * a;
  const ah = t - (t - a);
  const al = a - ah;
  t = SPLITTER * b;
  const bh = t - (t - b);
  const bl = b - bh;
  H = p;
  L = ah * bh - p + ah * bl + al * bh + al * bl;
}

/** Exact a + b = H + L (Knuth). */
function twoSum(a: number, b: number): void {
  const s = a + b;
  const bb = s - a;
  H = s;
  L = a - (s - bb) + (b - bb);
}

/** (ah + al) + (bh + bl), relative error about 2^-106. */
function ddAdd(ah: number, al: number, bh: number, bl: number): void {
  twoSum(ah, bh);
  const sh = H;
  let sl = L;
  twoSum(al, bl);
  sl += H;
  const th = sh + sl;
  sl = sl - (th - sh) + L;
  H = th + sl;
  L = sl - (H - th);
}

/** (ah + al) · (bh + bl), relative error about 2^-105. */
function ddMul(ah: number, al: number, bh: number, bl: number): void {
  twoProd(ah, bh);
  const ph = H;
  const pl = L + (ah * bl + al * bh);
  H = ph + pl;
  L = pl - (H - ph);
}

/** (ah + al) / (bh + bl), relative error about 2^-104. */
function ddDiv(ah: number, al: number, bh: number, bl: number): void {
  const q1 = ah / bh;
  ddMul(q1, 0, bh, bl);
  ddAdd(ah, al, -H, -L); // a − q1·b
  const q2 = H / bh;
  twoSum(q1, q2);
}

/** 1/k! for k = 0..31 as double-double pairs [hi, lo] (hi + lo within 2^-106 relative). */
const INV_FACTORIAL = new Float64Array([
  1.0, 0.0,
  1.0, 0.0,
  0.5, 0.0,
  0.16666666666666666, 9.25185853854297e-18,
  0.041666666666666664, 2.3129646346357427e-18,
  0.008333333333333333, 1.1564823173178714e-19,
  0.001388888888888889, -5.300543954373577e-20,
  0.0001984126984126984, 1.7209558293420705e-22,
  2.48015873015873e-05, 2.1511947866775882e-23,
  2.7557319223985893e-06, -1.858393274046472e-22,
  2.755731922398589e-07, 2.3767714622250297e-23,
  2.505210838544172e-08, -1.448814070935912e-24,
  2.08767569878681e-09, -1.20734505911326e-25,
  1.6059043836821613e-10, 1.2585294588752098e-26,
  1.1470745597729725e-11, 2.0655512752830745e-28,
  7.647163731819816e-13, 7.03872877733453e-30,
  4.779477332387385e-14, 4.399205485834081e-31,
  2.8114572543455206e-15, 1.6508842730861433e-31,
  1.5619206968586225e-16, 1.1910679660273754e-32,
  8.22063524662433e-18, 2.2141894119604265e-34,
  4.110317623312165e-19, 1.4412973378659527e-36,
  1.9572941063391263e-20, -1.3643503830087908e-36,
  8.896791392450574e-22, -7.911402614872376e-38,
  3.868170170630684e-23, -8.843177655482344e-40,
  1.6117375710961184e-24, -3.6846573564509766e-41,
  6.446950284384474e-26, -1.9330404233703465e-42,
  2.4795962632247976e-27, -1.2953730964765229e-43,
  9.183689863795546e-29, 1.4303150396787322e-45,
  3.279889237069838e-30, 1.5117542744029879e-46,
  1.1309962886447716e-31, 1.0498015412959506e-47,
  3.7699876288159054e-33, 2.5870347832750324e-49,
  1.216125041553518e-34, 5.586290567888806e-51,
]);
/** 1/(2k + 1) for k = 0..25 as double-double pairs. */
const INV_ODD = new Float64Array([
  1.0, 0.0,
  0.3333333333333333, 1.850371707708594e-17,
  0.2, -1.1102230246251566e-17,
  0.14285714285714285, 7.93016446160826e-18,
  0.1111111111111111, 6.1679056923619804e-18,
  0.09090909090909091, -2.523234146875356e-18,
  0.07692307692307693, -4.270088556250602e-18,
  0.06666666666666667, 9.251858538542971e-19,
  0.058823529411764705, 8.163404592832033e-19,
  0.05263157894736842, 2.921639538487254e-18,
  0.047619047619047616, 2.64338815386942e-18,
  0.043478260869565216, 1.206764157201257e-18,
  0.04, -8.326672684688674e-19,
  0.037037037037037035, 2.05596856412066e-18,
  0.034482758620689655, 4.785444071660157e-19,
  0.03225806451612903, 8.953411488912552e-19,
  0.030303030303030304, -8.410780489584519e-19,
  0.02857142857142857, 8.921435019309293e-19,
  0.02702702702702703, -1.50030138462859e-18,
  0.02564102564102564, 8.896017825522087e-19,
  0.024390243902439025, -8.46206573647223e-19,
  0.023255813953488372, 3.2273925134452225e-19,
  0.022222222222222223, -8.480870326997723e-19,
  0.02127659574468085, 5.167261417803255e-19,
  0.02040816326530612, 1.6285159162231251e-18,
  0.0196078431372549, 2.7211348642773444e-19,
]);
/** floor(2/π · 2^1280), for the reduction of large arguments. */
const TWO_OVER_PI_1280 = BigInt(
  '0xa2f9836e4e441529fc2757d1f534ddc0db6295993c439041fe5163abdebbc561b7246e3a424dd2e006492eea09d1921cfe1deb1cb129a73ee88235f52ebb4484e99c7026b45f7e413991d639835339f49c845f8bbdf9283b1ff897ffde05980fef2f118b5a0a6d1f6d367ecf27cb09b74f463f669e5fea2d7527bac7ebe5f17b3d0739f78a5292ea6bfb5fb11f8d5d0856033046fc7b6babf0cfbc209af4361d',
);

// π/2 and ln 2 as sums of doubles (each the double nearest the remainder): 200 and 150 bits.
const PIO2_0 = 1.5707963267948966;
const PIO2_1 = 6.123233995736766e-17;
const PIO2_2 = -1.4973849048591698e-33;
const PIO2_3 = 5.562271104316826e-50;
const TWO_OVER_PI = 0.6366197723675814;
const LN2_0 = 0.6931471805599453;
const LN2_1 = 2.3190468138462996e-17;
const LN2_2 = 5.707708438416212e-34;
const INV_LN2 = 1.4426950408889634;

const BITS = new DataView(new ArrayBuffer(8));

/** |x| = m·2^e exactly for a finite nonzero x, m a positive integer below 2^53. */
function decompose(x: number): [bigint, number] {
  BITS.setFloat64(0, x);
  const word = BITS.getBigUint64(0);
  const field = Number((word >> 52n) & 0x7ffn);
  const fraction = word & ((1n << 52n) - 1n);
  return field === 0 ? [fraction, -1074] : [fraction | (1n << 52n), field - 1075];
}

/** Arguments below this use the three-part Cody–Waite reduction; above, the exact one with 2/π to 1280 bits. */
const CODY_WAITE_LIMIT = 2 ** 26;

/**
 * x − n·π/2 as a double-double in H + L, with |H| <= π/4 (a hair more), for finite x;
 * returns n mod 4. Absolute error below 2^-150 for |x| < 2^26 and below 2^-140 otherwise,
 * far below the 2^-63·|x| or so that the nearest double to a multiple of π/2 stays away from it.
 */
function reduceHalfPi(x: number): number {
  if (Math.abs(x) < CODY_WAITE_LIMIT) {
    const n = Math.round(x * TWO_OVER_PI);
    twoProd(n, PIO2_0);
    const ph = H;
    const pl = L;
    twoSum(x, -ph); // exact: x and n·PIO2_0 are within a factor 2 of each other, or n = 0
    let rh = H;
    let rl = L;
    ddAdd(rh, rl, -pl, 0);
    rh = H;
    rl = L;
    twoProd(n, PIO2_1);
    ddAdd(rh, rl, -H, -L);
    rh = H;
    rl = L;
    twoProd(n, PIO2_2);
    ddAdd(rh, rl, -H, -L - n * PIO2_3);
    return ((n % 4) + 4) % 4;
  }
  // x = m·2^e exactly (m a 53-bit integer); x·2/π = m·C·2^(e − 1280) up to 2^(53 + e − 1280).
  const [m, e] = decompose(x);
  const product = m * TWO_OVER_PI_1280;
  const shift = BigInt(1280 - e);
  let n = Number((product >> shift) & 3n);
  const FRACTION_BITS = 160n;
  let f = (product >> (shift - FRACTION_BITS)) & ((1n << FRACTION_BITS) - 1n); // fraction · 2^160
  if (f >= 1n << (FRACTION_BITS - 1n)) {
    f -= 1n << FRACTION_BITS;
    n = (n + 1) % 4;
  }
  const fh = Number(f);
  const fl = Number(f - BigInt(fh));
  ddMul(fh * 2 ** -160, fl * 2 ** -160, PIO2_0, PIO2_1);
  if (x < 0) {
    H = -H;
    L = -L;
    n = (4 - n) % 4;
  }
  return n;
}

/** (−1)^j / (2j + p)! as a double-double into H + L (p = 0 for cos, 1 for sin). */
function taylorTerm(j: number, p: number): void {
  const k = 2 * j + p;
  const sign = j % 2 === 0 ? 1 : -1;
  H = sign * (INV_FACTORIAL[2 * k] as number);
  L = sign * (INV_FACTORIAL[2 * k + 1] as number);
}

/**
 * Σ_{j=0..15} (−1)^j r^(2j) / (2j + p)! for the double-double r = rh + rl, |r| <= 0.8, into H + L:
 * cos(r) for p = 0, sin(r)/r for p = 1. The first omitted term is below 2^-110.
 */
function ddTaylor(rh: number, rl: number, p: number): void {
  ddMul(rh, rl, rh, rl);
  const zh = H;
  const zl = L;
  taylorTerm(15, p);
  let sh = H;
  let sl = L;
  for (let j = 14; j >= 0; j--) {
    ddMul(sh, sl, zh, zl);
    const ph = H;
    const pl = L;
    taylorTerm(j, p);
    ddAdd(ph, pl, H, L);
    sh = H;
    sl = L;
  }
}

/** cos(j/64) and sin(j/64) for j = 0..52 as double-double [cos hi, cos lo, sin hi, sin lo], from ddTaylor. */
const TABLE = (() => {
  const t = new Float64Array(53 * 4);
  for (let j = 0; j <= 52; j++) {
    ddTaylor(j / 64, 0, 0);
    t[4 * j] = H;
    t[4 * j + 1] = L;
    ddTaylor(j / 64, 0, 1);
    ddMul(H, L, j / 64, 0);
    t[4 * j + 2] = H;
    t[4 * j + 3] = L;
  }
  return t;
})();

/**
 * cos(r) (odd = false) or sin(r) (odd = true) for r = rh + rl, |r| <= 0.81, rounded to a double if
 * a fast evaluation (the table above, then short polynomials on |t| <= 1/128, error below
 * 2^-62 relative + 2^-66) decides the rounding; NaN otherwise (then the caller takes ddTaylor).
 */
function fastReduced(rh: number, rl: number, odd: boolean): number {
  const sign = rh < 0 ? -1 : 1;
  const a = sign * rh;
  const al = sign * rl;
  const j = Math.round(a * 64);
  const th = a - j / 64; // exact (Sterbenz), |th| <= 1/128
  const t = th + al;
  const z = t * t;
  const cm1 = z * (-0.5 + z * (1 / 24 + z * (-1 / 720 + z * (1 / 40320)))); // cos t − 1
  const sm = t * z * (-1 / 6 + z * (1 / 120 + z * (-1 / 5040))); // sin t − t
  const ch = TABLE[4 * j] as number;
  const cl = TABLE[4 * j + 1] as number;
  const sh = TABLE[4 * j + 2] as number;
  const sl = TABLE[4 * j + 3] as number;
  let h: number;
  let l: number;
  if (odd) {
    // sin(a + t) = S + C·t + (S·(cos t − 1) + C·(sin t − t))
    twoProd(ch, th);
    ddAdd(sh, sl, H, L + ch * al + cl * th);
    ddAdd(H, L, sh * cm1 + ch * sm, 0);
  } else {
    // cos(a + t) = C − S·t + (C·(cos t − 1) − S·(sin t − t))
    twoProd(sh, th);
    ddAdd(ch, cl, -H, -L - sh * al - sl * th);
    ddAdd(H, L, ch * cm1 - sh * sm, 0);
  }
  h = H;
  l = L;
  const eps = Math.abs(h) * 2 ** -62 + 2 ** -66;
  const v = h + l;
  if (h + (l - eps) !== v || h + (l + eps) !== v) return NaN;
  return odd ? sign * v : v;
}

/**
 * Correctly rounded cos(x) (round to nearest even), for every double x.
 *
 * The argument is reduced by π/2 in double-double (Cody–Waite with π/2 in four parts below 2^26,
 * an exact product with 1280 bits of 2/π above). A fast evaluation of cos or sin of the remainder
 * (|r| <= π/4) settles the rounding for about 97% of arguments; the others get a Taylor series in
 * double-double, within about 2^-100 relative of cos(x), rounded once. cos of a nonzero double is
 * never exactly halfway between two doubles, so the rounding is correct unless cos(x) lies within
 * 2^-100 of such a midpoint, which no argument tested did (test/schedules-libm.test.ts) and which
 * happens for about one double in 2^47 by chance.
 *
 * @param x any double.
 * @returns the double nearest cos(x); NaN for NaN and ±Infinity.
 * @example cos(Math.PI / 3) // 0.5000000000000001 (the exact cosine of that double)
 */
export function cos(x: number): number {
  if (!Number.isFinite(x)) return NaN;
  const ax = Math.abs(x);
  if (ax < 2 ** -27) return 1; // 1 − x²/2 is within 2^-55 of 1: below the midpoint 1 − 2^-54
  const n = reduceHalfPi(x);
  const rh = H;
  const rl = L;
  let value = fastReduced(rh, rl, n % 2 === 1);
  if (Number.isNaN(value)) value = slowReduced(rh, rl, n % 2 === 1);
  return n === 1 || n === 2 ? -value : value;
}

/** cos(r) or sin(r) by the double-double Taylor series, rounded once. */
function slowReduced(rh: number, rl: number, odd: boolean): number {
  if (odd) {
    ddTaylor(rh, rl, 1);
    ddMul(H, L, rh, rl);
  } else {
    ddTaylor(rh, rl, 0);
  }
  return H + L;
}

/** The slow path alone, for tests: cos(x) without the fast evaluation. */
export function cosSlow(x: number): number {
  if (!Number.isFinite(x)) return NaN;
  if (Math.abs(x) < 2 ** -27) return 1;
  const n = reduceHalfPi(x);
  const value = slowReduced(H, L, n % 2 === 1);
  return n === 1 || n === 2 ? -value : value;
}

/** ln(x) for a finite x > 0 as a double-double into H + L, relative error about 2^-103. */
function ddLog(x: number): void {
  let e = 0;
  if (x < 2 ** -1000) {
    x *= 2 ** 600;
    e = -600;
  }
  let k = Math.floor(Math.log2(x));
  let m = x * 2 ** -k; // [1, 2), give or take the rounding of log2 at a power of two
  if (m >= 2) {
    m /= 2;
    k++;
  } else if (m < 1) {
    m *= 2;
    k--;
  }
  if (m > Math.SQRT2) {
    m /= 2;
    k++;
  }
  e += k;
  // ln m = 2·atanh(s), s = (m − 1)/(m + 1), |s| <= 0.172: Σ s^(2j+1)/(2j+1), 26 terms (< 2^-110 left).
  twoSum(m, 1);
  ddDiv(m - 1, 0, H, L); // m − 1 is exact
  const sh = H;
  const sl = L;
  ddMul(sh, sl, sh, sl);
  const zh = H;
  const zl = L;
  let ah = INV_ODD[50] as number;
  let al = INV_ODD[51] as number;
  for (let j = 24; j >= 0; j--) {
    ddMul(ah, al, zh, zl);
    ddAdd(H, L, INV_ODD[2 * j] as number, INV_ODD[2 * j + 1] as number);
    ah = H;
    al = L;
  }
  ddMul(ah, al, 2 * sh, 2 * sl);
  const mh = H;
  const ml = L;
  // + e·ln 2, with e·LN2_0 exact (twoProd); |e| < 1100, so the rest errs below 2^-150
  twoProd(e, LN2_0);
  ddAdd(mh, ml, H, L + e * LN2_1 + e * LN2_2);
}

/** exp(th + tl) as a double-double times 2^n: the mantissa into H + L, returns n. |th| < 800. */
function ddExp(th: number, tl: number): number {
  const n = Math.round(th * INV_LN2);
  twoProd(n, LN2_0);
  ddAdd(th, tl, -H, -L);
  let rh = H;
  let rl = L;
  twoProd(n, LN2_1);
  ddAdd(rh, rl, -H, -L - n * LN2_2);
  rh = H;
  rl = L; // |r| <= 0.35: Σ r^k/k! for k <= 27 leaves < 2^-115
  let ah = INV_FACTORIAL[54] as number;
  let al = INV_FACTORIAL[55] as number;
  for (let k = 26; k >= 0; k--) {
    ddMul(ah, al, rh, rl);
    ddAdd(H, L, INV_FACTORIAL[2 * k] as number, INV_FACTORIAL[2 * k + 1] as number);
    ah = H;
    al = L;
  }
  H = ah;
  L = al;
  return n;
}

/** (h + l)·2^n rounded once to the nearest double (ties to even), subnormal results included. */
function scaleRound(h: number, l: number, n: number): number {
  if (n >= -1022) {
    const v = h + l;
    return n > 1023 ? v * 2 ** 1023 * 2 ** (n - 1023) : v * 2 ** n;
  }
  // Subnormal range: the quantum is 2^-1074; round (h + l)·2^(n + 1074) to an integer.
  const s = 2 ** (n + 1074 < -1000 ? -1000 : n + 1074);
  if (n + 1074 < -1000) return 0;
  const a = h * s;
  const b = l * s; // exact scalings: a and b stay normal for the values that can round to nonzero
  const q = Math.floor(a);
  const frac = a - q + b;
  const up = frac > 0.5 || (frac === 0.5 && q % 2 === 1);
  return (up ? q + 1 : q) * 2 ** -1074;
}

/** True if h + l is within 2^-40 ulp of a rounding boundary (a midpoint between two doubles). */
function nearMidpoint(h: number, l: number): boolean {
  const v = h + l;
  if (v === 0 || !Number.isFinite(v)) return false;
  const d = Math.abs(h - v + l);
  const ulp = 2 ** (Math.floor(Math.log2(Math.abs(v))) - 52);
  return Math.abs(d - ulp / 2) <= ulp * 2 ** -40 || Math.abs(d - ulp / 4) <= ulp * 2 ** -40;
}

/** x^y exactly for a finite x > 0 and an integer 1 <= y <= 2048, rounded once (BigInt). */
function exactIntegerPow(x: number, y: number): number {
  let [m, e] = decompose(x); // x = m·2^e
  while (m % 2n === 0n) {
    m /= 2n;
    e++;
  }
  const p = m ** BigInt(y); // x^y = p·2^(e·y)
  const bits = p.toString(2).length;
  const drop = Math.max(0, bits - 60); // keep 60 bits and a sticky bit, then Number() rounds once
  let top = p >> BigInt(drop);
  if (drop > 0 && (top << BigInt(drop)) !== p) top |= 1n;
  return scaleRound(Number(top >> 8n), Number(top & 255n) / 256, e * y + drop + 8);
}

/**
 * Correctly rounded x^y (round to nearest even) for finite x > 0 and finite y; every other
 * argument gets JavaScript's `**` (which agrees with C's pow on the special cases that matter
 * here: 0^y, x^0, powers of negative bases with integer exponents are rounded as |x|^y).
 *
 * Evaluated as exp(y·ln x) in double-double (about 2^-94 relative), rounded once. Results that
 * land within 2^-40 ulp of a midpoint between two doubles are settled exactly where x^y can be a
 * midpoint (integer y: BigInt arithmetic); for other y, x^y is never a midpoint and such a
 * near-tie occurs for about one argument pair in 2^40 by chance.
 *
 * @example pow(0.75, 34) // 0.00005650448946785622 (3^34/4^34 is halfway between two doubles: ties to even)
 */
export function pow(x: number, y: number): number {
  if (y === 0 || x === 1) return 1;
  if (!Number.isFinite(x) || !Number.isFinite(y) || x === 0) return x ** y;
  if (x < 0) {
    if (!Number.isInteger(y)) return NaN;
    const r = pow(-x, y);
    return Math.abs(y) % 2 === 1 ? -r : r;
  }
  if (y === 1) return x;
  if (y === 2) return x * x;
  if (y === -1) return 1 / x;
  if (y === 0.5) return Math.sqrt(x);
  ddLog(x);
  ddMul(H, L, y, 0);
  const th = H;
  const tl = L;
  if (th > 710) return Infinity;
  if (th < -746) return 0;
  const n = ddExp(th, tl);
  const h = H;
  const l = L;
  if (Number.isInteger(y) && y > 0 && y <= 2048 && (n < -1021 || nearMidpoint(h, l))) {
    // A possible tie (x^y has a finite binary expansion), or a subnormal result rounded at 2^-1074.
    return exactIntegerPow(x, y);
  }
  return scaleRound(h, l, n);
}

/** Correctly rounded `cos` and `pow`: what every server-side schedule calls. */
export const CORRECTLY_ROUNDED: Libm = { cos, pow };

/** This runtime's own `Math.cos` and `Math.pow` (V8's fdlibm ports), for comparison in tests only. */
export const RUNTIME_LIBM: Libm = { cos: Math.cos, pow: Math.pow };
