// Sets of element ranges [start, end), sorted and disjoint: the params an optimizer created by
// shapes still waits for. Pure.

export type Range = [number, number];

/** `ranges` without [start, end). */
export function subtractRange(ranges: readonly Range[], start: number, end: number): Range[] {
  const out: Range[] = [];
  for (const [a, b] of ranges) {
    if (b <= start || a >= end) out.push([a, b]);
    else {
      if (a < start) out.push([a, start]);
      if (b > end) out.push([end, b]);
    }
  }
  return out;
}

/** Total length of the ranges. */
export const rangesLength = (ranges: readonly Range[]) => ranges.reduce((n, [a, b]) => n + (b - a), 0);

/** Whether [start, end) meets any of the ranges. */
export const overlaps = (ranges: readonly Range[], start: number, end: number) => ranges.some(([a, b]) => a < end && start < b);
