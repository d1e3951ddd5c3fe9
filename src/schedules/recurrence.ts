// torch's chainable schedulers as recurrences: lr(k) is computed from lr(k − 1), as torch's get_lr()
// computes it from the optimizer's current rate, and replayed from the nearest step already known.

import type { Schedule } from './types.ts';

/** Steps between two remembered values of a recurrence: once a range has been replayed, any step in it costs at most this many more. */
export const CHECKPOINT_STRIDE = 65_536;

/** Work units of one replayed step that calls the correctly rounded cos (measured in V8: 10–11 multiply steps' time). */
export const COS_WEIGHT = 16;
/** Work units of one replayed step that calls the correctly rounded pow (measured in V8: 130–133 multiply steps' time). */
export const POW_WEIGHT = 160;

/**
 * Thrown when one evaluation would replay more of torch's recursion than its budget allows
 * (see {@link RecurrenceOptions.budget}); `step` is the step asked for.
 */
export class ReplayLimitError extends Error {
  readonly step: number;
  readonly cost: number;
  readonly budget: number;
  constructor(step: number, cost: number, budget: number) {
    super(`evaluating torch's recursion at step ${step} would replay ${cost} units of work, more than the ${budget} allowed`);
    this.name = 'ReplayLimitError';
    this.step = step;
    this.cost = cost;
    this.budget = budget;
  }
}

/**
 * Work units that replays may spend, shared by every recurrence of one compiled schedule (a
 * `sequential` of 32 children gets one budget, not 32). `spent` accumulates over calls; a caller
 * that keeps a compiled schedule across requests calls {@link ReplayBudget.reset} before each one,
 * so that each request may spend `limit` on top of what earlier requests left memoized.
 */
export class ReplayBudget {
  spent = 0;
  readonly limit: number;
  constructor(limit: number) {
    this.limit = limit;
  }
  /** Takes `cost` units for replaying up to `step`, or throws {@link ReplayLimitError} and takes nothing. */
  charge(step: number, cost: number): void {
    if (this.spent + cost > this.limit) throw new ReplayLimitError(step, this.spent + cost, this.limit);
    this.spent += cost;
  }
  reset(): void {
    this.spent = 0;
  }
}

export interface RecurrenceOptions {
  /** From this step on torch returns the rate unchanged (e.g. past `total_iters`), so lr(k) = lr(settlesAt) for k >= settlesAt. */
  settlesAt?: number;
  /**
   * `next` does not depend on k (ExponentialLR's `lr · gamma`): once next(lr) === lr the rate is a
   * fixed point (0, Infinity, or a value that `· gamma` rounds back to itself) and stays there.
   */
  autonomous?: boolean;
  /**
   * The latest step j in (after, k] whose rate torch computes exactly the same whatever came
   * before (a CosineAnnealingLR minimum, where the ratio is 0), with that rate: `[j, lr(j)]`, or
   * undefined (`after` is the step the replay would start from otherwise).
   */
  anchor?: (k: number, after: number) => readonly [number, number] | undefined;
  /** Work units one replayed step costs (default 1: a multiply; a correctly rounded cos or pow is more). */
  weight?: number;
  /**
   * Most work units the returned function may replay (default Infinity): a number for this function
   * alone, over all its calls, or a {@link ReplayBudget} shared with other recurrences. A call that
   * would go beyond throws {@link ReplayLimitError} before doing any work.
   */
  budget?: number | ReplayBudget;
}

/**
 * A schedule defined as torch's chainable form: `lr(0) = first` (the constructor's initial step) and
 * `lr(k) = next(lr(k − 1), k)` for k >= 1, where `next` is torch's `get_lr()` at `last_epoch = k`
 * with `group['lr'] = lr(k − 1)`. The value at k is the same double torch holds after k
 * `scheduler.step()` calls because it is the same sequence of roundings.
 *
 * Random access replays the recursion from the nearest known step at or below k: the last value
 * computed, a checkpoint (every {@link CHECKPOINT_STRIDE} steps replayed are remembered), an
 * anchor, or step 0. Ascending steps therefore cost O(1) each after the first, and any step
 * O(CHECKPOINT_STRIDE) once its range has been replayed; the first evaluation at k costs O(k)
 * (at most `settlesAt` steps, and nothing past a fixed point of an autonomous recurrence).
 *
 * The returned function keeps that memo in its closure: it is still a pure function of k.
 *
 * @param first lr(0).
 * @param next torch's get_lr() for k >= 1, given the current rate.
 * @param options where the recursion stops changing or can restart; see {@link RecurrenceOptions}.
 * @returns `lr(k)` for integer k >= 0.
 * @example recurrence(1, (lr) => lr * 0.5, { autonomous: true })(3) // 0.125
 */
export function recurrence(first: number, next: (lr: number, k: number) => number, options: RecurrenceOptions = {}): Schedule {
  const settlesAt = options.settlesAt ?? Infinity;
  const weight = options.weight ?? 1;
  const budget = options.budget instanceof ReplayBudget ? options.budget : new ReplayBudget(options.budget ?? Infinity);
  const checkpoints = new Map<number, number>([[0, first]]); // i → lr(i · CHECKPOINT_STRIDE)
  let fixedFrom = Infinity; // autonomous: first step of the fixed point, once reached
  let fixedLr = NaN;
  let lastK = 0;
  let lastLr = first;

  /** The known step nearest below or at k: [step, lr]. */
  function start(k: number): [number, number] {
    let best: [number, number] = [0, first];
    if (lastK <= k) best = [lastK, lastLr];
    // Scan the checkpoints themselves, not the indices below k: there are at most (work replayed) /
    // CHECKPOINT_STRIDE of them, while k / CHECKPOINT_STRIDE can be 2^37 for a step near 2^53.
    for (const [i, lr] of checkpoints) {
      const at = i * CHECKPOINT_STRIDE;
      if (at <= k && at > best[0]) best = [at, lr];
    }
    const anchor = best[0] < k ? options.anchor?.(k, best[0]) : undefined;
    if (anchor && anchor[0] > best[0]) best = [anchor[0], anchor[1]];
    return best;
  }

  return function chainable(step: number): number {
    const k = Math.min(step, settlesAt);
    if (k >= fixedFrom) return fixedLr;
    let [j, lr] = start(k);
    budget.charge(step, (k - j) * weight);
    while (j < k) {
      j++;
      const lrNext = next(lr, j);
      if (options.autonomous && lrNext === lr) {
        fixedFrom = j - 1;
        fixedLr = lr;
        break;
      }
      lr = lrNext;
      if (j % CHECKPOINT_STRIDE === 0) checkpoints.set(j / CHECKPOINT_STRIDE, lr);
    }
    lastK = k;
    lastLr = lr;
    return lr;
  };
}
