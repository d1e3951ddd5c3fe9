// Lion against test/fixtures/optim/lion.json (independent.py: a numpy reference written from the
// paper with exact fused multiply-adds). Every case runs through stepInPlace from its initial
// state, the state fed back step after step; params and exp_avg must be bit-identical at every
// recorded step, in float32 and float64.

import { describe, expect, it } from 'vitest';
import fixtures from '../../../test/fixtures/optim/lion.json';
import { differences, typed, type FixtureCase } from '../../../test/helpers/optim-fixtures.ts';
import { initState, stepInPlace, type OptimizerState } from '../optimizer.ts';
import { lion, type LionHyperparams } from './index.ts';

const cases = (fixtures as unknown as { cases: FixtureCase[] }).cases;

function defaults(): LionHyperparams {
  return Object.fromEntries(Object.entries(lion.hyperparams).map(([k, d]) => [k, d.default])) as LionHyperparams;
}

describe('lion definition', () => {
  it('has the paper / optax defaults, bounds and one zero-initialised slot', () => {
    expect(defaults()).toEqual({ lr: 1e-4, beta1: 0.9, beta2: 0.99, weight_decay: 0, maximize: false });
    expect(lion.hyperparams.beta1).toMatchObject({ min: 0, max: 1 });
    expect(lion.hyperparams.beta2).toMatchObject({ min: 0, max: 1 });
    expect(lion.hyperparams.lr).toMatchObject({ min: 0 });
    expect(lion.hyperparams.weight_decay).toMatchObject({ min: 0 });
    expect(lion.slots.map((s) => [s.name, s.initial(defaults())])).toEqual([['exp_avg', 0]]);
    expect(lion.stepCounter).toBe('none');
    expect(lion.checkShape).toBeUndefined();
  });

  it('moves every element by exactly lr, and not at all where the interpolation is 0', () => {
    const hp = { ...defaults(), lr: 0.5 };
    const state = initState(lion, hp, 'float64', 3);
    const params = Float64Array.of(1, 1, 1);
    stepInPlace({ def: lion, dtype: 'float64', hp, params, grads: Float64Array.of(3, 0, -1e-300), shape: [3], state });
    expect([...params]).toEqual([0.5, 1, 1.5]);
    expect(state.step).toBe(1);
    expect(state.slots.exp_avg![0]).toBeCloseTo(0.03, 15);
  });

  it('decays the param before the step (decoupled): p - lr*(sign(c) + wd*p)', () => {
    const hp = { ...defaults(), lr: 0.1, weight_decay: 0.5 };
    const state = initState(lion, hp, 'float64', 1);
    const params = Float64Array.of(2);
    stepInPlace({ def: lion, dtype: 'float64', hp, params, grads: Float64Array.of(-1), shape: [1], state });
    expect(params[0]).toBeCloseTo(2 - 0.1 * (-1 + 0.5 * 2), 15);
  });
});

describe('lion fixtures (independent numpy reference)', () => {
  it('covers float32 and float64', () => {
    expect(cases.filter((c) => c.dtype === 'float32').length).toBeGreaterThan(20);
    expect(cases.filter((c) => c.dtype === 'float64').length).toBeGreaterThan(20);
  });

  for (const c of cases) {
    it(c.name, () => {
      const hp = c.hyperparams as LionHyperparams;
      const params = typed(c.dtype, c.params);
      const n = params.length;
      const state: OptimizerState = initState(lion, hp, c.dtype, n);
      if (c.state) state.slots.exp_avg = typed(c.dtype, c.state.exp_avg);
      const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
      c.grads.forEach((g, i) => {
        stepInPlace({ def: lion, dtype: c.dtype, hp, params, grads: typed(c.dtype, g), shape: c.shape, state });
        const e = byIndex.get(i);
        if (!e) return;
        for (const [what, got, want] of [
          ['params', params, e.params],
          ['exp_avg', state.slots.exp_avg!, e.state.exp_avg],
        ] as const) {
          const d = differences(got, typed(c.dtype, want));
          if (d.count) expect.fail(`step ${i} ${what}: ${d.count}/${n} differ: ${d.first.join(', ')}`);
        }
      });
      expect(state.step).toBe(c.grads.length);
    });
  }
});
