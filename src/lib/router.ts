// Router factory shared by every route group: one validation hook so every rejected request
// gets the same problem+json body.

import { OpenAPIHono } from '@hono/zod-openapi';
import type { Hook } from '@hono/zod-openapi';
import type { Limits } from './config.ts';
import { problemResponse, validationProblem } from './problem.ts';
import { collectFieldErrors } from './validation.ts';

export interface AppEnv {
  Bindings: Env;
  Variables: { limits: Limits };
}

/** Validation failures of any request part (json, query, params, headers) → 422 problem+json. */
export const validationHook: Hook<unknown, AppEnv, string, unknown> = async (result, c) => {
  if (result.success) return;
  let input: unknown;
  if (result.target === 'json') input = await c.req.json().catch(() => undefined);
  else if (result.target === 'query') input = c.req.query();
  else if (result.target === 'param') input = c.req.param();
  else if (result.target === 'header') input = c.req.header();
  // Query, path and header fields are named as sent (headers in their usual capitalisation, e.g.
  // Idempotency-Key); a JSON Pointer only addresses the body.
  const asSent = result.target !== 'json';
  const { errors, total } = collectFieldErrors(result.error, input, {
    asSent,
    ...(result.target === 'query' ? { unknownKey: 'unknown query parameter' } : {}),
  });
  if (result.target === 'header') {
    for (const e of errors) e.field = e.field.replace(/(^|-)([a-z])/g, (_, d: string, ch: string) => d + ch.toUpperCase());
  }
  return problemResponse(validationProblem(errors, total), new URL(c.req.url).pathname);
};

export function createRouter() {
  return new OpenAPIHono<AppEnv>({ defaultHook: validationHook });
}
