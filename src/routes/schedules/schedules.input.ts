// Request plumbing of the schedule routes: query strings → the JSON body the POST routes take,
// error paths mapped back to the query parameters, step lists expanded, specs summarised.

import { z } from '@hono/zod-openapi';
import { fieldError, validationProblem, type FieldError } from '../../lib/problem.ts';
import type { FieldPath } from '../../tensors/tree.ts';
import { zodValidationProblem } from '../../lib/validation.ts';
import { DEFAULT_STEP_COUNT, EvaluateRequestSchema, PlotRequestSchema, rangeLength, type EvaluateRequest, type PlotRequest } from '../../schemas/schedule.ts';
import type { ScheduleSpec, ScheduleType } from '../../schedules/index.ts';

/** Query parameters that are not schedule parameters. */
const RESERVED = new Set(['steps', 'metrics', 'schedule']);
const PLOT_PARAMS = new Set(['log_scale', 'width', 'height', 'title']);
/** Schedule parameters that are lists (comma-separated in a query string). */
const LIST_PARAMS = new Set(['milestones']);
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(Infinity|NaN)$/;

/** An error about a query parameter, named as sent (`total_steps`, `milestones[1]`); no JSON Pointer, as for other query errors. */
function queryError(path: FieldPath, message: string, value?: unknown): FieldError {
  const { pointer: _pointer, ...rest } = fieldError(path, message, value);
  return rest;
}

/** A query value as JSON would carry it: numbers and booleans parsed, anything else kept as text. */
function coerce(text: string): unknown {
  const t = text.trim();
  if (NUMBER.test(t)) return Number(t);
  if (t === 'true' || t === 'false') return t === 'true';
  return text;
}

/** Query booleans: true/false, or 1/0 as curl users write them. */
function flag(text: string): unknown {
  const t = text.trim();
  return t === '1' ? true : t === '0' ? false : coerce(text);
}

/** Boolean schedule parameters (the only ones where 1/0 mean true/false). */
const BOOLEAN_PARAMS = new Set(['three_phase']);

function list(text: string): unknown[] {
  return text.trim() === '' ? [] : text.split(',').map(coerce);
}

const STEPS_RANGE = /^\s*(\d*)\s*:\s*(\d+)\s*(?::\s*(\d+)\s*)?$/;

/** `start:stop[:every]` (start may be empty) or a comma-separated list of steps. */
function parseStepsQuery(text: string): EvaluateRequest['steps'] | unknown[] {
  const range = STEPS_RANGE.exec(text);
  if (range) {
    return { start: range[1] ? Number(range[1]) : 0, stop: Number(range[2]), every: range[3] ? Number(range[3]) : 1 };
  }
  if (text.includes(':')) {
    throw validationProblem([queryError(['steps'], 'must be start:stop[:every] (stop exclusive) or a comma-separated list of steps', text)]);
  }
  return list(text);
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
 * Parses a GET request's path type and query (every value of every key, as Hono's `queries()`)
 * into the body the POST route takes, validated by the same schema, so both routes agree.
 * Schedule parameters are individual query parameters (`lr=0.1&total_steps=100`, lists
 * comma-separated: `milestones=30,80`), or the whole spec as JSON in `schedule=` (the only way for
 * sequential). Errors name the query parameter as sent (`total_steps`, `milestones[1]`,
 * `schedule.milestones` inside the JSON), without a JSON Pointer, like the other query errors.
 *
 * @throws {ProblemError} 422 naming the offending query parameter.
 */
export function parseScheduleQuery(type: ScheduleType, queries: Record<string, string[]>, plot: true): PlotRequest;
export function parseScheduleQuery(type: ScheduleType, queries: Record<string, string[]>, plot: false): EvaluateRequest;
export function parseScheduleQuery(type: ScheduleType, queries: Record<string, string[]>, plot: boolean): EvaluateRequest | PlotRequest {
  const errors: FieldError[] = [];
  // Lists may repeat their key (joined with commas); anything else must come once.
  const one = (key: string): string | undefined => {
    const values = queries[key];
    if (values === undefined) return undefined;
    const isList = LIST_PARAMS.has(key) || key === 'metrics' || key === 'steps';
    if (values.length > 1 && !isList) errors.push(queryError([key], `is given ${values.length} times; give it once`));
    return isList ? values.join(',') : values[0];
  };

  const body: Record<string, unknown> = {};
  const params: Record<string, unknown> = {};
  for (const key of Object.keys(queries)) {
    if (RESERVED.has(key)) continue;
    const text = one(key) as string;
    if (key === 'type') {
      errors.push(queryError(['type'], 'is given by the path (/v1/schedules/{type}), not the query', text));
      continue;
    }
    if (PLOT_PARAMS.has(key) && plot) body[key] = key === 'title' ? text : key === 'log_scale' ? flag(text) : coerce(text);
    else if (BOOLEAN_PARAMS.has(key)) params[key] = flag(text);
    else params[key] = LIST_PARAMS.has(key) ? list(text) : coerce(text);
  }

  const json = queries.schedule !== undefined;
  if (json) {
    const text = one('schedule') as string;
    let spec: unknown;
    try {
      spec = JSON.parse(text);
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

  const steps = one('steps');
  if (steps !== undefined) body.steps = parseStepsQuery(steps);
  const metrics = one('metrics');
  if (metrics !== undefined) body.metrics = list(metrics);
  if (errors.length > 0) throw validationProblem(errors);

  const result = (plot ? PlotRequestSchema : EvaluateRequestSchema).safeParse(body);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => ({ ...issue, path: queryPath(issue.path, json) }));
  const echo = { ...params, ...body, steps };
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
