// Route definition of the stateless Adam step (schemas only; the handler lives beside it).

import { createRoute } from '@hono/zod-openapi';
import { serviceRoute } from '../../lib/access.ts';
import { hyperparamQueryShape, strictQuery } from '../../schemas/query.ts';
import { binaryContent, problem } from '../../schemas/common.ts';
import { StepRequestSchema, StepResponseSchema } from '../../schemas/adam.ts';

/** Query parameters read with a safetensors body (a JSON body carries them itself). */
export const STEP_QUERY_KEYS = ['lr', 'beta1', 'beta2', 'eps', 'weight_decay', 'decoupled_weight_decay', 'amsgrad', 'maximize', 'dtype'] as const;

const StepQuerySchema = strictQuery(hyperparamQueryShape('Safetensors bodies only'));

const SAFETENSORS_STEP =
  'A safetensors file (Hugging Face format) whose tensors are named `<slot>/<name>`: `params/…` and `grads/…` (required), and the state as ' +
  'torch names it, `exp_avg/…`, `exp_avg_sq/…` and `max_exp_avg_sq/…` (all or none; with amsgrad and step > 0 also max_exp_avg_sq). ' +
  'A single unnamed tensor is just `params`, `grads`, …. `__metadata__` may hold `step` (completed steps, default 0), `hyperparams` ' +
  '(JSON text of AdamHyperparams), `schedule` and `metrics` (JSON text) and `dtype`; hyperparameters may also be query parameters. ' +
  'Tensors are F32 or F64 (the step\'s dtype) or narrower (F16, BF16; F32 for a float64 step), widened exactly.';

export const adamStepRoute = createRoute(serviceRoute({
  method: 'post',
  path: '/v1/adam/step',
  operationId: 'adamStep',
  tags: ['Stateless step'],
  summary: 'One Adam/AdamW step on parameters, gradients and state you send',
  description:
    'Applies one step of torch.optim.Adam (or AdamW with `decoupled_weight_decay`) with torch 1.13\'s ' +
    'single-tensor (`foreach=False`) semantics and returns the new parameters and state. Send the returned ' +
    '`state` with the next call to continue the same trajectory. float32 results are bit-identical to torch ' +
    'on AVX2 CPUs; float64 results agree to within 1e-12 of scale. The body is JSON or safetensors; the answer ' +
    'comes in the format `Accept` asks for (default: the body\'s), with the same values either way.',
  request: {
    query: StepQuerySchema,
    body: {
      description: `JSON (StepRequest), or ${SAFETENSORS_STEP}`,
      content: { 'application/json': { schema: StepRequestSchema }, 'application/vnd.safetensors': binaryContent() },
      required: false, // documented as required (see openApiDocument); false lets binary bodies reach the handler
    },
  },
  responses: {
    200: {
      description:
        'The parameters and state after the step. In safetensors: `params/…`, `exp_avg/…`, `exp_avg_sq/…` (and `max_exp_avg_sq/…` with amsgrad) ' +
        'in the step\'s dtype, and `__metadata__` `step`, `lr` and `dtype`.',
      headers: { vary: { description: '`Accept`: the format depends on it.', schema: { type: 'string' } } },
      content: { 'application/json': { schema: StepResponseSchema }, 'application/vnd.safetensors': binaryContent() },
    },
    400: problem('Malformed JSON.'),
    406: problem('`Accept` allows neither application/json nor application/vnd.safetensors.'),
    413: problem('Body larger than MAX_BODY_BYTES, or more tensor elements than MAX_ELEMENTS (JSON) or the memory budget (safetensors).'),
    415: problem('Content-Type is neither application/json nor application/vnd.safetensors, the body is compressed (Content-Encoding), or its charset is not UTF-8.'),
    422: problem('Invalid field or tensor (named in `errors`), mismatched structures, or a result that is not finite.'),
  },
}));
