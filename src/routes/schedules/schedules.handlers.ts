// Handlers of the schedule routes: validated request → pure schedule evaluation → JSON or SVG.

import type { RouteHandler } from '@hono/zod-openapi';
import { fieldError, ProblemError, validationProblem } from '../../lib/problem.ts';
import type { AppEnv } from '../../lib/router.ts';
import { ChartError, renderLineChart } from '../../plot/line-chart.ts';
import type { EvaluateRequest, PlotRequest } from '../../schemas/schedule.ts';
import { evaluateSchedule, ReplayLimitError } from '../../schedules/index.ts';
import { numberText, objectJson } from '../../wire/json.ts';
import { defaultStepCount, describeSpec, expandSteps, parseScheduleQuery } from './schedules.input.ts';
import type { evaluateQueryRoute, evaluateRoute, plotQueryRoute, plotRoute } from './schedules.routes.ts';

const SVG_TYPE = 'image/svg+xml; charset=utf-8';

/**
 * Work one evaluate or plot request may spend replaying torch's recursive schedules (units of one
 * multiply; a step with a cos costs 16, with a pow 160: see src/schedules/recurrence.ts): 2^25, about
 * 33 million exponential/step/linear steps, 2 million cosine steps or 210 000 polynomial steps.
 */
export const EVALUATE_REPLAY_BUDGET = 2 ** 25;

/** Steps and rates of a validated request; a non-finite rate (exponential overflow) is a 422. */
function evaluate(request: EvaluateRequest): { steps: number[]; lr: number[] } {
  const { schedule, metrics } = request;
  const steps = expandSteps(request.steps, defaultStepCount(schedule, metrics));
  let lr: number[];
  try {
    lr = evaluateSchedule(schedule, steps, metrics, { replayBudget: EVALUATE_REPLAY_BUDGET });
  } catch (err) {
    if (!(err instanceof ReplayLimitError)) throw err;
    const i = steps.indexOf(err.step);
    throw validationProblem([
      fieldError(
        Array.isArray(request.steps) && i >= 0 ? ['steps', i] : ['steps'],
        `step ${err.step} would replay ${err.cost} units of torch's recursive get_lr() (at most ${err.budget} per request); evaluate nearer steps or a schedule torch computes in closed form`,
      ),
    ]);
  }
  const bad = lr.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) {
    throw new ProblemError(422, 'non-finite-result', `the schedule's rate at step ${steps[bad]} is not finite (it overflows); JSON cannot carry it`, [
      fieldError(Array.isArray(request.steps) ? ['steps', bad] : ['steps'], `lr(${steps[bad]}) overflows to ${lr[bad]}`),
    ]);
  }
  return { steps, lr };
}

/** The SVG chart of a validated plot request. */
function plot(request: PlotRequest): string {
  const { steps, lr } = evaluate(request);
  if (request.log_scale) {
    const i = lr.findIndex((v) => v <= 0);
    if (i >= 0) {
      throw validationProblem([
        fieldError(['log_scale'], `a log scale needs every lr > 0, but lr(${steps[i]}) = ${lr[i]}; start the steps after it or use a linear scale`, true),
      ]);
    }
  }
  const plateau = request.schedule.type === 'reduce_on_plateau';
  try {
    return renderLineChart([{ label: 'learning rate', x: steps, y: lr }], {
      width: request.width,
      height: request.height,
      title: request.title ?? describeSpec(request.schedule),
      xLabel: plateau ? 'step (metric reports)' : 'step',
      yLabel: 'learning rate',
      logY: request.log_scale,
      includeZero: !request.log_scale,
    });
  } catch (err) {
    // Rates too large or too small to scale (e.g. lr = 1e308): evaluate works, the chart cannot.
    if (err instanceof ChartError) throw validationProblem([fieldError(['schedule'], `cannot be plotted: ${err.message}`)]);
    throw err;
  }
}

const JSON_TYPE = 'application/json';

/** The evaluate answer as JSON text, keeping the sign of a zero rate (torch's rate can be -0.0, as the step routes report it). */
function evaluateJson({ steps, lr }: { steps: number[]; lr: number[] }): string {
  return objectJson([
    ['steps', { value: steps }],
    ['lr', { json: `[${lr.map(numberText).join(',')}]` }],
  ]);
}

export const evaluateHandler: RouteHandler<typeof evaluateRoute, AppEnv> = (c) =>
  c.body(evaluateJson(evaluate(c.req.valid('json'))), 200, { 'content-type': JSON_TYPE }) as never; // text, as the step routes: -0.0

export const plotHandler: RouteHandler<typeof plotRoute, AppEnv> = (c) => c.body(plot(c.req.valid('json')), 200, { 'content-type': SVG_TYPE });

export const evaluateQueryHandler: RouteHandler<typeof evaluateQueryRoute, AppEnv> = (c) => {
  const request = parseScheduleQuery(c.req.valid('param').type, c.req.valid('query'), false);
  return c.body(evaluateJson(evaluate(request)), 200, { 'content-type': JSON_TYPE }) as never;
};

export const plotQueryHandler: RouteHandler<typeof plotQueryRoute, AppEnv> = (c) => {
  const request = parseScheduleQuery(c.req.valid('param').type, c.req.valid('query'), true);
  return c.body(plot(request), 200, { 'content-type': SVG_TYPE });
};
