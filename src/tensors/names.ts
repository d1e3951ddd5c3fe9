// Flat names of the tensors of a layout, as binary formats address them: the path of each tensor
// joined with dots (`{"fc": {"weight": …}}` → `fc.weight`, as torch names parameters), `""` for a
// layout that is one unnamed tensor.

import { MAX_NAME_LENGTH, MAX_TENSORS, TensorError, type FieldPath, type TensorLayout, leaves } from './tree.ts';

/** One tensor of a layout: flat name, shape, and place in the flat values. */
export interface NamedLeaf {
  name: string;
  shape: readonly number[];
  /** Element offset in the flat layout. */
  offset: number;
  size: number;
}

/** The tensors of a layout in order, with flat names. */
export function namedLeaves(layout: TensorLayout): NamedLeaf[] {
  return leaves(layout).map((l) => ({ name: l.path.join('.'), shape: l.shape, offset: l.offset, size: l.size }));
}

/**
 * Name → leaf. Null when two tensors flatten to the same name (`{"a.b": …, "a": {"b": …}}`):
 * such a layout can be used in JSON only.
 */
export function leafIndex(layout: TensorLayout): Map<string, NamedLeaf> | null {
  const index = new Map<string, NamedLeaf>();
  for (const leaf of namedLeaves(layout)) {
    if (index.has(leaf.name)) return null;
    index.set(leaf.name, leaf);
  }
  return index;
}

/**
 * A layout of named tensors in the given order (one unnamed tensor when the only name is "").
 * The limits of every tensor tree hold (at most MAX_TENSORS tensors, names of at most
 * MAX_NAME_LENGTH characters), as for JSON trees: a TensorError at `path` otherwise.
 */
export function layoutOfNamed(tensors: ReadonlyArray<{ name: string; shape: readonly number[] }>, path: FieldPath = ['safetensors']): TensorLayout {
  if (tensors.length > MAX_TENSORS) throw new TensorError(path, `has ${tensors.length} tensors; at most ${MAX_TENSORS} are allowed`);
  for (const t of tensors) {
    if (t.name.length > MAX_NAME_LENGTH) throw new TensorError([...path, t.name], `a tensor name is ${t.name.length} characters long; at most ${MAX_NAME_LENGTH} are allowed`);
  }
  if (tensors.length === 1 && tensors[0]!.name === '') return { kind: 'tensor', shape: [...tensors[0]!.shape] };
  return { kind: 'named', entries: tensors.map((t) => ({ name: t.name, layout: { kind: 'tensor' as const, shape: [...t.shape] } })) };
}
