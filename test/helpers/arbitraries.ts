// Shared fast-check arbitraries of the fuzz tests (test/fuzz/): numbers at the edges of float32
// and float64, awkward tensor names, tensor trees, JSON text written many equivalent ways
// (number spellings, whitespace, duplicate keys), mutations that make a request invalid,
// malformed safetensors files, and junk headers. Written without src/ so the API's own codecs do
// not check themselves.

import fc from 'fast-check';
import { rawSafetensors } from './safetensors.ts';

// ---------------------------------------------------------------------------------------------
// numbers
// ---------------------------------------------------------------------------------------------

export const F32_MAX = 3.4028234663852886e38;
/** The smallest double that rounds to Infinity in float32. */
export const F32_OVERFLOW = 3.4028235677973366e38;

/** Values at the edges: signed zeros, subnormals of both types, the float32 range, huge doubles. */
export const EDGE_NUMBERS = [
  0, -0, 1, -1, 0.5, -2, 1e-8, 0.1, 1 / 3,
  Number.MIN_VALUE, -Number.MIN_VALUE, 1e-310, 2.2250738585072014e-308,
  2 ** -149, -(2 ** -149), 2 ** -150, 1.1754943508222875e-38, 1e-45,
  F32_MAX, -F32_MAX, F32_OVERFLOW, -F32_OVERFLOW, F32_OVERFLOW - 2 ** 100, 1e38, 1e39,
  2 ** 24, 2 ** 24 + 1, 2 ** 53, 1e21, 1e300, 1e308, -1e308, Number.MAX_VALUE, -Number.MAX_VALUE,
];

/** Any finite double, weighted towards ordinary magnitudes and the edges. */
export const finite = fc.oneof(
  { weight: 4, arbitrary: fc.double({ min: -10, max: 10, noNaN: true }) },
  { weight: 2, arbitrary: fc.constantFrom(...EDGE_NUMBERS) },
  { weight: 1, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
  { weight: 1, arbitrary: fc.float({ noNaN: true, noDefaultInfinity: true }) },
);

/** A finite double that is also a finite float32 after rounding. */
export const finite32 = finite.map((x) => (Number.isFinite(Math.fround(x)) ? x : x / 1e300));

/** Non-negative finite doubles (second moments). */
export const nonNegative = finite.map((x) => Math.abs(x));

/** A float of a narrow wire type from its bit pattern (every finite one; NaN and ±Infinity included). */
export function halfBits(bits: number, type: 'F16' | 'BF16'): number {
  if (type === 'BF16') return new Float32Array(new Uint32Array([bits << 16]).buffer)[0]!;
  const sign = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 31;
  const f = bits & 1023;
  if (e === 0) return sign * f * 2 ** -24;
  if (e === 31) return f ? NaN : sign * Infinity;
  return sign * (1 + f / 1024) * 2 ** (e - 15);
}

// ---------------------------------------------------------------------------------------------
// JSON text, written many equivalent ways
// ---------------------------------------------------------------------------------------------

/** A JSON object as ordered entries (keys may repeat, `__proto__` stays a key). */
export class Obj {
  readonly entries: Array<[string, Json]>;
  constructor(entries: Array<[string, Json]>) {
    this.entries = entries;
  }
  get(key: string): Json | undefined {
    return this.entries.findLast(([k]) => k === key)?.[1];
  }
}

/** Text inserted as is (NaN, truncated values, junk). */
export class Raw {
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }
}

export type Json = number | string | boolean | null | Json[] | Obj | Raw;

/** How JSON text is written: a seed for number spellings and duplicate keys, and the whitespace. */
export interface TextStyle {
  seed: number;
  space: string;
  /** Write junk under some keys first, then the real value under the same key (JSON.parse keeps the last). */
  dupes: boolean;
}

export const PLAIN: TextStyle = { seed: 0, space: '', dupes: false };

export const textStyle: fc.Arbitrary<TextStyle> = fc.record({
  seed: fc.nat(),
  space: fc.constantFrom('', '', ' ', '\n', '\t', '\r\n  '),
  dupes: fc.boolean(),
});

/** A small deterministic generator, so that the text is a function of the value and the style. */
function prng(seed: number) {
  let s = seed >>> 0 || 1;
  return (n: number) => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) % n;
  };
}

/** `x` as one of several JSON spellings of the same double. */
export function numberText(x: number, pick: number): string {
  if (Object.is(x, -0)) return ['-0', '-0.0', '-0e0', '-0.0E+00'][pick % 4]!;
  if (x === 0) return ['0', '0.0', '0e5', '0E-3'][pick % 4]!;
  switch (pick % 5) {
    case 1:
      return x.toExponential();
    case 2:
      return x.toPrecision(17);
    case 3:
      return String(x).toUpperCase();
    case 4:
      return x.toExponential().replace('e+', 'e');
    default:
      return String(x);
  }
}

/** JSON text of `value` in `style`: every spelling parses (JSON.parse) to the same value. */
export function writeJson(value: Json, style: TextStyle = PLAIN): string {
  const rnd = prng(style.seed);
  const sp = style.space;
  const write = (v: Json): string => {
    if (v instanceof Raw) return v.text;
    if (v instanceof Obj) {
      const parts: string[] = [];
      for (const [k, child] of v.entries) {
        if (style.dupes && rnd(4) === 0) parts.push(`${JSON.stringify(k)}:${sp}${['"junk"', 'null', '[1,2]', '{"x":1}'][rnd(4)]}`);
        parts.push(`${JSON.stringify(k)}:${sp}${write(child)}`);
      }
      return `{${sp}${parts.join(`,${sp}`)}${sp}}`;
    }
    if (Array.isArray(v)) return `[${v.map(write).join(`,${sp}`)}]`;
    if (typeof v === 'number') return numberText(v, style.seed === 0 ? 0 : rnd(5));
    return JSON.stringify(v);
  };
  return write(value);
}

/** Arbitrary JSON values (any nesting, unicode strings, extreme numbers). */
export const anyJson: fc.Arbitrary<Json> = fc.letrec<{ value: Json }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    finite,
    fc.string({ unit: 'grapheme', maxLength: 10 }),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 5 }),
    fc.array(fc.tuple(fc.string({ unit: 'grapheme', maxLength: 6 }), tie('value')), { maxLength: 5 }).map((e) => new Obj(e)),
  ),
})).value;

// ---------------------------------------------------------------------------------------------
// tensor trees
// ---------------------------------------------------------------------------------------------

/** A tensor tree: one tensor (row-major values), or named trees in JSON.parse's key order. */
export type Tree = { kind: 'tensor'; shape: number[]; values: number[] } | { kind: 'named'; entries: Array<[string, Tree]> };

export interface Leaf {
  path: string[];
  shape: number[];
  /** Index of the leaf's first element among all elements, in tree order. */
  offset: number;
  size: number;
}

export const sizeOf = (shape: readonly number[]) => shape.reduce((n, d) => n * d, 1);

export function leavesOf(tree: Tree): Leaf[] {
  const out: Leaf[] = [];
  let offset = 0;
  const walk = (t: Tree, path: string[]) => {
    if (t.kind === 'tensor') {
      out.push({ path, shape: t.shape, offset, size: t.values.length });
      offset += t.values.length;
    } else for (const [name, child] of t.entries) walk(child, [...path, name]);
  };
  walk(tree, []);
  return out;
}

export const valuesOf = (tree: Tree): number[] => (tree.kind === 'tensor' ? tree.values : tree.entries.flatMap(([, t]) => valuesOf(t)));

/** The same structure with other values (in tree order). */
export function withValues(tree: Tree, values: readonly number[]): Tree {
  let i = 0;
  const build = (t: Tree): Tree =>
    t.kind === 'tensor' ? { kind: 'tensor', shape: t.shape, values: values.slice(i, (i += t.values.length)) } : { kind: 'named', entries: t.entries.map(([n, c]) => [n, build(c)]) };
  return build(tree);
}

/** Nested arrays of a tensor (a number for shape []). */
export function nest(shape: readonly number[], values: readonly Json[]): Json {
  if (shape.length === 0) return values[0]!;
  let i = 0;
  const build = (d: number): Json[] => Array.from({ length: shape[d]! }, () => (d === shape.length - 1 ? values[i++]! : build(d + 1)));
  return build(0);
}

/** The JSON model of a tree; `order` permutes the names of objects (the API matches by name). */
export function treeJson(tree: Tree, order = 0): Json {
  if (tree.kind === 'tensor') return nest(tree.shape, tree.values);
  const entries = tree.entries.map(([n, c]): [string, Json] => [n, treeJson(c, order)]);
  if (order !== 0 && entries.length > 1) {
    const k = order % entries.length;
    entries.push(...entries.splice(0, k));
  }
  return new Obj(entries);
}

/** A JSON tensor tree (a number, nested arrays, or objects of such, as JSON.parse gives it) as a Tree. */
export function treeFromJson(value: unknown): Tree {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    return { kind: 'named', entries: Object.entries(value).map(([k, v]) => [k, treeFromJson(v)]) };
  }
  const shape: number[] = [];
  for (let v: unknown = value; Array.isArray(v); v = v[0]) shape.push(v.length);
  return { kind: 'tensor', shape, values: Array.isArray(value) ? ((value as unknown[]).flat(Infinity) as number[]) : [value as number] };
}

/** A shapes tree (GET /v1/optimizers/{id} `shapes`: a shape, or objects of names to shapes) as a Tree of zeros. */
export function treeFromShapes(shapes: unknown): Tree {
  if (Array.isArray(shapes)) return { kind: 'tensor', shape: shapes as number[], values: new Array<number>(sizeOf(shapes as number[])).fill(0) };
  return { kind: 'named', entries: Object.entries(shapes as Record<string, unknown>).map(([k, v]) => [k, treeFromShapes(v)]) };
}

/** Dotted names of a tree's tensors, as binary formats name them (`""` for one unnamed tensor). */
export const dottedNames = (tree: Tree) => leavesOf(tree).map((l) => l.path.join('.'));

/** Whether JSON.parse puts this key first (array-index keys come first, ascending). */
const isIndexKey = (k: string) => /^(0|[1-9][0-9]*)$/.test(k) && Number(k) < 2 ** 32 - 1;

/** Entries in the order JSON.parse's object has them, so tree order is the API's order too. */
export function parseOrder<T>(entries: Array<[string, T]>): Array<[string, T]> {
  const index = entries.filter(([k]) => isIndexKey(k)).sort(([a], [b]) => Number(a) - Number(b));
  return [...index, ...entries.filter(([k]) => !isIndexKey(k))];
}

/** Awkward names: prototype keys, dots, slashes, empty, unicode (lone surrogates too), long. */
export const tensorName = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom('w', 'b', 'fc.weight', 'fc.bias', 'layer1', 'x') },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', '', '.', '..', 'a.b', '0', '1', '10', '007',
      '__metadata__', 'params', 'grads', 'exp_avg', 'step', 'a/b', ' ', '\u0000', '"', '\\', 'é', '€', '😀', '\ud800', '\u202e', 'ﬀ',
    ),
  },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 6 }) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 995, max: 1000 }), fc.constantFrom('n', 'é', '.')).map(([n, c]) => c.repeat(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 500 }).map((n) => '😀'.repeat(n)) },
);

/** A shape: rank 0–3 with small dimensions, a trailing 0 at times, or a deep rank of ones (up to the limit of 32). */
export const shape = fc.oneof(
  { weight: 8, arbitrary: fc.array(fc.integer({ min: 1, max: 4 }), { maxLength: 3 }) },
  { weight: 1, arbitrary: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }).map((s) => [...s, 0]) },
  { weight: 1, arbitrary: fc.integer({ min: 28, max: 32 }).map((r) => Array.from({ length: r }, () => 1)) },
);

export function tensorOf(values: fc.Arbitrary<number>): fc.Arbitrary<Tree> {
  return shape.chain((s) => fc.array(values, { minLength: sizeOf(s), maxLength: sizeOf(s) }).map((v) => ({ kind: 'tensor' as const, shape: s, values: v })));
}

/** A tree: one tensor, or up to 4 uniquely named subtrees, `depth` levels of names at most. */
export function treeOf(values: fc.Arbitrary<number>, depth = 2): fc.Arbitrary<Tree> {
  const tensor = tensorOf(values);
  if (depth === 0) return tensor;
  const named = fc
    .uniqueArray(fc.tuple(tensorName, treeOf(values, depth - 1)), { selector: ([n]) => n, maxLength: 4 })
    .map((entries): Tree => ({ kind: 'named', entries: parseOrder(entries) }));
  return fc.oneof({ weight: 2, arbitrary: tensor }, { weight: 3, arbitrary: named });
}

/** Values for every element of `tree`. */
export const valuesFor = (tree: Tree, values: fc.Arbitrary<number>) => {
  const n = valuesOf(tree).length;
  return fc.array(values, { minLength: n, maxLength: n });
};

// ---------------------------------------------------------------------------------------------
// mutations: one field of a request made wrong
// ---------------------------------------------------------------------------------------------

/** Values of a wrong type for any field. */
export const wrongType: fc.Arbitrary<Json> = fc.constantFrom<Json>('1', '', 'NaN', true, false, null, [], [1], new Obj([]), new Obj([['x', 1]]));

/** Text that is not a JSON number where one is expected. */
export const badNumberText = fc.constantFrom('NaN', 'Infinity', '-Infinity', '1e999', '-1e999', '0x10', '.5', '+1', '01', '1.', '--1', 'undefined');

/** Replaces the value at `path` (keys of objects, indices of arrays) with `to`; absent paths are created in objects. */
export function setAt(root: Json, path: Array<string | number>, to: Json | undefined): Json {
  if (path.length === 0) return to ?? null;
  const [head, ...rest] = path;
  if (root instanceof Obj) {
    const entries = root.entries.slice();
    const i = entries.findLastIndex(([k]) => k === head);
    if (i < 0) {
      if (to !== undefined) entries.push([String(head), setAt(new Obj([]), rest, to)]);
    } else if (rest.length === 0 && to === undefined) entries.splice(i, 1);
    else entries[i] = [String(head), setAt(entries[i]![1], rest, to)];
    return new Obj(entries);
  }
  if (Array.isArray(root) && typeof head === 'number' && head < root.length) {
    const copy = root.slice();
    if (rest.length === 0 && to === undefined) copy.splice(head, 1);
    else copy[head] = setAt(copy[head]!, rest, to);
    return copy;
  }
  return root;
}

/** Paths to every number inside a JSON model (tensor elements), for element mutations. */
export function numberPaths(v: Json, path: Array<string | number> = []): Array<Array<string | number>> {
  if (typeof v === 'number') return [path];
  if (Array.isArray(v)) return v.flatMap((c, i) => numberPaths(c, [...path, i]));
  if (v instanceof Obj) return v.entries.flatMap(([k, c]) => numberPaths(c, [...path, k]));
  return [];
}

/** Paths to every array (for ragged and deep mutations). */
export function arrayPaths(v: Json, path: Array<string | number> = []): Array<Array<string | number>> {
  if (Array.isArray(v)) return [path, ...v.flatMap((c, i) => arrayPaths(c, [...path, i]))];
  if (v instanceof Obj) return v.entries.flatMap(([k, c]) => arrayPaths(c, [...path, k]));
  return [];
}

export function getAt(root: Json, path: Array<string | number>): Json | undefined {
  let v: Json | undefined = root;
  for (const key of path) {
    if (v instanceof Obj) v = v.get(String(key));
    else if (Array.isArray(v) && typeof key === 'number') v = v[key];
    else return undefined;
  }
  return v;
}

/** `depth` levels of arrays around a value. */
export function deepArray(v: Json, depth: number): Json {
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

/** `depth` levels of one-member objects around a value. */
export function deepObject(v: Json, depth: number, key = 'a'): Json {
  for (let i = 0; i < depth; i++) v = new Obj([[key, v]]);
  return v;
}

/**
 * One way to break the tensors under `roots` (e.g. `params`, `grads`, `state.m`): an element of
 * the wrong type or non-finite, a ragged row, an element missing or extra, a tensor too deep, an
 * unknown or missing name, a name too long. Always invalid.
 */
export function tensorMutation(roots: Array<Array<string | number>>) {
  return fc
    .record({
      root: fc.constantFrom(...roots),
      kind: fc.constantFrom('element-type', 'element-text', 'drop-element', 'extra-element', 'rank-33', 'extra-name', 'drop-name', 'long-name', 'deep-names'),
      pick: fc.nat(),
      junk: wrongType,
      text: badNumberText,
    })
    .map((m) => (body: Json): Json => {
      const tree = getAt(body, m.root);
      if (tree === undefined) return setAt(body, m.root, m.junk);
      const nums = numberPaths(tree);
      const arrays = arrayPaths(tree).filter((p) => Array.isArray(getAt(tree, p)) && (getAt(tree, p) as Json[]).length > 0);
      const at = <T>(list: T[]) => list[m.pick % list.length];
      switch (m.kind) {
        case 'element-type':
        case 'element-text': {
          const p = at(nums);
          const bad = m.kind === 'element-type' ? (m.junk instanceof Obj || Array.isArray(m.junk) ? 'x' : m.junk) : new Raw(m.text);
          return p ? setAt(body, [...m.root, ...p], bad) : setAt(body, m.root, bad);
        }
        case 'drop-element':
        case 'extra-element': {
          const p = at(arrays);
          if (!p) return setAt(body, m.root, m.kind === 'drop-element' ? [] : [[1, 2], [3]]);
          const arr = getAt(tree, p) as Json[];
          const next = m.kind === 'drop-element' ? arr.slice(1) : [...arr, arr[0]!];
          return setAt(body, [...m.root, ...p], next);
        }
        case 'rank-33':
          return setAt(body, m.root, deepArray(1, 33));
        case 'extra-name':
          return setAt(body, m.root, tree instanceof Obj ? new Obj([...tree.entries, ['not-a-param', 1]]) : new Obj([['not-a-param', 1]]));
        case 'drop-name':
          return setAt(body, m.root, tree instanceof Obj && tree.entries.length > 0 ? new Obj(tree.entries.slice(1)) : new Obj([['x', tree]]));
        case 'long-name':
          return setAt(body, m.root, new Obj([['n'.repeat(1001), 1]]));
        default:
          return setAt(body, m.root, deepObject(1, 33));
      }
    });
}

// ---------------------------------------------------------------------------------------------
// safetensors: files broken in every documented way, and then some
// ---------------------------------------------------------------------------------------------

export interface StEntry {
  name: string;
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

const headerObject = (entries: StEntry[], metadata: Record<string, unknown> | null) => {
  const header: Array<[string, Json]> = [];
  if (metadata) header.push(['__metadata__', new Obj(Object.entries(metadata) as Array<[string, Json]>)]);
  let offset = 0;
  for (const e of entries) {
    header.push([e.name, new Obj([['dtype', e.dtype], ['shape', e.shape], ['data_offsets', [offset, offset + e.data.length]]])]);
    offset += e.data.length;
  }
  return new Obj(header);
};

/** A well-formed file (header in `entries` order, data back to back), with optional padding of the header. */
export function stFile(entries: StEntry[], metadata: Record<string, unknown> | null = null, style: TextStyle = PLAIN): Uint8Array {
  return rawSafetensors(writeJson(headerObject(entries, metadata), { ...style, dupes: false }), entries.map((e) => e.data));
}

/**
 * Ways to break a safetensors file made of `entries` (plus metadata): the header length beyond,
 * inside or short of the body, truncation, junk appended, header bytes overwritten, a header that is
 * not an object or not JSON, duplicate names, unknown dtypes, bad shapes and offsets, metadata that
 * is not strings. Each is invalid; `data-byte` (one data byte changed) may stay valid.
 */
export function brokenSafetensors(entries: StEntry[], metadata: Record<string, unknown> | null) {
  const good = () => stFile(entries, metadata);
  const headerLen = () => good().length - entries.reduce((n, e) => n + e.data.length, 0) - 8;
  const withHeader = (mutate: (h: Obj) => Obj) => rawSafetensors(writeJson(mutate(headerObject(entries, metadata))), entries.map((e) => e.data));
  const first = entries[0]?.name ?? 'params';
  const tensorField = (field: string, value: Json) => (h: Obj) => setAt(h, [first, field], value) as Obj;
  return fc.oneof(
    fc.nat().map((k) => {
      const f = good();
      return { what: 'truncated', mayPass: false, bytes: f.slice(0, k % f.length) };
    }),
    fc.constantFrom(0, 1, 7, 2 ** 24 + 1, 2 ** 32 - 1, 2 ** 53).map((n) => {
      const f = good();
      new DataView(f.buffer).setUint32(0, n % 2 ** 32, true);
      new DataView(f.buffer).setUint32(4, Math.floor(n / 2 ** 32), true);
      return { what: `header length ${n}`, mayPass: false, bytes: f };
    }),
    fc.integer({ min: -3, max: 3 }).filter((d) => d !== 0).map((d) => {
      const f = good();
      new DataView(f.buffer).setUint32(0, headerLen() + d, true);
      return { what: `header length off by ${d}`, mayPass: false, bytes: f };
    }),
    fc.uint8Array({ minLength: 1, maxLength: 16 }).map((junk) => {
      const f = good();
      const out = new Uint8Array(f.length + junk.length);
      out.set(f);
      out.set(junk, f.length);
      return { what: 'junk appended', mayPass: false, bytes: out };
    }),
    fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })).map(([i, b]) => {
      const f = good();
      const at = 8 + (i % Math.max(1, headerLen()));
      f[at] = b;
      // A changed byte of the header may leave a valid file (a digit of a metadata value, a name that still matches).
      return { what: `header byte ${at} = ${b}`, mayPass: true, bytes: f };
    }),
    fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })).map(([i, b]) => {
      const f = good();
      const dataLen = f.length - 8 - headerLen();
      if (dataLen > 0) f[8 + headerLen() + (i % dataLen)] = b;
      return { what: 'data byte', mayPass: true, bytes: f };
    }),
    anyJson.filter((j) => !(j instanceof Obj)).map((j) => ({ what: 'header not an object', mayPass: false, bytes: rawSafetensors(writeJson(j), []) })),
    fc.constantFrom('{', '{"a":', 'nope', '{"a":1,}', '\u00ff\u00fe', '{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}').map((t) => ({
      what: `header text ${JSON.stringify(t)}`,
      mayPass: false,
      bytes: rawSafetensors(t, [new Uint8Array(4)]),
    })),
    fc.constant(0).map(() => {
      const text = writeJson(headerObject(entries, metadata));
      const dup = text.replace(/^\{/, `{${JSON.stringify(first)}:{"dtype":"F32","shape":[0],"data_offsets":[0,0]},`);
      return { what: 'duplicate name', mayPass: entries.length === 0, bytes: rawSafetensors(dup, entries.map((e) => e.data)) };
    }),
    fc.constantFrom<Json>('I32', 'F8_E4M3', 'BOOL', 'f32', '', 1, null).map((d) => ({ what: `dtype ${JSON.stringify(d)}`, mayPass: false, bytes: withHeader(tensorField('dtype', d)) })),
    fc
      .constantFrom<Json>([-1], [1.5], ['1'], [2 ** 53], [2 ** 31, 2 ** 31, 2 ** 31], Array.from({ length: 33 }, () => 1), null, 'x', new Obj([]))
      .map((s) => ({ what: `shape ${writeJson(s)}`, mayPass: false, bytes: withHeader(tensorField('shape', s)) })),
    fc
      .constantFrom<Json>([0], [4, 0], [0, 2 ** 60], [-4, 0], ['0', '4'], [0, 4, 8], null, [1e308, 1e308], [0.5, 4.5])
      .map((o) => ({ what: `data_offsets ${writeJson(o)}`, mayPass: false, bytes: withHeader(tensorField('data_offsets', o)) })),
    fc.constant(0).map(() => ({ what: 'unknown tensor field', mayPass: false, bytes: withHeader(tensorField('extra', 1)) })),
    fc.constantFrom<Json>(3, null, true, new Obj([['step', 3]]), new Obj([['hyperparams', new Obj([])]]), [1]).map((m) => ({
      what: `__metadata__ ${writeJson(m)}`,
      mayPass: false,
      bytes: withHeader((h) => setAt(h, ['__metadata__'], m) as Obj),
    })),
    fc.constant(0).map(() => ({
      what: 'name too long',
      mayPass: false,
      bytes: withHeader((h) => new Obj([...h.entries, ['x'.repeat(1040), new Obj([['dtype', 'F32'], ['shape', [0]], ['data_offsets', [0, 0]]])]])),
    })),
  );
}

// ---------------------------------------------------------------------------------------------
// headers
// ---------------------------------------------------------------------------------------------

/** Header values: printable ASCII (workerd sends other bytes as UTF-8, with a warning), separators, long ones. */
export const headerText = fc.oneof(
  fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 40 }),
  fc.string({ unit: fc.constantFrom(' ', '\t', ',', ';', '=', '"', '*', '/', 'q', '0', '.'), maxLength: 20 }),
  fc.integer({ min: 200, max: 9000 }).map((n) => 'k'.repeat(n)),
  fc.constant(''),
);

/** Content types: right, wrong, and odd spellings of the right ones. */
export const contentType = fc.oneof(
  fc.constantFrom(
    'application/json', 'Application/JSON', 'application/json; charset=utf-8', 'application/json;charset="UTF-8"', 'application/json; charset=latin1',
    'application/json; charset=utf-16', 'application/vnd.api+json', 'application/problem+json', 'application/jsonx', 'text/json', 'text/plain',
    'application/octet-stream', 'application/octet-stream; dtype=bfloat16', 'application/octet-stream; dtype=float16', 'application/octet-stream; dtype=float64',
    'application/octet-stream; dtype=int8', 'application/octet-stream; dtype=', 'application/vnd.safetensors', 'APPLICATION/VND.SAFETENSORS',
    'application/vnd.safetensors; dtype=float16', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', 'image/svg+xml', '*/*', ';', '',
  ),
  headerText,
);

export const accept = fc.oneof(
  fc.constantFrom(
    '*/*', 'application/*', 'application/json', 'application/octet-stream', 'application/vnd.safetensors', 'text/html', 'image/svg+xml',
    'application/json;q=0', 'application/json;q=0, */*;q=0', 'application/vnd.safetensors;q=0.9, application/json;q=0.5', '*/*;q=NaN',
    'application/json;q=-1', 'application/json;q=2', ',,,', 'application/octet-stream;q=0.1, application/json;q=0.1', '',
  ),
  headerText,
);

export const contentEncoding = fc.constantFrom('identity', 'IDENTITY', ' identity ', 'gzip', 'br', 'deflate', 'zstd', 'gzip, identity', '');

/** Headers that should not matter (or only be refused politely), plus any of the API's own with junk values. */
export const junkHeaders: fc.Arbitrary<Record<string, string>> = fc
  .record(
    {
      'content-type': contentType,
      accept,
      'content-encoding': contentEncoding,
      'idempotency-key': headerText,
      'if-match': fc.oneof(headerText, fc.constantFrom('*', '"s0-r0"', 'W/"s0-r0"', '"a", "b"', '*, "x"')),
      authorization: fc.oneof(headerText, fc.constantFrom('Bearer', 'Bearer ', 'bearer x', 'Basic dXNlcjpwYXNz', 'Bearer a b')),
      origin: fc.constantFrom('https://evil.example', 'null', ''),
      'x-forwarded-for': headerText,
      'content-language': headerText,
    },
    { requiredKeys: [] },
  )
  .map((h) => Object.fromEntries(Object.entries(h).filter(([, v]) => v !== undefined)) as Record<string, string>);

/** A query string made of junk: unknown names, repeated keys, encoded bytes, empty values. */
export const junkQuery = fc
  .array(
    fc.tuple(
      fc.oneof(fc.constantFrom('lr', 'steps', 'limit', 'return', 'offset', 'tensor', 'dtype', 'loss', 'expected_step', 'log_scale', 'v', '__proto__', 'constructor', ''), fc.string({ maxLength: 8 })),
      fc.oneof(fc.constantFrom('1', '-1', '0x10', '1e2', 'NaN', 'true', '', ' 1', '99999999999999999999', '0:10', '1,2,,3', 'none', 'params'), fc.string({ maxLength: 12 })),
    ),
    { maxLength: 4 },
  )
  .map((pairs) => (pairs.length === 0 ? '' : `?${pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')}`));
