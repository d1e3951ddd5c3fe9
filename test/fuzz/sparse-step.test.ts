// Property-based tests of sparse (row) gradients on the stateless steps that take them (SGD,
// Adagrad, SparseAdam): random shapes, rows (repeated, unordered, none), values and
// hyperparameters, two steps with the answered state sent back. Properties: the JSON answer is the
// reference step (src/optim/engine.ts called directly, whose kernels the torch fixtures of
// test/optim-sparse.test.ts check) bit for bit, or the 422 the reference predicts; the same request
// as a safetensors file (grads.indices/…, grads.values/…) answers the same numbers.

import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { engineStep, treeState } from '../../src/optim/engine.ts';
import { initState, type OptimizerDef } from '../../src/optim/optimizer.ts';
import { optimizerDef } from '../../src/optim/registry.ts';
import { familySchemas } from '../../src/schemas/family.ts';
import { PROPERTY_TIMEOUT_MS, expectBits, fuzz, reportCases, sendSane } from '../helpers/fuzz.ts';
import { encodeValues, writeSafetensors, type Dt, type TestTensor } from '../helpers/safetensors.ts';

afterAll(() => reportCases('sparse-step'));

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;
type Dtype = 'float32' | 'float64';

interface SparseCase {
  optimizer: 'sgd' | 'adagrad' | 'sparse_adam';
  dtype: Dtype;
  hp: Record<string, number | boolean>;
  shape: number[];
  params: number[];
  steps: Array<{ indices: number[]; values: number[] }>;
}

const round = (dtype: Dtype) => (x: number) => (dtype === 'float32' ? Math.fround(x) : x);
const value = fc.double({ min: -4, max: 4, noNaN: true, noDefaultInfinity: true });

const sparseCase: fc.Arbitrary<SparseCase> = fc
  .record({
    optimizer: fc.constantFrom<SparseCase['optimizer']>('sgd', 'adagrad', 'sparse_adam'),
    dtype: fc.constantFrom<Dtype>('float32', 'float64'),
    shape: fc.tuple(fc.integer({ min: 1, max: 6 }), fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 })).map(([r, rest]) => [r, ...rest]),
    momentum: fc.constantFrom(0, 0, 0.9),
    dampening: fc.constantFrom(0, 0.5),
    lrDecay: fc.constantFrom(0, 0.1),
    initial: fc.constantFrom(0, 0.5),
    maximize: fc.boolean(),
    lr: fc.constantFrom(0.01, 0.1, 0.5),
    seed: fc.array(value, { minLength: 200, maxLength: 200 }),
    rows: fc.array(fc.array(fc.nat(), { maxLength: 7 }), { minLength: 2, maxLength: 2 }),
  })
  .map((r) => {
    const rowSize = r.shape.slice(1).reduce((a, b) => a * b, 1);
    const size = r.shape[0]! * rowSize;
    const hp: Record<string, number | boolean> =
      r.optimizer === 'sgd'
        ? { lr: r.lr, momentum: r.momentum, dampening: r.dampening, maximize: r.maximize }
        : r.optimizer === 'adagrad'
          ? { lr: r.lr, lr_decay: r.lrDecay, initial_accumulator_value: r.initial, maximize: r.maximize }
          : { lr: r.lr, maximize: r.maximize };
    let at = 0;
    const next = () => round(r.dtype)(r.seed[at++ % r.seed.length]!);
    const params = Array.from({ length: size }, next);
    const steps = r.rows.map((rows) => {
      const indices = rows.map((i) => i % r.shape[0]!);
      return { indices, values: Array.from({ length: indices.length * rowSize }, next) };
    });
    return { optimizer: r.optimizer, dtype: r.dtype, hp, shape: r.shape, params, steps };
  });

/** Nested arrays of `shape` from flat values. */
function nest(values: number[], shape: number[]): unknown {
  if (shape.length === 0) return values[0];
  const [d, ...rest] = shape;
  const inner = rest.reduce((a, b) => a * b, 1);
  return Array.from({ length: d! }, (_, i) => nest(values.slice(i * inner, (i + 1) * inner), rest));
}
const flat = (v: unknown): number[] => (Array.isArray(v) ? v.flatMap(flat) : [v as number]);

/** JSON text that keeps the sign of zero (the answers write -0.0; JSON.stringify would write 0). */
const jsonKeepingSigns = (body: unknown): string =>
  JSON.stringify(body, (_, v) => (Object.is(v, -0) ? '\u0000-0' : v)).replaceAll('"\\u0000-0"', '-0.0');

type Expected = { ok: true; params: number[]; slots: Record<string, number[]>; step: number } | { ok: false };

/** The reference: the engine run directly on the case's steps, state carried over. */
function reference(c: SparseCase): Expected[] {
  const def = optimizerDef(c.optimizer) as AnyDef;
  const hp = familySchemas(def).hyperparams.parse(c.hp) as Record<string, number | boolean>;
  const Arr = c.dtype === 'float32' ? Float32Array : Float64Array;
  const params = Arr.from(c.params);
  const state = treeState(initState(def, hp, c.dtype, params.length), 1);
  const rowSize = c.shape.slice(1).reduce((a, b) => a * b, 1);
  const out: Expected[] = [];
  for (const s of c.steps) {
    // torch 1.13 raises for no rows on a tensor of 2+ dimensions by its last one: Adagrad when it is 2
    // or more, SparseAdam when it is not 0 (checked with torch on 13 shapes); SGD never.
    const last = c.shape[c.shape.length - 1]!;
    const raises = c.optimizer === 'adagrad' ? last > 1 : c.optimizer === 'sparse_adam' ? last !== 0 : false;
    if (s.indices.length === 0 && c.shape.length >= 2 && raises) return [...out, { ok: false }];
    const outcome = engineStep({
      def,
      dtype: c.dtype,
      tensors: [{ offset: 0, size: params.length, shape: c.shape }],
      groupHp: [hp],
      groupOf: [0],
      params,
      grads: new Arr(params.length),
      frozen: [false],
      sparse: [{ rows: Int32Array.from(s.indices), values: Arr.from(s.values), rowSize }],
      state,
      nonfinite: 'error',
    });
    if (!outcome.applied) return [...out, { ok: false }];
    const slots = Object.fromEntries(Object.entries(state.slots).filter(([k, a]) => a !== null && state.held[k]![0]).map(([k, a]) => [k, [...a!]]));
    out.push({ ok: true, params: [...params], slots, step: state.step });
  }
  return out;
}

describe('sparse gradients, any rows', () => {
  it('the JSON answer is the reference step bit for bit (or its 422), and safetensors answers the same', { timeout: PROPERTY_TIMEOUT_MS }, async () => {
    await fuzz(
      fc.asyncProperty(sparseCase, async (c) => {
        const want = reference(c);
        let params: unknown = nest(c.params, c.shape);
        let state: Record<string, unknown> | undefined;
        for (let k = 0; k < want.length; k++) {
          const s = c.steps[k]!;
          const rowShape = c.shape.slice(1);
          const rowSize = rowShape.reduce((a, b) => a * b, 1);
          const grads = { indices: s.indices, values: s.indices.map((_, i) => nest(s.values.slice(i * rowSize, (i + 1) * rowSize), rowShape)) };
          const body = { params, grads, hyperparams: c.hp, dtype: c.dtype, ...(state ? { state } : {}) };
          const a = await sendSane({ method: 'POST', path: `/v1/${c.optimizer}/step`, headers: { 'content-type': 'application/json' }, body: jsonKeepingSigns(body) });
          const w = want[k]!;
          if (!w.ok) {
            expect(a.status, a.text.slice(0, 300)).toBe(422);
            return;
          }
          expect(a.status, a.text.slice(0, 300)).toBe(200);
          const answer = JSON.parse(a.text) as { params: unknown; state: Record<string, unknown> };
          expectBits(flat(answer.params), w.params, `step ${k} params`);
          for (const [slot, values] of Object.entries(w.slots)) expectBits(flat(answer.state[slot]), values, `step ${k} ${slot}`);

          // The same request as a safetensors file, answered in JSON.
          const dt: Dt = c.dtype === 'float32' ? 'F32' : 'F64';
          const tensors: TestTensor[] = [
            { name: 'params', dtype: dt, shape: c.shape, data: encodeValues(flat(params), dt) },
            { name: 'grads.indices', dtype: 'I32' as Dt, shape: [s.indices.length], data: new Uint8Array(Int32Array.from(s.indices).buffer) },
            { name: 'grads.values', dtype: dt, shape: [s.indices.length, ...rowShape], data: encodeValues(s.values, dt) },
            ...Object.entries(state ?? {})
              .filter(([slot]) => slot !== 'step')
              .map(([slot, v]) => ({ name: slot, dtype: dt, shape: c.shape, data: encodeValues(flat(v), dt) })),
          ];
          const metadata = { hyperparams: JSON.stringify(c.hp), dtype: c.dtype, step: String(state?.step ?? 0) };
          const file = writeSafetensors(tensors, metadata);
          const b = await sendSane({ method: 'POST', path: `/v1/${c.optimizer}/step`, headers: { 'content-type': 'application/vnd.safetensors', accept: 'application/json' }, body: file });
          expect(b.status, b.text.slice(0, 300)).toBe(200);
          expect(b.text).toBe(a.text);
          params = answer.params;
          state = answer.state;
        }
      }),
      300,
    );
  });
});
