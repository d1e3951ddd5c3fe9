// Hugging Face warm-up schedules and the inverse-sqrt (Noam) schedule against hand-derived formulas.

import { describe, expect, it } from 'vitest';
import { inverseSqrtSchedule } from './inverse-sqrt.ts';
import type { Schedule } from './types.ts';
import { warmupCosineSchedule, warmupLinearSchedule } from './warmup.ts';

function expectTable(schedule: Schedule, table: ReadonlyArray<readonly [number, number]>) {
  for (const [k, want] of table) {
    const got = schedule(k);
    expect(Math.abs(got - want), `lr(${k}) = ${got}, want ${want}`).toBeLessThanOrEqual(1e-12 * Math.max(Math.abs(want), 1e-15));
  }
}

describe('warmupLinearSchedule (get_linear_schedule_with_warmup)', () => {
  it.each([
    ['W=10, T=110', { lr: 1, warmup_steps: 10, total_steps: 110 }, [[0, 0], [5, 0.5], [10, 1], [60, 0.5], [110, 0], [200, 0]]],
    ['no warm-up', { lr: 0.2, warmup_steps: 0, total_steps: 4 }, [[0, 0.2], [2, 0.1], [4, 0], [5, 0]]],
    ['warm-up only', { lr: 1, warmup_steps: 4, total_steps: 4 }, [[0, 0], [2, 0.5], [4, 0], [9, 0]]],
  ] as const)('%s', (_, params, table) => {
    expectTable(warmupLinearSchedule(params), table);
  });
});

describe('warmupCosineSchedule (get_cosine_schedule_with_warmup)', () => {
  it('warms up linearly from 0, then follows a half cosine to 0 at total_steps', () => {
    const s = warmupCosineSchedule({ lr: 1, warmup_steps: 10, total_steps: 110, min_lr: 0 });
    const c = (p: number) => 0.5 * (1 + Math.cos(Math.PI * p));
    expectTable(s, [[0, 0], [5, 0.5], [10, 1], [35, c(0.25)], [60, 0.5], [110, 0]]);
  });
  it('is not clamped past total_steps: the cosine rises again, as in transformers', () => {
    expectTable(warmupCosineSchedule({ lr: 1, warmup_steps: 10, total_steps: 110, min_lr: 0 }), [[160, 0.5], [210, 1]]);
  });
  it('decays to min_lr (get_cosine_with_min_lr_schedule_with_warmup)', () => {
    expectTable(warmupCosineSchedule({ lr: 1, warmup_steps: 10, total_steps: 110, min_lr: 0.1 }), [[0, 0], [10, 1], [60, 0.55], [110, 0.1]]);
  });
  it('handles lr = 0', () => {
    expectTable(warmupCosineSchedule({ lr: 0, warmup_steps: 2, total_steps: 4, min_lr: 0 }), [[0, 0], [3, 0]]);
  });
});

describe('inverseSqrtSchedule (Noam, s = k + 1)', () => {
  it('rises linearly to lr at the W-th step, then decays as sqrt(W/s)', () => {
    expectTable(inverseSqrtSchedule({ lr: 1e-3, warmup_steps: 4 }), [[0, 2.5e-4], [1, 5e-4], [2, 7.5e-4], [3, 1e-3], [4, 1e-3 * Math.sqrt(4 / 5)], [15, 5e-4], [99, 2e-4]]);
  });
  it('equals the Noam formula scale·d_model^−0.5·min(s^−0.5, s·W^−1.5) with lr = scale·(d_model·W)^−0.5', () => {
    const dModel = 512;
    const W = 4000;
    const s = inverseSqrtSchedule({ lr: (dModel * W) ** -0.5, warmup_steps: W });
    for (const k of [0, 1, 999, 3998, 3999, 4000, 10_000, 2 ** 24]) {
      const step = k + 1;
      const want = dModel ** -0.5 * Math.min(step ** -0.5, step * W ** -1.5);
      expect(Math.abs(s(k) - want)).toBeLessThanOrEqual(1e-12 * want);
    }
  });
  it('warmup_steps = 1 is a pure inverse square root', () => {
    expectTable(inverseSqrtSchedule({ lr: 1, warmup_steps: 1 }), [[0, 1], [3, 0.5], [99, 0.1]]);
  });
});
