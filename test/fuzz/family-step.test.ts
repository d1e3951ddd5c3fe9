// Property-based fuzzing of every registry optimizer's stateless step, POST /v1/{optimizer}/step
// (AdamW, SGD, RMSprop, Adagrad, Adamax, NAdam, RAdam, Adadelta, Lion, Muon; Adam has
// test/fuzz/stateless-step):
// - any valid request (hyperparameters anywhere in their documented range, edge values, torch's
//   `betas` spelling, sent state or none, names of every kind), in JSON written any way or in
//   safetensors, is answered with the reference step bit for bit, or the 422 the reference predicts
//   (float32 overflow of an input, a missing slot or scalar, a negative second moment, torch's
//   constructor rules, a non-finite result);
// - the same request with one field made wrong is a small 4xx problem, never a 5xx;
// - torch 1.13's own steps (test/fixtures/optim), sampled, in either format and any spelling, bit
//   for bit.
// The reference of the random property is the optimizer's JavaScript step (src/optim/<name>),
// which the server runs too: that property checks everything around the kernel (decoding,
// defaults, state rules, encoding); the torch property checks the kernel. Seeds: test/helpers/fuzz.ts.

import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { initState, stepTensors, type Dtype, type FloatArray, type HyperparamDef, type OptimizerDef, type OptimizerState } from '../../src/optim/optimizer.ts';
import { OPTIMIZERS } from '../../src/optim/registry.ts';
import adadeltaCases from '../fixtures/optim/adadelta.json';
import adagradCases from '../fixtures/optim/adagrad.json';
import adamaxCases from '../fixtures/optim/adamax.json';
import nadamCases from '../fixtures/optim/nadam.json';
import radamCases from '../fixtures/optim/radam.json';
import rmspropCases from '../fixtures/optim/rmsprop.json';
import sgdCases from '../fixtures/optim/sgd.json';
import {
  Obj,
  Raw,
  badNumberText,
  dottedNames,
  finite,
  leavesOf,
  nonNegative,
  parseOrder,
  setAt,
  stFile,
  tensorMutation,
  textStyle,
  treeFromJson,
  treeJson,
  treeOf,
  valuesFor,
  valuesOf,
  withValues,
  writeJson,
  wrongType,
  type Json,
  type StEntry,
  type TextStyle,
  type Tree,
} from '../helpers/arbitraries.ts';
import { PROPERTY_TIMEOUT_MS, expectBits, fuzz, readTree, reportCases, sendSane, type Answer } from '../helpers/fuzz.ts';
import { decodeValues, encodeValues, readSafetensors } from '../helpers/safetensors.ts';

afterAll(() => reportCases('family-step'));

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;
type Hp = Record<string, number | boolean>;

// SparseAdam steps sparse row gradients, which this model of a request does not write: not fuzzed here.
const FAMILY = OPTIMIZERS.filter((d) => d.name !== 'adam' && d.name !== 'sparse_adam') as AnyDef[];
const ST = 'application/vnd.safetensors';
const JSON_TYPE = { 'content-type': 'application/json' };
const stepPath = (def: AnyDef) => `/v1/${def.name}/step`;

// ---------------------------------------------------------------------------------------------
// the model of a request, and its reference answer
// ---------------------------------------------------------------------------------------------

interface FamilyCase {
  def: AnyDef;
  dtype: Dtype;
  sendDtype: boolean;
  /** Hyperparameters sent (the rest default); `lr` may be absent (SGD then needs a schedule). */
  hp: Hp;
  /** Send beta1/beta2 as torch's `betas: [beta1, beta2]`. */
  betas: boolean;
  /** A constant schedule's rate (hyperparams.lr is then not sent). */
  scheduleLr: number | null;
  params: Tree;
  grads: number[];
  /** Sent state: step, slots (absent ones left out, or null when `nulls`), scalars (absent: left out). */
  state: { step: number; slots: Record<string, number[] | null>; scalars: Record<string, number | undefined> } | null;
  order: number;
}

/** Values of one number hyperparameter: its bounds and just inside them, its default, ordinary and huge values. */
function numberArb(d: Extract<HyperparamDef, { type: 'number' }>): fc.Arbitrary<number> {
  const min = d.min ?? -1e300;
  const max = d.max ?? 1e300;
  const edges = [d.default, d.min, d.max, 0, 1e-8, 0.5, 0.9, 1, 10, 1e10, 1e38, 1e300, Number.MIN_VALUE, 1 - 2 ** -53]
    .filter((x): x is number => x !== undefined)
    .filter((x) => (d.minExclusive ? x > min : x >= min) && (d.maxExclusive ? x < max : x <= max))
    .filter((x) => !d.integer || Number.isInteger(x));
  const inRange = fc.double({ min: Math.max(min, -10), max: Math.min(max, 10), minExcluded: d.minExclusive, maxExcluded: d.maxExclusive, noNaN: true });
  // -0 would be written "0" in __metadata__ and the query; JSON bodies get -0 from number spellings.
  return fc.oneof(fc.constantFrom(...edges), d.integer ? inRange.map(Math.round) : inRange).map((x) => (x === 0 ? 0 : x));
}

function hyperparamsArb(def: AnyDef): fc.Arbitrary<Hp> {
  const fields = Object.fromEntries(
    Object.entries(def.hyperparams as Record<string, HyperparamDef>).map(([k, d]) => [k, d.type === 'boolean' ? fc.boolean() : d.type === 'number' ? numberArb(d) : fc.constantFrom(...d.values)]),
  );
  return fc.record(fields, { requiredKeys: [] }) as fc.Arbitrary<Hp>;
}

const stepCountArb = (def: AnyDef) =>
  fc.oneof(fc.constantFrom(0, 1, 2, 10, 2 ** 24 - 1, 2 ** 24, ...(def.stepCounter === 'float32' ? [] : [2 ** 40, Number.MAX_SAFE_INTEGER - 1])), fc.integer({ min: 0, max: 1000 }));

/** An optimizer definition that prints as its name in fast-check's counterexamples. */
const named = (def: AnyDef): AnyDef => Object.assign(Object.create(def) as AnyDef, { [fc.toStringMethod]: () => `<${def.name}>` });

/** Matrices (and a name or two), for optimizers that step 2-D tensors only (Muon). */
const matrices = fc
  .uniqueArray(fc.tuple(fc.constantFrom('w', 'fc.weight', 'é', '__proto__', '0'), fc.tuple(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 5 }))), { selector: ([n]) => n, minLength: 1, maxLength: 2 })
  .chain((named) =>
    fc.tuple(...named.map(([n, [r, k]]) => fc.array(finite, { minLength: r * k, maxLength: r * k }).map((values): [string, Tree] => [n, { kind: 'tensor', shape: [r, k], values }]))).map((entries): Tree => ({ kind: 'named', entries: parseOrder(entries) })),
  );

function familyCaseOf(tree: fc.Arbitrary<Tree>, defs: AnyDef[] = FAMILY): fc.Arbitrary<FamilyCase> {
  return fc.constantFrom(...defs.map(named)).chain((def) =>
    fc
      .record({
        params: def.checkShape ? fc.oneof(tree, matrices, matrices) : tree,
        dtype: fc.constantFrom<Dtype>('float32', 'float64'),
        sendDtype: fc.boolean(),
        hp: hyperparamsArb(def),
        betas: fc.boolean(),
        schedule: fc.option(numberArb({ type: 'number', min: 0, description: '' }), { freq: 5 }),
        withState: fc.boolean(),
        step: stepCountArb(def),
        // Per slot and scalar: sent (0), left out (1) or null (2, slots only).
        drop: fc.array(fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constantFrom(1, 2) }), { minLength: 8, maxLength: 8 }),
        scalarValues: fc.array(fc.oneof(fc.double({ min: -2, max: 2, noNaN: true }), fc.constantFrom(1, 0, -0, 1e300)), { minLength: 4, maxLength: 4 }),
        order: fc.nat(),
      })
      .chain((c) =>
        fc
          .record({
            grads: valuesFor(c.params, finite),
            slots: fc.tuple(...def.slots.map((s) => valuesFor(c.params, s.nonNegative ? fc.oneof({ weight: 9, arbitrary: nonNegative }, { weight: 1, arbitrary: finite }) : finite))),
          })
          .map(({ grads, slots }): FamilyCase => {
            const hp = { ...c.hp };
            if (c.schedule !== null) delete hp.lr;
            let state: FamilyCase['state'] = null;
            if (c.withState) {
              const sentSlots: Record<string, number[] | null> = {};
              def.slots.forEach((s, i) => {
                if (c.drop[i] === 0) sentSlots[s.name] = slots[i]!;
                else if (c.drop[i] === 2) sentSlots[s.name] = null;
              });
              const scalars = Object.fromEntries(def.scalars.map((s, i) => [s.name, c.drop[7 - i] === 0 ? c.scalarValues[i] : undefined]));
              state = { step: c.step, slots: sentSlots, scalars };
            }
            return { def, dtype: c.dtype, sendDtype: c.sendDtype || c.dtype === 'float64', hp, betas: c.betas, scheduleLr: c.schedule, params: c.params, grads, state, order: c.order };
          }),
      ),
  );
}

const familyCase = familyCaseOf(treeOf(finite));

/** The JSON model of a case's request (fields in a permuted order). */
function familyBody(c: FamilyCase): Obj {
  const tree = (values: number[]) => treeJson(withValues(c.params, values), c.order);
  const fields: Array<[string, Json]> = [
    ['params', treeJson(c.params)],
    ['grads', tree(c.grads)],
  ];
  if (c.state) {
    const state: Array<[string, Json]> = [];
    if (c.state.step !== 0 || c.def.stepCounter !== 'none' || c.order % 2 === 0) state.push(['step', c.state.step]);
    for (const [k, v] of Object.entries(c.state.slots)) state.push([k, v === null ? null : tree(v)]);
    for (const [k, v] of Object.entries(c.state.scalars)) if (v !== undefined) state.push([k, v]);
    fields.push(['state', new Obj(state)]);
  }
  let hp = Object.entries(c.hp) as Array<[string, Json]>;
  if (c.betas && Object.hasOwn(c.hp, 'beta1') && Object.hasOwn(c.hp, 'beta2')) {
    hp = [...hp.filter(([k]) => k !== 'beta1' && k !== 'beta2'), ['betas', [c.hp.beta1 as number, c.hp.beta2 as number]]];
  }
  if (hp.length > 0 || c.order % 3 === 0) fields.push(['hyperparams', new Obj(hp)]);
  if (c.sendDtype) fields.push(['dtype', c.dtype]);
  if (c.scheduleLr !== null) fields.push(['schedule', new Obj([['type', 'constant'], ['lr', c.scheduleLr]])]);
  const k = c.order % fields.length;
  return new Obj([...fields.slice(k), ...fields.slice(0, k)]);
}

type Expected = { ok: true; lr: number; state: OptimizerState; params: FloatArray; kept: string[] } | { ok: false; why: string };

/** What the API must answer: torch's rules, then the optimizer's JavaScript step on the request's values. */
function reference(c: FamilyCase): Expected {
  const { def } = c;
  const f32 = c.dtype === 'float32';
  const hp: Hp = {};
  for (const [k, d] of Object.entries(def.hyperparams as Record<string, HyperparamDef>)) {
    const v = c.hp[k] ?? d.default;
    if (v !== undefined) hp[k] = v as number | boolean;
  }
  if (c.scheduleLr !== null) hp.lr = c.scheduleLr;
  if (hp.lr === undefined) return { ok: false, why: `${def.name} needs lr` };
  const rule = def.check?.(hp) ?? def.constructorCheck?.(hp);
  if (rule) return { ok: false, why: rule.message };
  for (const l of leavesOf(c.params)) {
    const refused = def.checkShape?.(l.shape);
    if (refused) return { ok: false, why: refused };
  }
  const typed = (values: number[], what: string): FloatArray | string => {
    const a = f32 ? Float32Array.from(values) : Float64Array.from(values);
    const i = a.findIndex((x) => !Number.isFinite(x));
    return i < 0 ? a : `${what}[${i}] = ${values[i]} is beyond float32`;
  };
  const params = typed(valuesOf(c.params), 'params');
  const grads = typed(c.grads, 'grads');
  if (typeof params === 'string') return { ok: false, why: params };
  if (typeof grads === 'string') return { ok: false, why: grads };
  const state = initState(def, hp, c.dtype, params.length);
  const unused = new Map<string, FloatArray>();
  // Every sent tensor must hold values of the dtype, even a slot these hyperparameters do not keep.
  for (const [k, v] of Object.entries(c.state?.slots ?? {})) {
    const a = v && typed(v, k);
    if (typeof a === 'string') return { ok: false, why: a };
  }
  if (c.state) {
    state.step = c.state.step;
    // The slots every configuration keeps (Adam's exp_avg and exp_avg_sq) come together at any step.
    const core = def.slots.filter((slot) => slot.present(hp) && slot.present({} as never) && slot.initial(hp) !== null);
    const sentCore = core.filter((slot) => (c.state!.slots[slot.name] ?? null) !== null);
    if (sentCore.length > 0 && sentCore.length < core.length) return { ok: false, why: 'half of the state' };
    for (const slot of def.slots) {
      const sent = c.state.slots[slot.name] ?? null;
      if (!slot.present(hp)) {
        // Sent while its option is off: kept as it is, unread (torch keeps the buffer when the option is turned off).
        if (sent === null) continue;
        const a = typed(sent, slot.name) as FloatArray;
        if (slot.nonNegative && a.some((x) => x < 0)) return { ok: false, why: `${slot.name} < 0` };
        unused.set(slot.name, a);
        continue;
      }
      if (sent === null) {
        if (slot.initial(hp) !== null && c.state.step > 0) return { ok: false, why: `${slot.name} is required with step > 0` };
        continue;
      }
      const a = typed(sent, slot.name);
      if (typeof a === 'string') return { ok: false, why: a };
      if (slot.nonNegative && a.some((x) => x < 0)) return { ok: false, why: `${slot.name} < 0` };
      state.slots[slot.name] = a;
    }
    for (const s of def.scalars) {
      const v = c.state.scalars[s.name];
      if (v === undefined) {
        if (c.state.step > 0) return { ok: false, why: `${s.name} is required with step > 0` };
      } else state.scalars[s.name] = v;
    }
  }
  const tensors = leavesOf(c.params).map((l) => ({ offset: l.offset, size: l.size, shape: l.shape }));
  stepTensors({ def, dtype: c.dtype, hp, params, grads, state, tensors });
  // A tree without tensors answers the slots it has (eager ones empty; a lazy one only when sent), so
  // its state can be sent back as it came.
  const kept = def.slots.filter((s) => s.present(hp) && (tensors.length > 0 || s.initial(hp) !== null || (c.state?.slots[s.name] ?? null) !== null)).map((s) => s.name);
  for (const [name, a] of unused) state.slots[name] = a;
  kept.push(...unused.keys());
  if ([params, ...kept.map((k) => state.slots[k]!)].some((a) => a.some((x) => !Number.isFinite(x)))) return { ok: false, why: 'a non-finite result' };
  if (Object.values(state.scalars).some((x) => !Number.isFinite(x))) return { ok: false, why: 'a non-finite scalar' };
  return { ok: true, lr: hp.lr as number, state, params, kept };
}

// ---------------------------------------------------------------------------------------------
// safetensors requests
// ---------------------------------------------------------------------------------------------

/** A tensor's name in a step file: `<slot>/<name>`, or the slot alone for the tensor named "". */
const slotName = (slot: string, name: string) => (name === '' ? slot : `${slot}/${name}`);

/** A named tree without names anywhere in it: a file of tensors cannot hold it. */
const hasEmptyObject = (tree: Tree): boolean => tree.kind === 'named' && (tree.entries.length === 0 || tree.entries.some(([, t]) => hasEmptyObject(t)));

/**
 * Whether a tree can travel as a step file: a tensor at least (a file needs params), no empty
 * object, distinct dotted names of at most 1,000 characters, none empty inside a named tree.
 */
function fileable(tree: Tree): boolean {
  const names = dottedNames(tree);
  // Names in files are capped (1,000 characters plus the slot prefix): a long nested name can exceed it once dotted.
  return names.every((n) => n.length <= 1000) && !hasEmptyObject(tree) && new Set(names).size === names.length && (tree.kind === 'tensor' || names.every((n) => n !== ''));
}

/** A case as a step file (its dtype's wire type), hyperparameters in `__metadata__` or the query. */
function familyFile(c: FamilyCase, hpInQuery: boolean, reversed: boolean): { bytes: Uint8Array; query: string } {
  const dt = c.dtype === 'float32' ? 'F32' : 'F64';
  const names = dottedNames(c.params);
  const leaves = leavesOf(c.params);
  const entries: StEntry[] = [];
  const slot = (name: string, values: number[]) =>
    leaves.forEach((leaf, i) => entries.push({ name: slotName(name, names[i]!), dtype: dt, shape: leaf.shape, data: encodeValues(values.slice(leaf.offset, leaf.offset + leaf.size), dt) }));
  slot('params', valuesOf(c.params));
  slot('grads', c.grads);
  const metadata: Record<string, string> = {};
  const query = new URLSearchParams();
  if (c.state) {
    metadata.step = String(c.state.step);
    for (const [k, v] of Object.entries(c.state.slots)) if (v) slot(k, v);
    for (const [k, v] of Object.entries(c.state.scalars)) if (v !== undefined) metadata[k] = Object.is(v, -0) ? '-0' : String(v);
  }
  if (reversed) entries.reverse();
  if (c.sendDtype) metadata.dtype = c.dtype;
  const numeric = Object.entries(c.hp).filter(([, v]) => typeof v === 'number');
  if (hpInQuery) for (const [k, v] of numeric) query.set(k, String(v));
  const inMeta = Object.fromEntries(Object.entries(c.hp).filter(([, v]) => !hpInQuery || typeof v !== 'number'));
  if (Object.keys(inMeta).length > 0) metadata.hyperparams = JSON.stringify(inMeta);
  if (c.scheduleLr !== null) metadata.schedule = JSON.stringify({ type: 'constant', lr: c.scheduleLr });
  const text = query.toString();
  return { bytes: stFile(entries, metadata), query: text === '' ? '' : `?${text}` };
}

// ---------------------------------------------------------------------------------------------
// comparing answers with the reference
// ---------------------------------------------------------------------------------------------

/** The tree a step file holds: its tensors under their dotted names (a bare tensor stays bare). */
function flatTree(tree: Tree): Tree {
  if (tree.kind === 'tensor') return tree;
  const values = valuesOf(tree);
  return { kind: 'named', entries: leavesOf(tree).map((l): [string, Tree] => [l.path.join('.'), { kind: 'tensor', shape: l.shape, values: values.slice(l.offset, l.offset + l.size) }]) };
}

function expectJsonAnswer(a: Answer, c: FamilyCase, like: Tree, want: Extract<Expected, { ok: true }>): void {
  const body = JSON.parse(a.text) as { params: unknown; state: Record<string, unknown>; lr: number };
  expect(Object.keys(body).sort()).toEqual(['lr', 'params', 'state']);
  expect(Object.is(body.lr, want.lr), `lr ${body.lr} vs ${want.lr}`).toBe(true);
  expect(Object.keys(body.state).sort(), 'state keys').toEqual(['step', ...want.kept, ...c.def.scalars.map((s) => s.name)].sort());
  expect(body.state.step, 'state.step').toBe(want.state.step);
  expectBits(readTree(body.params, like, 'params'), want.params, 'params');
  for (const k of want.kept) expectBits(readTree(body.state[k], like, `state.${k}`), want.state.slots[k]!, `state.${k}`);
  for (const s of c.def.scalars) expect(Object.is(body.state[s.name], want.state.scalars[s.name]), `state.${s.name}: ${String(body.state[s.name])} vs ${want.state.scalars[s.name]}`).toBe(true);
}

function expectSafetensorsAnswer(a: Answer, c: FamilyCase, want: Extract<Expected, { ok: true }>): void {
  const file = readSafetensors(a.bytes);
  expect(file.metadata?.step).toBe(String(want.state.step));
  expect(Object.is(Number(file.metadata?.lr), want.lr), `lr ${file.metadata?.lr} vs ${want.lr}`).toBe(true);
  for (const s of c.def.scalars) expect(Object.is(Number(file.metadata?.[s.name]), want.state.scalars[s.name]), s.name).toBe(true);
  const names = dottedNames(c.params);
  const leaves = leavesOf(c.params);
  const slots: Array<[string, FloatArray]> = [['params', want.params], ...want.kept.map((k) => [k, want.state.slots[k]!] as [string, FloatArray])];
  expect(file.tensors.size, 'tensor count').toBe(slots.length * leaves.length);
  for (const [slot, values] of slots) {
    leaves.forEach((leaf, i) => {
      const name = slotName(slot, names[i]!);
      const t = file.tensors.get(name);
      if (!t) expect.fail(`${name} missing from the answer`);
      expect(t.shape, `${name} shape`).toEqual(leaf.shape);
      expectBits(decodeValues(t), values.subarray(leaf.offset, leaf.offset + leaf.size), name);
    });
  }
}

/** `like`: the structure the answer has (a file's tensors come back under their dotted names). */
function expectAnswer(a: Answer, c: FamilyCase, like: Tree): void {
  const want = reference(c);
  if (a.status !== 200) {
    expect(a.status, `${c.def.name}: ${a.text.slice(0, 300)}; reference: ${want.ok ? 'ok' : want.why}`).toBe(want.ok ? 200 : 422);
    return;
  }
  if (!want.ok) expect.fail(`${c.def.name}: 200, but the reference refuses: ${want.why}`);
  if (a.type === ST) expectSafetensorsAnswer(a, c, want);
  else expectJsonAnswer(a, c, like, want);
}

// ---------------------------------------------------------------------------------------------
// properties
// ---------------------------------------------------------------------------------------------

describe('POST /v1/{optimizer}/step for every registry optimizer', () => {
  it('a valid request, in JSON written any way or in safetensors, is the reference step bit for bit, or the 422 the reference predicts', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(familyCase, textStyle, fc.constantFrom('json', 'json', 'safetensors'), fc.constantFrom('none', 'json', 'safetensors'), fc.boolean(), async (c, style, format, answer, flip) => {
        const accept: Record<string, string> = answer === 'none' ? {} : { accept: answer === 'json' ? 'application/json' : ST };
        let a: Answer;
        const file = format === 'safetensors' && fileable(c.params);
        if (file) {
          const { bytes, query } = familyFile(c, flip, style.dupes);
          a = await sendSane({ method: 'POST', path: stepPath(c.def) + query, headers: { 'content-type': ST, ...accept }, body: bytes });
          if (answer === 'none' && a.status === 200) expect(a.type, 'a safetensors body is answered in safetensors by default').toBe(ST);
        } else {
          a = await sendSane({ method: 'POST', path: stepPath(c.def), headers: { ...JSON_TYPE, ...accept }, body: writeJson(familyBody(c), style) });
        }
        expectAnswer(a, c, file ? flatTree(c.params) : c.params);
      }),
      1000,
    );
  });

  it('one field made wrong (type, range, missing, unknown, state, tensor, non-JSON number, nesting) is a small 4xx', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    // Tensors of at least one element, so that dropping one always breaks the request.
    const small = familyCaseOf(
      fc.array(fc.integer({ min: 1, max: 4 }), { maxLength: 3 }).chain((shape) => {
        const n = shape.reduce((a, b) => a * b, 1);
        return fc.array(fc.double({ min: -2, max: 2, noNaN: true }), { minLength: n, maxLength: n }).map((values): Tree => ({ kind: 'tensor', shape, values }));
      }),
    );
    const mutation = (def: AnyDef) => {
      const hpNames = Object.keys(def.hyperparams);
      const numbers = Object.entries(def.hyperparams as Record<string, HyperparamDef>).filter((e): e is [string, Extract<HyperparamDef, { type: 'number' }>] => e[1].type === 'number');
      const outside = numbers.flatMap(([k, d]): Array<[string, Json]> => [
        ...(d.min !== undefined ? [[k, d.minExclusive ? d.min : d.min - Math.max(1e-9, Math.abs(d.min) * 1e-9)] as [string, Json]] : []),
        ...(d.max !== undefined ? [[k, d.maxExclusive ? d.max : d.max + 1] as [string, Json]] : []),
        [k, new Raw('1e999')],
      ]);
      const slotNames = def.slots.map((s) => s.name);
      return fc.oneof(
        fc.tuple(fc.constantFrom(...hpNames), wrongType).filter(([k, v]) => typeof v !== 'boolean' || (def.hyperparams as Record<string, HyperparamDef>)[k]!.type !== 'boolean').map(([k, v]) => ({ what: `hyperparams.${k} = ${writeJson(v)}`, apply: (b: Json) => setAt(b, ['hyperparams', k], v) })),
        fc.constantFrom(...outside).map(([k, v]) => ({ what: `hyperparams.${k} = ${writeJson(v)}`, apply: (b: Json) => setAt(b, ['hyperparams', k], v) })),
        fc.constantFrom<Json>(-1, 0.5, Number.MAX_SAFE_INTEGER + 1, 1e308, '1', null, new Raw('1e999')).map((v) => ({ what: `state.step = ${writeJson(v)}`, apply: (b: Json) => setAt(b, ['state', 'step'], v) })),
        fc.tuple(fc.constantFrom(...(slotNames.length > 0 ? slotNames : ['step'])), fc.constantFrom<Json>(new Obj([['x', 1]]), [1, 2, 3, 4, 5], 'x', true)).map(([k, v]) => ({ what: `state.${k} = ${writeJson(v)}`, apply: (b: Json) => setAt(b, ['state', k], v) })),
        fc.constantFrom<Json>('float16', 'FLOAT32', '', 32, null).map((v) => ({ what: `dtype = ${writeJson(v)}`, apply: (b: Json) => setAt(b, ['dtype'], v) })),
        fc.constantFrom<string[]>(['params'], ['grads']).map((p) => ({ what: `no ${p.join('.')}`, apply: (b: Json) => setAt(b, p, undefined) })),
        fc.constantFrom<string[]>(['nope'], ['hyperparams', 'nope'], ['hyperparams', 'amsgrad_'], ['state', 'exp_avg_'], ['state', 'm'], ['__proto__'], ['constructor'], ['hyperparams', '__proto__'], ['state', 'constructor']).map((p) => ({
          what: `unknown field ${p.join('.')}`,
          apply: (b: Json) => setAt(b, p, 1),
        })),
        ...(Object.hasOwn(def.hyperparams, 'beta1')
          ? [fc.constantFrom<Json>([0.9], [0.9, 0.99, 0.999], 'x', [0.9, '0.99'], [1, 0.5]).map((v) => ({ what: `betas = ${writeJson(v)}`, apply: (b: Json) => setAt(b, ['hyperparams', 'betas'], v) }))]
          : []),
        tensorMutation([['params'], ['grads']]).map((f) => ({ what: 'a tensor broken', apply: f })),
        fc.constantFrom<[string, Json]>(['metrics', [1, 2]], ['schedule', new Obj([['type', 'nope']])], ['hyperparams', 1], ['state', [1]]).map(([k, v]) => ({ what: `${k} = ${writeJson(v)}`, apply: (b: Json) => setAt(b, [k], v) })),
        fc.constant({ what: 'schedule and hyperparams.lr', apply: (b: Json) => setAt(setAt(b, ['hyperparams', 'lr'], 0.1), ['schedule'], new Obj([['type', 'constant'], ['lr', 0.1]])) }),
        fc.integer({ min: 81, max: 3000 }).map((d) => ({ what: `grads nested ${d} deep`, apply: (b: Json) => setAt(b, ['grads'], new Raw('['.repeat(d) + ']'.repeat(d))) })),
        fc.tuple(badNumberText, fc.constantFrom<string[]>(['hyperparams', 'lr'], ['state', 'step'])).map(([t, p]) => ({ what: `${p.join('.')} = ${t}`, apply: (b: Json) => setAt(b, p, new Raw(t)) })),
        fc.constantFrom<Json>([], 1, 'x', null, true, new Raw(''), new Raw('{'), new Raw('{"params": [1], "grads": [1]} x')).map((v) => ({ what: `body ${writeJson(v)}`, apply: () => v })),
      );
    };
    await fuzz(
      fc.asyncProperty(
        small.chain((c) => fc.tuple(fc.constant(c), mutation(c.def))),
        textStyle,
        async ([c, m], style: TextStyle) => {
          const body = m.apply(familyBody(c));
          const a = await sendSane({ method: 'POST', path: stepPath(c.def), headers: JSON_TYPE, body: writeJson(body, style) });
          expect(a.status, `${c.def.name}, ${m.what}: ${a.text.slice(0, 300)}`).toBeGreaterThanOrEqual(400);
        },
      ),
      500,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// torch's own steps
// ---------------------------------------------------------------------------------------------

interface FixtureCase {
  name: string;
  optimizer: string;
  dtype: Dtype;
  hyperparams: Hp;
  params: unknown;
  state: Record<string, unknown> | null;
  grads: unknown[];
  expected: Array<{ step_index: number; params: unknown; state: Record<string, unknown> }>;
}

const FILES = { sgd: sgdCases, rmsprop: rmspropCases, adagrad: adagradCases, adamax: adamaxCases, nadam: nadamCases, radam: radamCases, adadelta: adadeltaCases } as unknown as Record<string, { cases: FixtureCase[] }>;

/** Every (input, torch output) pair of one step: from the start, or between two recorded steps. */
const torchSteps = Object.values(FILES).flatMap(({ cases }) =>
  cases.flatMap((c) => {
    const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
    return c.expected.flatMap((out) => {
      const before = out.step_index === 0 ? { params: c.params, state: c.state } : byIndex.get(out.step_index - 1);
      return before ? [{ c, params: before.params, state: before.state, grads: c.grads[out.step_index], out }] : [];
    });
  }),
);

/** torch's state without what it keeps as None (the API leaves such slots out). */
const present = (state: Record<string, unknown>) => Object.entries(state).filter(([, v]) => v !== null && !(Array.isArray(v) && v.flat(Infinity).some((x) => x === null)));

describe('torch fixtures of every registry optimizer, sampled, in either format and any spelling', () => {
  it(`${torchSteps.length} recorded torch 1.13 steps, bit for bit`, { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(fc.constantFrom(...torchSteps), textStyle, fc.constantFrom('json', 'safetensors'), fc.boolean(), async (s, style, format, answerBinary) => {
        const def = FAMILY.find((d) => d.name === s.c.optimizer)!;
        const params = treeFromJson(s.params);
        const values = (tree: unknown) => valuesOf(treeFromJson(tree));
        const slots: Record<string, number[]> = {};
        const scalars: Record<string, number> = {};
        let step = 0;
        for (const [k, v] of present(s.state ?? {})) {
          if (k === 'step') step = v as number;
          else if (typeof v === 'number') scalars[k] = v;
          else slots[k] = values(v);
        }
        const c: FamilyCase = {
          def,
          dtype: s.c.dtype,
          sendDtype: true,
          hp: /defaults/.test(s.c.name) ? (def.name === 'sgd' ? { lr: s.c.hyperparams.lr! } : {}) : s.c.hyperparams,
          betas: style.dupes,
          scheduleLr: null,
          params,
          grads: values(s.grads),
          state: s.state ? { step, slots, scalars } : null,
          order: style.seed,
        };
        const accept: Record<string, string> = answerBinary ? { accept: ST } : {};
        const file = format === 'safetensors' && fileable(params);
        const a =
          file
            ? await (async () => {
                const { bytes, query } = familyFile(c, style.space !== '', style.dupes);
                return sendSane({ method: 'POST', path: stepPath(def) + query, headers: { 'content-type': ST, ...accept }, body: bytes });
              })()
            : await sendSane({ method: 'POST', path: stepPath(def), headers: { ...JSON_TYPE, ...accept }, body: writeJson(familyBody(c), style) });
        expect(a.status, `${s.c.name}: ${a.text.slice(0, 300)}`).toBe(200);
        const torchState = Object.fromEntries(present(s.out.state));
        const got = (slot: string): number[] => {
          if (a.type === ST) {
            const file = readSafetensors(a.bytes);
            return dottedNames(params).flatMap((n) => decodeValues(file.tensors.get(slotName(slot, n))!));
          }
          const body = JSON.parse(a.text) as { params: unknown; state: Record<string, unknown> };
          return readTree(slot === 'params' ? body.params : body.state[slot], file ? flatTree(params) : params, slot);
        };
        const where = `${s.c.name} step ${s.out.step_index}`;
        expectBits(got('params'), values(s.out.params), `${where} params`);
        const answered = a.type === ST ? readSafetensors(a.bytes).metadata! : (JSON.parse(a.text) as { state: Record<string, unknown> }).state;
        for (const [k, v] of Object.entries(torchState)) {
          if (typeof v !== 'number') expectBits(got(k), values(v), `${where} ${k}`);
          // torch's step and scalars (NAdam's mu_product): the same numbers; SGD keeps no step.
          else expect(Object.is(Number(answered[k]), v), `${where} ${k}: ${String(answered[k])} vs torch ${v}`).toBe(true);
        }
      }),
      700,
    );
  });
});
