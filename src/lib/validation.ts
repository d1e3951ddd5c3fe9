// Turns zod issues into field errors that name the field, the rule and the value received.

import type { z } from '@hono/zod-openapi';
import { describeValue, type FieldPath } from '../tensors/tree.ts';
import { fieldError, formatPath, headerError, MAX_LISTED_ERRORS, validationProblem, type FieldError, type ProblemError } from './problem.ts';

/** The value at `path` inside `root`, or undefined. */
export function valueAt(root: unknown, path: FieldPath): unknown {
  let v = root;
  for (const key of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[key];
  }
  return v;
}

function got(value: unknown): string {
  return value === undefined ? 'nothing' : describeValue(value);
}

const TYPE_NAMES: Record<string, string> = {
  number: 'a finite number',
  int: 'an integer',
  boolean: 'true or false',
  string: 'a string',
  object: 'an object',
  array: 'an array',
};

function issueMessage(issue: z.core.$ZodIssue, value: unknown): string {
  switch (issue.code) {
    case 'invalid_type': {
      if (value === undefined) return 'is required';
      const want = TYPE_NAMES[issue.expected] ?? issue.expected;
      return `must be ${want}, got ${got(value)}`;
    }
    case 'too_small': {
      const op = issue.inclusive ? '>=' : '>';
      if (issue.origin === 'array') return `must have at least ${issue.minimum} items, got ${got(value)}`;
      if (issue.origin === 'string') return `must have at least ${issue.minimum} characters, got ${got(value)}`;
      return `must be ${op} ${issue.minimum}, got ${got(value)}`;
    }
    case 'too_big': {
      const op = issue.inclusive ? '<=' : '<';
      if (issue.origin === 'array') return `must have at most ${issue.maximum} items, got ${got(value)}`;
      if (issue.origin === 'string') return `must have at most ${issue.maximum} characters`;
      return `must be ${op} ${issue.maximum}, got ${got(value)}`;
    }
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${got(value)}`;
    case 'not_multiple_of':
      return `must be a multiple of ${issue.divisor}, got ${got(value)}`;
    case 'invalid_union':
      return issue.message && !issue.message.startsWith('Invalid input') ? issue.message : `is not valid: got ${got(value)}`;
    default:
      return issue.message;
  }
}

export interface CollectOptions {
  /** Message for an unknown key (query parameters say so). */
  unknownKey?: string;
  /** Most errors built; the rest are only counted. */
  limit?: number;
  /**
   * Name fields as sent, without a JSON Pointer (query parameters, path parameters, headers): a
   * one-key path is the key itself (`limit`, `idempotency-key`), a longer one is formatted
   * (`milestones[1]`).
   */
  asSent?: boolean;
  /** Where the validated value is in the request: prepended to every path (e.g. `['__metadata__', 'param_groups']`). */
  prefix?: FieldPath;
}

/**
 * Field errors for the zod issues, unknown keys one error per key: the first `limit` are built
 * and every one is counted, so a body with a million unknown keys costs a count, not a million
 * error objects.
 */
export function collectFieldErrors(error: z.ZodError, input: unknown, options: CollectOptions = {}): { errors: FieldError[]; total: number } {
  const limit = options.limit ?? MAX_LISTED_ERRORS;
  const out: FieldError[] = [];
  let total = 0;
  const prefix = options.prefix ?? [];
  const add = (at: Array<string | number>, message: () => string, value: unknown) => {
    total++;
    if (out.length >= limit) return;
    const path = [...prefix, ...at];
    if (!options.asSent) out.push(fieldError(path, message(), value));
    else out.push(headerError(path.length === 1 ? String(path[0]) : formatPath(path), message(), value));
  };
  for (const issue of error.issues) {
    const path = issue.path as Array<string | number>;
    if (issue.code === 'unrecognized_keys') {
      if (out.length >= limit) {
        total += issue.keys.length;
        continue;
      }
      for (const key of issue.keys) add([...path, key], () => options.unknownKey ?? 'unknown field', valueAt(input, [...path, key]));
      continue;
    }
    if (out.length >= limit) {
      total++;
      continue;
    }
    if (issue.code === 'invalid_union' && issue.errors.length > 0 && 'discriminator' in issue === false) {
      // Report the branch that got furthest rather than a bare "invalid input".
      const deepest = issue.errors.reduce((a, b) => (depth(b) > depth(a) ? b : a));
      if (depth(deepest) > 0) {
        for (const sub of deepest) {
          const subPath = [...path, ...(sub.path as Array<string | number>)];
          const value = valueAt(input, subPath);
          add(subPath, () => issueMessage(sub, value), value);
        }
        continue;
      }
    }
    const value = valueAt(input, path);
    add(path, () => issueMessage(issue, value), value);
  }
  return { errors: out, total };
}

/** The first field errors of the zod issues (at most MAX_LISTED_ERRORS). */
export function zodFieldErrors(error: z.ZodError, input: unknown, prefix?: FieldPath): FieldError[] {
  return collectFieldErrors(error, input, prefix ? { prefix } : {}).errors;
}

/** A 422 for the zod issues: the first errors listed, all of them counted. */
export function zodValidationProblem(error: z.ZodError, input: unknown, options: CollectOptions = {}): ProblemError {
  const { errors, total } = collectFieldErrors(error, input, options);
  return validationProblem(errors, total);
}

function depth(issues: z.core.$ZodIssue[]): number {
  return Math.max(0, ...issues.map((i) => i.path.length));
}
