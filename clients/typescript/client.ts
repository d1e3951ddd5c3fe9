// Typed adam-api client: openapi-fetch over the types that openapi-typescript generates from
// openapi.yaml (schema.d.ts, `npm run client:ts`). Paths, parameters, bodies and responses are all
// checked by the compiler against the spec.
//
//   import { createAdamApiClient, bearer, unwrap } from './clients/typescript/client.ts';
//   const api = createAdamApiClient('http://localhost:8787');
//   const { data } = await api.POST('/v1/adam/step', { body: { params: [1, -2, 3], grads: [0.1, -0.2, 0.3], hyperparams: { lr: 0.01 } } });
//   const opt = await unwrap(api.POST('/v1/optimizers', { body: { params: { w: [0, 0], b: 0 } } }));
//   await unwrap(api.POST('/v1/optimizers/{id}/step', {
//     params: { path: { id: opt.id }, header: { ...bearer(opt.token), 'idempotency-key': 'batch-1' } },
//     body: { grads: { w: [0.5, -0.25], b: 0.1 }, loss: 0.75 },
//   }));
//
// Runs in Node 18+, Deno, Bun, browsers and Workers (anything with fetch).

import createClient, { type Client, type ClientOptions } from 'openapi-fetch';
import type { components, operations, paths } from './schema.d.ts';

export type { components, operations, paths };
export type Schemas = components['schemas'];
export type Problem = Schemas['Problem'];
export type TensorTree = Schemas['TensorTree'];
/** JSON answers and problems: the client is typed for them (binary bodies are sent with fetch; see the README). */
type JsonMedia = 'application/json' | 'application/problem+json';

/** Typed for JSON answers (binary bodies are sent with fetch; see the README's binary section). */
export type AdamApiClient = Client<paths, JsonMedia>;

/** A client for the adam-api server at baseUrl (default: `npm run dev`'s address). */
export function createAdamApiClient(baseUrl = 'http://localhost:8787', options: Omit<ClientOptions, 'baseUrl'> = {}): AdamApiClient {
  return createClient<paths, JsonMedia>({ ...options, baseUrl: baseUrl.replace(/\/+$/, '') });
}

/** The Authorization header of a hosted optimizer's calls. */
export function bearer(token: string): { authorization: string } {
  return { authorization: `Bearer ${token}` };
}

/** A 4xx/5xx answer; `problem` is its RFC 9457 problem+json body when it had one. */
export class AdamApiError extends Error {
  readonly status: number;
  readonly problem: Problem | undefined;

  constructor(response: Response, problem: unknown) {
    const p = isProblem(problem) ? problem : undefined;
    super(`${response.status} ${p ? `${p.title}: ${p.detail}` : response.statusText} (${response.url})`);
    this.name = 'AdamApiError';
    this.status = response.status;
    this.problem = p;
  }
}

function isProblem(value: unknown): value is Problem {
  return typeof value === 'object' && value !== null && 'type' in value && 'status' in value;
}

/** Awaits an openapi-fetch call and returns its data, or throws AdamApiError on an error status. */
export async function unwrap<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) throw new AdamApiError(response, error);
  return data as T;
}
