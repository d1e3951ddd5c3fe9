// Helpers for hosted-optimizer tests: create one, call it with its token.

import { expect } from 'vitest';
import { call } from './http.ts';

export interface Created {
  id: string;
  token: string;
  body: any;
  location: string | null;
  etag: string | null;
}

export async function parse(res: Response) {
  const text = await res.text();
  return { status: res.status, headers: res.headers, type: res.headers.get('content-type') ?? '', body: text ? JSON.parse(text) : undefined };
}

export async function createOptimizer(body: unknown): Promise<Created> {
  const res = await parse(await call('POST', '/v1/optimizers', body));
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return { id: res.body.id, token: res.body.token, body: res.body, location: res.headers.get('location'), etag: res.headers.get('etag') };
}

export function authed(token: string, extra: Record<string, string> = {}) {
  return { authorization: `Bearer ${token}`, ...extra };
}

export async function opCall(method: string, opt: { id: string; token: string }, path: string, body?: unknown, headers: Record<string, string> = {}) {
  return parse(await call(method, `/v1/optimizers/${opt.id}${path}`, body, authed(opt.token, headers)));
}

export function expectProblem(res: { status: number; type: string; body: any }, status: number, field?: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.type).toMatch(/^application\/problem\+json/);
  expect(res.body.status).toBe(status);
  expect(typeof res.body.detail).toBe('string');
  if (field !== undefined) expect((res.body.errors ?? []).map((e: { field: string }) => e.field), res.body.detail).toContain(field);
}
