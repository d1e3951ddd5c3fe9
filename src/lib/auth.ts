// Bearer-token presence check for hosted-optimizer routes. It runs before request validation, so
// an anonymous caller learns nothing about the API beyond "authenticate first". Whether the token
// is the right one only the optimizer's Durable Object can tell (it holds the token's hash).

import type { MiddlewareHandler } from 'hono';
import { ProblemError } from './problem.ts';
import type { AppEnv } from './router.ts';

export const BEARER_CHALLENGE = { 'www-authenticate': 'Bearer realm="adam-api"' };

export const requireBearer: MiddlewareHandler<AppEnv> = async (c, next) => {
  if (c.req.header('authorization') === undefined) {
    throw new ProblemError(401, 'unauthorized', 'missing `Authorization: Bearer <token>` header', undefined, undefined, BEARER_CHALLENGE);
  }
  await next();
};
