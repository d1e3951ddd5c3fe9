// LinearLR and PolynomialLR closed forms against values worked out by hand.

import { describe, expect, it } from 'vitest';
import { linearSchedule } from './linear.ts';
import { polynomialSchedule } from './polynomial.ts';
import type { Schedule } from './types.ts';

function expectTable(schedule: Schedule, table: ReadonlyArray<readonly [number, number]>) {
  for (const [k, want] of table) {
    const got = schedule(k);
    expect(Math.abs(got - want), `lr(${k}) = ${got}, want ${want}`).toBeLessThanOrEqual(1e-12 * Math.abs(want));
  }
}

describe('linearSchedule (LinearLR)', () => {
  it.each([
    ['warm-up 0.5 → 1 over 4 steps', { lr: 1, start_factor: 0.5, end_factor: 1, total_steps: 4 }, [[0, 0.5], [1, 0.625], [2, 0.75], [3, 0.875], [4, 1], [10, 1]]],
    ['decay 1 → 0 over 2 steps', { lr: 1, start_factor: 1, end_factor: 0, total_steps: 2 }, [[0, 1], [1, 0.5], [2, 0], [5, 0]]],
    ['torch defaults (1/3 → 1 over 5)', { lr: 0.3, start_factor: 1 / 3, end_factor: 1, total_steps: 5 }, [[0, 0.1], [1, 0.14], [5, 0.3], [6, 0.3]]],
  ] as const)('%s', (_, params, table) => {
    expectTable(linearSchedule(params), table);
  });
});

describe('polynomialSchedule (PolynomialLR)', () => {
  it.each([
    ['power 2 over 4 steps', { lr: 1, total_steps: 4, power: 2 }, [[0, 1], [1, 0.5625], [2, 0.25], [3, 0.0625], [4, 0], [9, 0]]],
    ['power 1 is linear', { lr: 0.1, total_steps: 5, power: 1 }, [[0, 0.1], [1, 0.08], [4, 0.02], [5, 0]]],
    ['power 0.5', { lr: 1, total_steps: 4, power: 0.5 }, [[3, 0.5], [4, 0]]],
    ['power 0 is constant, even at the end (0^0 = 1, as in Python)', { lr: 1, total_steps: 4, power: 0 }, [[0, 1], [4, 1], [40, 1]]],
  ] as const)('%s', (_, params, table) => {
    expectTable(polynomialSchedule(params), table);
  });
});
