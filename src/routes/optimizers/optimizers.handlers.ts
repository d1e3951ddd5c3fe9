// Handlers of the hosted-optimizer routes: authenticate, find the Durable Object, forward the
// validated request over RPC and relay its reply. All state and math live in the object.

import type { Context } from 'hono';
import type { RouteHandler } from '@hono/zod-openapi';
import type { HostedOptimizer, Reply } from '../../durable-objects/hosted-optimizer.ts';
import { ProblemError, fieldError, validationProblem } from '../../lib/problem.ts';
import { flattenAlone, parseParams, parseState } from '../../lib/tensor-input.ts';
import { ChartError, renderLineChart, type Series } from '../../plot/line-chart.ts';
import type { AppEnv } from '../../lib/router.ts';
import type * as routes from './optimizers.routes.ts';

/**
 * Relays a Durable Object reply, adding the request path as a problem's `instance`. Typed `never`
 * so it satisfies every route's typed responses.
 */
function relay(reply: Reply, path?: string): never {
  let body = reply.body;
  if (path !== undefined && typeof body === 'string' && reply.headers['content-type'] === 'application/problem+json') {
    body = JSON.stringify({ ...(JSON.parse(body) as object), instance: path });
  }
  return new Response(body, { status: reply.status, headers: reply.headers }) as never;
}

function stubFor(c: Context<AppEnv>, id: string): DurableObjectStub<HostedOptimizer> {
  const ns = c.env.HOSTED_OPTIMIZER;
  let doId: DurableObjectId;
  try {
    doId = ns.idFromString(id);
  } catch {
    throw new ProblemError(404, 'not-found', 'no optimizer with this id (not a valid optimizer id)');
  }
  return ns.get(doId);
}

const hex = (bytes: ArrayBuffer) => [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, '0')).join('');

export async function sha256Hex(text: string): Promise<string> {
  return hex(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));
}

/** SHA-256 of the bearer token, or null when there is no Authorization header. */
async function tokenHash(c: Context<AppEnv>): Promise<string | null> {
  const header = c.req.header('authorization');
  if (header === undefined) return null;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  // A malformed header is a wrong token, not a missing one.
  return sha256Hex(match ? match[1]! : `malformed:${header}`);
}

function newToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

export const createOptimizer: RouteHandler<typeof routes.createOptimizerRoute, AppEnv> = async (c) => {
  const body = c.req.valid('json');
  const ns = c.env.HOSTED_OPTIMIZER;
  const id = ns.newUniqueId();
  const token = newToken();
  // JSON is turned into typed arrays here, in the Worker; the object receives compact binary data.
  const params = parseParams(body.params, ['params'], c.get('limits').maxHostedElements, body.dtype);
  const reply = await ns.get(id).create({
    tokenHash: await sha256Hex(token),
    layout: params.layout,
    params: params.values,
    hyperparams: body.hyperparams,
    schedule: body.schedule ?? null,
    dtype: body.dtype,
  });
  if (reply.status !== 201) return relay(reply, c.req.path);
  const info = JSON.parse(reply.body as string) as Record<string, unknown>;
  const location = `/v1/optimizers/${id.toString()}`;
  return relay({ ...reply, body: JSON.stringify({ ...info, token }), headers: { ...reply.headers, location } });
};

export const stepOptimizer: RouteHandler<typeof routes.stepOptimizerRoute, AppEnv> = async (c) => {
  const { id } = c.req.valid('param');
  const body = c.req.valid('json');
  const headers = c.req.valid('header');
  const stub = stubFor(c, id);
  return relay(
    await stub.step(await tokenHash(c), {
      grads: flattenAlone(body.grads, ['grads'], c.get('limits').maxHostedElements),
      loss: body.loss,
      expectedStep: body.expected_step,
      ifMatch: headers['if-match'],
      idempotencyKey: headers['idempotency-key'],
      returnParams: c.req.valid('query').return === 'params',
    }),
    c.req.path,
  );
};

export const getOptimizer: RouteHandler<typeof routes.getOptimizerRoute, AppEnv> = async (c) =>
  relay(await stubFor(c, c.req.valid('param').id).describe(await tokenHash(c)), c.req.path);

export const getParams: RouteHandler<typeof routes.getParamsRoute, AppEnv> = async (c) =>
  relay(await stubFor(c, c.req.valid('param').id).params(await tokenHash(c)), c.req.path);

export const getState: RouteHandler<typeof routes.getStateRoute, AppEnv> = async (c) =>
  relay(await stubFor(c, c.req.valid('param').id).snapshot(await tokenHash(c)), c.req.path);

export const putState: RouteHandler<typeof routes.putStateRoute, AppEnv> = async (c) => {
  const body = c.req.valid('json');
  const stub = stubFor(c, c.req.valid('param').id);
  const { dtype, hyperparams } = body;
  const params = parseParams(body.params, ['params'], c.get('limits').maxHostedElements, dtype);
  const state = parseState({ step: body.step, m: body.m, v: body.v, v_max: body.v_max }, params.layout, params.size, dtype, hyperparams, []);
  return relay(
    await stub.restore(await tokenHash(c), {
      step: body.step,
      dtype,
      hyperparams,
      schedule: body.schedule,
      scheduler_state: body.scheduler_state,
      layout: params.layout,
      params: params.values,
      m: state.m,
      v: state.v,
      vMax: state.vMax,
    }),
    c.req.path,
  );
};

export const patchOptimizer: RouteHandler<typeof routes.patchOptimizerRoute, AppEnv> = async (c) => {
  const body = c.req.valid('json');
  return relay(await stubFor(c, c.req.valid('param').id).update(await tokenHash(c), { hyperparams: body.hyperparams, schedule: body.schedule }), c.req.path);
};

export const deleteOptimizer: RouteHandler<typeof routes.deleteOptimizerRoute, AppEnv> = async (c) =>
  relay(await stubFor(c, c.req.valid('param').id).remove(await tokenHash(c)), c.req.path);

export const getHistory: RouteHandler<typeof routes.historyRoute, AppEnv> = async (c) =>
  relay(await stubFor(c, c.req.valid('param').id).history(await tokenHash(c), c.req.valid('query').limit), c.req.path);

export const plotHistory: RouteHandler<typeof routes.historyPlotRoute, AppEnv> = async (c) => {
  const { limit, log_scale: logScale } = c.req.valid('query');
  const reply = await stubFor(c, c.req.valid('param').id).history(await tokenHash(c), limit);
  if (reply.status !== 200) return relay(reply, c.req.path);
  const { entries } = JSON.parse(reply.body as string) as { entries: Array<{ step: number; lr: number; loss: number | null }> };
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
