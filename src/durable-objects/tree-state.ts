// The per-tensor parts of a hosted optimizer's state (src/optim/engine.ts's TreeState) as its
// metadata row stores them: which tensors hold each slot (torch has None for a tensor whose group
// keeps no such slot, or that never stepped), per-tensor counters (a tensor's own step count after
// frozen steps, NAdam's `mu_product` in a group with other betas), and each group's
// reduce_on_plateau rate.

import { plateauUpdate, type PlateauState } from '../schedules/plateau.ts';
import type { ScheduleSpec } from '../schedules/types.ts';
import type { Counter, TreeState } from '../optim/engine.ts';
import { groupLr, type ParamGroup } from '../lib/param-groups.ts';
import type { StoredCounter } from './store.ts';

/** Ranges [start, end) of the indices where `bits` is true. */
export function rangesOf(bits: readonly boolean[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let i = 0; i < bits.length; i++) {
    if (!bits[i]) continue;
    const last = out[out.length - 1];
    if (last && last[1] === i) last[1] = i + 1;
    else out.push([i, i + 1]);
  }
  return out;
}

/** `n` booleans, true inside the ranges. */
export function bitsOf(ranges: ReadonlyArray<readonly [number, number]>, n: number): boolean[] {
  const bits = new Array<boolean>(n).fill(false);
  for (const [a, b] of ranges) for (let i = a; i < Math.min(b, n); i++) bits[i] = true;
  return bits;
}

/** The held bits to store: only for slots some tensor does not hold (absent: every tensor holds it). */
export function heldToStored(held: Record<string, boolean[]>, slots: readonly string[]): Record<string, Array<[number, number]>> | undefined {
  const out: Record<string, Array<[number, number]>> = {};
  for (const name of slots) {
    const bits = held[name];
    if (bits && !bits.every(Boolean)) out[name] = rangesOf(bits);
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

export function heldFromStored(stored: Record<string, Array<[number, number]>> | undefined, slots: readonly string[], n: number): Record<string, boolean[]> {
  return Object.fromEntries(slots.map((name) => [name, stored?.[name] ? bitsOf(stored[name], n) : new Array<boolean>(n).fill(true)]));
}

const counterKey = (c: Counter) => JSON.stringify([c.step, c.scalars]);

/** Per-tensor counters to store, tensors with the same counter together (absent: none). */
export function countersToStored(counters: ReadonlyMap<number, Counter>): StoredCounter[] | undefined {
  if (counters.size === 0) return undefined;
  const byKey = new Map<string, { counter: Counter; tensors: number[] }>();
  for (const i of [...counters.keys()].sort((a, b) => a - b)) {
    const c = counters.get(i)!;
    const k = counterKey(c);
    const entry = byKey.get(k) ?? { counter: c, tensors: [] };
    entry.tensors.push(i);
    byKey.set(k, entry);
  }
  return [...byKey.values()].map(({ counter, tensors }) => {
    const ranges: Array<[number, number]> = [];
    for (const i of tensors) {
      const last = ranges[ranges.length - 1];
      if (last && last[1] === i) last[1] = i + 1;
      else ranges.push([i, i + 1]);
    }
    return { step: counter.step, scalars: counter.scalars, tensors: ranges };
  });
}

export function countersFromStored(stored: readonly StoredCounter[] | undefined): Map<number, Counter> {
  const out = new Map<number, Counter>();
  for (const c of stored ?? []) for (const [a, b] of c.tensors) for (let i = a; i < b; i++) out.set(i, { step: c.step, scalars: { ...c.scalars } });
  return out;
}

/** The slot names and which tensors hold each: a step that changes it rewrites every chunk (see HostedOptimizer.step). */
export const slotShape = (state: Pick<TreeState, 'slots' | 'held'>): string =>
  JSON.stringify(Object.entries(state.slots).filter(([, a]) => a !== null).map(([name]) => [name, rangesOf(state.held[name] ?? [])]));

/** reduce_on_plateau's state, with the rate of each param group that sets its own lr (null for the others). */
export type HostedPlateau = PlateauState & { group_lrs?: Array<number | null> };

/**
 * Each group's starting reduce_on_plateau rate: torch's scheduler starts a group at its own lr (the
 * groups that set none follow the top-level rate); none without groups or another schedule.
 */
export function initialGroupLrs(schedule: ScheduleSpec | null | undefined, groups: readonly ParamGroup[]): Array<number | null> | undefined {
  if (schedule?.type !== 'reduce_on_plateau' || groups.length === 0) return undefined;
  return groups.map((g) => groupLr(g) ?? null);
}

/**
 * The plateau state after one metric: the reports, best and cooldown are shared (they do not depend
 * on the rate), and torch reduces each group's rate on its own (max(lr·factor, min_lr) if that
 * lowers it by more than eps), as if each group had its own scheduler.
 */
export function reportGroups(schedule: ScheduleSpec | null | undefined, before: HostedPlateau | null, after: PlateauState | null, metric: number): HostedPlateau | null {
  if (schedule?.type !== 'reduce_on_plateau' || !before || !after || !before.group_lrs) return after;
  const { group_lrs: lrs, ...shared } = before;
  return { ...after, group_lrs: lrs.map((lr) => (lr === null ? null : plateauUpdate(schedule, { ...shared, lr }, metric).lr)) };
}
