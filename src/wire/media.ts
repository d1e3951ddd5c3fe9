// The wire formats and HTTP content negotiation: which format a request body is in (Content-Type,
// 415 otherwise) and which one the client accepts for the answer (Accept, 406 otherwise).

import { parseDtypeName, type WireDtype } from './dtypes.ts';
import { WireError } from './safetensors.ts';

export const MEDIA_TYPES = {
  json: 'application/json',
  raw: 'application/octet-stream',
  safetensors: 'application/vnd.safetensors',
} as const;

export type Format = keyof typeof MEDIA_TYPES;

export const BINARY_FORMATS: readonly Format[] = ['raw', 'safetensors'];

interface MediaRange {
  type: string;
  params: Map<string, string>;
}

function parseMediaRange(text: string): MediaRange {
  const [type = '', ...rest] = text.split(';');
  const params = new Map<string, string>();
  for (const p of rest) {
    const eq = p.indexOf('=');
    if (eq > 0) params.set(p.slice(0, eq).trim().toLowerCase(), p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1'));
  }
  return { type: type.trim().toLowerCase(), params };
}

/**
 * A Content-Type in the form every check downstream reads alike: RFC 9110 allows whitespace around
 * the `;` between parameters (`application/json ; charset=utf-8`), which some checks (the JSON
 * validator of the OpenAPI routes) would refuse with a 415. The type is lowercased, whitespace
 * around `;` and `=` dropped, parameter values kept as sent (a quoted one with a `;` inside is
 * left alone). Null when the header is already in this form.
 */
export function canonicalContentType(text: string): string | null {
  if (text.includes('"') && /"[^"]*;/.test(text)) return null;
  const [type = '', ...params] = text.split(';');
  const parts = [type.trim().toLowerCase()];
  for (const p of params) {
    const eq = p.indexOf('=');
    if (eq < 0) {
      if (p.trim() !== '') parts.push(p.trim());
      continue;
    }
    parts.push(`${p.slice(0, eq).trim().toLowerCase()}=${p.slice(eq + 1).trim()}`);
  }
  const canonical = parts.join(';');
  return canonical === text ? null : canonical;
}

const formatOfType = (type: string): Format | null => {
  if (type === MEDIA_TYPES.json || /^application\/[a-z0-9.+-]*\+json$/.test(type)) return 'json';
  if (type === MEDIA_TYPES.raw) return 'raw';
  if (type === MEDIA_TYPES.safetensors) return 'safetensors';
  return null;
};

const listed = (formats: readonly Format[]) => formats.map((f) => MEDIA_TYPES[f]).join(', ');

/** A request body's format, and for raw bodies the element type named by `; dtype=…` (null: the optimizer's). */
export interface BodyFormat {
  format: Format;
  dtype: WireDtype | null;
}

/** The format of a request body from its Content-Type, or a 415 naming what this route takes. */
export function bodyFormat(contentType: string | undefined, allowed: readonly Format[]): BodyFormat {
  const range = parseMediaRange(contentType ?? '');
  const format = formatOfType(range.type);
  if (format === null || !allowed.includes(format)) {
    throw new WireError(415, ['Content-Type'], `Content-Type ${contentType ?? '(none)'} is not accepted here; send ${listed(allowed)}`, contentType);
  }
  let dtype: WireDtype | null = null;
  const dtypeParam = range.params.get('dtype');
  if (dtypeParam !== undefined) {
    if (format !== 'raw') throw new WireError(415, ['Content-Type'], `the dtype parameter applies to ${MEDIA_TYPES.raw} only`, contentType);
    dtype = parseDtypeName(dtypeParam);
    if (dtype === null) throw new WireError(415, ['Content-Type'], `dtype=${dtypeParam} is not one of float16, bfloat16, float32, float64`, contentType);
  }
  return { format, dtype };
}

/**
 * The answer's format from an Accept header: the allowed format the client rates highest (q),
 * `fallback` when the client states no preference among them, a 406 when it accepts none.
 */
export function acceptFormat(accept: string | undefined, allowed: readonly Format[], fallback: Format): Format {
  if (accept === undefined || accept.trim() === '') return fallback;
  const quality = new Map<Format, number>();
  let wildcard = -1;
  for (const part of accept.split(',')) {
    if (part.trim() === '') continue;
    const range = parseMediaRange(part);
    const q = Number(range.params.get('q') ?? '1');
    const weight = Number.isFinite(q) ? Math.min(1, Math.max(0, q)) : 0;
    if (range.type === '*/*' || range.type === 'application/*') {
      wildcard = Math.max(wildcard, weight);
      continue;
    }
    const format = formatOfType(range.type);
    if (format !== null) quality.set(format, Math.max(quality.get(format) ?? 0, weight));
  }
  let best: Format | null = null;
  let bestQ = 0;
  // The fallback first, so it wins ties (e.g. `*/*`).
  for (const f of [fallback, ...allowed.filter((a) => a !== fallback)]) {
    const q = quality.get(f) ?? wildcard;
    if (q > bestQ) {
      best = f;
      bestQ = q;
    }
  }
  if (best === null) throw new WireError(406, ['Accept'], `Accept ${accept} allows none of the formats this route answers in: ${listed(allowed)}`, accept);
  return best;
}
