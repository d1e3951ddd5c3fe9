// Request plumbing of the schedule routes: query strings → the JSON body the POST routes take,
// error paths mapped back to the query parameters, step lists expanded, specs summarised.

import { z } from '@hono/zod-openapi';
import { formatPath, headerError, validationProblem, type FieldError } from '../../lib/problem.ts';
import { describeValue, type FieldPath } from '../../tensors/tree.ts';
import { BOOLEAN_RULE, INTEGER_RULE, NUMBER_RULE, parseQueryBoolean, parseQueryInteger, parseQueryNumber } from '../../schemas/query.ts';
import { zodValidationProblem } from '../../lib/validation.ts';
import { DEFAULT_STEP_COUNT, EvaluateRequestSchema, FLAT_SCHEDULE_VARIANTS, PlotRequestSchema, rangeLength, type EvaluateRequest, type PlotRequest } from '../../schemas/schedule.ts';
import type { ScheduleSpec, ScheduleType } from '../../schedules/index.ts';

/** How a query value is read: one value of a JSON type, a comma-separated list of them, or text kept as sent. */
export type QueryKind = 'integer' | 'number' | 'boolean' | 'text' | 'integers' | 'numbers';

/** The kind of a schedule field, from its zod schema (defaults and optionals unwrapped). */
function kindOf(schema: z.ZodType): QueryKind {
  let s = schema as z.ZodType & { unwrap?: () => z.ZodType };
  while (s._zod.def.type === 'default' || s._zod.def.type === 'optional') s = s.unwrap!() as typeof s;
  const def = s._zod.def.type;
  if (def === 'number') return (s as unknown as z.ZodNumber).isInt ? 'integer' : 'number';
  if (def === 'boolean') return 'boolean';
  if (def === 'array') return ((s as unknown as z.ZodArray<z.ZodNumber>).element.isInt ? 'integers' : 'numbers');
  return 'text'; // enums: zod names the allowed values
}

/** Schedule type → its parameters (every field but `type`) and their kinds. */
export const SCHEDULE_PARAM_KINDS = new Map<string, Map<string, QueryKind>>(
  FLAT_SCHEDULE_VARIANTS.map((variant) => [
    (variant.shape.type as z.ZodLiteral<string>).value,
    new Map(Object.entries(variant.shape as Record<string, z.ZodType>).filter(([key]) => key !== 'type').map(([key, field]) => [key, kindOf(field)])),
  ]),
);

const PLOT_PARAM_KINDS = new Map<string, QueryKind>([['log_scale', 'boolean'], ['width', 'integer'], ['height', 'integer'], ['title', 'text']]);

const RULES: Record<'integer' | 'number' | 'boolean', string> = { integer: INTEGER_RULE, number: NUMBER_RULE, boolean: BOOLEAN_RULE };

/** An error about a query parameter, named as sent (`total_steps`, `milestones[1]`), without a JSON Pointer. */
function queryError(path: FieldPath, message: string, value?: unknown): FieldError {
  return headerError(path.length === 1 ? String(path[0]) : formatPath(path), message, value);
}

/** One value read by the shared query rule (src/schemas/query.ts); undefined, with an error pushed, when it breaks it. */
function scalar(kind: 'integer' | 'number' | 'boolean', text: string, path: FieldPath, errors: FieldError[]): number | boolean | undefined {
  const value = kind === 'integer' ? parseQueryInteger(text) : kind === 'number' ? parseQueryNumber(text) : parseQueryBoolean(text);
  if (value === undefined) errors.push(queryError(path, `${RULES[kind]}, got ${describeValue(text)}`, text));
  return value;
}

/** A query value as the JSON body would carry it. */
function read(kind: QueryKind, key: string, text: string, errors: FieldError[]): unknown {
  if (kind === 'text') return text;
  if (kind === 'integers' || kind === 'numbers') {
    if (text === '') return [];
    const item = kind === 'integers' ? 'integer' : 'number';
    return text.split(',').map((t, i) => scalar(item, t, [key, i], errors));
  }
  return scalar(kind, text, [key], errors);
}

const STEPS_RANGE = /^([0-9]*):([0-9]+)(?::([0-9]+))?$/;

/** `start:stop[:every]` (start may be empty) or a comma-separated list of steps, in decimal digits. */
function parseStepsQuery(text: string, errors: FieldError[]): EvaluateRequest['steps'] | unknown[] | undefined {
  const range = STEPS_RANGE.exec(text);
  if (range) {
    const [start, stop, every] = [range[1] || '0', range[2]!, range[3] ?? '1'].map((t) => scalar('integer', t, ['steps'], errors)) as number[];
    return { start: start!, stop: stop!, every: every! };
  }
  if (text.includes(':')) {
    errors.push(queryError(['steps'], 'must be start:stop[:every] (stop exclusive, decimal digits) or a comma-separated list of steps', text));
    return undefined;
  }
  return read('integers', 'steps', text, errors) as unknown[];
}

/** A body-relative issue path → the query parameter the value came from. */
function queryPath(path: PropertyKey[], json: boolean): Array<string | number> {
  const p = path.map((k) => (typeof k === 'symbol' ? String(k) : k));
  const [head, ...rest] = p;
  // Flat parameters are the spec's own fields (an unknown one is reported under its own name).
  if (head === 'schedule') return json ? p : rest;
  if (head === 'steps') return ['steps'];
  return p;
}

/**
 * Parses a GET request's path type and query (validated by the route's `strictQuery`: known names,
 * each once) into the body the POST route takes, validated by the same schema, so both routes
 * agree. Schedule parameters are individual query parameters read by the shared query rule
 * (`lr=0.1&total_steps=100`, lists comma-separated: `milestones=30,80`), or the whole spec as JSON
 * in `schedule=` (the only way for sequential). Errors name the query parameter as sent
 * (`total_steps`, `milestones[1]`, `schedule.milestones` inside the JSON), without a JSON Pointer.
 *
 * @throws {ProblemError} 422 naming the offending query parameter.
 */
export function parseScheduleQuery(type: ScheduleType, query: Record<string, string | undefined>, plot: true): PlotRequest;
export function parseScheduleQuery(type: ScheduleType, query: Record<string, string | undefined>, plot: false): EvaluateRequest;
export function parseScheduleQuery(type: ScheduleType, query: Record<string, string | undefined>, plot: boolean): EvaluateRequest | PlotRequest {
  const errors: FieldError[] = [];
  const kinds = SCHEDULE_PARAM_KINDS.get(type);
  const body: Record<string, unknown> = {};
  const params: Record<string, unknown> = {};
  for (const [key, text] of Object.entries(query)) {
    if (text === undefined || key === 'steps' || key === 'metrics' || key === 'schedule') continue;
    const plotKind = plot ? PLOT_PARAM_KINDS.get(key) : undefined;
    if (plotKind) body[key] = read(plotKind, key, text, errors);
    // A parameter of another type goes to the schema as sent, which names it an unknown field.
    else params[key] = read(kinds?.get(key) ?? 'text', key, text, errors);
  }

  const json = query.schedule !== undefined;
  if (json) {
    let spec: unknown;
    try {
      spec = JSON.parse(query.schedule!);
    } catch {
      errors.push(queryError(['schedule'], 'must be a schedule spec as JSON (URL-encoded)'));
    }
    if (spec !== null && typeof spec === 'object' && !Array.isArray(spec)) {
      const given = (spec as { type?: unknown }).type;
      if (given === undefined) spec = { type, ...spec };
      else if (given !== type) errors.push(queryError(['schedule', 'type'], `must match the path type "${type}"`, given));
    }
    const extra = Object.keys(params);
    if (extra.length > 0) {
      errors.push(queryError([extra[0] as string], 'give the schedule either as JSON in `schedule` or as separate parameters, not both'));
    }
    body.schedule = spec;
  } else if (type === 'sequential') {
    errors.push(
      queryError(
        ['schedule'],
        'sequential nests schedules: pass the whole spec as URL-encoded JSON in `schedule` (e.g. schedule={"schedules":[…],"milestones":[10]}), or use POST /v1/schedules/evaluate',
      ),
    );
  } else {
    body.schedule = { type, ...params };
  }

  if (query.steps !== undefined) body.steps = parseStepsQuery(query.steps, errors);
  if (query.metrics !== undefined) body.metrics = read('numbers', 'metrics', query.metrics, errors);
  if (errors.length > 0) throw validationProblem(errors);

  const result = (plot ? PlotRequestSchema : EvaluateRequestSchema).safeParse(body);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => ({ ...issue, path: queryPath(issue.path, json) }));
  const echo = { ...params, ...body, steps: query.steps };
  throw zodValidationProblem(new z.ZodError(issues), echo, { asSent: true });
}

/** The step indices of a request: the list itself, the range expanded, or 0..count−1. */
export function expandSteps(steps: EvaluateRequest['steps'], defaultCount: number): number[] {
  if (steps === undefined) return Array.from({ length: defaultCount }, (_, k) => k);
  if (Array.isArray(steps)) return steps;
  const n = rangeLength(steps);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[i] = steps.start + i * steps.every;
  return out;
}

/** Steps evaluated when the request names none: 0..99, or 0..len(metrics) for reduce_on_plateau. */
export function defaultStepCount(spec: ScheduleSpec, metrics: readonly number[] | undefined): number {
  return spec.type === 'reduce_on_plateau' ? (metrics?.length ?? 0) + 1 : DEFAULT_STEP_COUNT;
}

/** A short one-line description of a spec, for chart titles: `cosine (lr=0.1, total_steps=100, min_lr=0)`. */
export function describeSpec(spec: ScheduleSpec): string {
  if (spec.type === 'sequential') {
    return `sequential (${spec.schedules.map((s) => s.type).join(' → ')}; milestones ${spec.milestones.join(', ')})`;
  }
  const params = Object.entries(spec)
    .filter(([k, v]) => k !== 'type' && v !== undefined)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? `[${v.join(',')}]` : String(v)}`);
  const text = `${spec.type} (${params.join(', ')})`;
  return text.length > 160 ? `${text.slice(0, 157)}…` : text;
}
