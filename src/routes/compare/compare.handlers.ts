// Handler of POST /v1/compare: validated request → per-run checks (the step route's rules) → the
// pure runner (src/compare/run.ts) → JSON, or the SVG chart (src/plot/line-chart.ts).

import type { Context } from 'hono';
import { DIVERGED_LOSS, runOne, type RunResult, type RunSpec } from '../../compare/run.ts';
import { timing } from '../../lib/observability.ts';
import { ProblemError, fieldError, headerError, validationProblem, type FieldError } from '../../lib/problem.ts';
import type { AppEnv } from '../../lib/router.ts';
import type { Hyperparams } from '../../optim/optimizer.ts';
import { optimizerDef } from '../../optim/registry.ts';
import { ChartError, MIN_MAGNITUDE, renderLineChart } from '../../plot/line-chart.ts';
import { defaultCurvatures, prepareProblem, problemCost, type PreparedProblem } from '../../problems/index.ts';
import { MAX_WORK, type CompareRequest } from '../../schemas/compare.ts';
import { numberText, objectJson } from '../../wire/json.ts';

const SVG_TYPE = 'image/svg+xml; charset=utf-8';
const JSON_TYPE = 'application/json';

/** `json` or `svg` from Accept (q-values honoured, JSON on ties and by default), or a 406. */
export function compareAnswer(accept: string | undefined): 'json' | 'svg' {
  if (accept === undefined || accept.trim() === '') return 'json';
  let json = -1, svg = -1, any = -1;
  for (const part of accept.split(',')) {
    const [type = '', ...params] = part.split(';').map((p) => p.trim().toLowerCase());
    if (type === '') continue;
    const qParam = params.find((p) => p.startsWith('q='));
    const q = qParam === undefined ? 1 : Number(qParam.slice(2));
    const weight = Number.isFinite(q) ? Math.min(1, Math.max(0, q)) : 0;
    if (type === 'application/json' || /^application\/[a-z0-9.+-]*\+json$/.test(type) || type === 'application/*') json = Math.max(json, weight);
    else if (type === 'image/svg+xml' || type === 'image/*') svg = Math.max(svg, weight);
    else if (type === '*/*') any = Math.max(any, weight);
  }
  const qJson = json >= 0 ? json : any;
  const qSvg = svg >= 0 ? svg : any;
  if (qJson <= 0 && qSvg <= 0) {
    const message = `Accept ${accept} allows none of the formats this route answers in: ${JSON_TYPE}, image/svg+xml`;
    throw new ProblemError(406, 'not-acceptable', message, [headerError('Accept', message, accept)]);
  }
  return qSvg > qJson ? 'svg' : 'json';
}

type Run = CompareRequest['runs'][number];
type RawRun = { hyperparams?: Record<string, unknown> } | undefined;

/** The default legend label: the optimizer and the hyperparameters as sent, then the schedule type. */
function defaultLabel(run: Run, raw: RawRun): string {
  const sent = raw?.hyperparams && typeof raw.hyperparams === 'object' ? Object.entries(raw.hyperparams) : [];
  const parts = sent.map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : String(v)}`);
  if (run.schedule) parts.push(`${run.schedule.type} schedule`);
  const label = [run.optimizer, ...parts].join(' ');
  return label.length <= 100 ? label : `${label.slice(0, 99)}…`;
}

/** Each run checked as its step route checks it; a 422 naming `runs[i]…` otherwise. */
function checkedRuns(request: CompareRequest, rawRuns: RawRun[], dimension: number): Array<RunSpec & { label: string }> {
  const errors: FieldError[] = [];
  const out: Array<RunSpec & { label: string }> = [];
  request.runs.forEach((run, i) => {
    const def = optimizerDef(run.optimizer)!;
    const hp = { ...(run.hyperparams as Record<string, number | boolean | string>) } as Record<string, number | boolean | string | undefined>;
    const lrSent = rawRuns[i]?.hyperparams?.lr !== undefined;
    if (run.schedule && lrSent) errors.push(fieldError(['runs', i, 'hyperparams', 'lr'], 'must be omitted when a schedule sets the learning rate', hp.lr));
    for (const [k, d] of Object.entries(def.hyperparams)) {
      if (d.type === 'number' && d.default === undefined && hp[k] === undefined && !(k === 'lr' && run.schedule)) {
        errors.push(fieldError(['runs', i, 'hyperparams', k], `is required: ${def.torch} has no default ${k} (or send a schedule)`));
      }
    }
    if (run.schedule) delete hp.lr;
    // Cross-field rules are checked with the schedule's first rate standing in for lr.
    const withLr = { ...hp, lr: hp.lr ?? 0 } as Hyperparams;
    const rule = def.check?.(withLr) ?? def.constructorCheck?.(withLr);
    if (rule) errors.push(fieldError(['runs', i, 'hyperparams', rule.field], rule.message, hp[rule.field]));
    const shapeMessage = def.checkShape?.([dimension]);
    if (def.sparse === 'only') errors.push(fieldError(['runs', i, 'optimizer'], `${def.torch} steps sparse (row) gradients only; the problems' gradients are dense`, run.optimizer));
    if (shapeMessage) errors.push(fieldError(['runs', i, 'optimizer'], `${shapeMessage}; the problem's params are one vector of ${dimension}`, run.optimizer));
    out.push({ def, hyperparams: hp as Hyperparams, schedule: run.schedule, label: run.label ?? defaultLabel(run, rawRuns[i]) });
  });
  const seen = new Map<string, number>();
  out.forEach((r, i) => {
    const first = seen.get(r.label);
    if (first !== undefined) errors.push(fieldError(['runs', i, 'label'], `repeats the label of runs[${first}]; give the runs distinct labels`, r.label));
    else seen.set(r.label, i);
  });
  if (errors.length > 0) throw validationProblem(errors);
  return out;
}

/** The problem as answered: its options with defaults filled in, dimension, start and optimum. */
function describeProblem(request: CompareRequest, problem: PreparedProblem) {
  const { start: _start, ...options } = request.problem;
  const extra = request.problem.name === 'noisy_quadratic' ? { curvatures: request.problem.curvatures ?? defaultCurvatures(problem.dimension) } : {};
  return {
    ...options,
    ...extra,
    dimension: problem.dimension,
    start: problem.start,
    optimum: problem.optimum,
  };
}

function chart(request: CompareRequest, problem: PreparedProblem, labels: string[], results: RunResult[]): string {
  const positive = results.every((r) => r.loss.every((v) => v >= MIN_MAGNITUDE));
  if (request.log_scale === true && !positive) {
    const i = results.findIndex((r) => r.loss.some((v) => v < MIN_MAGNITUDE));
    const k = results[i]!.loss.findIndex((v) => v < MIN_MAGNITUDE);
    throw validationProblem([
      fieldError(['log_scale'], `a log scale needs every loss >= ${MIN_MAGNITUDE}, but runs[${i}] ("${labels[i]}") reaches ${results[i]!.loss[k]} at step ${k}; use a linear scale`, true),
    ]);
  }
  const logY = request.log_scale ?? positive;
  // On a linear axis, losses below the chart's smallest magnitude are drawn as 0 (they are, at any pixel size).
  const y = (loss: number[]) => (logY ? loss : loss.map((v) => (v < MIN_MAGNITUDE ? 0 : v)));
  const name = request.problem.name.replace('_', ' ');
  try {
    return renderLineChart(
      results.map((r, i) => ({ label: labels[i]!, x: r.loss.map((_, k) => k), y: y(r.loss), axis: 'left' as const })),
      {
        width: request.width,
        height: request.height,
        title: request.title ?? `${name} (dimension ${problem.dimension}, ${request.dtype}): loss over ${request.steps} steps`,
        xLabel: 'step',
        yLabel: 'loss',
        logY,
        includeZero: !logY,
      },
    );
  } catch (err) {
    if (err instanceof ChartError) throw validationProblem([fieldError(['runs'], `cannot be plotted: ${err.message}`)]);
    throw err;
  }
}

export async function compareHandler(c: Context<AppEnv>) {
  const answer = compareAnswer(c.req.header('accept'));
  const request = (c.req.valid as (t: 'json') => unknown)('json') as CompareRequest;
  const raw = (await c.req.json()) as { runs?: RawRun[] };
  const rawRuns = Array.isArray(raw.runs) ? raw.runs : [];

  const cost = problemCost(request.problem);
  const work = request.runs.length * request.steps * cost;
  if (work > MAX_WORK) {
    throw new ProblemError(
      413,
      'payload-too-large',
      `the comparison needs ${work} work units (${request.runs.length} runs × ${request.steps} steps × ${cost} per gradient of ${request.problem.name}); the limit is ${MAX_WORK}: fewer steps, runs or a smaller problem`,
      [fieldError(['steps'], `× ${request.runs.length} runs × ${cost} per gradient is ${work}, above ${MAX_WORK}`, request.steps)],
      { limit: MAX_WORK },
    );
  }
  const t = timing(c);
  const problem = t.phase('decode', () => prepareProblem(request.problem));
  const runs = checkedRuns(request, rawRuns, problem.dimension);

  const start = request.dtype === 'float32' ? Float32Array.from(problem.start) : Float64Array.from(problem.start);
  const f0 = problem.loss(start);
  if (!(f0 <= DIVERGED_LOSS) || !start.every(Number.isFinite)) {
    throw validationProblem([fieldError(['problem', 'start'], `the loss at the start point is ${f0} in ${request.dtype}; it must be finite and at most ${DIVERGED_LOSS}`)]);
  }
  const results = t.phase('kernel', () => runs.map((run) => runOne(problem, request.dtype, request.steps, run)));
  const labels = runs.map((r) => r.label);

  if (answer === 'svg') return c.body(t.phase('encode', () => chart(request, problem, labels, results)), 200, { 'content-type': SVG_TYPE, vary: 'Accept' });

  const text = t.phase('encode', () =>
    objectJson([
      ['problem', { value: describeProblem(request, problem) }],
      ['steps', { value: request.steps }],
      ['dtype', { value: request.dtype }],
      [
        'runs',
        {
          json: `[${results
            .map((r, i) => {
              const run = runs[i]!;
              return objectJson([
                ['label', { value: run.label }],
                ['optimizer', { value: run.def.name }],
                ['hyperparams', { value: run.hyperparams }],
                ['schedule', { value: run.schedule }],
                ['loss', { json: `[${r.loss.map(numberText).join(',')}]` }],
                ['final_loss', { value: r.loss.at(-1) }],
                ['best_loss', { value: Math.min(...r.loss) }],
                ['final_params', { json: `[${Array.from(r.params, numberText).join(',')}]` }],
                ['steps_completed', { value: r.steps }],
                ['stopped', { value: r.stopped }],
              ]);
            })
            .join(',')}]`,
        },
      ],
    ]),
  );
  return c.body(text, 200, { 'content-type': JSON_TYPE, vary: 'Accept' });
}
