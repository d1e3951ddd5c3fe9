// Linear warm-up from 0, then cosine or linear decay (Hugging Face transformers via torch LambdaLR).

import { CORRECTLY_ROUNDED } from './libm.ts';
import type { BuildOptions, Params, Schedule, WarmupCosineSpec, WarmupLinearSpec } from './types.ts';

/**
 * As transformers' `get_cosine_schedule_with_warmup(num_warmup_steps=W, num_training_steps=T)`
 * (`num_cycles=0.5`), extended with a floor like `get_cosine_with_min_lr_schedule_with_warmup(min_lr)`:
 * `lr(k) = lr · λ(k)` with
 *
 *     λ(k) = k / max(1, W)                                   for k < W   (λ(0) = 0)
 *     p    = (k − W) / max(1, T − W)
 *     λ(k) = max(0, c·(1 − r) + r),  c = (1 + cos(π·p)) / 2,  r = min_lr / lr   for k >= W
 *
 * so the rate rises linearly from 0 to lr over W steps, then follows a half cosine down to min_lr
 * at k = T. As in transformers, **p is not clamped**: past T the cosine rises again (period 2(T−W)).
 * The warm-up starts from 0, not from min_lr. transformers evaluates this closed form through torch's
 * `LambdaLR` (`base_lr · λ(k)` at every step, lr_scheduler.py:255, no recursion); these are its
 * lambda's operations in its order, so the values are its doubles wherever the C libraries' `cos` agree.
 *
 * @param params.lr peak rate (the optimizer's lr in transformers).
 * @param params.warmup_steps W (`num_warmup_steps`), integer >= 0, <= total_steps.
 * @param params.total_steps T (`num_training_steps`), integer >= 1.
 * @param params.min_lr floor of the decay (default 0), <= lr.
 * @param params.floor_rate r itself, when a param group's lr stands in for `lr` (then r is the schedule's
 *   `min_lr / lr`, as transformers' one lambda for every group: each group's floor is its lr · r).
 * @param options.libm the `cos` to use (default: the correctly rounded ones of libm.ts).
 * @example warmupCosineSchedule({ lr: 1, warmup_steps: 10, total_steps: 110, min_lr: 0 })(60) // ≈ 0.5
 */
export function warmupCosineSchedule({ lr, warmup_steps: W, total_steps: T, min_lr, floor_rate }: Params<WarmupCosineSpec>, { libm = CORRECTLY_ROUNDED }: BuildOptions = {}): Schedule {
  const { cos } = libm;
  const rate = floor_rate ?? (lr === 0 ? 0 : min_lr / lr);
  return function warmupCosine(k) {
    if (k < W) return lr * (k / Math.max(1, W));
    const progress = (k - W) / Math.max(1, T - W);
    const factor = 0.5 * (1 + cos(Math.PI * 0.5 * 2 * progress));
    return lr * Math.max(0, factor * (1 - rate) + rate);
  };
}

/**
 * As transformers' `get_linear_schedule_with_warmup(num_warmup_steps=W, num_training_steps=T)`:
 * `lr(k) = lr · λ(k)` with
 *
 *     λ(k) = k / max(1, W)                      for k < W   (λ(0) = 0)
 *     λ(k) = max(0, (T − k) / max(1, T − W))    for k >= W
 *
 * rising linearly from 0 to lr over W steps, then falling linearly to exactly 0 at k = T and
 * staying there. A closed form through torch's `LambdaLR`, with the lambda's operations in its order.
 *
 * @param params.lr peak rate.
 * @param params.warmup_steps W, integer >= 0, <= total_steps.
 * @param params.total_steps T, integer >= 1.
 * @example warmupLinearSchedule({ lr: 1, warmup_steps: 10, total_steps: 110 })(60) // 0.5
 */
export function warmupLinearSchedule({ lr, warmup_steps: W, total_steps: T }: Params<WarmupLinearSpec>): Schedule {
  return function warmupLinear(k) {
    if (k < W) return lr * (k / Math.max(1, W));
    return lr * Math.max(0, (T - k) / Math.max(1, T - W));
  };
}
