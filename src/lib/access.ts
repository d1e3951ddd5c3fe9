// Service API keys. When API_KEYS (a secret: keys separated by commas) is set, the service routes
// (creating and listing hosted optimizers, every stateless step `/v1/{optimizer}/step`, schedules) need
// `Authorization: Bearer <api key>`; unset or empty, they stay open, for local use. A key is known
// by its SHA-256 only (the owner of the optimizers it creates, its rate-limit bucket), compared in
// constant time, and never stored, logged or echoed. Hosted routes keep their per-optimizer token:
// an API key opens no optimizer (the optimizer compares the token's hash with its own). Open
// whatever the keys: `/`, `/healthz`, the OpenAPI document, `/docs` and the algorithm catalogue
// `/v1/algorithms` (static descriptions that read no body, hold no one's data and cost no compute).
//
// Routes opt in with `serviceRoute(route)`, which documents the key (401) and registers the route
// for `serviceAccess`. That middleware runs before any body is read, so a caller without a key
// cannot make the Worker read or parse anything.

import type { RouteConfig } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import { problem } from '../schemas/common.ts';
import { BEARER_CHALLENGE } from './auth.ts';
import { sameString, sha256Hex } from './digest.ts';
import { ProblemError, headerError } from './problem.ts';
import type { AppEnv } from './router.ts';

/** The OpenAPI security scheme of API keys (registered in src/app.ts). */
export const API_KEY_SCHEME = 'apiKey';

/** Either nothing (a server without API_KEYS) or an API key. */
const SERVICE_SECURITY = [{}, { [API_KEY_SCHEME]: [] }];

const serviceRoutes: Array<{ method: string; pattern: RegExp }> = [];

/** OpenAPI path template (`/v1/x/{id}`) → anchored RegExp. */
const templatePattern = (path: string) => new RegExp(`^${path.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+')}$`);

/** Marks a route as a service route: API key required when keys are configured (documented and enforced). */
export function serviceRoute<R extends RouteConfig>(route: R): R {
  serviceRoutes.push({ method: route.method.toUpperCase(), pattern: templatePattern(route.path) });
  return {
    ...route,
    security: SERVICE_SECURITY,
    responses: {
      ...route.responses,
      401: {
        ...problem('This server has API keys (API_KEYS) and the request has none, or not a valid one: send `Authorization: Bearer <api key>`.'),
        headers: { 'www-authenticate': { description: '`Bearer realm="adam-api"`', schema: { type: 'string' as const } } },
      },
    },
  };
}

export function isServiceRoute(method: string, path: string): boolean {
  return serviceRoutes.some((r) => r.method === method && r.pattern.test(path));
}

/** The keys of an API_KEYS value: comma-separated, surrounding spaces ignored. */
export function parseApiKeys(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((k) => k.trim())
    .filter(Boolean);
}

let cached: { value: string; hashes: Promise<string[]> } | null = null;

/** SHA-256 of each configured key (computed once per isolate and API_KEYS value). */
function keyHashes(value: string | undefined): Promise<string[]> {
  const v = value ?? '';
  if (cached?.value !== v) cached = { value: v, hashes: Promise.all(parseApiKeys(v).map(sha256Hex)) };
  return cached.hashes;
}

/** Whether `hash` is one of `hashes`, comparing with every one of them (no early exit). */
function isKnown(hash: string, hashes: string[]): boolean {
  let found = false;
  for (const h of hashes) found = sameString(hash, h) || found;
  return found;
}

const unauthorized = (detail: string) =>
  new ProblemError(401, 'unauthorized', detail, [headerError('Authorization', 'must be `Bearer <api key>` with a key this server accepts')], undefined, BEARER_CHALLENGE);

/**
 * On service routes, with API keys configured: 401 without a valid key, else the key's SHA-256 as
 * `apiKey` for the handlers (null when the server has no keys).
 */
export const serviceAccess: MiddlewareHandler<AppEnv> = async (c, next) => {
  c.set('apiKey', null);
  if (!isServiceRoute(c.req.method, c.req.path)) return next();
  const hashes = await keyHashes(c.env?.API_KEYS);
  if (hashes.length === 0) return next();
  const header = c.req.header('authorization');
  if (header === undefined) throw unauthorized('this server needs an API key: send `Authorization: Bearer <api key>`');
  const key = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
  const hash = await sha256Hex(key ?? `malformed:${header}`);
  if (key === undefined || !isKnown(hash, hashes)) throw unauthorized('the API key is not valid');
  c.set('apiKey', hash);
  return next();
};
