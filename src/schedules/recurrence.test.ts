import { describe, expect, it } from 'vitest';
import { CHECKPOINT_STRIDE, ReplayLimitError, recurrence } from './recurrence.ts';

describe('recurrence', () => {
  it('replays lr(k) = next(lr(k − 1), k) in any order, with the same doubles', () => {
    const next = (lr: number, k: number) => lr * (1 - 1 / (k + 7)) + 1e-3 / k;
    const direct = [0.3];
    for (let k = 1; k <= 3 * CHECKPOINT_STRIDE; k++) direct.push(next(direct[k - 1] as number, k));
    const f = recurrence(0.3, next);
    for (const k of [5, 3 * CHECKPOINT_STRIDE, 17, CHECKPOINT_STRIDE + 3, 0, 2 * CHECKPOINT_STRIDE - 1]) expect(Object.is(f(k), direct[k]), `k = ${k}`).toBe(true);
  });

  it('stops at a fixed point of an autonomous recurrence and holds past settlesAt', () => {
    const halve = recurrence(1, (lr) => lr * 0.5, { autonomous: true });
    expect(halve(1074)).toBe(5e-324);
    expect(halve(1075)).toBe(0);
    expect(halve(2 ** 52)).toBe(0); // no 2^52 multiplications: 0 · 0.5 = 0 is a fixed point
    const capped = recurrence(1, (lr) => lr + 1, { settlesAt: 10 });
    expect(capped(2 ** 50)).toBe(11);
  });

  it('finds its starting point in time independent of k: a step near 2^53 after a short replay', () => {
    // Regression: the start was searched index by index below k / CHECKPOINT_STRIDE (2^37 Map lookups here).
    const f = recurrence(1, (lr, k) => lr * (1 - 1 / (k + 2)), { budget: 10 });
    expect(f(3)).toBe(((1 * (1 - 1 / 3)) * (1 - 1 / 4)) * (1 - 1 / 5));
    // workerd's clock stands still during synchronous code, so a regression shows as this test hanging.
    expect(() => f(2 ** 53 - 1)).toThrow(ReplayLimitError);
  });

  it('charges its replays to a budget and refuses beyond it before doing any work', () => {
    let calls = 0;
    const f = recurrence(0, (lr) => (calls++, lr + 1), { budget: 100, weight: 4 });
    expect(f(20)).toBe(20); // 80 units
    expect(() => f(26)).toThrow(ReplayLimitError); // 80 + 24 > 100
    expect(calls).toBe(20);
    expect(f(25)).toBe(25); // exactly 100
    try {
      f(26);
    } catch (err) {
      expect(err).toMatchObject({ step: 26, cost: 104, budget: 100 });
    }
  });
});
