// Reduce the rate when a metric stops improving (torch ReduceLROnPlateau), as a pure state machine.

import type { PlateauSpec } from './types.ts';

/**
 * The whole state of a ReduceLROnPlateau scheduler, plain JSON: persist it and feed metrics one
 * at a time with {@link plateauUpdate}.
 */
export interface PlateauState {
  /** The current learning rate (torch `param_groups[0]["lr"]`). */
  lr: number;
  /** Best metric so far (torch `best`); null until the first report (torch: +inf in min mode, −inf in max mode). */
  best: number | null;
  /** Consecutive reports without improvement (torch `num_bad_epochs`). */
  num_bad_epochs: number;
  /** Reports left in the cooldown after a reduction (torch `cooldown_counter`). */
  cooldown_counter: number;
  /** Metric reports so far (torch `last_epoch`). */
  num_reports: number;
}

/** The state before any report: lr = spec.lr, no best yet. torch's constructor makes no step. */
export function plateauInit(spec: PlateauSpec): PlateauState {
  return { lr: spec.lr, best: null, num_bad_epochs: 0, cooldown_counter: 0, num_reports: 0 };
}

/**
 * torch's `is_better`: strict comparisons, so a tie or a value exactly at the threshold is not an
 * improvement. In rel mode with negative values the threshold points the other way, as in torch.
 */
function isBetter(spec: PlateauSpec, a: number, best: number): boolean {
  if (spec.mode === 'min') return spec.threshold_mode === 'rel' ? a < best * (1 - spec.threshold) : a < best - spec.threshold;
  return spec.threshold_mode === 'rel' ? a > best * (spec.threshold + 1) : a > best + spec.threshold;
}

/**
 * One metric report, as torch `ReduceLROnPlateau.step(metric)` (lr_scheduler.py:906):
 *
 * 1. if the metric is better than `best` (min/rel: `x < best·(1−threshold)`, min/abs:
 *    `x < best − threshold`, max/rel: `x > best·(1+threshold)`, max/abs: `x > best + threshold`),
 *    `best = x` and `num_bad_epochs = 0`; otherwise `num_bad_epochs += 1`;
 * 2. during a cooldown (`cooldown_counter > 0`) the counter decreases and bad reports are forgotten
 *    (`best` is still updated);
 * 3. if `num_bad_epochs > patience`: `new = max(lr·factor, min_lr)`, applied only if
 *    `lr − new > eps` (absolute); then `cooldown_counter = cooldown`, `num_bad_epochs = 0`.
 *
 * Pure: returns a new state. A NaN metric is never better (it counts as a bad report), as in torch.
 *
 * @param spec the validated reduce_on_plateau spec.
 * @param state the state after the previous reports ({@link plateauInit} for none).
 * @param metric the monitored value (e.g. the validation loss).
 * @returns the state after this report; its `lr` is the rate for the next steps.
 */
export function plateauUpdate(spec: PlateauSpec, state: PlateauState, metric: number): PlateauState {
  const best = state.best ?? (spec.mode === 'min' ? Infinity : -Infinity);
  let next: PlateauState;
  if (isBetter(spec, metric, best)) next = { ...state, best: metric, num_bad_epochs: 0 };
  else next = { ...state, num_bad_epochs: state.num_bad_epochs + 1 };
  next.num_reports = state.num_reports + 1;
  if (next.cooldown_counter > 0) {
    next.cooldown_counter -= 1;
    next.num_bad_epochs = 0;
  }
  if (next.num_bad_epochs > spec.patience) {
    const reduced = Math.max(next.lr * spec.factor, spec.min_lr);
    if (next.lr - reduced > spec.eps) next.lr = reduced;
    next.cooldown_counter = spec.cooldown;
    next.num_bad_epochs = 0;
  }
  return next;
}

/**
 * The rate after each number of reports: `out[k]` is the lr after the first k metrics, so
 * `out[0] = spec.lr` and `out.length = metrics.length + 1`. O(metrics.length).
 */
export function plateauTrajectory(spec: PlateauSpec, metrics: readonly number[]): number[] {
  let state = plateauInit(spec);
  const out = [state.lr];
  for (const m of metrics) {
    state = plateauUpdate(spec, state, m);
    out.push(state.lr);
  }
  return out;
}
