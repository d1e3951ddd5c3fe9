// compileSchedule / evaluateSchedule dispatch and the cross-field rules.

import { describe, expect, it } from 'vitest';
import { allSpecIssues, ScheduleSpecError, specIssues } from './checks.ts';
import { compileSchedule, evaluateSchedule } from './compile.ts';
import { SCHEDULE_DEFAULTS, SCHEDULE_TYPES, STEP_SCHEDULE_TYPES, type ScheduleSpec } from './types.ts';

const plateau: ScheduleSpec = { type: 'reduce_on_plateau', lr: 1, ...SCHEDULE_DEFAULTS.reduce_on_plateau, patience: 0, factor: 0.5 };

describe('compileSchedule', () => {
  it('compiles every step-only type', () => {
    const specs: ScheduleSpec[] = [
      { type: 'constant', lr: 1 },
      { type: 'step', lr: 1, step_size: 2, gamma: 0.1 },
      { type: 'multistep', lr: 1, milestones: [1], gamma: 0.1 },
      { type: 'exponential', lr: 1, gamma: 0.5 },
      { type: 'linear', lr: 1, start_factor: 0.5, end_factor: 1, total_steps: 2 },
      { type: 'polynomial', lr: 1, total_steps: 2, power: 1 },
      { type: 'cosine', lr: 1, total_steps: 2, min_lr: 0 },
      { type: 'cosine_restarts', lr: 1, period: 2, period_mult: 2, min_lr: 0 },
      { type: 'cyclic', base_lr: 0, max_lr: 1, step_size_up: 2, mode: 'triangular', gamma: 1 },
      { type: 'one_cycle', max_lr: 1, total_steps: 10, pct_start: 0.3, anneal_strategy: 'cos', div_factor: 25, final_div_factor: 1e4, three_phase: false },
      { type: 'warmup_cosine', lr: 1, warmup_steps: 1, total_steps: 3, min_lr: 0 },
      { type: 'warmup_linear', lr: 1, warmup_steps: 1, total_steps: 3 },
      { type: 'inverse_sqrt', lr: 1, warmup_steps: 2 },
      { type: 'sequential', schedules: [{ type: 'constant', lr: 1 }], milestones: [] },
    ];
    expect(specs.map((s) => s.type)).toEqual(STEP_SCHEDULE_TYPES);
    for (const spec of specs) {
      const lr = compileSchedule(spec);
      for (const k of [0, 1, 2, 3, 1000, 2 ** 24]) expect(Number.isFinite(lr(k)), `${spec.type} at ${k}`).toBe(true);
    }
    expect(SCHEDULE_TYPES).toHaveLength(15);
  });

  it('refuses reduce_on_plateau, which needs metrics', () => {
    expect(() => compileSchedule(plateau)).toThrow(ScheduleSpecError);
  });

  it('refuses specs that break a cross-field rule, naming the path', () => {
    const bad: ScheduleSpec = { type: 'cyclic', base_lr: 1, max_lr: 0.5, step_size_up: 2, mode: 'triangular', gamma: 1 };
    expect(() => compileSchedule(bad)).toThrow(/max_lr: must be >= base_lr/);
  });
});

describe('evaluateSchedule', () => {
  it('evaluates step schedules at any steps, in request order', () => {
    expect(evaluateSchedule({ type: 'step', lr: 1, step_size: 2, gamma: 0.5 }, [4, 0, 2])).toEqual([0.25, 1, 0.5]);
  });
  it('replays metrics for reduce_on_plateau: lr[k] is the rate after k reports', () => {
    expect(evaluateSchedule(plateau, [0, 1, 2, 3], [1, 1, 1])).toEqual([1, 1, 0.5, 0.25]);
  });
  it('refuses a plateau step beyond the reports, or missing metrics', () => {
    expect(() => evaluateSchedule(plateau, [4], [1, 1, 1])).toThrow(/step 4 needs 4 metric reports/);
    expect(() => evaluateSchedule(plateau, [0])).toThrow(/needs metrics/);
  });
});

describe('specIssues', () => {
  it.each<[string, ScheduleSpec, string]>([
    ['unsorted milestones', { type: 'multistep', lr: 1, milestones: [5, 3], gamma: 0.1 }, 'milestones.1'],
    ['sequential count', { type: 'sequential', schedules: [{ type: 'constant', lr: 1 }], milestones: [3] }, 'milestones'],
    ['max_lr < base_lr', { type: 'cyclic', base_lr: 1, max_lr: 0.5, step_size_up: 2, mode: 'triangular', gamma: 1 }, 'max_lr'],
    ['zero-length one-cycle warm-up', { type: 'one_cycle', max_lr: 1, total_steps: 10, pct_start: 0.1, anneal_strategy: 'cos', div_factor: 25, final_div_factor: 1e4, three_phase: false }, 'pct_start'],
    ['warm-up longer than training', { type: 'warmup_linear', lr: 1, warmup_steps: 11, total_steps: 10 }, 'warmup_steps'],
    ['min_lr above lr', { type: 'cosine', lr: 0.1, total_steps: 10, min_lr: 0.2 }, 'min_lr'],
  ])('%s', (_, spec, path) => {
    expect(specIssues(spec).map((i) => i.path.join('.'))).toEqual([path]);
  });

  it('compileSchedule runs a spec whose lr is below min_lr (a param group\'s lr, as torch runs it); the request\'s rule is specIssues\'', () => {
    const spec: ScheduleSpec = { type: 'sequential', schedules: [{ type: 'cosine', lr: 0.001, total_steps: 2, min_lr: 0.01 }], milestones: [] };
    expect(allSpecIssues(spec).map((i) => i.path.join('.'))).toEqual(['schedules.0.min_lr']);
    expect(allSpecIssues(spec, [], { lrBounds: false })).toEqual([]);
    // torch 1.13: SGD([p], lr=0.001) with CosineAnnealingLR(T_max=2, eta_min=0.01) gives lr 0.001, 0.0055, 0.01.
    expect([0, 1, 2].map(compileSchedule(spec))).toEqual([0.001, 0.0055, 0.01]);
  });

  it('finds issues of nested children with their full path', () => {
    const spec: ScheduleSpec = {
      type: 'sequential',
      schedules: [
        { type: 'constant', lr: 1 },
        { type: 'sequential', schedules: [{ type: 'multistep', lr: 1, milestones: [2, 1], gamma: 0.1 }], milestones: [] },
      ],
      milestones: [3],
    };
    expect(allSpecIssues(spec).map((i) => i.path.join('.'))).toEqual(['schedules.1.schedules.0.milestones.1']);
  });
});
