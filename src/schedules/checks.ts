// Cross-field rules of schedule specs, shared by the zod schema (422s) and compileSchedule (throws).

import type { ScheduleSpec } from './types.ts';

/** One broken rule: the path of the offending field relative to the spec, and what is wrong. */
export interface SpecIssue {
  path: Array<string | number>;
  message: string;
}

/** Index of the first entry smaller than its predecessor, or -1 when non-decreasing. */
function firstDecrease(values: readonly number[]): number {
  for (let i = 1; i < values.length; i++) if ((values[i] as number) < (values[i - 1] as number)) return i;
  return -1;
}

/**
 * The cross-field rules one spec breaks, without descending into `sequential` children (each child
 * is checked on its own). Field bounds (integers, positivity, …) are the schema's job and are
 * assumed here.
 *
 * - multistep, sequential: `milestones` non-decreasing;
 * - sequential: `milestones.length == schedules.length − 1`;
 * - cyclic: `max_lr >= base_lr`;
 * - one_cycle: `pct_start · total_steps != 1` (torch divides by zero: a warm-up phase of length 0);
 * - warmup_cosine, warmup_linear: `warmup_steps <= total_steps`;
 * - cosine, cosine_restarts, warmup_cosine: `min_lr <= lr` (unless `lrBounds` is false).
 *
 * `min_lr <= lr` is a rule of the request, not of the computation: torch's schedulers run a param
 * group whose base lr is below `eta_min` (CosineAnnealingLR then rises from it towards eta_min), and
 * a group's `lr` replaces the spec's. Schedules built for a group are checked without it.
 */
export function specIssues(spec: ScheduleSpec, { lrBounds = true }: { lrBounds?: boolean } = {}): SpecIssue[] {
  const issues: SpecIssue[] = [];
  switch (spec.type) {
    case 'multistep':
    case 'sequential': {
      const i = firstDecrease(spec.milestones);
      if (i >= 0) {
        issues.push({ path: ['milestones', i], message: `milestones must be sorted (non-decreasing), but ${spec.milestones[i]} follows ${spec.milestones[i - 1]}` });
      }
      if (spec.type === 'sequential' && spec.milestones.length !== spec.schedules.length - 1) {
        issues.push({
          path: ['milestones'],
          message: `must have exactly one entry fewer than schedules (${spec.schedules.length - 1}), got ${spec.milestones.length}`,
        });
      }
      break;
    }
    case 'cyclic':
      if (spec.max_lr < spec.base_lr) issues.push({ path: ['max_lr'], message: `must be >= base_lr (${spec.base_lr}), got ${spec.max_lr}` });
      break;
    case 'one_cycle':
      if (spec.pct_start * spec.total_steps - 1 === 0) {
        issues.push({
          path: ['pct_start'],
          message: `pct_start · total_steps must not be 1 (the warm-up phase would have length 0; torch divides by zero), got ${spec.pct_start} · ${spec.total_steps}`,
        });
      }
      break;
    case 'warmup_cosine':
    case 'warmup_linear':
      if (spec.warmup_steps > spec.total_steps) {
        issues.push({ path: ['warmup_steps'], message: `must be <= total_steps (${spec.total_steps}), got ${spec.warmup_steps}` });
      }
      break;
    default:
      break;
  }
  if (lrBounds && (spec.type === 'cosine' || spec.type === 'cosine_restarts' || spec.type === 'warmup_cosine') && spec.min_lr > spec.lr) {
    issues.push({ path: ['min_lr'], message: `must be <= lr (${spec.lr}), got ${spec.min_lr}` });
  }
  return issues;
}

/** Thrown by compileSchedule for a spec that breaks a cross-field rule. */
export class ScheduleSpecError extends RangeError {
  readonly issues: SpecIssue[];

  constructor(issues: SpecIssue[]) {
    super(issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
    this.name = 'ScheduleSpecError';
    this.issues = issues;
  }
}

/** Every cross-field issue of a spec and, recursively, of its `sequential` children (paths from the root). */
export function allSpecIssues(spec: ScheduleSpec, prefix: Array<string | number> = [], options: { lrBounds?: boolean } = {}): SpecIssue[] {
  const out = specIssues(spec, options).map((i) => ({ path: [...prefix, ...i.path], message: i.message }));
  if (spec.type === 'sequential') {
    spec.schedules.forEach((child, i) => {
      if ((child as ScheduleSpec).type === 'reduce_on_plateau') {
        out.push({ path: [...prefix, 'schedules', i, 'type'], message: 'reduce_on_plateau cannot be part of sequential: it needs metrics' });
      } else out.push(...allSpecIssues(child, [...prefix, 'schedules', i], options));
    });
  }
  return out;
}
