// Router factory shared by every route group: one validation hook so every rejected request
// gets the same problem+json body.

import { OpenAPIHono } from '@hono/zod-openapi';
import type { Hook, RouteConfig } from '@hono/zod-openapi';
import { problem } from '../schemas/common.ts';
import { strictQuery } from '../schemas/query.ts';
import type { Limits } from './config.ts';
import type { ServerTiming } from './observability.ts';
import { problemResponse, validationProblem } from './problem.ts';
import { collectFieldErrors } from './validation.ts';

export interface AppEnv {
  Bindings: Env;
  Variables: {
    limits: Limits;
    timing: ServerTiming;
    /** SHA-256 of the request's service API key (src/lib/access.ts); null when the server has none. */
    apiKey: string | null;
  };
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

/**
 * A route that declares no query parameters gets an empty strict query (and a documented 422), so
 * one rule holds on every route: a query parameter a route does not take is a 422 naming it, never
 * silently ignored. Routes with parameters declare them with `strictQuery` (src/schemas/query.ts).
 */
function withStrictQuery<R extends RouteConfig>(route: R): R {
  if (route.request?.query) return route;
  return {
    ...route,
    request: { ...route.request, query: strictQuery({}) },
    responses: { 422: problem('A query parameter was given; this operation takes none.'), ...route.responses },
  };
}

export function createRouter() {
  const router = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });
  const register = router.openapi;
  router.openapi = ((route: RouteConfig, ...rest: unknown[]) => (register as (...args: unknown[]) => unknown)(withStrictQuery(route), ...rest)) as typeof register;
  return router;
}
