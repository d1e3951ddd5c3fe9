// A param group whose lr is below the schedule's min_lr (torch's eta_min): torch's schedulers run it
// (CosineAnnealingLR rises from the group's base lr towards eta_min), so the stateless step and hosted
// optimizers (created with the group, or given it by PATCH) step it with torch's rates, never a 500.
// Rates: test/fixtures/schedules/group_below_min_lr.json, torch 1.13 driving a two-group SGD
// (generator next to it); warmup_cosine is transformers' LambdaLR, whose floor for every group is the
// fraction min_lr / lr of the group's own lr (not min_lr itself, as CosineAnnealingLR's eta_min). SGD without momentum in float64 moves a parameter at 0 with gradient 1 to
// exactly −lr, so the params answer each group's rate.

import { describe, expect, it } from 'vitest';
import fixture from './fixtures/schedules/group_below_min_lr.json';
import { postJson } from './helpers/http.ts';
import { createOptimizer, opCall } from './helpers/optimizers.ts';

interface Case {
  name: string;
  schedule: Record<string, unknown>;
  /** [top-level group's lr, group's lr] after k scheduler steps. */
  lrs: Array<[number, number]>;
}

const CASES = fixture.cases as unknown as Case[];
const GROUPS = [{ params: ['a'], lr: fixture.group_lr }];

describe('a param group lr below the schedule\'s min_lr, as torch runs it', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('stateless %s: each step\'s rates are torch\'s', async (_, c) => {
    for (let k = 0; k < c.lrs.length; k++) {
      const [top, group] = c.lrs[k]!;
      const r = await postJson('/v1/sgd/step', { params: { a: [0], b: [0] }, grads: { a: [1], b: [1] }, dtype: 'float64', state: { step: k }, schedule: c.schedule, param_groups: GROUPS });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.params, `step ${k}`).toEqual({ a: [0 - group], b: [0 - top] }); // 0 + (-lr)·1, as torch: +0 at lr 0
      expect(r.body.lr).toBe(top);
    }
  });

  it.each(CASES.map((c) => [c.name, c] as const))('hosted %s: created with the group (on one object or sharded), or given it by PATCH, steps at torch\'s rates', async (_, c) => {
    const created = await createOptimizer({ optimizer: 'sgd', dtype: 'float64', params: { a: [0], b: [0] }, schedule: c.schedule, param_groups: GROUPS });
    // Sharded too: each tensor on its own object, the coordinator resolving each group's rate.
    const sharded = await createOptimizer({ optimizer: 'sgd', dtype: 'float64', params: { a: [0], b: [0] }, schedule: c.schedule, param_groups: GROUPS, shards: 2 });
    expect(sharded.body.shards).toBe(2);
    const patched = await createOptimizer({ optimizer: 'sgd', dtype: 'float64', params: { a: [0], b: [0] }, schedule: c.schedule });
    const p = await opCall('PATCH', patched, '', { param_groups: GROUPS });
    expect(p.status, JSON.stringify(p.body)).toBe(200);
    // torch: p.add_(grad, alpha=-lr) each step, in float64.
    let a = 0;
    let b = 0;
    for (let k = 0; k < c.lrs.length; k++) {
      const [top, group] = c.lrs[k]!;
      a -= group;
      b -= top;
      for (const opt of [created, sharded, patched]) {
        const r = await opCall('POST', opt, '/step', { grads: { a: [1], b: [1] } });
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expect(r.body.params, `step ${k}`).toEqual({ a: [a], b: [b] });
      }
    }
  });

  it('the schedule as sent keeps its rule: a top-level min_lr above lr is a 422', async () => {
    const r = await postJson('/v1/sgd/step', { params: [0], grads: [1], schedule: { type: 'cosine', lr: 0.001, total_steps: 10, min_lr: 0.01 } });
    expect(r.status).toBe(422);
  });
});
