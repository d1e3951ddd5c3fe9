// Routes of every optimizer in the registry (src/optim/registry.ts): its stateless step,
// `POST /v1/<name>/step`, and the catalogue that describes them all. Built from the definitions.

import { createRoute, z } from '@hono/zod-openapi';
import type { OptimizerDef } from '../../optim/optimizer.ts';
import { serviceRoute } from '../../lib/access.ts';
import { binaryContent, problem } from '../../schemas/common.ts';
import { componentPrefix, familySchemas, type JsonDialect } from '../../schemas/family.ts';
import { queryOptionalBoolean, queryOptionalEnum, queryOptionalNumber, strictQuery } from '../../schemas/query.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;

/** The hyperparameters and dtype as query parameters, for safetensors bodies. */
export function familyQueryShape(def: AnyDef) {
  const what = 'Safetensors bodies only';
  return {
    ...Object.fromEntries(
      Object.entries(def.hyperparams).map(([k, d]) => [
        k,
        d.type === 'boolean'
          ? queryOptionalBoolean({ description: `${what}: ${d.description}` })
          : d.type === 'enum'
            ? queryOptionalEnum(d.values as [string, ...string[]], { description: `${what}: ${d.description}` })
            : queryOptionalNumber({ description: `${what}: ${d.description}` }),
      ]),
    ),
    dtype: queryOptionalEnum(['float32', 'float64'], { description: `${what}: \`float32\` or \`float64\` (default: float64 if any params tensor is F64, else float32).` }),
  };
}

export function familyStepRoute(def: AnyDef, dialect?: JsonDialect) {
  const s = familySchemas(def, dialect);
  const jsonSlots = dialect ? ` (JSON state: ${Object.entries(dialect.slotNames).map(([torch, json]) => `\`${json}\` for torch's \`${torch}\``).join(', ')})` : '';
  const slotNames = def.slots.map((x) => `\`${x.name}/…\``).join(', ');
  const scalarNames = def.scalars.map((x) => `\`${x.name}\``).join(', ');
  return createRoute(serviceRoute({
    method: 'post',
    path: `/v1/${def.name}/step`,
    operationId: `${def.name}Step`,
    tags: ['Stateless step'],
    summary: `One ${def.torch} step on parameters, gradients and state you send`,
    description:
      `${def.description} Applies one step of ${def.torch} with torch 1.13's single-tensor (\`foreach=False\`) operation order and returns ` +
      `the new parameters and state, named as torch's \`state_dict\` names them${jsonSlots}. Send the returned \`state\` with the next call to continue ` +
      'the trajectory. float32 and float64 results are bit-identical to torch on AVX2 CPUs. The body is JSON or safetensors; the answer ' +
      'comes in the format `Accept` asks for (default: the body\'s).',
    request: {
      query: strictQuery(familyQueryShape(def)),
      body: {
        description:
          `JSON (${dialect?.stepRequest ?? `${componentPrefix(def.name)}StepRequest`}), or a safetensors file whose tensors are \`params/…\` and \`grads/…\` (required)` +
          (slotNames ? ` and the state ${slotNames} (each slot for every parameter, or not at all)` : '') +
          (def.sparse
            ? '; a tensor\'s gradient may come as rows instead of `grads/<name>`: `grads.indices/<name>` (I64 or I32, shape [k] or torch\'s ' +
              '`_indices()` shape [1, k]) with `grads.values/<name>` (shape [k, …the row\'s shape])'
            : '') +
          '; `__metadata__` may hold `step` (required with state' + (def.stepCounter === 'none' ? ', 0 if absent, as torch keeps no count' : ', as JSON\'s `state.step`') + '), `hyperparams`, `schedule` and `metrics` (JSON text)' +
          (scalarNames ? `, ${scalarNames}` : '') +
          ' and `dtype`; hyperparameters may also be query parameters.',
        content: { 'application/json': { schema: s.stepRequest }, 'application/vnd.safetensors': binaryContent() },
        required: false, // documented as required (see openApiDocument); false lets binary bodies reach the handler
      },
    },
    responses: {
      200: {
        description:
          'The parameters and state after the step. In safetensors: `params/…` and the state slots in the step\'s dtype, and `__metadata__` ' +
          `\`step\`, \`lr\`, \`dtype\`${scalarNames ? ` and ${scalarNames}` : ''}.`,
        headers: { vary: { description: '`Accept`: the format depends on it.', schema: { type: 'string' } } },
        content: { 'application/json': { schema: s.stepResponse }, 'application/vnd.safetensors': binaryContent() },
      },
      400: problem('Malformed JSON.'),
      406: problem('`Accept` allows neither application/json nor application/vnd.safetensors.'),
      413: problem('Body larger than MAX_BODY_BYTES, or more tensor elements than MAX_ELEMENTS (JSON) or the memory budget (safetensors).'),
      415: problem('Content-Type is neither application/json nor application/vnd.safetensors, the body is compressed, or its charset is not UTF-8.'),
      422: problem('Invalid field or tensor (named in `errors`), mismatched structures, or a result that is not finite.'),
    },
  }));
}

const HyperparamInfoSchema = z
  .object({
    type: z.enum(['number', 'integer', 'boolean', 'string']).openapi({ description: 'JSON type (`integer`: a whole number, as torch takes a Python int).' }),
    enum: z.array(z.string()).optional().openapi({ description: 'The values a `string` hyperparameter takes.' }),
    default: z.union([z.number(), z.boolean(), z.string()]).optional().openapi({ description: 'torch\'s default; absent when torch requires the argument.' }),
    required: z.boolean().openapi({ description: 'Whether it must be given (unless a schedule sets it, for `lr`).' }),
    minimum: z.number().optional().openapi({ description: 'Inclusive lower bound.' }),
    exclusiveMinimum: z.number().optional().openapi({ description: 'Exclusive lower bound.' }),
    maximum: z.number().optional().openapi({ description: 'Inclusive upper bound.' }),
    exclusiveMaximum: z.number().optional().openapi({ description: 'Exclusive upper bound.' }),
    description: z.string().openapi({ description: 'What it does, naming torch\'s argument.' }),
  })
  .strict()
  .openapi('HyperparamInfo', { description: 'One hyperparameter of an optimizer.' });

export const AlgorithmSchema = z
  .object({
    name: z.string().openapi({ description: 'The name used in routes and in a hosted optimizer\'s `optimizer` field.', example: 'sgd' }),
    torch: z.string().openapi({ description: 'The torch class it reproduces.', example: 'torch.optim.SGD' }),
    description: z.string().openapi({ description: 'What it does.' }),
    step_route: z.string().openapi({ description: 'Its stateless step.', example: '/v1/sgd/step' }),
    sparse_gradients: z.enum(['no', 'also', 'only']).openapi({
      description: 'Whether its steps (stateless and hosted) take sparse (row) gradients, as torch\'s optimizer does: `no`, `also` (beside dense ones: SGD, Adagrad), or `only` (SparseAdam).',
      example: 'also',
    }),
    hyperparams: z.record(z.string(), HyperparamInfoSchema).openapi({ description: 'Hyperparameters by torch\'s name, in torch\'s order.' }),
    state: z
      .object({
        step: z.enum(['float32', 'integer', 'none']).openapi({
          description: 'How torch keeps `state["step"]`: a float32 tensor (saturates at 2^24), a Python int, or not at all (the API still counts).',
        }),
        slots: z
          .array(
            z
              .object({
                name: z.string().openapi({ description: 'torch\'s state_dict name.' }),
                description: z.string().openapi({ description: 'What it holds and when torch keeps it.' }),
              })
              .strict(),
          )
          .openapi({ description: 'Tensors of the parameters\' shape.' }),
        scalars: z
          .array(
            z
              .object({
                name: z.string().openapi({ description: 'torch\'s state_dict name.' }),
                description: z.string().openapi({ description: 'What it holds.' }),
                initial: z.number().openapi({ description: 'Its value before the first step.' }),
              })
              .strict(),
          )
          .openapi({ description: 'Numbers kept beside the tensors (e.g. NAdam\'s `mu_product`).' }),
      })
      .strict()
      .openapi({ description: 'The state it keeps, with torch\'s names.' }),
    hosted_max_elements: z
      .object({
        float32: z.number().int().openapi({ description: 'Most float32 parameter elements of one hosted optimizer of this kind.' }),
        float64: z.number().int().openapi({ description: 'Most float64 parameter elements of one hosted optimizer of this kind.' }),
      })
      .strict()
      .openapi({
        description:
          'What one hosted optimizer of this kind holds: MAX_HOSTED_BYTES / ((2 + slots) × 4 or 8 bytes), for params, the gradient buffer and every state slot it can keep (413 above it).',
      }),
  })
  .strict()
  .openapi('Algorithm', { description: 'One optimizer the API serves.' });

export const algorithmsRoute = createRoute({
  method: 'get',
  path: '/v1/algorithms',
  operationId: 'listAlgorithms',
  tags: ['Catalogue'],
  summary: 'Every optimizer the API serves, with its hyperparameters and state',
  description: 'Generated from the same definitions as the step schemas: names, defaults and bounds are those the routes enforce.',
  responses: {
    200: {
      description: 'The optimizers.',
      content: {
        'application/json': {
          schema: z
            .object({ algorithms: z.array(AlgorithmSchema).openapi({ description: 'Every optimizer, Adam first.' }) })
            .strict()
            .openapi('AlgorithmList', { description: 'The optimizers the API serves.' }),
        },
      },
    },
  },
});

export const algorithmRoute = createRoute({
  method: 'get',
  path: '/v1/algorithms/{name}',
  operationId: 'getAlgorithm',
  tags: ['Catalogue'],
  summary: 'One optimizer, with its hyperparameters and state',
  request: {
    params: z.object({ name: z.string().openapi({ param: { name: 'name', in: 'path' }, description: 'The optimizer\'s name, e.g. `sgd`.', example: 'sgd' }) }),
  },
  responses: {
    200: { description: 'The optimizer.', content: { 'application/json': { schema: AlgorithmSchema } } },
    404: problem('No optimizer has this name (the problem lists the names).'),
  },
});
