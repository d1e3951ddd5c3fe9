// Runs optimizers on a test problem (src/problems) and records the loss curves: the comparison of
// the article, as pure code. Every step goes through the registry's in-place step, the kernels the
// step routes use, with the learning rate a schedule gives (reduce_on_plateau is fed each step's loss).

import { initialSchedulerState, learningRate, reportMetric } from '../lib/learning-rate.ts';
import { initState, stepInPlace, type Dtype, type FloatArray, type Hyperparams, type OptimizerDef } from '../optim/optimizer.ts';
import type { PreparedProblem } from '../problems/index.ts';
import type { ScheduleSpec } from '../schedules/types.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;

/**
 * Largest loss a curve records: beyond it a run counts as diverged (it also keeps every recorded
 * value plottable, src/plot/line-chart.ts MAX_MAGNITUDE).
 */
export const DIVERGED_LOSS = 1e300;

export interface RunSpec {
  def: AnyDef;
  /** Validated hyperparameters with defaults filled in; `lr` is ignored when a schedule is given. */
  hyperparams: Hyperparams;
  schedule?: ScheduleSpec | undefined;
}

/** Why a run ended before `steps`. */
export interface Stop {
  /** The step that could not be completed (0-based: the gradient or update at the iterate `step`). */
  step: number;
  reason: 'non-finite-gradient' | 'non-finite-params' | 'diverged' | 'non-finite-lr';
  message: string;
}

export interface RunResult {
  /** f at the start and after each completed step: completed steps + 1 values, all finite and <= DIVERGED_LOSS. */
  loss: number[];
  /** The last iterate whose loss is recorded. */
  params: FloatArray;
  /** Completed steps (state.step as torch counts them, except saturation). */
  steps: number;
  stopped: Stop | null;
}

function allFinite(a: FloatArray): boolean {
  for (let i = 0; i < a.length; i++) if (a[i]! - a[i]! !== 0) return false;
  return true;
}

/**
 * One run: `steps` steps from the problem's start, in `dtype`. A run stops early, keeping the last
 * good iterate, when a gradient or the updated params are not finite or the loss exceeds DIVERGED_LOSS.
 */
export function runOne(problem: PreparedProblem, dtype: Dtype, steps: number, spec: RunSpec): RunResult {
  const { def, hyperparams, schedule } = spec;
  const n = problem.dimension;
  const make = () => (dtype === 'float32' ? new Float32Array(n) : new Float64Array(n));
  const params = make();
  for (let i = 0; i < n; i++) params[i] = problem.start[i]!;
  const grads = make();
  const previous = make();
  const gradient = problem.gradient(dtype);
  const state = initState(def, hyperparams, dtype, n);
  let plateau = initialSchedulerState(schedule);
  const loss = [problem.loss(params)];
  const shape = [n];
  for (let k = 0; k < steps; k++) {
    const lr = learningRate(hyperparams.lr as number, schedule, k, plateau);
    if (!Number.isFinite(lr)) return { loss, params, steps: k, stopped: { step: k, reason: 'non-finite-lr', message: `the schedule's learning rate at step ${k} is ${lr}` } };
    gradient(params, grads);
    if (!allFinite(grads)) return { loss, params, steps: k, stopped: { step: k, reason: 'non-finite-gradient', message: `the gradient at step ${k} is not finite (it overflows ${dtype})` } };
    previous.set(params);
    stepInPlace({ def, dtype, hp: { ...hyperparams, lr }, params, grads, shape, state });
    if (!allFinite(params)) {
      params.set(previous);
      return { loss, params, steps: k, stopped: { step: k, reason: 'non-finite-params', message: `step ${k} produced non-finite params (overflow, or a zero denominator)` } };
    }
    const f = problem.loss(params);
    if (!(f <= DIVERGED_LOSS)) {
      params.set(previous);
      return { loss, params, steps: k, stopped: { step: k, reason: 'diverged', message: `the loss after step ${k} is ${f}, above ${DIVERGED_LOSS}: the run diverged` } };
    }
    // torch's loop: loss = f(x); loss.backward(); opt.step(); scheduler.step(loss).
    plateau = reportMetric(schedule, plateau, loss[k]!);
    loss.push(f);
  }
  return { loss, params, steps, stopped: null };
}
