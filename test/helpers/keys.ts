// Helpers for tests of service API keys: requests through the Worker with API_KEYS (and other
// Worker variables) set, and the SHA-256 a key is known by, computed here independently of src/.

import { callWithVars } from './http.ts';
import { parse } from './optimizers.ts';

export const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

/** A request through the Worker with `vars` set (bodies other than strings and bytes serialized as JSON); JSON answers parsed. */
export async function send(vars: Record<string, unknown>, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const text = body === undefined || typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body);
  const res = await callWithVars(vars, method, path, text, { ...(text === undefined ? {} : { 'content-type': 'application/json' }), ...headers });
  if (/json/.test(res.headers.get('content-type') ?? '')) return parse(res);
  return { status: res.status, headers: res.headers, type: res.headers.get('content-type') ?? '', body: await res.text() as any };
}

/** Hex SHA-256 of a key. */
export async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}
