// Turns zod issues into field errors that name the field, the rule and the value received.

import type { z } from '@hono/zod-openapi';
import { describeValue, type FieldPath } from '../tensors/tree.ts';
import { fieldError, type FieldError } from './problem.ts';

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

/** Field errors for every zod issue; unknown keys become one error per key. */
export function zodFieldErrors(error: z.ZodError, input: unknown): FieldError[] {
  const out: FieldError[] = [];
  for (const issue of error.issues) {
    const path = issue.path as Array<string | number>;
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        out.push(fieldError([...path, key], 'unknown field', valueAt(input, [...(issue.path as Array<string | number>), key])));
      }
      continue;
    }
    if (issue.code === 'invalid_union' && issue.errors.length > 0 && 'discriminator' in issue === false) {
      // Report the branch that got furthest rather than a bare "invalid input".
      const deepest = issue.errors.reduce((a, b) => (depth(b) > depth(a) ? b : a));
      if (depth(deepest) > 0) {
        for (const sub of deepest) {
          const subPath = [...(issue.path as Array<string | number>), ...(sub.path as Array<string | number>)];
          out.push(fieldError(subPath, issueMessage(sub, valueAt(input, subPath)), valueAt(input, subPath)));
        }
        continue;
      }
    }
    const value = valueAt(input, issue.path as Array<string | number>);
    out.push(fieldError(path, issueMessage(issue, value), value));
  }
  return out;
}

function depth(issues: z.core.$ZodIssue[]): number {
  return Math.max(0, ...issues.map((i) => i.path.length));
}
