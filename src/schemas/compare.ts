// zod schemas of POST /v1/compare: a built-in test problem (src/problems), the runs (any registry
// optimizer with its own hyperparameter schema, src/schemas/family.ts, and an optional schedule),
// and chart options. Each becomes an OpenAPI component.

import { z } from '@hono/zod-openapi';
import type { OptimizerDef } from '../optim/optimizer.ts';
import { OPTIMIZERS } from '../optim/registry.ts';
import { PROBLEM_NAMES, type ProblemSpec } from '../problems/index.ts';
import { DtypeSchema } from './common.ts';
import { componentPrefix, familySchemas } from './family.ts';
import { PLOT_DEFAULTS, ScheduleSpecSchema } from './schedule.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;

/** Most runs in one comparison (one chart line each). */
export const MAX_RUNS = 10;
/** Most steps per run. */
export const MAX_STEPS = 10_000;
/** Largest dimension of Rosenbrock and the noisy quadratic. */
export const MAX_DIMENSION = 10_000;
/** Largest logistic regression dataset: samples, features, and their product. */
export const MAX_SAMPLES = 10_000;
export const MAX_FEATURES = 100;
export const MAX_DATASET_VALUES = 100_000;
/**
 * Most work in one comparison: Σ over runs of steps × the problem's cost per gradient (its
 * dimension; 4 × the dimension for the noisy quadratic, which draws 12 uniforms per noise value;
 * samples × (features + 1) for the logistic regression). Above it the request is a 413. Measured
 * in workerd on this 2-core machine (under load from other test runs), requests at the limit take
 * 0.3–2.4 s (slowest: 10 NAdam runs × 10,000 steps of a 50-D Rosenbrock, 2 MB of JSON); a run
 * costs 100–300 ns per unit with the plain TypeScript kernels.
 */
export const MAX_WORK = 5_000_000;
/** Longest run label. */
export const MAX_LABEL_LENGTH = 100;

const MAX_SEED = Number.MAX_SAFE_INTEGER;

const seed = z
  .number()
  .int()
  .min(0)
  .max(MAX_SEED)
  .default(0)
  .openapi({ description: 'Seed of the random stream (an integer in [0, 2^53)); the stream is documented in src/problems/random.ts and reproducible in any language.' });

const start = (what: string) =>
  z
    .array(z.number())
    .max(MAX_DIMENSION + 1)
    .optional()
    .openapi({ description: `Start point (${what}). float32 runs round it to float32, as torch.tensor(start, dtype=torch.float32) does.` });

function checkStartLength(value: { start?: number[] | undefined }, n: number, ctx: z.RefinementCtx, why: string) {
  if (value.start !== undefined && value.start.length !== n) {
    ctx.addIssue({ code: 'custom', path: ['start'], message: `must have ${n} values (${why}), got ${value.start.length}`, input: value.start });
  }
}

export const RosenbrockProblemSchema = z
  .object({
    name: z.literal('rosenbrock').openapi({ description: 'The problem.' }),
    dimension: z
      .number()
      .int()
      .min(2)
      .max(MAX_DIMENSION)
      .default(2)
      .openapi({ description: `Number of coordinates, even (pairs), 2 to ${MAX_DIMENSION}.` }),
    a: z.number().default(1).openapi({ description: 'a of b·(y − x²)² + (a − x)²; the minimum is at (a, a²) per pair.' }),
    b: z.number().min(0).default(100).openapi({ description: 'b of b·(y − x²)² + (a − x)², >= 0.' }),
    start: start('default (−1.2, 1) per pair'),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.dimension % 2 !== 0) ctx.addIssue({ code: 'custom', path: ['dimension'], message: 'must be even: the extended Rosenbrock function sums over pairs', input: v.dimension });
    checkStartLength(v, v.dimension, ctx, 'the dimension');
  })
  .openapi('RosenbrockProblem', {
    description: 'Rosenbrock\'s function, extended to any even dimension: f(x) = Σ_pairs b·(x_{2i+1} − x_{2i}²)² + (a − x_{2i})². Minimum 0.',
  });

export const BealeProblemSchema = z
  .object({
    name: z.literal('beale').openapi({ description: 'The problem.' }),
    start: start('2 values, default (1, 1)'),
  })
  .strict()
  .superRefine((v, ctx) => checkStartLength(v, 2, ctx, 'Beale\'s function is 2-D'))
  .openapi('BealeProblem', { description: 'Beale\'s function f(x, y) = (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)², minimum 0 at (3, 0.5).' });

export const NoisyQuadraticProblemSchema = z
  .object({
    name: z.literal('noisy_quadratic').openapi({ description: 'The problem.' }),
    dimension: z.number().int().min(1).max(MAX_DIMENSION).default(10).openapi({ description: `Number of coordinates, 1 to ${MAX_DIMENSION}.` }),
    curvatures: z
      .array(z.number().gt(0))
      .max(MAX_DIMENSION)
      .optional()
      .openapi({ description: 'The diagonal h (each > 0), one per coordinate; default 1/(i+1): 1, 1/2, …, 1/n.' }),
    noise: z.number().min(0).default(0.1).openapi({ description: 'σ >= 0, the scale of the gradient noise.' }),
    seed,
    start: start('default all ones'),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.curvatures !== undefined && v.curvatures.length !== v.dimension) {
      ctx.addIssue({ code: 'custom', path: ['curvatures'], message: `must have ${v.dimension} values (the dimension), got ${v.curvatures.length}`, input: v.curvatures });
    }
    checkStartLength(v, v.dimension, ctx, 'the dimension');
  })
  .openapi('NoisyQuadraticProblem', {
    description:
      'A noisy quadratic: f(x) = ½ Σ h_i x_i², minimum 0 at x = 0, with the stochastic gradient g_t = h ⊙ (x − σ ξ_t) of the sampled loss ' +
      '½ Σ h_i (x_i − σ ξ_{t,i})², ξ_t approximately standard normal draws of the seeded stream (ξ_0 first, each in coordinate order). ' +
      'Every run sees the same noise; the curves report the noise-free f.',
  });

export const LogisticRegressionProblemSchema = z
  .object({
    name: z.literal('logistic_regression').openapi({ description: 'The problem.' }),
    samples: z.number().int().min(1).max(MAX_SAMPLES).default(100).openapi({ description: `Number of examples n, 1 to ${MAX_SAMPLES}.` }),
    features: z.number().int().min(1).max(MAX_FEATURES).default(5).openapi({ description: `Number of features d, 1 to ${MAX_FEATURES} (the params are d weights and a bias).` }),
    label_noise: z.number().min(0).default(1).openapi({ description: 'Scale of the noise added to x·w* before thresholding the label (0: separable data, whose loss has no minimum).' }),
    seed,
    start: start('d + 1 values: the weights, then the bias; default zeros'),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.samples * v.features > MAX_DATASET_VALUES) {
      ctx.addIssue({ code: 'custom', path: ['samples'], message: `samples × features must be at most ${MAX_DATASET_VALUES}, got ${v.samples} × ${v.features}`, input: v.samples });
    }
    checkStartLength(v, v.features + 1, ctx, 'features + 1: the weights, then the bias');
  })
  .openapi('LogisticRegressionProblem', {
    description:
      'Logistic regression on a synthetic dataset drawn from the seeded stream: true weights w* then, per example, its features and a label noise ε, ' +
      'all approximately standard normal; y = 1 when x·w* + label_noise·ε > 0. Loss: the mean binary cross-entropy of z = x·w + b ' +
      '(torch\'s binary_cross_entropy_with_logits); params (w_1 … w_d, b).',
  });

function unknownName(issue: z.core.$ZodRawIssue, key: string, allowed: readonly string[]): string | undefined {
  if (issue.code !== 'invalid_union') return undefined;
  const input = issue.input as Record<string, unknown> | undefined;
  const value = input !== null && typeof input === 'object' ? input[key] : undefined;
  if (value === undefined) return `${key} is required: one of ${allowed.join(', ')}`;
  return `unknown ${key} ${JSON.stringify(value)}: must be one of ${allowed.join(', ')}`;
}

export const ProblemSpecSchema = z
  .discriminatedUnion('name', [RosenbrockProblemSchema, BealeProblemSchema, NoisyQuadraticProblemSchema, LogisticRegressionProblemSchema], {
    error: (issue) => unknownName(issue, 'name', PROBLEM_NAMES),
  })
  .openapi('ProblemSpec', { description: `A built-in test problem, by \`name\`: ${PROBLEM_NAMES.join(', ')}.` });

// The schema's output and src/problems' spec type must stay identical.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const specTypesAgree: Same<z.output<typeof ProblemSpecSchema>, ProblemSpec> = true;
void specTypesAgree;

const label = z
  .string()
  .min(1)
  .max(MAX_LABEL_LENGTH)
  .optional()
  .openapi({ description: 'Legend label (default: the optimizer and the hyperparameters given). Labels must differ between runs.' });

function runSchema(def: AnyDef) {
  return z
    .object({
      optimizer: z.literal(def.name).openapi({ description: `\`${def.name}\`: ${def.torch}.` }),
      hyperparams: familySchemas(def).hyperparams.prefault({}),
      schedule: ScheduleSpecSchema.optional().openapi({ description: 'A learning-rate schedule (then omit hyperparams.lr); reduce_on_plateau is fed the loss at each step\'s iterate.' }),
      label,
    })
    .strict()
    .openapi(`${componentPrefix(def.name)}CompareRun`, { description: `A run of ${def.torch}, with its hyperparameters as \`POST /v1/${def.name}/step\` takes them.` });
}

export const CompareRunSchema = z
  .discriminatedUnion(
    'optimizer',
    OPTIMIZERS.map(runSchema) as unknown as [ReturnType<typeof runSchema>, ...Array<ReturnType<typeof runSchema>>],
    { error: (issue) => unknownName(issue, 'optimizer', OPTIMIZERS.map((d) => d.name)) },
  )
  .openapi('CompareRun', { description: 'One optimizer run: the optimizer by name, its hyperparameters (defaults filled in), an optional schedule and a label.' });

export const CompareRequestSchema = z
  .object({
    problem: ProblemSpecSchema,
    steps: z.number().int().min(1).max(MAX_STEPS).default(100).openapi({ description: `Optimizer steps per run, 1 to ${MAX_STEPS}.` }),
    dtype: DtypeSchema.default('float32'),
    runs: z.array(CompareRunSchema).min(1).max(MAX_RUNS).openapi({ description: `The runs, 1 to ${MAX_RUNS}, each from the same start point.` }),
    log_scale: z
      .boolean()
      .optional()
      .openapi({ description: 'SVG only: logarithmic loss axis. Default: logarithmic when every recorded loss is > 0 (true with a zero loss is a 422).' }),
    width: z.number().int().min(200).max(4000).default(PLOT_DEFAULTS.width).openapi({ description: 'SVG only: image width in pixels, 200 to 4000.' }),
    height: z.number().int().min(150).max(3000).default(PLOT_DEFAULTS.height).openapi({ description: 'SVG only: image height in pixels, 150 to 3000.' }),
    title: z.string().max(200).optional().openapi({ description: 'SVG only: chart title (default: the problem and the dtype).' }),
  })
  .strict()
  .openapi('CompareRequest', {
    description:
      `Runs each optimizer from the problem's start for \`steps\` steps and records the loss at every iterate. Work is bounded: ` +
      `Σ over runs of steps × the problem's cost (dimension; 4 × dimension for noisy_quadratic; samples × (features + 1) for logistic_regression) ` +
      `must be at most ${MAX_WORK.toLocaleString('en-US')} (413 otherwise).`,
    example: {
      problem: { name: 'rosenbrock' },
      steps: 200,
      dtype: 'float64',
      runs: [
        { optimizer: 'sgd', hyperparams: { lr: 0.001, momentum: 0.9 }, label: 'SGD+momentum' },
        { optimizer: 'adagrad', hyperparams: { lr: 0.1 } },
        { optimizer: 'rmsprop', hyperparams: { lr: 0.01 } },
        { optimizer: 'adam', hyperparams: { lr: 0.01 } },
      ],
    },
  });

export type CompareRequest = z.output<typeof CompareRequestSchema>;

const StopSchema = z
  .object({
    step: z.number().int().openapi({ description: 'The step that could not be completed (0-based): the run\'s curve ends at the iterate before it.' }),
    reason: z.enum(['non-finite-gradient', 'non-finite-params', 'diverged', 'non-finite-lr']).openapi({
      description: '`non-finite-gradient`: the gradient overflowed the dtype; `non-finite-params`: the update did; `diverged`: the loss went above 1e300; `non-finite-lr`: the schedule overflowed.',
    }),
    message: z.string().openapi({ description: 'What happened, in words.' }),
  })
  .strict()
  .openapi('CompareStop', { description: 'Why a run ended early.' });

export const CompareRunResultSchema = z
  .object({
    label: z.string().openapi({ description: 'The legend label: as sent, or the default.' }),
    optimizer: z.string().openapi({ description: 'The optimizer\'s name.' }),
    hyperparams: z.record(z.string(), z.union([z.number(), z.boolean(), z.string()])).openapi({ description: 'The hyperparameters used, defaults filled in (`lr` is absent when a schedule sets it).' }),
    schedule: z.unknown().optional().openapi({ description: 'The schedule, defaults filled in, when one was given.' }),
    loss: z.array(z.number()).openapi({ description: 'f at the start and after each completed step (steps_completed + 1 values), in float64.' }),
    final_loss: z.number().openapi({ description: 'The last value of `loss`.' }),
    best_loss: z.number().openapi({ description: 'The smallest value of `loss`.' }),
    final_params: z.array(z.number()).openapi({ description: 'The last iterate on the curve (for float32 runs, float32 values written as their exact doubles).' }),
    steps_completed: z.number().int().openapi({ description: 'Steps applied: `steps`, or fewer when the run stopped early.' }),
    stopped: StopSchema.nullable(),
  })
  .strict()
  .openapi('CompareRunResult', { description: 'One run\'s loss curve and end point.' });

export const CompareResponseSchema = z
  .object({
    problem: z
      .record(z.string(), z.unknown())
      .openapi({ description: 'The problem with every option filled in (start included), its `dimension`, and `optimum` ({loss, params}, or null when unknown).' }),
    steps: z.number().int().openapi({ description: 'Steps requested per run.' }),
    dtype: DtypeSchema,
    runs: z.array(CompareRunResultSchema).openapi({ description: 'One result per run, in request order.' }),
  })
  .strict()
  .openapi('CompareResponse', { description: 'The loss curves of every run, in request order.' });
