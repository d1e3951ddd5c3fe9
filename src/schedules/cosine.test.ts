// CosineAnnealingLR and CosineAnnealingWarmRestarts against values worked out by hand.

import { describe, expect, it } from 'vitest';
import { cosineSchedule } from './cosine.ts';
import type { Schedule } from './types.ts';
import { warmRestartsSchedule } from './warm-restarts.ts';

/** |got − want| <= 1e-12·max(|want|, floor): the floor covers values that are 0 up to rounding. */
function expectTable(schedule: Schedule, table: ReadonlyArray<readonly [number, number]>, floor = 1e-15) {
  for (const [k, want] of table) {
    const got = schedule(k);
    expect(Math.abs(got - want), `lr(${k}) = ${got}, want ${want}`).toBeLessThanOrEqual(1e-12 * Math.max(Math.abs(want), floor));
  }
}

const C1 = (1 + Math.SQRT1_2) / 2; // (1 + cos(π/4)) / 2
const C3 = (1 - Math.SQRT1_2) / 2; // (1 + cos(3π/4)) / 2

describe('cosineSchedule (CosineAnnealingLR)', () => {
  it('anneals from lr to min_lr over total_steps', () => {
    expectTable(cosineSchedule({ lr: 1, total_steps: 4, min_lr: 0 }), [[0, 1], [1, C1], [2, 0.5], [3, C3], [4, 0]]);
  });
  it('is periodic with period 2·total_steps past total_steps, as torch', () => {
    expectTable(cosineSchedule({ lr: 1, total_steps: 4, min_lr: 0 }), [[5, C3], [6, 0.5], [7, C1], [8, 1], [9, C1], [12, 0], [16, 1], [4004, 0], [4008, 1]]);
  });
  it('respects min_lr', () => {
    expectTable(cosineSchedule({ lr: 1, total_steps: 4, min_lr: 0.1 }), [[0, 1], [2, 0.55], [4, 0.1], [6, 0.55], [8, 1]]);
  });
  it('handles total_steps = 1 (alternates lr, min_lr)', () => {
    expectTable(cosineSchedule({ lr: 0.5, total_steps: 1, min_lr: 0.1 }), [[0, 0.5], [1, 0.1], [2, 0.5], [3, 0.1]]);
  });
  it("stays near the textbook closed form at large steps (torch's own rounding differs from it by ~5e-10 there)", () => {
    const spec = { lr: 0.1, total_steps: 1000, min_lr: 1e-4 };
    const s = cosineSchedule(spec);
    for (const k of [2 ** 20 + 17, 2 ** 24 - 1, 2 ** 24, 10_000_001]) {
      const want = spec.min_lr + ((spec.lr - spec.min_lr) * (1 + Math.cos((Math.PI * k) / spec.total_steps))) / 2;
      expect(Math.abs(s(k) - want)).toBeLessThanOrEqual(1e-8 * spec.lr);
      expect(s(k)).toBeGreaterThanOrEqual(spec.min_lr);
      expect(s(k)).toBeLessThanOrEqual(spec.lr);
    }
  });
});

describe('warmRestartsSchedule (CosineAnnealingWarmRestarts)', () => {
  it('restarts every period with period_mult 1', () => {
    expectTable(warmRestartsSchedule({ lr: 1, period: 4, period_mult: 1, min_lr: 0 }), [[0, 1], [1, C1], [2, 0.5], [3, C3], [4, 1], [6, 0.5], [4002, 0.5]]);
  });
  it('doubles the period with period_mult 2 (periods 2, 4, 8, 16, …)', () => {
    expectTable(warmRestartsSchedule({ lr: 1, period: 2, period_mult: 2, min_lr: 0 }), [
      [0, 1], [1, 0.5], [2, 1], [3, C1], [4, 0.5], [6, 1], [10, 0.5], [14, 1], [30, 1], [2 ** 21 - 2, 1],
    ]);
  });
  it('respects min_lr and never reaches it', () => {
    const s = warmRestartsSchedule({ lr: 1, period: 4, period_mult: 1, min_lr: 0.2 });
    expectTable(s, [[0, 1], [2, 0.6]]);
    expect(s(3)).toBeGreaterThan(0.2);
  });
});
