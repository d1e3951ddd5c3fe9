// Route definitions of the learning-rate schedule endpoints (schemas only; handlers live beside them).

import { createRoute, z } from '@hono/zod-openapi';
import { serviceRoute } from '../../lib/access.ts';
import { problem } from '../../schemas/common.ts';
import { queryText, strictQuery } from '../../schemas/query.ts';
import { EvaluateRequestSchema, EvaluateResponseSchema, MAX_EVALUATION_POINTS, PlotRequestSchema } from '../../schemas/schedule.ts';
import { SCHEDULE_PARAM_KINDS, type QueryKind } from './schedules.input.ts';
import { SCHEDULE_TYPES } from '../../schedules/index.ts';

/** A fresh array per route: a shared one would become a YAML anchor/alias in openapi.yaml. */
const tags = () => ['Schedules'];

/** How each kind of schedule parameter is written in a query string (the shared rule of src/schemas/query.ts). */
const KIND_TEXT: Record<QueryKind, string> = {
  integer: 'An integer in decimal digits.',
  number: 'A number as JSON writes it (e.g. `0.001` or `1e-3`).',
  boolean: '`true`/`1` or `false`/`0`.',
  text: 'A name, as in JSON.',
  integers: 'Comma-separated integers in decimal digits, e.g. `30,80`.',
  numbers: 'Comma-separated numbers, e.g. `0.9,0.8`.',
};

/** Every schedule parameter name → the types that take it and its kind, for the GET routes' documentation. */
const PARAMS = new Map<string, { types: string[]; kind: QueryKind }>();
for (const [type, kinds] of SCHEDULE_PARAM_KINDS) {
  for (const [name, kind] of kinds) {
    const seen = PARAMS.get(name);
    if (seen && seen.kind !== kind) throw new Error(`schedule parameter ${name} is ${seen.kind} in ${seen.types[0]} but ${kind} in ${type}`);
    PARAMS.set(name, { types: [...(seen?.types ?? []), type], kind });
  }
}

const scheduleParams = Object.fromEntries(
  [...PARAMS].map(([name, { types, kind }]) => [
    name,
    queryText({ description: `Schedule parameter \`${name}\` of ${types.join(', ')} (see the schedule schemas for meaning, bounds and defaults). ${KIND_TEXT[kind]}` }),
  ]),
);

const baseQuery = {
  steps: queryText({
    description:
      '`start:stop[:every]` (stop exclusive, like Python\'s range; start defaults to 0, every to 1) or a comma-separated list of steps, in decimal digits. ' +
      `Default 0..99 (0..len(metrics) for reduce_on_plateau); at most ${MAX_EVALUATION_POINTS} points.`,
    example: '0:1000:10',
  }),
  metrics: queryText({ description: 'reduce_on_plateau only (required there): comma-separated metric reports, e.g. `0.9,0.8,0.8`.' }),
  schedule: queryText({
    description:
      'The whole schedule spec as URL-encoded JSON, instead of separate parameters (its `type` may be omitted; it must match the path). ' +
      'Required for `sequential`, whose nested schedules cannot be flat parameters.',
  }),
  ...scheduleParams,
};

export const ScheduleTypeParam = z.object({
  type: z
    .enum(SCHEDULE_TYPES)
    .openapi({ param: { name: 'type', in: 'path' }, description: 'The schedule type.', example: 'cosine' }),
});

const plotQuery = {
  log_scale: queryText({ description: 'Logarithmic y axis: `true`/`1` or `false`/`0` (default false).' }),
  width: queryText({ description: 'Image width in pixels, 200 to 4000 (default 800), in decimal digits.' }),
  height: queryText({ description: 'Image height in pixels, 150 to 3000 (default 450), in decimal digits.' }),
  title: queryText({ description: 'Chart title (default: the schedule and its parameters).' }),
};

const svg = {
  description: `An SVG line chart of lr over the steps: one \`<polyline class="series" data-points="n">\` with one point per evaluated step, axes with ticks, axis labels and a title. No external resources.`,
  content: { 'image/svg+xml': { schema: z.string().openapi({ description: 'SVG document.' }) } },
};

const json = (description: string) => ({ description, content: { 'application/json': { schema: EvaluateResponseSchema } } });

export const evaluateRoute = createRoute(serviceRoute({
  method: 'post',
  path: '/v1/schedules/evaluate',
  operationId: 'evaluateSchedule',
  tags: tags(),
  summary: 'Evaluate a learning-rate schedule at many steps',
  description:
    'Returns `lr(k)` for each requested step k: the rate torch would use for the optimizer step taken after k completed steps. ' +
    'For reduce_on_plateau, send `metrics`: lr[k] is the rate after the first k reports.',
  request: { body: { content: { 'application/json': { schema: EvaluateRequestSchema } }, required: true } },
  responses: {
    200: json('The steps and the rate at each.'),
    400: problem('Malformed JSON.'),
    413: problem('Body larger than MAX_BODY_BYTES, or holding more JSON values than the route can use.'),
    415: problem('Content-Type is not application/json, the body is compressed (Content-Encoding), or its charset is not UTF-8.'),
    422: problem('Invalid schedule or steps (named in `errors`), or a rate that overflows.'),
  },
}));

export const plotRoute = createRoute(serviceRoute({
  method: 'post',
  path: '/v1/schedules/plot',
  operationId: 'plotSchedule',
  tags: tags(),
  summary: 'Plot a learning-rate schedule as SVG',
  description: 'Evaluates the schedule as `POST /v1/schedules/evaluate` does and draws lr over the steps.',
  request: { body: { content: { 'application/json': { schema: PlotRequestSchema } }, required: true } },
  responses: {
    200: svg,
    400: problem('Malformed JSON.'),
    413: problem('Body larger than MAX_BODY_BYTES, or holding more JSON values than the route can use.'),
    415: problem('Content-Type is not application/json, the body is compressed (Content-Encoding), or its charset is not UTF-8.'),
    422: problem('Invalid schedule, steps or plot option (named in `errors`), e.g. log_scale with a rate <= 0.'),
  },
}));

export const evaluateQueryRoute = createRoute(serviceRoute({
  method: 'get',
  path: '/v1/schedules/{type}',
  operationId: 'evaluateScheduleQuery',
  tags: tags(),
  summary: 'Evaluate a learning-rate schedule given as query parameters (for curl)',
  description:
    'The same as `POST /v1/schedules/evaluate`, with the schedule parameters in the query string, e.g. ' +
    '`/v1/schedules/cosine?lr=0.1&total_steps=100&steps=0:200:10` or `/v1/schedules/multistep?lr=0.1&milestones=30,80`.',
  request: { params: ScheduleTypeParam, query: strictQuery(baseQuery) },
  responses: {
    200: json('The steps and the rate at each.'),
    422: problem('Unknown `type`, an unknown or repeated query parameter, or an invalid one (each named as sent in `errors`, e.g. `total_steps` or `milestones[1]`).'),
  },
}));

export const plotQueryRoute = createRoute(serviceRoute({
  method: 'get',
  path: '/v1/schedules/{type}/plot',
  operationId: 'plotScheduleQuery',
  tags: tags(),
  summary: 'Plot a learning-rate schedule given as query parameters, as SVG',
  description: 'The same as `POST /v1/schedules/plot`, with parameters as in `GET /v1/schedules/{type}`, e.g. `/v1/schedules/one_cycle/plot?max_lr=0.1&total_steps=1000&steps=0:1000&log_scale=true`.',
  request: { params: ScheduleTypeParam, query: strictQuery({ ...baseQuery, ...plotQuery }) },
  responses: {
    200: svg,
    422: problem('Unknown `type`, an unknown or repeated query parameter, or an invalid one (each named as sent in `errors`, e.g. `total_steps` or `milestones[1]`).'),
  },
}));
