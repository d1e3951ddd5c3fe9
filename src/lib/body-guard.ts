// Checks on a JSON request body before it is parsed. JSON.parse turns 32 MiB of "0," into 16
// million array slots (~130 MB, past a Worker's 128 MB), 5 million nested `{"a":` into 5 million
// objects, and a million unknown keys into a million validation errors; so one linear scan of the
// raw bytes bounds, before anything is parsed:
// - the values (objects, arrays, strings, numbers, literals; object keys count as strings): 413;
// - the nesting depth, and the members of any one object: 422 naming the place, since no valid
//   request comes near either bound whatever the configured limits.
// Compressed or non-UTF-8 JSON is a 415. Bodies of any other media type (binary tensors) pass
// through untouched and unread, so their routes can stream them.

import type { Context, MiddlewareHandler } from 'hono';
import { MAX_NAME_DEPTH, MAX_RANK, MAX_TENSORS, type FieldPath } from '../tensors/tree.ts';
import { ProblemError, fieldError, validationProblem } from './problem.ts';
import type { AppEnv } from './router.ts';

/**
 * Deepest nesting of arrays and objects: a tensor tree needs MAX_NAME_DEPTH levels of names plus
 * MAX_RANK of dimensions, under a few levels of request fields (`state.m`); schedules need ~20.
 */
export const MAX_JSON_DEPTH = MAX_NAME_DEPTH + MAX_RANK + 16;
/** Most members of one object: a tensor tree has at most MAX_TENSORS names; request objects have a few fields. */
export const MAX_OBJECT_MEMBERS = MAX_TENSORS;

export interface JsonBudget {
  /** Most values (keys included). */
  maxValues: number;
  maxDepth?: number;
  maxMembers?: number;
}

export type JsonScan =
  | { ok: true; values: number }
  | { ok: false; kind: 'values'; values: number }
  | { ok: false; kind: 'depth' | 'members'; path: FieldPath };

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

/** Bytes that make up numbers and literals (`-1.5e3`, `true`, `null`); also stray non-ASCII, which the parser rejects later. */
const SCALAR = new Uint8Array(256);
for (const c of '0123456789+-.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ') SCALAR[c.charCodeAt(0)] = 1;
for (let b = 0x80; b < 0x100; b++) SCALAR[b] = 1;

/**
 * One pass over JSON text, outside strings (escapes honoured), counting every value and tracking
 * the open containers. It stops at the first bound crossed, so it is O(bytes) whatever the input,
 * and malformed JSON is left for the parser to reject (the counts are then upper bounds).
 */
export function scanJson(bytes: Uint8Array, budget: JsonBudget): JsonScan {
  const maxDepth = budget.maxDepth ?? MAX_JSON_DEPTH;
  const maxCount = 2 * (budget.maxMembers ?? MAX_OBJECT_MEMBERS); // keys and values both count
  // Per open container (index = depth): values directly inside it, whether it is an object, and
  // where its current key is; enough to name the place when a bound is crossed.
  const count = new Int32Array(maxDepth + 2);
  const isObject = new Uint8Array(maxDepth + 2);
  const keyStart = new Int32Array(maxDepth + 2);
  const keyEnd = new Int32Array(maxDepth + 2);
  let values = 0;
  let depth = 0;
  let inScalar = false;
  const n = bytes.length;
  let i = 0;

  const startValue = (): JsonScan | null => {
    if (++values > budget.maxValues) return { ok: false, kind: 'values', values };
    if (depth > 0 && ++count[depth]! > maxCount && isObject[depth]) return { ok: false, kind: 'members', path: pathTo(bytes, depth, count, isObject, keyStart, keyEnd) };
    return null;
  };

  while (i < n) {
    const b = bytes[i]!;
    if (b === QUOTE) {
      inScalar = false;
      const stop = startValue();
      if (stop) return stop;
      const isKey = depth > 0 && isObject[depth] === 1 && (count[depth]! & 1) === 1;
      if (isKey) keyStart[depth] = i;
      i++;
      while (i < n) {
        const c = bytes[i]!;
        if (c === BACKSLASH) i += 2;
        else if (c === QUOTE) break;
        else i++;
      }
      i++;
      if (isKey) keyEnd[depth] = Math.min(i, n);
      continue;
    }
    if (b === OPEN_BRACE || b === OPEN_BRACKET) {
      inScalar = false;
      const stop = startValue();
      if (stop) return stop;
      if (depth === maxDepth) return { ok: false, kind: 'depth', path: pathTo(bytes, depth + 1, count, isObject, keyStart, keyEnd) };
      depth++;
      count[depth] = 0;
      isObject[depth] = b === OPEN_BRACE ? 1 : 0;
    } else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
      inScalar = false;
      if (depth > 0) depth--;
    } else if (SCALAR[b] === 1) {
      if (!inScalar) {
        inScalar = true;
        const stop = startValue();
        if (stop) return stop;
      }
    } else {
      inScalar = false; // whitespace, `,` and `:`
    }
    i++;
  }
  return { ok: true, values };
}

/** The path of the container opened at `depth` (its parents' current keys and indices). */
function pathTo(bytes: Uint8Array, depth: number, count: Int32Array, isObject: Uint8Array, keyStart: Int32Array, keyEnd: Int32Array): FieldPath {
  const path: Array<string | number> = [];
  const decoder = new TextDecoder();
  for (let d = 1; d < depth; d++) {
    if (isObject[d]) {
      const raw = decoder.decode(bytes.subarray(keyStart[d], keyEnd[d]));
      try {
        path.push(String(JSON.parse(raw)));
      } catch {
        path.push(raw);
      }
    } else {
      path.push(count[d]! - 1);
    }
  }
  return path;
}

/** `application/json` or any `+json` type: what Hono's JSON validator parses (case-insensitive). */
export function isJsonMediaType(contentType: string | undefined): boolean {
  const media = (contentType ?? '').split(';')[0]!.trim();
  return /^application\/([\w.-]+\+)?json$/i.test(media);
}

/**
 * For JSON bodies: rejects compression and non-UTF-8 charsets (415), more values than
 * `maxValues(c)` allows (413), and nesting deeper than MAX_JSON_DEPTH or objects with more than
 * MAX_OBJECT_MEMBERS members (422). Runs after the size limit, so reading the bytes is bounded.
 * Other media types are not read.
 */
export function bodyGuard(maxValues: (c: Context<AppEnv>) => number): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (c.req.method === 'GET' || c.req.method === 'HEAD' || c.req.method === 'DELETE' || !c.req.raw.body) return next();
    const contentType = c.req.header('content-type');
    if (!isJsonMediaType(contentType)) return next();
    const encoding = c.req.header('content-encoding');
    if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
      throw new ProblemError(415, 'unsupported-media-type', `Content-Encoding ${encoding} is not supported: send uncompressed JSON`);
    }
    const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(contentType ?? '')?.[1];
    if (charset !== undefined && !/^utf-?8$/i.test(charset)) {
      throw new ProblemError(415, 'unsupported-media-type', `charset ${charset} is not supported: JSON bodies are UTF-8`);
    }
    const limit = maxValues(c);
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    const scan = scanJson(bytes, { maxValues: limit });
    if (scan.ok) {
      // Decoded once, here: Hono's json() reads the text, which it would otherwise get by building a
      // Response from the cached bytes for the validator and again for every handler that reads it.
      (c.req.bodyCache as Record<string, unknown>).text = Promise.resolve(new TextDecoder().decode(bytes));
      return next();
    }
    if (scan.kind === 'values') {
      throw new ProblemError(413, 'payload-too-large', `the body holds more than ${limit} JSON values (object keys included), the most this route accepts`, undefined, {
        limit,
      });
    }
    const message = scan.kind === 'depth' ? `nests deeper than ${MAX_JSON_DEPTH} levels of arrays and objects` : `has more than ${MAX_OBJECT_MEMBERS} members`;
    throw validationProblem([fieldError(scan.path, message)]);
  };
}
