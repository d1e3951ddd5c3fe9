// A small seeded random number generator whose every output can be reproduced bit for bit in any
// language with 32-bit integers and IEEE doubles (test/fixtures/compare/generate.py ports it to
// Python). Used for the noisy quadratic's gradient noise and the logistic regression's dataset.
//
// - Seeding: SplitMix64 (Steele, Lea, Flood 2014) from the seed s (an integer in [0, 2^53)): the
//   state z starts at s; each output adds 0x9E3779B97F4A7C15 to z (mod 2^64) and mixes it:
//   x = z; x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9; x = (x ^ (x >> 27)) * 0x94D049BB133111EB;
//   x ^= x >> 31 (all mod 2^64). Two outputs a, b give xoshiro's four words: low and high 32 bits
//   of a, then of b.
// - Stream: xoshiro128** 1.1 (Blackman, Vigna 2018) on those words: result = rotl(s1 * 5, 7) * 9;
//   t = s1 << 9; s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = rotl(s3, 11) (mod 2^32).
// - uniform(): the top 24 bits of one output divided by 2^24, a value in [0, 1) that is exact in
//   float32 and float64.
// - normal(): twelve uniforms summed in order, minus 6 (Irwin–Hall): mean 0, variance 1, within
//   ±6. Every partial sum is a multiple of 2^-24 below 2^4, so the sum is exact: no rounding, no
//   transcendental function, the same bits everywhere.

const MASK64 = (1n << 64n) - 1n;

function splitmix64(state: { z: bigint }): bigint {
  state.z = (state.z + 0x9e3779b97f4a7c15n) & MASK64;
  let x = state.z;
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return x ^ (x >> 31n);
}

const rotl = (x: number, k: number) => (x << k) | (x >>> (32 - k));

export class Random {
  /** s0 … s3, in an Int32Array so the engine keeps them unboxed. */
  private readonly s = new Int32Array(4);

  /** @param seed an integer in [0, 2^53). */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be an integer in [0, 2^53), got ${seed}`);
    const state = { z: BigInt(seed) };
    const a = splitmix64(state);
    const b = splitmix64(state);
    this.s[0] = Number(a & 0xffffffffn);
    this.s[1] = Number(a >> 32n);
    this.s[2] = Number(b & 0xffffffffn);
    this.s[3] = Number(b >> 32n);
  }

  /** The next 32-bit output of xoshiro128**, as an unsigned integer. */
  nextUint32(): number {
    const s = this.s;
    const s1 = s[1]!;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9);
    const t = s1 << 9;
    const s2 = s[2]! ^ s[0]!;
    const s3 = s[3]! ^ s1;
    s[1] = s1 ^ s2;
    s[0] = s[0]! ^ s3;
    s[2] = s2 ^ t;
    s[3] = rotl(s3, 11);
    return result >>> 0;
  }

  /** A uniform value in [0, 1): the output's top 24 bits / 2^24. */
  uniform(): number {
    return (this.nextUint32() >>> 8) / 16777216;
  }

  /** An approximately standard normal value: the sum of twelve uniforms, minus 6 (exact). */
  normal(): number {
    let sum = 0;
    for (let i = 0; i < 12; i++) sum += this.uniform();
    return sum - 6;
  }
}
