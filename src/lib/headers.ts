// Response headers every answer gets, and the CORS stance.
// - `X-Content-Type-Options: nosniff` on every response (problems, 404/405, the docs page, SVGs),
//   so a browser never second-guesses a declared type; SVGs also get `Content-Security-Policy:
//   default-src 'none'`: the charts use presentation attributes only (no scripts, styles, fonts or
//   links), so an SVG opened directly can load and run nothing.
// - CORS is opt-in: `CORS_ORIGINS` (a Worker variable) lists the origins allowed to call the API
//   from a browser, comma-separated (`*` for any); empty, the default, sends no CORS headers, so
//   browsers keep cross-origin pages out. Requests from a listed origin get
//   `Access-Control-Allow-Origin` and the response headers a client needs exposed; their preflight
//   `OPTIONS` is answered 204. No cookies are used (hosted optimizers take a bearer token), so
//   credentials are never allowed.

import type { Context, MiddlewareHandler } from 'hono';
import type { AppEnv } from './router.ts';

export const SVG_CSP = "default-src 'none'";

/** Request headers a browser client may send cross-origin. */
export const CORS_ALLOW_HEADERS = 'authorization, content-type, idempotency-key, if-match';
/** Response headers a browser client may read (besides the CORS-safelisted ones). */
export const CORS_EXPOSE_HEADERS = 'etag, location, idempotent-replayed, step, lr, server-timing';
export const CORS_ALLOW_METHODS = 'GET, POST, PUT, PATCH, DELETE';
/** How long a browser may cache a preflight answer, in seconds. */
export const CORS_MAX_AGE = '600';

/**
 * Sets headers on the answer in place; only a response whose headers are immutable is copied (and
 * then replaces `c.res`). Assigning `c.res` otherwise would make Hono build another Response.
 */
export function setHeaders(c: Context<AppEnv>, headers: Record<string, string>): void {
  try {
    for (const [k, v] of Object.entries(headers)) c.res.headers.set(k, v);
  } catch {
    const copy = new Response(c.res.body, c.res);
    for (const [k, v] of Object.entries(headers)) copy.headers.set(k, v);
    c.res = copy;
  }
}

/** Appends to `Vary` without repeating a name. */
function vary(res: Response, names: string[]): Record<string, string> {
  const have = (res.headers.get('vary') ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const add = names.filter((n) => !have.some((h) => h.toLowerCase() === n.toLowerCase()));
  return add.length === 0 ? {} : { vary: [...have, ...add].join(', ') };
}

/** nosniff everywhere; a locked-down CSP on SVG images. Register it first so it also sees error responses. */
export const securityHeaders: MiddlewareHandler<AppEnv> = async (c, next) => {
  await next();
  const svg = (c.res.headers.get('content-type') ?? '').toLowerCase().startsWith('image/svg+xml');
  setHeaders(c, { 'x-content-type-options': 'nosniff', ...(svg ? { 'content-security-policy': SVG_CSP } : {}) });
};

/** The allowed origins of a `CORS_ORIGINS` value: a set of exact origins, `*`, or none. */
export function parseCorsOrigins(value: string | undefined): ReadonlySet<string> {
  return new Set(
    (value ?? '')
      .split(',')
      .map((s) => s.trim().replace(/\/+$/, ''))
      .filter(Boolean),
  );
}

/** CORS for the origins in `CORS_ORIGINS`; nothing at all when it is empty. */
export const cors: MiddlewareHandler<AppEnv> = async (c, next) => {
  const allowed = parseCorsOrigins(c.env?.CORS_ORIGINS);
  if (allowed.size === 0) return next();
  const any = allowed.has('*');
  const origin = c.req.header('origin');
  const permitted = origin !== undefined && (any || allowed.has(origin));
  const allowOrigin = { 'access-control-allow-origin': any ? '*' : (origin ?? '') };

  if (permitted && c.req.method === 'OPTIONS' && c.req.header('access-control-request-method') !== undefined) {
    return new Response(null, {
      status: 204,
      headers: {
        ...allowOrigin,
        'access-control-allow-methods': CORS_ALLOW_METHODS,
        'access-control-allow-headers': CORS_ALLOW_HEADERS,
        'access-control-max-age': CORS_MAX_AGE,
        vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
      },
    });
  }

  await next();
  // With a list of origins the answer depends on Origin (a cache must not reuse it across origins);
  // an unlisted origin gets no CORS headers, so the browser withholds the response from its page.
  setHeaders(c, {
    ...(permitted ? { ...allowOrigin, 'access-control-expose-headers': CORS_EXPOSE_HEADERS } : {}),
    ...(any ? {} : vary(c.res, ['Origin'])),
  });
};
