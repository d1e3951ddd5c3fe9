// Wires the stateless step route to its handler.

import { createRouter } from '../../lib/router.ts';
import { adamStepHandler } from './step.handlers.ts';
import { adamStepRoute } from './step.routes.ts';

export const stepRouter = createRouter().openapi(adamStepRoute, adamStepHandler);
