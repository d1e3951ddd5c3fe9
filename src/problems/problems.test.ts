// The test problems: gradients against closed forms and central finite differences, minima, the
// float32 gradients as the float64 formula rounded step by step, and the random stream against
// the Python port in test/fixtures/compare/generate.py (its outputs are in compare.json).

import { describe, expect, it } from 'vitest';
import fixture from '../../test/fixtures/compare/compare.json';
import { logisticDataset, prepareProblem, Random, type ProblemSpec } from './index.ts';

const SPECS: ProblemSpec[] = [
  { name: 'rosenbrock', dimension: 2, a: 1, b: 100 },
  { name: 'rosenbrock', dimension: 6, a: 0.5, b: 3 },
  { name: 'beale' },
  { name: 'noisy_quadratic', dimension: 5, noise: 0, seed: 0 },
  { name: 'logistic_regression', samples: 40, features: 3, label_noise: 1, seed: 2 },
];

function gradientAt(spec: ProblemSpec, x: number[], dtype: 'float32' | 'float64' = 'float64'): number[] {
  const problem = prepareProblem(spec);
  const g = dtype === 'float32' ? new Float32Array(x.length) : new Float64Array(x.length);
  problem.gradient(dtype)(dtype === 'float32' ? Float32Array.from(x) : Float64Array.from(x), g);
  return [...g];
}

/** Deterministic points in [-2, 2]^n. */
function points(n: number, count: number): number[][] {
  const random = new Random(99);
  return Array.from({ length: count }, () => Array.from({ length: n }, () => 4 * random.uniform() - 2));
}

describe('problem gradients', () => {
  it.each(SPECS.map((s) => [JSON.stringify(s), s] as const))('%s: matches central finite differences of the loss', (_, spec) => {
    const problem = prepareProblem(spec);
    for (const x of points(problem.dimension, 20)) {
      const g = gradientAt(spec, x);
      for (let i = 0; i < x.length; i++) {
        const h = 1e-5 * Math.max(1, Math.abs(x[i]!));
        const up = [...x], down = [...x];
        up[i]! += h;
        down[i]! -= h;
        const fd = (problem.loss(up) - problem.loss(down)) / (up[i]! - down[i]!);
        expect(Math.abs(g[i]! - fd)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(fd), problem.loss(x)));
      }
    }
  });

  it('Rosenbrock: the closed form at the classic start, zero at the minimum', () => {
    const spec: ProblemSpec = { name: 'rosenbrock', dimension: 2, a: 1, b: 100 };
    const problem = prepareProblem(spec);
    // f = 100(1 − 1.44)² + 2.2² = 24.2; ∂x = −400·x·(y − x²) − 2(1 − x) = −215.6; ∂y = 200(y − x²) = −88.
    expect(problem.loss([-1.2, 1])).toBeCloseTo(24.2, 13);
    const [gx, gy] = gradientAt(spec, [-1.2, 1]);
    expect(gx).toBeCloseTo(-215.6, 12);
    expect(gy).toBeCloseTo(-88, 12);
    expect(gradientAt(spec, [1, 1])).toEqual([-0, 0]);
    expect(problem.loss([1, 1])).toBe(0);
    expect(prepareProblem({ name: 'rosenbrock', dimension: 4, a: 2, b: 1 }).optimum).toEqual({ loss: 0, params: [2, 4, 2, 4] });
  });

  it('Beale: 14.203125 at (1, 1), zero value and gradient at (3, 0.5)', () => {
    const problem = prepareProblem({ name: 'beale' });
    expect(problem.loss([1, 1])).toBe(1.5 ** 2 + 2.25 ** 2 + 2.625 ** 2);
    expect(problem.loss([3, 0.5])).toBe(0);
    expect(gradientAt({ name: 'beale' }, [3, 0.5]).map(Math.abs)).toEqual([0, 0]);
    // At (0, 0): ∂x = 2(1.5·(−1) + 2.25·(−1) + 2.625·(−1)) = −12.75, ∂y = 0.
    expect(gradientAt({ name: 'beale' }, [0, 0])).toEqual([-12.75, 0]);
  });

  it('noisy quadratic: h ⊙ x without noise; the noise is σ·h·ξ from the seeded stream', () => {
    expect(gradientAt({ name: 'noisy_quadratic', dimension: 3, noise: 0, seed: 0 }, [1, 2, 3])).toEqual([1, 1, 1]);
    const noisy = gradientAt({ name: 'noisy_quadratic', dimension: 3, noise: 0.5, seed: 4, curvatures: [2, 4, 8] }, [1, 2, 3]);
    const r = new Random(4);
    expect(noisy).toEqual([1, 2, 3].map((x, i) => [2, 4, 8][i]! * (x - 0.5 * r.normal())));
  });

  it('logistic regression: log 2 at w = 0 with gradient mean(½ − y)·(x, 1)', () => {
    const spec = { name: 'logistic_regression', samples: 30, features: 2, label_noise: 0.5, seed: 8 } as const;
    const problem = prepareProblem(spec);
    const { x, y } = logisticDataset(30, 2, 0.5, 8);
    expect(problem.loss([0, 0, 0])).toBeCloseTo(Math.LN2, 15);
    const expected = [0, 0, 0];
    for (let i = 0; i < 30; i++) {
      expected[0]! += (0.5 - y[i]!) * x[2 * i]!;
      expected[1]! += (0.5 - y[i]!) * x[2 * i + 1]!;
      expected[2]! += 0.5 - y[i]!;
    }
    const g = gradientAt(spec, [0, 0, 0]);
    g.forEach((v, j) => expect(v).toBeCloseTo(expected[j]! / 30, 15));
    // Both classes occur, so the loss has a finite minimum.
    expect(new Set(y)).toEqual(new Set([0, 1]));
  });

  it('float32 gradients are float32 values close to the float64 ones', () => {
    for (const spec of SPECS) {
      const n = prepareProblem(spec).dimension;
      for (const x of points(n, 5).map((p) => p.map(Math.fround))) {
        const g32 = gradientAt(spec, x, 'float32');
        const g64 = gradientAt(spec, x);
        const scale = Math.max(...g64.map(Math.abs), 1);
        g32.forEach((v, i) => {
          expect(Math.fround(v)).toBe(v);
          expect(Math.abs(v - g64[i]!)).toBeLessThanOrEqual(1e-5 * scale);
        });
      }
    }
  });
});

describe('Random', () => {
  const vectors = fixture.random;

  it.each(Object.entries(vectors.seeds))('seed %s gives the outputs of the Python port', (seed, outputs) => {
    const r = new Random(Number(seed));
    expect(outputs.map(() => r.nextUint32())).toEqual(outputs);
  });

  it('normals and the logistic dataset equal the Python port', () => {
    const r = new Random(0);
    expect(vectors.normals_seed_0.map(() => r.normal())).toEqual(vectors.normals_seed_0);
    const { x, y, trueWeights } = logisticDataset(5, 3, 1, 9);
    expect([...x]).toEqual(vectors.logistic_dataset.x.flat());
    expect([...y]).toEqual(vectors.logistic_dataset.y);
    expect([...trueWeights]).toEqual(vectors.logistic_dataset.true_weights);
  });

  it('uniforms are multiples of 2^-24 in [0, 1) and normals lie within ±6 with mean ≈ 0, variance ≈ 1', () => {
    const r = new Random(123);
    const n = 20_000;
    let sum = 0, sq = 0;
    for (let i = 0; i < n; i++) {
      const u = r.uniform();
      expect(u >= 0 && u < 1 && Number.isInteger(u * 2 ** 24)).toBe(true);
      const z = r.normal();
      expect(Math.abs(z)).toBeLessThanOrEqual(6);
      sum += z;
      sq += z * z;
    }
    expect(Math.abs(sum / n)).toBeLessThan(0.03);
    expect(Math.abs(sq / n - 1)).toBeLessThan(0.05);
  });

  it('refuses seeds outside [0, 2^53)', () => {
    for (const seed of [-1, 0.5, 2 ** 53]) expect(() => new Random(seed)).toThrow(RangeError);
  });
});
