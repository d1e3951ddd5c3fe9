// SequentialLR-style joins: local steps, jumps at milestones, equal milestones, nesting.

import { describe, expect, it } from 'vitest';
import { compileSchedule } from './compile.ts';
import { constantSchedule } from './constant.ts';
import { sequentialSchedule } from './sequential.ts';
import type { ScheduleSpec } from './types.ts';

const c = (lr: number) => constantSchedule({ lr });

describe('sequentialSchedule (SequentialLR)', () => {
  it('switches schedule at each milestone', () => {
    const s = sequentialSchedule([c(1), c(2), c(3)], [2, 5]);
    expect([0, 1, 2, 4, 5, 100].map(s)).toEqual([1, 1, 2, 2, 3, 3]);
  });
  it('starts each later schedule from its own step 0', () => {
    const s = compileSchedule({
      type: 'sequential',
      schedules: [
        { type: 'constant', lr: 9 },
        { type: 'step', lr: 1, step_size: 2, gamma: 0.5 },
      ],
      milestones: [3],
    });
    expect([2, 3, 4, 5, 7].map(s)).toEqual([9, 1, 1, 0.5, 0.25]);
  });
  it('skips the schedules between equal milestones, as torch', () => {
    const s = sequentialSchedule([c(1), c(2), c(3)], [2, 2]);
    expect([0, 1, 2, 3].map(s)).toEqual([1, 1, 3, 3]);
  });
  it('nests', () => {
    const inner = sequentialSchedule([c(1), c(2)], [1]);
    const s = sequentialSchedule([inner, c(3)], [3]);
    expect([0, 1, 2, 3, 4].map(s)).toEqual([1, 2, 2, 3, 3]);
  });
  it('jumps to a warm-up-then-cosine\'s cosine start at the milestone', () => {
    const s = compileSchedule({
      type: 'sequential',
      schedules: [
        { type: 'linear', lr: 0.1, start_factor: 0.1, end_factor: 1, total_steps: 10 },
        { type: 'cosine', lr: 0.1, total_steps: 90, min_lr: 0 },
      ],
      milestones: [10],
    });
    expect(s(9)).toBeCloseTo(0.091, 15);
    expect(s(10)).toBe(0.1);
    expect(s(100)).toBe(0);
  });
  it('rejects a count mismatch', () => {
    expect(() => sequentialSchedule([c(1)], [3])).toThrow(RangeError);
  });
  it('compileSchedule rejects reduce_on_plateau inside, with its path', () => {
    const spec = {
      type: 'sequential',
      schedules: [{ type: 'constant', lr: 1 }, { type: 'reduce_on_plateau', lr: 1 }],
      milestones: [3],
    } as unknown as ScheduleSpec;
    expect(() => compileSchedule(spec)).toThrow(/schedules\.1\.type: reduce_on_plateau cannot be part of sequential/);
  });
});
