// CyclicLR and OneCycleLR against values worked out by hand.

import { describe, expect, it } from 'vitest';
import { cyclicSchedule } from './cyclic.ts';
import { oneCycleSchedule } from './one-cycle.ts';
import type { OneCycleSpec, Params, Schedule } from './types.ts';

function expectTable(schedule: Schedule, table: ReadonlyArray<readonly [number, number]>) {
  for (const [k, want] of table) {
    const got = schedule(k);
    expect(Math.abs(got - want), `lr(${k}) = ${got}, want ${want}`).toBeLessThanOrEqual(1e-12 * Math.abs(want));
  }
}

describe('cyclicSchedule (CyclicLR)', () => {
  it.each([
    ['triangular, symmetric', { base_lr: 0.1, max_lr: 1, step_size_up: 4, mode: 'triangular', gamma: 1 }, [[0, 0.1], [2, 0.55], [4, 1], [6, 0.55], [8, 0.1], [12, 1], [8000, 0.1]]],
    ['triangular, up 1 down 3', { base_lr: 0.1, max_lr: 1, step_size_up: 1, step_size_down: 3, mode: 'triangular', gamma: 1 }, [[0, 0.1], [1, 1], [2, 0.7], [3, 0.4], [4, 0.1], [5, 1]]],
    ['triangular2 halves the amplitude each cycle', { base_lr: 0, max_lr: 1, step_size_up: 2, mode: 'triangular2', gamma: 1 }, [[2, 1], [6, 0.5], [10, 0.25], [9, 0.125]]],
    ['exp_range scales by gamma^k', { base_lr: 0, max_lr: 1, step_size_up: 2, mode: 'exp_range', gamma: 0.5 }, [[1, 0.25], [2, 0.25], [6, 1 / 64]]],
    ['base_lr = max_lr is constant', { base_lr: 0.3, max_lr: 0.3, step_size_up: 5, mode: 'triangular', gamma: 1 }, [[0, 0.3], [5, 0.3], [7, 0.3]]],
  ] as const)('%s', (_, params, table) => {
    expectTable(cyclicSchedule(params), table);
  });
});

const ONE_CYCLE: Params<OneCycleSpec> = {
  max_lr: 1,
  total_steps: 10,
  pct_start: 0.3,
  anneal_strategy: 'cos',
  div_factor: 10,
  final_div_factor: 100,
  three_phase: false,
};

describe('oneCycleSchedule (OneCycleLR)', () => {
  it('warms up to max_lr at pct_start·T − 1, then anneals to initial/final_div_factor at T − 1 (cos)', () => {
    // initial 0.1, min 0.001; phase ends 2 and 9.
    expectTable(oneCycleSchedule(ONE_CYCLE), [[0, 0.1], [1, 0.55], [2, 1], [9, 0.001]]);
    const pct = 3.5 / 7; // k = 5.5 is not a step; k = 5: (5 − 2)/7
    expectTable(oneCycleSchedule(ONE_CYCLE), [[5, 0.001 + ((1 - 0.001) / 2) * (Math.cos((Math.PI * 3) / 7) + 1)]]);
    expect(pct).toBe(0.5);
  });
  it('linear annealing', () => {
    expectTable(oneCycleSchedule({ ...ONE_CYCLE, anneal_strategy: 'linear' }), [[0, 0.1], [1, 0.55], [2, 1], [9, 0.001], [6, 1 - (0.999 * 4) / 7]]);
  });
  it('three phases: up to max_lr, back to initial at 2·pct·T − 2, then down to min', () => {
    expectTable(oneCycleSchedule({ ...ONE_CYCLE, anneal_strategy: 'linear', three_phase: true }), [[0, 0.1], [2, 1], [3, 0.55], [4, 0.1], [6, 0.0604], [9, 0.001]]);
  });
  it('pct_start 0 starts inside the annealing phase, as torch (phase end −1)', () => {
    expectTable(oneCycleSchedule({ ...ONE_CYCLE, total_steps: 5, final_div_factor: 10, pct_start: 0, anneal_strategy: 'linear' }), [[0, 0.802], [4, 0.01]]);
  });
  it('holds the final rate from total_steps on (torch extrapolates once, then raises)', () => {
    const s = oneCycleSchedule({ ...ONE_CYCLE, anneal_strategy: 'linear' });
    expect(s(10)).toBe(s(9));
    expect(s(2 ** 24)).toBe(s(9));
  });
  it('reproduces torch\'s lrs[0] = 0.0040000000000000036 for max_lr 0.1 (cos form)', () => {
    expect(oneCycleSchedule({ ...ONE_CYCLE, max_lr: 0.1, total_steps: 100, div_factor: 25, final_div_factor: 1e4 })(0)).toBe(0.0040000000000000036);
  });
});
