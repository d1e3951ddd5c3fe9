// Route definition of the stateless Adam step (schemas only; the handler lives beside it).

import { createRoute } from '@hono/zod-openapi';
import { problem } from '../../schemas/common.ts';
import { StepRequestSchema, StepResponseSchema } from '../../schemas/adam.ts';

export const adamStepRoute = createRoute({
  method: 'post',
  path: '/v1/adam/step',
  operationId: 'adamStep',
  tags: ['Stateless step'],
  summary: 'One Adam/AdamW step on parameters, gradients and state you send',
  description:
    'Applies one step of torch.optim.Adam (or AdamW with `decoupled_weight_decay`) with torch 1.13\'s ' +
    'single-tensor (`foreach=False`) semantics and returns the new parameters and state. Send the returned ' +
    '`state` with the next call to continue the same trajectory. float32 results are bit-identical to torch ' +
    'on AVX2 CPUs; float64 results agree to within 1e-12 of scale.',
  request: {
    body: { content: { 'application/json': { schema: StepRequestSchema } }, required: true },
  },
  responses: {
    200: { description: 'The parameters and state after the step.', content: { 'application/json': { schema: StepResponseSchema } } },
    400: problem('Malformed JSON.'),
    413: problem('Body larger than MAX_BODY_BYTES, or more tensor elements than MAX_ELEMENTS.'),
    415: problem('Content-Type is not application/json, the body is compressed (Content-Encoding), or its charset is not UTF-8.'),
    422: problem('Invalid field (named in `errors`), mismatched structures, or a result that is not finite.'),
  },
});
