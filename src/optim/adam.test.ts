// Unit tests of the pure Adam step against closed forms derived by hand.

import { describe, expect, it } from 'vitest';
import { ADAM_DEFAULTS, adamStep, adamStepInPlace, initAdamState, MAX_STEP, nextStep, type AdamHyperparams } from './adam.ts';

const hp = (over: Partial<AdamHyperparams> = {}): AdamHyperparams => ({ ...ADAM_DEFAULTS, ...over });

function step64(params: number[], grads: number[], over: Partial<AdamHyperparams> = {}) {
  const h = hp(over);
  return adamStep({
    dtype: 'float64',
    hyperparams: h,
    params: Float64Array.from(params),
    grads: Float64Array.from(grads),
    state: initAdamState('float64', params.length, h.amsgrad),
  });
}

describe('adamStep (float64)', () => {
  it('first step from zero state moves each param by lr·g/(|g| + eps)', () => {
    // m1 = (1-b1)g, v1 = (1-b2)g², m̂ = g, sqrt(v̂) = |g| → Δp = -lr·g/(|g| + eps).
    const g = [0.5, -2, 1e-3];
    const r = step64([1, 2, 3], g, { lr: 0.1 });
    g.forEach((gi, i) => expect(r.params[i]).toBeCloseTo([1, 2, 3][i]! - (0.1 * gi) / (Math.abs(gi) + 1e-8), 14));
    expect(r.state.step).toBe(1);
    expect(r.state.m[0]).toBeCloseTo(0.05, 16);
    expect(r.state.v[1]).toBeCloseTo(0.001 * 4, 16);
  });

  it('maximize ascends', () => {
    const r = step64([1], [0.5], { lr: 0.1, maximize: true });
    expect(r.params[0]).toBeCloseTo(1.1, 7);
    expect(r.state.m[0]).toBeCloseTo(-0.05, 16);
  });

  it('L2 weight decay adds wd·p to the gradient that feeds both moments', () => {
    const r = step64([2], [0.5], { weight_decay: 0.1 });
    expect(r.state.m[0]).toBeCloseTo(0.1 * (0.5 + 0.1 * 2), 15);
    expect(r.state.v[0]).toBeCloseTo(0.001 * 0.7 ** 2, 15);
  });

  it('decoupled weight decay shrinks p by 1 - lr·wd before the update', () => {
    const r = step64([2], [0.5], { lr: 0.1, weight_decay: 0.5, decoupled_weight_decay: true });
    expect(r.params[0]).toBeCloseTo(2 * (1 - 0.05) - 0.1, 7);
    expect(r.state.m[0]).toBeCloseTo(0.05, 16);
  });

  it('lr = 0 leaves params unchanged but updates the moments', () => {
    const r = step64([1, -1], [3, 4], { lr: 0 });
    expect([...r.params]).toEqual([1, -1]);
    expect(r.state.m[1]).toBeCloseTo(0.4, 15);
  });

  it('amsgrad normalises by the running max of the uncorrected v', () => {
    const h = hp({ amsgrad: true, lr: 0.1 });
    const state = { step: 1, m: Float64Array.of(0), v: Float64Array.of(1), vMax: Float64Array.of(4) };
    const r = adamStep({ dtype: 'float64', hyperparams: h, params: Float64Array.of(0), grads: Float64Array.of(0), state });
    // v2 = 0.999; v_max stays 4; m2 = 0, so params do not move.
    expect(r.state.v[0]).toBeCloseTo(0.999, 15);
    expect(r.state.vMax![0]).toBe(4);
    expect(r.params[0]).toBe(0);
  });

  it('zero gradients with zero state give exactly zero update', () => {
    const r = step64([1.5, -2.5], [0, 0]);
    expect([...r.params]).toEqual([1.5, -2.5]);
    expect([...r.state.m, ...r.state.v]).toEqual([0, 0, 0, 0]);
  });

  it('does not mutate its inputs; the in-place variant does', () => {
    const params = Float64Array.of(1);
    const grads = Float64Array.of(1);
    const state = initAdamState('float64', 1, false);
    adamStep({ dtype: 'float64', hyperparams: hp(), params, grads, state });
    expect(params[0]).toBe(1);
    expect(state.step).toBe(0);
    adamStepInPlace({ dtype: 'float64', hyperparams: hp(), params, grads, state });
    expect(params[0]).toBeCloseTo(0.999, 7);
    expect(state.step).toBe(1);
  });

  it('the step counter saturates at 2^24 like torch float32', () => {
    expect(nextStep(0)).toBe(1);
    expect(nextStep(MAX_STEP - 1)).toBe(MAX_STEP);
    expect(nextStep(MAX_STEP)).toBe(MAX_STEP);
  });

  it('rejects mismatched lengths', () => {
    expect(() =>
      adamStep({ dtype: 'float64', hyperparams: hp(), params: Float64Array.of(1, 2), grads: Float64Array.of(1), state: initAdamState('float64', 2, false) }),
    ).toThrow(RangeError);
  });
});

describe('adamStep (float32)', () => {
  it('returns float32 values and rounds eps to float32', () => {
    const h = hp();
    const r = adamStep({
      dtype: 'float32',
      hyperparams: h,
      params: Float32Array.of(0.1),
      grads: Float32Array.of(1e-30),
      state: initAdamState('float32', 1, false),
    });
    expect(r.params).toBeInstanceOf(Float32Array);
    // g² underflows in float32: v = 0, denom = fround(eps), update = fround(-lr·m/bc1 / eps32).
    expect(r.state.v[0]).toBe(0);
    const eps32 = Math.fround(1e-8);
    const m = Math.fround(Math.fround(1 - 0.9) * Math.fround(1e-30));
    const expected = Math.fround(Math.fround(0.1) + Math.fround(Math.fround(Math.fround(-0.001 / (1 - 0.9)) * m) / eps32));
    expect(r.params[0]).toBe(expected);
  });
});
