// Property-based fuzzing of the stateless step, POST /v1/adam/step, in JSON and safetensors:
// - any valid request, written any way (number spellings, whitespace, duplicate keys, key order),
//   is answered with the reference step bit for bit, or with the 422 the reference predicts
//   (float32 overflow of an input, negative second moments, a non-finite result);
// - the same request with one field made wrong is a small 4xx problem, never a 5xx;
// - junk headers around a valid body get a sane answer, and any 200 is still the reference step;
// - a valid safetensors file equals the JSON step on the same values; a broken one is a 4xx;
// - torch 1.13's own steps (test/fixtures/adam), sampled, in any format and spelling, bit for bit.
// The reference is src/optim's JavaScript kernel (the server steps on the WebAssembly one), itself
// checked against the torch fixtures. Seeds and case counts: test/helpers/fuzz.ts.

import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { ADAM_DEFAULTS, adamStepInPlace, type AdamHyperparams, type Dtype, type FloatArray } from '../../src/optim/adam.ts';
import adam from '../fixtures/adam/adam.json';
import adamw from '../fixtures/adam/adamw.json';
import amsgrad from '../fixtures/adam/amsgrad.json';
import edge from '../fixtures/adam/edge.json';
import fromState from '../fixtures/adam/from_state.json';
import trajectories from '../fixtures/adam/trajectories.json';
import {
  Obj,
  Raw,
  accept,
  badNumberText,
  brokenSafetensors,
  contentEncoding,
  dottedNames,
  finite,
  halfBits,
  junkHeaders,
  leavesOf,
  nonNegative,
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
import { encodeValues, readSafetensors, decodeValues, type Dt } from '../helpers/safetensors.ts';

const STEP = '/v1/adam/step';
const JSON_TYPE = { 'content-type': 'application/json' };
const ST = 'application/vnd.safetensors';

afterAll(() => reportCases('stateless-step'));

// ---------------------------------------------------------------------------------------------
// the model of a request, and its reference answer
// ---------------------------------------------------------------------------------------------

type Schedule = { type: 'constant'; lr: number } | { type: 'step'; lr: number; step_size: number; gamma: number };

interface StepCase {
  dtype: Dtype;
  /** Whether `dtype` is sent (float32 is the default). */
  sendDtype: boolean;
  /** The hyperparameters sent (the rest default). */
  hp: Partial<AdamHyperparams>;
  schedule: Schedule | null;
  params: Tree;
  grads: number[];
  state: { step: number; m: number[]; v: number[]; vMax: number[] | null } | null;
  /** Permutes the names of grads and state trees, and the request's fields. */
  order: number;
}

const lrArb = fc.oneof(fc.constantFrom(0, 1e-3, 0.01, 0.1, 1, 10, 1e10, 1e38, 1e308, Number.MIN_VALUE), fc.double({ min: 0, max: 1, noNaN: true }));
const betaArb = fc.oneof(fc.constantFrom(0, 0.5, 0.9, 0.999, 1 - 2 ** -53, Number.MIN_VALUE), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }));
const nonNegArb = fc.oneof(fc.constantFrom(0, 1e-8, 1e-300, Number.MIN_VALUE, 1, 1e10, 1e300), fc.double({ min: 0, max: 1, noNaN: true }));

const hyperparamsArb: fc.Arbitrary<Partial<AdamHyperparams>> = fc.record(
  { lr: lrArb, beta1: betaArb, beta2: betaArb, eps: nonNegArb, weight_decay: nonNegArb, decoupled_weight_decay: fc.boolean(), amsgrad: fc.boolean(), maximize: fc.boolean() },
  { requiredKeys: [] },
);

const scheduleArb: fc.Arbitrary<Schedule> = fc.oneof(
  lrArb.map((lr) => ({ type: 'constant' as const, lr })),
  fc.record({ type: fc.constant('step' as const), lr: lrArb, step_size: fc.integer({ min: 1, max: 5 }), gamma: fc.double({ min: 1e-3, max: 2, noNaN: true }) }),
);

const stepCountArb = fc.oneof(fc.constantFrom(0, 1, 2, 10, 2 ** 24 - 1, 2 ** 24), fc.integer({ min: 0, max: 2 ** 24 }));

function stepCaseOf(tree: fc.Arbitrary<Tree>): fc.Arbitrary<StepCase> {
  return fc
    .record({ params: tree, dtype: fc.constantFrom<Dtype>('float32', 'float64'), sendDtype: fc.boolean(), hp: hyperparamsArb, schedule: fc.option(scheduleArb, { freq: 4 }), order: fc.nat(), withState: fc.boolean(), withVMax: fc.boolean(), step: stepCountArb })
    .chain((c) =>
      fc.record({ grads: valuesFor(c.params, finite), m: valuesFor(c.params, finite), v: valuesFor(c.params, nonNegative), vMax: valuesFor(c.params, nonNegative) }).map((t): StepCase => {
        const hp = { ...c.hp };
        if (c.schedule) delete hp.lr; // a schedule sets the rate: lr is then refused
        return {
          dtype: c.dtype,
          sendDtype: c.sendDtype || c.dtype === 'float64',
          hp,
          schedule: c.schedule,
          params: c.params,
          grads: t.grads,
          state: c.withState ? { step: c.step, m: t.m, v: t.v, vMax: c.withVMax ? t.vMax : null } : null,
          order: c.order,
        };
      }),
    );
}

const stepCase = stepCaseOf(treeOf(finite));

/** The request body of a case, as a JSON model (fields in a permuted order). */
function stepBody(c: StepCase): Obj {
  const tree = (values: number[]) => treeJson(withValues(c.params, values), c.order);
  const fields: Array<[string, Json]> = [
    ['params', treeJson(c.params)],
    ['grads', tree(c.grads)],
  ];
  if (c.state) {
    const state: Array<[string, Json]> = [['step', c.state.step], ['m', tree(c.state.m)], ['v', tree(c.state.v)]];
    if (c.state.vMax) state.push(['v_max', tree(c.state.vMax)]);
    fields.push(['state', new Obj(state)]);
  }
  if (Object.keys(c.hp).length > 0 || c.order % 3 === 0) fields.push(['hyperparams', new Obj(Object.entries(c.hp) as Array<[string, Json]>)]);
  if (c.sendDtype) fields.push(['dtype', c.dtype]);
  if (c.schedule) fields.push(['schedule', new Obj(Object.entries(c.schedule) as Array<[string, Json]>)]);
  const k = c.order % fields.length;
  return new Obj([...fields.slice(k), ...fields.slice(0, k)]);
}

/** Numbers of a JSON model replaced by 0. */
const zerosLike = (v: Json): Json => (typeof v === 'number' ? 0 : Array.isArray(v) ? v.map(zerosLike) : v instanceof Obj ? new Obj(v.entries.map(([k, c]) => [k, zerosLike(c)])) : v);

/** A body with a valid fresh state, so that mutations inside `state` have something to break. */
function withState(body: Json): Json {
  if (!(body instanceof Obj) || body.get('state') !== undefined) return body;
  const zeros = zerosLike(body.get('params') ?? 0);
  return setAt(setAt(body, ['hyperparams', 'amsgrad'], false), ['state'], new Obj([['step', 0], ['m', zeros], ['v', zeros]]));
}

/** torch 1.13's StepLR, recursively (get_lr multiplies the previous lr by gamma at each multiple of step_size). */
function scheduleLr(s: Schedule, step: number): number {
  if (s.type === 'constant') return s.lr;
  let lr = s.lr;
  for (let k = Math.floor(step / s.step_size); k > 0; k--) lr *= s.gamma;
  return lr;
}

type Expected =
  | { ok: true; lr: number; step: number; params: FloatArray; m: FloatArray; v: FloatArray; vMax: FloatArray | null }
  | { ok: false; why: string };

/** What the API must answer, computed with the JavaScript kernel on the values the request holds. */
function reference(c: StepCase): Expected {
  const hp = { ...ADAM_DEFAULTS, ...c.hp };
  const f32 = c.dtype === 'float32';
  const typed = (values: number[], what: string): FloatArray | string => {
    const a = f32 ? Float32Array.from(values) : Float64Array.from(values);
    const i = a.findIndex((x) => !Number.isFinite(x));
    return i < 0 ? a : `${what}[${i}] = ${values[i]} is beyond float32`;
  };
  const params = typed(valuesOf(c.params), 'params');
  const grads = typed(c.grads, 'grads');
  if (typeof params === 'string') return { ok: false, why: params };
  if (typeof grads === 'string') return { ok: false, why: grads };
  const n = params.length;
  const zeros = () => (f32 ? new Float32Array(n) : new Float64Array(n));
  let step = 0;
  let m: FloatArray = zeros();
  let v: FloatArray = zeros();
  let vMax: FloatArray | null = hp.amsgrad ? zeros() : null;
  if (c.state) {
    step = c.state.step;
    const sm = typed(c.state.m, 'm');
    const sv = typed(c.state.v, 'v');
    const sx = c.state.vMax ? typed(c.state.vMax, 'v_max') : null;
    for (const a of [sm, sv, sx]) if (typeof a === 'string') return { ok: false, why: a };
    m = sm as FloatArray;
    v = sv as FloatArray;
    // A v_max sent without amsgrad is kept, unread (torch keeps max_exp_avg_sq when amsgrad is turned off).
    if (sx) vMax = sx as FloatArray;
    else if (hp.amsgrad && step > 0) return { ok: false, why: 'amsgrad with step > 0 needs v_max' };
    if (v.some((x) => x < 0) || (vMax && vMax.some((x) => x < 0))) return { ok: false, why: 'a negative second moment' };
  }
  const lr = c.schedule ? scheduleLr(c.schedule, step) : hp.lr;
  if (!Number.isFinite(lr)) return { ok: false, why: `the schedule's lr ${lr}` };
  const state = { step, m, v, vMax: hp.amsgrad ? vMax : null };
  adamStepInPlace({ dtype: c.dtype, hyperparams: { ...hp, lr }, params, grads, state }, null); // null: the JavaScript kernel
  if ([params, m, v].some((a) => a.some((x) => !Number.isFinite(x)))) return { ok: false, why: 'a non-finite result' };
  return { ok: true, lr, step: state.step, params, m, v, vMax };
}

// ---------------------------------------------------------------------------------------------
// comparing answers with the reference
// ---------------------------------------------------------------------------------------------

/** A 200 JSON answer against the reference, bit for bit (float32 values are exact doubles of the float32s). */
function expectJsonAnswer(a: Answer, like: Tree, want: Extract<Expected, { ok: true }>): void {
  const body = JSON.parse(a.text) as { params: unknown; state: { step: number; m: unknown; v: unknown; v_max?: unknown }; lr: number };
  expect(Object.keys(body).sort()).toEqual(['lr', 'params', 'state']);
  expect(Object.is(body.lr, want.lr), `lr ${body.lr} vs ${want.lr}`).toBe(true);
  expect(body.state.step).toBe(want.step);
  expectBits(readTree(body.params, like, 'params'), want.params, 'params');
  expectBits(readTree(body.state.m, like, 'state.m'), want.m, 'state.m');
  expectBits(readTree(body.state.v, like, 'state.v'), want.v, 'state.v');
  if (want.vMax) expectBits(readTree(body.state.v_max, like, 'state.v_max'), want.vMax, 'state.v_max');
  else expect(body.state.v_max).toBeUndefined();
}

/** A tensor's name in a step file: `<slot>/<name>`, or the slot alone for the tensor named "". */
const slotName = (slot: string, name: string) => (name === '' ? slot : `${slot}/${name}`);

/** A 200 safetensors answer against the reference: `params/<dotted name>` and torch's state names. */
function expectSafetensorsAnswer(a: Answer, like: Tree, want: Extract<Expected, { ok: true }>): void {
  const file = readSafetensors(a.bytes);
  expect(file.metadata?.step).toBe(String(want.step));
  expect(Object.is(Number(file.metadata?.lr), want.lr)).toBe(true);
  const names = dottedNames(like);
  const slots: Array<[string, FloatArray | null]> = [['params', want.params], ['exp_avg', want.m], ['exp_avg_sq', want.v], ['max_exp_avg_sq', want.vMax]];
  const leaves = leavesOf(like);
  for (const [slot, values] of slots) {
    if (!values) {
      expect([...file.tensors.keys()].some((k) => k.startsWith(slot)), `no ${slot}`).toBe(false);
      continue;
    }
    leaves.forEach((leaf, i) => {
      const name = slotName(slot, names[i]!);
      const t = file.tensors.get(name);
      if (!t) expect.fail(`${name} missing from the answer`);
      expect(t.shape, `${name} shape`).toEqual(leaf.shape);
      expectBits(decodeValues(t), values.subarray(leaf.offset, leaf.offset + leaf.size), name);
    });
  }
}

/** Any answer to a request whose body is the case: the reference's 200 (in either format) or 422, or a 4xx that headers explain. */
function expectAnswer(a: Answer, c: StepCase, like: Tree, strict: boolean): void {
  const want = reference(c);
  if (a.status === 200) {
    if (!want.ok) expect.fail(`200, but the reference refuses: ${want.why}`);
    if (a.type === ST) expectSafetensorsAnswer(a, like, want);
    else expectJsonAnswer(a, like, want);
    return;
  }
  if (strict) {
    expect(a.status, `${a.text.slice(0, 300)}; reference: ${want.ok ? 'ok' : want.why}`).toBe(want.ok ? 200 : 422);
  }
}

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

describe('POST /v1/adam/step with a JSON body', () => {
  it('a valid request, written any way, is the reference step bit for bit, or the 422 the reference predicts', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(stepCase, textStyle, async (c, style) => {
        const req = { method: 'POST', path: STEP, headers: JSON_TYPE, body: writeJson(stepBody(c), style) };
        expectAnswer(await sendSane(req), c, c.params, true);
      }),
      1500,
    );
  });

  /** `body` with each null gradient that stands for a whole params tensor (a frozen one) replaced by "x". */
  const unfreeze = (body: Json): Json => {
    const own = (o: Json | undefined, k: string) => (o instanceof Obj ? o.get(k) : undefined);
    const walk = (g: Json | undefined, p: Json | undefined): Json | undefined => {
      if (g === null && p !== undefined && !(p instanceof Obj)) return 'x';
      if (g instanceof Obj && p instanceof Obj) return new Obj(g.entries.map(([k, v]) => [k, walk(v, own(p, k)) as Json]));
      return g;
    };
    const grads = own(body, 'grads');
    return grads === undefined ? body : setAt(body, ['grads'], walk(grads, own(body, 'params')));
  };

  it('one field made wrong (type, range, missing, unknown, tensor shape or element, non-JSON number, nesting) is a small 4xx', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    const BOOLEAN_FIELDS = ['decoupled_weight_decay', 'amsgrad', 'maximize'];
    const hpField = fc.constantFrom('lr', 'beta1', 'beta2', 'eps', 'weight_decay', 'decoupled_weight_decay', 'amsgrad', 'maximize');
    const outOfRange = fc.constantFrom<[string, Json]>(
      ['lr', -1], ['lr', -Number.MIN_VALUE], ['lr', new Raw('1e999')], ['beta1', 1], ['beta1', 1.5], ['beta1', -0.1], ['beta2', 1], ['beta2', -1e-300],
      ['eps', -1e-8], ['weight_decay', -1], ['lr', new Raw('NaN')], ['beta2', new Raw('Infinity')],
    );
    const mutation = fc.oneof(
      fc.tuple(hpField, wrongType).filter(([k, v]) => typeof v !== 'boolean' || !BOOLEAN_FIELDS.includes(k)).map(([k, v]) => ({ what: `hyperparams.${k} = ${writeJson(v)}`, apply: (b: Json) => setAt(b, ['hyperparams', k], v) })),
      outOfRange.map(([k, v]) => ({ what: `hyperparams.${k} = ${writeJson(v)}`, apply: (b: Json) => setAt(b, ['hyperparams', k], v) })),
      fc.constantFrom<Json>(-1, 0.5, 2 ** 24 + 1, 1e308, '1', null, new Raw('1e999')).map((v) => ({ what: `state.step = ${writeJson(v)}`, apply: (b: Json) => setAt(withState(b), ['state', 'step'], v) })),
      fc.constantFrom('m', 'v').map((k) => ({ what: `state.${k} broken`, apply: (b: Json) => setAt(withState(b), ['state', k], new Obj([['x', 1]])) })),
      fc.constantFrom<Json>('float16', 'FLOAT32', '', 32, null).map((v) => ({ what: `dtype = ${writeJson(v)}`, apply: (b: Json) => setAt(b, ['dtype'], v) })),
      fc.constantFrom<string[]>(['params'], ['grads'], ['state', 'm'], ['state', 'v'], ['state', 'step']).map((p) => ({ what: `no ${p.join('.')}`, apply: (b: Json) => setAt(withState(b), p, undefined) })),
      fc.constantFrom<string[]>(['nope'], ['hyperparams', 'momentum'], ['hyperparams', 'betas'], ['state', 'exp_avg'], ['__proto__'], ['constructor'], ['hyperparams', '__proto__']).map((p) => ({
        what: `unknown field ${p.join('.')}`,
        apply: (b: Json) => setAt(b, p, 1),
      })),
      // A null gradient where params has a tensor is a frozen tensor (valid): such mutations become junk text.
      tensorMutation([['params'], ['grads']]).map((f) => ({ what: 'a tensor broken', apply: (b: Json) => unfreeze(f(b)) })),
      fc.constantFrom<[string, Json]>(['metrics', [1, 2]], ['schedule', new Obj([['type', 'nope']])], ['schedule', new Obj([['type', 'step'], ['lr', 0.1]])], ['hyperparams', 1], ['state', [1]]).map(([k, v]) => ({
        what: `${k} = ${writeJson(v)}`,
        apply: (b: Json) => setAt(b, [k], v),
      })),
      fc.constant({ what: 'schedule and hyperparams.lr', apply: (b: Json) => setAt(setAt(b, ['hyperparams', 'lr'], 0.1), ['schedule'], new Obj([['type', 'constant'], ['lr', 0.1]])) }),
      fc.integer({ min: 81, max: 3000 }).map((d) => ({ what: `params nested ${d} deep`, apply: (b: Json) => setAt(b, ['params'], new Raw('['.repeat(d) + ']'.repeat(d))) })),
      fc.tuple(badNumberText, fc.constantFrom<string[]>(['hyperparams', 'lr'], ['state', 'step'])).map(([t, p]) => ({ what: `${p.join('.')} = ${t}`, apply: (b: Json) => setAt(b, p, new Raw(t)) })),
      fc.constantFrom<Json>([], 1, 'x', null, true, new Raw(''), new Raw('{'), new Raw('{"params": [1], "grads": [1]} x')).map((v) => ({ what: `body ${writeJson(v)}`, apply: () => v })),
    );
    await fuzz(
      fc.asyncProperty(stepCase, textStyle, mutation, async (c, style, m) => {
        const text = writeJson(m.apply(stepBody(c)), style);
        const a = await sendSane({ method: 'POST', path: STEP, headers: JSON_TYPE, body: text });
        expect(a.status, `${m.what}: ${a.text.slice(0, 300)}`).toBeGreaterThanOrEqual(400);
      }),
      1200,
    );
  });

  it('a truncated body is a small 400', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(stepCase, textStyle, fc.nat(), async (c, style, cut) => {
        const text = writeJson(stepBody(c), style);
        const a = await sendSane({ method: 'POST', path: STEP, headers: JSON_TYPE, body: text.slice(0, cut % text.length) });
        expect([400, 422], a.text.slice(0, 300)).toContain(a.status);
      }),
      200,
    );
  });

  it('junk headers around a valid body: a sane answer, and a 200 is still the reference step (JSON or safetensors)', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(stepCase, junkHeaders, async (c, headers) => {
        const a = await sendSane({ method: 'POST', path: STEP, headers, body: writeJson(stepBody(c)) });
        expectAnswer(a, c, c.params, false);
      }),
      500,
    );
  });

  it('the element limit: MAX_ELEMENTS elements pass, one more is a 413', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    const MAX = 250_000;
    await fuzz(
      fc.asyncProperty(fc.constantFrom(MAX, MAX + 1), fc.constantFrom<Dtype>('float32', 'float64'), fc.double({ min: -1, max: 1, noNaN: true }), async (n, dtype, x) => {
        const row = `[${new Array(n).fill(numberFor(x)).join(',')}]`;
        const body = `{"params":${row},"grads":${row},"dtype":"${dtype}"}`;
        const a = await sendSane({ method: 'POST', path: STEP, headers: JSON_TYPE, body });
        expect(a.status, a.text.slice(0, 200)).toBe(n > MAX ? 413 : 200);
      }),
      4,
    );
  });
});

const numberFor = (x: number) => JSON.stringify(x);

// ---------------------------------------------------------------------------------------------
// safetensors
// ---------------------------------------------------------------------------------------------

/** A step as a safetensors file: tensors of each slot in a wire type that fits, options in the metadata or the query. */
interface FileCase {
  c: StepCase;
  /** The flat tree the file names (one level of dotted names, or one unnamed tensor). */
  tree: Tree;
  types: Record<'params' | 'grads' | 'state', Dt>;
  dtypeIn: 'query' | 'metadata' | 'inferred';
  hpIn: 'query' | 'metadata';
  reversed: boolean;
  accept: 'json' | 'safetensors' | 'none';
}

const HALF: Dt[] = ['F16', 'BF16'];

/** The values a wire type can hold exactly: float32-rounded, or half floats from their bits. */
const valueOfType = (dt: Dt) =>
  dt === 'F64' ? finite : dt === 'F32' ? finite.map(Math.fround) : fc.integer({ min: 0, max: 0xffff }).map((b) => halfBits(b, dt as 'F16' | 'BF16')).filter(Number.isFinite);

const fileCase: fc.Arbitrary<FileCase> = fc
  .record({
    dtype: fc.constantFrom<Dtype>('float32', 'float64'),
    flat: treeOf(finite, 1),
    paramsHalf: fc.boolean(),
    gradsType: fc.nat(),
    stateHalf: fc.boolean(),
    dtypeIn: fc.constantFrom('query' as const, 'metadata' as const, 'inferred' as const),
    hpIn: fc.constantFrom('query' as const, 'metadata' as const),
    reversed: fc.boolean(),
    accept: fc.constantFrom('json' as const, 'safetensors' as const, 'none' as const),
    base: stepCaseOf(fc.constant({ kind: 'tensor', shape: [], values: [0] } as Tree)),
  })
  .chain((r) => {
    const wide: Dt = r.dtype === 'float32' ? 'F32' : 'F64';
    const narrower: Dt[] = r.dtype === 'float32' ? ['F32', ...HALF] : ['F64', 'F32', ...HALF];
    const types = { params: r.paramsHalf ? 'BF16' : wide, grads: narrower[r.gradsType % narrower.length]!, state: r.stateHalf ? 'F16' : wide } as FileCase['types'];
    // An inferred float64 needs an F64 params tensor.
    if (r.dtypeIn === 'inferred' && r.dtype === 'float64') types.params = 'F64';
    // One unnamed tensor in an object ({"": t}) is, in a file, the unnamed tensor itself.
    const tree = r.flat.kind === 'named' && r.flat.entries.length === 1 && r.flat.entries[0]![0] === '' ? r.flat.entries[0]![1] : r.flat;
    return fc
      .record({ params: valuesFor(tree, valueOfType(types.params)), grads: valuesFor(tree, valueOfType(types.grads)), m: valuesFor(tree, valueOfType(types.state)), v: valuesFor(tree, valueOfType(types.state).map(Math.abs)), vMax: valuesFor(tree, valueOfType(types.state).map(Math.abs)) })
      .map((t): FileCase => {
        const b = r.base;
        const state = b.state ? { step: b.state.step, m: t.m, v: t.v, vMax: b.state.vMax ? t.vMax : null } : null;
        const c: StepCase = { ...b, dtype: r.dtype, params: withValues(tree, t.params), grads: t.grads, state, sendDtype: r.dtypeIn !== 'inferred' };
        return { c, tree: c.params, types, dtypeIn: r.dtypeIn, hpIn: r.hpIn, reversed: r.reversed, accept: r.accept };
      });
  });

/** The file and query of a file case. */
function stepFileOf(f: FileCase): { bytes: Uint8Array; query: string } {
  const { c } = f;
  const names = dottedNames(f.tree);
  const leaves = leavesOf(f.tree);
  const entries: StEntry[] = [];
  const slot = (name: string, values: number[], dt: Dt) =>
    leaves.forEach((leaf, i) => entries.push({ name: slotName(name, names[i]!), dtype: dt, shape: leaf.shape, data: encodeValues(values.slice(leaf.offset, leaf.offset + leaf.size), dt) }));
  slot('params', valuesOf(c.params), f.types.params);
  slot('grads', c.grads, f.types.grads);
  if (c.state) {
    slot('exp_avg', c.state.m, f.types.state);
    slot('exp_avg_sq', c.state.v, f.types.state);
    if (c.state.vMax) slot('max_exp_avg_sq', c.state.vMax, f.types.state);
  }
  if (f.reversed) entries.reverse();
  const metadata: Record<string, string> = {};
  const query = new URLSearchParams();
  if (c.state) metadata.step = String(c.state.step);
  if (f.dtypeIn === 'metadata') metadata.dtype = c.dtype;
  if (f.dtypeIn === 'query') query.set('dtype', c.dtype);
  if (f.hpIn === 'metadata') metadata.hyperparams = JSON.stringify(c.hp);
  else for (const [k, v] of Object.entries(c.hp)) query.set(k, String(v));
  if (c.schedule) metadata.schedule = JSON.stringify(c.schedule);
  const text = query.toString();
  return { bytes: stFile(entries, metadata), query: text === '' ? '' : `?${text}` };
}

/** Two safetensors answers hold the same tensors, bit for bit, and the same metadata (the order may differ). */
function sameFiles(a: Uint8Array, b: Uint8Array): void {
  const fa = readSafetensors(a);
  const fb = readSafetensors(b);
  expect(fa.metadata).toEqual(fb.metadata);
  expect([...fa.tensors.keys()].sort()).toEqual([...fb.tensors.keys()].sort());
  for (const [name, t] of fa.tensors) {
    const u = fb.tensors.get(name)!;
    expect({ dtype: u.dtype, shape: u.shape }, name).toEqual({ dtype: t.dtype, shape: t.shape });
    expect(u.data, name).toEqual(t.data);
  }
}

const acceptHeader = (f: FileCase): Record<string, string> => (f.accept === 'none' ? {} : { accept: f.accept === 'json' ? 'application/json' : ST });

describe('POST /v1/adam/step with a safetensors body', () => {
  it('a valid file is the reference step, and the same as the JSON step on the same values', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(fileCase, async (f) => {
        const { bytes, query } = stepFileOf(f);
        const a = await sendSane({ method: 'POST', path: STEP + query, headers: { 'content-type': ST, ...acceptHeader(f) }, body: bytes });
        const want = reference(f.c);
        // A file cannot hold no tensors (a tree of no tensors is an empty JSON object).
        const empty = leavesOf(f.tree).length === 0;
        expect(a.status, `${a.text.slice(0, 300)}; reference: ${want.ok ? 'ok' : want.why}`).toBe(want.ok && !empty ? 200 : 422);
        if (a.status !== 200) return;
        expectAnswer(a, f.c, f.tree, true);
        expect(a.type).toBe(f.accept === 'json' ? 'application/json' : ST);
        // The same values as JSON: the same numbers, bit for bit.
        const json = await sendSane({ method: 'POST', path: STEP, headers: { ...JSON_TYPE, accept: a.type }, body: writeJson(stepBody({ ...f.c, sendDtype: true })) });
        expect(json.status).toBe(200);
        if (a.type === ST) sameFiles(json.bytes, a.bytes);
        else expect(JSON.parse(json.text)).toEqual(JSON.parse(a.text));
      }),
      600,
    );
  });

  it('a broken file (header length, truncation, junk, bad header JSON, names, dtypes, shapes, offsets, metadata) is a small 4xx', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(
        fileCase.chain((f) => {
          const { bytes, query } = stepFileOf(f);
          const file = readSafetensors(bytes);
          const entries = file.order.map((n) => ({ ...file.tensors.get(n)!, dtype: file.tensors.get(n)!.dtype as string }));
          return brokenSafetensors(entries, file.metadata).map((broken) => ({ f, broken, query }));
        }),
        async ({ f, broken, query }) => {
          const a = await sendSane({ method: 'POST', path: STEP + query, headers: { 'content-type': ST, ...acceptHeader(f) }, body: broken.bytes });
          if (!broken.mayPass) expect(a.status, `${broken.what}: ${a.text.slice(0, 300)}`).toBeGreaterThanOrEqual(400);
        },
      ),
      600,
    );
  });

  it('random bytes, and junk content types and encodings around a valid file: a sane answer', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(
        fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ minLength: 8, maxLength: 300 }).map((b) => (b.set([b[0]! % 64, 0, 0, 0, 0, 0, 0, 0]), b))),
        fileCase,
        fc.constantFrom(ST, 'application/vnd.safetensors; charset=utf-8', 'application/octet-stream'),
        contentEncoding,
        accept,
        async (random, f, type, encoding, acceptValue) => {
          await sendSane({ method: 'POST', path: STEP, headers: { 'content-type': type }, body: random });
          const { bytes, query } = stepFileOf(f);
          const a = await sendSane({ method: 'POST', path: STEP + query, headers: { 'content-type': type, 'content-encoding': encoding, accept: acceptValue }, body: bytes });
          if (a.status === 200) expectAnswer(a, f.c, f.tree, false);
        },
      ),
      300,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// torch's own steps
// ---------------------------------------------------------------------------------------------

interface FixtureState {
  step: number;
  m: unknown;
  v: unknown;
  v_max?: unknown;
}
interface FixtureCase {
  name: string;
  dtype: Dtype;
  hyperparams: AdamHyperparams;
  params: unknown;
  state: FixtureState | null;
  grads: unknown[];
  expected: Array<{ step_index: number; params: unknown; state: FixtureState }>;
}

/** Every (input, torch output) pair of one step in the fixtures: from the start, or between two recorded steps. */
const torchSteps = Object.values({ adam, adamw, amsgrad, edge, fromState, trajectories } as unknown as Record<string, { cases: FixtureCase[] }>).flatMap(({ cases }) =>
  cases.flatMap((c) => {
    const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
    return c.expected.flatMap((out) => {
      const before = out.step_index === 0 ? { params: c.params, state: c.state } : byIndex.get(out.step_index - 1);
      return before ? [{ c, params: before.params, state: before.state, grads: c.grads[out.step_index], out }] : [];
    });
  }),
);

describe('torch fixtures, sampled, in any format and spelling', () => {
  it(`${torchSteps.length} recorded torch 1.13 steps: float32 bit for bit, float64 within the documented 1e-12`, { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(fc.constantFrom(...torchSteps), textStyle, fc.constantFrom('json', 'safetensors'), fc.boolean(), async (s, style, format, answerBinary) => {
        const params = treeFromJson(s.params);
        const values = (tree: unknown) => valuesOf(treeFromJson(tree));
        const c: StepCase = {
          dtype: s.c.dtype,
          sendDtype: true,
          hp: s.c.hyperparams,
          schedule: null,
          params,
          grads: values(s.grads),
          state: s.state ? { step: s.state.step, m: values(s.state.m), v: values(s.state.v), vMax: s.state.v_max === undefined ? null : values(s.state.v_max) } : null,
          order: style.seed,
        };
        const headers: Record<string, string> = answerBinary ? { accept: ST } : {};
        const flat = params.kind === 'tensor' || params.entries.every(([, t]) => t.kind === 'tensor');
        let a: Answer;
        if (format === 'safetensors' && flat) {
          const dt: Dt = c.dtype === 'float32' ? 'F32' : 'F64';
          const { bytes, query } = stepFileOf({ c, tree: params, types: { params: dt, grads: dt, state: dt }, dtypeIn: 'metadata', hpIn: 'metadata', reversed: style.dupes, accept: 'none' });
          a = await sendSane({ method: 'POST', path: STEP + query, headers: { 'content-type': ST, ...headers }, body: bytes });
        } else {
          a = await sendSane({ method: 'POST', path: STEP, headers: { ...JSON_TYPE, ...headers }, body: writeJson(stepBody(c), style) });
        }
        expect(a.status, a.text.slice(0, 300)).toBe(200);
        const torch = {
          lr: s.c.hyperparams.lr,
          step: s.out.state.step,
          params: values(s.out.params),
          m: values(s.out.state.m),
          v: values(s.out.state.v),
          vMax: s.out.state.v_max === undefined ? null : values(s.out.state.v_max),
        };
        let got: { params: number[]; m: number[]; v: number[]; vMax: number[] | null };
        if (a.type === ST) {
          const file = readSafetensors(a.bytes);
          const names = dottedNames(params);
          const slotValues = (slot: string) => names.flatMap((n) => decodeValues(file.tensors.get(slotName(slot, n))!));
          got = { params: slotValues('params'), m: slotValues('exp_avg'), v: slotValues('exp_avg_sq'), vMax: file.tensors.has(slotName('max_exp_avg_sq', names[0]!)) ? slotValues('max_exp_avg_sq') : null };
        } else {
          const body = JSON.parse(a.text);
          got = { params: readTree(body.params, params, 'params'), m: readTree(body.state.m, params, 'm'), v: readTree(body.state.v, params, 'v'), vMax: body.state.v_max === undefined ? null : readTree(body.state.v_max, params, 'v_max') };
        }
        expect(got.vMax === null).toBe(torch.vMax === null);
        for (const k of ['params', 'm', 'v', 'vMax'] as const) {
          const g = got[k];
          const t = torch[k];
          if (!g || !t) continue;
          if (c.dtype === 'float32') expectBits(g, t, `${s.c.name} ${k}`);
          else {
            // README's float64 tolerances: |Δp| <= 1e-12·max(|p|, lr), |Δm| <= 1e-12·max(|m|, √v), |Δv| <= 1e-12·|v| + 1e-300.
            t.forEach((x, i) => {
              const scale = k === 'params' ? Math.max(Math.abs(x), s.c.hyperparams.lr) : k === 'm' ? Math.max(Math.abs(x), Math.sqrt(torch.v[i]!)) : Math.abs(x);
              expect(Math.abs(g[i]! - x), `${s.c.name} ${k}[${i}]: ${g[i]} vs torch ${x}`).toBeLessThanOrEqual(1e-12 * scale + 1e-300);
            });
          }
        }
      }),
      800,
    );
  });
});
