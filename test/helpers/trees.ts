// Test-side tensor tree utilities, written independently of src/tensors so the API's own
// flattening is not used to check itself.

/** Leaves of a tree in document order with their paths. */
export function leavesOf(tree: unknown, path = ''): Array<{ path: string; value: unknown }> {
  if (Array.isArray(tree)) return tree.flatMap((x, i) => leavesOf(x, `${path}[${i}]`));
  if (tree !== null && typeof tree === 'object') {
    return Object.keys(tree)
      .sort()
      .flatMap((k) => leavesOf((tree as Record<string, unknown>)[k], `${path}.${k}`));
  }
  return [{ path, value: tree }];
}

/** Structure of a tree with numbers replaced by 0 and object keys sorted (for shape equality). */
export function skeleton(tree: unknown): unknown {
  if (Array.isArray(tree)) return tree.map(skeleton);
  if (tree !== null && typeof tree === 'object') {
    return Object.fromEntries(Object.keys(tree).sort().map((k) => [k, skeleton((tree as Record<string, unknown>)[k])]));
  }
  return typeof tree === 'number' ? 0 : tree;
}

/** Pairs of leaf values of two trees of the same structure (throws when structures differ). */
export function zipLeaves(actual: unknown, expected: unknown): Array<{ path: string; a: number; e: number }> {
  const la = leavesOf(actual);
  const le = leavesOf(expected);
  if (la.length !== le.length) throw new Error(`leaf count ${la.length} != ${le.length}`);
  return la.map((x, i) => {
    if (x.path !== le[i]!.path) throw new Error(`path ${x.path} != ${le[i]!.path}`);
    return { path: x.path, a: x.value as number, e: le[i]!.value as number };
  });
}
