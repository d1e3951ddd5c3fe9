// Test functions for comparing optimizers (Rosenbrock, Beale, a noisy quadratic, a logistic
// regression): each a pure value and an analytic gradient. Pure: no HTTP, no JSON.

import type { Dtype, FloatArray } from '../optim/optimizer.ts';

/** A gradient oracle for one run: writes ∇f at `x` into `g`, every operation rounded to the run's dtype. */
export type GradientFn = (x: FloatArray, g: FloatArray) => void;

/** A problem with its options resolved: what every run of one comparison shares. */
export interface PreparedProblem {
  dimension: number;
  /** The start point, in float64 (a float32 run rounds it, as torch.tensor(start, dtype=float32) does). */
  start: readonly number[];
  /** f(x) in float64 (x of either dtype is read as doubles): the value the loss curves report. */
  loss(x: ArrayLike<number>): number;
  /**
   * A fresh gradient oracle for one run in `dtype`. Stochastic problems draw their noise from a
   * stream seeded afresh per run, so every run sees the same noise at the same step.
   */
  gradient(dtype: Dtype): GradientFn;
  /** The minimiser and minimum when known. */
  optimum: { loss: number; params: readonly number[] } | null;
}
