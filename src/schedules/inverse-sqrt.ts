// Inverse square root decay after a linear warm-up: the Transformer ("Noam") schedule.

import type { InverseSqrtSpec, Params, Schedule } from './types.ts';

/**
 * The schedule of "Attention Is All You Need" (Vaswani et al., https://arxiv.org/abs/1706.03762,
 * §5.3), `d_model^−0.5 · min(s^−0.5, s·W^−1.5)`, rescaled so that its peak is `lr`, in the NoamOpt
 * convention s = k + 1 (the original wrapper increments its step counter before computing the rate):
 *
 *     s = k + 1
 *     lr(k) = lr · min(s / W, sqrt(W / s))
 *
 * So the first step already uses lr/W (never 0), the rate grows linearly to exactly `lr` at the
 * W-th step (k = W − 1, the end of warm-up), then decays as lr·sqrt(W/s). The Noam parameters map
 * as lr = scale · (d_model · W)^−0.5. (The Annotated Transformer's `rate()` driven by LambdaLR uses
 * s = max(k, 1) instead: the same curve one step later, with lr(0) = lr(1).)
 *
 * @param params.lr peak rate, reached at k = W − 1.
 * @param params.warmup_steps W, integer >= 1.
 * @example inverseSqrtSchedule({ lr: 1e-3, warmup_steps: 4 })(15) // 1e-3 · sqrt(4/16) = 5e-4
 */
export function inverseSqrtSchedule({ lr, warmup_steps: W }: Params<InverseSqrtSpec>): Schedule {
  return function inverseSqrt(k) {
    const s = k + 1;
    return lr * Math.min(s / W, Math.sqrt(W / s));
  };
}
