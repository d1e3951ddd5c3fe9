// An optional slot turned off and back on between steps (SGD / RMSprop momentum, RMSprop centered,
// Adam / AdamW amsgrad): torch 1.13 keeps the buffer in `optimizer.state` while the option is off,
// unchanged, and resumes from it when the option is turned back on. Expected values:
// test/fixtures/optim/slot_toggle.json, real torch changing `param_groups[k][option]` between steps
// (generator next to it). Checked through the stateless step (the state passed back), hosted
// optimizers on one object and sharded (PATCH of hyperparams or of param_groups), and snapshots
// (JSON and safetensors) taken while the option is off and restored into a fresh optimizer.

import { describe, expect, it } from 'vitest';
import fixture from './fixtures/optim/slot_toggle.json';
import { callBytes, postJson } from './helpers/http.ts';
import { createOptimizer, opCall, type Created } from './helpers/optimizers.ts';

type Tree = Record<string, unknown>;
interface Step {
  changes: Array<{ group: number; name: string; value: number | boolean }>;
  grads: Tree;
  params: Tree;
  /** torch's optimizer.state, slot by slot, tensor by tensor ("step": each tensor's count). */
  state: Record<string, Record<string, unknown>>;
}
interface Case {
  name: string;
  optimizer: string;
  dtype: 'float32' | 'float64';
  hyperparams: Record<string, number | boolean>;
  param_groups: Array<Record<string, unknown> & { params: string[] }>;
  params: Tree;
  steps: Step[];
}

const CASES = fixture.cases as unknown as Case[];
/** The step after which snapshots are taken: the first with the options off. */
const OFF = (fixture.pattern as boolean[]).indexOf(false);

/** Adam's JSON (stateless route and hosted snapshots) names its slots as it always has; the others use torch's names. */
const jsonName = (c: Case, slot: string) => (c.optimizer === 'adam' ? ({ exp_avg: 'm', exp_avg_sq: 'v', max_exp_avg_sq: 'v_max' } as Record<string, string>)[slot] ?? slot : slot);

/** A nested list with each number as the dtype holds it (a float32 answer may print its shortest form). */
function asDtype(dtype: Case['dtype'], tree: unknown): unknown {
  if (Array.isArray(tree)) return tree.map((x) => asDtype(dtype, x));
  if (typeof tree === 'number') return dtype === 'float32' ? Math.fround(tree) : tree;
  return tree;
}

/** Params and every slot of an answer compared with torch's, bit for bit. */
function expectTorch(c: Case, k: number, params: Tree, slots: (slot: string) => Tree | undefined, step?: number) {
  const want = c.steps[k]!;
  expect(asDtype(c.dtype, params), `params after step ${k}`).toEqual(asDtype(c.dtype, want.params));
  for (const [slot, byTensor] of Object.entries(want.state)) {
    if (slot === 'step') {
      if (step !== undefined) expect(step, `step after step ${k}`).toBe(Object.values(byTensor)[0]);
      continue;
    }
    expect(asDtype(c.dtype, slots(slot)), `${slot} after step ${k}`).toEqual(asDtype(c.dtype, byTensor));
  }
}

/** The hyperparameters and groups in force before step k (torch group 0 is the top level). */
function settingsAt(c: Case, k: number) {
  const hyperparams = { ...c.hyperparams };
  const groups = c.param_groups.map((g) => ({ ...g }));
  for (let i = 0; i <= k; i++) {
    for (const { group, name, value } of c.steps[i]!.changes) {
      if (group === 0) hyperparams[name] = value;
      else groups[group - 1]![name] = value;
    }
  }
  return { hyperparams, groups };
}

/** Applies step k's changes to a hosted optimizer, as PATCHes of hyperparams and of param_groups. */
async function patchFor(c: Case, k: number, opt: Created) {
  const changes = c.steps[k]!.changes;
  if (changes.length === 0) return;
  const { groups } = settingsAt(c, k);
  const top = Object.fromEntries(changes.filter((x) => x.group === 0).map((x) => [x.name, x.value]));
  if (Object.keys(top).length > 0) {
    const r = await opCall('PATCH', opt, '', { hyperparams: top });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
  }
  if (changes.some((x) => x.group > 0)) {
    const r = await opCall('PATCH', opt, '', { param_groups: groups });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
  }
}

const created = (c: Case, extra: Record<string, unknown> = {}) =>
  createOptimizer({ optimizer: c.optimizer, dtype: c.dtype, params: c.params, hyperparams: c.hyperparams, ...(c.param_groups.length > 0 ? { param_groups: c.param_groups } : {}), ...extra });

describe('an optional slot turned off and back on keeps its buffer, as torch 1.13', () => {
  it('the fixtures toggle every option (off, then back on, twice)', () => {
    expect(new Set(CASES.map((c) => c.optimizer))).toEqual(new Set(['sgd', 'rmsprop', 'adam', 'adamw']));
    for (const c of CASES) expect(c.steps.filter((s) => s.changes.length > 0).length, c.name).toBe(4);
  });

  it.each(CASES.map((c) => [c.name, c] as const))('stateless %s: the state passed back keeps the slot while off', async (_, c) => {
    let params: Tree = c.params;
    let state: Tree | undefined;
    for (let k = 0; k < c.steps.length; k++) {
      const { hyperparams, groups } = settingsAt(c, k);
      const route = `/v1/${c.optimizer}/step`;
      const r = await postJson(route, { params, grads: c.steps[k]!.grads, dtype: c.dtype, hyperparams, ...(groups.length > 0 ? { param_groups: groups } : {}), ...(state ? { state } : {}) });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expectTorch(c, k, r.body.params, (slot) => r.body.state[jsonName(c, slot)], r.body.state.step);
      params = r.body.params;
      state = r.body.state;
    }
  });

  it.each(CASES.map((c) => [c.name, c] as const))('hosted %s: one object, sharded, and snapshots taken while off', async (_, c) => {
    const one = await created(c);
    const sharded = await created(c, { shards: 2 });
    expect(sharded.body.shards).toBe(2);
    const live: Array<[string, Created]> = [['one object', one], ['sharded', sharded]];
    for (let k = 0; k < c.steps.length; k++) {
      for (const [where, opt] of live) {
        await patchFor(c, k, opt);
        const r = await opCall('POST', opt, '/step', { grads: c.steps[k]!.grads });
        expect(r.status, `${where}: ${JSON.stringify(r.body)}`).toBe(200);
        const snap = await opCall('GET', opt, '/state');
        expect(snap.status).toBe(200);
        expectTorch(c, k, snap.body.params, (slot) => snap.body[jsonName(c, slot)], snap.body.step);
      }
      if (k === OFF) {
        // The snapshot holds the slot that is off (as torch's state_dict), and a fresh optimizer
        // restored from it resumes from that slot when the option comes back on.
        const json = await opCall('GET', one, '/state');
        const intoJson = await created(c);
        const put = await opCall('PUT', intoJson, '/state', json.body);
        expect(put.status, JSON.stringify(put.body)).toBe(200);
        const file = await callBytes('GET', `/v1/optimizers/${sharded.id}/state`, undefined, { authorization: `Bearer ${sharded.token}`, accept: 'application/vnd.safetensors' });
        expect(file.status).toBe(200);
        const intoFile = await created(c, { shards: 2 });
        const putFile = await callBytes('PUT', `/v1/optimizers/${intoFile.id}/state`, file.bytes, { authorization: `Bearer ${intoFile.token}`, 'content-type': 'application/vnd.safetensors' });
        expect(putFile.status, JSON.stringify(putFile.body)).toBe(200);
        live.push(['restored from JSON', intoJson], ['restored from safetensors, sharded', intoFile]);
      }
    }
  });
});
