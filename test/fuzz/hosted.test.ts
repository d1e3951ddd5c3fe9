// Property-based fuzzing of hosted optimizers, on a fleet of them (named and bare tensors,
// float32 and float64, amsgrad, odd names, a step schedule, reduce_on_plateau, names that collide
// once dotted, params still to upload):
// - any request that is rejected (a broken gradient in any format, a wrong token, stale If-Match or
//   expected_step, a bad upload, snapshot, checkpoint or PATCH) is a small 4xx and leaves
//   GET /state and GET /params bit for bit as they were;
// - a gradient in any format (JSON written any way, raw float32/64, bfloat16, float16 from random
//   bits, safetensors in any order and types) is the reference step bit for bit, in the answer and in
//   the stored state, or the 4xx the reference predicts; a retried Idempotency-Key is replayed;
// - a PUT /state, PUT /params, PATCH or step with the token and one field replaced by anything
//   (or junk headers, or random bytes) is a sane answer, and when rejected changes nothing.
// The reference is src/optim's JavaScript kernel on the stored state. Seeds: test/helpers/fuzz.ts.

import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adamStepInPlace, type AdamHyperparams, type Dtype, type FloatArray } from '../../src/optim/adam.ts';
import {
  Obj,
  accept as junkAccept,
  anyJson,
  junkHeaders,
  badNumberText,
  brokenSafetensors,
  contentEncoding,
  contentType,
  finite,
  finite32,
  halfBits,
  headerText,
  nest,
  setAt,
  sizeOf,
  stFile,
  tensorMutation,
  textStyle,
  treeFromJson,
  treeFromShapes,
  treeJson,
  treeOf,
  valuesFor,
  valuesOf,
  withValues,
  writeJson,
  wrongType,
  type Json,
  type StEntry,
  type Tree,
} from '../helpers/arbitraries.ts';
import { PROPERTY_TIMEOUT_MS, expectUnchanged, fuzz, hostedBytes, reportCases, send, sendSane, type Answer, type HostedBytes, type Req } from '../helpers/fuzz.ts';
import { readSafetensors, decodeValues, type Dt } from '../helpers/safetensors.ts';

afterAll(() => reportCases('hosted'));

const ST = 'application/vnd.safetensors';
const RAW = 'application/octet-stream';
const JSON_TYPE = 'application/json';

interface LayoutEntry {
  name: string;
  shape: number[];
  offset: number;
  size: number;
}

/** One optimizer of the fleet and what the tests know of it (refreshed after every change of layout). */
interface Member {
  label: string;
  id: string;
  token: string;
  dtype: Dtype;
  layout: LayoutEntry[];
  size: number;
  /** The params' JSON structure (values are placeholders). */
  tree: Tree;
  complete: boolean;
  /** Two tensors share a dotted name: safetensors cannot name them. */
  collides: boolean;
  baseline: HostedBytes;
}

/** The fleet, as JSON texts (a literal `__proto__` key would set a JS object's prototype). */
const FLEET: Array<{ label: string; body: string; warm: number }> = [
  { label: 'named float32, amsgrad', body: '{"params":{"fc.weight":[[0.5,-0.25,0.125],[1,2,-3]],"fc.bias":[0.1,-0.1]},"hyperparams":{"lr":0.01,"amsgrad":true}}', warm: 2 },
  { label: 'bare float64, AdamW, maximize', body: '{"params":[1,-2,3,0,-0.5],"dtype":"float64","hyperparams":{"lr":0.1,"weight_decay":0.1,"decoupled_weight_decay":true,"maximize":true}}', warm: 1 },
  { label: 'odd names, step schedule', body: '{"params":{"__proto__":[1,2],"é€😀":[[1],[2]],"":3,"x":{"y":[4,5]},"0":[6]},"schedule":{"type":"step","lr":0.05,"step_size":2,"gamma":0.5}}', warm: 1 },
  { label: 'reduce_on_plateau', body: '{"params":{"w":[1,2,3,4]},"schedule":{"type":"reduce_on_plateau","lr":0.1,"patience":0,"factor":0.5}}', warm: 2 },
  { label: 'colliding dotted names', body: '{"params":{"a.b":[1],"a":{"b":[2,3]}},"hyperparams":{"lr":0.5}}', warm: 1 },
  { label: 'created by shapes, not uploaded', body: '{"shapes":{"w":[3],"b":[]},"hyperparams":{"lr":0.1}}', warm: 0 },
];

const fleet: Member[] = [];

const auth = (m: { token: string }, extra: Record<string, string> = {}) => ({ authorization: `Bearer ${m.token}`, ...extra });
const at = (m: { id: string }, path = '') => `/v1/optimizers/${m.id}${path}`;

/** Reads what a member is now (layout, dtype, upload status) and its bytes. */
async function refresh(m: Member): Promise<void> {
  const info = JSON.parse((await send({ method: 'GET', path: at(m), headers: auth(m) })).text);
  m.dtype = info.dtype;
  m.layout = info.layout;
  m.size = info.size;
  m.tree = treeFromShapes(info.shapes);
  m.complete = info.upload.complete;
  m.collides = new Set(info.layout.map((l: LayoutEntry) => l.name)).size !== info.layout.length;
  m.baseline = await hostedBytes(m);
}

beforeAll(async () => {
  for (const f of FLEET) {
    const created = await send({ method: 'POST', path: '/v1/optimizers', headers: { 'content-type': JSON_TYPE }, body: f.body });
    expect(created.status, created.text).toBe(201);
    const { id, token } = JSON.parse(created.text);
    const m = { label: f.label, id, token } as Member;
    await refresh(m);
    for (let k = 0; k < f.warm; k++) {
      const grads = treeJson(withValues(m.tree, valuesOf(m.tree).map((_, i) => Math.sin(i + k) / 2)));
      const r = await send({ method: 'POST', path: at(m, '/step'), headers: auth(m, { 'content-type': JSON_TYPE }), body: writeJson(new Obj([['grads', grads], ['loss', 1 / (k + 1)]])) });
      expect(r.status, r.text).toBe(200);
    }
    await refresh(m);
    fleet.push(m);
  }
});

// ---------------------------------------------------------------------------------------------
// the stored state and the reference step
// ---------------------------------------------------------------------------------------------

interface Snapshot {
  step: number;
  dtype: Dtype;
  hyperparams: AdamHyperparams;
  schedule: { type: string; lr?: number; step_size?: number; gamma?: number } | null;
  scheduler_state?: { lr: number } | null;
  params: unknown;
  m: unknown;
  v: unknown;
  v_max?: unknown;
}

/** Elements of a JSON tree in layout order (JSON.parse keeps the stored key order). */
const flat = (tree: unknown): number[] => (tree === undefined ? [] : valuesOf(treeFromJson(tree)));

const typed = (dtype: Dtype, values: ArrayLike<number>): FloatArray => (dtype === 'float32' ? Float32Array.from(values) : Float64Array.from(values));

function lrOf(s: Snapshot): number {
  const sch = s.schedule;
  if (!sch) return s.hyperparams.lr;
  if (sch.type === 'reduce_on_plateau') return s.scheduler_state!.lr;
  if (sch.type === 'step') return sch.lr! * sch.gamma! ** Math.floor(s.step / sch.step_size!);
  if (sch.type === 'constant') return sch.lr!;
  throw new Error(`no reference for schedule ${sch.type}`);
}

type Stepped = { ok: true; step: number; lr: number; params: FloatArray; m: FloatArray; v: FloatArray; vMax: FloatArray | null } | { ok: false; why: string };

/** The step the API must take from snapshot `s` with gradient values `grads` (already in the optimizer's dtype). */
function referenceStep(s: Snapshot, grads: FloatArray): Stepped {
  const lr = lrOf(s);
  if (!Number.isFinite(lr)) return { ok: false, why: `lr ${lr}` };
  const params = typed(s.dtype, flat(s.params));
  const m = typed(s.dtype, flat(s.m));
  const v = typed(s.dtype, flat(s.v));
  const vMax = s.hyperparams.amsgrad ? typed(s.dtype, flat(s.v_max)) : null;
  const state = { step: s.step, m, v, vMax };
  adamStepInPlace({ dtype: s.dtype, hyperparams: { ...s.hyperparams, lr }, params, grads, state }, null); // null: the JavaScript kernel
  if ([params, m, v].some((a) => a.some((x) => !Number.isFinite(x)))) return { ok: false, why: 'a non-finite result' };
  return { ok: true, step: state.step, lr, params, m, v, vMax };
}

function expectBits(actual: ArrayLike<number>, expected: ArrayLike<number>, where: string): void {
  expect(actual.length, `${where}: length`).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) if (!Object.is(actual[i], expected[i])) expect.fail(`${where}[${i}]: ${actual[i]}, the reference ${expected[i]}`);
}

// ---------------------------------------------------------------------------------------------
// gradients in every format
// ---------------------------------------------------------------------------------------------

type GradFormat = 'json' | 'raw' | 'raw-f32' | 'raw-bf16' | 'raw-f16' | 'safetensors';

/** Bytes of element values of a wire type from raw bits (any pattern: NaN and infinities included). */
function wireBytes(dt: Dt, bits: number[], count: number, offset = 0): Uint8Array {
  const size = { F16: 2, BF16: 2, F32: 4, F64: 8 }[dt];
  const out = new Uint8Array(count * size);
  const view = new DataView(out.buffer);
  for (let i = 0; i < count; i++) {
    const a = bits[(offset + i) * 2]! >>> 0;
    const b = bits[(offset + i) * 2 + 1]! >>> 0;
    if (size === 2) view.setUint16(i * 2, a & 0xffff, true);
    else if (size === 4) view.setUint32(i * 4, a, true);
    else {
      view.setUint32(i * 8, a, true);
      view.setUint32(i * 8 + 4, b, true);
    }
  }
  return out;
}

/** Values of wire bytes, exactly (half types through their bits). */
function wireValues(dt: Dt, bytes: Uint8Array): number[] {
  if (dt === 'F16' || dt === 'BF16') {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return Array.from({ length: bytes.length / 2 }, (_, i) => halfBits(view.getUint16(i * 2, true), dt));
  }
  return decodeValues({ name: '', dtype: dt, shape: [], data: bytes });
}

/** Random element bits, biased towards ordinary finite values (as float32 or float64 bit patterns). */
function elementBits(n: number, dt: Dt) {
  const ordinary = finite32.map((x) => {
    const view = new DataView(new ArrayBuffer(8));
    if (dt === 'F64') view.setFloat64(0, x, true);
    else if (dt === 'F32') view.setFloat32(0, x, true);
    else view.setUint16(0, dt === 'BF16' ? new Uint32Array(new Float32Array([x]).buffer)[0]! >>> 16 : 0x3c00 ^ (Math.abs(Math.round(x)) & 0x7fff), true);
    return [view.getUint32(0, true), view.getUint32(4, true)];
  });
  const random = fc.tuple(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }));
  return fc.array(fc.oneof({ weight: 6, arbitrary: ordinary }, { weight: 1, arbitrary: random }), { minLength: n, maxLength: n }).map((pairs) => pairs.flat());
}

interface GradCase {
  format: GradFormat;
  /** The request (query holds return, and loss/expected_step for binary bodies). */
  req: Req;
  /** The gradient as the optimizer reads it (its dtype), or why it is refused. */
  grads: FloatArray | string;
  returnParams: boolean;
  answer: 'json' | 'raw' | 'safetensors';
  loss: number | undefined;
  retry: boolean;
}

/** Choices for a gradient request to `m`: format, values and bits, loss, preconditions, Accept, return. */
function gradChoices(m: Member) {
  const own: Dt = m.dtype === 'float32' ? 'F32' : 'F64';
  const formats: GradFormat[] = m.dtype === 'float32' ? ['json', 'raw', 'raw-bf16', 'raw-f16', 'safetensors'] : ['json', 'raw', 'raw-f32', 'raw-bf16', 'raw-f16', 'safetensors'];
  const stTypes: Dt[] = m.dtype === 'float32' ? ['F32', 'BF16', 'F16'] : ['F64', 'F32', 'BF16', 'F16'];
  return fc.record({
    format: fc.constantFrom(...formats),
    values: valuesFor(m.tree, finite),
    bits: elementBits(m.size, own),
    halfBits: elementBits(m.size, 'BF16'),
    stTypes: fc.array(fc.constantFrom(...stTypes), { minLength: m.layout.length, maxLength: m.layout.length }),
    order: fc.nat(),
    style: textStyle,
    loss: fc.option(finite, { nil: undefined }),
    expected: fc.boolean(),
    ifMatch: fc.boolean(),
    idem: fc.option(fc.string({ unit: fc.constantFrom('a', 'b', '0', '-', '_'), minLength: 1, maxLength: 40 }), { nil: undefined }),
    accept: fc.constantFrom<Array<'none' | 'json' | 'raw' | 'safetensors' | 'any'>>('none', 'json', 'raw', 'safetensors', 'any'),
    returnParams: fc.boolean(),
    retry: fc.boolean(),
    reversed: fc.boolean(),
  });
}

type GradChoices = ReturnType<typeof gradChoices> extends fc.Arbitrary<infer T> ? T : never;

let idempotencyKeys = 0;

/** The request of `r` for `m` at snapshot `s` (its step for expected_step, `etag` for If-Match). */
function gradCase(m: Member, r: GradChoices, s: Snapshot, etag: string): GradCase {
  const own: Dt = m.dtype === 'float32' ? 'F32' : 'F64';
  const query = new URLSearchParams();
  if (!r.returnParams) query.set('return', 'none');
  const headers: Record<string, string> = auth(m);
  if (r.ifMatch) headers['if-match'] = etag;
  if (r.idem !== undefined) headers['idempotency-key'] = `${r.idem}-${++idempotencyKeys}`;
  if (r.accept !== 'none') headers.accept = { json: JSON_TYPE, raw: RAW, safetensors: ST, any: '*/*' }[r.accept];
  let body: Uint8Array | string;
  let grads: FloatArray | string;
  let bodyFormat: 'json' | 'raw' | 'safetensors';
  if (r.format === 'json') {
    bodyFormat = 'json';
    const fields: Array<[string, Json]> = [['grads', treeJson(withValues(m.tree, r.values), r.order)]];
    if (r.loss !== undefined) fields.push(['loss', r.loss]);
    if (r.expected) fields.push(['expected_step', s.step]);
    body = writeJson(new Obj(r.reversed ? fields.reverse() : fields), r.style);
    headers['content-type'] = JSON_TYPE;
    const g = typed(m.dtype, r.values);
    grads = g.some((x) => !Number.isFinite(x)) ? 'a gradient beyond float32' : g;
  } else {
    if (r.loss !== undefined) query.set('loss', String(r.loss));
    if (r.expected) query.set('expected_step', String(s.step));
    if (r.format === 'safetensors') {
      bodyFormat = 'safetensors';
      const entries: StEntry[] = m.layout.map((l, i) => ({ name: l.name, dtype: r.stTypes[i]!, shape: l.shape, data: wireBytes(r.stTypes[i]!, r.bits, l.size, l.offset) }));
      const values = new Array<number>(m.size);
      entries.forEach((e, i) => wireValues(e.dtype as Dt, e.data).forEach((x, k) => (values[m.layout[i]!.offset + k] = x)));
      body = stFile(r.reversed ? entries.slice().reverse() : entries);
      headers['content-type'] = ST;
      grads = m.collides ? 'a file cannot name colliding tensors' : values.some((x) => !Number.isFinite(x)) ? 'a non-finite gradient' : typed(m.dtype, values);
    } else {
      bodyFormat = 'raw';
      const dt: Dt = r.format === 'raw' ? own : r.format === 'raw-f32' ? 'F32' : r.format === 'raw-bf16' ? 'BF16' : 'F16';
      body = wireBytes(dt, dt === 'BF16' || dt === 'F16' ? r.halfBits : r.bits, m.size);
      headers['content-type'] = r.format === 'raw' ? RAW : `${RAW}; dtype=${{ F32: 'float32', BF16: 'bfloat16', F16: 'float16', F64: 'float64' }[dt]}`;
      const values = wireValues(dt, body);
      grads = values.some((x) => !Number.isFinite(x)) ? 'a non-finite gradient' : typed(m.dtype, values);
    }
  }
  const answer = r.accept === 'none' || r.accept === 'any' ? bodyFormat : r.accept;
  const q = query.toString();
  return { format: r.format, req: { method: 'POST', path: at(m, `/step${q ? `?${q}` : ''}`), headers, body }, grads, returnParams: r.returnParams, answer, loss: r.loss, retry: r.retry };
}

/** The stored snapshot and its ETag. */
async function snapshotOf(m: Member): Promise<{ s: Snapshot; etag: string }> {
  const state = await send({ method: 'GET', path: at(m, '/state'), headers: auth(m) });
  expect(state.status).toBe(200);
  return { s: JSON.parse(state.text), etag: state.headers.get('etag')! };
}

/** The params of a 200 step answer, in layout order. */
function answeredParams(a: Answer, m: Member): number[] | null {
  if (a.type === JSON_TYPE) {
    const body = JSON.parse(a.text);
    return body.params === undefined ? null : flat(body.params);
  }
  if (a.type === RAW) return a.bytes.length === 0 ? null : wireValues(m.dtype === 'float32' ? 'F32' : 'F64', a.bytes);
  const file = readSafetensors(a.bytes);
  if (file.tensors.size === 0) return null;
  return m.layout.flatMap((l) => decodeValues(file.tensors.get(l.name)!));
}

// ---------------------------------------------------------------------------------------------
// properties
// ---------------------------------------------------------------------------------------------

const memberArb = fc.nat({ max: FLEET.length - 1 });

describe('hosted optimizers: gradients', () => {
  it('a gradient in any format is the reference step bit for bit (answer and stored state), or the 4xx the reference predicts, changing nothing', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(
        memberArb.chain((i) => gradChoices(fleet[i]!).map((r) => ({ i, r }))),
        async ({ i, r }) => {
          const m = fleet[i]!;
          const { s, etag } = await snapshotOf(m);
          await checkGradient(m, gradCase(m, r, s, etag), s);
        },
      ),
      500,
    );
  });
});

/** A parsed JSON value as the writer's model (object keys kept in order, `__proto__` too). */
function modelOf(v: unknown): Json {
  if (Array.isArray(v)) return v.map(modelOf);
  if (v !== null && typeof v === 'object') return new Obj(Object.entries(v).map(([k, c]) => [k, modelOf(c)]));
  return v as Json;
}

/** Keys and indices a mutation walks down (snapshot, params, PATCH and step fields). */
const pathStep = fc.oneof(
  fc.constantFrom('params', 'grads', 'state', 'm', 'v', 'v_max', 'step', 'hyperparams', 'lr', 'beta1', 'amsgrad', 'schedule', 'type', 'layout', 'dtype', 'history', 'metrics', 'loss', 'fc.weight', 'w', 'x', '__proto__'),
  fc.nat({ max: 2 }),
);

describe('hosted optimizers: any request with the token', () => {
  it('a mutation (PUT /state, PUT /params, PATCH, POST /step) with one field replaced by anything, junk headers or bytes: sane, and a rejection changes nothing', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    const ops = ['PUT /state', 'PUT /params', 'PATCH ', 'POST /step'] as const;
    await fuzz(
      fc.asyncProperty(
        memberArb,
        fc.constantFrom(...ops),
        fc.array(pathStep, { minLength: 1, maxLength: 4 }),
        anyJson,
        textStyle,
        fc.oneof({ weight: 4, arbitrary: fc.constant<Record<string, string>>({}) }, { weight: 1, arbitrary: junkHeaders }),
        fc.oneof({ weight: 6, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 256 }) }),
        async (i, op, path, value, style, junk, bytes) => {
          const m = fleet[i]!;
          const [method, suffix] = op.split(' ') as [string, string];
          // A valid body of the operation, from what the optimizer holds, with one subtree replaced.
          const zeros = treeJson(withValues(m.tree, valuesOf(m.tree).map(() => 0.25)));
          const sample: Json =
            suffix === '/state'
              ? modelOf(JSON.parse(m.baseline.state))
              : suffix === '/params'
                ? new Obj([['params', zeros]])
                : suffix === '/step'
                  ? new Obj([['grads', zeros], ['loss', 0.5]])
                  : new Obj([['hyperparams', new Obj([['lr', 0.5]])]]);
          const headers = { ...junk, ...auth(m), ...(bytes ? {} : { 'content-type': JSON_TYPE }) };
          const req: Req = { method, path: at(m, suffix), headers, body: bytes ?? writeJson(setAt(sample, path, value), style) };
          const a = await sendSane(req);
          if (a.status >= 400) await expectUnchanged(m, m.baseline, `${m.label}: ${method} ${suffix} → ${a.status}`);
          // An accepted change (the replaced value happened to be valid) is the new baseline.
          else await refresh(m);
        },
      ),
      300,
    );
  });
});

/** Sends a gradient case and checks the answer and the stored state against the reference. */
async function checkGradient(m: Member, c: GradCase, s: Snapshot): Promise<void> {
  const a = await sendSane(c.req);
  const what = `${m.label}, ${c.format} → ${c.answer}`;
  let want: number;
  let ref: Stepped | null = null;
  if (m.collides && c.answer === 'safetensors' && c.returnParams) want = 406;
  // A binary body is read after the preconditions (If-Match, expected_step, the upload complete), as RFC 9110 orders them; JSON is parsed first.
  else if (!m.complete && c.format !== 'json') want = 409;
  else if (typeof c.grads === 'string') want = 422;
  else if (!m.complete) want = 409;
  else {
    ref = referenceStep(s, c.grads);
    want = ref.ok ? 200 : 422;
  }
  expect(a.status, `${what}: ${a.text.slice(0, 300)}; reference: ${typeof c.grads === 'string' ? c.grads : ref && !ref.ok ? ref.why : 'ok'}`).toBe(want);
  if (want !== 200 || !ref?.ok) {
    await expectUnchanged(m, m.baseline, what);
    return;
  }
  expect(a.type, what).toBe({ json: JSON_TYPE, raw: RAW, safetensors: ST }[c.answer]);
  expect(a.headers.get('step')).toBe(String(ref.step));
  expect(Object.is(Number(a.headers.get('lr')), ref.lr), `lr header ${a.headers.get('lr')} vs ${ref.lr}`).toBe(true);
  const answered = answeredParams(a, m);
  if (c.returnParams) expectBits(answered ?? [], ref.params, `${what}: answered params`);
  else expect(answered, what).toBeNull();
  // The stored state is the reference's, bit for bit.
  const after = await hostedBytes(m);
  expectBits(wireValues(m.dtype === 'float32' ? 'F32' : 'F64', after.params), ref.params, `${what}: GET /params`);
  const stored = JSON.parse(after.state) as Snapshot;
  expect(stored.step).toBe(ref.step);
  expectBits(typed(m.dtype, flat(stored.m)), ref.m, `${what}: m`);
  expectBits(typed(m.dtype, flat(stored.v)), ref.v, `${what}: v`);
  if (ref.vMax) expectBits(typed(m.dtype, flat(stored.v_max)), ref.vMax, `${what}: v_max`);
  m.baseline = after;
  // A retry with the same Idempotency-Key is replayed: the same step and lr, nothing applied again.
  if (c.retry && c.req.headers?.['idempotency-key']) {
    const again = await sendSane(c.req);
    expect(again.status, again.text.slice(0, 300)).toBe(200);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.headers.get('step')).toBe(String(ref.step));
    await expectUnchanged(m, m.baseline, `${what}: a replay`);
  }
}
