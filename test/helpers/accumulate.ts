// Shared by test/hosted-accumulate.test.ts and test/hosted-sharded-accumulate.test.ts: a model of
// two tensors (b: 5, w: 3×7), awkward float32 gradients per worker and step, the independent float32
// reduction (numpy's ((g0 + g1) + g2) / np.float32(N)), and a contribution in any format.

import { expect } from 'vitest';
import { callBytes } from './http.ts';
import { authed, opCall, type Created } from './optimizers.ts';
import { encodeValues, writeSafetensors } from './safetensors.ts';
import { leavesOf } from './trees.ts';

export type Json = Record<string, any>;
export type Tree = { b: number[]; w: number[][] };
export type Format = 'json' | 'raw' | 'safetensors';

export const RAW = 'application/octet-stream';
export const ST = 'application/vnd.safetensors';

/** A deterministic generator of awkward float32 values (so that every add rounds). */
export function values(seed: number, count: number, scale = 1): number[] {
  let x = seed * 2654435761 + 12345;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out.push(Math.fround(((x / 2 ** 32) * 2 - 1) * scale * (1 + (i % 7) / 3)));
  }
  return out;
}

/** Keys sorted, so that leavesOf order is the layout order (raw bodies). */
export const tree = (flat: number[]): Tree => ({ b: flat.slice(0, 5), w: [flat.slice(5, 12), flat.slice(12, 19), flat.slice(19, 26)] });
export const flatOf = (t: unknown) => leavesOf(t).map((l) => l.value as number);
export const PARAMS = tree(values(1, 26));
/** Worker `w`'s gradient at step `s`. */
export const grad = (s: number, w: number) => values(100 + 10 * s + w, 26, 0.5 + w);

/** numpy float32: ((g0 + g1) + g2 + …) / np.float32(N), or the sum. */
export function reduced(gs: number[][], reduce: 'mean' | 'sum'): number[] {
  const acc = [...gs[0]!];
  for (const g of gs.slice(1)) for (let i = 0; i < acc.length; i++) acc[i] = Math.fround(acc[i]! + g[i]!);
  return reduce === 'mean' ? acc.map((x) => Math.fround(x / gs.length)) : acc;
}

export async function contribute(opt: Created, worker: number, flat: number[], expectedStep: number, format: Format = 'json', headers: Record<string, string> = {}, loss?: number) {
  const path = `/v1/optimizers/${opt.id}/step?worker=${worker}`;
  if (format === 'json') {
    return callBytes('POST', path, { grads: tree(flat), expected_step: expectedStep, ...(loss === undefined ? {} : { loss }) }, authed(opt.token, { accept: 'application/json', ...headers }));
  }
  const q = `&expected_step=${expectedStep}${loss === undefined ? '' : `&loss=${loss}`}`;
  if (format === 'raw') return callBytes('POST', path + q, encodeValues(flat, 'F32'), authed(opt.token, { 'content-type': RAW, accept: 'application/json', ...headers }));
  const t = tree(flat);
  const file = writeSafetensors([
    { name: 'b', dtype: 'F32', shape: [5], data: encodeValues(t.b, 'F32') },
    { name: 'w', dtype: 'F32', shape: [3, 7], data: encodeValues(t.w.flat(), 'F32') },
  ]);
  return callBytes('POST', path + q, file, authed(opt.token, { 'content-type': ST, accept: 'application/json', ...headers }));
}

export const info = async (opt: Created) => (await opCall('GET', opt, '')).body as Json;

/** Leaf-by-leaf bit equality (Object.is). */
export function expectSame(actual: unknown, expected: unknown) {
  const a = flatOf(actual);
  const e = flatOf(expected);
  expect(a.length).toBe(e.length);
  const bad = a.flatMap((x, i) => (Object.is(x, e[i]) ? [] : [`${i}: ${x} != ${e[i]}`]));
  expect(bad).toEqual([]);
}

/** A fixed shuffle of 0..n-1 for step s. */
export function order(n: number, s: number): number[] {
  const ids = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = (s * 7 + i * 3) % (i + 1);
    [ids[i], ids[j]] = [ids[j]!, ids[i]!];
  }
  return ids;
}

