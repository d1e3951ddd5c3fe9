// Placement of a hosted optimizer's tensors over shard objects (docs/scale-out.md, "Placement").
//
// Shards hold contiguous element ranges of the flat layout, in layout order, so a raw body is
// routed by byte offset alone. Cuts fall on tensor boundaries where the balance allows (a tensor
// placed whole), else inside a tensor on a row boundary of its first dimension (a sparse row
// gradient then reaches one piece). Pure.

/** One tensor of the flat layout: its name, shape, and first element. */
export interface PlacedTensor {
  name: string;
  shape: readonly number[];
  offset: number;
  size: number;
}

/** Part of one tensor on one shard: elements [from, to) of the flattened tensor. */
export interface Piece {
  /** Index of the tensor in the layout. */
  tensor: number;
  /** The tensor's name, or `name[from:to]` when the shard holds only part of it. */
  name: string;
  from: number;
  to: number;
  /** The piece's shape: whole rows of the tensor's first dimension. */
  shape: number[];
}

export interface Shard {
  /** Element range [start, end) of the flat layout. */
  start: number;
  end: number;
  pieces: Piece[];
}

export interface PlacementOptions {
  /** Most elements one shard holds (the per-object limit). */
  capacity: number;
  /**
   * Shards wanted (exactly). Default: the fewest that hold the model with every tensor that fits in a
   * shard placed whole (possibly one or two more than the element count alone needs).
   */
  shards?: number;
  /** Never split a tensor (optimizers that step whole tensors, like Muon). */
  wholeTensors?: boolean;
}

/** Why no placement exists, with the tensor at fault (a 413 for the caller). */
export class PlacementError extends Error {
  readonly tensor: string | null;
  constructor(message: string, tensor: string | null) {
    super(message);
    this.tensor = tensor;
  }
}

/** Elements per row of the first dimension (1 for vectors and scalars). */
function rowSize(t: PlacedTensor): number {
  return t.shape.length >= 2 ? t.size / t.shape[0]! : 1;
}

/**
 * The legal cuts of a layout, implicitly (a 1e8-element vector has 1e8 of them): every tensor's end,
 * and unless whole tensors are required every row boundary inside a tensor.
 */
class Cuts {
  private readonly tensors: readonly PlacedTensor[];
  private readonly unitOf: (t: PlacedTensor) => number;
  private readonly ends: number[];
  constructor(tensors: readonly PlacedTensor[], unitOf: (t: PlacedTensor) => number) {
    this.tensors = tensors;
    this.unitOf = unitOf;
    this.ends = tensors.map((t) => t.offset + t.size);
  }

  /** Index of the (non-empty) tensor holding element `x`: the first whose end is past it. */
  private indexAt(x: number): number {
    let lo = 0;
    let hi = this.tensors.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.ends[mid]! <= x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private at(x: number): PlacedTensor {
    return this.tensors[this.indexAt(x)]!;
  }

  /** Smallest cut ≥ x (x in [0, size]). */
  next(x: number, size: number): number {
    if (x >= size) return size;
    const t = this.at(x);
    const unit = this.unitOf(t);
    return t.offset + Math.ceil((x - t.offset) / unit) * unit;
  }

  /** Largest cut ≤ x (x in [0, size]). */
  prev(x: number): number {
    if (x <= 0) return 0;
    const t = this.at(x - 1);
    const unit = this.unitOf(t);
    return t.offset + Math.floor((x - t.offset) / unit) * unit;
  }

  /** Ends of tensors within [lo, hi]. */
  *tensorEnds(lo: number, hi: number): Generator<number> {
    for (let j = this.indexAt(Math.max(0, lo - 1)); j < this.tensors.length && this.ends[j]! <= hi; j++) {
      if (this.ends[j]! >= lo) yield this.ends[j]!;
    }
  }
}

/**
 * Cuts [0, size) into exactly `shards` non-empty ranges of at most `capacity` elements: each cut the
 * tensor end nearest the balanced cut among those that leave the rest placeable, else the nearest
 * row boundary. The caller checks that `shards` is between the fewest the cuts allow and their count.
 */
function cutsOf(cuts: Cuts, size: number, shards: number, capacity: number): number[] {
  // fit[k]: the smallest cut from which the rest fits in k shards (packing backwards, greedily);
  // last[k]: the largest cut that leaves k non-empty shards after it.
  const fit = [size];
  const last = [size];
  for (let k = 1; k < shards; k++) {
    fit.push(cuts.next(Math.max(0, fit[k - 1]! - capacity), size));
    last.push(cuts.prev(last[k - 1]! - 1));
  }
  const ends = [0];
  let start = 0;
  for (let i = 0; i < shards - 1; i++) {
    const after = shards - 1 - i;
    const lo = Math.max(cuts.next(start + 1, size), fit[after]!);
    const hi = Math.min(cuts.prev(Math.min(size, start + capacity)), last[after]!);
    if (lo > hi) throw new Error(`placement: no cut in [${lo}, ${hi}] (shards ${shards}, capacity ${capacity})`); // the caller's checks exclude it
    const ideal = start + Math.ceil((size - start) / (shards - i));
    let best = -1;
    const nearer = (c: number) => best < 0 || Math.abs(c - ideal) < Math.abs(best - ideal);
    for (const c of cuts.tensorEnds(lo, hi)) if (nearer(c)) best = c;
    if (best < 0) {
      const at = Math.min(hi, Math.max(lo, ideal));
      for (const c of [cuts.prev(at), cuts.next(at, size)]) if (c >= lo && c <= hi && nearer(c)) best = c;
    }
    ends.push(best);
    start = best;
  }
  ends.push(size);
  return ends;
}

/**
 * The shards of a layout: tensors whole where they fit, split on row boundaries where they do
 * not. Throws PlacementError when a tensor cannot be placed (a row, or with `wholeTensors` a tensor,
 * larger than one shard) or `shards` cannot hold the model.
 */
export function place(tensors: readonly PlacedTensor[], options: PlacementOptions): Shard[] {
  const { capacity, wholeTensors = false } = options;
  if (!(Number.isInteger(capacity) && capacity > 0)) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
  if (options.shards !== undefined && !(Number.isInteger(options.shards) && options.shards > 0)) throw new RangeError(`shards must be a positive integer, got ${options.shards}`);
  let size = 0;
  for (const x of tensors) {
    if (x.offset !== size) throw new RangeError(`tensor ${x.name} starts at ${x.offset}, expected ${size} (layout order)`);
    size += x.size;
    const unit = wholeTensors ? x.size : rowSize(x);
    if (unit > capacity) {
      const what = wholeTensors ? `tensor ${x.name} (${x.size} elements)` : `a row of tensor ${x.name} (${unit} elements)`;
      throw new PlacementError(`${what} is larger than one shard (${capacity} elements)`, x.name);
    }
  }
  if (size === 0) return [{ start: 0, end: 0, pieces: tensors.map((x, i) => ({ tensor: i, name: x.name, from: 0, to: 0, shape: [...x.shape] })) }];
  // Cuts on tensor ends only, except inside tensors larger than a shard (whole where they fit);
  // when the shard count asked for leaves no such placement, on any row boundary.
  const attempt = (unitOf: (t: PlacedTensor) => number) => {
    const cuts = new Cuts(tensors.filter((t) => t.size > 0), unitOf);
    // The fewest shards: greedily, each as far as capacity allows; the most: one per unit.
    let fewest = 0;
    for (let at = 0; at < size; fewest++) at = cuts.prev(Math.min(size, at + capacity));
    const most = tensors.reduce((n, t) => n + (t.size > 0 ? t.size / unitOf(t) : 0), 0);
    return { cuts, fewest, most };
  };
  const whole = attempt((t) => (wholeTensors || t.size <= capacity ? t.size : rowSize(t)));
  const wanted = options.shards ?? whole.fewest;
  const chosen = wanted >= whole.fewest && wanted <= whole.most ? whole : attempt((t) => (wholeTensors ? t.size : rowSize(t)));
  if (wanted < chosen.fewest) {
    throw new PlacementError(`${wanted} shards of at most ${capacity} elements cannot hold these ${size} elements (at least ${chosen.fewest})`, null);
  }
  if (wanted > chosen.most) {
    const unit = wholeTensors ? 'tensor' : 'row';
    throw new PlacementError(`${wanted} shards for ${chosen.most} ${unit}s: each shard needs at least one whole ${unit}`, null);
  }
  const ends = cutsOf(chosen.cuts, size, wanted, capacity);

  const shards: Shard[] = [];
  let t = 0;
  for (let s = 0; s + 1 < ends.length; s++) {
    const start = ends[s]!;
    const end = ends[s + 1]!;
    const pieces: Piece[] = [];
    while (t < tensors.length && tensors[t]!.offset + tensors[t]!.size <= start && tensors[t]!.size > 0) t++;
    for (let j = t; j < tensors.length; j++) {
      const x = tensors[j]!;
      if (x.offset >= end && !(x.size === 0 && x.offset === end && s + 2 === ends.length)) break;
      const from = Math.max(start, x.offset) - x.offset;
      const to = Math.min(end, x.offset + x.size) - x.offset;
      if (x.size > 0 && from >= to) continue;
      // An empty tensor goes with the shard its offset falls in (the last one at the very end).
      if (x.size === 0 && (x.offset < start || (x.offset === end && s + 2 !== ends.length))) continue;
      const whole = from === 0 && to === x.size;
      const shape = whole ? [...x.shape] : x.shape.length >= 2 ? [(to - from) / rowSize(x), ...x.shape.slice(1)] : [to - from];
      pieces.push({ tensor: j, name: whole ? x.name : `${x.name}[${from}:${to}]`, from, to, shape });
    }
    shards.push({ start, end, pieces });
  }
  return shards;
}
