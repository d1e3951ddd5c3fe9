// Serves the docs page: Swagger UI (bundled from swagger-ui-dist at install time) reading
// /openapi.json from the same origin. A strict Content-Security-Policy keeps every request local.

import { createRouter } from '../../lib/router.ts';
import { SWAGGER_UI_CSS, SWAGGER_UI_JS, SWAGGER_UI_VERSION } from '../../docs/swagger-ui-assets.generated.ts';
import { docsAssetRoute, docsPageRoute } from './docs.routes.ts';

const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'", // Swagger UI sets inline style attributes
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self' data:",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'self'",
].join('; ');

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>adam-api: API reference</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css?v=${SWAGGER_UI_VERSION}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js?v=${SWAGGER_UI_VERSION}"></script>
<script src="/docs/assets/init.js?v=${SWAGGER_UI_VERSION}"></script>
</body>
</html>
`;

// "Try it out" must call the server that served the page, whatever port or host it runs on.
const INIT = `(function () {
  fetch('/openapi.json')
    .then(function (res) { return res.json(); })
    .then(function (spec) {
      spec.servers = [{ url: window.location.origin, description: 'This server' }];
      window.ui = SwaggerUIBundle({
        spec: spec,
        dom_id: '#swagger-ui',
        deepLinking: true,
        validatorUrl: null,
        displayRequestDuration: true,
        defaultModelsExpandDepth: 0,
        tryItOutEnabled: false,
      });
    });
})();
`;

const ASSETS = {
  'swagger-ui.css': { body: SWAGGER_UI_CSS, type: 'text/css; charset=utf-8' },
  'swagger-ui-bundle.js': { body: SWAGGER_UI_JS, type: 'text/javascript; charset=utf-8' },
  'init.js': { body: INIT, type: 'text/javascript; charset=utf-8' },
} as const;

export const docsRouter = createRouter()
  .openapi(docsPageRoute, (c) => c.html(PAGE, 200, { 'content-security-policy': CSP }))
  .openapi(docsAssetRoute, (c) => {
    const asset = ASSETS[c.req.valid('param').file];
    return c.body(asset.body, 200, { 'content-type': asset.type, 'cache-control': 'public, max-age=3600' }) as never;
  });
