// The built-in test problems of POST /v1/compare, by name: a spec (name and options, defaults
// filled in) → a prepared problem, and the work one gradient of it costs.

import { beale, type BealeOptions } from './beale.ts';
import { logisticRegression, type LogisticRegressionOptions } from './logistic-regression.ts';
import { noisyQuadratic, type NoisyQuadraticOptions } from './noisy-quadratic.ts';
import { rosenbrock, type RosenbrockOptions } from './rosenbrock.ts';
import type { PreparedProblem } from './types.ts';

export { beale } from './beale.ts';
export { logisticRegression, logisticDataset } from './logistic-regression.ts';
export { noisyQuadratic, defaultCurvatures } from './noisy-quadratic.ts';
export { Random } from './random.ts';
export { rosenbrock } from './rosenbrock.ts';
export type { GradientFn, PreparedProblem } from './types.ts';

export const PROBLEM_NAMES = ['rosenbrock', 'beale', 'noisy_quadratic', 'logistic_regression'] as const;
export type ProblemName = (typeof PROBLEM_NAMES)[number];

export type ProblemSpec =
  | ({ name: 'rosenbrock' } & RosenbrockOptions)
  | ({ name: 'beale' } & BealeOptions)
  | ({ name: 'noisy_quadratic' } & NoisyQuadraticOptions)
  | ({ name: 'logistic_regression' } & LogisticRegressionOptions);

export function prepareProblem(spec: ProblemSpec): PreparedProblem {
  switch (spec.name) {
    case 'rosenbrock':
      return rosenbrock(spec);
    case 'beale':
      return beale(spec);
    case 'noisy_quadratic':
      return noisyQuadratic(spec);
    case 'logistic_regression':
      return logisticRegression(spec);
  }
}

/**
 * Work units of one gradient, for the request budget: the dimension; 4 × the dimension for the
 * noisy quadratic (12 uniform draws per noise value); samples × (features + 1) for the regression.
 */
export function problemCost(spec: ProblemSpec): number {
  switch (spec.name) {
    case 'rosenbrock':
      return spec.dimension;
    case 'beale':
      return 2;
    case 'noisy_quadratic':
      return 4 * spec.dimension;
    case 'logistic_regression':
      return spec.samples * (spec.features + 1);
  }
}
