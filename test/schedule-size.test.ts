// A schedule spec is stored whole in one SQLite row by hosted optimizers (production rows cap at
// 2 MB), so its size is bounded: 32 schedules in all, 8 levels of sequential, 1,000 milestones in
// all. The largest valid spec must stay under 40 KB of JSON, and one more of anything is a 422
// naming the field.

import { describe, expect, it } from 'vitest';
import { postJson } from './helpers/http.ts';
import { createOptimizer, expectProblem, opCall } from './helpers/optimizers.ts';

const BIG_INT = Number.MAX_SAFE_INTEGER; // 16 digits: the longest integer a field takes
const LONG = 1.2345678901234567e-300; // 23 characters: about the longest a number prints

/** The widest leaf: every field of one_cycle present, every number at its longest. */
const fat = () => ({
  type: 'one_cycle',
  max_lr: LONG,
  total_steps: BIG_INT,
  pct_start: 0.30000000000000004,
  anneal_strategy: 'linear',
  div_factor: 1.2345678901234567e300,
  final_div_factor: 1.2345678901234567e300,
  three_phase: false,
});

/** A root sequential of 31 children (32 schedules): one multistep holding the rest of the 1,000 milestones, 30 wide leaves. */
function largest(extra: { nodes?: number; milestones?: number } = {}) {
  const children = 31 + (extra.nodes ?? 0);
  const ownMilestones = children - 1;
  const multistep = { type: 'multistep', lr: LONG, milestones: new Array(1_000 - ownMilestones + (extra.milestones ?? 0)).fill(BIG_INT), gamma: LONG };
  return {
    type: 'sequential',
    schedules: [multistep, ...Array.from({ length: children - 1 }, fat)],
    milestones: Array.from({ length: ownMilestones }, (_, i) => BIG_INT - ownMilestones + i),
  };
}

/** `depth` levels of sequential, each with one child. */
function nested(depth: number): unknown {
  let spec: unknown = { type: 'constant', lr: 1 };
  for (let i = 1; i < depth; i++) spec = { type: 'sequential', schedules: [spec], milestones: [] };
  return spec;
}

describe('schedule size', () => {
  it('the largest valid spec is accepted, stored and returned in under 40 KB', async () => {
    const schedule = largest();
    const opt = await createOptimizer({ params: [1], schedule });
    const meta = await opCall('GET', opt, '');
    expect(meta.status).toBe(200);
    expect(meta.body.schedule).toEqual(schedule); // every field was given, so nothing was defaulted
    expect(JSON.stringify(meta.body.schedule).length).toBeGreaterThan(20_000); // it is the large one
    expect(JSON.stringify(meta.body.schedule).length).toBeLessThan(40_000);
    const evaluated = await postJson('/v1/schedules/evaluate', { schedule, steps: [0, BIG_INT] });
    expect(evaluated.status).toBe(200);
  });

  it('33 schedules in all: 422', async () => {
    expectProblem(await postJson('/v1/schedules/evaluate', { schedule: largest({ nodes: 1 }) }), 422, 'schedule.schedules');
    // Counted across levels: two levels of 7 children are 1 + 7 + 49 schedules.
    const leaf = { type: 'constant', lr: 1 };
    const level = (child: unknown) => ({ type: 'sequential', schedules: new Array(7).fill(child), milestones: [1, 2, 3, 4, 5, 6] });
    expectProblem(await postJson('/v1/schedules/evaluate', { schedule: level(level(leaf)) }), 422, 'schedule');
    expect((await postJson('/v1/schedules/evaluate', { schedule: level(leaf) })).status).toBe(200);
  });

  it('1,001 milestones in all: 422 naming the list that crossed the bound', async () => {
    expectProblem(await postJson('/v1/schedules/evaluate', { schedule: largest({ milestones: 1 }) }), 422, 'schedule.schedules[0].milestones');
    const multistep = { type: 'multistep', lr: 1, milestones: new Array(1_001).fill(5) };
    expectProblem(await postJson('/v1/schedules/evaluate', { schedule: multistep }), 422, 'schedule.milestones');
    multistep.milestones.pop();
    expect((await postJson('/v1/schedules/evaluate', { schedule: multistep })).status).toBe(200);
  });

  it('sequential nests at most 8 levels', async () => {
    expect((await postJson('/v1/schedules/evaluate', { schedule: nested(8) })).status).toBe(200);
    expectProblem(await postJson('/v1/schedules/evaluate', { schedule: nested(9) }), 422, 'schedule');
  });

  it('the same bounds hold wherever a schedule goes: steps, hosted optimizers, PATCH', async () => {
    const big = largest({ milestones: 1 });
    const field = 'schedule.schedules[0].milestones';
    expectProblem(await postJson('/v1/adam/step', { params: [1], grads: [1], schedule: big }), 422, field);
    expectProblem(await postJson('/v1/optimizers', { params: [1], schedule: big }), 422, field);
    const opt = await createOptimizer({ params: [1] });
    expectProblem(await opCall('PATCH', opt, '', { schedule: big }), 422, field);
  });
});
