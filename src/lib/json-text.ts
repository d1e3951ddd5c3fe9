// JSON text that keeps the sign of zero: torch can return -0.0 (e.g. a -0.0 param with a zero
// update), and JSON.stringify would print it as 0, flipping a float32 bit.

import type { FloatArray } from '../optim/adam.ts';

const MARK = '\u0000-0';

/** True when any element is -0 (cheap; lets the common case skip the slower replacer). */
export function hasNegativeZero(...arrays: Array<FloatArray | null | undefined>): boolean {
  for (const a of arrays) {
    if (!a) continue;
    for (let i = 0; i < a.length; i++) if (a[i] === 0 && 1 / a[i]! < 0) return true;
  }
  return false;
}

/** JSON.stringify, writing -0 as `-0.0` (which JSON allows) when `negativeZero` says there may be one. */
export function jsonText(value: unknown, negativeZero: boolean): string {
  if (!negativeZero) return JSON.stringify(value);
  return JSON.stringify(value, (_key, v: unknown) => (v === 0 && 1 / (v as number) < 0 ? MARK : v)).replaceAll(`"${MARK.replace('\u0000', '\\u0000')}"`, '-0.0');
}

/** One number as JSON, keeping -0. */
export function numberText(x: number): string {
  return x === 0 && 1 / x < 0 ? '-0.0' : JSON.stringify(x);
}
