// One optimizer step over a tree of tensors as torch's `optimizer.step()` takes it, after the
// gradient controls a training loop applies first: parameter groups (each tensor stepped with its
// group's hyperparameters), frozen tensors (a gradient of None: no update, no state, no count),
// clip_grad_norm_ / clip_grad_value_ over the gradients that exist, and GradScaler-style skipping
// of a step whose gradients or results are not finite. Routes and the Durable Object call this;
// the kernels stay the fused single-tensor steps of src/optim/<name>. Pure, in place.

import { clipGradNorm, clipGradValue } from './clip.ts';
import { coalesce, type SparseRows } from './sparse.ts';
import { nextStepCount, type Dtype, type FloatArray, type Hyperparams, type OptimizerDef, type OptimizerState, type StepArgs, type TensorSpan } from './optimizer.ts';

/** One tensor of the flat tree. */
export interface EngineTensor {
  offset: number;
  size: number;
  shape: readonly number[];
}

/** A tensor's own step count and scalars (torch keeps them per parameter). */
export interface Counter {
  step: number;
  scalars: Record<string, number>;
}

/**
 * The state of a tree: top-level counters (those of every tensor not in `counters`), flat slot
 * arrays, which tensors hold each slot (torch has None for a lazily created slot a tensor has not
 * needed yet, e.g. SGD's momentum_buffer in a group without momentum), and the counters of the
 * tensors that differ (frozen for some steps, or in a group whose scalars evolve differently).
 */
export interface TreeState {
  step: number;
  scalars: Record<string, number>;
  slots: Record<string, FloatArray | null>;
  /** For each non-null slot array: whether tensor i holds it. */
  held: Record<string, boolean[]>;
  counters: Map<number, Counter>;
}

/** A TreeState from a flat OptimizerState: every tensor holds every slot it has, one counter. */
export function treeState(state: OptimizerState, tensorCount: number): TreeState {
  const held: Record<string, boolean[]> = {};
  for (const [k, a] of Object.entries(state.slots)) if (a !== null) held[k] = new Array<boolean>(tensorCount).fill(true);
  return { step: state.step, scalars: { ...state.scalars }, slots: state.slots, held, counters: new Map() };
}

export interface EngineArgs<H extends Hyperparams> {
  def: OptimizerDef<H>;
  dtype: Dtype;
  tensors: readonly EngineTensor[];
  /** Hyperparameters (lr resolved) of each group; index 0 is the top-level set. */
  groupHp: readonly H[];
  /** Each tensor's index into groupHp. */
  groupOf: readonly number[];
  params: FloatArray;
  /** Gradients, flat like params; a frozen tensor's part is ignored. */
  grads: FloatArray;
  /** Tensors whose gradient is None (torch skips them). */
  frozen: readonly boolean[];
  /** Tensors whose gradient is given as rows (their part of `grads` is ignored). */
  sparse?: ReadonlyArray<SparseRows | null>;
  state: TreeState;
  clipGradNorm?: number | undefined;
  clipGradValue?: number | undefined;
  /** `skip`: a non-finite gradient or result leaves everything unchanged (GradScaler). */
  nonfinite: 'error' | 'skip';
  /**
   * Room for a slot no tensor held before this step (default: a new zeroed array); its contents
   * are not read before the step writes them. A hosted optimizer gives its kernel's memory.
   */
  allocate?: (slot: string, length: number) => FloatArray;
  /** The fused step of a run of tensors (default `def.step`); a hosted Adam runs its own WebAssembly instance. */
  stepRun?: (args: StepArgs<H>) => Record<string, number>;
  /** Index of the first non-finite element of an array, or -1 (default: a plain loop); a faster scan may be given. */
  scan?: (a: FloatArray) => number;
}

/** Where a non-finite number is: in the gradients as sent, or in what the step produced. */
export interface NonFinite {
  in: 'grads' | 'params' | string;
  /** Flat element index. */
  index: number;
}

export type EngineOutcome =
  | { applied: true; gradNorm: number | undefined }
  /** Skipped (nonfinite: skip) or refused (error; params and state may be partly written). */
  | { applied: false; gradNorm: number | undefined; nonFinite: NonFinite };

function firstNonFinite(a: FloatArray, from: number, to: number): number {
  for (let i = from; i < to; i++) {
    const x = a[i]!;
    if (x - x !== 0) return i; // NaN or ±Infinity
  }
  return -1;
}

const counterKey = (c: Counter) => `${c.step}|${Object.values(c.scalars).join(',')}`;
const sameCounter = (a: Counter, b: Counter) => counterKey(a) === counterKey(b);

/** Copies of everything a step may write, for a skipped step. */
function snapshot(params: FloatArray, state: TreeState) {
  return {
    params: params.slice(),
    slots: Object.fromEntries(Object.entries(state.slots).map(([k, a]) => [k, a === null ? null : a.slice()])),
    held: Object.fromEntries(Object.entries(state.held).map(([k, h]) => [k, [...h]])),
    counters: new Map(state.counters),
    step: state.step,
    scalars: { ...state.scalars },
  };
}

function restore(params: FloatArray, state: TreeState, saved: ReturnType<typeof snapshot>): void {
  params.set(saved.params);
  state.slots = saved.slots;
  state.held = saved.held;
  state.counters = saved.counters;
  state.step = saved.step;
  state.scalars = saved.scalars;
}

/** One step: controls, then each group's tensors through the optimizer's fused kernel. */
export function engineStep<H extends Hyperparams>(args: EngineArgs<H>): EngineOutcome {
  const { def, dtype, tensors, groupHp, groupOf, params, grads, frozen, state, nonfinite } = args;
  const stepRun = args.stepRun ?? ((a: StepArgs<H>) => def.step(a));
  const scan = args.scan;
  const firstBad = (a: FloatArray, from: number, to: number): number => {
    if (!scan) return firstNonFinite(a, from, to);
    const at = scan(a.subarray(from, to));
    return at < 0 ? -1 : from + at;
  };
  const active = tensors.map((_, i) => !frozen[i]);
  const gradViews = tensors.flatMap((t, i) => (active[i] && !args.sparse?.[i] ? [grads.subarray(t.offset, t.offset + t.size)] : []));

  if (nonfinite === 'skip') {
    // GradScaler looks at the gradients before anything else (inf checks after unscale_).
    for (let i = 0; i < tensors.length; i++) {
      if (!active[i]) continue;
      const rows = args.sparse?.[i];
      if (rows) {
        const bad = firstNonFinite(rows.values, 0, rows.values.length);
        if (bad >= 0) return { applied: false, gradNorm: undefined, nonFinite: { in: 'grads', index: tensors[i]!.offset + rows.rows[Math.floor(bad / rows.rowSize)]! * rows.rowSize + (bad % rows.rowSize) } };
        continue;
      }
      const at = firstNonFinite(grads, tensors[i]!.offset, tensors[i]!.offset + tensors[i]!.size);
      if (at >= 0) return { applied: false, gradNorm: undefined, nonFinite: { in: 'grads', index: at } };
    }
  }
  let gradNorm: number | undefined;
  if (args.clipGradNorm !== undefined) {
    // torch 1.13: a sparse gradient counts in the total norm as torch.norm(g) (its coalesced values)
    // but is not scaled (mul_ scales a shallow copy of it); the dense ones are.
    const inNorm = tensors.flatMap((t, i) => {
      if (!active[i]) return [];
      const rows = args.sparse?.[i];
      return [rows ? coalesce(dtype, rows).values : grads.subarray(t.offset, t.offset + t.size)];
    });
    const unscaled = tensors.flatMap((_, i) => (active[i] ? [Boolean(args.sparse?.[i])] : []));
    gradNorm = clipGradNorm(dtype, inNorm, args.clipGradNorm, unscaled);
  }
  // torch 1.13's clip_grad_value_ raises for a sparse gradient (callers refuse it): dense ones only.
  if (args.clipGradValue !== undefined) clipGradValue(dtype, gradViews, args.clipGradValue);

  const saved = nonfinite === 'skip' ? snapshot(params, state) : null;
  const top: Counter = { step: state.step, scalars: state.scalars };
  const before = tensors.map((_, i) => state.counters.get(i) ?? top);
  const after: Counter[] = [...before];
  let newTop: Counter | null = null;

  for (let g = 0; g < groupHp.length; g++) {
    const hp = groupHp[g]!;
    const members = tensors.map((_, i) => i).filter((i) => groupOf[i] === g && active[i]);
    if (members.length === 0) continue;
    const present = def.slots.filter((s) => s.present(hp));
    for (const slot of present) {
      if (state.slots[slot.name]) continue;
      state.slots[slot.name] = args.allocate ? args.allocate(slot.name, params.length) : dtype === 'float32' ? new Float32Array(params.length) : new Float64Array(params.length);
      state.held[slot.name] = new Array<boolean>(tensors.length).fill(false);
    }
    // Runs of adjacent tensors that step alike (same counter, same slots held) go in one call.
    let i = 0;
    while (i < members.length) {
      const first = members[i]!;
      const heldKey = (t: number) => present.map((s) => (state.held[s.name]![t] ? 1 : 0)).join('');
      let j = i + 1;
      const rows = args.sparse?.[first] ?? null;
      if (!def.perTensor && rows === null) {
        while (
          j < members.length &&
          members[j] === members[j - 1]! + 1 &&
          !args.sparse?.[members[j]!] &&
          sameCounter(before[members[j]!]!, before[first]!) &&
          heldKey(members[j]!) === heldKey(first)
        ) {
          j++;
        }
      }
      const last = members[j - 1]!;
      const from = tensors[first]!.offset;
      const to = tensors[last]!.offset + tensors[last]!.size;
      const fresh = new Set<string>();
      const slots: Record<string, FloatArray> = {};
      for (const slot of present) {
        const view = state.slots[slot.name]!.subarray(from, to);
        if (!state.held[slot.name]![first]) {
          const initial = slot.initial(hp);
          if (initial === null) fresh.add(slot.name);
          else view.fill(initial);
        }
        slots[slot.name] = view;
      }
      const counter = before[first]!;
      const scalars = rows
        ? def.sparseStep!({ dtype, hp, params: params.subarray(from, to), grad: rows, shape: tensors[first]!.shape, slots, fresh, step: counter.step, scalars: { ...counter.scalars } })
        : stepRun({
        dtype,
        hp,
        params: params.subarray(from, to),
        grads: grads.subarray(from, to),
        shape: def.perTensor ? tensors[first]!.shape : [to - from],
        slots,
        fresh,
        step: counter.step,
        scalars: { ...counter.scalars },
      });
      const next: Counter = { step: nextStepCount(def.stepCounter, counter.step), scalars };
      for (let k = i; k < j; k++) {
        const t = members[k]!;
        after[t] = next;
        for (const slot of present) state.held[slot.name]![t] = true;
        if (newTop === null && !state.counters.has(t) && g === 0) newTop = next;
      }
      i = j;
    }
  }
  if (newTop === null) {
    // No top-level tensor stepped (all frozen or in groups): advance the top-level counters alone.
    const scalars = def.scalars.length === 0 ? {} : def.step({
      dtype,
      hp: groupHp[0]!,
      params: params.subarray(0, 0),
      grads: grads.subarray(0, 0),
      shape: [0],
      slots: Object.fromEntries(def.slots.filter((s) => s.present(groupHp[0]!)).map((s) => [s.name, params.subarray(0, 0)])),
      fresh: new Set(),
      step: top.step,
      scalars: { ...top.scalars },
    });
    newTop = { step: nextStepCount(def.stepCounter, top.step), scalars };
  }

  {
    for (let t = 0; t < tensors.length; t++) {
      if (!active[t]) continue;
      const { offset, size } = tensors[t]!;
      for (const [name, a] of [['params', params] as const, ...Object.entries(state.slots)]) {
        if (a === null || (name !== 'params' && !state.held[name]![t])) continue;
        const at = firstBad(a, offset, offset + size);
        if (at >= 0) {
          if (saved) restore(params, state, saved);
          return { applied: false, gradNorm, nonFinite: { in: name, index: at } };
        }
      }
    }
  }

  state.step = newTop.step;
  state.scalars = newTop.scalars;
  const counters = new Map<number, Counter>();
  for (let t = 0; t < tensors.length; t++) {
    // Optimizers without a step counter or scalars have nothing per tensor to remember.
    if (def.stepCounter === 'none' && def.scalars.length === 0) break;
    if (!sameCounter(after[t]!, newTop)) counters.set(t, after[t]!);
  }
  state.counters = counters;
  return { applied: true, gradNorm };
}

/** The groups the tensors are in (0: the top-level hyperparameters); the top-level set alone when there is no tensor. */
export const usedGroups = (groupOf: readonly number[]): Set<number> => (groupOf.length === 0 ? new Set([0]) : new Set(groupOf));

/**
 * Brings `state`'s slots to what the groups keep, in place: a slot no used group keeps any more is
 * left as it is, unread and unchanged (torch 1.13 keeps the buffer in `optimizer.state` when a
 * group turns momentum, centered or amsgrad off, and resumes from it when it is turned back on);
 * a tensor whose group keeps an eager
 * slot it does not hold gets the slot's initial value (Adagrad's initial_accumulator_value, zeros
 * elsewhere); a lazy slot (SGD's momentum_buffer, a clone of the first gradient) stays unheld until
 * the step creates it. `allocate` gives a slot's array. torch creates state per parameter: which
 * slots from its own group's settings (amsgrad's max_exp_avg_sq), but the initial value from the
 * constructor's (`hps[0]`, the top-level set): torch 1.13's `Adagrad.__init__` fills every `sum`
 * with its `initial_accumulator_value` argument, whatever a group sets (a group's value is kept in
 * the group and has no effect). A fresh state is this too.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function keepSlots(
  def: OptimizerDef<any>,
  hps: readonly Hyperparams[],
  groupOf: readonly number[],
  tensors: readonly TensorSpan[],
  state: TreeState,
  allocate: (slot: string) => FloatArray,
): void {
  const used = usedGroups(groupOf);
  for (const slot of def.slots) {
    if (![...used].some((g) => slot.present(hps[g]!))) continue;
    let a = state.slots[slot.name] ?? null;
    // No tensor at all: an eager slot exists all the same (an empty tree in answers and snapshots).
    if (tensors.length === 0 && slot.initial(hps[0]!) !== null) a ??= allocate(slot.name);
    const held = a ? (state.held[slot.name] ?? tensors.map(() => true)) : tensors.map(() => false);
    for (let t = 0; t < tensors.length; t++) {
      const hp = hps[groupOf[t]!]!;
      if (held[t] || !slot.present(hp)) continue;
      if (slot.initial(hp) === null) continue;
      const initial = slot.initial(hps[0]!) ?? 0;
      a ??= allocate(slot.name);
      a.subarray(tensors[t]!.offset, tensors[t]!.offset + tensors[t]!.size).fill(initial);
      held[t] = true;
    }
    if (a && (held.some(Boolean) || tensors.length === 0)) {
      state.slots[slot.name] = a;
      state.held[slot.name] = held;
    } else {
      delete state.slots[slot.name];
      delete state.held[slot.name];
    }
  }
}
