// Wires every registry optimizer's stateless step (Adam keeps /v1/adam/step, src/routes/step) and
// the catalogue.

import { createRouter } from '../../lib/router.ts';
import { OPTIMIZERS } from '../../optim/registry.ts';
import { familyStepHandler, getAlgorithmHandler, listAlgorithmsHandler } from './family.handlers.ts';
import { algorithmRoute, algorithmsRoute, familyStepRoute } from './family.routes.ts';

export const familyRouter = createRouter();
familyRouter.openapi(algorithmsRoute, listAlgorithmsHandler as never);
familyRouter.openapi(algorithmRoute, getAlgorithmHandler as never);
for (const def of OPTIMIZERS) {
  if (def.name === 'adam') continue;
  familyRouter.openapi(familyStepRoute(def), familyStepHandler(def) as never);
}
