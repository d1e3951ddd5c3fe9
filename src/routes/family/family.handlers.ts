// Handlers of every registry optimizer's stateless step and of the catalogue. A JSON or
// safetensors body → typed arrays → the optimizer's in-place step (src/optim/<name>) → the format
// the client accepts, with torch's state names either way.

import type { Context } from 'hono';
import { hostedArrays, maxHostedElements, type Limits } from '../../lib/config.ts';
import type { AppEnv } from '../../lib/router.ts';
import { scheduleOverflow, statelessLearningRate } from '../../lib/learning-rate.ts';
import { groupHyperparams, groupOfTensors, withBaseLr, type ParamGroup } from '../../lib/param-groups.ts';
import { timing } from '../../lib/observability.ts';
import { ProblemError, fieldError, validationProblem } from '../../lib/problem.ts';
import { parseLike, parseParams, withTensorProblems } from '../../lib/tensor-input.ts';
import { zodFieldErrors } from '../../lib/validation.ts';
import { engineStep, keepSlots, usedGroups, type Counter, type TreeState } from '../../optim/engine.ts';
import { SPARSE_CLIP_VALUE, type SparseRows } from '../../optim/sparse.ts';
import { initState, type Dtype, type FloatArray, type OptimizerDef } from '../../optim/optimizer.ts';
import { OPTIMIZERS, denseOnlyMessage, optimizerDef } from '../../optim/registry.ts';
import type { ScheduleSpec } from '../../schedules/types.ts';
import { familySchemas, jsonSlotName, type JsonDialect } from '../../schemas/family.ts';
import { describeValue, leaves, pathOfIndex, type FieldPath, type TensorLayout } from '../../tensors/tree.ts';
import { leafIndex, namedLeaves, type NamedLeaf } from '../../tensors/names.ts';
import { objectJson, partialTreeJson, treeJson } from '../../wire/json.ts';
import { MEDIA_TYPES, acceptFormat, bodyFormat } from '../../wire/media.ts';
import { wireDtypeOf } from '../../wire/dtypes.ts';
import { decodeSlotsFile, encodeSlots, throwCollision } from '../../wire/slots-file.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;
type Hp = Record<string, number | boolean | string>;

/** Everything one step needs, whatever format it came in. */
interface StepInput {
  dtype: Dtype;
  /** Validated hyperparameters and gradient controls, defaults filled in (a required one may still be missing). */
  hyperparams: Record<string, number | boolean | string | undefined>;
  lrGiven: boolean;
  groups: GroupInput[];
  schedule: ScheduleSpec | undefined;
  metrics: number[] | undefined;
  layout: TensorLayout;
  params: FloatArray;
  grads: FloatArray;
  /** Tensors (in layout order) whose gradient is null / absent: frozen. */
  frozen: boolean[];
  /** Tensors (in layout order) whose gradient came as rows. */
  sparse: Array<SparseRows | null>;
  /** Sent state: step, slots (null = not sent) with which tensors hold them, scalars, per-tensor counters. */
  sent: {
    step: number;
    slots: Record<string, FloatArray | null>;
    held: Record<string, boolean[]>;
    scalars: Record<string, number | undefined>;
    tensors: Record<string, Counter> | undefined;
  } | null;
  /** Where the state's fields are in the request (for errors). */
  statePath: FieldPath;
  /** Where param_groups are in the request. */
  groupsPath: FieldPath;
  /** A state slot's name in the request and the answer (a JSON dialect may rename torch's). */
  slotName: (slot: string) => string;
}

/** A parameter group as validated: its patterns and hyperparameter overrides. */
type GroupInput = ParamGroup;

/**
 * The stateless step of `def`, `POST /v1/<name>/step`. With `dialect`, JSON state slots go by the
 * dialect's names (Adam's m/v/v_max); safetensors files keep torch's names either way.
 */
export function familyStepHandler(def: AnyDef, dialect?: JsonDialect) {
  return async (c: Context<AppEnv>) => {
    const { format } = withTensorProblems(() => bodyFormat(c.req.header('content-type'), ['json', 'safetensors']));
    const answer = withTensorProblems(() => acceptFormat(c.req.header('accept'), ['json', 'safetensors'], format));
    const input = format === 'json' ? await fromJson(def, c, dialect) : await fromSafetensors(def, c);
    const { dtype, layout, params, grads } = input;
    const named = namedLeaves(layout);
    const tensors = leaves(layout);

    if (input.schedule !== undefined && input.lrGiven) {
      throw validationProblem([fieldError(['hyperparams', 'lr'], 'must be omitted when a schedule sets the learning rate', input.hyperparams.lr)]);
    }
    // Groups: each tensor's group (0: the top-level hyperparameters, g + 1: param_groups[g]).
    const groupOf = groupOfTensors(named.map((l) => l.name), input.groups, input.groupsPath);
    const step = input.sent?.step ?? 0;
    const top = input.hyperparams;
    const lrOf = (groupLr: number | undefined): number => {
      if (input.schedule === undefined) return groupLr ?? ((top.lr as number | undefined) ?? 0);
      const spec = (groupLr === undefined ? input.schedule : withBaseLr(input.schedule, groupLr)) as ScheduleSpec;
      const lr = statelessLearningRate(0, spec, step, input.metrics);
      if (!Number.isFinite(lr)) throw scheduleOverflow(step, lr);
      return lr;
    };
    const groupHp: Hp[] = groupHyperparams({
      def,
      top,
      groups: input.groups,
      groupOf,
      scheduled: input.schedule !== undefined,
      lrOf,
      where: (g, k) => (g === 0 ? ['hyperparams', k] : [...input.groupsPath, g - 1, k]),
      orElse: 'or send a schedule',
    });
    if (def.checkShape) {
      for (const t of tensors) {
        const message = def.checkShape(t.shape);
        if (message) throw validationProblem([fieldError(['params', ...t.path], message, `[${t.shape.join(', ')}]`)]);
      }
    }
    const state = checkedState(def, groupHp, groupOf, dtype, layout, params.length, input, named);

    const t = timing(c);
    t.lap('decode');
    if (def.sparse === 'only') {
      const dense = tensors.findIndex((_, i) => !input.frozen[i] && input.sparse[i] === null);
      if (dense >= 0) {
        throw validationProblem([
          fieldError([...(format === 'json' ? ['grads'] : ['safetensors', 'grads']), ...tensors[dense]!.path], `${def.torch} takes sparse gradients only: {"indices": [rows], "values": [[row], ...]} (JSON)`),
        ]);
      }
    }
    // Rows in a safetensors file reach here unchecked against the optimizer (JSON's are checked while parsed).
    if (format === 'safetensors' && !def.sparse) {
      const i = input.sparse.findIndex((r) => r !== null);
      if (i >= 0) {
        throw validationProblem([fieldError(['safetensors', `grads.indices/${named[i]!.name}`], denseOnly(def))]);
      }
    }
    // What torch refuses with a sparse gradient only (Adagrad's weight_decay), by the tensor's group.
    for (let i = 0; i < tensors.length; i++) {
      const rows = input.sparse[i];
      if (!rows || input.frozen[i]) continue;
      const g = groupOf[i]!;
      const rule = def.checkSparse?.(groupHp[g]!);
      if (rule) {
        const where = g === 0 ? ['hyperparams', rule.field] : [...input.groupsPath, g - 1, rule.field];
        throw validationProblem([fieldError(where, `${rule.message} (grads${tensors[i]!.path.map((p) => `[${JSON.stringify(p)}]`).join('')} is sparse)`, groupHp[g]![rule.field])]);
      }
      const message = def.checkSparseGrad?.(tensors[i]!.shape, rows.rows.length);
      if (message) throw validationProblem([fieldError(['grads', ...tensors[i]!.path, 'indices'], message, '[]')]);
    }
    const sparseAt = input.sparse.findIndex((r, i) => r !== null && !input.frozen[i]);
    if (sparseAt >= 0 && top.clip_grad_value !== undefined) {
      throw validationProblem([fieldError(['hyperparams', 'clip_grad_value'], `${SPARSE_CLIP_VALUE} (grads${tensors[sparseAt]!.path.map((p) => `[${JSON.stringify(p)}]`).join('')} is sparse)`, top.clip_grad_value)]);
    }
    const skipMode = top.nonfinite === 'skip';
    if (!skipMode) {
      for (let i = 0; i < grads.length; i++) {
        const x = grads[i]!;
        if (x - x === 0) continue;
        const where = pathOfIndex(layout, i);
        throw validationProblem([fieldError([...(format === 'json' ? ['grads'] : ['safetensors', 'grads']), ...where], `is ${x}: every value must be finite (or set hyperparams.nonfinite to "skip")`, String(x))]);
      }
      input.sparse.forEach((rows, i) => {
        const bad = rows ? rows.values.findIndex((x) => x - x !== 0) : -1;
        if (bad < 0) return;
        const where = format === 'json' ? ['grads', ...tensors[i]!.path, 'values'] : ['safetensors', `grads.values/${named[i]!.name}`];
        throw validationProblem([fieldError([...where, bad], `is ${rows!.values[bad]}: every value must be finite (or set hyperparams.nonfinite to "skip")`, String(rows!.values[bad]))]);
      });
    }
    const outcome = t.phase('kernel', () =>
      engineStep({
        def,
        dtype,
        tensors,
        groupHp,
        groupOf,
        params,
        grads,
        frozen: input.frozen,
        sparse: input.sparse,
        state,
        clipGradNorm: top.clip_grad_norm as number | undefined,
        clipGradValue: top.clip_grad_value as number | undefined,
        nonfinite: skipMode ? 'skip' : 'error',
      }),
    );
    if (!outcome.applied && !skipMode) {
      const { in: label0, index } = outcome.nonFinite;
      const where = pathOfIndex(layout, index);
      const label = label0 === 'params' ? 'params' : `state.${input.slotName(label0)}`;
      throw new ProblemError(422, 'non-finite-result', `the step produced a non-finite ${label} value (overflow, or a zero denominator) at ${label}${where.map((p) => `[${JSON.stringify(p)}]`).join('')}; it cannot be sent`, [
        fieldError(['grads', ...where], `leads to a non-finite ${label} value`),
      ]);
    }
    // A scalar (NAdam's mu_product, sent by the client) can overflow too; JSON would write it null.
    for (const s of def.scalars) {
      const v = state.scalars[s.name]!;
      if (Number.isFinite(v)) continue;
      throw new ProblemError(422, 'non-finite-result', `the step produced a non-finite state.${s.name} (${v}); it cannot be sent`, [
        fieldError([...input.statePath, s.name], `leads to a non-finite ${s.name}`, input.sent?.scalars[s.name]),
      ]);
    }
    const extra = {
      ...(top.clip_grad_norm !== undefined && outcome.gradNorm !== undefined ? { grad_norm: outcome.gradNorm } : {}),
      ...(skipMode ? { skipped: !outcome.applied } : {}),
    };
    // A slot no tensor holds is left out (torch has None), unless there are no tensors at all.
    const kept = Object.entries(state.slots).filter((e): e is [string, FloatArray] => e[1] !== null && (named.length === 0 || state.held[e[0]]!.some(Boolean)));
    const counters = state.counters.size === 0 ? undefined : Object.fromEntries([...state.counters].map(([i, k]) => [named[i]!.name, { step: k.step, ...k.scalars }]));
    const lr = groupHp[0]!.lr as number;
    const headers = { vary: 'Accept' };
    if (answer === 'safetensors') {
      const metadata: Record<string, string> = { step: String(state.step), lr: String(lr), dtype };
      // String(-0) is "0": a scalar keeps the sign of zero, as the JSON answer does.
      for (const s of def.scalars) metadata[s.name] = Object.is(state.scalars[s.name], -0) ? '-0' : String(state.scalars[s.name]);
      if (counters) metadata.tensors = JSON.stringify(counters);
      if (extra.grad_norm !== undefined) metadata.grad_norm = String(extra.grad_norm);
      if (extra.skipped !== undefined) metadata.skipped = String(extra.skipped);
      const file = t.phase('encode', () =>
        withTensorProblems(() =>
          encodeSlots([['params', params], ...kept], [...(leafIndex(layout) ?? throwCollision()).values()], wireDtypeOf(dtype), metadata, Object.fromEntries(kept.map(([k]) => [k, state.held[k]!]))),
        ),
      );
      return new Response(file, { status: 200, headers: { ...headers, 'content-type': MEDIA_TYPES.safetensors } });
    }
    const text = t.phase('encode', () => {
      const stateText = objectJson([
        ['step', { value: state.step }],
        ...kept.map(([name, a]) => [jsonSlotName(name, dialect), { json: partialTreeJson(layout, a, state.held[name]!) }] as const),
        ...def.scalars.map((s) => [s.name, { value: state.scalars[s.name]! }] as const),
        ['tensors', { value: counters }],
      ]);
      return objectJson([
        ['params', { json: treeJson(layout, params) }],
        ['state', { json: stateText }],
        ['lr', { value: lr }],
        ['grad_norm', { value: extra.grad_norm }],
        ['skipped', { value: extra.skipped }],
      ]);
    });
    return c.body(text, 200, { ...headers, 'content-type': MEDIA_TYPES.json });
  };
}

/**
 * The state to step from: a fresh one, or the sent one completed and checked. With step > 0
 * every eager slot the hyperparameters keep must be sent (torch would have created it); a lazy
 * one (SGD's momentum_buffer) may be absent or null per tensor; scalars are required; second
 * moments are >= 0; per-tensor counters name tensors that exist.
 */
function checkedState(def: AnyDef, groupHp: Hp[], groupOf: readonly number[], dtype: Dtype, layout: TensorLayout, n: number, input: StepInput, named: NamedLeaf[]): TreeState {
  const { sent, statePath: path } = input;
  // The hyperparameters of the groups a tensor is in (the top-level set alone without tensors).
  const hps = [...usedGroups(groupOf)].sort((a, b) => a - b).map((g) => groupHp[g]!);
  const keeps = (slot: AnyDef['slots'][number]) => hps.some((hp) => slot.present(hp));
  // Fresh: each tensor gets the eager slots its own group keeps, with the top-level initial value
  // (torch 1.13's Adagrad fills `sum` from its constructor's initial_accumulator_value, not the group's).
  const state: TreeState = { step: 0, scalars: initState(def, hps[0] ?? {}, dtype, 0).scalars, slots: {}, held: {}, counters: new Map() };
  keepSlots(def, groupHp, groupOf, leaves(layout), state, () => (dtype === 'float32' ? new Float32Array(n) : new Float64Array(n)));
  if (sent === null) return state;
  state.step = sent.step;
  // The slots every configuration keeps come together, whatever the step: half a state is a mistake.
  // (With step > 0 every kept slot is required below; at step 0 an option's slot, e.g. amsgrad's,
  // may be left out, as a state saved before the option was turned on has none.)
  const eager = def.slots.filter((slot) => keeps(slot) && slot.present({} as never) && slot.initial(hps.find((hp) => slot.present(hp))!) !== null);
  const given = eager.find((slot) => sent.slots[slot.name]);
  const missing = eager.find((slot) => !sent.slots[slot.name]);
  if (given && missing) {
    throw validationProblem([fieldError([...path, input.slotName(missing.name)], `is missing while ${input.slotName(given.name)} is sent: ${eager.map((x) => input.slotName(x.name)).join(' and ')} come together, or not at all`)]);
  }
  for (const slot of def.slots) {
    const a = sent.slots[slot.name] ?? null;
    if (a === null) {
      if (keeps(slot) && slot.initial(hps[0] ?? {}) !== null && sent.step > 0) throw validationProblem([fieldError([...path, input.slotName(slot.name)], `is required when step > 0 (${def.torch} keeps it with these hyperparameters)`)]);
      continue;
    }
    if (slot.nonNegative) {
      for (let i = 0; i < a.length; i++) {
        if (a[i]! < 0) throw validationProblem([fieldError([...path, input.slotName(slot.name), ...pathOfIndex(layout, i)], 'must be >= 0 (it is a square, a sum of squares or a magnitude)', a[i])]);
      }
    }
    // A slot no group keeps (momentum, centered or amsgrad turned off) comes back as sent, unread:
    // torch keeps it in `optimizer.state` and resumes from it when the option is turned back on.
    state.slots[slot.name] = a;
    state.held[slot.name] = sent.held[slot.name] ?? named.map(() => true);
  }
  for (const s of def.scalars) {
    const v = sent.scalars[s.name];
    if (v === undefined) {
      if (sent.step > 0) throw validationProblem([fieldError([...path, s.name], 'is required when step > 0')]);
      continue;
    }
    state.scalars[s.name] = v;
  }
  if (sent.tensors) {
    const index = new Map(named.map((l, i) => [l.name, i]));
    for (const [name, counter] of Object.entries(sent.tensors)) {
      const i = index.get(name);
      if (i === undefined) throw validationProblem([fieldError([...path, 'tensors', name], 'names no tensor of params', name)]);
      const scalars = Object.fromEntries(def.scalars.map((s) => [s.name, (counter.scalars[s.name] ?? state.scalars[s.name])!]));
      state.counters.set(i, { step: counter.step, scalars });
    }
  }
  return state;
}

/** Zeros of a shape as nested arrays (a frozen tensor's stand-in gradient). */
function zerosOf(shape: readonly number[]): unknown {
  if (shape.length === 0) return 0;
  const [d, ...rest] = shape;
  return Array.from({ length: d! }, () => zerosOf(rest));
}

type SparseHook = (value: Record<string, unknown>, shape: readonly number[], path: FieldPath) => SparseRows;

/**
 * The tree with each null tensor replaced by zeros, which tensors (in layout order) were null,
 * and, with `sparse`, the tensors given as `{indices, values}` rows (replaced by zeros too).
 */
function fillNulls(value: unknown, layout: TensorLayout, sparse?: SparseHook): { value: unknown; isNull: boolean[]; sparse: Array<SparseRows | null> } {
  const isNull: boolean[] = [];
  const rows: Array<SparseRows | null> = [];
  const skip = (l: TensorLayout) => {
    for (let i = leaves(l).length; i > 0; i--) {
      isNull.push(false);
      rows.push(null);
    }
  };
  const walk = (v: unknown, l: TensorLayout, path: Array<string | number>): unknown => {
    if (l.kind === 'tensor') {
      isNull.push(v === null);
      const isRows = sparse !== undefined && v !== null && typeof v === 'object' && !Array.isArray(v);
      rows.push(isRows ? sparse(v as Record<string, unknown>, l.shape, path) : null);
      return v === null || isRows ? zerosOf(l.shape) : v;
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      skip(l);
      return v; // the structure is wrong: parsing names it
    }
    const out: Record<string, unknown> = { ...(v as Record<string, unknown>) };
    for (const e of l.entries) if (Object.hasOwn(out, e.name)) out[e.name] = walk(out[e.name], e.layout, [...path, e.name]);
    else skip(e.layout);
    return out;
  };
  return { value: walk(value, layout, ['grads']), isNull, sparse: rows };
}

/** The refusal of rows by an optimizer without a sparse branch, naming those that take them. */
const denseOnly = denseOnlyMessage;

/** A gradient given as rows, checked: integer indices of the first dimension and one value row each. */
function sparseRows(def: AnyDef, v: Record<string, unknown>, shape: readonly number[], path: FieldPath, dtype: Dtype): SparseRows {
  if (!def.sparse) throw validationProblem([fieldError(path, denseOnly(def))]);
  const extra = Object.keys(v).filter((k) => k !== 'indices' && k !== 'values');
  if (extra.length > 0) throw validationProblem([fieldError([...path, extra[0]!], 'is not a field of a sparse gradient ({"indices": [...], "values": [...]})')]);
  if (shape.length === 0) throw validationProblem([fieldError(path, 'a 0-d tensor has no rows: send its gradient as a number')]);
  const { indices } = v;
  if (!Array.isArray(indices)) throw validationProblem([fieldError([...path, 'indices'], 'must be an array of row indices', describeValue(indices))]);
  const rows = new Int32Array(indices.length);
  for (let k = 0; k < indices.length; k++) {
    const r = indices[k];
    if (typeof r !== 'number' || !Number.isInteger(r) || r < 0 || r >= shape[0]!) {
      throw validationProblem([fieldError([...path, 'indices', k], `must be a row index: an integer in [0, ${shape[0]! - 1}]`, describeValue(r))]);
    }
    rows[k] = r;
  }
  const rowShape = shape.slice(1);
  const values = parseLike(v.values, { kind: 'tensor', shape: [rows.length, ...rowShape] }, [...path, 'values'], dtype);
  return { rows, values, rowSize: rowShape.reduce((a, b) => a * b, 1) };
}

function countersOf(def: AnyDef, tensors: Record<string, Record<string, number>> | undefined): Record<string, Counter> | undefined {
  if (tensors === undefined) return undefined;
  return Object.fromEntries(
    Object.entries(tensors).map(([name, c]) => [name, { step: c.step!, scalars: Object.fromEntries(def.scalars.filter((s) => c[s.name] !== undefined).map((s) => [s.name, c[s.name]!])) }]),
  );
}

async function fromJson(def: AnyDef, c: Context<AppEnv>, dialect: JsonDialect | undefined): Promise<StepInput> {
  const slotName = (slot: string) => jsonSlotName(slot, dialect);
  const queryKeys = Object.keys(c.req.query()).filter((k) => k === 'dtype' || Object.hasOwn(def.hyperparams, k));
  if (queryKeys.length > 0) {
    throw validationProblem(queryKeys.map((k) => fieldError([k], 'query parameters configure safetensors bodies; a JSON body carries its hyperparams itself', c.req.query(k))));
  }
  // Validated by the route's schema (familySchemas(def).stepRequest) before the handler runs.
  const raw: unknown = await c.req.json();
  const body = (c.req.valid as (t: 'json') => unknown)('json') as {
    params: unknown;
    grads: unknown;
    state?: Record<string, unknown> & { step: number; tensors?: Record<string, Record<string, number>> };
    hyperparams: Record<string, number | boolean | string | undefined>;
    param_groups?: GroupInput[];
    dtype: Dtype;
    schedule?: ScheduleSpec;
    metrics?: number[];
  };
  const { dtype } = body;
  const { layout, values: params } = parseParams(body.params, ['params'], c.get('limits').maxElements, dtype);
  const g = fillNulls(body.grads, layout, (v, shape, path) => sparseRows(def, v, shape, path, dtype));
  const grads = parseLike(g.value, layout, ['grads'], dtype);
  let sent: StepInput['sent'] = null;
  if (body.state) {
    const st = body.state;
    const slots: Record<string, FloatArray | null> = {};
    const held: Record<string, boolean[]> = {};
    for (const slot of def.slots) {
      const v = st[slotName(slot.name)];
      // A slot torch keeps as None (SGD's buffer before its first momentum step) may come as null,
      // for every tensor or for some.
      if (v === undefined || v === null) {
        slots[slot.name] = null;
        continue;
      }
      const filled = fillNulls(v, layout);
      slots[slot.name] = parseLike(filled.value, layout, ['state', slotName(slot.name)], dtype);
      held[slot.name] = filled.isNull.map((x) => !x);
    }
    const scalars = Object.fromEntries(def.scalars.map((s) => [s.name, st[s.name] as number | undefined]));
    sent = { step: st.step, slots, held, scalars, tensors: countersOf(def, st.tensors) };
  }
  const rawHp = (raw as { hyperparams?: Record<string, unknown> }).hyperparams;
  return {
    dtype,
    hyperparams: body.hyperparams,
    lrGiven: rawHp?.lr !== undefined,
    groups: body.param_groups ?? [],
    schedule: body.schedule,
    metrics: body.metrics,
    layout,
    params,
    grads,
    frozen: g.isNull,
    sparse: g.sparse,
    sent,
    statePath: ['state'],
    groupsPath: ['param_groups'],
    slotName,
  };
}

/** A metadata value holding JSON (hyperparams, schedule, metrics), parsed or a 422 naming it. */
function metadataJson(metadata: Record<string, string>, key: string): unknown {
  if (!Object.hasOwn(metadata, key)) return undefined;
  try {
    return JSON.parse(metadata[key]!);
  } catch {
    throw validationProblem([fieldError(['__metadata__', key], 'must be JSON text', metadata[key]!.slice(0, 200))]);
  }
}

/** A metadata number (step, a scalar), or a 422 naming it. */
function metadataNumber(metadata: Record<string, string>, key: string, integer: boolean): number | undefined {
  const text = metadata[key];
  if (text === undefined) return undefined;
  const ok = integer ? /^\d+$/.test(text) : /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/.test(text);
  if (!ok) throw validationProblem([fieldError(['__metadata__', key], integer ? 'must be a decimal integer' : 'must be a number written as in JSON', text)]);
  return Number(text);
}

async function fromSafetensors(def: AnyDef, c: Context<AppEnv>): Promise<StepInput> {
  const query = (c.req.valid as (t: 'query') => Record<string, unknown>)('query');
  const { dtype: queryDtype, ...queryRest } = query as { dtype?: Dtype } & Record<string, number | boolean | string | undefined>;
  const fromQuery = Object.fromEntries(Object.entries(queryRest).filter(([, v]) => v !== undefined));
  const body = new Uint8Array(await c.req.arrayBuffer());
  const limits = c.get('limits');
  const file = withTensorProblems(() => decodeSlotsFile(body, def.slots.map((s) => s.name), queryDtype, 2 * limits.maxBodyBytes, true));
  const { metadata } = file;
  const fromMeta = (metadataJson(metadata, 'hyperparams') ?? {}) as Record<string, unknown>;
  if (fromMeta === null || typeof fromMeta !== 'object' || Array.isArray(fromMeta)) {
    throw validationProblem([fieldError(['__metadata__', 'hyperparams'], 'must be a JSON object')]);
  }
  for (const key of Object.keys(fromQuery)) {
    if (Object.hasOwn(fromMeta, key)) throw validationProblem([fieldError([key], 'is given both in the query and in __metadata__.hyperparams: give it once', fromQuery[key])]);
  }
  if (queryDtype !== undefined && metadata.dtype !== undefined && queryDtype !== metadata.dtype) {
    throw validationProblem([fieldError(['dtype'], `the query says ${queryDtype} but __metadata__.dtype says ${metadata.dtype}`, queryDtype)]);
  }
  const scalars = Object.fromEntries(def.scalars.map((s) => [s.name, metadataNumber(metadata, s.name, false)]));
  const options = familySchemas(def).stepOptions.safeParse({
    step: metadataNumber(metadata, 'step', true),
    hyperparams: { ...fromMeta, ...fromQuery },
    param_groups: metadataJson(metadata, 'param_groups'),
    tensors: metadataJson(metadata, 'tensors'),
    dtype: queryDtype ?? metadata.dtype,
    schedule: metadataJson(metadata, 'schedule'),
    metrics: metadataJson(metadata, 'metrics'),
    ...scalars,
  });
  if (!options.success) throw validationProblem(zodFieldErrors(options.error, undefined));
  const o = options.data as {
    step: number;
    hyperparams: Record<string, number | boolean | string | undefined>;
    param_groups?: GroupInput[];
    tensors?: Record<string, Record<string, number>>;
    dtype?: Dtype;
    schedule?: ScheduleSpec;
    metrics?: number[];
  };
  if (o.dtype !== undefined && o.dtype !== file.dtype) {
    throw validationProblem([fieldError(['__metadata__', 'dtype'], `the tensors were read as ${file.dtype}; send dtype=${o.dtype} in the query to read them so`, o.dtype)]);
  }
  const anyState = Object.values(file.slots).some((a) => a !== null) || Object.values(scalars).some((v) => v !== undefined);
  // As JSON's state.step: state without its step count is a mistake, not step 0 (SGD keeps no count: 0).
  if (anyState && metadata.step === undefined && def.stepCounter !== 'none') {
    throw validationProblem([fieldError(['__metadata__', 'step'], `is required with state (the step count ${def.torch}'s state comes from; 0 for a fresh one)`)]);
  }
  return {
    dtype: file.dtype,
    hyperparams: o.hyperparams,
    lrGiven: Object.hasOwn(fromMeta, 'lr') || Object.hasOwn(fromQuery, 'lr'),
    groups: o.param_groups ?? [],
    schedule: o.schedule,
    metrics: o.metrics,
    layout: file.layout,
    params: file.params,
    grads: file.grads,
    frozen: file.present.grads!.map((x, i) => !x && file.sparse[i] === null),
    sparse: file.sparse,
    sent:
      anyState || o.step > 0
        ? { step: o.step, slots: file.slots, held: Object.fromEntries(Object.entries(file.present).filter(([k]) => k !== 'params' && k !== 'grads')), scalars, tensors: countersOf(def, o.tensors) }
        : null,
    statePath: ['safetensors'],
    groupsPath: ['__metadata__', 'param_groups'],
    slotName: (slot) => slot,
  };
}

/** The catalogue entry of one optimizer. */
export function describeAlgorithm(def: AnyDef, limits: Limits) {
  return {
    name: def.name,
    torch: def.torch,
    description: def.description,
    step_route: def.name === 'adam' ? '/v1/adam/step' : `/v1/${def.name}/step`,
    sparse_gradients: def.sparse ?? 'no',
    hyperparams: Object.fromEntries(
      Object.entries(def.hyperparams).map(([k, d]) => {
        const bounds =
          d.type === 'number'
            ? {
                ...(d.min === undefined ? {} : d.minExclusive ? { exclusiveMinimum: d.min } : { minimum: d.min }),
                ...(d.max === undefined ? {} : d.maxExclusive ? { exclusiveMaximum: d.max } : { maximum: d.max }),
              }
            : {};
        const type = d.type === 'enum' ? 'string' : d.type === 'number' && d.integer ? 'integer' : d.type;
        const values = d.type === 'enum' ? { enum: [...d.values] } : {};
        return [k, { type, ...values, ...(d.default === undefined ? {} : { default: d.default }), required: d.default === undefined, ...bounds, description: d.description }];
      }),
    ),
    state: {
      step: def.stepCounter,
      slots: def.slots.map((s) => ({ name: s.name, description: s.description })),
      scalars: def.scalars.map((s) => ({ name: s.name, description: s.description, initial: s.initial })),
    },
    // What one hosted optimizer holds: MAX_HOSTED_BYTES over params, the gradient buffer and every slot.
    hosted_max_elements: {
      float32: maxHostedElements(limits, 'float32', hostedArrays(def.slots.length)),
      float64: maxHostedElements(limits, 'float64', hostedArrays(def.slots.length)),
    },
  };
}

export const listAlgorithmsHandler = (c: Context<AppEnv>) => c.json({ algorithms: OPTIMIZERS.map((d) => describeAlgorithm(d, c.get('limits'))) }, 200);

export const getAlgorithmHandler = (c: Context<AppEnv>) => {
  const name = c.req.param('name')!;
  const def = optimizerDef(name);
  if (!def) {
    throw new ProblemError(404, 'not-found', `no optimizer is named "${name}"; the optimizers are ${OPTIMIZERS.map((d) => d.name).join(', ')}`, [
      fieldError(['name'], `must be one of ${OPTIMIZERS.map((d) => d.name).join(', ')}`, name),
    ]);
  }
  return c.json(describeAlgorithm(def, c.get('limits')), 200);
};
