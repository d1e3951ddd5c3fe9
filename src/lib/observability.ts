// One structured log line per request, and Server-Timing phases.
//
// Log: a JSON object on one line per request (Workers Logs and `wrangler tail` index JSON lines):
// id (the cf-ray header in production, a random UUID otherwise), method, route pattern (e.g.
// `/v1/optimizers/:id/step`, null when no route matched), status, duration_ms and, when the path
// names one, optimizer_id. Never headers, query strings, bodies or tokens.
//
// Server-Timing: a handler records named phases (`decode`, `kernel`, `storage`, `encode`) with
// `timing(c)`; the middleware sends them, plus `total`, as a `Server-Timing` header.
// In production `performance.now()` advances only after I/O (a Spectre mitigation), so pure-CPU
// phases read 0 there; the timings are indicative when run locally (`wrangler dev`, tests).

import type { Context, MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import { setHeaders } from './headers.ts';
import type { AppEnv } from './router.ts';

export type Phase = 'decode' | 'kernel' | 'storage' | 'encode';

/** Phases of one request, in milliseconds; a phase recorded twice adds up. */
export class ServerTiming {
  private readonly phases = new Map<string, number>();
  private last: number;
  readonly start: number;

  constructor(start = performance.now()) {
    this.start = start;
    this.last = start;
  }

  /** Adds `ms` to a phase. */
  add(name: Phase, ms: number): void {
    this.phases.set(name, (this.phases.get(name) ?? 0) + ms);
  }

  /** Runs `fn` as (part of) a phase and returns its result. */
  phase<T>(name: Phase, fn: () => T): T {
    const t0 = performance.now();
    try {
      return fn();
    } finally {
      this.last = performance.now();
      this.add(name, this.last - t0);
    }
  }

  /** The async form of `phase` (e.g. `storage` around a Durable Object call). */
  async phaseAsync<T>(name: Phase, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      this.last = performance.now();
      this.add(name, this.last - t0);
    }
  }

  /** Records the time since the request started or the previous phase ended as `name` (e.g. `decode`: reading, parsing, validating). */
  lap(name: Phase): void {
    const now = performance.now();
    this.add(name, now - this.last);
    this.last = now;
  }

  /** The `Server-Timing` header value: each phase, then `total`. */
  header(now = performance.now()): string {
    const entries = [...this.phases, ['total', now - this.start] as const];
    return entries.map(([name, ms]) => `${name};dur=${ms.toFixed(2)}`).join(', ');
  }
}

/** The request's phase recorder (a detached one when the middleware is not installed, e.g. in unit tests). */
export function timing(c: Context<AppEnv>): ServerTiming {
  let t = c.get('timing');
  if (!t) {
    t = new ServerTiming();
    c.set('timing', t);
  }
  return t;
}

const OPTIMIZER_PATH = /^\/v1\/optimizers\/([^/]+)/;

/** The route pattern that answered, or null (404s, 405s and preflights answered by middleware). */
function routeOf(c: Context<AppEnv>): string | null {
  const path = routePath(c, -1);
  return path === '' || path === '*' || path.endsWith('/*') ? null : path;
}

/** Logs one JSON line per request and adds `Server-Timing`. Register it first so it sees every answer. */
export const requestLog: MiddlewareHandler<AppEnv> = async (c, next) => {
  const t = new ServerTiming();
  c.set('timing', t);
  await next();
  const end = performance.now();
  setHeaders(c, { 'server-timing': t.header(end) });
  const optimizer = OPTIMIZER_PATH.exec(c.req.path)?.[1];
  console.log(
    JSON.stringify({
      type: 'request',
      id: c.req.header('cf-ray') ?? crypto.randomUUID(),
      method: c.req.method,
      route: routeOf(c),
      status: c.res.status,
      duration_ms: Math.round((end - t.start) * 100) / 100,
      ...(optimizer === undefined ? {} : { optimizer_id: optimizer.slice(0, 128) }),
    }),
  );
};
