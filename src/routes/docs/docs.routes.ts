// Routes of the interactive API reference: a Swagger UI page whose every asset the Worker serves.

import { createRoute, z } from '@hono/zod-openapi';
import { problem } from '../../schemas/common.ts';
import { queryText, strictQuery } from '../../schemas/query.ts';

const text = (mediaType: string, description: string) => ({ description, content: { [mediaType]: { schema: z.string() } } });

export const docsPageRoute = createRoute({
  method: 'get',
  path: '/docs',
  operationId: 'docsPage',
  tags: ['Service'],
  summary: 'Interactive API reference (Swagger UI), served without any CDN',
  responses: { 200: text('text/html', 'The docs page. Its script and stylesheet come from /docs/assets/*, nothing from other hosts.') },
});

export const docsAssetRoute = createRoute({
  method: 'get',
  path: '/docs/assets/{file}',
  operationId: 'docsAsset',
  tags: ['Service'],
  summary: 'Script and stylesheet of the docs page',
  request: {
    params: z.object({
      file: z
        .enum(['swagger-ui.css', 'swagger-ui-bundle.js', 'init.js'])
        .openapi({ param: { name: 'file', in: 'path' }, description: 'Asset name.' }),
    }),
    query: strictQuery({ v: queryText({ description: 'Cache buster: the swagger-ui-dist version the page links (any text; ignored).' }) }),
  },
  responses: {
    200: {
      description: 'The asset (JavaScript or CSS).',
      content: { 'text/javascript': { schema: z.string() }, 'text/css': { schema: z.string() } },
    },
    422: problem('Unknown asset name, or a query parameter other than `v`.'),
  },
});
