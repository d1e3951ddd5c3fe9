// Rate limiting with Cloudflare's Workers rate-limiting binding (RATE_LIMITER, `[[ratelimits]]` in
// wrangler.toml): every /v1 request counts against a bucket, and one over the binding's limit in
// its period is a 429 problem with Retry-After before any body is read. The bucket is the
// request's service API key when it carries one (src/lib/access.ts: service routes on servers
// with API_KEYS), else the client's address as Cloudflare gives it (CF-Connecting-IP): so without
// API keys every route counts per client IP, and with them the hosted routes (which take an
// optimizer token, not a key) too. Cloudflare counts per location and eventually consistently:
// a soft limit against floods, not an exact budget.
//
// Not limited: `/`, `/healthz`, the OpenAPI document and `/docs` (outside /v1), CORS preflights
// (answered before this), requests with neither a key nor CF-Connecting-IP (Cloudflare sets it on
// every request it forwards, so only local tools send none) or from a loopback address (`wrangler
// dev`, load tests and benchmarks on this machine), and every request when the binding
// is absent. Should the binding itself fail, the request goes through and the failure is logged:
// an outage of the limiter must not take the API down with it.

import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from './router.ts';
import { ProblemError } from './problem.ts';

/** The binding's period (`simple.period` in wrangler.toml, 10 or 60 seconds); also Retry-After. */
export const RATE_LIMIT_PERIOD_SECONDS = 10;

/** Whether requests to `path` count against a rate-limit bucket. */
export const isRateLimited = (path: string) => path.startsWith('/v1/') || path === '/v1';

/** The bucket of a request: its API key's SHA-256, else its client IP, else none. */
export function rateLimitKey(apiKey: string | null, clientIp: string | undefined): string | null {
  if (apiKey !== null) return `key:${apiKey}`;
  const ip = clientIp?.trim();
  // Loopback is `wrangler dev` on this machine (Cloudflare never forwards it): local runs, load
  // tests and benchmarks are not throttled.
  if (!ip || LOOPBACK.test(ip)) return null;
  return `ip:${ip}`;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|::ffff:127\.\d+\.\d+\.\d+)$/;

export const rateLimit: MiddlewareHandler<AppEnv> = async (c, next) => {
  const limiter = c.env?.RATE_LIMITER;
  if (!limiter || !isRateLimited(c.req.path)) return next();
  const apiKey = c.get('apiKey');
  const key = rateLimitKey(apiKey, c.req.header('cf-connecting-ip'));
  if (key === null) return next();
  let success = true;
  try {
    ({ success } = await limiter.limit({ key }));
  } catch (e) {
    console.error('rate limiter failed; request let through', e);
  }
  if (success) return next();
  const who = apiKey !== null ? 'this API key' : 'this client address';
  throw new ProblemError(
    429,
    'rate-limited',
    `too many requests from ${who}: more than the server allows per ${RATE_LIMIT_PERIOD_SECONDS} s (RATE_LIMITER in wrangler.toml); retry after ${RATE_LIMIT_PERIOD_SECONDS} s`,
    undefined,
    undefined,
    { 'retry-after': String(RATE_LIMIT_PERIOD_SECONDS) },
  );
};

/** The 429 of every /v1 operation in the OpenAPI document (added to the generated document, src/app.ts). */
export function rateLimitedResponse() {
  return {
    description:
      `Too many requests: this API key (or, without one, this client IP) sent more than the server allows per ${RATE_LIMIT_PERIOD_SECONDS} s ` +
      '(the RATE_LIMITER binding). Nothing was done; retry after `Retry-After` seconds.',
    headers: { 'retry-after': { description: 'Seconds to wait before retrying.', schema: { type: 'integer' } } },
    content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
  };
}
