// Writes openapi.yaml from the zod route definitions (`npm run openapi`). Runs on Node 24, which
// strips TypeScript types natively; src/app.ts is importable because it has no cloudflare:* imports.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createApp, openApiYaml } from '../src/app.ts';

const out = join(import.meta.dirname, '..', 'openapi.yaml');
writeFileSync(out, openApiYaml(createApp()));
console.log(`wrote ${out}`);
