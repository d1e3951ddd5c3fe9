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
  forbidden: 'Forbidden',
  'quota-exceeded': 'Quota exceeded',
  'rate-limited': 'Too many requests',
  conflict: 'Conflict',
  'precondition-failed': 'Precondition failed',
  'request-timeout': 'Request timeout',
  'internal-error': 'Internal error',
  'not-implemented': 'Not implemented',
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

/**
 * Most field errors one problem lists; the rest are only counted (`errors_omitted`). A body with a
 * million bad fields must not get a million-entry answer (it once produced 77 MB in 7.5 s).
 */
export const MAX_LISTED_ERRORS = 20;
/** Longest `field` or `pointer` shown (a key can be megabytes long); longer ones are elided in the middle. */
export const MAX_FIELD_CHARS = 300;
/** Longest `message` and `detail` shown. */
export const MAX_MESSAGE_CHARS = 300;
export const MAX_DETAIL_CHARS = 1000;

/** `text` cut to at most `max` characters, keeping both ends (the end of a path is its most specific part). */
export function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  const head = Math.ceil((max - 1) / 2);
  return `${text.slice(0, head)}…${text.slice(text.length - (max - 1 - head))}`;
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

  /** The body, with at most MAX_LISTED_ERRORS errors (the rest counted in `errors_omitted`). */
  toBody(instance?: string): ProblemBody {
    const listed = this.errors?.slice(0, MAX_LISTED_ERRORS);
    const omitted = ((this.extensions?.errors_omitted as number | undefined) ?? 0) + (this.errors?.length ?? 0) - (listed?.length ?? 0);
    return {
      type: PROBLEM_TYPE_BASE + this.problemType,
      title: PROBLEM_TITLES[this.problemType],
      status: this.status,
      detail: clip(this.detail, MAX_DETAIL_CHARS),
      ...(instance === undefined ? {} : { instance: clip(instance, MAX_FIELD_CHARS) }),
      ...(listed ? { errors: listed } : {}),
      ...this.extensions,
      ...(omitted > 0 ? { errors_omitted: omitted } : {}),
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

/** A field error; a path or message too long to echo is elided, and an elided pointer is left out (it would point nowhere). */
export function fieldError(path: FieldPath, message: string, value?: unknown): FieldError {
  const pointer = jsonPointer(path);
  const e: FieldError = {
    field: clip(formatPath(path), MAX_FIELD_CHARS),
    ...(pointer.length <= MAX_FIELD_CHARS ? { pointer } : {}),
    message: clip(message, MAX_MESSAGE_CHARS),
  };
  if (echoable(value)) e.value = typeof value === 'number' && !Number.isFinite(value) ? String(value) : value;
  return e;
}

/** An error about a request header, named as sent (e.g. `Idempotency-Key`). */
export function headerError(name: string, message: string, value?: unknown): FieldError {
  const e: FieldError = { field: clip(name, MAX_FIELD_CHARS), message: clip(message, MAX_MESSAGE_CHARS) };
  if (echoable(value)) e.value = value;
  return e;
}

/**
 * A 422 naming each bad field; `detail` summarises the first few. `total` is how many errors were
 * found when `errors` holds only the first ones (the body lists at most MAX_LISTED_ERRORS anyway).
 */
export function validationProblem(errors: FieldError[], total = errors.length): ProblemError {
  const shown = errors.slice(0, 3).map((e) => `${e.field}: ${e.message}`);
  const more = total > shown.length ? ` (and ${total - shown.length} more)` : '';
  const omitted = total - errors.length;
  return new ProblemError(422, 'validation-error', shown.join('; ') + more, errors, omitted > 0 ? { errors_omitted: omitted } : undefined);
}

/** Renders a problem as an `application/problem+json` Response. */
export function problemResponse(problem: ProblemError, instance?: string): Response {
  return new Response(JSON.stringify(problem.toBody(instance)), {
    status: problem.status,
    headers: { 'content-type': 'application/problem+json', ...problem.headers },
  });
}
