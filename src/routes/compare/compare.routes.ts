// Route definition of POST /v1/compare (schemas only; the handler lives beside it).

import { createRoute, z } from '@hono/zod-openapi';
import { problem } from '../../schemas/common.ts';
import { CompareRequestSchema, CompareResponseSchema, MAX_WORK } from '../../schemas/compare.ts';

export const compareRoute = createRoute({
  method: 'post',
  path: '/v1/compare',
  operationId: 'compareOptimizers',
  tags: ['Compare'],
  summary: 'Run optimizers side by side on a built-in test function; loss curves as JSON or an SVG chart',
  description:
    'Runs each requested optimizer (any of `GET /v1/algorithms`, with its hyperparameters as its step route takes them, and an optional ' +
    'schedule) from the same start point on a built-in test problem (Rosenbrock, Beale, a noisy quadratic, a logistic regression) and ' +
    'records the loss at every iterate. Each step is the stateless step\'s kernel, so a run is what torch 1.13 computes with that ' +
    'optimizer on that function. `Accept: image/svg+xml` answers a chart with one line per run instead of JSON. A run whose gradient, ' +
    'params or loss stop being finite (or whose loss exceeds 1e300) ends there and says why; the others go on.',
  request: { body: { content: { 'application/json': { schema: CompareRequestSchema } }, required: true } },
  responses: {
    200: {
      description:
        'JSON: every run\'s loss curve, final params and stop reason. SVG: a line chart of the loss over the steps, one ' +
        '`<polyline class="series" data-series="<label>">` per run, with a legend. The format is the one `Accept` prefers (default JSON).',
      headers: { vary: { description: '`Accept`: the format depends on it.', schema: { type: 'string' } } },
      content: {
        'application/json': { schema: CompareResponseSchema },
        'image/svg+xml': { schema: z.string().openapi({ description: 'SVG document.' }) },
      },
    },
    400: problem('Malformed JSON.'),
    406: problem('`Accept` allows neither application/json nor image/svg+xml.'),
    413: problem(`Body larger than MAX_BODY_BYTES, or more work than ${MAX_WORK.toLocaleString('en-US')} units (Σ runs × steps × the problem's cost per gradient).`),
    415: problem('Content-Type is not application/json, the body is compressed (Content-Encoding), or its charset is not UTF-8.'),
    422: problem('Invalid problem, run, hyperparameter or chart option (named in `errors`), e.g. an unknown optimizer, a missing SGD `lr`, duplicate labels, or a start point whose loss is not finite.'),
  },
});
