// Parameter groups (torch's `param_groups`) as the stateless steps and hosted optimizers take them:
// the group of each tensor and the hyperparameters of each group, with the 422s that name the
// group, pattern or hyperparameter at fault. One implementation, so both refuse and resolve alike;
// the glob matching itself is src/optim/groups.ts.

import { assignGroups } from '../optim/groups.ts';
import type { OptimizerDef } from '../optim/optimizer.ts';
import { familySchemas } from '../schemas/family.ts';
import type { FieldPath } from '../tensors/tree.ts';
import { fieldError, validationProblem } from './problem.ts';
import { zodFieldErrors } from './validation.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;
type Hp = Record<string, number | boolean | string>;

/** A parameter group as `familySchemas(def).paramGroups` validates it: its patterns and the hyperparameters it overrides. */
export interface ParamGroup {
  params: string[];
  [hyperparam: string]: number | boolean | string | string[];
}

/** `spec` with every `lr` (the optimizer's lr in torch; each child's in a sequential schedule) set to `lr`; a `warmup_cosine` keeps its floor as the fraction `min_lr / lr` of it. */
export function withBaseLr(spec: unknown, lr: number): unknown {
  if (Array.isArray(spec)) return spec.map((s) => withBaseLr(s, lr));
  if (spec === null || typeof spec !== 'object') return spec;
  const replaced = Object.fromEntries(Object.entries(spec).map(([k, v]) => [k, k === 'lr' ? lr : withBaseLr(v, lr)]));
  // transformers' warm-up cosine is one LambdaLR for every group, its floor the fraction
  // min_lr / optimizer.defaults["lr"] of each group's lr: the fraction stays the schedule's.
  const s = spec as { type?: unknown; lr?: unknown; min_lr?: unknown; floor_rate?: unknown };
  if (s.type === 'warmup_cosine' && typeof s.lr === 'number' && typeof s.min_lr === 'number' && s.floor_rate === undefined) {
    replaced.floor_rate = s.lr === 0 ? 0 : s.min_lr / s.lr;
  }
  return replaced;
}

/**
 * `value` validated by `def`'s ParamGroups schema (torch's `betas` split into beta1/beta2), the
 * fields not given left out; none for undefined or null. A 422 names each bad field under `path`
 * (with a JSON Pointer when `pointer`: the value is in a JSON body).
 */
export function parseParamGroups(def: AnyDef, value: unknown, path: FieldPath, pointer = true): ParamGroup[] {
  if (value === undefined || value === null) return [];
  const parsed = familySchemas(def).paramGroups.safeParse(value);
  if (!parsed.success) {
    const errors = zodFieldErrors(parsed.error, value, path);
    throw validationProblem(pointer ? errors : errors.map((e) => ({ ...e, pointer: undefined })));
  }
  return (parsed.data as ParamGroup[]).map((g) => Object.fromEntries(Object.entries(g).filter(([, v]) => v !== undefined)) as ParamGroup);
}

/** The hyperparameters a group sets (every field but `params`, those given). */
export function groupOverrides(group: ParamGroup): Record<string, number | boolean | string> {
  const { params: _names, ...overrides } = group;
  return Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)) as Record<string, number | boolean | string>;
}

/** The lr a group sets, if it sets one. */
export const groupLr = (group: ParamGroup): number | undefined => (typeof group.lr === 'number' ? group.lr : undefined);

/**
 * Each tensor's group: 0 for the top-level hyperparameters, g + 1 for `groups[g]`. A pattern that
 * matches no tensor, or a tensor two groups name, is a 422 at `path`[g].params[p].
 */
export function groupOfTensors(names: readonly string[], groups: readonly ParamGroup[], path: FieldPath): number[] {
  if (groups.length === 0) return names.map(() => 0);
  const assigned = assignGroups(
    names,
    groups.map((g) => ({ params: g.params, overrides: {} })),
  );
  if ('error' in assigned) {
    const e = assigned.error;
    const where = [...path, e.group, 'params', e.pattern];
    throw validationProblem([
      e.kind === 'no-match'
        ? fieldError(where, `matches no tensor (the tensors are ${names.slice(0, 20).map((n) => JSON.stringify(n)).join(', ')}${names.length > 20 ? ', …' : ''})`, e.text)
        : fieldError(where, `names tensor "${e.tensor}", which param_groups[${e.other}] names too: a tensor belongs to one group`, e.text),
    ]);
  }
  return assigned.groupOf.map((g) => g + 1);
}

export interface GroupHyperparamsArgs {
  def: AnyDef;
  /** The top-level hyperparameters (defaults filled in; a required one may be missing). */
  top: Record<string, number | boolean | string | undefined>;
  groups: readonly ParamGroup[];
  /** Each tensor's group, as groupOfTensors gives it. */
  groupOf: readonly number[];
  /** Whether a schedule sets lr (then a required lr may be missing). */
  scheduled: boolean;
  /** The lr group g steps with: `groupLr` is the group's own (undefined for the top-level set, g = 0, and a group without one). */
  lrOf: (groupLr: number | undefined, g: number) => number;
  /** Where group g's hyperparameter `key` is in the request (g = 0: the top-level set). */
  where: (g: number, key: string) => FieldPath;
  /** How to avoid a missing required hyperparameter besides giving it, for the message (e.g. "or send a schedule"). */
  orElse: string;
}

/**
 * The hyperparameters of each group, lr resolved (index 0: the top-level set, g + 1: groups[g]).
 * The top-level set is checked whatever uses it (torch validates the constructor's defaults), its
 * required ones (SGD's lr) only when a tensor uses it or there is no tensor; a group's, when a
 * tensor is in it, without the constructor's rules (`constructorCheck`). 422s name the field.
 */
export function groupHyperparams(args: GroupHyperparamsArgs): Hp[] {
  const { def, top, groups, groupOf } = args;
  const tensorGroups = new Set(groupOf);
  const topChecked = tensorGroups.has(0) || groupOf.length === 0;
  const used = new Set([0, ...tensorGroups]);
  const out: Hp[] = [];
  for (let g = 0; g <= groups.length; g++) {
    const overrides = g === 0 ? {} : groupOverrides(groups[g - 1]!);
    const merged = { ...top, ...overrides };
    if (g === 0 ? topChecked : used.has(g)) {
      const missing = Object.entries(def.hyperparams).filter(([k, d]) => d.type === 'number' && d.default === undefined && merged[k] === undefined && !(k === 'lr' && args.scheduled));
      if (missing.length > 0) {
        throw validationProblem(missing.map(([k]) => fieldError(args.where(g, k), `is required: ${def.torch} has no default ${k} (${args.orElse})`)));
      }
    }
    const hp = { ...merged, lr: args.lrOf(g === 0 ? undefined : (overrides.lr as number | undefined), g) } as Hp;
    // torch's constructor validates its defaults (always); add_param_group validates nothing.
    const rule = (used.has(g) ? def.check?.(hp) : null) ?? (g === 0 ? def.constructorCheck?.(hp) : null);
    if (rule) throw validationProblem([fieldError(args.where(g, rule.field), rule.message, hp[rule.field])]);
    out.push(hp);
  }
  return out;
}
