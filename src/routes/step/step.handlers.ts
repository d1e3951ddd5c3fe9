// Handler of the stateless step: validated JSON → typed arrays → pure Adam step → JSON.

import type { RouteHandler } from '@hono/zod-openapi';
import type { AppEnv } from '../../lib/router.ts';
import { hasNegativeZero, jsonText } from '../../lib/json-text.ts';
import { scheduleOverflow, statelessLearningRate } from '../../lib/learning-rate.ts';
import { timing } from '../../lib/observability.ts';
import { ProblemError, fieldError, validationProblem } from '../../lib/problem.ts';
import { parseLike, parseParams, parseState, stateJson } from '../../lib/tensor-input.ts';
import { adamStep, firstNonFinite } from '../../optim/adam.ts';
import { pathOfIndex, unflatten } from '../../tensors/tree.ts';
import type { adamStepRoute } from './step.routes.ts';

export const adamStepHandler: RouteHandler<typeof adamStepRoute, AppEnv> = async (c) => {
  const body = c.req.valid('json');
  const { dtype } = body;
  if (body.schedule !== undefined) {
    // Defaults are already filled in, so look at what the client sent.
    const raw = (await c.req.json()) as { hyperparams?: { lr?: unknown } };
    if (raw.hyperparams?.lr !== undefined) {
      throw validationProblem([fieldError(['hyperparams', 'lr'], 'must be omitted when a schedule sets the learning rate', raw.hyperparams.lr)]);
    }
  }
  const lr = statelessLearningRate(body.hyperparams.lr, body.schedule, body.state?.step ?? 0, body.metrics);
  if (!Number.isFinite(lr)) throw scheduleOverflow(body.state?.step ?? 0, lr);
  const hyperparams = { ...body.hyperparams, lr };
  const { layout, size, values: params } = parseParams(body.params, ['params'], c.get('limits').maxElements, dtype);
  const grads = parseLike(body.grads, layout, ['grads'], dtype);
  const state = parseState(body.state, layout, size, dtype, hyperparams, ['state']);

  // decode: reading, scanning, parsing and validating the body, and flattening its tensors.
  const t = timing(c);
  t.lap('decode');
  const result = t.phase('kernel', () => adamStep({ dtype, hyperparams, params, grads, state }));

  const bad = firstNonFinite(result.params, result.state.m, result.state.v);
  if (bad) {
    const name = (['params', 'state.m', 'state.v'] as const)[bad.array];
    const where = pathOfIndex(layout, bad.index);
    throw new ProblemError(422, 'non-finite-result', `the step produced a non-finite ${name} value (overflow, or eps = 0 with v = 0) at ${name}${where.map((p) => `[${JSON.stringify(p)}]`).join('')}; JSON cannot carry it`, [
      fieldError(['grads', ...where], `leads to a non-finite ${name} value`),
    ]);
  }
  // Tensor trees are typed `unknown` (checked by src/tensors, not zod), which Hono's typed JSON cannot express.
  const text = t.phase('encode', () => {
    const response = { params: unflatten(layout, result.params), state: stateJson(layout, result.state), lr };
    return jsonText(response, hasNegativeZero(result.params, result.state.m, result.state.v, result.state.vMax));
  });
  return c.body(text, 200, { 'content-type': 'application/json' }) as never;
};
