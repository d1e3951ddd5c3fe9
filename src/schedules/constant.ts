// The constant schedule: the same rate at every step.

import type { ConstantSpec, Params, Schedule } from './types.ts';

/**
 * `lr(k) = lr` for every k: what a torch optimizer does with no scheduler attached.
 *
 * @param params.lr the rate.
 * @returns the schedule.
 * @example constantSchedule({ lr: 1e-3 })(1000) // 0.001
 */
export function constantSchedule({ lr }: Params<ConstantSpec>): Schedule {
  return function constant() {
    return lr;
  };
}
