// The 1cycle policy: warm up to max_lr, then anneal far below the start (torch OneCycleLR).

import { CORRECTLY_ROUNDED, type Libm } from './libm.ts';
import type { BuildOptions, OneCycleSpec, Params, Schedule } from './types.ts';

interface Phase {
  end: number;
  from: number;
  to: number;
}

type Anneal = (from: number, to: number, pct: number) => number;

/** torch's `_annealing_cos` (lr_scheduler.py:1668): cosine from `from` (pct 0) to `to` (pct 1). */
function annealCos({ cos }: Libm): Anneal {
  return function annealCos(from, to, pct) {
    return to + ((from - to) / 2) * (cos(Math.PI * pct) + 1);
  };
}

/** torch's `_annealing_linear` (lr_scheduler.py:1673). */
function annealLinear(from: number, to: number, pct: number): number {
  return (to - from) * pct + from;
}

/**
 * As torch `OneCycleLR(max_lr, total_steps, pct_start, anneal_strategy, div_factor,
 * final_div_factor, three_phase)` with `cycle_momentum=False` (Smith & Topin, "Super-Convergence",
 * https://arxiv.org/abs/1708.07120). With `initial = max_lr/div_factor` and
 * `min = initial/final_div_factor`, the phases end (inclusive, as floats, like torch) at
 *
 *     two phases:   pct_start·T − 1 (initial → max_lr),  T − 1 (max_lr → min)
 *     three phases: pct_start·T − 1 (initial → max_lr),  2·pct_start·T − 2 (max_lr → initial),  T − 1 (initial → min)
 *
 * and within a phase `pct = (k − start)/(end − start)` where start is the previous phase's end
 * (0 for the first); `cos` anneals as `to + (from − to)/2 · (cos(π·pct) + 1)`, `linear` as
 * `(to − from)·pct + from`. torch computes this closed form at every step (`get_lr`,
 * lr_scheduler.py:1677), and these are its operations in its order, so `lr(0)` is torch's
 * 0.0040000000000000036 (not 0.004) for max_lr = 0.1, and every value is torch's double wherever
 * the two C libraries' `cos` agree.
 *
 * **After the last step**: torch allows exactly one more `step()` (k = T), which extrapolates the
 * last phase (below min, even negative, with `linear`; back up with `cos`) and raises ValueError
 * after that. We hold the final value `lr(T − 1)` (= min) for every k >= T instead.
 *
 * @param params.max_lr peak rate.
 * @param params.total_steps T, integer >= 1 (torch `total_steps`, or epochs × steps_per_epoch).
 * @param params.pct_start fraction of T spent warming up, in [0, 1] (default 0.3); pct_start·T must not be 1.
 * @param params.anneal_strategy `cos` (default) or `linear`.
 * @param params.div_factor initial = max_lr / div_factor (default 25).
 * @param params.final_div_factor min = initial / final_div_factor (default 1e4).
 * @param params.three_phase use the symmetric three-phase variant (default false).
 * @param options.libm the `cos` to use (default: the correctly rounded ones of libm.ts).
 * @example oneCycleSchedule({ max_lr: 0.1, total_steps: 100, pct_start: 0.3, anneal_strategy: 'cos', div_factor: 25, final_div_factor: 1e4, three_phase: false })(29) // ≈ 0.1
 */
export function oneCycleSchedule(params: Params<OneCycleSpec>, { libm = CORRECTLY_ROUNDED }: BuildOptions = {}): Schedule {
  const { max_lr, total_steps: T, pct_start, div_factor, final_div_factor, three_phase } = params;
  const initial = max_lr / div_factor;
  const min = initial / final_div_factor;
  const anneal = params.anneal_strategy === 'cos' ? annealCos(libm) : annealLinear;
  const phases: Phase[] = three_phase
    ? [
        { end: pct_start * T - 1, from: initial, to: max_lr },
        { end: 2 * pct_start * T - 2, from: max_lr, to: initial },
        { end: T - 1, from: initial, to: min },
      ]
    : [
        { end: pct_start * T - 1, from: initial, to: max_lr },
        { end: T - 1, from: max_lr, to: min },
      ];
  return function oneCycle(step) {
    const k = Math.min(step, T - 1);
    let start = 0;
    for (let i = 0; i < phases.length; i++) {
      const phase = phases[i] as Phase;
      if (k <= phase.end || i === phases.length - 1) {
        return anneal(phase.from, phase.to, (k - start) / (phase.end - start));
      }
      start = phase.end;
    }
    /* c8 ignore next */
    throw new Error('unreachable');
  };
}
