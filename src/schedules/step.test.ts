// Constant, step, multistep and exponential schedules against values worked out by hand.

import { describe, expect, it } from 'vitest';
import { constantSchedule } from './constant.ts';
import { exponentialSchedule } from './exponential.ts';
import { multistepSchedule, stepSchedule } from './step.ts';
import type { Schedule } from './types.ts';

function expectTable(schedule: Schedule, table: Array<[number, number]>) {
  for (const [k, want] of table) {
    const got = schedule(k);
    expect(Math.abs(got - want), `lr(${k}) = ${got}, want ${want}`).toBeLessThanOrEqual(1e-12 * Math.abs(want));
  }
}

describe('constantSchedule', () => {
  it('is the same at every step', () => {
    expectTable(constantSchedule({ lr: 0.003 }), [[0, 0.003], [7, 0.003], [2 ** 24, 0.003]]);
  });
});

describe('stepSchedule (StepLR)', () => {
  it.each([
    ['lr=1, step_size=3, gamma=0.5', { lr: 1, step_size: 3, gamma: 0.5 }, [[0, 1], [2, 1], [3, 0.5], [5, 0.5], [6, 0.25], [9, 0.125]]],
    ['lr=0.1, step_size=1, gamma=0.1', { lr: 0.1, step_size: 1, gamma: 0.1 }, [[0, 0.1], [1, 0.01], [2, 0.001]]],
    ['lr=0.1, step_size=30 (default gamma 0.1)', { lr: 0.1, step_size: 30, gamma: 0.1 }, [[29, 0.1], [30, 0.01], [65, 0.001]]],
  ] as const)('%s', (_, params, table) => {
    expectTable(stepSchedule(params), table as unknown as Array<[number, number]>);
  });

  it('underflows to 0 rather than misbehaving at 2^24 steps', () => {
    expect(stepSchedule({ lr: 1, step_size: 1, gamma: 0.5 })(2 ** 24)).toBe(0);
  });
});

describe('multistepSchedule (MultiStepLR)', () => {
  it('applies gamma once per milestone reached, duplicates compounding', () => {
    expectTable(multistepSchedule({ lr: 1, milestones: [2, 2, 5], gamma: 0.5 }), [[0, 1], [1, 1], [2, 0.25], [4, 0.25], [5, 0.125], [100, 0.125]]);
  });
  it('applies a milestone 0 from the first step, as torch\'s constructor step does', () => {
    expectTable(multistepSchedule({ lr: 1, milestones: [0, 3], gamma: 0.1 }), [[0, 0.1], [2, 0.1], [3, 0.01]]);
  });
  it('is constant without milestones', () => {
    expectTable(multistepSchedule({ lr: 0.2, milestones: [], gamma: 0.1 }), [[0, 0.2], [1000, 0.2]]);
  });
});

describe('exponentialSchedule (ExponentialLR)', () => {
  it.each([
    [{ lr: 2, gamma: 0.5 }, [[0, 2], [1, 1], [3, 0.25], [10, 2 / 1024]]],
    [{ lr: 1e-4, gamma: 10 }, [[0, 1e-4], [2, 1e-2], [4, 1]]],
  ] as const)('%o', (params, table) => {
    expectTable(exponentialSchedule(params), table as unknown as Array<[number, number]>);
  });
  it('overflows to Infinity for gamma > 1 and huge steps (callers turn that into a 422)', () => {
    expect(exponentialSchedule({ lr: 1, gamma: 1.5 })(2 ** 24)).toBe(Infinity);
  });
});
