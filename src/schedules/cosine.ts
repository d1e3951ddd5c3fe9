// Cosine annealing from lr to min_lr over total_steps, periodic afterwards (torch CosineAnnealingLR).

import { CORRECTLY_ROUNDED } from './libm.ts';
import { COS_WEIGHT, recurrence } from './recurrence.ts';
import type { BuildOptions, CosineSpec, Params, Schedule } from './types.ts';

/**
 * As torch `CosineAnnealingLR(T_max, eta_min)`, mathematically
 *
 *     lr(k) = min_lr + (lr − min_lr) · (1 + cos(π·k/T)) / 2,   T = total_steps
 *
 * **Past T the rate rises again**: torch's schedule is periodic with period 2T (it reaches min_lr
 * at k = T, 3T, 5T, … and lr at 0, 2T, 4T, …). It does not hold min_lr; use `sequential` with a
 * `constant` tail, or `warmup_cosine`/`one_cycle`, for a floor.
 *
 * torch computes it recursively (`get_lr`, lr_scheduler.py:805), and so do we, with c(j) =
 * 1 + cos(π·j/T) (`math.pi * j / T_max`, the C library's cos):
 *
 *     lr_0 = lr                                                  (SequentialLR's step(0) at a
 *                                                                 milestone: min_lr + (lr − min_lr)·c(0)/2)
 *     lr_k = lr_{k−1} + (lr − min_lr)·(1 − cos(π/T))/2           if (k − 1 − T) mod 2T = 0 (just past a minimum)
 *     lr_k = c(k)/c(k−1) · (lr_{k−1} − min_lr) + min_lr          otherwise
 *
 * Each step rounds, so the values drift from the closed form above (≈1e-14 relative after a few
 * thousand steps, ≈1e-9 after 2^21). The recursion forgets its past at each minimum m = T, 3T, …
 * where c(m) is exactly 0 (cos(π·m/T) rounds to −1, true unless m/T is in the tens of millions):
 * there lr_m = 0·(…) + min_lr = min_lr whatever came before. So evaluating at k replays at most
 * the steps since the last such minimum (below T: since 0), once; see `recurrence` for the memo.
 *
 * @param params.lr initial (maximum) rate.
 * @param params.total_steps T (torch `T_max`), half the period, an integer >= 1.
 * @param params.min_lr minimum (torch `eta_min`, default 0), <= lr.
 * @param options.start `milestone` for SequentialLR's closed-form first value (default `initial`).
 * @param options.libm the `cos` to use (default: the correctly rounded ones of libm.ts).
 * @example cosineSchedule({ lr: 1, total_steps: 10, min_lr: 0 })(5) // ≈ 0.5
 */
export function cosineSchedule({ lr, total_steps: T, min_lr }: Params<CosineSpec>, { start = 'initial', libm = CORRECTLY_ROUNDED, replayBudget }: BuildOptions = {}): Schedule {
  const { cos } = libm;
  const c = (j: number) => 1 + cos((Math.PI * j) / T);
  const restartStep = ((lr - min_lr) * (1 - cos(Math.PI / T))) / 2;
  // c(k − 1) from the previous step of a replay, so that a replay costs one cos per step.
  let cachedJ = -1;
  let cachedC = NaN;
  const cAt = (j: number) => {
    if (j !== cachedJ) {
      cachedJ = j;
      cachedC = c(j);
    }
    return cachedC;
  };
  const next = (current: number, k: number) => {
    if ((k - 1 - T) % (2 * T) === 0) return current + restartStep;
    const before = cAt(k - 1);
    return (cAt(k) / before) * (current - min_lr) + min_lr;
  };
  /** The last minimum m in (after, k] where torch's rate is min_lr exactly: c(m) = 0 and c(m − 1) > 0. */
  const anchor = (k: number, after: number): readonly [number, number] | undefined => {
    // With min_lr = −0, 0·x + min_lr keeps the sign of x: no step is independent of the past.
    if (Object.is(min_lr, -0) || k < T) return undefined;
    for (let m = T + 2 * T * Math.floor((k - T) / (2 * T)), tries = 0; m > after && tries < 4; m -= 2 * T, tries++) {
      if (c(m) === 0 && c(m - 1) > 0) return [m, min_lr];
    }
    return undefined;
  };
  const first = start === 'milestone' ? min_lr + ((lr - min_lr) * (1 + cos((Math.PI * 0) / T))) / 2 : lr;
  const annealed = recurrence(first, next, { anchor, budget: replayBudget, weight: COS_WEIGHT });
  return function cosine(k) {
    return annealed(k);
  };
}
