// Limits read from the Worker's environment (wrangler.toml [vars]), with the documented defaults.

export interface Limits {
  /** Largest request body in bytes (413 above it). */
  maxBodyBytes: number;
  /** Most elements in one tensor tree of a stateless step (413 above it). */
  maxElements: number;
  /** Most parameter elements of one hosted optimizer (413 above it). */
  maxHostedElements: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxBodyBytes: 32 * 1024 * 1024,
  maxElements: 250_000,
  maxHostedElements: 1_000_000,
});

/** The subset of bindings this module reads; values come from wrangler vars as strings. */
export interface LimitVars {
  MAX_BODY_BYTES?: string | number;
  MAX_ELEMENTS?: string | number;
  MAX_HOSTED_ELEMENTS?: string | number;
}

function positiveInt(raw: string | number | undefined, fallback: number, name: string): number {
  if (raw === undefined || raw === '') return fallback;
  const n = typeof raw === 'number' ? raw : Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** Limits from the environment; a misconfigured var fails loudly rather than silently defaulting. */
export function readLimits(env: LimitVars | undefined): Limits {
  return {
    maxBodyBytes: positiveInt(env?.MAX_BODY_BYTES, DEFAULT_LIMITS.maxBodyBytes, 'MAX_BODY_BYTES'),
    maxElements: positiveInt(env?.MAX_ELEMENTS, DEFAULT_LIMITS.maxElements, 'MAX_ELEMENTS'),
    maxHostedElements: positiveInt(env?.MAX_HOSTED_ELEMENTS, DEFAULT_LIMITS.maxHostedElements, 'MAX_HOSTED_ELEMENTS'),
  };
}
