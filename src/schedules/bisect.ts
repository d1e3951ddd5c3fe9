// Binary search over sorted milestones, as Python's bisect.bisect_right (MultiStepLR, SequentialLR).

/**
 * Number of entries of the non-decreasing array `sorted` that are `<= x`, i.e. the insertion point
 * to the right of any equal entries. O(log n).
 *
 * @example bisectRight([3, 5, 5, 9], 5) // 3
 */
export function bisectRight(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (x < (sorted[mid] as number)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
