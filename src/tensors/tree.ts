// Tensor trees as clients send them (a number, a rectangular nested array, or an object of names to
// such trees) flattened into one contiguous Float64Array plus the layout needed to rebuild them.
// Pure and allocation-light: this runs on every element of every request.

/** Where a value sits in the request body, e.g. ["grads", "layer1.bias", 2]. */
export type FieldPath = ReadonlyArray<string | number>;

/** A tensor tree's structure without its numbers. */
export type TensorLayout =
  | { readonly kind: 'tensor'; readonly shape: readonly number[] }
  | { readonly kind: 'named'; readonly entries: ReadonlyArray<{ readonly name: string; readonly layout: TensorLayout }> };

/** A flattened tensor tree: `values` holds every element, leaves in layout order, row-major. */
export interface FlatTensors {
  readonly layout: TensorLayout;
  readonly size: number;
  readonly values: Float64Array;
}

/** A rejected tensor, with the path of the offending value and, where useful, the value itself. */
export class TensorError extends Error {
  readonly path: FieldPath;
  readonly value: unknown;
  constructor(path: FieldPath, message: string, value?: unknown) {
    super(message);
    this.name = 'TensorError';
    this.path = path;
    this.value = value;
  }
}

/** Most dimensions of one tensor. */
export const MAX_RANK = 32;
/** Most levels of named objects (a state_dict is one level; deeper trees are rare). */
export const MAX_NAME_DEPTH = 32;
/** Most tensors in one tree, and longest tensor name: they bound the stored layout's size. */
export const MAX_TENSORS = 10_000;
export const MAX_NAME_LENGTH = 1_000;

/** Short, JSON-like description of a bad value for error messages. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  return String(value); // numbers (incl. Infinity) and booleans
}

/** Number of elements of a tensor of this shape. */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * What a tensor of this shape counts toward the element limits: its elements, where a dimension of
 * 0 counts as 1. A tensor with no elements is still written out in JSON as nested empty arrays
 * (`[1000000, 0]` is a million `[]`), so its other dimensions must be paid for like elements, or a
 * few bytes of shape would make every JSON answer as large as anyone likes.
 */
export function shapeWeight(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d === 0 ? 1 : d;
  return n;
}

/** Total of shapeWeight over a layout's tensors: its elements, a dimension of 0 counting as 1. */
export function layoutWeight(layout: TensorLayout): number {
  if (layout.kind === 'tensor') return shapeWeight(layout.shape);
  let n = 0;
  for (const e of layout.entries) n += layoutWeight(e.layout);
  return n;
}

/** Total number of elements in a layout. */
export function layoutSize(layout: TensorLayout): number {
  if (layout.kind === 'tensor') return shapeSize(layout.shape);
  let n = 0;
  for (const e of layout.entries) n += layoutSize(e.layout);
  return n;
}

/** Shape of a number or nested array, read off its first elements (rectangularity is checked later). */
function probeShape(value: unknown, path: FieldPath): number[] {
  const shape: number[] = [];
  let v = value;
  while (Array.isArray(v)) {
    if (shape.length === MAX_RANK) throw new TensorError(path, `nesting deeper than ${MAX_RANK} levels`);
    shape.push(v.length);
    if (v.length === 0) break;
    v = v[0];
  }
  return shape;
}

/**
 * Discovers the layout of a tensor tree. Throws TensorError for values that are not numbers,
 * arrays or objects; element-level checks happen while flattening.
 */
export function inferLayout(value: unknown, path: FieldPath, elementLimit = Infinity): TensorLayout {
  let total = 0;
  let tensors = 0;
  const visit = (v: unknown, p: FieldPath, depth: number): TensorLayout => {
    if (typeof v === 'number' || Array.isArray(v)) {
      if (++tensors > MAX_TENSORS) throw new TensorError(path, `more than ${MAX_TENSORS} tensors`);
      const shape = probeShape(v, p);
      total += shapeWeight(shape);
      if (total > elementLimit) throw new ElementLimitError(total, elementLimit, p);
      return { kind: 'tensor', shape };
    }
    if (v !== null && typeof v === 'object') {
      if (depth === MAX_NAME_DEPTH) throw new TensorError(p, `named tensors nested deeper than ${MAX_NAME_DEPTH} levels`);
      const entries = Object.entries(v as Record<string, unknown>).map(([name, child]) => {
        if (name.length > MAX_NAME_LENGTH) throw new TensorError(p, `a tensor name is ${name.length} characters long; at most ${MAX_NAME_LENGTH} are allowed`);
        return { name, layout: visit(child, [...p, name], depth + 1) };
      });
      return { kind: 'named', entries };
    }
    throw new TensorError(p, `expected a number, an array of numbers or an object of named tensors, got ${describeValue(v)}`, v);
  };
  return visit(value, path, 0);
}

/** Thrown when a tree holds more elements than allowed; carries the count seen so far. */
export class ElementLimitError extends Error {
  readonly count: number;
  readonly limit: number;
  readonly path: FieldPath;
  constructor(count: number, limit: number, path: FieldPath) {
    super(`more than ${limit} tensor elements`);
    this.name = 'ElementLimitError';
    this.count = count;
    this.limit = limit;
    this.path = path;
  }
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/**
 * Flattens `value` into `out` starting at `offset`, requiring it to have exactly `layout`.
 * Returns the offset after the last element written.
 */
function flattenInto(value: unknown, layout: TensorLayout, path: FieldPath, out: Float64Array, offset: number): number {
  if (layout.kind === 'named') {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new TensorError(path, `expected an object of named tensors, got ${describeValue(value)}`, value);
    }
    const obj = value as Record<string, unknown>;
    for (const { name, layout: child } of layout.entries) {
      if (!Object.hasOwn(obj, name)) throw new TensorError([...path, name], `missing tensor "${name}"`);
      offset = flattenInto(obj[name], child, [...path, name], out, offset);
    }
    if (Object.keys(obj).length !== layout.entries.length) {
      const known = new Set(layout.entries.map((e) => e.name));
      const extra = Object.keys(obj).find((k) => !known.has(k))!;
      throw new TensorError([...path, extra], `unexpected tensor "${extra}" (not in params)`);
    }
    return offset;
  }
  const shape = layout.shape;
  if (shape.length === 0) {
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw new TensorError(path, `expected a finite number, got ${describeValue(value)}`, value);
    }
    out[offset] = value;
    return offset + 1;
  }
  return flattenArray(value, shape, 0, path, out, offset);
}

function flattenArray(
  value: unknown,
  shape: readonly number[],
  depth: number,
  path: FieldPath,
  out: Float64Array,
  offset: number,
): number {
  const len = shape[depth]!;
  if (!Array.isArray(value) || value.length !== len) {
    const got = Array.isArray(value) ? `length ${value.length}` : describeValue(value);
    const want = depth === 0 ? `shape ${shapeText(shape)}` : `length ${len}`;
    throw new TensorError(path, `expected an array of ${want}, got ${got}${depth > 0 ? ' (ragged nested array)' : ''}`, Array.isArray(value) ? undefined : value);
  }
  if (depth === shape.length - 1) {
    // Innermost dimension: the hot loop.
    for (let i = 0; i < len; i++) {
      const x = value[i];
      if (typeof x !== 'number' || !Number.isFinite(x)) {
        const ragged = Array.isArray(x) ? ' (ragged nested array)' : '';
        throw new TensorError([...path, i], `expected a finite number, got ${describeValue(x)}${ragged}`, x);
      }
      out[offset + i] = x;
    }
    return offset + len;
  }
  for (let i = 0; i < len; i++) {
    const child = value[i];
    if (!Array.isArray(child)) {
      throw new TensorError([...path, i], `expected an array of length ${shape[depth + 1]}, got ${describeValue(child)} (ragged nested array)`, child);
    }
    offset = flattenArray(child, shape, depth + 1, [...path, i], out, offset);
  }
  return offset;
}

/** Elements above which a tree is checked before its array is allocated (64 Ki: 512 KB of float64). */
const DRY_RUN_ABOVE = 65_536;
const NOWHERE = new Float64Array(0);

/** Flattens a tree whose layout is discovered from the value itself (the `params` of a request). */
export function flattenTree(value: unknown, path: FieldPath, elementLimit = Infinity): FlatTensors {
  const layout = inferLayout(value, path, elementLimit);
  return flattenLike(value, layout, path);
}

/** Flattens a tree that must have exactly `layout` (grads and state, which mirror params). */
export function flattenLike(value: unknown, layout: TensorLayout, path: FieldPath): FlatTensors {
  const size = layoutSize(layout);
  // A layout read off first elements can claim far more than the value holds (a few hundred bytes
  // of ragged arrays claim millions of elements): a large one is checked in full, writing nowhere
  // (stores past a typed array's end are dropped), before its memory is taken.
  if (size > DRY_RUN_ABOVE) flattenInto(value, layout, path, NOWHERE, 0);
  const values = new Float64Array(size);
  const end = flattenInto(value, layout, path, values, 0);
  if (end !== size) throw new Error(`internal: flattened ${end} of ${size} elements`);
  return { layout, size, values };
}

/** Rebuilds the JSON form of a tree from its layout and flat values (any numeric array type). */
export function unflatten(layout: TensorLayout, values: ArrayLike<number>, offset = 0): unknown {
  let cursor = offset;
  const build = (l: TensorLayout): unknown => {
    if (l.kind === 'named') {
      // Null prototype: a tensor named "__proto__" must stay a plain property.
      const obj: Record<string, unknown> = Object.create(null);
      for (const e of l.entries) obj[e.name] = build(e.layout);
      return obj;
    }
    if (l.shape.length === 0) return values[cursor++];
    const nest = (depth: number): unknown[] => {
      const len = l.shape[depth]!;
      const arr = new Array<unknown>(len);
      if (depth === l.shape.length - 1) {
        for (let i = 0; i < len; i++) arr[i] = values[cursor++];
      } else {
        for (let i = 0; i < len; i++) arr[i] = nest(depth + 1);
      }
      return arr;
    };
    return nest(0);
  };
  return build(layout);
}

/** The leaves of a layout with their shapes and offsets into the flat values, in order. */
export function leaves(layout: TensorLayout): Array<{ path: string[]; shape: readonly number[]; offset: number; size: number }> {
  const out: Array<{ path: string[]; shape: readonly number[]; offset: number; size: number }> = [];
  let offset = 0;
  const walk = (l: TensorLayout, path: string[]) => {
    if (l.kind === 'tensor') {
      const size = shapeSize(l.shape);
      out.push({ path, shape: l.shape, offset, size });
      offset += size;
    } else {
      for (const e of l.entries) walk(e.layout, [...path, e.name]);
    }
  };
  walk(layout, []);
  return out;
}

/** JSON description of a layout's shapes: a shape array, or an object of names to shapes. */
export function layoutShapes(layout: TensorLayout): unknown {
  if (layout.kind === 'tensor') return [...layout.shape];
  const obj: Record<string, unknown> = Object.create(null);
  for (const e of layout.entries) obj[e.name] = layoutShapes(e.layout);
  return obj;
}

/** Field path of flat element `index`, e.g. ["layer1.weight", 1, 0]. */
export function pathOfIndex(layout: TensorLayout, index: number): Array<string | number> {
  for (const leaf of leaves(layout)) {
    if (index < leaf.offset + leaf.size) {
      let rest = index - leaf.offset;
      const coords: number[] = new Array(leaf.shape.length);
      for (let d = leaf.shape.length - 1; d >= 0; d--) {
        coords[d] = rest % leaf.shape[d]!;
        rest = Math.floor(rest / leaf.shape[d]!);
      }
      return [...leaf.path, ...coords];
    }
  }
  throw new RangeError(`index ${index} outside the layout`);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Reorders flat `values` laid out as `source` into the order of `target` (same names in any key
 * order, same shapes), or throws a TensorError naming the first difference. Used where a tree was
 * flattened on its own (in the Worker) and must match a stored layout (in the Durable Object).
 */
export function alignToLayout(source: TensorLayout, values: Float64Array, target: TensorLayout, path: FieldPath): Float64Array {
  if (JSON.stringify(source) === JSON.stringify(target)) return values;
  const out = new Float64Array(layoutSize(target));
  let written = 0;
  const walk = (src: TensorLayout, srcOffset: number, tgt: TensorLayout, p: FieldPath): void => {
    if (tgt.kind === 'tensor') {
      if (src.kind !== 'tensor') throw new TensorError(p, `expected a tensor of shape ${shapeText(tgt.shape)}, got an object of named tensors`);
      if (!sameShape(src.shape, tgt.shape)) throw new TensorError(p, `expected shape ${shapeText(tgt.shape)}, got ${shapeText(src.shape)}`);
      const n = shapeSize(tgt.shape);
      out.set(values.subarray(srcOffset, srcOffset + n), written);
      written += n;
      return;
    }
    if (src.kind !== 'named') throw new TensorError(p, `expected an object of named tensors, got a tensor of shape ${shapeText(src.shape)}`);
    const offsets = new Map<string, { layout: TensorLayout; offset: number }>();
    let offset = srcOffset;
    for (const e of src.entries) {
      offsets.set(e.name, { layout: e.layout, offset });
      offset += layoutSize(e.layout);
    }
    for (const e of tgt.entries) {
      const found = offsets.get(e.name);
      if (!found) throw new TensorError([...p, e.name], `missing tensor "${e.name}"`);
      walk(found.layout, found.offset, e.layout, [...p, e.name]);
      offsets.delete(e.name);
    }
    const extra = offsets.keys().next();
    if (!extra.done) throw new TensorError([...p, extra.value], `unexpected tensor "${extra.value}" (not in params)`);
  };
  walk(source, 0, target, path);
  return out;
}

/**
 * The layout described by a shapes tree: a shape (an array of non-negative integers, `[]` for a
 * scalar), or an object of names to shapes trees, e.g. `{"fc": {"weight": [2, 3], "bias": [2]}}`.
 */
export function layoutFromShapes(value: unknown, path: FieldPath, elementLimit = Infinity): TensorLayout {
  let total = 0;
  let tensors = 0;
  const visit = (v: unknown, p: FieldPath, depth: number): TensorLayout => {
    if (Array.isArray(v)) {
      if (++tensors > MAX_TENSORS) throw new TensorError(path, `more than ${MAX_TENSORS} tensors`);
      if (v.length > MAX_RANK) throw new TensorError(p, `more than ${MAX_RANK} dimensions`);
      v.forEach((d, i) => {
        if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) throw new TensorError([...p, i], `a dimension must be an integer >= 0, got ${describeValue(d)}`, d);
      });
      const shape = v as number[];
      total += shapeWeight(shape);
      if (total > elementLimit) throw new ElementLimitError(total, elementLimit, p);
      return { kind: 'tensor', shape: [...shape] };
    }
    if (v !== null && typeof v === 'object') {
      if (depth === MAX_NAME_DEPTH) throw new TensorError(p, `named tensors nested deeper than ${MAX_NAME_DEPTH} levels`);
      const entries = Object.entries(v as Record<string, unknown>).map(([name, child]) => {
        if (name.length > MAX_NAME_LENGTH) throw new TensorError(p, `a tensor name is ${name.length} characters long; at most ${MAX_NAME_LENGTH} are allowed`);
        return { name, layout: visit(child, [...p, name], depth + 1) };
      });
      return { kind: 'named', entries };
    }
    throw new TensorError(p, `expected a shape (an array of dimensions) or an object of names to shapes, got ${describeValue(v)}`, v);
  };
  return visit(value, path, 0);
}
