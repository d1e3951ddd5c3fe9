// Routes that describe the service itself: index, health check and the OpenAPI document.

import { createRoute, z } from '@hono/zod-openapi';

export const ServiceInfoSchema = z
  .object({
    name: z.string().openapi({ description: 'Service name.', example: 'adam-api' }),
    description: z.string().openapi({ description: 'What the service does.' }),
    version: z.string().openapi({ description: 'API version (that of openapi.yaml).' }),
    kernel: z.string().openapi({ description: 'The Adam kernel steps run on: `wasm-simd128` (WebAssembly SIMD) or `js`; both are bit-identical.' }),
    links: z.record(z.string(), z.string()).openapi({ description: 'Relative links to the main resources.' }),
  })
  .strict()
  .openapi('ServiceInfo', { description: 'Service description with links.' });

export const indexRoute = createRoute({
  method: 'get',
  path: '/',
  operationId: 'serviceInfo',
  tags: ['Service'],
  summary: 'What this service is, with links',
  responses: { 200: { description: 'Service description.', content: { 'application/json': { schema: ServiceInfoSchema } } } },
});

export const healthRoute = createRoute({
  method: 'get',
  path: '/healthz',
  operationId: 'health',
  tags: ['Service'],
  summary: 'Liveness check',
  responses: {
    200: {
      description: 'The Worker is up.',
      content: { 'application/json': { schema: z
            .object({ status: z.literal('ok').openapi({ description: 'Always `ok` when the Worker answers.' }) })
            .strict()
            .openapi('Health', { description: 'Liveness.' }) } },
    },
  },
});

export const openapiJsonRoute = createRoute({
  method: 'get',
  path: '/openapi.json',
  operationId: 'openapiJson',
  tags: ['Service'],
  summary: 'This OpenAPI 3.1 document as JSON',
  responses: { 200: { description: 'The OpenAPI document.', content: { 'application/json': { schema: z.record(z.string(), z.unknown()) } } } },
});

export const openapiYamlRoute = createRoute({
  method: 'get',
  path: '/openapi.yaml',
  operationId: 'openapiYaml',
  tags: ['Service'],
  summary: 'This OpenAPI 3.1 document as YAML (the committed openapi.yaml)',
  responses: { 200: { description: 'The OpenAPI document.', content: { 'application/yaml': { schema: z.string() } } } },
});
