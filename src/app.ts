// The Hono application: mounts every route group, enforces body limits and renders every error as
// problem+json. Importable from Node (no cloudflare:* imports) so scripts can generate the spec.

import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import { Document, Scalar, parse as parseYaml, visit } from 'yaml';
import { MAX_JSON_HOSTED_ELEMENTS, readLimits, type Limits } from './lib/config.ts';
import { bodyGuard } from './lib/body-guard.ts';
import { API_KEY_SCHEME, serviceAccess } from './lib/access.ts';
import { rateLimit, rateLimitedResponse, isRateLimited } from './lib/rate-limit.ts';
import { cors, securityHeaders } from './lib/headers.ts';
import { requestLog } from './lib/observability.ts';
import { MAX_EVALUATION_POINTS } from './schemas/schedule.ts';
import { BINARY_FORMATS, MEDIA_TYPES, canonicalContentType } from './wire/media.ts';
import { OPENAPI_CONFIG, SERVICE_DESCRIPTION } from './lib/openapi.ts';
import { ProblemError, headerError, problemResponse, type ProblemType } from './lib/problem.ts';
import { createRouter } from './lib/router.ts';
import { activeKernel } from './optim/adam.ts';
import { PartialTensorTreeSchema, TensorSchema, TensorTreeSchema } from './schemas/common.ts';
import { healthRoute, indexRoute, openapiJsonRoute, openapiYamlRoute } from './routes/meta/meta.routes.ts';
import { docsRouter } from './routes/docs/docs.index.ts';
import { optimizersRouter } from './routes/optimizers/optimizers.index.ts';
import { schedulesRouter } from './routes/schedules/schedules.index.ts';
import { stepRouter } from './routes/step/step.index.ts';
import { familyRouter } from './routes/family/family.index.ts';
import { compareRouter } from './routes/compare/compare.index.ts';
import { optimizerDef } from './optim/registry.ts';

const HTTP_PROBLEMS: Record<number, ProblemType> = {
  400: 'malformed-json',
  413: 'payload-too-large',
  415: 'unsupported-media-type',
  404: 'not-found',
  405: 'method-not-allowed',
};

/** Whether a Content-Type names one of the binary wire formats. */
function isBinary(contentType: string | undefined): boolean {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  return BINARY_FORMATS.some((f) => MEDIA_TYPES[f] === type);
}

/** Requests whose binary body the Worker hands to a hosted optimizer unread. */
function streamsToOptimizer(method: string, path: string, contentType: string | undefined): boolean {
  return (method === 'POST' || method === 'PUT') && /^\/v1\/optimizers\/[^/]+\/(step|params|state)$/.test(path) && isBinary(contentType);
}

/** Hono path pattern (`/v1/x/:id`) → anchored RegExp, for 405 detection. */
function patternOf(path: string): RegExp {
  const src = path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/\/:[^/]+/g, '/[^/]+');
  return new RegExp(`^${src}$`);
}

/**
 * Most JSON values a route's body may hold (checked before parsing): the trees it takes, each at
 * its element limit, plus room for schedules, metrics and small fields.
 */
function jsonValueLimit(limits: Limits, path: string, method: string): number {
  const slack = 2 * MAX_EVALUATION_POINTS + 10_000; // steps and metrics lists, milestones, fields
  if (path === '/v1/adam/step') return 5 * limits.maxElements + slack; // params, grads, m, v, v_max
  const family = /^\/v1\/([a-z0-9_]+)\/step$/.exec(path);
  const def = family ? optimizerDef(family[1]!) : undefined;
  if (def) return (2 + def.slots.length) * limits.maxElements + slack; // params, grads, every slot
  if (path.startsWith('/v1/optimizers')) return MAX_JSON_HOSTED_ELEMENTS + slack;
  return slack;
}

export function createApp() {
  const app = createRouter();
  // The operations that read a body (POST, PUT, PATCH), by method and path pattern; built on first
  // use, once every route is registered.
  let bodyRoutes: Array<{ method: string; pattern: RegExp }> | null = null;
  const takesBody = (method: string, path: string) => {
    bodyRoutes ??= app.routes.filter((r) => r.method === 'POST' || r.method === 'PUT' || r.method === 'PATCH').map((r) => ({ method: r.method, pattern: patternOf(r.path) }));
    return bodyRoutes.some((r) => r.method === method && r.pattern.test(path));
  };

  app.use('*', requestLog, securityHeaders, cors);
  // API keys before anything reads a body (preflights were answered by cors).
  app.use('*', serviceAccess);
  // Then the rate limit, per API key (or client IP), still before any body is read.
  app.use('*', rateLimit);
  app.use('*', async (c, next) => {
    // One spelling of Content-Type for every check that follows (whitespace before `;` is valid).
    const contentType = c.req.header('content-type');
    const canonical = contentType === undefined ? null : canonicalContentType(contentType);
    if (canonical !== null) {
      const headers = new Headers(c.req.raw.headers);
      headers.set('content-type', canonical);
      c.req.raw = new Request(c.req.raw, { headers });
    }
    return next();
  });
  app.use('*', async (c, next) => {
    const limits = readLimits(c.env);
    c.set('limits', limits);
    // Only operations that take a body have it limited and checked: GET, HEAD and DELETE bodies are
    // never read, and a request no operation takes gets its 404/405 without its body being read.
    if (!takesBody(c.req.method, c.req.path)) return next();
    // Binary bodies of a hosted optimizer stream into its Durable Object, which reads no more than
    // its layout (or, for a checkpoint, its memory budget) allows; the Worker never holds them.
    if (streamsToOptimizer(c.req.method, c.req.path, c.req.header('content-type'))) return next();
    return bodyLimit({
      maxSize: limits.maxBodyBytes,
      onError: () => {
        throw new ProblemError(413, 'payload-too-large', `request body larger than ${limits.maxBodyBytes} bytes (MAX_BODY_BYTES)`, undefined, {
          limit: limits.maxBodyBytes,
        });
      },
    })(c, next);
  });

  const guard = bodyGuard((c) => jsonValueLimit(c.get('limits'), c.req.path, c.req.method));
  app.use('*', async (c, next) => {
    if (!takesBody(c.req.method, c.req.path)) return next();
    // JSON values are counted in JSON bodies only; binary bodies are bounded by bytes and layouts.
    if (!isBinary(c.req.header('content-type'))) return guard(c, next);
    const encoding = c.req.header('content-encoding');
    if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
      throw new ProblemError(415, 'unsupported-media-type', `Content-Encoding ${encoding} is not supported: send uncompressed bytes`);
    }
    return next();
  });

  app.openapi(indexRoute, (c) =>
    c.json(
      {
        name: OPENAPI_CONFIG.info.title,
        description: SERVICE_DESCRIPTION,
        version: OPENAPI_CONFIG.info.version,
        kernel: activeKernel(),
        links: {
          step: '/v1/adam/step',
          algorithms: '/v1/algorithms',
          optimizers: '/v1/optimizers',
          docs: '/docs',
          health: '/healthz',
          openapi_json: '/openapi.json',
          openapi_yaml: '/openapi.yaml',
        },
      },
      200,
    ),
  );
  app.openapi(healthRoute, (c) => c.json({ status: 'ok' as const }, 200));

  // The tree components first: a field that describes itself with `.openapi({ description })` then
  // refers to them (allOf) instead of lending the shared component its own description.
  app.openAPIRegistry.register('TensorTree', TensorTreeSchema);
  app.openAPIRegistry.register('PartialTensorTree', PartialTensorTreeSchema);
  app.route('/', stepRouter);
  app.route('/', familyRouter);
  app.route('/', compareRouter);
  app.route('/', schedulesRouter);
  app.route('/', optimizersRouter);
  app.route('/', docsRouter);

  // Referenced from TensorTree's hand-written oneOf, so no route pulls it in on its own.
  app.openAPIRegistry.register('Tensor', TensorSchema);
  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    description: 'The token returned when the optimizer was created (or by its latest rotation).',
  });
  app.openAPIRegistry.registerComponent('securitySchemes', API_KEY_SCHEME, {
    type: 'http',
    scheme: 'bearer',
    description:
      'A service API key, on servers that have some (the API_KEYS secret): creating and listing hosted optimizers, the stateless step and ' +
      'schedules then need it. Servers without keys leave these operations open. An API key never opens a hosted optimizer: those take its token.',
  });

  app.openapi(openapiJsonRoute, (c) => c.json(openApiDocument(app), 200));
  app.openapi(openapiYamlRoute, (c) => c.body(openApiYaml(app), 200, { 'content-type': 'application/yaml; charset=utf-8' }));

  app.notFound((c) => {
    const path = new URL(c.req.url).pathname;
    const allowed = [...new Set(app.routes.filter((r) => r.method !== 'ALL' && patternOf(r.path).test(path)).map((r) => r.method))];
    if (allowed.length > 0) {
      return problemResponse(
        new ProblemError(405, 'method-not-allowed', `${c.req.method} is not allowed on ${path}; use ${allowed.join(', ')}`, undefined, undefined, {
          allow: allowed.join(', '),
        }),
        path,
      );
    }
    return problemResponse(new ProblemError(404, 'not-found', `no route ${c.req.method} ${path}`), path);
  });

  app.onError((err, c) => {
    const path = new URL(c.req.url).pathname;
    if (err instanceof ProblemError) return problemResponse(err, path);
    if (err instanceof HTTPException) {
      const type = HTTP_PROBLEMS[err.status] ?? 'internal-error';
      if (err.status === 415) {
        // The same shape as the wire layer's 415s: the header named, with its value.
        const contentType = c.req.header('content-type');
        const message = `${contentType ?? '(none)'} is not accepted by ${c.req.method} ${path} (openapi.yaml lists the media types each operation takes)`;
        return problemResponse(new ProblemError(415, type, `Content-Type: ${message}`, [headerError('Content-Type', message, contentType)]), path);
      }
      const detail = err.status === 400 ? 'the request body is not valid JSON' : err.message || `HTTP ${err.status}`;
      return problemResponse(new ProblemError(err.status, type, detail), path);
    }
    console.error('unhandled error', err);
    return problemResponse(new ProblemError(500, 'internal-error', 'internal error'), path);
  });

  return app;
}

export type App = ReturnType<typeof createApp>;

/**
 * The OpenAPI 3.1 document of an app. Every request body is required: routes that take binary
 * bodies declare theirs optional only so that the JSON validator lets other media types through.
 */
export function openApiDocument(app: App) {
  const doc = app.getOpenAPI31Document(OPENAPI_CONFIG);
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const op of Object.values(item as Record<string, { requestBody?: { required?: boolean }; responses?: Record<string, unknown> }>)) {
      if (!op || typeof op !== 'object') continue;
      if (op.requestBody) op.requestBody.required = true;
      // Every /v1 operation counts against a rate-limit bucket (src/lib/rate-limit.ts).
      if (isRateLimited(path) && op.responses) op.responses['429'] = rateLimitedResponse(); // integer keys: listed in status order
    }
  }
  return doc;
}

/** The document as YAML, byte for byte what `npm run openapi` writes to openapi.yaml. */
export function openApiYaml(app: App): string {
  const doc = new Document(openApiDocument(app), { aliasDuplicateObjects: false, customTags: (tags) => [YAML11_EXPONENT_FLOAT, ...tags] });
  // A plain string YAML 1.1 reads as something else (a timestamp such as 2026-11-26T00:00:00Z,
  // yes/no/on/off, 0o17, 1:30) is quoted, so every parser reads the same document.
  visit(doc, {
    Scalar(_, node) {
      if (typeof node.value === 'string' && readsOtherwiseInYaml11(node.value)) node.type = Scalar.QUOTE_DOUBLE;
    },
  });
  return doc.toString({ lineWidth: 0 });
}

function readsOtherwiseInYaml11(text: string): boolean {
  if (text.length > 64 || text === '' || /[\n"'#:{}[\],&*!|>%@`]\s|\s#/.test(text)) return false;
  try {
    return parseYaml(text, { version: '1.1' }) !== text;
  } catch {
    return false;
  }
}

/**
 * Numbers in exponent form written so YAML 1.1 parsers (PyYAML, SnakeYAML in openapi-generator)
 * read them as floats too: YAML 1.1 needs a `.` in the mantissa and a signed exponent, so `1e-8`
 * (a string there) is written `1.0e-8`. YAML 1.2 reads both alike.
 */
const YAML11_EXPONENT_FLOAT = {
  identify: (v: unknown) => typeof v === 'number' && Number.isFinite(v) && String(v).includes('e'),
  default: true,
  tag: 'tag:yaml.org,2002:float',
  test: /^\b$/, // never used to parse: the standard float tags do that
  resolve: (s: string) => Number(s),
  stringify: ({ value }: { value: unknown }) => {
    const [mantissa, exponent] = String(value).split('e') as [string, string];
    return `${mantissa.includes('.') ? mantissa : `${mantissa}.0`}e${/^[+-]/.test(exponent) ? exponent : `+${exponent}`}`;
  },
};
