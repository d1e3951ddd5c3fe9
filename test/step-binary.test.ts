// The stateless step in safetensors: torch fixtures replayed through binary bodies (state fed
// back as binary), answers equal to the JSON path's bit for bit in every combination of request
// and answer format, exact widening of bfloat16/float16 gradients, and every malformed file a 4xx.

import { describe, expect, it } from 'vitest';
import adam from './fixtures/adam/adam.json';
import adamw from './fixtures/adam/adamw.json';
import amsgrad from './fixtures/adam/amsgrad.json';
import edge from './fixtures/adam/edge.json';
import fromState from './fixtures/adam/from_state.json';
import trajectories from './fixtures/adam/trajectories.json';
import { callBytes, postJson } from './helpers/http.ts';
import { expectProblem } from './helpers/optimizers.ts';
import { encodeValues, rawSafetensors, readSafetensors, slotTensors, treeFromSlot, writeSafetensors, type Dt, type TestTensor } from './helpers/safetensors.ts';
import { zipLeaves } from './helpers/trees.ts';

const ST = 'application/vnd.safetensors';

interface Case {
  name: string;
  dtype: 'float32' | 'float64';
  hyperparams: Record<string, number | boolean>;
  params: unknown;
  state: { step: number; m: unknown; v: unknown; v_max?: unknown } | null;
  grads: unknown[];
  expected: Array<{ step_index: number; params: unknown; state: { step: number; m: unknown; v: unknown; v_max?: unknown } }>;
}

const files = { adam, adamw, amsgrad, edge, from_state: fromState, trajectories } as unknown as Record<string, { cases: Case[] }>;

function stepFile(c: Case, params: unknown, grads: unknown, state: Case['state'], extra: TestTensor[] = []): Uint8Array {
  const dt: Dt = c.dtype === 'float32' ? 'F32' : 'F64';
  const tensors = [...slotTensors('params', params, dt), ...slotTensors('grads', grads, dt)];
  if (state) {
    tensors.push(...slotTensors('exp_avg', state.m, dt), ...slotTensors('exp_avg_sq', state.v, dt));
    if (state.v_max !== undefined) tensors.push(...slotTensors('max_exp_avg_sq', state.v_max, dt));
  }
  return writeSafetensors([...tensors, ...extra], { step: String(state?.step ?? 0), hyperparams: JSON.stringify(c.hyperparams), dtype: c.dtype });
}

/** The answer of a binary step as the JSON path's shape: {params, state, lr}. */
function asJson(bytes: Uint8Array, like: unknown, amsgradOn: boolean) {
  const { tensors, metadata } = readSafetensors(bytes);
  const state: Record<string, unknown> = { step: Number(metadata!.step), m: treeFromSlot(tensors, 'exp_avg', like), v: treeFromSlot(tensors, 'exp_avg_sq', like) };
  if (amsgradOn) state.v_max = treeFromSlot(tensors, 'max_exp_avg_sq', like);
  return { params: treeFromSlot(tensors, 'params', like), state, lr: Number(metadata!.lr) };
}

function sameBits(a: unknown, b: unknown, where: string) {
  for (const p of zipLeaves(a, b)) if (!Object.is(p.a, p.e)) expect.fail(`${where}${p.path}: ${p.a} vs ${p.e}`);
}

describe('torch fixtures through safetensors', () => {
  for (const [file, { cases }] of Object.entries(files)) {
    const picked = file === 'trajectories' ? cases.filter((_, i) => i % 3 === 0) : cases;
    for (const c of picked) {
      it(`${file}: ${c.name}`, async () => {
        let params = c.params;
        let state = c.state;
        const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
        for (let k = 0; k < c.grads.length; k++) {
          const res = await callBytes('POST', '/v1/adam/step', stepFile(c, params, c.grads[k], state), { 'content-type': ST });
          expect(res.status, new TextDecoder().decode(res.bytes).slice(0, 300)).toBe(200);
          expect(res.type).toBe(ST);
          const out = asJson(res.bytes, c.params, Boolean(c.hyperparams.amsgrad));
          const expected = byIndex.get(k);
          if (expected) {
            if (c.dtype === 'float32') {
              sameBits(out.params, expected.params, `${c.name} step ${k} params`);
              sameBits(out.state.m, expected.state.m, `${c.name} step ${k} exp_avg`);
              sameBits(out.state.v, expected.state.v, `${c.name} step ${k} exp_avg_sq`);
              if (expected.state.v_max !== undefined) sameBits(out.state.v_max, expected.state.v_max, `${c.name} step ${k} max_exp_avg_sq`);
            } else {
              // float64: the JSON path's answer on the same inputs, bit for bit (it is itself checked against torch).
              const json = await postJson('/v1/adam/step', { params, grads: c.grads[k], state: state ?? undefined, hyperparams: c.hyperparams, dtype: c.dtype });
              expect(json.status).toBe(200);
              sameBits(out.params, json.body.params, `${c.name} step ${k} params`);
              sameBits(out.state.m, json.body.state.m, `${c.name} step ${k} m`);
              sameBits(out.state.v, json.body.state.v, `${c.name} step ${k} v`);
              expect(out.lr).toBe(json.body.lr);
            }
            expect(out.state.step).toBe(expected.state.step);
          }
          params = out.params;
          state = out.state as Case['state'];
        }
      });
    }
  }
});

describe('formats mix freely', () => {
  const c = (adam as unknown as { cases: Case[] }).cases.find((x) => x.dtype === 'float32')!;
  const jsonBody = { params: c.params, grads: c.grads[0], hyperparams: c.hyperparams, dtype: c.dtype };

  it('JSON in, safetensors out; safetensors in, JSON out: the JSON answer, bit for bit', async () => {
    const json = await postJson('/v1/adam/step', jsonBody);
    const jsonToBinary = await callBytes('POST', '/v1/adam/step', jsonBody, { accept: ST });
    expect(jsonToBinary.type).toBe(ST);
    expect(jsonToBinary.headers.get('vary')).toBe('Accept');
    const decoded = asJson(jsonToBinary.bytes, c.params, false);
    sameBits(decoded.params, json.body.params, 'params');
    sameBits(decoded.state.m, json.body.state.m, 'm');
    expect(decoded.lr).toBe(json.body.lr);
    const binaryToJson = await callBytes('POST', '/v1/adam/step', stepFile(c, c.params, c.grads[0], null), { 'content-type': ST, accept: 'application/json' });
    expect(binaryToJson.type).toMatch(/^application\/json/);
    const { params, state, lr } = binaryToJson.body;
    // A bare tensor comes back bare, a named tree flat (one level of dotted names).
    expect({ params, state, lr }).toEqual(json.body);
  });

  it('negotiates by Accept q-values and answers 406 when nothing fits', async () => {
    const pick = async (accept: string) => (await callBytes('POST', '/v1/adam/step', jsonBody, { accept })).type;
    expect(await pick('*/*')).toMatch(/^application\/json/);
    expect(await pick(`${ST};q=0.9, application/json;q=0.5`)).toBe(ST);
    expect(await pick(`${ST};q=0.1, */*;q=0.5`)).toMatch(/^application\/json/);
    expect(await pick('application/*')).toMatch(/^application\/json/);
    const refused = await callBytes('POST', '/v1/adam/step', jsonBody, { accept: 'text/csv' });
    expectProblem(refused, 406, 'Accept');
    expectProblem(await callBytes('POST', '/v1/adam/step', jsonBody, { accept: `${ST};q=0, application/json;q=0` }), 406, 'Accept');
  });

  it('raw bodies have no names: 415 for the stateless step', async () => {
    expectProblem(await callBytes('POST', '/v1/adam/step', new Uint8Array(8), { 'content-type': 'application/octet-stream' }), 415);
  });

  it('hyperparameters come from the query or __metadata__, not both; a JSON body refuses query hyperparameters', async () => {
    const file = writeSafetensors([...slotTensors('params', [1, 2], 'F64'), ...slotTensors('grads', [0.5, -1], 'F64')]);
    const viaQuery = await callBytes('POST', '/v1/adam/step?lr=0.1&amsgrad=true&dtype=float64', file, { 'content-type': ST, accept: 'application/json' });
    const viaJson = await postJson('/v1/adam/step', { params: [1, 2], grads: [0.5, -1], hyperparams: { lr: 0.1, amsgrad: true }, dtype: 'float64' });
    expect(viaQuery.body).toEqual(viaJson.body);
    const both = writeSafetensors([...slotTensors('params', [1, 2], 'F64'), ...slotTensors('grads', [0.5, -1], 'F64')], { hyperparams: '{"lr": 0.2}' });
    expectProblem(await callBytes('POST', '/v1/adam/step?lr=0.1', both, { 'content-type': ST }), 422, 'lr');
    expectProblem(await callBytes('POST', '/v1/adam/step?lr=x', file, { 'content-type': ST }), 422, 'lr');
    expectProblem(await callBytes('POST', '/v1/adam/step?bogus=1', file, { 'content-type': ST }), 422, 'bogus');
    expectProblem(await callBytes('POST', '/v1/adam/step?lr=0.1', jsonBody), 422, 'lr');
  });

  it('__metadata__.dtype alone sets the dtype the tensors are read in, as ?dtype= does (found by test/fuzz/stateless-step.test.ts)', async () => {
    // It was ignored while decoding: F32 tensors with dtype "float64" were a 422 ("read as float32"),
    // and F64 gradients beside F32 params a 422 ("does not fit a float32 step").
    const json = await postJson('/v1/adam/step', { params: [1, 2], grads: [0.5, -1], dtype: 'float64' });
    for (const grads of ['F32', 'F64'] as const) {
      const tensors = [...slotTensors('params', [1, 2], 'F32'), ...slotTensors('grads', [0.5, -1], grads)];
      const viaMetadata = await callBytes('POST', '/v1/adam/step', writeSafetensors(tensors, { dtype: 'float64' }), { 'content-type': ST, accept: 'application/json' });
      const viaQuery = await callBytes('POST', '/v1/adam/step?dtype=float64', writeSafetensors(tensors), { 'content-type': ST, accept: 'application/json' });
      expect(viaMetadata.status, new TextDecoder().decode(viaMetadata.bytes)).toBe(200);
      expect(viaMetadata.body).toEqual(viaQuery.body);
      expect(viaMetadata.body).toEqual(json.body);
    }
    const narrowing = writeSafetensors([...slotTensors('params', [1, 2], 'F64'), ...slotTensors('grads', [0.5, -1], 'F64')], { dtype: 'float32' });
    expectProblem(await callBytes('POST', '/v1/adam/step', narrowing, { 'content-type': ST }), 422, 'safetensors.params.dtype');
  });

  it('reads the step, schedule and metrics from __metadata__', async () => {
    const schedule = { type: 'cosine', lr: 0.01, total_steps: 100 };
    const state = { step: 10, m: [0.01, -0.02], v: [1e-4, 4e-4] };
    const json = await postJson('/v1/adam/step', { params: [1, -2], grads: [0.1, -0.2], state, schedule });
    const file = writeSafetensors(
      [...slotTensors('params', [1, -2], 'F32'), ...slotTensors('grads', [0.1, -0.2], 'F32'), ...slotTensors('exp_avg', state.m, 'F32'), ...slotTensors('exp_avg_sq', state.v, 'F32')],
      { step: '10', schedule: JSON.stringify(schedule) },
    );
    const res = await callBytes('POST', '/v1/adam/step', file, { 'content-type': ST, accept: 'application/json' });
    expect(res.body).toEqual(json.body);
    const withLr = writeSafetensors([...slotTensors('params', [1], 'F32'), ...slotTensors('grads', [1], 'F32')], { schedule: JSON.stringify(schedule), hyperparams: '{"lr": 0.1}' });
    expectProblem(await callBytes('POST', '/v1/adam/step', withLr, { 'content-type': ST }), 422, 'hyperparams.lr');
  });
});

describe('lower-precision gradients', () => {
  // Values exactly representable in bfloat16 and float16.
  const grads = [0.5, -1.5, 0.09375, 3, -0.0078125, 0];
  const params = [1, -2, 0.25, 3, 4, -5];
  for (const dtype of ['F16', 'BF16'] as const) {
    for (const stepDtype of ['float32', 'float64'] as const) {
      it(`${dtype} gradients widen exactly into a ${stepDtype} step`, async () => {
        const pdt: Dt = stepDtype === 'float32' ? 'F32' : 'F64';
        const file = writeSafetensors([...slotTensors('params', { w: params }, pdt), { name: 'grads/w', dtype, shape: [6], data: encodeValues(grads, dtype) }]);
        const res = await callBytes('POST', '/v1/adam/step', file, { 'content-type': ST, accept: 'application/json' });
        const json = await postJson('/v1/adam/step', { params: { w: params }, grads: { w: grads }, dtype: stepDtype });
        expect(res.status).toBe(200);
        expect(res.body).toEqual(json.body);
      });
    }
  }
  it('float32 gradients widen into a float64 step; float64 never narrows into float32', async () => {
    const f32 = writeSafetensors([...slotTensors('params', [1, 2], 'F64'), ...slotTensors('grads', [0.1, 0.2], 'F32')]);
    const res = await callBytes('POST', '/v1/adam/step', f32, { 'content-type': ST, accept: 'application/json' });
    const json = await postJson('/v1/adam/step', { params: [1, 2], grads: [Math.fround(0.1), Math.fround(0.2)], dtype: 'float64' });
    expect(res.body).toEqual(json.body);
    const f64 = writeSafetensors([...slotTensors('params', [1, 2], 'F32'), ...slotTensors('grads', [0.1, 0.2], 'F64')], { dtype: 'float32' });
    expectProblem(await callBytes('POST', '/v1/adam/step?dtype=float32', f64, { 'content-type': ST }), 422, 'safetensors.grads.dtype');
  });
});

describe('malformed safetensors bodies: 4xx naming the problem', () => {
  const p = encodeValues([1, 2], 'F32');
  const g = encodeValues([0.5, 0.5], 'F32');
  const good = (over: Record<string, unknown> = {}) =>
    JSON.stringify({ params: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, grads: { dtype: 'F32', shape: [2], data_offsets: [8, 16] }, ...over });
  const send = (bytes: Uint8Array) => callBytes('POST', '/v1/adam/step', bytes, { 'content-type': ST });

  it('accepts the well-formed file these cases break', async () => {
    expect((await send(rawSafetensors(good(), [p, g]))).status).toBe(200);
  });

  const cases: Array<[string, () => Uint8Array, number, string?]> = [
    ['shorter than 8 bytes', () => new Uint8Array(5), 422, 'safetensors'],
    ['a header length beyond the body', () => rawSafetensors(good(), [p, g], 10_000), 422, 'safetensors.header'],
    ['a header length above the limit', () => rawSafetensors(good(), [p, g], 0xffffffff), 413, 'safetensors.header'],
    ['a header that is not JSON', () => rawSafetensors('{"params": nope', [p, g]), 422, 'safetensors.header'],
    ['a header that is not an object', () => rawSafetensors('[1, 2]', [p, g]), 422, 'safetensors.header'],
    ['overlapping data_offsets', () => rawSafetensors(good({ grads: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }), [p, g]), 422, 'safetensors.grads.data_offsets'],
    ['a hole between tensors', () => rawSafetensors(good({ grads: { dtype: 'F32', shape: [2], data_offsets: [12, 20] } }), [p, new Uint8Array(4), g]), 422, 'safetensors.grads.data_offsets'],
    ['data_offsets beyond the data', () => rawSafetensors(good({ grads: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }), [p, g.subarray(0, 4)]), 422, 'safetensors.data'],
    ['more data than the tensors cover', () => rawSafetensors(good(), [p, g, new Uint8Array(8)]), 422, 'safetensors.data'],
    ['an unknown dtype', () => rawSafetensors(good({ grads: { dtype: 'I32', shape: [2], data_offsets: [8, 16] } }), [p, g]), 422, 'safetensors.grads.dtype'],
    ['a shape that disagrees with the bytes', () => rawSafetensors(good({ grads: { dtype: 'F32', shape: [3], data_offsets: [8, 16] } }), [p, g]), 422, 'safetensors.grads.data_offsets'],
    ['a negative or fractional dimension', () => rawSafetensors(good({ grads: { dtype: 'F32', shape: [-2], data_offsets: [8, 16] } }), [p, g]), 422, 'safetensors.grads.shape'],
    ['a duplicated tensor name', () => rawSafetensors(good().replace('}}', '}, "grads": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}'), [p, g]), 422, 'safetensors.grads'],
    ['metadata that is not strings', () => rawSafetensors(good({ __metadata__: { step: 3 } }), [p, g]), 422, 'safetensors.__metadata__.step'],
    ['an unknown field in a tensor', () => rawSafetensors(good({ grads: { dtype: 'F32', shape: [2], data_offsets: [8, 16], extra: 1 } }), [p, g]), 422, 'safetensors.grads.extra'],
    ['a tensor outside the slots', () => rawSafetensors(good({ 'weights/x': { dtype: 'F32', shape: [0], data_offsets: [16, 16] } }), [p, g]), 422, 'safetensors["weights/x"]'],
    ['missing gradients', () => rawSafetensors(JSON.stringify({ params: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }), [p]), 422, 'safetensors.grads'],
    ['gradients of another shape', () => rawSafetensors(good({ grads: { dtype: 'F32', shape: [2, 1], data_offsets: [8, 16] } }), [p, g]), 422, 'safetensors.grads.shape'],
    ['a NaN gradient', () => rawSafetensors(good(), [p, encodeValues([0.5, NaN], 'F32')]), 422, 'safetensors.grads[1]'],
    ['an infinite parameter', () => rawSafetensors(good(), [encodeValues([Infinity, 1], 'F32'), g]), 422, 'safetensors.params[0]'],
    ['state without its step count (JSON: state.step is required)', () => rawSafetensors(good({ exp_avg: { dtype: 'F32', shape: [2], data_offsets: [16, 24] }, exp_avg_sq: { dtype: 'F32', shape: [2], data_offsets: [24, 32] } }), [p, g, g, g]), 422, '__metadata__.step'],
    ['half of the state', () => rawSafetensors(good({ __metadata__: { step: '0' }, exp_avg: { dtype: 'F32', shape: [2], data_offsets: [16, 24] } }), [p, g, g]), 422, 'safetensors.exp_avg_sq'],
    ['a step count without state', () => rawSafetensors(good({ __metadata__: { step: '4' } }), [p, g]), 422, 'safetensors.exp_avg'],
    ['a negative second moment', () => rawSafetensors(good({ __metadata__: { step: '1' }, exp_avg: { dtype: 'F32', shape: [2], data_offsets: [16, 24] }, exp_avg_sq: { dtype: 'F32', shape: [2], data_offsets: [24, 32] } }), [p, g, g, encodeValues([1, -1], 'F32')]), 422, 'safetensors.exp_avg_sq[1]'],
    ['metadata hyperparams that are not JSON', () => rawSafetensors(good({ __metadata__: { hyperparams: '{lr' } }), [p, g]), 422, '__metadata__.hyperparams'],
    ['an invalid hyperparameter in metadata', () => rawSafetensors(good({ __metadata__: { hyperparams: '{"beta1": 1.5}' } }), [p, g]), 422, 'hyperparams.beta1'],
  ];
  for (const [what, make, status, field] of cases) {
    it(what, async () => {
      const res = await send(make());
      expectProblem(res, status, field);
      expect(res.bytes.length).toBeLessThan(4096);
    });
  }
});
