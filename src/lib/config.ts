// Limits read from the Worker's environment (wrangler.toml [vars]), with the documented defaults.

import type { Dtype } from '../optim/adam.ts';

export interface Limits {
  /** Largest request body in bytes that the Worker reads whole (413 above it). */
  maxBodyBytes: number;
  /** Most tensor elements in one tensor tree of a JSON stateless step (413 above it). */
  maxElements: number;
  /**
   * Most bytes one hosted optimizer's tensors take: params, the gradient buffer and every state
   * slot its optimizer can keep, (2 + slots) × elements × 4 (float32) or 8 (float64) bytes (Adam:
   * exp_avg, exp_avg_sq, max_exp_avg_sq, so 5 arrays; 413 above it).
   */
  maxHostedBytes: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxBodyBytes: 32 * 1024 * 1024,
  maxElements: 250_000,
  maxHostedBytes: 80 * 1024 * 1024,
});

/**
 * Most numbers in one JSON request to a hosted optimizer, all its trees together (a snapshot's
 * params, m, v and v_max): the Worker parses them and hands them over RPC as typed arrays, whose
 * values are limited to 32 MiB (3,000,000 float64 are 24 MB). Binary bodies are streamed instead.
 */
export const MAX_JSON_HOSTED_ELEMENTS = 3_000_000;

/** Arrays a hosted Adam keeps per element: params, exp_avg, exp_avg_sq, max_exp_avg_sq and the gradient buffer. */
export const HOSTED_ARRAYS = 5;

/**
 * Arrays a hosted optimizer with `slots` possible state slots keeps per element: params, the
 * gradient buffer and every slot, whether or not its hyperparameters keep it now (so a PATCH that
 * turns one on never needs more memory than creation allowed).
 */
export const hostedArrays = (slots: number) => 2 + slots;

/** Most elements a hosted optimizer of `dtype` may have, keeping `arrays` arrays per element (Adam's 5 by default). */
export function maxHostedElements(limits: Limits, dtype: Dtype, arrays = HOSTED_ARRAYS): number {
  return Math.floor(limits.maxHostedBytes / (arrays * (dtype === 'float32' ? 4 : 8)));
}

/** The subset of bindings this module reads; values come from wrangler vars as strings. */
export interface LimitVars {
  MAX_BODY_BYTES?: string | number;
  MAX_ELEMENTS?: string | number;
  MAX_HOSTED_BYTES?: string | number;
  OPTIMIZER_TTL?: string | number;
  KEY_MAX_OPTIMIZERS?: string | number;
  KEY_MAX_ELEMENTS?: string | number;
}

/**
 * Time-to-live of a hosted optimizer, in seconds: it deletes itself once this long has passed
 * since its last successful call. At least a minute (alarms are not meant for finer deadlines),
 * at most a year; 30 days unless OPTIMIZER_TTL or the optimizer's own `ttl` says otherwise.
 */
export const MIN_TTL_SECONDS = 60;
export const MAX_TTL_SECONDS = 365 * 86_400;
export const DEFAULT_TTL_SECONDS = 30 * 86_400;

/** The time-to-live given to optimizers created without `ttl` (OPTIMIZER_TTL). */
export function readDefaultTtl(env: LimitVars | undefined): number {
  const ttl = positiveInt(env?.OPTIMIZER_TTL, DEFAULT_TTL_SECONDS, 'OPTIMIZER_TTL');
  if (ttl < MIN_TTL_SECONDS || ttl > MAX_TTL_SECONDS) throw new Error(`OPTIMIZER_TTL must be between ${MIN_TTL_SECONDS} and ${MAX_TTL_SECONDS} seconds, got ${ttl}`);
  return ttl;
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
    maxHostedBytes: positiveInt(env?.MAX_HOSTED_BYTES, DEFAULT_LIMITS.maxHostedBytes, 'MAX_HOSTED_BYTES'),
  };
}

/**
 * What one service API key may hold at once (403 beyond): hosted optimizers, and their parameter
 * elements all together. Only with API keys configured: without them nothing is counted.
 */
export interface KeyQuota {
  maxOptimizers: number;
  maxElements: number;
}

/**
 * 100 optimizers; 50,000,000 elements: a dozen optimizers at the largest float32 size (4,194,304), about
 * 0.8 GB of stored state and journals (12 to 16 bytes per element), which the Free plan's 5 GB holds.
 */
export const DEFAULT_KEY_QUOTA: Readonly<KeyQuota> = Object.freeze({ maxOptimizers: 100, maxElements: 50_000_000 });

export function readKeyQuota(env: LimitVars | undefined): KeyQuota {
  return {
    maxOptimizers: positiveInt(env?.KEY_MAX_OPTIMIZERS, DEFAULT_KEY_QUOTA.maxOptimizers, 'KEY_MAX_OPTIMIZERS'),
    maxElements: positiveInt(env?.KEY_MAX_ELEMENTS, DEFAULT_KEY_QUOTA.maxElements, 'KEY_MAX_ELEMENTS'),
  };
}
