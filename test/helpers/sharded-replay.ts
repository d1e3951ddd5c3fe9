// The replay of torch trajectories through sharded hosted optimizers, shared by test/hosted-sharded*.test.ts
// (split so that no one test file imports more fixture modules than the test runner carries in one message).

import { describe, expect, it } from 'vitest';
import { call, callBytes } from './http.ts';
import { authed, expectProblem, opCall, parse, type Created } from './optimizers.ts';
import { decodeValues, readSafetensors, writeSafetensors } from './safetensors.ts';
import { leavesOf, zipLeaves } from './trees.ts';

export interface Case {
  name: string;
  optimizer: string;
  dtype: 'float32' | 'float64';
  hyperparams: Record<string, number | boolean>;
  clip?: { type: 'norm'; max_norm: number } | { type: 'value'; clip_value: number };
  params: unknown;
  state: unknown;
  grads: unknown[];
  expected: Array<{ step_index: number; params: unknown; total_norm?: number; state?: Record<string, unknown> }>;
}

// Sharding needs two rows at least: single-element models stay out.
export const plain = (file: { cases: unknown[] }) => (file.cases as Case[]).filter((c) => c.state === null && !JSON.stringify(c.grads).includes('null') && leavesOf(c.params).length > 1);

/** Values in the tree's own key order (the layout's order; leavesOf sorts keys). */
export const flat = (tree: unknown): number[] => (Array.isArray(tree) ? tree.flatMap(flat) : tree !== null && typeof tree === 'object' ? Object.values(tree).flatMap(flat) : [tree as number]);
export const bytesOf = (dtype: Case['dtype'], xs: number[]) => new Uint8Array((dtype === 'float32' ? new Float32Array(xs) : new Float64Array(xs)).buffer);
const valuesOf = (dtype: Case['dtype'], b: Uint8Array) => [...(dtype === 'float32' ? new Float32Array(b.slice().buffer) : new Float64Array(b.slice().buffer))];
/** A fixture tree's tensors by dotted name, in layout order (a bare tensor is named ''). */
export function namedOf(tree: unknown, prefix: string[] = []): Array<{ name: string; shape: number[]; values: number[] }> {
  const shapeOf = (t: unknown): number[] => (Array.isArray(t) ? [t.length, ...shapeOf(t[0])] : []);
  if (tree !== null && typeof tree === 'object' && !Array.isArray(tree)) return Object.entries(tree).flatMap(([k, v]) => namedOf(v, [...prefix, k]));
  return [{ name: prefix.join('.'), shape: shapeOf(tree), values: flat(tree) }];
}
const mediaOf = (dtype: Case['dtype']) => `application/octet-stream; dtype=${dtype === 'float32' ? 'F32' : 'F64'}`;
/** Leaf-by-leaf differences, bit for bit (-0 is not +0). */
export const diffs = (label: string, actual: unknown, expected: unknown) =>
  zipLeaves(actual, expected)
    .filter(({ a, e }) => !Object.is(a, e))
    .map(({ path, a, e }) => `${label}${path}: ${a} != torch ${e}`);

const hyperparamsOf = (c: Case) => ({ ...c.hyperparams, ...(c.clip?.type === 'norm' ? { clip_grad_norm: c.clip.max_norm } : c.clip ? { clip_grad_value: c.clip.clip_value } : {}) });

/** Creates `c` sharded over 3 objects, or 2 when 3 cannot be placed (too few rows). */
async function createSharded(c: Case): Promise<Created> {
  for (const shards of [3, 2]) {
    const r = await parse(await call('POST', '/v1/optimizers', { optimizer: c.optimizer, dtype: c.dtype, params: c.params, hyperparams: hyperparamsOf(c), shards }));
    if (r.status === 201) {
      expect(r.body.shards).toBe(shards);
      return { id: r.body.id, token: r.body.token, body: r.body, location: null, etag: r.headers.get('etag') };
    }
    expectProblem(r, 413);
  }
  throw new Error(`${c.name}: cannot be sharded`);
}


/** Every case of `cases` replayed over 2 or 3 shards, steps in turn in JSON, raw and safetensors; params equal torch's at every recorded step. */
export function replaySharded(title: string, CASES: Case[], optimizers: string[]): void {
describe(`${title}: sharded optimizers equal torch 1.13 bit for bit`, () => {
  it('the fixtures hold cases of every kind asked for', () => {
    expect(new Set(CASES.map((c) => c.optimizer))).toEqual(new Set(optimizers));
  });

  it.each(CASES.map((c) => [c.name, c] as const))('%s: steps in turn in JSON, raw and safetensors', async (_name, c) => {
    const opt = await createSharded(c);
    const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
    const problems: string[] = [];
    for (let s = 0; s < c.grads.length; s++) {
      const e = byIndex.get(s);
      if (s % 3 === 2) {
        // safetensors, its tensors in reverse order (data order need not be the layout's), answered as safetensors.
        const named = namedOf(c.grads[s]);
        const file = writeSafetensors(named.reverse().map((t) => ({ name: t.name, dtype: c.dtype === 'float32' ? 'F32' : 'F64', shape: t.shape, data: bytesOf(c.dtype, t.values) })));
        const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, file, authed(opt.token, { 'content-type': 'application/vnd.safetensors', accept: 'application/vnd.safetensors' }));
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        const read = readSafetensors(r.bytes);
        expect(read.metadata?.step).toBe(String(s + 1));
        if (e) problems.push(...diffs(`step ${s} params`, read.order.flatMap((n) => decodeValues(read.tensors.get(n)!)), flat(e.params)));
      } else if (s % 3 === 0) {
        const r = await opCall('POST', opt, '/step', { grads: c.grads[s] });
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expect(r.body.step).toBe(s + 1);
        if (e) problems.push(...diffs(`step ${s} params`, r.body.params, e.params));
        if (e?.total_norm !== undefined) expect(r.body.grad_norm, `step ${s}`).toBe(e.total_norm);
      } else {
        const r = await callBytes('POST', `/v1/optimizers/${opt.id}/step`, bytesOf(c.dtype, flat(c.grads[s])), authed(opt.token, { 'content-type': mediaOf(c.dtype), accept: 'application/octet-stream' }));
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expect(r.headers.get('step')).toBe(String(s + 1));
        if (e) problems.push(...diffs(`step ${s} params`, valuesOf(c.dtype, r.bytes), flat(e.params)));
      }
    }
    expect(problems.slice(0, 10)).toEqual([]);
    // The last params once more, gathered from the shards, in every format.
    const last = c.expected[c.expected.length - 1]!;
    if (last.step_index === c.grads.length - 1) {
      expect(diffs('GET params', (await opCall('GET', opt, '/params')).body.params, last.params)).toEqual([]);
      const file = await callBytes('GET', `/v1/optimizers/${opt.id}/params`, undefined, authed(opt.token, { accept: 'application/vnd.safetensors' }));
      const read = readSafetensors(file.bytes);
      expect(diffs('safetensors params', read.order.flatMap((n) => decodeValues(read.tensors.get(n)!)), flat(last.params))).toEqual([]);
      // The state gathered from every shard (JSON snapshot; Adam's slots under its m, v, v_max; AdamW's under torch's names): torch's step, scalars and slots.
      const snapshot = (await opCall('GET', opt, '/state')).body as Record<string, unknown>;
      const field: Record<string, string> = c.optimizer === 'adam' ? { exp_avg: 'm', exp_avg_sq: 'v', max_exp_avg_sq: 'v_max' } : {};
      for (const [k, v] of Object.entries(last.state ?? {})) {
        if (v === null || (typeof v === 'object' && leavesOf(v).some((l) => l.value === null))) continue;
        expect(Object.keys(snapshot), `state ${k}`).toContain(field[k] ?? k);
        expect(diffs(`state ${k}`, snapshot[field[k] ?? k], v), `state ${k}`).toEqual([]);
      }
    }
    const history = (await opCall('GET', opt, '/history')).body.entries as Array<{ step: number }>;
    expect(history.map((h) => h.step)).toEqual(c.grads.map((_, i) => i + 1));
  });
});
}
