// Conditional steps (pure): If-Match against the current ETag, expected_step against the step.

import { ProblemError, fieldError } from '../lib/problem.ts';

/**
 * 412 unless `ifMatch` lists `etag` or is `*`. Strong comparison (RFC 9110 §13.1.1): a weak tag
 * (W/"…") never matches.
 */
export function checkIfMatch(ifMatch: string | undefined, etag: string, step: number): void {
  if (ifMatch === undefined || ifMatch.trim() === '*') return;
  const tags = ifMatch.split(',').map((t) => t.trim());
  if (tags.includes(etag)) return;
  throw new ProblemError(412, 'precondition-failed', `If-Match ${ifMatch} does not match the current state ${etag}`, undefined, { step }, { etag });
}

/** 409 unless the optimizer has completed exactly `expected` steps. */
export function checkExpectedStep(expected: number | undefined, step: number): void {
  if (expected === undefined || expected === step) return;
  throw new ProblemError(409, 'conflict', `expected_step is ${expected} but the optimizer has completed ${step} steps`, [
    fieldError(['expected_step'], `the optimizer is at step ${step}`, expected),
  ], { step });
}
