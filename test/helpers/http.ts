// HTTP helpers for integration tests: every call goes through the Worker's fetch handler in workerd.

import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import worker from '../../src/index.ts';
import { checkContract } from './contract.ts';

export const BASE = 'http://adam-api.test';

/** A request through the Worker; a Uint8Array body is sent as bytes (its Content-Type is the caller's to set). */
export async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
  const init: RequestInit = { method, headers: { ...headers } };
  if (body instanceof Uint8Array) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
  }
  const request = new Request(BASE + path, init);
  const res = await exports.default.fetch(request);
  // Every response is checked against openapi.yaml, then handed to the test unchanged.
  const bytes = new Uint8Array(await res.arrayBuffer()); // .text() warns on non-text media types
  checkContract(request.method, request.url, res.status, res.headers, bytes.length === 0 ? '' : new TextDecoder().decode(bytes));
  return new Response(res.status === 204 ? null : bytes, { status: res.status, statusText: res.statusText, headers: res.headers });
}

/** A call answered in bytes: status, headers, media type, the bytes, and the JSON body when it is JSON. */
export async function callBytes(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await call(method, path, body, headers);
  const bytes = new Uint8Array(await res.arrayBuffer());
  const type = res.headers.get('content-type') ?? '';
  const json = /json/.test(type) && bytes.length > 0 ? JSON.parse(new TextDecoder().decode(bytes)) : undefined;
  return { status: res.status, headers: res.headers, type, bytes, body: json };
}

/**
 * Like `call`, with Worker variables overridden as `wrangler dev --var K:V` would (the plugin
 * reads wrangler.toml; this calls the same app with a changed env).
 */
export async function callWithVars(vars: Record<string, unknown>, method: string, path: string, body?: string | Uint8Array, headers: Record<string, string> = {}): Promise<Response> {
  const request = new Request(BASE + path, { method, headers, ...(body === undefined ? {} : { body }) });
  const ctx = createExecutionContext();
  const res = await worker.fetch(request, { ...env, ...vars } as Env, ctx);
  await waitOnExecutionContext(ctx);
  const text = new TextDecoder().decode(await res.arrayBuffer());
  checkContract(request.method, request.url, res.status, res.headers, text);
  return new Response(res.status === 204 ? null : text, { status: res.status, statusText: res.statusText, headers: res.headers });
}

/** POSTs JSON and returns status, content type and parsed body. */
export async function postJson(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await call('POST', path, body, headers);
  const text = await res.text();
  return { status: res.status, type: res.headers.get('content-type') ?? '', headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

export async function getJson(path: string, headers: Record<string, string> = {}) {
  const res = await call('GET', path, undefined, headers);
  const text = await res.text();
  return { status: res.status, type: res.headers.get('content-type') ?? '', headers: res.headers, body: text ? JSON.parse(text) : undefined };
}
