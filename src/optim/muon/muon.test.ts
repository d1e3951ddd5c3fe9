// Muon against test/fixtures/optim/muon.json (independent.py: a numpy reference written from
// torch 2.9's torch/optim/_muon.py and ATen's lerp, Newton-Schulz in the param dtype with every
// matrix product summed in double in the pinned order, exact fused multiply-adds).
//
// Tolerance: none. Every recorded number (params, momentum_buffer, Newton-Schulz output) must be
// bit-identical, in float32 and float64. That holds because the summation order of the products
// is part of the definition (README.md in the fixtures folder): summed in another order, float64
// Newton-Schulz lands ~4e-15 (relative to its largest entry) away on these cases (independent.py
// --order), and one float32 rounding that falls the other way would be amplified by the iteration.

import { describe, expect, it } from 'vitest';
import fixtures from '../../../test/fixtures/optim/muon.json';
import { differences, flat, typed, type FixtureCase } from '../../../test/helpers/optim-fixtures.ts';
import { initState, stepInPlace, type OptimizerState } from '../optimizer.ts';
import { adjustLr, muon, MUON_MAX_ELEMENTS, MUON_MAX_MIN_DIM, zeropowerViaNewtonSchulz, type MuonHyperparams } from './index.ts';

const cases = (fixtures as unknown as { cases: FixtureCase[] }).cases;

function defaults(): MuonHyperparams {
  return Object.fromEntries(Object.entries(muon.hyperparams).map(([k, d]) => [k, d.default])) as MuonHyperparams;
}

describe('muon definition', () => {
  it("has torch 2.9's defaults, names and bounds", () => {
    expect(defaults()).toEqual({
      lr: 1e-3,
      weight_decay: 0.1,
      momentum: 0.95,
      nesterov: true,
      ns_a: 3.4445,
      ns_b: -4.775,
      ns_c: 2.0315,
      eps: 1e-7,
      ns_steps: 5,
      adjust_lr_fn: 'original',
    });
    for (const k of ['lr', 'weight_decay', 'momentum'] as const) expect(muon.hyperparams[k]).toMatchObject({ min: 0 });
    expect(muon.hyperparams.momentum).not.toHaveProperty('max');
    expect(muon.hyperparams.ns_steps).toMatchObject({ max: 99, integer: true });
    expect(muon.hyperparams.adjust_lr_fn).toMatchObject({ type: 'enum', values: ['original', 'match_rms_adamw'] });
    expect(muon.slots.map((s) => [s.name, s.initial(defaults())])).toEqual([['momentum_buffer', 0]]);
    expect(muon.stepCounter).toBe('none');
  });

  it('check: ns_steps must be an integer, adjust_lr_fn one of the two', () => {
    expect(muon.check!(defaults())).toBeNull();
    expect(muon.check!({ ...defaults(), ns_steps: 2.5 })?.field).toBe('ns_steps');
    expect(muon.check!({ ...defaults(), adjust_lr_fn: 'none' })?.field).toBe('adjust_lr_fn');
  });

  it('checkShape: 2-D only, within the size limits', () => {
    expect(muon.checkShape!([3, 4])).toBeNull();
    expect(muon.checkShape!([1, 1])).toBeNull();
    expect(muon.checkShape!([MUON_MAX_MIN_DIM, MUON_MAX_ELEMENTS / MUON_MAX_MIN_DIM])).toBeNull();
    expect(muon.checkShape!([1, MUON_MAX_ELEMENTS])).toBeNull();
    expect(muon.checkShape!([12])).toMatch(/2-D/);
    expect(muon.checkShape!([])).toMatch(/2-D/);
    expect(muon.checkShape!([2, 3, 4])).toMatch(/2-D/);
    expect(muon.checkShape!([MUON_MAX_MIN_DIM + 1, MUON_MAX_MIN_DIM + 1])).toMatch(/min\(rows, cols\)/);
    expect(muon.checkShape!([2, MUON_MAX_ELEMENTS])).toMatch(/rows·cols/);
  });

  it("adjusts lr as torch's _adjust_lr", () => {
    expect(adjustLr(0.02, 'original', 12, 5)).toBe(0.02 * Math.sqrt(12 / 5));
    expect(adjustLr(0.02, 'original', 5, 12)).toBe(0.02);
    expect(adjustLr(0.02, 'match_rms_adamw', 5, 12)).toBe(0.02 * (0.2 * Math.sqrt(12)));
  });

  it('Newton-Schulz of a 1x1 matrix follows the scalar polynomial', () => {
    // x = 1 after normalisation; each iteration x = a·x + (b·x² + c·x⁴)·x.
    let x = 1;
    for (let i = 0; i < 3; i++) x = 3.4445 * x + (-4.775 * x * x + 2.0315 * x ** 4) * x;
    const got = zeropowerViaNewtonSchulz('float64', [-7], 1, 1, [3.4445, -4.775, 2.0315], 3, 1e-7);
    expect(got[0]).toBeCloseTo(-x, 14);
  });

  it('an all-zero update stays zero (divided by eps), so only the decay moves params', () => {
    const hp = { ...defaults(), lr: 0.1, weight_decay: 0.5 };
    const state = initState(muon, hp, 'float64', 6);
    const params = Float64Array.of(1, 2, 3, 4, 5, 6);
    stepInPlace({ def: muon, dtype: 'float64', hp, params, grads: new Float64Array(6), shape: [2, 3], state });
    expect([...params]).toEqual([1, 2, 3, 4, 5, 6].map((p) => p * 0.95));
    expect(state.step).toBe(1);
  });
});

describe('muon fixtures (independent numpy reference)', () => {
  it('covers float32 and float64, tall, wide, square and 1xN', () => {
    expect(cases.filter((c) => c.dtype === 'float32').length).toBeGreaterThan(20);
    expect(cases.filter((c) => c.dtype === 'float64').length).toBeGreaterThan(20);
    const shapes = cases.map((c) => c.shape);
    expect(shapes.some(([r, c]) => r! > c!)).toBe(true);
    expect(shapes.some(([r, c]) => r! < c!)).toBe(true);
    expect(shapes.some(([r, c]) => r === c)).toBe(true);
    expect(shapes.some(([r]) => r === 1)).toBe(true);
  });

  for (const c of cases) {
    it(c.name, () => {
      const hp = c.hyperparams as MuonHyperparams;
      expect(muon.check!(hp)).toBeNull();
      expect(muon.checkShape!(c.shape)).toBeNull();
      const [rows, cols] = c.shape as [number, number];
      const params = typed(c.dtype, c.params);
      const n = params.length;
      const state: OptimizerState = initState(muon, hp, c.dtype, n);
      if (c.state) state.slots.momentum_buffer = typed(c.dtype, c.state.momentum_buffer);
      const byIndex = new Map(c.expected.map((e) => [e.step_index, e]));
      c.grads.forEach((g, i) => {
        stepInPlace({ def: muon, dtype: c.dtype, hp, params, grads: typed(c.dtype, g), shape: c.shape, state });
        const e = byIndex.get(i);
        if (!e) return;
        const ortho = zeropowerViaNewtonSchulz(c.dtype, flat(e.ns_input), rows, cols, [hp.ns_a, hp.ns_b, hp.ns_c], hp.ns_steps, hp.eps);
        for (const [what, got, want] of [
          ['params', params, e.params],
          ['momentum_buffer', state.slots.momentum_buffer!, e.state.momentum_buffer],
          ['Newton-Schulz output', ortho, e.ortho],
        ] as const) {
          const d = differences(got, flat(want));
          if (d.count) expect.fail(`step ${i} ${what}: ${d.count}/${n} differ: ${d.first.join(', ')}`);
        }
        expect(adjustLr(hp.lr, hp.adjust_lr_fn, rows, cols)).toBe(e.scalars!.adjusted_lr);
      });
      expect(state.step).toBe(c.grads.length);
    });
  }
});
