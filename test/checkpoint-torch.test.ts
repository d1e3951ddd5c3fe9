// Checkpoints made by real torch (test/fixtures/checkpoint: generate.py trains with torch 1.13's
// Adam/AdamW and exports with adam_api.checkpoint's from_torch, clients/python), restored through
// PUT /state and stepped with the gradients torch was fed next. At every step the params, moments
// and lr must be torch's: float32 bit for bit; float64 within 1e-12 of scale, and bit for bit too.
// The checkpoint GET /state returns must have the fixture's tensor names, dtypes, shapes and the
// metadata to_torch reads, and PUT back.

import { describe, expect, it } from 'vitest';
import fixtures from './fixtures/checkpoint/checkpoint.json';
import adamF32 from './fixtures/checkpoint/mlp-adam-f32.safetensors';
import adamL2F64 from './fixtures/checkpoint/mlp-adam-l2-f64.safetensors';
import adamwAmsgradStepLr from './fixtures/checkpoint/mlp-adamw-amsgrad-steplr-f32.safetensors';
import freshMaximize from './fixtures/checkpoint/mlp-adam-fresh-maximize-f32.safetensors';
import { callBytes } from './helpers/http.ts';
import { authed, createOptimizer, expectProblem, opCall, type Created } from './helpers/optimizers.ts';
import { decodeValues, encodeValues, readSafetensors, writeSafetensors, type Dt } from './helpers/safetensors.ts';
import { zipLeaves } from './helpers/trees.ts';

type Tree = Record<string, unknown>;
interface TorchState {
  step: number;
  params: Tree;
  exp_avg: Tree;
  exp_avg_sq: Tree;
  max_exp_avg_sq?: Tree;
}
interface Case {
  name: string;
  file: string;
  dtype: 'float32' | 'float64';
  hyperparams: Record<string, number | boolean> & { lr: number };
  schedule: Record<string, unknown> | null;
  names: string[];
  shapes: Record<string, number[]>;
  export_step: number;
  exported: TorchState;
  steps: Array<TorchState & { lr: number; grads: Tree }>;
}

const FILES: Record<string, ArrayBuffer> = {
  'mlp-adam-f32.safetensors': adamF32,
  'mlp-adam-l2-f64.safetensors': adamL2F64,
  'mlp-adamw-amsgrad-steplr-f32.safetensors': adamwAmsgradStepLr,
  'mlp-adam-fresh-maximize-f32.safetensors': freshMaximize,
};
const cases = (fixtures as unknown as { cases: Case[] }).cases;

const ST = 'application/vnd.safetensors';
const RAW = 'application/octet-stream';
const flatOf = (t: unknown): number[] => (Array.isArray(t) ? (t as unknown[]).flat(Infinity) : [t]) as number[];

const binary = (opt: Pick<Created, 'id' | 'token'>, method: string, path: string, body?: Uint8Array, headers: Record<string, string> = {}) =>
  callBytes(method, `/v1/optimizers/${opt.id}${path}`, body, authed(opt.token, headers));

/** The JSON snapshot's slots under torch's names. */
async function stateOf(opt: Created): Promise<TorchState> {
  const { status, body } = await opCall('GET', opt, '/state');
  expect(status).toBe(200);
  return { step: body.step, params: body.params, exp_avg: body.m, exp_avg_sq: body.v, ...(body.v_max ? { max_exp_avg_sq: body.v_max } : {}) };
}

const torchState = ({ step, params, exp_avg, exp_avg_sq, max_exp_avg_sq }: TorchState): TorchState => ({
  step,
  params,
  exp_avg,
  exp_avg_sq,
  ...(max_exp_avg_sq ? { max_exp_avg_sq } : {}),
});

const exact = { same: 0, total: 0 };

/** torch's values: float32 bit for bit; float64 within 1e-12·max(|x|, lr) (params) or 1e-12·|x| (moments), counting exact ones. */
function expectTorch(got: TorchState, want: TorchState, c: Case, where: string) {
  expect(got.step, `${where} step`).toBe(want.step);
  expect(Object.keys(got).sort(), where).toEqual(Object.keys(want).sort());
  for (const slot of ['params', 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'] as const) {
    if (!want[slot]) continue;
    for (const { path, a, e } of zipLeaves(got[slot], want[slot])) {
      exact.total++;
      if (Object.is(a, e)) {
        exact.same++;
        continue;
      }
      const floor = slot === 'params' ? Math.max(Math.abs(e), c.hyperparams.lr) : Math.abs(e);
      if (c.dtype === 'float32' || !(Math.abs(a - e) <= 1e-12 * floor + 1e-300)) expect.fail(`${where} ${slot}${path}: ${a}, torch ${e}`);
    }
  }
}

/** Tensors of a tree in the optimizer's layout order as raw little-endian bytes of its dtype. */
function rawOf(tree: Tree, layout: Array<{ name: string }>, dt: Dt): Uint8Array {
  return encodeValues(layout.flatMap((l) => flatOf(tree[l.name])), dt);
}

/** The same tensors as a safetensors file, in reverse order (names, not order, place them). */
const safetensorsOf = (tree: Tree, c: Case, dt: Dt) =>
  writeSafetensors(c.names.toReversed().map((name) => ({ name, dtype: dt, shape: c.shapes[name]!, data: encodeValues(flatOf(tree[name]), dt) })));

describe('torch checkpoints (from_torch) through PUT /state, continued as torch continued', () => {
  for (const c of cases) {
    it(`${c.name}: ${c.export_step} steps in torch, then ${c.steps.length} here, torch's numbers at every step`, async () => {
      const file = new Uint8Array(FILES[c.file]!);
      const dt: Dt = c.dtype === 'float32' ? 'F32' : 'F64';
      // Two optimizers from the same checkpoint: one stepped with JSON, one with raw and safetensors bodies.
      const viaJson = await createOptimizer({ params: [0] });
      const viaBinary = await createOptimizer({ params: [0], dtype: c.dtype === 'float32' ? 'float64' : 'float32' });
      for (const opt of [viaJson, viaBinary]) {
        const put = await binary(opt, 'PUT', '/state', file, { 'content-type': ST });
        expect(put.status, JSON.stringify(put.body)).toBe(200);
        expect(put.body).toMatchObject({ step: c.export_step, dtype: c.dtype, shapes: c.shapes, hyperparams: c.hyperparams, schedule: c.schedule });
        expect(put.body.next_lr).toBe(c.steps[0]!.lr);
        expectTorch(await stateOf(opt), c.exported, c, 'restored');
      }
      const layout: Array<{ name: string }> = (await opCall('GET', viaBinary, '')).body.layout;
      expect(layout.map((l) => l.name)).toEqual(c.names);

      for (const [i, want] of c.steps.entries()) {
        const where = `step ${c.export_step + i + 1}`;
        const j = await opCall('POST', viaJson, '/step', { grads: want.grads });
        expect(j.status, JSON.stringify(j.body)).toBe(200);
        expect(j.body.lr, `${where} lr`).toBe(want.lr);
        expectTorch({ ...torchState(want), params: j.body.params }, torchState(want), c, `${where} JSON answer`);

        const body = i % 2 === 0 ? rawOf(want.grads, layout, dt) : safetensorsOf(want.grads, c, dt);
        const b = await binary(viaBinary, 'POST', '/step', body, { 'content-type': i % 2 === 0 ? RAW : ST, accept: RAW });
        expect(b.status, JSON.stringify(b.body)).toBe(200);
        expect(Number(b.headers.get('lr')), `${where} lr`).toBe(want.lr);
        expect(b.bytes).toEqual(rawOf(want.params, layout, dt)); // the raw answer: torch's params, byte for byte

        expectTorch(await stateOf(viaJson), torchState(want), c, `${where} (JSON steps)`);
        expectTorch(await stateOf(viaBinary), torchState(want), c, `${where} (binary steps)`);
      }

      // The checkpoint GET /state returns: what to_torch reads, as from_torch wrote it.
      const fixture = readSafetensors(file);
      const got = await binary(viaJson, 'GET', '/state', undefined, { accept: ST });
      expect(got.type).toBe(ST);
      const answer = readSafetensors(got.bytes);
      const described = (f: typeof fixture) => [...f.tensors.values()].map((t) => `${t.name} ${t.dtype} [${t.shape.join(',')}]`).sort();
      expect(described(answer)).toEqual(described(fixture));
      expect(Object.keys(answer.metadata!)).toEqual(expect.arrayContaining(Object.keys(fixture.metadata!)));
      expect(answer.metadata!.step).toBe(String(c.steps.at(-1)!.step));
      expect(answer.metadata!.dtype).toBe(c.dtype);
      expect(JSON.parse(answer.metadata!.hyperparams!)).toEqual(c.hyperparams);
      expect(JSON.parse(answer.metadata!.schedule!)).toEqual(c.schedule);
      for (const name of c.names) {
        expect(decodeValues(answer.tensors.get(`step/${name}`)!)).toEqual([c.steps.at(-1)!.step]);
        expect(decodeValues(answer.tensors.get(`exp_avg/${name}`)!)).toEqual(flatOf(c.steps.at(-1)!.exp_avg[name]));
      }

      // ...and PUTs back: into a fresh optimizer, the state torch had after the last step.
      const again = await createOptimizer({ params: [0] });
      expect((await binary(again, 'PUT', '/state', got.bytes, { 'content-type': ST })).status).toBe(200);
      expectTorch(await stateOf(again), torchState(c.steps.at(-1)!), c, 're-PUT');
    });
  }

  it('every checked float64 value was bit-identical to torch, as every float32 one', () => {
    console.log(`checkpoint fixtures: ${exact.same}/${exact.total} values bit-identical to torch`);
    expect(exact.total).toBeGreaterThan(0);
    expect(exact.same).toBe(exact.total);
  });
});

describe('torch checkpoints that do not fit are refused, changing nothing', () => {
  it('names each problem with a 4xx problem+json', async () => {
    const c = cases.find((x) => x.hyperparams.amsgrad)!;
    const fixture = readSafetensors(new Uint8Array(FILES[c.file]!));
    const opt = await createOptimizer({ params: { w: [1, 2] } });
    const before = await stateOf(opt);
    const without = (drop: (name: string) => boolean, metadata = fixture.metadata!) =>
      writeSafetensors(fixture.order.filter((n) => !drop(n)).map((n) => fixture.tensors.get(n)!), metadata);
    const put = (body: Uint8Array, type = ST) => binary(opt, 'PUT', '/state', body, { 'content-type': type });
    const bytes = new Uint8Array(FILES[c.file]!);
    const checks: Array<[string, Promise<{ status: number; type: string; body: any }>, number, string?]> = [
      ['no max_exp_avg_sq with amsgrad', put(without((n) => n.startsWith('max_exp_avg_sq/'))), 422, 'safetensors.max_exp_avg_sq'],
      ['a parameter without its exp_avg', put(without((n) => n === 'exp_avg/fc2.bias')), 422, 'safetensors["exp_avg/fc2.bias"]'],
      // (A __metadata__.step other than the step/<name> tensors is no longer refused: with frozen tensors
      // each tensor has its own count, and the metadata's is the optimizer's, as a snapshot writes it.)
      ['a truncated file', put(bytes.subarray(0, bytes.length - 4)), 422, 'safetensors.data'],
      ['the file sent as JSON', put(bytes, 'application/json'), 400],
      ['the file sent as raw bytes', put(bytes, RAW), 415],
    ];
    for (const [what, pending, status, field] of checks) {
      const res = await pending;
      expect(res.status, `${what}: ${JSON.stringify(res.body)}`).toBe(status);
      expectProblem(res, status, field);
    }
    expect(await stateOf(opt)).toEqual(before);
  });
});
