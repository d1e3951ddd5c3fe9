// Hosted optimizers over the binary wire: raw and safetensors steps equal to JSON steps bit for
// bit, lower-precision gradients, create by shapes with uploads in parts, safetensors checkpoints
// that round-trip, and bad binary bodies refused with nothing changed.

import { evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { ADAM_DEFAULTS, adamStep, type AdamState } from '../src/optim/adam.ts';
import { callBytes } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, type Created } from './helpers/optimizers.ts';
import { decodeValues, encodeValues, rawSafetensors, readSafetensors, writeSafetensors, type Dt } from './helpers/safetensors.ts';

const ST = 'application/vnd.safetensors';
const RAW = 'application/octet-stream';
const stubOf = (id: string) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromString(id));

const PARAMS = { 'fc.weight': [[0.5, -0.25, 0.125], [1, 2, -3]], 'fc.bias': [0.1, -0.1] };
const GRADS = { 'fc.weight': [[0.01, 0.02, -0.03], [0.5, -0.5, 0.25]], 'fc.bias': [1, -1] };
const flat = (tree: Record<string, unknown>) => Object.values(tree).flatMap((t) => (Array.isArray(t) ? (t as unknown[]).flat(Infinity) : [t])) as number[];

function binary(opt: Pick<Created, 'id' | 'token'>, method: string, path: string, body: Uint8Array | undefined, headers: Record<string, string> = {}) {
  return callBytes(method, `/v1/optimizers/${opt.id}${path}`, body, authed(opt.token, headers));
}

/** Every state tensor as numbers (from the JSON snapshot): the yardstick for "nothing changed". */
async function snapshotOf(opt: Created) {
  const { body } = await opCall('GET', opt, '/state');
  return { step: body.step, params: body.params, m: body.m, v: body.v, v_max: body.v_max };
}

const f32 = (values: number[]) => encodeValues(values, 'F32');

describe('steps over the binary wire', () => {
  it('raw and safetensors steps equal JSON steps bit for bit, in every answer format', async () => {
    const json = await createOptimizer({ params: PARAMS, hyperparams: { lr: 0.01, amsgrad: true } });
    const raw = await createOptimizer({ params: PARAMS, hyperparams: { lr: 0.01, amsgrad: true } });
    const st = await createOptimizer({ params: PARAMS, hyperparams: { lr: 0.01, amsgrad: true } });
    expect(raw.body.layout).toEqual([
      { name: 'fc.weight', shape: [2, 3], offset: 0, size: 6 },
      { name: 'fc.bias', shape: [2], offset: 6, size: 2 },
    ]);
    for (let k = 0; k < 3; k++) {
      const scale = k + 1;
      const grads = { 'fc.weight': GRADS['fc.weight'].map((r) => r.map((x) => x * scale)), 'fc.bias': GRADS['fc.bias'].map((x) => x * scale) };
      const j = await opCall('POST', json, '/step', { grads, loss: 1 / scale });
      const r = await binary(raw, 'POST', `/step?loss=${1 / scale}`, f32(flat(grads)), { 'content-type': RAW });
      expect(r.status, new TextDecoder().decode(r.bytes)).toBe(200);
      expect(r.type).toBe(`${RAW}; dtype=float32`);
      expect(r.headers.get('step')).toBe(String(k + 1));
      expect(Number(r.headers.get('lr'))).toBe(j.body.lr);
      expect(decodeValues({ name: '', dtype: 'F32', shape: [8], data: r.bytes })).toEqual(flat(j.body.params).map(Math.fround));
      const file = writeSafetensors(Object.entries(grads).map(([name, v]) => ({ name, dtype: 'F32' as Dt, shape: name === 'fc.bias' ? [2] : [2, 3], data: f32((v as unknown[]).flat() as number[]) })));
      const s = await binary(st, 'POST', `/step?loss=${1 / scale}`, file, { 'content-type': ST });
      expect(s.type).toBe(ST);
      const answer = readSafetensors(s.bytes);
      expect(answer.metadata).toMatchObject({ step: String(k + 1), lr: String(j.body.lr) });
      expect(decodeValues(answer.tensors.get('fc.bias')!)).toEqual(j.body.params['fc.bias']);
      expect(decodeValues(answer.tensors.get('fc.weight')!)).toEqual(j.body.params['fc.weight'].flat());
    }
    const states = await Promise.all([json, raw, st].map(snapshotOf));
    expect(states[1]).toEqual(states[0]);
    expect(states[2]).toEqual(states[0]);
    expect((await opCall('GET', raw, '/history')).body.entries.map((e: { loss: number }) => e.loss)).toEqual([1, 0.5, 1 / 3]);
  });

  it('step and lr headers come with every format, JSON too, as README says (found by test/fuzz/hosted.test.ts)', async () => {
    const opt = await createOptimizer({ params: PARAMS, hyperparams: { lr: 0.02 } });
    for (const [k, [body, type]] of ([[f32(flat(GRADS)), RAW], [new TextEncoder().encode(JSON.stringify({ grads: GRADS })), 'application/json']] as const).entries()) {
      for (const accept of ['application/json', RAW, ST]) {
        const res = await binary(opt, 'POST', k === 0 ? '/step' : '/step?return=none', body, { 'content-type': type, accept });
        expect(res.status).toBe(200);
        expect(res.headers.get('lr'), `${type} → ${accept}`).toBe('0.02');
        expect(res.headers.get('step'), `${type} → ${accept}`).toMatch(/^\d+$/);
      }
    }
    const params = await binary(opt, 'GET', '/params', undefined, { accept: 'application/json' });
    expect(params.headers.get('step')).toBe('6');
  });

  it('answers in the format Accept asks for; return=none sends no tensors; 406 applies nothing', async () => {
    const opt = await createOptimizer({ params: PARAMS });
    const g = f32(flat(GRADS));
    const asJson = await binary(opt, 'POST', '/step', g, { 'content-type': RAW, accept: 'application/json' });
    expect(asJson.body.step).toBe(1);
    expect(asJson.body.params['fc.bias']).toHaveLength(2);
    const none = await binary(opt, 'POST', '/step?return=none', g, { 'content-type': RAW });
    expect(none.bytes.length).toBe(0);
    expect(none.headers.get('step')).toBe('2');
    const noneSt = readSafetensors((await binary(opt, 'POST', '/step?return=none', g, { 'content-type': RAW, accept: ST })).bytes);
    expect(noneSt.tensors.size).toBe(0);
    expect(noneSt.metadata!.step).toBe('3');
    expectProblem(await binary(opt, 'POST', '/step', g, { 'content-type': RAW, accept: 'text/csv' }), 406, 'Accept');
    expect((await opCall('GET', opt, '')).body.step).toBe(3);
    // GET params in each format: the same numbers.
    const p = await opCall('GET', opt, '/params');
    const pr = await binary(opt, 'GET', '/params', undefined, { accept: RAW });
    expect(pr.headers.get('step')).toBe('3');
    expect(decodeValues({ name: '', dtype: 'F32', shape: [8], data: pr.bytes })).toEqual(flat(p.body.params));
    const ps = readSafetensors((await binary(opt, 'GET', '/params', undefined, { accept: ST })).bytes);
    expect([...ps.tensors.keys()]).toEqual(['fc.weight', 'fc.bias']);
    expect(decodeValues(ps.tensors.get('fc.weight')!)).toEqual(p.body.params['fc.weight'].flat());
    expectProblem(await binary(opt, 'GET', '', undefined, { accept: RAW }), 406, 'Accept');
  });

  it('takes bfloat16 and float16 gradients, widened exactly, as the same step in float32', async () => {
    const values = [0.5, -0.25, 0.125, 1, 2, -3, 0.0078125, -1.5]; // exact in both half formats
    const ref = await createOptimizer({ params: PARAMS, hyperparams: { lr: 0.1 } });
    await binary(ref, 'POST', '/step', f32(values), { 'content-type': RAW });
    for (const [dtype, enc] of [['bfloat16', 'BF16'], ['float16', 'F16']] as const) {
      const opt = await createOptimizer({ params: PARAMS, hyperparams: { lr: 0.1 } });
      const res = await binary(opt, 'POST', '/step', encodeValues(values, enc), { 'content-type': `${RAW}; dtype=${dtype}` });
      expect(res.status).toBe(200);
      expect(await snapshotOf(opt)).toEqual(await snapshotOf(ref));
      const st = await createOptimizer({ params: PARAMS, hyperparams: { lr: 0.1 } });
      const file = writeSafetensors([
        { name: 'fc.bias', dtype: enc, shape: [2], data: encodeValues(values.slice(6), enc) },
        { name: 'fc.weight', dtype: enc, shape: [2, 3], data: encodeValues(values.slice(0, 6), enc) },
      ]);
      expect((await binary(st, 'POST', '/step', file, { 'content-type': ST })).status).toBe(200);
      expect(await snapshotOf(st)).toEqual(await snapshotOf(ref));
    }
  });

  it('replays a retried Idempotency-Key: the same values in any encoding; other values are a 422', async () => {
    const opt = await createOptimizer({ params: PARAMS });
    const values = [0.5, -0.25, 0.125, 1, 2, -3, 0.0078125, -1.5];
    const first = await binary(opt, 'POST', '/step', f32(values), { 'content-type': RAW, 'idempotency-key': 'k1' });
    const again = await binary(opt, 'POST', '/step', encodeValues(values, 'BF16'), { 'content-type': `${RAW}; dtype=bfloat16`, 'idempotency-key': 'k1' });
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.bytes).toEqual(first.bytes);
    const other = values.slice();
    other[7] = Math.fround(other[7]! + 2 ** -20);
    expectProblem(await binary(opt, 'POST', '/step', f32(other), { 'content-type': RAW, 'idempotency-key': 'k1' }), 422, 'Idempotency-Key');
    expect((await opCall('GET', opt, '')).body.step).toBe(1);
  });
});

describe('tensors whose dotted names collide ("a.b" and {"a": {"b"}})', () => {
  it('safetensors answers are a 406 before anything is applied; JSON and raw work (found by test/fuzz/hosted.test.ts)', async () => {
    // The step was applied, then encoding the answer threw: a 500 for a step that had happened.
    const opt = await createOptimizer({ params: { 'a.b': [1], a: { b: [2] } } });
    const grads = { 'a.b': [0.5], a: { b: [-0.5] } };
    const before = await snapshotOf(opt);
    expectProblem(await binary(opt, 'POST', '/step', new TextEncoder().encode(JSON.stringify({ grads })), { 'content-type': 'application/json', accept: ST }), 406, 'Accept');
    expectProblem(await binary(opt, 'POST', '/step', f32([0.5, -0.5]), { 'content-type': RAW, accept: ST }), 406, 'Accept');
    expectProblem(await binary(opt, 'GET', '/params', undefined, { accept: ST }), 406, 'Accept');
    expect(await snapshotOf(opt)).toEqual(before);
    const none = await binary(opt, 'POST', '/step?return=none', f32([0.5, -0.5]), { 'content-type': RAW, accept: ST });
    expect(none.status).toBe(200);
    expect(readSafetensors(none.bytes).metadata?.step).toBe('1');
    const raw = await binary(opt, 'POST', '/step', f32([0.5, -0.5]), { 'content-type': RAW });
    expect(raw.headers.get('step')).toBe('2');
    expect((await opCall('POST', opt, '/step', { grads })).body.step).toBe(3);
  });
});

describe('bad binary bodies change nothing', () => {
  it('refuses each with a 4xx naming what is wrong', async () => {
    const opt = await createOptimizer({ params: PARAMS, dtype: 'float32' });
    await binary(opt, 'POST', '/step', f32(flat(GRADS)), { 'content-type': RAW });
    const before = await snapshotOf(opt);
    const good = f32(flat(GRADS));
    const cases: Array<[string, Promise<{ status: number; type: string; body: any; bytes: Uint8Array }>, number, string?]> = [
      ['short raw body', binary(opt, 'POST', '/step', good.subarray(0, 28), { 'content-type': RAW }), 422, 'body'],
      ['long raw body', binary(opt, 'POST', '/step', new Uint8Array(40), { 'content-type': RAW }), 422, 'body'],
      ['a NaN', binary(opt, 'POST', '/step', f32([0, 0, 0, 0, 0, NaN, 0, 0]), { 'content-type': RAW }), 422, 'grads[5]'],
      ['an infinity in the bias', binary(opt, 'POST', '/step', f32([0, 0, 0, 0, 0, 0, 0, -Infinity]), { 'content-type': RAW }), 422, 'grads[7]'],
      ['float64 into float32', binary(opt, 'POST', '/step', new Uint8Array(64), { 'content-type': `${RAW}; dtype=float64` }), 422, 'Content-Type'],
      ['an unknown dtype', binary(opt, 'POST', '/step', good, { 'content-type': `${RAW}; dtype=int8` }), 415, 'Content-Type'],
      ['an unknown media type', binary(opt, 'POST', '/step', good, { 'content-type': 'application/x-npy' }), 415],
      ['a compressed body', binary(opt, 'POST', '/step', good, { 'content-type': RAW, 'content-encoding': 'gzip' }), 415],
      ['an unknown tensor', binary(opt, 'POST', '/step', writeSafetensors([{ name: 'fc.bias', dtype: 'F32', shape: [2], data: f32([1, 1]) }, { name: 'fc.weight', dtype: 'F32', shape: [2, 3], data: f32([1, 1, 1, 1, 1, 1]) }, { name: 'x', dtype: 'F32', shape: [1], data: f32([1]) }]), { 'content-type': ST }), 422, 'grads.x'],
      ['a wrong shape', binary(opt, 'POST', '/step', writeSafetensors([{ name: 'fc.bias', dtype: 'F32', shape: [2], data: f32([1, 1]) }, { name: 'fc.weight', dtype: 'F32', shape: [3, 2], data: f32([1, 1, 1, 1, 1, 1]) }]), { 'content-type': ST }), 422, 'grads["fc.weight"].shape'],
      ['a header beyond the body', binary(opt, 'POST', '/step', rawSafetensors('{}', [], 500), { 'content-type': ST }), 422, 'safetensors.header'],
      ['a header that is not JSON', binary(opt, 'POST', '/step', rawSafetensors('{"fc.bias": ', []), { 'content-type': ST }), 422, 'safetensors.header'],
      ['overlapping offsets', binary(opt, 'POST', '/step', rawSafetensors(JSON.stringify({ 'fc.bias': { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, 'fc.weight': { dtype: 'F32', shape: [2, 3], data_offsets: [4, 28] } }), [new Uint8Array(28)]), { 'content-type': ST }), 422, 'safetensors["fc.weight"].data_offsets'],
      ['a duplicated name', binary(opt, 'POST', '/step', rawSafetensors('{"fc.bias": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "fc.bias": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', [new Uint8Array(8)]), { 'content-type': ST }), 422, 'safetensors["fc.bias"]'],
      ['an unknown safetensors dtype', binary(opt, 'POST', '/step', rawSafetensors(JSON.stringify({ 'fc.bias': { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }), [new Uint8Array(8)]), { 'content-type': ST }), 422, 'safetensors["fc.bias"].dtype'],
      ['a wrong token', binary({ id: opt.id, token: 'nope' }, 'POST', '/step', good, { 'content-type': RAW }), 401],
    ];
    for (const [what, pending, status, field] of cases) {
      const res = await pending;
      expect(res.status, `${what}: ${new TextDecoder().decode(res.bytes).slice(0, 300)}`).toBe(status);
      expectProblem(res, status, field);
      expect(res.bytes.length, what).toBeLessThan(4096);
    }
    expect(await snapshotOf(opt)).toEqual(before);
  });
});

describe('create by shapes, upload in parts', () => {
  it('steps only once every element has arrived, then equals an optimizer created with the same params', async () => {
    const opt = await createOptimizer({ shapes: { 'fc.weight': [2, 3], 'fc.bias': [2] }, init: 'zeros', hyperparams: { lr: 0.01 } });
    expect(opt.body.upload).toEqual({ complete: false, missing_elements: 8, missing_tensors: ['fc.weight', 'fc.bias'] });
    expect((await opCall('GET', opt, '/params')).body.params).toEqual({ 'fc.weight': [[0, 0, 0], [0, 0, 0]], 'fc.bias': [0, 0] });
    // Row 0 of the weight by tensor name, row 1 by flat offset, the bias as JSON.
    const w = PARAMS['fc.weight'];
    let info = await binary(opt, 'PUT', '/params?tensor=fc.weight', f32(w[0]!), { 'content-type': RAW });
    expect(info.body.upload).toEqual({ complete: false, missing_elements: 5, missing_tensors: ['fc.weight', 'fc.bias'] });
    const early = await binary(opt, 'POST', '/step', f32(flat(GRADS)), { 'content-type': RAW });
    expectProblem(early, 409, 'params');
    expect(early.body.detail).toMatch(/5 of 8 params have not been uploaded yet \(in "fc.weight", "fc.bias"\)/);
    info = await binary(opt, 'PUT', '/params?offset=3', f32(w[1]!), { 'content-type': RAW });
    expect(info.body.upload.missing_tensors).toEqual(['fc.bias']);
    const done = await opCall('PUT', opt, '/params', { params: { 'fc.bias': PARAMS['fc.bias'] } });
    expect(done.body.upload).toEqual({ complete: true, missing_elements: 0, missing_tensors: [] });
    const twin = await createOptimizer({ params: PARAMS, hyperparams: { lr: 0.01 } });
    for (const o of [opt, twin]) expect((await binary(o, 'POST', '/step', f32(flat(GRADS)), { 'content-type': RAW })).status).toBe(200);
    expect(await snapshotOf(opt)).toEqual(await snapshotOf(twin));
    // Later uploads replace params and keep the moments, as copying into p.data does.
    const before = await snapshotOf(opt);
    const st = writeSafetensors([{ name: 'fc.bias', dtype: 'BF16', shape: [2], data: encodeValues([0.5, -0.5], 'BF16') }]);
    const up = await binary(opt, 'PUT', '/params', st, { 'content-type': ST });
    expect(up.status).toBe(200);
    expect(up.headers.get('etag')).not.toBe(done.headers.get('etag'));
    const after = await snapshotOf(opt);
    expect(after.params['fc.bias']).toEqual([0.5, -0.5]);
    expect(after.m).toEqual(before.m);
    expect(after.step).toBe(before.step);
  });

  it('refuses uploads that do not fit, changing nothing', async () => {
    const opt = await createOptimizer({ shapes: { a: [4], b: [2, 2] } });
    const before = await snapshotOf(opt);
    const checks: Array<[Promise<any>, number, string]> = [
      [binary(opt, 'PUT', '/params?tensor=c', f32([1]), { 'content-type': RAW }), 422, 'tensor'],
      [binary(opt, 'PUT', '/params?tensor=a&offset=3', f32([1, 2]), { 'content-type': RAW }), 422, 'body'],
      [binary(opt, 'PUT', '/params?tensor=a&offset=5', f32([1]), { 'content-type': RAW }), 422, 'offset'],
      [binary(opt, 'PUT', '/params?offset=7', f32([1, 2]), { 'content-type': RAW }), 422, 'body'],
      [binary(opt, 'PUT', '/params', new Uint8Array(6), { 'content-type': RAW }), 422, 'body'],
      [binary(opt, 'PUT', '/params', new Uint8Array(0), { 'content-type': RAW }), 422, 'body'],
      [binary(opt, 'PUT', '/params?offset=-1', f32([1]), { 'content-type': RAW }), 422, 'offset'],
      [binary(opt, 'PUT', '/params?tensor=a', f32([1, 2, NaN, 4]), { 'content-type': RAW }), 422, 'params.a[2]'],
      [binary(opt, 'PUT', '/params?tensor=a', f32([1, 2, 3, 4]), { 'content-type': ST }), 422, 'tensor'],
      [opCall('PUT', opt, '/params', { params: { b: [1, 2, 3, 4] } }), 422, 'params.b'],
      [opCall('PUT', opt, '/params', { params: { z: [1] } }), 422, 'params.z'],
    ];
    for (const [pending, status, field] of checks) expectProblem(await pending, status, field);
    expect(await snapshotOf(opt)).toEqual(before);
    expect((await opCall('GET', opt, '')).body.upload.missing_elements).toBe(8);
  });
});

describe('safetensors checkpoints', () => {
  it('GET → PUT round-trips (same and other optimizer), and the trajectory continues unchanged', async () => {
    const opt = await createOptimizer({ params: PARAMS, hyperparams: { lr: 0.01, amsgrad: true }, schedule: { type: 'step', lr: 0.01, step_size: 2, gamma: 0.5 } });
    for (let k = 0; k < 3; k++) await binary(opt, 'POST', '/step', f32(flat(GRADS)), { 'content-type': RAW });
    const ckpt = await binary(opt, 'GET', '/state', undefined, { accept: ST });
    expect(ckpt.type).toBe(ST);
    const file = readSafetensors(ckpt.bytes);
    expect(file.order).toEqual([
      'params/fc.weight', 'params/fc.bias', 'exp_avg/fc.weight', 'exp_avg/fc.bias', 'exp_avg_sq/fc.weight', 'exp_avg_sq/fc.bias',
      'max_exp_avg_sq/fc.weight', 'max_exp_avg_sq/fc.bias', 'step/fc.weight', 'step/fc.bias',
    ]);
    expect(decodeValues(file.tensors.get('step/fc.bias')!)).toEqual([3]);
    expect(file.tensors.get('step/fc.bias')!.shape).toEqual([]);
    expect(JSON.parse(file.metadata!.hyperparams!)).toMatchObject({ lr: 0.01, amsgrad: true });
    const json = await snapshotOf(opt);
    expect(decodeValues(file.tensors.get('exp_avg_sq/fc.weight')!)).toEqual(json.v['fc.weight'].flat());

    const other = await createOptimizer({ params: [0] });
    const restored = await binary(other, 'PUT', '/state', ckpt.bytes, { 'content-type': ST });
    expect(restored.status, JSON.stringify(restored.body)).toBe(200);
    expect(restored.body).toMatchObject({ step: 3, shapes: { 'fc.weight': [2, 3], 'fc.bias': [2] }, schedule: { type: 'step' } });
    expect(await snapshotOf(other)).toEqual(json);
    for (const o of [opt, other]) await binary(o, 'POST', '/step', f32(flat(GRADS)), { 'content-type': RAW });
    expect(await snapshotOf(other)).toEqual(await snapshotOf(opt));
    // PUT into the same optimizer, after it moved on: back to step 3.
    expect((await binary(opt, 'PUT', '/state', ckpt.bytes, { 'content-type': ST })).body.step).toBe(3);
    expect(await snapshotOf(opt)).toEqual(json);
  });

  it('refuses checkpoints that do not hold a complete, valid state, changing nothing', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2] }, hyperparams: { amsgrad: true } });
    await binary(opt, 'POST', '/step', f32([1, 1]), { 'content-type': RAW });
    const before = await snapshotOf(opt);
    const hp = JSON.stringify({ ...ADAM_DEFAULTS, amsgrad: true });
    const t = (name: string, values: number[], dtype: Dt = 'F32', shape = [values.length]) => ({ name, dtype, shape, data: encodeValues(values, dtype) });
    const full = [t('params/w', [1, 2]), t('exp_avg/w', [0.1, 0.1]), t('exp_avg_sq/w', [0.01, 0.01]), t('max_exp_avg_sq/w', [0.01, 0.01])];
    const meta = { step: '1', hyperparams: hp, schedule: 'null' };
    const put = (tensors: typeof full, m: Record<string, string> = meta) => binary(opt, 'PUT', '/state', writeSafetensors(tensors, m), { 'content-type': ST });
    const cases: Array<[string, Promise<any>, number, string]> = [
      ['no exp_avg', put(full.filter((x) => !x.name.startsWith('exp_avg/'))), 422, 'safetensors.exp_avg'],
      ['no hyperparams', put(full, { step: '1', schedule: 'null' }), 422, '__metadata__.hyperparams'],
      ['no schedule', put(full, { step: '1', hyperparams: hp }), 422, '__metadata__.schedule'],
      ['no step', put(full, { hyperparams: hp, schedule: 'null' }), 422, '__metadata__.step'],
      ['a step tensor that is no count', put([...full, t('step/w', [1.5], 'F32', [])]), 422, 'safetensors["step/w"]'],
      ['a negative exp_avg_sq', put([full[0]!, full[1]!, t('exp_avg_sq/w', [0.01, -1]), full[3]!]), 422, 'safetensors["exp_avg_sq/w"][1]'],
      ['amsgrad without max_exp_avg_sq', put(full.slice(0, 3)), 422, 'safetensors.max_exp_avg_sq'],
      ['an unknown slot', put([...full, t('momentum_buffer/w', [0, 0])]), 422, 'safetensors["momentum_buffer/w"]'],
      ['a state tensor without its param', put([...full, t('exp_avg/v', [0])]), 422, 'safetensors["exp_avg/v"]'],
      ['a shape that differs from its param', put([full[0]!, t('exp_avg/w', [0.1, 0.1, 0.1]), full[2]!, full[3]!]), 422, 'safetensors["exp_avg/w"].shape'],
      ['an invalid hyperparameter', put(full, { ...meta, hyperparams: '{"beta2": 1}' }), 422, '__metadata__.hyperparams.beta2'],
      ['more elements than one optimizer holds', put([t('params/w', [], 'F32', [4_194_305]), t('exp_avg/w', [], 'F32', [4_194_305]), t('exp_avg_sq/w', [], 'F32', [4_194_305])].map((x) => ({ ...x, data: new Uint8Array(4 * 4_194_305) }))), 413, 'params'],
    ];
    for (const [what, pending, status, field] of cases) {
      const res = await pending;
      expect(res.status, `${what}: ${JSON.stringify(res.body)}`).toBe(status);
      expectProblem(res, status, field);
    }
    expect(await snapshotOf(opt)).toEqual(before);
    // The same checks pass once the checkpoint is whole; torch's per-parameter step tensors work without metadata.step.
    expect((await put([...full, t('step/w', [1], 'F32', [])], { hyperparams: hp, schedule: 'null' })).status).toBe(200);
  });
});

describe('tensor order of files', () => {
  it('follows __metadata__.layout when a writer sorted the tensors by name; GET state writes it, with next_lr', async () => {
    // Data in alphabetical order (as safetensors' own writers store it), the model's order in the metadata.
    const t = (name: string, values: number[]) => ({ name, dtype: 'F32' as Dt, shape: [values.length], data: f32(values) });
    const hp = JSON.stringify(ADAM_DEFAULTS);
    const sorted = [t('exp_avg/a', [0, 0]), t('exp_avg/z', [0]), t('exp_avg_sq/a', [0, 0]), t('exp_avg_sq/z', [0]), t('params/a', [1, 2]), t('params/z', [3])];
    const opt = await createOptimizer({ params: [0] });
    const put = await binary(opt, 'PUT', '/state', writeSafetensors(sorted, { step: '0', hyperparams: hp, schedule: 'null', layout: '["z", "a"]' }), { 'content-type': ST });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect(put.body.layout.map((l: { name: string }) => l.name)).toEqual(['z', 'a']);
    expect(decodeValues({ name: '', dtype: 'F32', shape: [3], data: (await binary(opt, 'GET', '/params', undefined, { accept: RAW })).bytes })).toEqual([3, 1, 2]);
    const ckpt = readSafetensors((await binary(opt, 'GET', '/state', undefined, { accept: ST })).bytes);
    expect(JSON.parse(ckpt.metadata!.layout!)).toEqual(['z', 'a']);
    expect(JSON.parse(ckpt.metadata!.next_lr!)).toBe(ADAM_DEFAULTS.lr);
    for (const layout of ['["z"]', '["z", "a", "a"]', '["z", "b"]', '{"z": 1}']) {
      const bad = await binary(opt, 'PUT', '/state', writeSafetensors(sorted, { step: '0', hyperparams: hp, schedule: 'null', layout }), { 'content-type': ST });
      expectProblem(bad, 422, '__metadata__.layout');
    }
    // A create from a file honours it too.
    const created = await callBytes('POST', '/v1/optimizers', writeSafetensors([t('a', [1, 2]), t('z', [3])], { layout: '["z", "a"]' }), { 'content-type': ST });
    expect(created.body.layout.map((l: { name: string }) => l.name)).toEqual(['z', 'a']);
  });

  it('a route-level 415 names Content-Type like every other', async () => {
    const opt = await createOptimizer({ params: [1] });
    const res = await binary(opt, 'PATCH', '', new Uint8Array(4), { 'content-type': RAW });
    expectProblem(res, 415, 'Content-Type');
    expect(res.body.errors[0].value).toBe(RAW);
  });
});

describe('large optimizers over the binary wire', () => {
  it('a 2.5M-element optimizer: uploaded in parts, stepped, journalled across chunks, reloaded exactly, checkpointed both ways', async () => {
    const n = 2_500_000; // float32: 10 MB per tensor, ten 1 MiB checkpoint chunks per slot
    const params = new Float32Array(n).map((_, i) => Math.sin(i) * 0.1);
    const opt = await createOptimizer({ shapes: { big: [n - 100], small: [100] }, hyperparams: { lr: 1e-3, weight_decay: 0.01, decoupled_weight_decay: true } });
    const bytes = new Uint8Array(params.buffer);
    const half = 4 * 1_000_000;
    expect((await binary(opt, 'PUT', '/params', bytes.subarray(0, half), { 'content-type': RAW })).status).toBe(200);
    expect((await binary(opt, 'PUT', `/params?offset=${half / 4}`, bytes.subarray(half), { 'content-type': RAW })).body.upload.complete).toBe(true);

    // Reference: the pure kernel (itself checked against torch) on the same arrays.
    const hp = { ...ADAM_DEFAULTS, lr: 1e-3, weight_decay: 0.01, decoupled_weight_decay: true };
    let ref: { params: Float32Array; state: AdamState<Float32Array> } = { params: params.slice(), state: { step: 0, m: new Float32Array(n), v: new Float32Array(n), vMax: null } };
    for (let k = 0; k < 11; k++) {
      let grads = new Float32Array(n).map((_, i) => Math.cos(i * (k + 1)) * 0.01);
      let body = new Uint8Array(grads.buffer);
      let type = RAW;
      if (k % 4 === 3) {
        // bfloat16 gradients (the high halves of the float32 ones): journalled as they came, 2 bytes each.
        const halves = new Uint16Array(new Uint32Array(grads.buffer).map((w) => w >>> 16));
        grads = new Float32Array(new Uint32Array(halves).map((h) => h << 16).buffer);
        body = new Uint8Array(halves.buffer);
        type = `${RAW}; dtype=bfloat16`;
      }
      const res = await binary(opt, 'POST', '/step?return=none', body, { 'content-type': type });
      expect(res.status).toBe(200);
      ref = adamStep({ dtype: 'float32', hyperparams: hp, params: ref.params, grads, state: ref.state }) as typeof ref;
      if (k === 4 || k === 10) await evictDurableObject(stubOf(opt.id)); // reload: replay the journal onto lagging chunks
    }
    const journal = await runInDurableObject(stubOf(opt.id), (_i, state) =>
      state.storage.sql.exec<{ seq: number; bytes: number }>('SELECT seq, sum(length(bytes)) AS bytes FROM journal_parts GROUP BY seq ORDER BY seq').toArray(),
    );
    expect(journal.find((j) => j.seq === 8)?.bytes).toBe(2 * n); // step 8 came as bfloat16
    expect(journal.find((j) => j.seq === 9)?.bytes).toBe(4 * n);
    const got = await binary(opt, 'GET', '/params', undefined, { accept: RAW });
    expect(Buffer.from(got.bytes).equals(Buffer.from(ref.params.buffer))).toBe(true);

    const ckpt = await binary(opt, 'GET', '/state', undefined, { accept: ST });
    expect(ckpt.bytes.length).toBeGreaterThan(3 * 4 * n);
    const copy = await createOptimizer({ params: [0] });
    expect((await binary(copy, 'PUT', '/state', ckpt.bytes, { 'content-type': ST })).status).toBe(200);
    const back = readSafetensors((await binary(copy, 'GET', '/state', undefined, { accept: ST })).bytes);
    const m = back.tensors.get('exp_avg/big')!;
    expect(Buffer.from(m.data).equals(Buffer.from(ref.state.m.buffer, 0, 4 * (n - 100)))).toBe(true);
  });
});
