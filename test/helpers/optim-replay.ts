// The replay of torch trajectories through the stateless steps, shared by the test/optim-routes*.test.ts
// files (split so that no one test file imports more fixture modules than the test runner's
// WebSocket carries in one message: ~9 MB of fixtures in one file crashed workerd in full runs).
// Each case's steps are sent the way a client runs them, the state each answer returns sent with
// the next step; params and state must equal torch's bit for bit at every recorded step, in JSON and
// in safetensors; and the catalogue's defaults must be those torch recorded.

import { describe, expect, it } from 'vitest';
import { callBytes, getJson, postJson } from './http.ts';
import { decodeValues, encodeValues, readSafetensors, writeSafetensors, type TestTensor } from './safetensors.ts';
import { leavesOf, zipLeaves } from './trees.ts';

export interface Case {
  name: string;
  optimizer: string;
  dtype: 'float32' | 'float64';
  hyperparams: Record<string, number | boolean>;
  params: unknown;
  state: Record<string, unknown> | null;
  grads: unknown[];
  expected: Array<{ step_index: number; params: unknown; state: Record<string, unknown> }>;
}

/** Optimizers whose fixtures come from independent numpy implementations (no torch 1.13 reference). */
const INDEPENDENT = new Set(['lion', 'muon']);

/** Leaf-by-leaf differences from torch, bit for bit. */
function diffs(label: string, actual: unknown, expected: unknown, signedZeros = true): string[] {
  return zipLeaves(actual, expected)
    .filter(({ a, e }) => !(Object.is(a, e) || (!signedZeros && a === 0 && e === 0)))
    .map(({ path, a, e }) => `${label}${path}: ${a} != torch ${e}`);
}

/** What the API must answer for torch's recorded state (torch keeps None where we keep nothing). */
function expectedState(state: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(state).filter(([, v]) => v !== null && leavesOf(v).some((l) => l.value !== null)));
}

/** A "defaults" case sends no hyperparameters: the API's defaults must be torch's. */
const hyperparamsToSend = (c: Case) => (/defaults/.test(c.name) ? {} : c.hyperparams);

async function replayJson(c: Case): Promise<string[]> {
  let state: Record<string, unknown> | undefined = c.state ?? undefined;
  let params = c.params;
  const out: string[] = [];
  const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
  for (let s = 0; s < c.grads.length; s++) {
    const r = await postJson(`/v1/${c.optimizer}/step`, { params, grads: c.grads[s], dtype: c.dtype, hyperparams: hyperparamsToSend(c), ...(state ? { state } : {}) });
    if (r.status !== 200) return [`step ${s}: HTTP ${r.status} ${JSON.stringify(r.body)}`];
    ({ params, state } = r.body);
    const e = byIndex.get(s);
    if (!e) continue;
    // independent.py writes every zero as +0 (numpy's signs of zero are not a reference).
    const signedZeros = !INDEPENDENT.has(c.optimizer);
    out.push(...diffs(`step ${s} params`, params, e.params, signedZeros));
    // SGD keeps no step; the API counts steps for every optimizer (schedules need them).
    const want = { step: ((c.state?.step as number | undefined) ?? 0) + s + 1, ...expectedState(e.state) };
    expect(Object.keys(state!).sort(), `step ${s} state keys`).toEqual(Object.keys(want).sort());
    out.push(...diffs(`step ${s} state`, state, want, signedZeros));
  }
  return out;
}

const DT = { float32: 'F32', float64: 'F64' } as const;

/** Named flat tensors of a fixture tree: {name: values} (a bare tensor is named ''). */
function namedTensors(tree: unknown): Array<{ name: string; shape: number[]; values: number[] }> {
  const shapeOf = (t: unknown): number[] => (Array.isArray(t) ? [t.length, ...shapeOf(t[0])] : []);
  if (tree !== null && typeof tree === 'object' && !Array.isArray(tree)) {
    return Object.entries(tree as Record<string, unknown>).map(([name, t]) => ({ name, shape: shapeOf(t), values: leavesOf(t).map((l) => l.value as number) }));
  }
  return [{ name: '', shape: shapeOf(tree), values: leavesOf(tree).map((l) => l.value as number) }];
}

const tensorName = (slot: string, name: string) => (name === '' ? slot : `${slot}/${name}`);

function slotTensors(slot: string, tree: unknown, dt: 'F32' | 'F64'): TestTensor[] {
  return namedTensors(tree).map((t) => ({ name: tensorName(slot, t.name), dtype: dt, shape: t.shape, data: encodeValues(t.values, dt) }));
}

/** The JSON and safetensors replays of `files` (optimizer → its fixture file), and the catalogue's defaults. */
export function replaySuites(FILES: Record<string, { cases: unknown[] }>): void {
  describe.each(Object.entries(FILES).map(([name, f]) => ({ name, cases: f.cases as Case[] })))('POST /v1/$name/step against torch 1.13', ({ cases }) => {
    it.each(cases.map((c) => ({ c, name: c.name })))('$name', async ({ c }) => {
      expect((await replayJson(c)).slice(0, 10)).toEqual([]);
    });
  });

  describe('safetensors stateless steps of every optimizer', () => {
    const picks = Object.entries(FILES).filter(([name]) => name !== 'sparse_adam').map(([, f]) => f).flatMap((f) => (f.cases as Case[]).filter((c) => /all|five-named|named|nesterov|centered/.test(c.name)).slice(0, 4));

    it.each(picks.map((c) => ({ c, name: c.name })))('$name, state carried in the files', async ({ c }) => {
      expect(picks.length).toBeGreaterThan(0);
      const dt = DT[c.dtype];
      const names = namedTensors(c.params).map((t) => t.name);
      let params: Record<string, number[]> = Object.fromEntries(namedTensors(c.params).map((t) => [t.name, t.values]));
      const shapes = Object.fromEntries(namedTensors(c.params).map((t) => [t.name, t.shape]));
      let slots: Record<string, Record<string, number[]>> = {};
      let metadata: Record<string, string> = { hyperparams: JSON.stringify(c.hyperparams), dtype: c.dtype };
      if (c.state) {
        metadata.step = String(c.state.step ?? 0);
        if (c.state.mu_product !== undefined) metadata.mu_product = String(c.state.mu_product);
        for (const [k, v] of Object.entries(c.state)) {
          if (k === 'step' || k === 'mu_product' || v === null || leavesOf(v).some((l) => l.value === null)) continue;
          slots[k] = Object.fromEntries(namedTensors(v).map((t) => [t.name, t.values]));
        }
      }
      const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
      for (let s = 0; s < c.grads.length; s++) {
        const tensors: TestTensor[] = [];
        const put = (slot: string, values: Record<string, number[]>) => {
          for (const n of names) tensors.push({ name: tensorName(slot, n), dtype: dt, shape: shapes[n]!, data: encodeValues(values[n]!, dt) });
        };
        put('params', params);
        tensors.push(...slotTensors('grads', c.grads[s], dt));
        for (const [slot, values] of Object.entries(slots)) put(slot, values);
        const r = await callBytes('POST', `/v1/${c.optimizer}/step`, writeSafetensors(tensors, metadata), { 'content-type': 'application/vnd.safetensors' });
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expect(r.type).toBe('application/vnd.safetensors');
        const file = readSafetensors(r.bytes);
        const read = (slot: string) =>
          Object.fromEntries(
            names.map((n) => {
              const t = file.tensors.get(tensorName(slot, n));
              if (!t) throw new Error(`no ${tensorName(slot, n)} among ${[...file.tensors.keys()].join(', ')}`);
              return [n, decodeValues(t)];
            }),
          );
        params = read('params');
        const slotNames = [...new Set([...file.tensors.keys()].map((k) => k.split('/')[0]!))].filter((k) => k !== 'params');
        slots = Object.fromEntries(slotNames.map((k) => [k, read(k)]));
        const meta = file.metadata!;
        metadata = { hyperparams: JSON.stringify(c.hyperparams), dtype: c.dtype, step: meta.step!, ...(meta.mu_product ? { mu_product: meta.mu_product } : {}) };
        const e = byIndex.get(s);
        if (!e) continue;
        const want = (tree: unknown) => Object.fromEntries(namedTensors(tree).map((t) => [t.name, t.values]));
        expect(diffs(`step ${s} params`, params, want(e.params))).toEqual([]);
        const wantState = expectedState(e.state);
        expect(slotNames.sort()).toEqual(Object.keys(wantState).filter((k) => k !== 'step' && k !== 'mu_product').sort());
        for (const k of slotNames) expect(diffs(`step ${s} ${k}`, slots[k], want(wantState[k]))).toEqual([]);
        if (wantState.step !== undefined) expect(Number(meta.step)).toBe(wantState.step);
        if (wantState.mu_product !== undefined) expect(Number(meta.mu_product)).toBe(wantState.mu_product);
      }
    });
  });

  describe('the catalogue', () => {
    it.each(Object.keys(FILES))('%s: torch\'s defaults and hyperparameter names', async (name) => {
      const a = (await getJson(`/v1/algorithms/${name}`)).body as { hyperparams: Record<string, { default?: unknown }>; step_route: string };
      expect(a.step_route).toBe(`/v1/${name}/step`);
      const cases = FILES[name]!.cases as Case[];
      const torchDefaults = cases.find((c) => /defaults/.test(c.name))?.hyperparams;
      if (torchDefaults) for (const [k, v] of Object.entries(torchDefaults)) expect(a.hyperparams[k]?.default, `${name}.${k}`).toBe(v);
      expect(Object.keys(a.hyperparams).sort()).toEqual(Object.keys(cases[0]!.hyperparams).sort());
    });
  });
}
