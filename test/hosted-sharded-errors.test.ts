// Bad inputs sent to a sharded optimizer (2 and 3 shards, a tensor cut between them) and to an
// unsharded twin (the path every other test checks against torch) must answer the same: status,
// type, title, detail and errors (field, pointer, message, value), and change nothing on the sharded
// one (state, params, step and ETag). Steps in JSON, raw (every wire dtype) and safetensors, uploads,
// restores, PATCHes and sparse rows. Written as an independent review's sweep; the differences it
// found (the order of preconditions and body checks, texts, a snapshot's field names) are fixed.
// Steps in parts (part_offset) are for sharded optimizers only: test/hosted-sharded-parts.test.ts.
import { describe, expect, it } from 'vitest';
import { callBytes } from './helpers/http.ts';
import { authed, createOptimizer, opCall, type Created } from './helpers/optimizers.ts';
import { encodeValues, rawSafetensors, readSafetensors, writeSafetensors, type Dt, type TestTensor } from './helpers/safetensors.ts';

const ST = 'application/vnd.safetensors';
const RAW = 'application/octet-stream';
type Req = { method: string; path: string; body?: unknown; headers?: Record<string, string> };
type Mk = (opt: Created) => Req | Promise<Req>;

const send = (opt: Created, r: Req) => {
  const body = r.body === undefined || r.body instanceof Uint8Array || typeof r.body === 'string' ? r.body : JSON.stringify(r.body);
  const h = { ...(r.headers ?? {}) };
  if (typeof body === 'string' && !Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['content-type'] = 'application/json';
  return callBytes(r.method, `/v1/optimizers/${opt.id}${r.path}`, body, authed(opt.token, h));
};
const strip = (b: any) => {
  if (!b || typeof b !== 'object') return b;
  const { id: _a, created_at: _b, updated_at: _c, shards: _d, instance: _e, expires_at: _f, max_elements: _g, limits: _h, ...rest } = b;
  return rest;
};
const snap = async (opt: Created) => {
  const s = await opCall('GET', opt, '/state');
  const p = await callBytes('GET', `/v1/optimizers/${opt.id}/params`, undefined, authed(opt.token, { accept: RAW }));
  const i = await opCall('GET', opt, '');
  return JSON.stringify([strip(s.body), p.bytes.join(), strip(i.body)?.step, i.headers.get('etag')]);
};

const flat = (n: number, f = (i: number) => (i % 7) * 0.25 - 0.5) => Array.from({ length: n }, (_, i) => f(i));
const shape = (v: number[], s: number[]): any => (s.length <= 1 ? v : Array.from({ length: s[0]! }, (_, i) => shape(v.slice((i * v.length) / s[0]!, ((i + 1) * v.length) / s[0]!), s.slice(1))));
// Layout a:[3] (0..3), w:[4,6] (3..27), b:[6] (27..33): with 2 or 3 shards w is cut between shards.
const PARAMS = { a: [1, 2, 3], w: shape(flat(24, (i) => i / 10 - 1), [4, 6]), b: [0.5, -0.5, 1, 2, -2, 3] };
const SPEC = { optimizer: 'adam', params: PARAMS, hyperparams: { lr: 0.01 } };
const G = () => ({ a: [0.1, 0.2, 0.3], w: shape(flat(24), [4, 6]), b: flat(6, (i) => 1 - i / 4) });
const f32 = (v: number[]) => encodeValues(v, 'F32');
const gradFlat = () => [...G().a, ...G().w.flat(), ...G().b] as number[];

/** Runs `mk` against an unsharded and a sharded twin (after `setup` on both); returns the differences. */
async function diff(mk: Mk, opts: { spec?: Record<string, unknown>; shards?: number; setup?: Mk[] } = {}) {
  const spec = opts.spec ?? SPEC;
  const one = await createOptimizer(spec);
  const sh = await createOptimizer({ ...spec, shards: opts.shards ?? 3 });
  for (const s of opts.setup ?? []) {
    const x = await send(one, await s(one));
    const y = await send(sh, await s(sh));
    expect([x.status, y.status], JSON.stringify([x.body, y.body])).toEqual([x.status, x.status]);
  }
  const before = await snap(sh);
  const beforeOne = await snap(one);
  const a = await send(one, await mk(one));
  const b = await send(sh, await mk(sh));
  const out: string[] = [];
  if (a.status !== b.status) out.push(`status one=${a.status} sh=${b.status}`);
  if (a.type.split(';')[0] !== b.type.split(';')[0]) out.push(`content-type one=${a.type} sh=${b.type}`);
  const ja = JSON.stringify(strip(a.body))?.replaceAll(one.id, 'ID');
  const jb = JSON.stringify(strip(b.body))?.replaceAll(sh.id, 'ID');
  if (ja !== jb) out.push(`body\n one=${ja?.slice(0, 700)}\n sh =${jb?.slice(0, 700)}`);
  if (a.body === undefined && a.bytes.join() !== b.bytes.join()) out.push('bytes differ');
  if (a.status >= 400) {
    if ((await snap(sh)) !== before) out.push('refused request changed sharded state');
    if ((await snap(one)) !== beforeOne) out.push('(unsharded changed too)');
  }
  return out;
}
const check = async (mk: Mk, opts?: Parameters<typeof diff>[1]) => expect(await diff(mk, opts)).toEqual([]);

const step = (body: unknown, headers: Record<string, string> = {}, q = ''): Mk => () => ({ method: 'POST', path: `/step${q}`, body, headers });
const rawStep = (v: number[] | Uint8Array, ct = RAW, q = '', headers: Record<string, string> = {}) => step(v instanceof Uint8Array ? v : f32(v), { 'content-type': ct, ...headers }, q);
const stStep = (file: Uint8Array, q = '', headers: Record<string, string> = {}) => step(file, { 'content-type': ST, ...headers }, q);
const gradTensors = (dt: Dt = 'F32', g = G()): TestTensor[] => [
  { name: 'a', dtype: dt, shape: [3], data: encodeValues(g.a, dt) },
  { name: 'w', dtype: dt, shape: [4, 6], data: encodeValues(g.w.flat(), dt) },
  { name: 'b', dtype: dt, shape: [6], data: encodeValues(g.b, dt) },
];
const withFlat = (i: number, x: number) => {
  const v = gradFlat();
  v[i] = x;
  return v;
};
// JSON text with 1e999 (Infinity) at a flat index
const jsonWith = (i: number, lit: string) => {
  const v = gradFlat().map(String);
  v[i] = lit;
  const w = [0, 1, 2, 3].map((r) => `[${v.slice(3 + r * 6, 9 + r * 6).join(',')}]`);
  return `{"grads":{"a":[${v.slice(0, 3).join(',')}],"w":[${w.join(',')}],"b":[${v.slice(27).join(',')}]}}`;
};
const POS = [0, 2, 3, 8, 9, 14, 15, 20, 21, 26, 27, 32];

describe('step JSON', () => {
  for (const n of [2, 3]) for (const i of POS) it(`Infinity at ${i} (${n} shards)`, () => check(step(jsonWith(i, '1e999')), { shards: n }));
  it('-Infinity at 15', () => check(step(jsonWith(15, '-1e999'))));
  it('wrong shape w', () => check(step({ grads: { ...G(), w: shape(flat(20), [4, 5]) } })));
  it('wrong shape w rows', () => check(step({ grads: { ...G(), w: shape(flat(30), [5, 6]) } })));
  it('ragged w', () => check(step({ grads: { ...G(), w: [...G().w.slice(0, 3), [1, 2]] } })));
  it('scalar for a', () => check(step({ grads: { ...G(), a: 1 } })));
  it('missing b', () => check(step({ grads: { a: G().a, w: G().w } })));
  it('frozen b ok', () => check(step({ grads: { ...G(), b: null } })));
  it('unknown name', () => check(step({ grads: { ...G(), z: [1] } })));
  it('string element', () => check(step({ grads: { ...G(), b: [1, 2, 'x', 4, 5, 6] } })));
  it('grads array', () => check(step({ grads: gradFlat() })));
  it('no grads', () => check(step({ loss: 1 })));
  it('bad json', () => check(step('{"grads":')));
  for (const loss of ['"x"', '1e999', '-1e999', 'null', '[1]', 'true'])
    it(`loss ${loss}`, () => check(step(`{"grads":${JSON.stringify(G())},"loss":${loss}}`)));
  for (const es of ['5', '-1', '"1"', '1.5', '0'])
    it(`expected_step ${es}`, () => check(step(`{"grads":${JSON.stringify(G())},"expected_step":${es}}`)));
  it('extra field', () => check(step({ grads: G(), foo: 1 })));
  it('If-Match mismatch', () => check(step({ grads: G() }, { 'if-match': '"nope"' })));
  it('Idempotency-Key reuse other bytes', () => check(step({ grads: { ...G(), a: [9, 9, 9] } }, { 'idempotency-key': 'k1' }), { setup: [step({ grads: G() }, { 'idempotency-key': 'k1' })] }));
  it('Idempotency-Key replay same', () => check(step({ grads: G() }, { 'idempotency-key': 'k1' }), { setup: [step({ grads: G() }, { 'idempotency-key': 'k1' })] }));
  it('Accept text/html 406', () => check(step({ grads: G() }, { accept: 'text/html' })));
  it('Content-Type text/plain 415', () => check(step(JSON.stringify({ grads: G() }), { 'content-type': 'text/plain' })));
  it('return=bogus', () => check(step({ grads: G() }, {}, '?return=bogus')));
  it('return=none ok', () => check(step({ grads: G() }, {}, '?return=none')));
  it('return=none + Accept raw', () => check(step({ grads: G() }, { accept: RAW }, '?return=none')));
  it('?loss= with JSON body', () => check(step({ grads: G() }, {}, '?loss=abc')));
  it('json step on not-complete upload', () => check(step({ grads: G() }), { spec: { optimizer: 'adam', shapes: { a: [3], w: [4, 6], b: [6] } } }));
});

describe('step raw', () => {
  for (const n of [2, 3]) for (const i of POS) it(`NaN at ${i} (${n} shards)`, () => check(rawStep(withFlat(i, NaN)), { shards: n }));
  it('+Inf at 14', () => check(rawStep(withFlat(14, Infinity))));
  it('-Inf at 32', () => check(rawStep(withFlat(32, -Infinity))));
  it('two NaNs (9 and 27)', () => check(rawStep(withFlat(27, NaN).map((x, i) => (i === 9 ? NaN : x)))));
  it('length 32', () => check(rawStep(gradFlat().slice(0, 32))));
  it('length 34', () => check(rawStep([...gradFlat(), 1])));
  it('empty', () => check(rawStep([])));
  it('131 bytes', () => check(rawStep(new Uint8Array(131))));
  for (const dt of ['bfloat16', 'BF16', 'float16', 'F16', 'float64', 'F64', 'float32', 'bogus']) {
    it(`dtype=${dt} right length`, () => {
      const d: Dt = /bf/i.test(dt) ? 'BF16' : /16/.test(dt) ? 'F16' : /64/.test(dt) ? 'F64' : 'F32';
      return check(rawStep(encodeValues(gradFlat().map((x) => Math.round(x * 4) / 4), d), `${RAW}; dtype=${dt}`));
    });
  }
  it('bf16 NaN at 15', () => check(rawStep(encodeValues(gradFlat().map((x, i) => (i === 15 ? NaN : Math.round(x * 4) / 4)), 'BF16'), `${RAW}; dtype=bfloat16`)));
  it('bf16 Inf at 27', () => check(rawStep(encodeValues(gradFlat().map((x, i) => (i === 27 ? Infinity : Math.round(x * 4) / 4)), 'BF16'), `${RAW}; dtype=bfloat16`)));
  it('f16 NaN at 9', () => {
    const b = encodeValues(gradFlat().map((x) => Math.round(x * 4) / 4), 'F16');
    new DataView(b.buffer).setUint16(18, 0x7e00, true);
    return check(rawStep(b, `${RAW}; dtype=float16`));
  });
  it('bf16 wrong length', () => check(rawStep(encodeValues([1, 2, 3], 'BF16'), `${RAW}; dtype=bfloat16`)));
  it('bf16 odd bytes', () => check(rawStep(new Uint8Array(67), `${RAW}; dtype=bfloat16`)));
  it('?loss=abc', () => check(rawStep(gradFlat(), RAW, '?loss=abc')));
  it('?loss=inf', () => check(rawStep(gradFlat(), RAW, '?loss=Infinity')));
  it('?loss=NaN', () => check(rawStep(gradFlat(), RAW, '?loss=NaN')));
  it('?loss=1e999', () => check(rawStep(gradFlat(), RAW, '?loss=1e999')));
  it('?expected_step=3', () => check(rawStep(gradFlat(), RAW, '?expected_step=3')));
  it('?expected_step=x', () => check(rawStep(gradFlat(), RAW, '?expected_step=x')));
  it('?expected_step=-1', () => check(rawStep(gradFlat(), RAW, '?expected_step=-1')));
  it('?return=x', () => check(rawStep(gradFlat(), RAW, '?return=x')));
  it('?return=none ok', () => check(rawStep(gradFlat(), RAW, '?return=none')));
  it('ok accept raw', () => check(rawStep(gradFlat(), RAW, '', { accept: RAW })));
  it('ok accept st', () => check(rawStep(gradFlat(), RAW, '', { accept: ST })));
  it('ok accept json', () => check(rawStep(gradFlat(), RAW, '', { accept: 'application/json' })));
  it('accept text/html 406', () => check(rawStep(gradFlat(), RAW, '', { accept: 'text/html' })));
  it('accept 406 with bad body', () => check(rawStep([1], RAW, '', { accept: 'text/html' })));
  it('dtype param on safetensors 415', () => check(stStep(writeSafetensors(gradTensors()), '', { 'content-type': `${ST}; dtype=F32` })));
  it('If-Match mismatch', () => check(rawStep(gradFlat(), RAW, '', { 'if-match': '"x"' })));
  it('If-Match mismatch + bad body', () => check(rawStep([1], RAW, '', { 'if-match': '"x"' })));
  it('If-Match + NaN', () => check(rawStep(withFlat(15, NaN), RAW, '', { 'if-match': '"x"' })));
  it('If-Match + bad json', () => check(step('{"grads":', { 'if-match': '"x"' })));
  it('If-Match + json wrong shape', () => check(step({ grads: { ...G(), w: [1] } }, { 'if-match': '"x"' })));
  it('If-Match + json Inf', () => check(step(jsonWith(15, '1e999'), { 'if-match': '"x"' })));
  it('If-Match + st bad', () => check(stStep(writeSafetensors([]), '', { 'if-match': '"x"' })));
  it('If-Match + st wrong shape', () => check(stStep(writeSafetensors(gradTensors().map((t) => (t.name === 'w' ? { ...t, shape: [24] } : t))), '', { 'if-match': '"x"' })));
  it('If-Match + ?loss=x', () => check(rawStep(gradFlat(), RAW, '?loss=x', { 'if-match': '"x"' })));
  it('expected_step + NaN raw', () => check(rawStep(withFlat(15, NaN), RAW, '?expected_step=5')));
  it('expected_step + wrong length', () => check(rawStep([1], RAW, '?expected_step=5')));
  it('expected_step + json Inf', () => check(step(jsonWith(15, '1e999').replace(/}$/, ',"expected_step":5}'))));
  it('expected_step + st wrong shape', () => check(stStep(writeSafetensors(gradTensors().map((t) => (t.name === 'w' ? { ...t, shape: [24] } : t))), '?expected_step=5')));
  it('Idem reuse + NaN', () => check(rawStep(withFlat(15, NaN), RAW, '', { 'idempotency-key': 'r1' }), { setup: [rawStep(gradFlat(), RAW, '', { 'idempotency-key': 'r1' })] }));
  it('Idem reuse + wrong length', () => check(rawStep([1], RAW, '', { 'idempotency-key': 'r1' }), { setup: [rawStep(gradFlat(), RAW, '', { 'idempotency-key': 'r1' })] }));
  it('Idem replay + expected_step stale', () => check(rawStep(gradFlat(), RAW, '?expected_step=0', { 'idempotency-key': 'r1' }), { setup: [rawStep(gradFlat(), RAW, '', { 'idempotency-key': 'r1' })] }));
  it('Idem replay + If-Match stale', () => check(rawStep(gradFlat(), RAW, '', { 'idempotency-key': 'r1', 'if-match': '"x"' }), { setup: [rawStep(gradFlat(), RAW, '', { 'idempotency-key': 'r1' })] }));
  it('nonfinite skip raw NaN', () => check(rawStep(withFlat(15, NaN)), { spec: { ...SPEC, hyperparams: { lr: 0.01, nonfinite: 'skip' } } }));
  it('not complete json Inf', () => check(step(jsonWith(15, '1e999')), { spec: { optimizer: 'adam', shapes: { a: [3], w: [4, 6], b: [6] } } }));
  it('not complete json wrong shape', () => check(step({ grads: { ...G(), w: [1] } }), { spec: { optimizer: 'adam', shapes: { a: [3], w: [4, 6], b: [6] } } }));
  it('not complete st wrong shape', () => check(stStep(writeSafetensors(gradTensors().map((t) => (t.name === 'w' ? { ...t, shape: [24] } : t)))), { spec: { optimizer: 'adam', shapes: { a: [3], w: [4, 6], b: [6] } } }));
  it('not complete + 406', () => check(rawStep(gradFlat(), RAW, '', { accept: 'text/html' }), { spec: { optimizer: 'adam', shapes: { a: [3], w: [4, 6], b: [6] } } }));
  it('If-Match + 406', () => check(rawStep(gradFlat(), RAW, '', { accept: 'text/html', 'if-match': '"x"' })));
  it('If-Match + expected_step', () => check(rawStep(gradFlat(), RAW, '?expected_step=4', { 'if-match': '"x"' })));
  it('If-Match + ?return=x', () => check(rawStep(gradFlat(), RAW, '?return=x', { 'if-match': '"x"' })));
  it('expected_step + ?loss=x raw', () => check(rawStep(gradFlat(), RAW, '?expected_step=4&loss=x')));
  it('Idem reuse + If-Match stale + other bytes', () => check(rawStep(withFlat(3, 9), RAW, '', { 'idempotency-key': 'r1', 'if-match': '"x"' }), { setup: [rawStep(gradFlat(), RAW, '', { 'idempotency-key': 'r1' })] }));
  it('sgd dense raw NaN', () => check(rawStep(withFlat(15, NaN)), { spec: { ...SPEC, optimizer: 'sgd', hyperparams: { lr: 0.1 } } }));
  it('sgd st NaN in w', () => check(stStep(writeSafetensors(gradTensors().map((t) => (t.name === 'w' ? { ...t, data: f32(gradFlat().slice(3, 27).map((x, i) => (i === 9 ? NaN : x))) } : t)))), { spec: { ...SPEC, optimizer: 'sgd', hyperparams: { lr: 0.1 } } }));
  it('not complete raw', () => check(rawStep(gradFlat()), { spec: { optimizer: 'adam', shapes: { a: [3], w: [4, 6], b: [6] } } }));
  it('not complete raw NaN', () => check(rawStep(withFlat(15, NaN)), { spec: { optimizer: 'adam', shapes: { a: [3], w: [4, 6], b: [6] } } }));
  it('not complete wrong length', () => check(rawStep([1]), { spec: { optimizer: 'adam', shapes: { a: [3], w: [4, 6], b: [6] } } }));
  it('Idem reuse other bytes (keyed)', () => check(rawStep(withFlat(5, 7), RAW, '', { 'idempotency-key': 'r1' }), { setup: [rawStep(gradFlat(), RAW, '', { 'idempotency-key': 'r1' })] }));
  it('Idem reuse JSON then raw', () => check(rawStep(gradFlat(), RAW, '', { 'idempotency-key': 'r1' }), { setup: [step({ grads: G() }, { 'idempotency-key': 'r1' })] }));
});

describe('step safetensors', () => {
  const base = () => gradTensors();
  const hdr = (h: Record<string, unknown>) => JSON.stringify(h);
  const all = () => base().map((t) => t.data);
  const H = (edit: (h: any) => void) => {
    const h: any = {};
    let o = 0;
    for (const t of base()) {
      h[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [o, o + t.data.length] };
      o += t.data.length;
    }
    edit(h);
    return hdr(h);
  };
  it('ok', () => check(stStep(writeSafetensors(base()))));
  it('frozen b ok', () => check(stStep(writeSafetensors(base().slice(0, 2)))));
  it('no tensor', () => check(stStep(writeSafetensors([]))));
  it('no tensor with metadata', () => check(stStep(writeSafetensors([], { loss: '1' }))));
  it('bad header JSON', () => check(stStep(rawSafetensors('{"a":', all()))));
  it('header beyond body', () => check(stStep(rawSafetensors(H(() => {}), all(), 9999))));
  it('tiny body', () => check(stStep(new Uint8Array(5))));
  it('overlapping offsets', () => check(stStep(rawSafetensors(H((h) => (h.w.data_offsets = [8, 104])), all()))));
  it('out-of-range offsets', () => check(stStep(rawSafetensors(H((h) => (h.b.data_offsets = [108, 140])), all()))));
  it('offsets not matching shape', () => check(stStep(rawSafetensors(H((h) => (h.b.shape = [5])), all()))));
  it('unknown dtype', () => check(stStep(rawSafetensors(H((h) => (h.w.dtype = 'X9')), all()))));
  it('I64 dtype dense', () => check(stStep(rawSafetensors(H((h) => (h.w.dtype = 'I32')), all()))));
  it('duplicate names', () => check(stStep(rawSafetensors(H(() => {}).replace('"b":', '"w":'), all()))));
  it('unknown name', () => check(stStep(writeSafetensors([...base(), { name: 'z', dtype: 'F32', shape: [1], data: f32([1]) }]))));
  it('wrong shape w [6,4]', () => check(stStep(writeSafetensors(base().map((t) => (t.name === 'w' ? { ...t, shape: [6, 4] } : t))))));
  it('wrong shape w [24]', () => check(stStep(writeSafetensors(base().map((t) => (t.name === 'w' ? { ...t, shape: [24] } : t))))));
  it('wrong shape b [3]', () => check(stStep(writeSafetensors(base().map((t) => (t.name === 'b' ? { ...t, shape: [3], data: f32([1, 2, 3]) } : t))))));
  it('F64 into float32', () => check(stStep(writeSafetensors(gradTensors('F64')))));
  it('F64 w only', () => check(stStep(writeSafetensors(base().map((t) => (t.name === 'w' ? gradTensors('F64')[1]! : t))))));
  for (const [name, i] of [['a', 0], ['a', 2], ['w', 0], ['w', 5], ['w', 6], ['w', 11], ['w', 12], ['w', 23], ['b', 0], ['b', 5]] as const)
    it(`NaN in ${name}[${i}]`, () => check(stStep(writeSafetensors(base().map((t) => (t.name === name ? { ...t, data: (() => { const v = [...new Float32Array(t.data.slice().buffer)]; v[i] = NaN; return f32(v); })() } : t))))));
  it('NaN in BF16 w[12]', () => {
    const g = G();
    const q = (v: number[]) => v.map((x) => Math.round(x * 4) / 4);
    const ts = gradTensors('BF16', { a: q(g.a), w: shape(q(g.w.flat()), [4, 6]), b: q(g.b) } as any);
    new DataView(ts[1]!.data.buffer).setUint16(24, 0x7fc0, true);
    return check(stStep(writeSafetensors(ts)));
  });
  it('loss metadata bad', () => check(stStep(writeSafetensors(base(), { loss: 'abc' }))));
  it('?loss=x', () => check(stStep(writeSafetensors(base()), '?loss=x')));
  it('?expected_step=4', () => check(stStep(writeSafetensors(base()), '?expected_step=4')));
  it('metadata expected_step', () => check(stStep(writeSafetensors(base(), { expected_step: '4' }))));
  it('Idem reuse', () => check(stStep(writeSafetensors(gradTensors('F32', { ...G(), a: [5, 5, 5] })), '', { 'idempotency-key': 's' }), { setup: [stStep(writeSafetensors(base()), '', { 'idempotency-key': 's' })] }));
  it('accept st ok', () => check(stStep(writeSafetensors(base()), '', { accept: ST })));
  it('rows on adam', () => check(stStep(writeSafetensors([...base().slice(0, 2), { name: 'grads.indices/b', dtype: 'I64' as Dt, shape: [1, 1], data: new Uint8Array(8) }, { name: 'grads.values/b', dtype: 'F32', shape: [1], data: f32([1]) }]))));
});

describe('PUT params', () => {
  const put = (body: unknown, q = '', headers: Record<string, string> = {}): Mk => () => ({ method: 'PUT', path: `/params${q}`, body, headers });
  const rawPut = (v: number[] | Uint8Array, q: string, ct = RAW) => put(v instanceof Uint8Array ? v : f32(v), q, { 'content-type': ct });
  it('JSON wrong shape', () => check(put({ params: { w: shape(flat(20), [4, 5]) } })));
  it('JSON unknown name', () => check(put({ params: { z: [1] } })));
  it('JSON Infinity', () => check(put(`{"params":{"w":[[1,2,3,4,5,6],[1,2,3,4,5,6],[1,1e999,3,4,5,6],[1,2,3,4,5,6]]}}`)));
  it('JSON ok', () => check(put({ params: { b: [1, 2, 3, 4, 5, 6] } })));
  it('JSON null', () => check(put({ params: { b: null } })));
  it('JSON empty', () => check(put({ params: {} })));
  it('raw offset past end', () => check(rawPut([1], '?offset=33')));
  it('raw offset way past', () => check(rawPut([1], '?offset=40')));
  it('raw overrun', () => check(rawPut([1, 2, 3, 4], '?offset=30')));
  it('raw whole wrong count', () => check(rawPut(flat(32), '')));
  it('raw bytes not multiple', () => check(rawPut(new Uint8Array(10), '?offset=0')));
  it('raw tensor unknown', () => check(rawPut([1], '?tensor=zz')));
  it('raw tensor overrun', () => check(rawPut(flat(8), '?tensor=w&offset=20')));
  it('raw tensor offset past', () => check(rawPut(flat(1), '?tensor=b&offset=6')));
  it('raw offset negative', () => check(rawPut([1], '?offset=-1')));
  it('raw offset x', () => check(rawPut([1], '?offset=x')));
  it('raw NaN across cut', () => check(rawPut(withFlat(15, NaN), '')));
  it('raw NaN in tensor w', () => check(rawPut(flat(24).map((x, i) => (i === 13 ? NaN : x)), '?tensor=w')));
  it('raw NaN offset', () => check(rawPut(flat(10).map((x, i) => (i === 7 ? Infinity : x)), '?offset=10')));
  it('raw f64', () => check(rawPut(encodeValues(flat(33), 'F64'), '', `${RAW}; dtype=float64`)));
  it('raw bf16 NaN', () => {
    const b = encodeValues(flat(33), 'BF16');
    new DataView(b.buffer).setUint16(30, 0x7fc0, true);
    return check(rawPut(b, '', `${RAW}; dtype=bfloat16`));
  });
  it('st NaN in w', () => check(put(writeSafetensors([{ name: 'w', dtype: 'F32', shape: [4, 6], data: f32(flat(24).map((x, i) => (i === 12 ? NaN : x))) }]), '', { 'content-type': ST })));
  it('st wrong shape', () => check(put(writeSafetensors([{ name: 'w', dtype: 'F32', shape: [24], data: f32(flat(24)) }]), '', { 'content-type': ST })));
  it('st unknown', () => check(put(writeSafetensors([{ name: 'q', dtype: 'F32', shape: [1], data: f32([1]) }]), '', { 'content-type': ST })));
  it('st F64', () => check(put(writeSafetensors([{ name: 'b', dtype: 'F64', shape: [6], data: encodeValues(flat(6), 'F64') }]), '', { 'content-type': ST })));
  it('st empty', () => check(put(writeSafetensors([]), '', { 'content-type': ST })));
  it('If-Match', () => check(put({ params: { b: [1, 2, 3, 4, 5, 6] } }, '', { 'if-match': '"x"' })));
  it('If-Match + bad JSON', () => check(put({ params: { z: [1] } }, '', { 'if-match': '"x"' })));
  it('If-Match + raw overrun', () => check(put(f32([1, 2, 3, 4]), '?offset=30', { 'content-type': RAW, 'if-match': '"x"' })));
  it('If-Match + raw NaN', () => check(put(f32(withFlat(15, NaN)), '', { 'content-type': RAW, 'if-match': '"x"' })));
  it('PUT params json NaN-less Inf in a', () => check(put('{"params":{"a":[1,-1e999,3]}}')));
});

describe('PUT state', () => {
  let ck: ReturnType<typeof readSafetensors> | null = null;
  const checkpoint = async () => {
    if (ck) return ck;
    const src = await createOptimizer({ ...SPEC, hyperparams: { lr: 0.01, amsgrad: true } });
    for (let k = 0; k < 2; k++) expect((await opCall('POST', src, '/step', { grads: G() })).status).toBe(200);
    ck = readSafetensors((await callBytes('GET', `/v1/optimizers/${src.id}/state`, undefined, authed(src.token, { accept: ST }))).bytes);
    return ck;
  };
  const spec = { ...SPEC, hyperparams: { lr: 0.01, amsgrad: true } };
  const putFile = (edit: (t: TestTensor) => TestTensor | null, meta?: (m: Record<string, string>) => Record<string, string>): Mk => async () => {
    const c = await checkpoint();
    return { method: 'PUT', path: '/state', body: writeSafetensors(c.order.flatMap((n) => edit(c.tensors.get(n)!) ?? []), meta ? meta({ ...c.metadata! }) : c.metadata!), headers: { 'content-type': ST } };
  };
  const nanAt = (name: string, i: number, x = NaN) => (t: TestTensor) => (t.name === name ? { ...t, data: (() => { const v = [...new Float32Array(t.data.slice().buffer)]; v[i] = x; return f32(v); })() } : t);
  it('names', async () => {
    const c = await checkpoint();
    console.log('CHECKPOINT', c.order.map((n) => `${n}:${c.tensors.get(n)!.dtype}${JSON.stringify(c.tensors.get(n)!.shape)}`).join(' '), JSON.stringify(c.metadata));
  });
  it('ok', () => check(putFile((t) => t), { spec }));
  for (const slot of ['params', 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'])
    for (const [n, i] of [['a', 1], ['w', 12], ['w', 23], ['b', 5]] as const)
      it(`NaN in ${slot}/${n}[${i}]`, async () => {
        const c = await checkpoint();
        const name = c.order.find((x) => x === `${slot}/${n}` || (slot === 'params' && (x === n || x === `params/${n}`)));
        expect(name, c.order.join()).toBeTruthy();
        return check(putFile(nanAt(name!, i)), { spec });
      });
  it('negative exp_avg_sq w[12]', () => check(putFile(nanAt('exp_avg_sq/w', 12, -1)), { spec }));
  it('negative max_exp_avg_sq b[0]', () => check(putFile(nanAt('max_exp_avg_sq/b', 0, -1)), { spec }));
  it('Inf exp_avg w[7]', () => check(putFile(nanAt('exp_avg/w', 7, Infinity)), { spec }));
  it('wrong slot shape', () => check(putFile((t) => (t.name === 'exp_avg/w' ? { ...t, shape: [6, 4] } : t)), { spec }));
  it('wrong slot shape flat', () => check(putFile((t) => (t.name === 'exp_avg_sq/w' ? { ...t, shape: [24] } : t)), { spec }));
  it('wrong slot size', () => check(putFile((t) => (t.name === 'exp_avg/b' ? { ...t, shape: [3], data: t.data.slice(0, 12) } : t)), { spec }));
  it('missing slot', () => check(putFile((t) => (t.name === 'exp_avg/w' ? null : t)), { spec }));
  it('unknown tensor', () => check(putFile((t) => (t.name === 'exp_avg/w' ? { ...t, name: 'exp_avg/zz' } : t)), { spec }));
  it('F64 slot', () => check(putFile((t) => (t.name === 'exp_avg/w' ? { ...t, dtype: 'F64', data: encodeValues([...new Float32Array(t.data.slice().buffer)], 'F64') } : t)), { spec }));
  it('missing step tensor for w', () => check(putFile((t) => (t.name === 'step/w' ? null : t)), { spec }));
  it('step tensor for w bad value', () => check(putFile((t) => (t.name === 'step/w' ? { ...t, data: new Uint8Array(t.data.length).fill(255) } : t)), { spec }));
  it('bad hyperparams JSON', () => check(putFile((t) => t, (m) => ({ ...m, hyperparams: '{"lr":' })), { spec }));
  it('bad hyperparams value', () => check(putFile((t) => t, (m) => ({ ...m, hyperparams: '{"lr":-1}' })), { spec }));
  it('unknown optimizer', () => check(putFile((t) => t, (m) => ({ ...m, optimizer: 'bogus' })), { spec }));
  it('other optimizer', () => check(putFile((t) => t, (m) => ({ ...m, optimizer: 'sgd' })), { spec }));
  it('bad step', () => check(putFile((t) => t, (m) => ({ ...m, step: 'x' })), { spec }));
  it('negative step', () => check(putFile((t) => t, (m) => ({ ...m, step: '-1' })), { spec }));
  it('missing step', () => check(putFile((t) => t, (m) => { const { step: _s, ...r } = m; return r; }), { spec }));
  it('bad param_groups', () => check(putFile((t) => t, (m) => ({ ...m, param_groups: '[{"params":["zz"],"lr":1}]' })), { spec }));
  it('bad dtype meta', () => check(putFile((t) => t, (m) => ({ ...m, dtype: 'int8' })), { spec }));
  it('bad schedule', () => check(putFile((t) => t, (m) => ({ ...m, schedule: '{"type":"nope"}' })), { spec }));
  const jsonState = async (edit: (s: any) => string) => {
    const one = await createOptimizer(spec);
    await opCall('POST', one, '/step', { grads: G() });
    const s = strip((await opCall('GET', one, '/state')).body);
    return check(() => ({ method: 'PUT', path: '/state', body: edit(s) }), { spec });
  };
  const setW = (s: any, slot: string, r: number, c: number, x: number) => ({ ...s, [slot]: { ...s[slot], w: s[slot].w.map((row: number[], i: number) => (i === r ? row.map((y, j) => (j === c ? x : y)) : row)) } });
  it('JSON state 1e999 in v', () => jsonState((s) => JSON.stringify(setW(s, 'v', 2, 3, 12345.5)).replace('12345.5', '1e999')));
  it('JSON state 1e999 in m b', () => jsonState((s) => JSON.stringify({ ...s, m: { ...s.m, b: [1, 2, 3, 4, 5, 12345.5] } }).replace('12345.5', '1e999')));
  it('JSON state 1e999 in params', () => jsonState((s) => JSON.stringify(setW(s, 'params', 1, 0, 12345.5)).replace('12345.5', '-1e999')));
  it('JSON state negative v', () => jsonState((s) => JSON.stringify(setW(s, 'v', 3, 0, -2))));
  it('JSON state negative v_max', () => jsonState((s) => JSON.stringify(setW(s, 'v_max', 1, 5, -2))));
  it('JSON state wrong shape', () => jsonState((s) => JSON.stringify({ ...s, m: { ...s.m, w: s.m.w.slice(1) } })));
  it('JSON state missing slot tensor', () => jsonState((s) => JSON.stringify({ ...s, m: { a: s.m.a, b: s.m.b } })));
  it('JSON state bad step', () => jsonState((s) => JSON.stringify({ ...s, step: -3 })));
  it('JSON state other optimizer', () => jsonState((s) => JSON.stringify({ ...s, optimizer: 'sgd' })));
  it('JSON state bad hyperparams', () => jsonState((s) => JSON.stringify({ ...s, hyperparams: { ...s.hyperparams, lr: -1 } })));
  it('JSON state tensors step bad', () => jsonState((s) => JSON.stringify({ ...s, tensors: { w: { step: -1 } } })));
  it('JSON state tensors unknown', () => jsonState((s) => JSON.stringify({ ...s, tensors: { zz: { step: 1 } } })));
  it('st If-Match + bad file', () => check(async (opt) => { const r = await putFile(nanAt('exp_avg/w', 12))(opt); return { ...r, headers: { ...r.headers, 'if-match': '"x"' } }; }, { spec }));
  it('JSON If-Match + bad', () => jsonState((s) => JSON.stringify({ ...s, step: -3 })).then(() => undefined));
});

describe('PATCH', () => {
  const patch = (body: unknown): Mk => () => ({ method: 'PATCH', path: '', body });
  for (const body of [
    { hyperparams: { lr: -1 } },
    { hyperparams: { betas: [1.5, 0.9] } },
    { hyperparams: { bogus: 1 } },
    { hyperparams: { lr: 'x' } },
    { hyperparams: { amsgrad: 'yes' } },
    { param_groups: [{ params: ['zz'], lr: 0.1 }] },
    { param_groups: [{ params: ['w*'], lr: 0.1 }, { params: ['w'], lr: 0.2 }] },
    { param_groups: [{ params: ['q*'], lr: 0.1 }] },
    { param_groups: [{ params: ['w'], lr: -0.1 }] },
    { param_groups: [{ params: [], lr: 0.1 }] },
    { param_groups: [{ lr: 0.1 }] },
    { param_groups: [{ params: ['w'], betas: [0.9] }] },
    { param_groups: 'x' },
    { schedule: { type: 'nope' } },
    { ttl: 5 },
    { foo: 1 },
    { hyperparams: { lr: 0.5 }, param_groups: [{ params: ['b'], lr: 0.1 }] },
  ])
    it(JSON.stringify(body), () => check(patch(body)));
  it('If-Match + bad', () => check(async () => ({ ...(await patch({ hyperparams: { lr: -1 } })({} as Created)), headers: { 'if-match': '"x"' } })));
  it('nonfinite bad', () => check(patch({ hyperparams: { nonfinite: 'maybe' } })));
  it('clip bad', () => check(patch({ hyperparams: { clip_grad_norm: -1 } })));
});

describe('sparse rows (sgd [6,2])', () => {
  const spec = { optimizer: 'sgd', params: { emb: shape(flat(12), [6, 2]), c: [1, 2, 3] }, hyperparams: { lr: 0.1, momentum: 0.9 } };
  const js = (emb: unknown, c: unknown = [1, 1, 1]) => step({ grads: { emb, c } });
  const o = { spec, shards: 2 };
  it('ok', () => check(js({ indices: [0, 5], values: [[1, 2], [3, 4]] }), o));
  it('row 6', () => check(js({ indices: [1, 6], values: [[1, 2], [3, 4]] }), o));
  it('row 99', () => check(js({ indices: [99], values: [[1, 2]] }), o));
  it('row -1', () => check(js({ indices: [-1], values: [[1, 2]] }), o));
  it('row 1.5', () => check(js({ indices: [1.5], values: [[1, 2]] }), o));
  it('width 3', () => check(js({ indices: [4], values: [[1, 2, 3]] }), o));
  it('width 1 second', () => check(js({ indices: [0, 4], values: [[1, 2], [3]] }), o));
  it('count mismatch', () => check(js({ indices: [0, 4], values: [[1, 2]] }), o));
  it('inf in values', () => check(step(`{"grads":{"emb":{"indices":[1,4],"values":[[1,2],[3,1e999]]},"c":[1,1,1]}}`), o));
  it('rows on dense c', () => check(js([[1, 1]].concat(Array(5).fill([1, 1])), { indices: [0], values: [1] }), o));
  it('indices missing', () => check(js({ values: [[1, 2]] }), o));
  const stRows = (indices: number[], vals: number[], vshape: number[], extra: TestTensor[] = []) =>
    stStep(writeSafetensors([
      { name: 'grads.indices/emb', dtype: 'I64' as Dt, shape: [1, indices.length], data: new Uint8Array(BigInt64Array.from(indices.map(BigInt)).buffer) },
      { name: 'grads.values/emb', dtype: 'F32', shape: vshape, data: f32(vals) },
      { name: 'c', dtype: 'F32', shape: [3], data: f32([1, 1, 1]) },
      ...extra,
    ]));
  it('st ok', () => check(stRows([0, 5], [1, 2, 3, 4], [2, 2]), o));
  it('st row 6', () => check(stRows([2, 6], [1, 2, 3, 4], [2, 2]), o));
  it('st row -1', () => check(stRows([-1], [1, 2], [1, 2]), o));
  it('st width 3', () => check(stRows([4], [1, 2, 3], [1, 3]), o));
  it('st NaN', () => check(stRows([1, 4], [1, 2, NaN, 4], [2, 2]), o));
  it('st count mismatch', () => check(stRows([1, 4], [1, 2], [1, 2]), o));
  it('st indices without values', () => check(stStep(writeSafetensors([{ name: 'grads.indices/emb', dtype: 'I64' as Dt, shape: [1, 1], data: new Uint8Array(8) }, { name: 'c', dtype: 'F32', shape: [3], data: f32([1, 1, 1]) }])), o));
  it('st rows and dense both', () => check(stRows([1], [1, 2], [1, 2], [{ name: 'emb', dtype: 'F32', shape: [6, 2], data: f32(flat(12)) }]), o));
  it('raw NaN', () => check(rawStep(flat(15).map((x, i) => (i === 7 ? NaN : x))), o));
  it('json -inf first value', () => check(step(`{"grads":{"emb":{"indices":[1,4],"values":[[-1e999,2],[3,1]]},"c":[1,1,1]}}`), o));
  it('st Inf first', () => check(stRows([1, 4], [Infinity, 2, 3, 4], [2, 2]), o));
  it('st NaN in dense c', () => check(stRows([1], [1, 2], [1, 2], []).constructor === Function ? stStep(writeSafetensors([{ name: 'c', dtype: 'F32', shape: [3], data: f32([1, NaN, 1]) }])) : stStep(new Uint8Array()), o));
  it('st indices F32', () => check(stStep(writeSafetensors([{ name: 'grads.indices/emb', dtype: 'F32', shape: [1, 1], data: f32([1]) }, { name: 'grads.values/emb', dtype: 'F32', shape: [1, 2], data: f32([1, 2]) }])), o));
  it('st indices shape [2]', () => check(stStep(writeSafetensors([{ name: 'grads.indices/emb', dtype: 'I64' as Dt, shape: [1], data: new Uint8Array(8) }, { name: 'grads.values/emb', dtype: 'F32', shape: [1, 2], data: f32([1, 2]) }])), o));
  it('st values BF16 NaN', () => {
    const v = encodeValues([1, 2, 3, 4], 'BF16');
    new DataView(v.buffer).setUint16(6, 0x7fc0, true);
    return check(stStep(writeSafetensors([{ name: 'grads.indices/emb', dtype: 'I64' as Dt, shape: [1, 2], data: new Uint8Array(BigInt64Array.from([1n, 5n]).buffer) }, { name: 'grads.values/emb', dtype: 'BF16', shape: [2, 2], data: v }])), o);
  });
  it('st NaN skip', () => check(stRows([1, 4], [1, 2, NaN, 4], [2, 2]), { ...o, spec: { ...spec, hyperparams: { ...spec.hyperparams, nonfinite: 'skip' } } }));
  it('st rows duplicate', () => check(stRows([1, 1], [1, 2, 3, 4], [2, 2]), o));
  it('json rows duplicate', () => check(js({ indices: [4, 4], values: [[1, 2], [3, 4]] }), o));
  it('json rows on adagrad out of range', () => check(js({ indices: [6], values: [[1, 2]] }), { ...o, spec: { ...spec, optimizer: 'adagrad', hyperparams: { lr: 0.1 } } }));
  it('st rows sparse_adam NaN', () => check(stRows([1, 4], [1, 2, NaN, 4], [2, 2]), { ...o, spec: { ...spec, optimizer: 'sparse_adam', hyperparams: { lr: 0.1 } } }));
  it('json rows on sparse_adam dense c', () => check(js({ indices: [1], values: [[1, 2]] }, [1, 1, 1]), { ...o, spec: { ...spec, optimizer: 'sparse_adam', hyperparams: { lr: 0.1 } } }));
});
