// Parameter groups (torch's `param_groups`) by tensor name: each group lists names or glob
// patterns (`*` matches any run of characters, dots included) and overrides hyperparameters for
// the tensors it names; the tensors no group names use the top-level hyperparameters. Pure.

/** A group as a client writes it: its patterns and its hyperparameter overrides. */
export interface GroupSpec<V = unknown> {
  params: readonly string[];
  overrides: Record<string, V>;
}

/** Why a set of groups cannot be applied, with where (group index, pattern index). */
export type GroupError =
  | { kind: 'no-match'; group: number; pattern: number; text: string }
  | { kind: 'overlap'; group: number; pattern: number; text: string; tensor: string; other: number };

/** `*` matches any run of characters; everything else matches itself. */
export function globMatcher(pattern: string): (name: string) => boolean {
  if (!pattern.includes('*')) return (name) => name === pattern;
  const parts = pattern.split('*');
  return (name) => {
    const first = parts[0]!;
    const last = parts[parts.length - 1]!;
    if (name.length < first.length + last.length || !name.startsWith(first) || !name.endsWith(last)) return false;
    let at = first.length;
    const end = name.length - last.length;
    for (let i = 1; i < parts.length - 1; i++) {
      const k = name.indexOf(parts[i]!, at);
      if (k < 0 || k + parts[i]!.length > end) return false;
      at = k + parts[i]!.length;
    }
    return true;
  };
}

/**
 * The group of each tensor (-1: none, the top-level hyperparameters), or the first error: a
 * pattern that matches no tensor, or a tensor two groups name (torch: "some parameters appear in
 * more than one parameter group").
 */
export function assignGroups(names: readonly string[], groups: readonly GroupSpec[]): { groupOf: number[] } | { error: GroupError } {
  const groupOf = new Array<number>(names.length).fill(-1);
  for (let g = 0; g < groups.length; g++) {
    const patterns = groups[g]!.params;
    for (let p = 0; p < patterns.length; p++) {
      const matches = globMatcher(patterns[p]!);
      let any = false;
      for (let t = 0; t < names.length; t++) {
        if (!matches(names[t]!)) continue;
        any = true;
        const other = groupOf[t]!;
        if (other !== -1 && other !== g) return { error: { kind: 'overlap', group: g, pattern: p, text: patterns[p]!, tensor: names[t]!, other } };
        groupOf[t] = g;
      }
      if (!any) return { error: { kind: 'no-match', group: g, pattern: p, text: patterns[p]! } };
    }
  }
  return { groupOf };
}
