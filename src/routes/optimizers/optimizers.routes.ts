// Route definitions of hosted optimizers: create, step, read, snapshot/restore, patch, history, delete.

import { createRoute, z } from '@hono/zod-openapi';
import { requireBearer } from '../../lib/auth.ts';
import { authorizeBeforeParsing } from './optimizers.stub.ts';
import { problem } from '../../schemas/common.ts';
import {
  AuthHeaderSchema,
  CreateOptimizerSchema,
  CreatedOptimizerSchema,
  HistoryPlotQuerySchema,
  HistoryQuerySchema,
  HistoryResponseSchema,
  HostedStepRequestSchema,
  HostedStepResponseSchema,
  OptimizerIdParam,
  OptimizerInfoSchema,
  ParamsResponseSchema,
  PatchOptimizerSchema,
  ReturnQuerySchema,
  SnapshotInputSchema,
  SnapshotSchema,
  StepHeadersSchema,
} from '../../schemas/optimizer.ts';

const TAGS = ['Hosted optimizers'];
const SECURITY = [{ bearerAuth: [] }];

const ETAG = {
  etag: {
    description: 'The state version: a new, never reused tag after every change (step, restore, PATCH); send it as If-Match with a step.',
    schema: { type: 'string' as const },
  },
};

/** Errors every authenticated call can return. */
const authErrors = {
  401: {
    ...problem('Missing or wrong bearer token. A missing one is reported before any validation of the request.'),
    headers: { 'www-authenticate': { description: '`Bearer realm="adam-api"`', schema: { type: 'string' as const } } },
  },
  404: problem('No optimizer with this id (never created, deleted, or not a valid id).'),
};

const jsonBody = <T extends z.ZodType>(schema: T) => ({ content: { 'application/json': { schema } }, required: true });

export const createOptimizerRoute = createRoute({
  method: 'post',
  path: '/v1/optimizers',
  operationId: 'createOptimizer',
  tags: TAGS,
  summary: 'Create a hosted optimizer',
  description:
    'Stores the params and a fresh Adam state in a new Durable Object. The response carries the id and a bearer token, ' +
    'shown only once: every later call needs `Authorization: Bearer <token>`.',
  request: { body: jsonBody(CreateOptimizerSchema) },
  responses: {
    201: {
      description: 'Created.',
      headers: { location: { description: 'URL of the new optimizer.', schema: { type: 'string' } }, ...ETAG },
      content: { 'application/json': { schema: CreatedOptimizerSchema } },
    },
    400: problem('Malformed JSON.'),
    413: problem('Body larger than MAX_BODY_BYTES or params larger than MAX_HOSTED_ELEMENTS.'),
    415: problem('Content-Type is not application/json, the body is compressed (Content-Encoding), or its charset is not UTF-8.'),
    422: problem('Invalid params, hyperparams, schedule or dtype.'),
  },
});

export const stepOptimizerRoute = createRoute({
  method: 'post',
  path: '/v1/optimizers/{id}/step',
  operationId: 'stepOptimizer',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer, authorizeBeforeParsing] as const,
  summary: 'Apply one gradient',
  description:
    'Applies one Adam step with the stored hyperparameters and schedule, exactly as POST /v1/adam/step would with the stored state. ' +
    'Steps on one optimizer are applied one at a time, each exactly once. Use `Idempotency-Key` to make retries safe and ' +
    '`If-Match` or `expected_step` to refuse a gradient computed against stale params.',
  request: { params: OptimizerIdParam, query: ReturnQuerySchema, headers: StepHeadersSchema, body: jsonBody(HostedStepRequestSchema) },
  responses: {
    200: {
      description: 'The step was applied (or, with `replayed: true`, had already been applied for this Idempotency-Key).',
      headers: { ...ETAG, 'idempotent-replayed': { description: '`true` on a replay.', schema: { type: 'string' } } },
      content: { 'application/json': { schema: HostedStepResponseSchema } },
    },
    400: problem('Malformed JSON.'),
    ...authErrors,
    409: problem('`expected_step` differs from the optimizer\'s step.'),
    412: { ...problem('`If-Match` does not match the current state (weak tags never match).'), headers: ETAG },
    413: problem('Body larger than MAX_BODY_BYTES, or holding more JSON values than the route can use.'),
    415: problem('Content-Type is not application/json, the body is compressed (Content-Encoding), or its charset is not UTF-8.'),
    422: problem('Gradients whose structure or shapes differ, non-finite numbers, an Idempotency-Key reused with other gradients, or a step that would overflow. Nothing is changed.'),
  },
});

export const getOptimizerRoute = createRoute({
  method: 'get',
  path: '/v1/optimizers/{id}',
  operationId: 'getOptimizer',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer] as const,
  summary: 'Metadata: step, hyperparameters, schedule, next lr, shapes',
  request: { params: OptimizerIdParam, headers: AuthHeaderSchema },
  responses: {
    200: { description: 'Metadata.', headers: ETAG, content: { 'application/json': { schema: OptimizerInfoSchema } } },
    ...authErrors,
  },
});

export const getParamsRoute = createRoute({
  method: 'get',
  path: '/v1/optimizers/{id}/params',
  operationId: 'getOptimizerParams',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer] as const,
  summary: 'Current parameters',
  request: { params: OptimizerIdParam, headers: AuthHeaderSchema },
  responses: {
    200: { description: 'Parameters in the structure given at creation.', headers: ETAG, content: { 'application/json': { schema: ParamsResponseSchema } } },
    ...authErrors,
  },
});

export const getStateRoute = createRoute({
  method: 'get',
  path: '/v1/optimizers/{id}/state',
  operationId: 'getOptimizerState',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer] as const,
  summary: 'Full snapshot (params, moments, hyperparameters, schedule)',
  request: { params: OptimizerIdParam, headers: AuthHeaderSchema },
  responses: {
    200: { description: 'Snapshot; PUT it back to restore.', headers: ETAG, content: { 'application/json': { schema: SnapshotSchema } } },
    ...authErrors,
  },
});

export const putStateRoute = createRoute({
  method: 'put',
  path: '/v1/optimizers/{id}/state',
  operationId: 'restoreOptimizerState',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer, authorizeBeforeParsing] as const,
  summary: 'Restore a snapshot (validated, atomic)',
  description:
    'Replaces params, moments, step, dtype, hyperparameters and schedule with the snapshot\'s, in one transaction (shapes may change within ' +
    'MAX_HOSTED_ELEMENTS). Read-only fields of a GET snapshot (`id`, times) are ignored, so GET → PUT round-trips. The history is a log of applied ' +
    'steps and keeps its entries.',
  request: { params: OptimizerIdParam, headers: AuthHeaderSchema, body: jsonBody(SnapshotInputSchema) },
  responses: {
    200: { description: 'Restored; the new metadata.', headers: ETAG, content: { 'application/json': { schema: OptimizerInfoSchema } } },
    400: problem('Malformed JSON.'),
    ...authErrors,
    413: problem('Body larger than MAX_BODY_BYTES or params larger than MAX_HOSTED_ELEMENTS.'),
    415: problem('Content-Type is not application/json, the body is compressed (Content-Encoding), or its charset is not UTF-8.'),
    422: problem('The snapshot does not validate; nothing was changed.'),
  },
});

export const patchOptimizerRoute = createRoute({
  method: 'patch',
  path: '/v1/optimizers/{id}',
  operationId: 'updateOptimizer',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer, authorizeBeforeParsing] as const,
  summary: 'Change hyperparameters or the schedule',
  description: 'Merges the given hyperparameters into the stored ones and/or replaces the schedule (null removes it). Unknown fields are rejected.',
  request: { params: OptimizerIdParam, headers: AuthHeaderSchema, body: jsonBody(PatchOptimizerSchema) },
  responses: {
    200: { description: 'Updated metadata.', headers: ETAG, content: { 'application/json': { schema: OptimizerInfoSchema } } },
    400: problem('Malformed JSON.'),
    ...authErrors,
    413: problem('Body larger than MAX_BODY_BYTES, or holding more JSON values than the route can use.'),
    415: problem('Content-Type is not application/json, the body is compressed (Content-Encoding), or its charset is not UTF-8.'),
    422: problem('Unknown or invalid fields; nothing was changed.'),
  },
});

export const deleteOptimizerRoute = createRoute({
  method: 'delete',
  path: '/v1/optimizers/{id}',
  operationId: 'deleteOptimizer',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer] as const,
  summary: 'Delete the optimizer and everything stored for it',
  request: { params: OptimizerIdParam, headers: AuthHeaderSchema },
  responses: { 204: { description: 'Deleted; later calls get 404.' }, ...authErrors },
});

export const historyRoute = createRoute({
  method: 'get',
  path: '/v1/optimizers/{id}/history',
  operationId: 'getOptimizerHistory',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer] as const,
  summary: 'Loss and learning rate per step',
  request: { params: OptimizerIdParam, query: HistoryQuerySchema, headers: AuthHeaderSchema },
  responses: {
    200: { description: 'The most recent entries, oldest first.', content: { 'application/json': { schema: HistoryResponseSchema } } },
    ...authErrors,
    422: problem('Invalid `limit`.'),
  },
});

export const historyPlotRoute = createRoute({
  method: 'get',
  path: '/v1/optimizers/{id}/history/plot',
  operationId: 'plotOptimizerHistory',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer] as const,
  summary: 'Loss and learning rate per step as an SVG chart',
  description: 'Loss (left axis, when losses were reported) and learning rate (right axis) over the most recent `limit` steps.',
  request: { params: OptimizerIdParam, query: HistoryPlotQuerySchema, headers: AuthHeaderSchema },
  responses: {
    200: { description: 'SVG line chart.', content: { 'image/svg+xml': { schema: z.string() } } },
    ...authErrors,
    409: problem('No step has been recorded yet.'),
    422: problem('Invalid `limit` or `log_scale`, or a log scale with a loss <= 0.'),
  },
});
