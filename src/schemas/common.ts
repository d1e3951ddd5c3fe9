// Shared zod schemas: tensor trees, dtypes and the problem+json error body. Each `.openapi(name)`
// becomes a component of openapi.yaml.

import { z } from '@hono/zod-openapi';
import { MAX_LISTED_ERRORS } from '../lib/problem.ts';

const TENSOR_REF = '#/components/schemas/Tensor';
const TREE_REF = '#/components/schemas/TensorTree';

/**
 * A tensor: a number (0-d) or a rectangular nested array of numbers. Documented here and checked by
 * `src/tensors/tree.ts`, whose single pass over the elements is far cheaper than a zod array
 * schema on millions of numbers.
 */
export const TensorSchema = z.unknown().openapi('Tensor', {
  description:
    'A tensor: a number (0-d), a flat array of numbers, or a rectangular nested array (as numpy\'s `tolist()` gives). ' +
    'Every element must be a finite JSON number; nested arrays must not be ragged.',
  oneOf: [{ type: 'number' }, { type: 'array', items: { $ref: TENSOR_REF } }],
  example: [[0.5, -1.25], [2, 0]],
} as never);

/** A tensor, or an object of names to tensor trees (like a PyTorch `state_dict`). */
export const TensorTreeSchema = z.unknown().openapi('TensorTree', {
  description:
    'Parameters (or gradients, moments) as one tensor, or as an object of names to tensors, e.g. ' +
    '`{"layer1.weight": [[...], [...]], "layer1.bias": [...]}`. Objects may nest. Trees that must match ' +
    '`params` need the same names (in any order) and the same shapes.',
  oneOf: [{ $ref: TENSOR_REF }, { type: 'object', additionalProperties: { $ref: TREE_REF } }],
  example: { 'layer1.weight': [[0.1, -0.2], [0.3, 0.4]], 'layer1.bias': [0, 0] },
} as never);

const PARTIAL_TREE_REF = '#/components/schemas/PartialTensorTree';

/** A tensor tree in which a tensor may be `null` (a frozen tensor's gradient, a slot torch keeps as None). */
export const PartialTensorTreeSchema = z.unknown().openapi('PartialTensorTree', {
  description:
    'A tensor tree like `TensorTree` in which any tensor may be `null`: in `grads`, a frozen tensor (torch skips a parameter whose ' +
    '`.grad` is None); in state, a tensor for which torch keeps no such state yet.',
  oneOf: [{ $ref: TENSOR_REF }, { type: 'null' }, { type: 'object', additionalProperties: { $ref: PARTIAL_TREE_REF } }],
  example: { 'layer1.weight': [[0.1, -0.2], [0.3, 0.4]], 'layer1.bias': null },
} as never);

/** A required tensor-tree field (z.unknown alone would accept a missing key). */
export const requiredTree = (description: string) =>
  TensorTreeSchema.refine((v) => v !== undefined, { message: 'is required' }).openapi({ description });

export const DtypeSchema = z
  .enum(['float32', 'float64'])
  .openapi('Dtype', {
    description:
      'Element type of the computation and of the returned values. `float32` reproduces torch float32 ' +
      '(the torch default dtype) bit for bit: inputs are rounded to float32 and every result is a float32 ' +
      'value, printed as its exact double. `float64` computes in doubles (torch float64).',
  });

export const FieldErrorSchema = z
  .object({
    field: z.string().openapi({ description: 'Path of the offending field, e.g. `hyperparams.lr` or `grads["fc.bias"][2]`.' }),
    pointer: z.string().optional().openapi({ description: 'RFC 6901 JSON Pointer to the offending field in the request body (absent for headers and query parameters).' }),
    message: z.string().openapi({ description: 'What is wrong with it.' }),
    value: z
      .unknown()
      .optional()
      .openapi({ description: 'The value received, when it is a scalar (non-finite numbers as strings).' }),
  })
  .strict()
  .openapi('FieldError', { description: 'One invalid field of a request.' });

export const ProblemSchema = z
  .object({
    type: z.string().openapi({ description: 'Problem type URI (`urn:adam-api:problem:<slug>`).', example: 'urn:adam-api:problem:validation-error' }),
    title: z.string().openapi({ description: 'Short summary of the problem type.', example: 'Invalid request' }),
    status: z.number().int().openapi({ description: 'HTTP status code.', example: 422 }),
    detail: z.string().openapi({ description: 'What went wrong in this request.', example: 'hyperparams.lr: must be >= 0, got -1' }),
    instance: z.string().optional().openapi({ description: 'The request path.' }),
    errors: z
      .array(FieldErrorSchema)
      .max(MAX_LISTED_ERRORS)
      .optional()
      .openapi({ description: `One entry per invalid field, at most ${MAX_LISTED_ERRORS} (the rest are counted in \`errors_omitted\`).` }),
    errors_omitted: z
      .number()
      .int()
      .min(1)
      .optional()
      .openapi({ description: `Extension: how many more invalid fields were found than \`errors\` lists (it lists the first ${MAX_LISTED_ERRORS}). Absent when every one is listed.` }),
    limit: z.number().int().optional().openapi({ description: 'Extension on 413 and on a 403 quota problem: the limit that was exceeded (bytes, elements or optimizers).' }),
    quota: z
      .enum(['optimizers', 'elements'])
      .optional()
      .openapi({ description: 'Extension on a 403 quota problem (`urn:adam-api:problem:quota-exceeded`): which quota of the API key is full (KEY_MAX_OPTIMIZERS or KEY_MAX_ELEMENTS).' }),
    usage: z.number().int().optional().openapi({ description: 'Extension on a 403 quota problem: what the API key holds already (for elements: in its optimizers other than this one).' }),
    requested: z.number().int().optional().openapi({ description: 'Extension on a 403 elements quota problem: the elements the request asked for.' }),
    step: z.number().int().optional().openapi({ description: 'Extension on 409/412: the optimizer\'s current step.' }),
  })
  .strict()
  .openapi('Problem', { description: 'RFC 9457 problem details (`application/problem+json`).' });

/** A binary media type's schema (bodies in raw or safetensors form are not validated by zod). */
export function binaryContent() {
  return { schema: { type: 'string' as const, format: 'binary' } };
}

/** A problem+json response entry for route definitions. */
export function problem(description: string) {
  return { description, content: { 'application/problem+json': { schema: ProblemSchema } } };
}
