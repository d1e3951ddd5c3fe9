// Contract check: every response an integration test receives is validated against openapi.yaml
// (the committed spec file, not our zod schemas, so the two are checked against each other):
// the route and status must be documented, the media type declared, and JSON bodies must validate
// against the documented schema with a real JSON Schema 2020-12 validator (no eval: runs in workerd).

import { Validator } from '@cfworker/json-schema';
import { parse } from 'yaml';
import specText from '../../openapi.yaml?raw';

type Json = Record<string, any>;

const spec = parse(specText) as Json;
const defs = rewriteRefs(spec.components?.schemas ?? {}) as Json;

/** `#/components/schemas/X` → `#/$defs/X`, so each validator is a self-contained schema. */
function rewriteRefs(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(rewriteRefs);
  if (node && typeof node === 'object') {
    const out: Json = {};
    for (const [k, v] of Object.entries(node)) {
      out[k] = k === '$ref' && typeof v === 'string' ? v.replace('#/components/schemas/', '#/$defs/') : rewriteRefs(v);
    }
    return out;
  }
  return node;
}

const operations = Object.entries(spec.paths as Json).flatMap(([template, item]) =>
  Object.entries(item as Json).map(([method, op]) => ({
    template,
    method: method.toUpperCase(),
    op: op as Json,
    pattern: new RegExp('^' + template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+') + '$'),
  })),
);

const validators = new Map<string, Validator>();
function validatorFor(key: string, schema: Json): Validator {
  let v = validators.get(key);
  if (!v) {
    // A fresh copy of the definitions per validator: the validator indexes schemas by object identity.
    v = new Validator({ $id: `https://adam-api.test/contract/${encodeURIComponent(key)}`, $defs: structuredClone(defs), ...(rewriteRefs(schema) as Json) }, '2020-12', false);
    validators.set(key, v);
  }
  return v;
}

export class ContractError extends Error {}

/**
 * The value with lone surrogates in object keys replaced (a tensor may be named "\ud800"): the
 * validator's error locations are URI-encoded, which throws on them. No schema reads key text.
 */
function wellFormedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(wellFormedKeys);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) Object.defineProperty(out, k.toWellFormed(), { value: wellFormedKeys(v), enumerable: true, writable: true, configurable: true });
  return out;
}

/** Bodies longer than this (characters) are not walked by the schema validator. */
const MAX_VALIDATED_BODY = 4 * 1024 * 1024;

/** Throws a ContractError when the response is not what openapi.yaml documents for the request. */
export function checkContract(method: string, url: string, status: number, headers: Headers, body: string): void {
  const path = new URL(url).pathname;
  const where = `${method} ${path} → ${status}`;
  const mediaType = (headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  const matches = operations.filter((o) => o.pattern.test(path));
  const operation = matches.find((o) => o.method === method);

  let responseSpec: Json | undefined;
  let key: string;
  // A CORS preflight answer (src/lib/headers.ts) is HTTP plumbing, outside OpenAPI's scope.
  if (method === 'OPTIONS' && status === 204 && headers.has('access-control-allow-methods') && body.length === 0) return;
  if (!operation) {
    // Undocumented paths and methods may only answer with the generic 404/405 problem.
    if (!((status === 404 && matches.length === 0) || (status === 405 && matches.length > 0))) {
      throw new ContractError(`${where}: no operation ${method} ${path} in openapi.yaml`);
    }
    responseSpec = { content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } };
    key = `fallback ${status}`;
  } else {
    responseSpec = operation.op.responses?.[String(status)] ?? operation.op.responses?.default;
    key = `${operation.method} ${operation.template} ${status}`;
    if (!responseSpec) throw new ContractError(`${where}: status ${status} is not documented for ${operation.method} ${operation.template}`);
  }
  const content = responseSpec.content as Json | undefined;
  if (!content) {
    if (body.length > 0) throw new ContractError(`${where}: a body was sent but none is documented`);
    return;
  }
  const media = content[mediaType];
  if (!media) throw new ContractError(`${where}: content type "${mediaType}" is not documented (documented: ${Object.keys(content).join(', ')})`);
  if (!mediaType.endsWith('json')) return;
  // Tens of MB of tensors would take the schema walk minutes; their status and media type are checked above.
  if (body.length > MAX_VALIDATED_BODY) return;
  let instance: unknown;
  try {
    instance = wellFormedKeys(JSON.parse(body));
  } catch {
    throw new ContractError(`${where}: body is not JSON`);
  }
  const result = validatorFor(`${key} ${mediaType}`, media.schema ?? {}).validate(instance);
  if (!result.valid) {
    const errors = result.errors
      .filter((e) => e.keyword !== 'properties' && e.keyword !== '$ref' && e.keyword !== 'allOf')
      .slice(0, 5)
      .map((e) => `${e.instanceLocation}: ${e.error}`);
    throw new ContractError(`${where}: body does not match openapi.yaml:\n  ${errors.join('\n  ')}`);
  }
}
