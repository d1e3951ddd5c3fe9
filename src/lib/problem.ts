// RFC 9457 problem details: the one error format of the API. Every rejection is thrown (or built)
// as a ProblemError and rendered by `problemResponse`, so bodies are uniform across routes.

import type { FieldPath } from '../tensors/tree.ts';

/** One invalid field: where it is, what is wrong, and the value received when it is small. */
export interface FieldError {
  /** Dotted path, e.g. `hyperparams.lr` or `grads["layer1.bias"][2]`. */
  field: string;
  /** JSON Pointer (RFC 6901) to the same place in the request body (absent for headers). */
  pointer?: string;
  message: string;
  value?: unknown;
}

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  errors?: FieldError[];
  [extension: string]: unknown;
}

/** Problem types: a stable slug for each kind of failure. */
export const PROBLEM_TITLES = {
  'malformed-json': 'Malformed JSON',
  'validation-error': 'Invalid request',
  'payload-too-large': 'Request too large',
  'unsupported-media-type': 'Unsupported media type',
  'not-acceptable': 'Not acceptable',
  'not-found': 'Not found',
  'method-not-allowed': 'Method not allowed',
  'non-finite-result': 'Result is not finite',
  unauthorized: 'Unauthorized',
  conflict: 'Conflict',
  'precondition-failed': 'Precondition failed',
  'internal-error': 'Internal error',
} as const;

export type ProblemType = keyof typeof PROBLEM_TITLES;

export const PROBLEM_TYPE_BASE = 'urn:adam-api:problem:';

/** A problem as plain data, for crossing an RPC boundary (class instances do not survive it). */
export interface ProblemData {
  status: number;
  type: ProblemType;
  detail: string;
  errors?: FieldError[] | undefined;
  extensions?: Record<string, unknown> | undefined;
  headers?: Record<string, string> | undefined;
}

export class ProblemError extends Error {
  readonly status: number;
  readonly problemType: ProblemType;
  readonly detail: string;
  readonly errors: FieldError[] | undefined;
  readonly extensions: Record<string, unknown> | undefined;
  readonly headers: Record<string, string> | undefined;
  constructor(
    status: number,
    problemType: ProblemType,
    detail: string,
    errors?: FieldError[],
    extensions?: Record<string, unknown>,
    headers?: Record<string, string>,
  ) {
    super(detail);
    this.name = 'ProblemError';
    this.status = status;
    this.problemType = problemType;
    this.detail = detail;
    this.errors = errors;
    this.extensions = extensions;
    this.headers = headers;
  }

  /** The problem as plain data (see ProblemData). */
  toData(): ProblemData {
    return { status: this.status, type: this.problemType, detail: this.detail, errors: this.errors, extensions: this.extensions, headers: this.headers };
  }

  static fromData(d: ProblemData): ProblemError {
    return new ProblemError(d.status, d.type, d.detail, d.errors, d.extensions, d.headers);
  }

  toBody(instance?: string): ProblemBody {
    return {
      type: PROBLEM_TYPE_BASE + this.problemType,
      title: PROBLEM_TITLES[this.problemType],
      status: this.status,
      detail: this.detail,
      ...(instance === undefined ? {} : { instance }),
      ...(this.errors ? { errors: this.errors } : {}),
      ...this.extensions,
    };
  }
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** `["grads", "layer1.bias", 2]` → `grads["layer1.bias"][2]`; plain names join with dots. */
export function formatPath(path: FieldPath): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else if (IDENTIFIER.test(part)) out += out === '' ? part : `.${part}`;
    else out += `[${JSON.stringify(part)}]`;
  }
  return out === '' ? '(body)' : out;
}

/** RFC 6901 JSON Pointer for a path. */
export function jsonPointer(path: FieldPath): string {
  return path.map((p) => '/' + String(p).replaceAll('~', '~0').replaceAll('/', '~1')).join('');
}

/** Values small enough to echo back in an error. */
function echoable(value: unknown): boolean {
  if (value === undefined) return false;
  if (value === null || typeof value === 'number' || typeof value === 'boolean') return true;
  if (typeof value === 'string') return value.length <= 200;
  return false;
}

export function fieldError(path: FieldPath, message: string, value?: unknown): FieldError {
  const e: FieldError = { field: formatPath(path), pointer: jsonPointer(path), message };
  if (echoable(value)) e.value = typeof value === 'number' && !Number.isFinite(value) ? String(value) : value;
  return e;
}

/** An error about a request header, named as sent (e.g. `Idempotency-Key`). */
export function headerError(name: string, message: string, value?: unknown): FieldError {
  const e: FieldError = { field: name, message };
  if (echoable(value)) e.value = value;
  return e;
}

/** A 422 naming each bad field; `detail` summarises the first few. */
export function validationProblem(errors: FieldError[]): ProblemError {
  const shown = errors.slice(0, 3).map((e) => `${e.field}: ${e.message}`);
  const more = errors.length > 3 ? ` (and ${errors.length - 3} more)` : '';
  return new ProblemError(422, 'validation-error', shown.join('; ') + more, errors);
}

/** Renders a problem as an `application/problem+json` Response. */
export function problemResponse(problem: ProblemError, instance?: string): Response {
  return new Response(JSON.stringify(problem.toBody(instance)), {
    status: problem.status,
    headers: { 'content-type': 'application/problem+json', ...problem.headers },
  });
}
