// Route definitions of hosted optimizers: create, step, read, upload, snapshot/restore, patch,
// history, delete. Tensors travel as JSON, raw little-endian bytes or safetensors files.

import { createRoute, z } from '@hono/zod-openapi';
import { serviceRoute } from '../../lib/access.ts';
import { requireBearer } from '../../lib/auth.ts';
import { binaryContent, problem } from '../../schemas/common.ts';
import {
  AuthHeaderSchema,
  ConditionalHeadersSchema,
  CreateOptimizerSchema,
  CreateQuerySchema,
  CreatedOptimizerSchema,
  HistoryPlotQuerySchema,
  HistoryQuerySchema,
  HistoryResponseSchema,
  HostedStepQuerySchema,
  StepPartSchema,
  HostedStepRequestSchema,
  HostedStepResponseSchema,
  ListQuerySchema,
  OptimizerIdParam,
  OptimizerListSchema,
  OptimizerInfoSchema,
  ContributionPendingSchema,
  ParamsQuerySchema,
  ParamsResponseSchema,
  PatchOptimizerSchema,
  SnapshotInputSchema,
  TokenSchema,
  SnapshotSchema,
  StepHeadersSchema,
  UploadParamsSchema,
  UploadQuerySchema,
} from '../../schemas/optimizer.ts';
import { authorizeBeforeParsing } from './optimizers.stub.ts';

const TAGS = ['Hosted optimizers'];
const SECURITY = [{ bearerAuth: [] }];

const ETAG = {
  etag: {
    description: 'The state version: a new, never reused tag after every change (step, restore, PATCH, upload; not a skipped step, which changes no state); send it as If-Match with a step.',
    schema: { type: 'string' as const },
  },
};
const VARY = { vary: { description: '`Accept`: the format depends on it.', schema: { type: 'string' as const } } };
const STEP_HEADERS = {
  step: { description: 'Completed steps after this answer (also in JSON bodies and safetensors `__metadata__`).', schema: { type: 'string' as const } },
  lr: { description: 'The learning rate the step applied (step answers only).', schema: { type: 'string' as const } },
  grad_norm: { description: 'With `clip_grad_norm`: the total gradient norm before clipping (step answers only).', schema: { type: 'string' as const } },
  skipped: { description: 'With `nonfinite: "skip"`: `true` when the step was skipped (step answers only).', schema: { type: 'string' as const } },
};

/** Errors every authenticated call can return. */
const authErrors = {
  401: {
    ...problem('Missing or wrong bearer token. It is checked before a binary body is read and before a JSON body over 64 KiB is parsed; a smaller JSON body is parsed first (bounded by its size), so a malformed one may answer 400 or 422 first. A missing token is reported before any validation.'),
    headers: { 'www-authenticate': { description: '`Bearer realm="adam-api"`', schema: { type: 'string' as const } } },
  },
  404: problem('No optimizer with this id (never created, deleted, or not a valid id).'),
};

/** Answers that carry a token must not be stored by caches. */
const NO_STORE = { 'cache-control': { description: '`no-store`: the answer holds a token.', schema: { type: 'string' as const } } };

const jsonBody = <T extends z.ZodType>(schema: T) => ({ content: { 'application/json': { schema } }, required: true });

const RAW =
  '`application/octet-stream`: every element of the optimizer\'s tensors in `layout` order (GET /v1/optimizers/{id}), each tensor row-major, ' +
  'little-endian, as numpy\'s `a.astype("<f4").tobytes()` concatenated. The element type is the optimizer\'s dtype unless the Content-Type says ' +
  'otherwise: `application/octet-stream; dtype=bfloat16` (or float16; float32 for a float64 optimizer), widened exactly.';
const SAFETENSORS_TREE =
  '`application/vnd.safetensors`: a safetensors file (Hugging Face format) of tensors named as in `layout` (torch\'s parameter names, e.g. ' +
  '`fc.weight`), F32/F64 as the optimizer or narrower (F16, BF16), widened exactly.';

/** Body entries of a route taking a tensor tree as JSON, raw bytes or safetensors (each documented above). */
function tensorBody<T extends z.ZodType>(schema: T, description: string, raw = true) {
  return {
    description,
    content: {
      'application/json': { schema },
      ...(raw ? { 'application/octet-stream': binaryContent() } : {}),
      'application/vnd.safetensors': binaryContent(),
    },
    required: false, // documented as required (see openApiDocument); false lets binary bodies reach the handler
  };
}

export const createOptimizerRoute = createRoute(serviceRoute({
  method: 'post',
  path: '/v1/optimizers',
  operationId: 'createOptimizer',
  tags: TAGS,
  summary: 'Create a hosted optimizer',
  description:
    'Stores the params (or, from `shapes`, zeros to be uploaded with PUT .../params) and a fresh Adam state in a new Durable Object. The response ' +
    'carries the id and a bearer token, shown only once: every later call needs `Authorization: Bearer <token>`. One optimizer holds at most ' +
    'MAX_HOSTED_BYTES / 20 float32 or / 40 float64 elements (params, m, v, v_max and a gradient buffer: 4,194,304 / 2,097,152 by default). ' +
    'It deletes itself once `ttl` seconds (default 30 days) pass without a successful call; `expires_at` says when.',
  request: {
    query: CreateQuerySchema,
    body: tensorBody(
      CreateOptimizerSchema,
      'JSON (CreateOptimizer), or a safetensors file of the params, named as `model.state_dict()` names them; hyperparameters then go in `__metadata__` ' +
        '(`hyperparams`, `param_groups`, `schedule`, `accumulate`: JSON text; `dtype`) or the query (`lr`, `beta1`, …, `dtype`).',
      false,
    ),
  },
  responses: {
    201: {
      description: 'Created.',
      headers: { location: { description: 'URL of the new optimizer.', schema: { type: 'string' } }, ...ETAG, ...NO_STORE },
      content: { 'application/json': { schema: CreatedOptimizerSchema } },
    },
    400: problem('Malformed JSON.'),
    403: problem(
      'The API key\'s quota is full (servers with API_KEYS): it holds KEY_MAX_OPTIMIZERS optimizers, or this one\'s elements would take it over ' +
        'KEY_MAX_ELEMENTS. `quota` says which, with `limit`, `usage` and (elements) `requested`. Nothing was created.',
    ),
    406: problem('`Accept` does not allow application/json.'),
    413: problem('Body larger than MAX_BODY_BYTES, or more elements than one optimizer holds.'),
    415: problem('Content-Type is neither application/json nor application/vnd.safetensors, the body is compressed (Content-Encoding), or its charset is not UTF-8.'),
    422: problem('Invalid params, shapes, hyperparams, schedule or dtype, or a malformed safetensors file.'),
  },
}));

export const listOptimizersRoute = createRoute(serviceRoute({
  method: 'get',
  path: '/v1/optimizers',
  operationId: 'listOptimizers',
  tags: TAGS,
  summary: 'List the optimizers of the API key',
  description:
    'The hosted optimizers created with the request\'s API key, oldest first, a page at a time (`limit`, then `cursor` = the previous page\'s ' +
    '`next_cursor`), with what the key holds and may hold. Deleted and expired optimizers are not listed. Step and times are each optimizer\'s ' +
    'own, asked when listing. Only on servers with API keys (API_KEYS): without them optimizers belong to no key, and this is a 403.',
  request: { query: ListQuerySchema },
  responses: {
    200: { description: 'One page.', content: { 'application/json': { schema: OptimizerListSchema } } },
    403: problem('This server has no API keys (API_KEYS), so optimizers belong to no key and are not listed.'),
    406: problem('`Accept` does not allow application/json.'),
    422: problem('Invalid `limit` or `cursor`, or an unknown query parameter.'),
  },
}));

/** 412 of a conditional request (If-Match), with the current ETag. */
const IF_MATCH_FAILED = { ...problem('`If-Match` does not match the current state (weak tags never match); nothing was changed.'), headers: ETAG };

export const stepOptimizerRoute = createRoute({
  method: 'post',
  path: '/v1/optimizers/{id}/step',
  operationId: 'stepOptimizer',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer, authorizeBeforeParsing] as const,
  summary: 'Apply one gradient',
  description:
    'Applies one step of the optimizer it was created with (`optimizer`: Adam, SGD, …) with the stored hyperparameters, param groups, gradient ' +
    'controls and schedule, exactly as that optimizer\'s stateless step (`POST /v1/{optimizer}/step`) would with the stored state. ' +
    'Steps on one optimizer are applied one at a time, each exactly once. Use `Idempotency-Key` to make retries safe and ' +
    '`If-Match` or `expected_step` to refuse a gradient computed against stale params. The gradients come as JSON, raw bytes or safetensors; ' +
    'the new params go back in the format `Accept` asks for (default: the body\'s), with `step` and `lr` as headers too. With the hyperparameter ' +
    '`nonfinite: "skip"`, a step with a non-finite gradient (NaN or ±Infinity, which raw and safetensors bodies can carry) or result is skipped ' +
    '(200, `skipped: true`): nothing changes but `skipped_steps` and the history. A frozen tensor (a `null` gradient, or one left out of a safetensors ' +
    'file) is skipped as torch skips a parameter whose `.grad` is None: it, its state and its own step count stay as they are. SGD, Adagrad and ' +
    'SparseAdam (which takes nothing else) take sparse (row) gradients as their stateless steps do: `{"indices": [...], "values": [[row], ...]}` ' +
    'for a tensor in JSON, `grads.indices/<name>` (I64 or I32) with `grads.values/<name>` in place of `<name>` in safetensors; such a step is ' +
    'stored whole (no journal entry). ' +
    'An optimizer with `accumulate` (many workers, one optimizer) takes each gradient as one worker\'s contribution (`?worker=i`, with `expected_step`): ' +
    'stored and answered 202 until all `contributions` for the step have arrived; the last one applies the step with their mean or sum (200); ' +
    'contributions are dense.',
  request: {
    params: OptimizerIdParam,
    query: HostedStepQuerySchema,
    headers: StepHeadersSchema,
    body: tensorBody(HostedStepRequestSchema, `JSON (HostedStepRequest), or the gradients alone: ${RAW} Or ${SAFETENSORS_TREE} A tensor left out of a safetensors file (\`null\` in JSON) is frozen; a raw body carries every tensor, dense. SGD, Adagrad and SparseAdam take a tensor's gradient as rows instead: \`grads.indices/<name>\` (I64 or I32, shape [k] or torch's \`_indices()\` shape [1, k]) with \`grads.values/<name>\` (shape [k, …the row's shape]).`),
  },
  responses: {
    200: {
      description:
        'The step was applied (or, with `replayed: true` / `Idempotent-Replayed: true`, had already been applied for this Idempotency-Key). ' +
        'The params after the step: JSON (HostedStepResponse), raw bytes (the optimizer\'s dtype, in `layout` order; empty with `?return=none`) ' +
        'or safetensors (`__metadata__` holds `step` and `lr`; no tensors with `?return=none`).',
      headers: { ...ETAG, ...STEP_HEADERS, ...VARY, 'idempotent-replayed': { description: '`true` on a replay.', schema: { type: 'string' } } },
      content: { 'application/json': { schema: HostedStepResponseSchema }, 'application/octet-stream': binaryContent(), 'application/vnd.safetensors': binaryContent() },
    },
    202: {
      description:
        'Optimizers with `accumulate`: the contribution was validated and stored durably, and the step waits for the other workers\' (JSON whatever `Accept`: ' +
        'it holds no tensors). The same contribution sent again by the same worker (same values and loss) answers the same, with `replayed: true`. ' +
        'A step in parts (`part_offset`): the part was validated and stored by the shards, and the step waits for the rest (StepPart).',
      headers: { ...ETAG, step: STEP_HEADERS.step },
      content: { 'application/json': { schema: z.union([ContributionPendingSchema, StepPartSchema]) } },
    },
    400: problem('Malformed JSON.'),
    ...authErrors,
    406: problem('`Accept` allows none of application/json, application/octet-stream, application/vnd.safetensors. Nothing was applied.'),
    409: problem(
      '`expected_step` differs from the optimizer\'s step (`step` says the current one: with `accumulate`, a contribution to a step already applied), ' +
        'some params have not been uploaded yet (optimizers created by `shapes`), or, with `accumulate`, this worker already contributed other values to the pending step.',
    ),
    408: problem('A binary body that did not arrive in time (it may take 30 s plus one second per 64 KiB). Nothing was applied.'),
    412: IF_MATCH_FAILED,
    413: problem('Body larger than MAX_BODY_BYTES (JSON), or holding more JSON values than the route can use.'),
    415: problem('Content-Type is not one of the three formats (or names an unknown dtype), the body is compressed, or its charset is not UTF-8.'),
    422: problem(
      'Gradients whose structure, shapes, length or dtype differ from the optimizer\'s, non-finite numbers (unless `nonfinite: "skip"`), a malformed safetensors file, ' +
        'an Idempotency-Key reused with other gradients, or a step that would overflow. With `accumulate`: `worker` missing or out of range, `expected_step` ' +
        'missing, a tensor left out (a contribution is dense: every tensor), or a reduced gradient that overflows. Nothing is changed.',
    ),
  },
});

export const getOptimizerRoute = createRoute({
  method: 'get',
  path: '/v1/optimizers/{id}',
  operationId: 'getOptimizer',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer] as const,
  summary: 'Metadata: step, skipped steps, hyperparameters, schedule, next lr, layout, upload status',
  request: { params: OptimizerIdParam, headers: AuthHeaderSchema },
  responses: {
    200: { description: 'Metadata.', headers: ETAG, content: { 'application/json': { schema: OptimizerInfoSchema } } },
    ...authErrors,
    406: problem('`Accept` does not allow application/json.'),
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
  description:
    'The params as JSON (the default), raw bytes or safetensors (`Accept`), with the step count as a header too. With `min_step`, only params of at least ' +
    'that many steps: the answer waits up to `wait` seconds for the step to land (workers of an accumulating optimizer wait so for the step they contributed to), ' +
    'then is a 409 if it has not.',
  request: { params: OptimizerIdParam, query: ParamsQuerySchema, headers: AuthHeaderSchema },
  responses: {
    200: {
      description:
        'Parameters: JSON (in the structure given at creation), raw bytes (the optimizer\'s dtype in `layout` order, e.g. `np.frombuffer(body, "<f4")`), ' +
        'or safetensors named as in `layout` (loadable with `safetensors.torch.load_file` into `model.load_state_dict`).',
      headers: { ...ETAG, step: STEP_HEADERS.step, ...VARY },
      content: { 'application/json': { schema: ParamsResponseSchema }, 'application/octet-stream': binaryContent(), 'application/vnd.safetensors': binaryContent() },
    },
    ...authErrors,
    406: problem('`Accept` allows none of the three formats.'),
    409: problem('`min_step` not reached after waiting `wait` seconds; `step` is the current count. Ask again.'),
    422: problem('Invalid `min_step` or `wait` (0..30), or `wait` without `min_step`.'),
  },
});

export const putParamsRoute = createRoute({
  method: 'put',
  path: '/v1/optimizers/{id}/params',
  operationId: 'uploadOptimizerParams',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer, authorizeBeforeParsing] as const,
  summary: 'Upload params, whole or in parts',
  description:
    'Writes new values into some or all params; the optimizer state (moments, step) is kept, as when torch copies into `p.data`. Whole tensors by name ' +
    '(JSON or safetensors, any subset), or a raw run of elements: into tensor `?tensor=<name>` from element `?offset=` (default 0), or into the flat ' +
    'params from `?offset=`. An optimizer created by `shapes` steps only once every element has been uploaded; `upload` in the answer tells what is missing.',
  request: {
    params: OptimizerIdParam,
    query: UploadQuerySchema,
    headers: ConditionalHeadersSchema,
    body: tensorBody(UploadParamsSchema, `JSON (UploadParams), ${RAW} Or ${SAFETENSORS_TREE}`),
  },
  responses: {
    200: { description: 'Written; the new metadata (see `upload`).', headers: ETAG, content: { 'application/json': { schema: OptimizerInfoSchema } } },
    400: problem('Malformed JSON.'),
    ...authErrors,
    406: problem('`Accept` does not allow application/json.'),
    413: problem('Body larger than MAX_BODY_BYTES (JSON), or holding more JSON values than the route can use.'),
    408: problem('A binary body that did not arrive in time (it may take 30 s plus one second per 64 KiB). Nothing is changed.'),
    412: IF_MATCH_FAILED,
    415: problem('Content-Type is not one of the three formats, the body is compressed, or its charset is not UTF-8.'),
    422: problem('Unknown tensor names, shapes or dtypes that do not fit, a run of elements beyond the tensor, non-finite values, or a malformed file. Nothing is changed.'),
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
  description:
    'JSON (the default) or a safetensors checkpoint (`Accept: application/vnd.safetensors`) that torch loads: `params/<name>`, `exp_avg/<name>`, ' +
    '`exp_avg_sq/<name>`, `max_exp_avg_sq/<name>` (amsgrad) and `step/<name>` (a float32 scalar, as torch stores it), with `__metadata__` ' +
    '`step`, `dtype`, `hyperparams`, `param_groups` (with groups), `schedule` and `scheduler_state` (JSON text). A slot torch keeps none of for a tensor ' +
    '(a param group without it) is `null` there in JSON and has no tensor in the checkpoint, as in torch\'s `state_dict`. Either form PUTs back.',
  request: { params: OptimizerIdParam, headers: AuthHeaderSchema },
  responses: {
    200: {
      description: 'Snapshot; PUT it back to restore.',
      headers: { ...ETAG, ...VARY },
      content: { 'application/json': { schema: SnapshotSchema }, 'application/vnd.safetensors': binaryContent() },
    },
    ...authErrors,
    406: problem('`Accept` allows neither application/json nor application/vnd.safetensors, or the tensor names cannot be told apart in safetensors.'),
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
    'Replaces params, moments, step, dtype, hyperparameters, param groups and schedule with the snapshot\'s, in one transaction (shapes may change within ' +
    'the optimizer\'s size limit; a sharded optimizer places another layout or dtype over its shards again, as many when they hold it, else the fewest). Read-only fields of a GET snapshot (`id`, times) are ignored, so GET → PUT round-trips: in safetensors up to the optimizer\'s size limit, in JSON up to what one JSON body may carry ' +
    '(MAX_BODY_BYTES, 32 MiB by default: about 500,000 float32 elements of params and two moments). ' +
    'A safetensors checkpoint is streamed into the optimizer, so it may hold the largest state one optimizer keeps. The history is a log of applied ' +
    'steps and keeps its entries.',
  request: {
    params: OptimizerIdParam,
    headers: ConditionalHeadersSchema,
    body: tensorBody(
      SnapshotInputSchema,
      'JSON (OptimizerSnapshotInput), or a safetensors checkpoint as GET returns it (or as torch\'s state_dicts are saved by the README\'s snippet): ' +
        '`params/…`, `exp_avg/…`, `exp_avg_sq/…` for every parameter, `max_exp_avg_sq/…` (with amsgrad and step > 0), and the step count as ' +
        '`__metadata__.step` or `step/…` tensors; `__metadata__.hyperparams` and `.schedule` (JSON text, `null` for none) are required.',
      false,
    ),
  },
  responses: {
    200: { description: 'Restored; the new metadata.', headers: ETAG, content: { 'application/json': { schema: OptimizerInfoSchema } } },
    400: problem('Malformed JSON.'),
    ...authErrors,
    403: problem('The optimizer was created with an API key, and the snapshot\'s elements would take that key over KEY_MAX_ELEMENTS. Nothing was changed.'),
    406: problem('`Accept` does not allow application/json.'),
    408: problem('A safetensors checkpoint that did not arrive in time (it may take 30 s plus one second per 64 KiB). Nothing was changed.'),
    412: IF_MATCH_FAILED,
    413: problem('Body larger than MAX_BODY_BYTES (JSON), or a state larger than one optimizer holds (a sharded one: than 256 shards hold, or a row larger than one shard).'),
    415: problem('Content-Type is neither application/json nor application/vnd.safetensors, the body is compressed, or its charset is not UTF-8.'),
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
  summary: 'Change hyperparameters, param groups, the schedule or the time-to-live',
  description:
    'Merges the given hyperparameters into the stored ones, replaces the param groups (null removes them) and the schedule (null removes it) and/or ' +
    'sets a new `ttl` (the optimizer then expires `ttl` seconds from now, or from its next call) and/or `accumulate` (409 while contributions to the pending ' +
    'step are held). Unknown fields are rejected; a rejected PATCH changes nothing.',
  request: { params: OptimizerIdParam, headers: ConditionalHeadersSchema, body: jsonBody(PatchOptimizerSchema) },
  responses: {
    200: { description: 'Updated metadata.', headers: ETAG, content: { 'application/json': { schema: OptimizerInfoSchema } } },
    400: problem('Malformed JSON.'),
    ...authErrors,
    409: problem('A change of `accumulate` while contributions to the pending step are held; nothing was changed.'),
    412: IF_MATCH_FAILED,
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
  request: { params: OptimizerIdParam, headers: ConditionalHeadersSchema },
  responses: { 204: { description: 'Deleted; later calls get 404.' }, ...authErrors, 412: IF_MATCH_FAILED },
});

export const rotateTokenRoute = createRoute({
  method: 'post',
  path: '/v1/optimizers/{id}/token',
  operationId: 'rotateOptimizerToken',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer] as const,
  summary: 'Replace the bearer token',
  description:
    'Issues a new token, shown only in this answer, and invalidates the one sent: from now on it is a 401. Nothing else changes (state, ' +
    'ETag, history). Store the new token before discarding the old one\'s answer: should this answer be lost, neither token opens the optimizer.',
  request: { params: OptimizerIdParam, headers: AuthHeaderSchema },
  responses: {
    200: { description: 'The new token.', headers: NO_STORE, content: { 'application/json': { schema: TokenSchema } } },
    ...authErrors,
    406: problem('`Accept` does not allow application/json (checked first: the token is unchanged).'),
    413: problem('A body larger than MAX_BODY_BYTES (none is expected).'),
    415: problem('A compressed body or an unsupported Content-Type (none is expected; the token is unchanged).'),
  },
});

export const historyRoute = createRoute({
  method: 'get',
  path: '/v1/optimizers/{id}/history',
  operationId: 'getOptimizerHistory',
  tags: TAGS,
  security: SECURITY,
  middleware: [requireBearer] as const,
  summary: 'Loss and learning rate per step',
  description:
    'One entry per step, applied or (with `nonfinite: "skip"`) skipped (`skipped: true`, the step count unchanged); with `clip_grad_norm`, ' +
    'each carries `grad_norm`. The last 10,000 entries are kept, skipped ones included; a restore (PUT /state) keeps them.',
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
  description:
    'Loss (left axis, when losses were reported) and learning rate (right axis) over the most recent `limit` history entries. Skipped steps ' +
    '(`nonfinite: "skip"`) are not drawn; the title counts them.',
  request: { params: OptimizerIdParam, query: HistoryPlotQuerySchema, headers: AuthHeaderSchema },
  responses: {
    200: { description: 'SVG line chart.', content: { 'image/svg+xml': { schema: z.string() } } },
    ...authErrors,
    409: problem('No step has been applied yet (among the most recent `limit` entries).'),
    422: problem('Invalid `limit` or `log_scale`, or a log scale with a loss <= 0.'),
  },
});
