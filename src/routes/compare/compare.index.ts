// Wires POST /v1/compare to its handler.

import { createRouter } from '../../lib/router.ts';
import { compareHandler } from './compare.handlers.ts';
import { compareRoute } from './compare.routes.ts';

export const compareRouter = createRouter().openapi(compareRoute, compareHandler as never);
