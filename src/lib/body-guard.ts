// Checks on a request body before it is parsed: no compression or non-UTF-8 charset (415), and no
// more JSON values than the route can use (413). JSON.parse turns a 32 MiB body of "0," into 16
// million array slots (~130 MB), past a Worker's 128 MB, so the count is taken on the raw bytes.

import type { Context, MiddlewareHandler } from 'hono';
import { ProblemError } from './problem.ts';
import type { AppEnv } from './router.ts';

const COMMA = 0x2c;
const OPEN_BRACKET = 0x5b;

/** An upper bound on the numbers in a JSON text: every array element but the first follows a comma. */
export function countJsonValues(bytes: Uint8Array): number {
  let n = 1;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === COMMA || b === OPEN_BRACKET) n++;
  }
  return n;
}

/**
 * Rejects compressed or non-UTF-8 bodies, and bodies with more values than `maxValues(c)` allows.
 * Runs after the size limit, so reading the bytes here is bounded.
 */
export function bodyGuard(maxValues: (c: Context<AppEnv>) => number): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (c.req.method === 'GET' || c.req.method === 'HEAD' || c.req.method === 'DELETE' || !c.req.raw.body) return next();
    const encoding = c.req.header('content-encoding');
    if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
      throw new ProblemError(415, 'unsupported-media-type', `Content-Encoding ${encoding} is not supported: send uncompressed JSON`);
    }
    const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(c.req.header('content-type') ?? '')?.[1];
    if (charset !== undefined && !/^utf-?8$/i.test(charset)) {
      throw new ProblemError(415, 'unsupported-media-type', `charset ${charset} is not supported: JSON bodies are UTF-8`);
    }
    const limit = maxValues(c);
    // Hono caches the bytes; the JSON validator then parses them without reading the stream again.
    const count = countJsonValues(new Uint8Array(await c.req.arrayBuffer()));
    if (count > limit) {
      throw new ProblemError(413, 'payload-too-large', `the body holds about ${count} JSON values; this route accepts at most ${limit}`, undefined, { limit });
    }
    return next();
  };
}
