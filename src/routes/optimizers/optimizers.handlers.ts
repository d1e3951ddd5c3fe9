// Handlers of the hosted-optimizer routes: authenticate, find the Durable Object, hand it the
// validated request over RPC, and encode the data it returns. All state and math live in the object.

import type { RouteHandler } from '@hono/zod-openapi';
import { ProblemError, fieldError, validationProblem } from '../../lib/problem.ts';
import { flattenAlone, parseParams, parseState } from '../../lib/tensor-input.ts';
import { ChartError, renderLineChart, type Series } from '../../plot/line-chart.ts';
import type { AppEnv } from '../../lib/router.ts';
import { infoJson, jsonResponse, paramsJson, snapshotJsonStream, stepJson } from './optimizers.encode.ts';
import { newToken, sha256Hex, stubFor, tokenHash, unwrap } from './optimizers.stub.ts';
import type * as routes from './optimizers.routes.ts';

export const createOptimizer: RouteHandler<typeof routes.createOptimizerRoute, AppEnv> = async (c) => {
  const body = c.req.valid('json');
  const ns = c.env.HOSTED_OPTIMIZER;
  const id = ns.newUniqueId();
  const token = newToken();
  // JSON is turned into typed arrays here, in the Worker; the object receives compact binary data.
  const params = parseParams(body.params, ['params'], c.get('limits').maxHostedElements, body.dtype);
  const { etag, value: info } = unwrap(
    await ns.get(id).create({
      tokenHash: await sha256Hex(token),
      layout: params.layout,
      params: params.values,
      hyperparams: body.hyperparams,
      schedule: body.schedule ?? null,
      dtype: body.dtype,
    }),
  );
  return jsonResponse(201, { ...infoJson(info), token }, { etag, location: `/v1/optimizers/${id.toString()}` });
};

export const stepOptimizer: RouteHandler<typeof routes.stepOptimizerRoute, AppEnv> = async (c) => {
  const { id } = c.req.valid('param');
  const body = c.req.valid('json');
  const headers = c.req.valid('header');
  const stub = stubFor(c, id);
  const { etag, value } = unwrap(
    await stub.step(await tokenHash(c), {
      grads: { format: 'json', flat: flattenAlone(body.grads, ['grads'], c.get('limits').maxHostedElements) },
      loss: body.loss,
      expectedStep: body.expected_step,
      ifMatch: headers['if-match'],
      idempotencyKey: headers['idempotency-key'],
      returnParams: c.req.valid('query').return === 'params',
    }),
  );
  return stepJson(value, { etag, ...(value.replayed ? { 'idempotent-replayed': 'true' } : {}) });
};

export const getOptimizer: RouteHandler<typeof routes.getOptimizerRoute, AppEnv> = async (c) => {
  const { etag, value } = unwrap(await stubFor(c, c.req.valid('param').id).describe(await tokenHash(c)));
  return jsonResponse(200, infoJson(value), { etag });
};

export const getParams: RouteHandler<typeof routes.getParamsRoute, AppEnv> = async (c) => {
  const { etag, value } = unwrap(await stubFor(c, c.req.valid('param').id).params(await tokenHash(c)));
  return paramsJson(value.step, value.params, { etag });
};

export const getState: RouteHandler<typeof routes.getStateRoute, AppEnv> = async (c) => {
  const snapshot = unwrap(await stubFor(c, c.req.valid('param').id).snapshot(await tokenHash(c)));
  return snapshotJsonStream(snapshot, { etag: snapshot.etag });
};

export const putState: RouteHandler<typeof routes.putStateRoute, AppEnv> = async (c) => {
  const body = c.req.valid('json');
  const stub = stubFor(c, c.req.valid('param').id);
  const { dtype, hyperparams } = body;
  const params = parseParams(body.params, ['params'], c.get('limits').maxHostedElements, dtype);
  const state = parseState({ step: body.step, m: body.m, v: body.v, v_max: body.v_max }, params.layout, params.size, dtype, hyperparams, []);
  const { etag, value } = unwrap(
    await stub.restore(await tokenHash(c), {
      step: body.step,
      dtype,
      hyperparams,
      schedule: body.schedule,
      schedulerState: body.scheduler_state,
      layout: params.layout,
      params: params.values,
      m: state.m,
      v: state.v,
      vMax: state.vMax,
    }),
  );
  return jsonResponse(200, infoJson(value), { etag });
};

export const patchOptimizer: RouteHandler<typeof routes.patchOptimizerRoute, AppEnv> = async (c) => {
  const body = c.req.valid('json');
  const { etag, value } = unwrap(await stubFor(c, c.req.valid('param').id).update(await tokenHash(c), { hyperparams: body.hyperparams, schedule: body.schedule }));
  return jsonResponse(200, infoJson(value), { etag });
};

export const deleteOptimizer: RouteHandler<typeof routes.deleteOptimizerRoute, AppEnv> = async (c) => {
  unwrap(await stubFor(c, c.req.valid('param').id).remove(await tokenHash(c)));
  return new Response(null, { status: 204 }) as never;
};

export const getHistory: RouteHandler<typeof routes.historyRoute, AppEnv> = async (c) => {
  const history = unwrap(await stubFor(c, c.req.valid('param').id).history(await tokenHash(c), c.req.valid('query').limit));
  return jsonResponse(200, history);
};

export const plotHistory: RouteHandler<typeof routes.historyPlotRoute, AppEnv> = async (c) => {
  const { limit, log_scale: logScale } = c.req.valid('query');
  const { entries } = unwrap(await stubFor(c, c.req.valid('param').id).history(await tokenHash(c), limit));
  if (entries.length === 0) throw new ProblemError(409, 'conflict', 'no step has been recorded yet: plot after the first step');
  const withLoss = entries.filter((e) => e.loss !== null);
  if (logScale) {
    const bad = withLoss.find((e) => e.loss! <= 0);
    if (bad) throw validationProblem([fieldError(['log_scale'], `a log scale needs every loss > 0, but the loss at step ${bad.step} is ${bad.loss}`, true)]);
  }
  const lrSeries: Series = { label: 'learning rate', x: entries.map((e) => e.step), y: entries.map((e) => e.lr) };
  const series: Series[] = withLoss.length
    ? [{ label: 'loss', x: withLoss.map((e) => e.step), y: withLoss.map((e) => e.loss!) }, { ...lrSeries, axis: 'right' }]
    : [lrSeries];
  let svg: string;
  try {
    svg = renderLineChart(series, {
      title: `Optimizer ${c.req.valid('param').id.slice(0, 12)}…: ${withLoss.length ? 'loss and learning rate' : 'learning rate'}`,
      xLabel: 'step',
      yLabel: withLoss.length ? 'loss' : 'learning rate',
      y2Label: 'learning rate',
      logY: withLoss.length > 0 && logScale,
    });
  } catch (err) {
    // Values a chart cannot scale (beyond 1e±300): the history is fine, only the picture is not.
    if (err instanceof ChartError) throw new ProblemError(422, 'validation-error', `the history cannot be plotted: ${err.message}`);
    throw err;
  }
  return c.body(svg, 200, { 'content-type': 'image/svg+xml; charset=utf-8' });
};
