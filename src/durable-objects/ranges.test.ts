import { describe, expect, it } from 'vitest';
import { overlaps, rangesLength, subtractRange, type Range } from './ranges.ts';

describe('element ranges', () => {
  const all: Range[] = [[0, 100]];
  it('subtracts a middle, an edge, everything, and nothing', () => {
    expect(subtractRange(all, 10, 20)).toEqual([[0, 10], [20, 100]]);
    expect(subtractRange(all, 0, 30)).toEqual([[30, 100]]);
    expect(subtractRange(all, 90, 100)).toEqual([[0, 90]]);
    expect(subtractRange(all, 0, 100)).toEqual([]);
    expect(subtractRange(all, 100, 120)).toEqual([[0, 100]]);
    expect(subtractRange([[0, 10], [20, 30], [40, 50]], 5, 45)).toEqual([[0, 5], [45, 50]]);
  });
  it('measures and tests overlap with half-open ends', () => {
    expect(rangesLength([[0, 10], [20, 25]])).toBe(15);
    expect(overlaps([[10, 20]], 0, 10)).toBe(false);
    expect(overlaps([[10, 20]], 19, 30)).toBe(true);
  });
});
