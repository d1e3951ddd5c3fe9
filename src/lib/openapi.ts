// The OpenAPI document's top-level fields, shared by the running app and scripts/gen-openapi.ts.

import type { OpenAPIHono } from '@hono/zod-openapi';

type DocumentConfig = Parameters<OpenAPIHono['getOpenAPI31Document']>[0];

export const SERVICE_DESCRIPTION =
  'Adam over HTTP, numerically faithful to PyTorch 1.13. Send parameters, gradients and optimizer state; ' +
  'get back exactly what torch.optim.Adam / AdamW would compute. Tensors travel as JSON, as raw little-endian bytes ' +
  '(`application/octet-stream`, in an optimizer\'s `layout` order) or as safetensors files (`application/vnd.safetensors`); ' +
  'each operation lists the media types it takes and answers in, chosen by `Accept` (406 when none fits). ' +
  'Errors are RFC 9457 `application/problem+json`; besides the statuses listed per operation, an unknown path answers 404 ' +
  'and another method on a known path 405 (with `Allow`). Bodies must be uncompressed, JSON in UTF-8 (415 otherwise). ' +
  'Query strings follow one rule: each parameter at most once, integers in decimal digits, other numbers as JSON writes them, ' +
  'and a parameter an operation does not list is a 422 naming it.';

export const OPENAPI_CONFIG: DocumentConfig = {
  openapi: '3.1.0',
  info: {
    title: 'adam-api',
    version: '0.1.0',
    description: SERVICE_DESCRIPTION,
    license: { name: 'MIT', url: 'https://opensource.org/license/mit' },
  },
  servers: [{ url: 'http://localhost:8787', description: 'Local `npm run dev`' }],
  // Public by default; hosted-optimizer operations require their bearer token (bearerAuth), and the
  // service operations an API key when the server has some (apiKey, src/lib/access.ts).
  security: [],
  tags: [
    { name: 'Service', description: 'Service description, health and this document.' },
    { name: 'Stateless step', description: 'Adam steps where the client keeps the optimizer state.' },
    { name: 'Schedules', description: 'Learning-rate schedules with PyTorch\'s numbers: evaluated, plotted, and applied inside steps.' },
    { name: 'Compare', description: 'Optimizers run side by side on built-in test functions: loss curves as JSON or an SVG chart.' },
    { name: 'Hosted optimizers', description: 'Optimizers whose state lives in a Durable Object; clients send only gradients.' },
  ],
};
