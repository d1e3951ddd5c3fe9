// Wires the hosted-optimizer routes to their handlers.

import { createRouter } from '../../lib/router.ts';
import * as h from './optimizers.handlers.ts';
import * as r from './optimizers.routes.ts';

export const optimizersRouter = createRouter()
  .openapi(r.createOptimizerRoute, h.createOptimizer)
  .openapi(r.listOptimizersRoute, h.listOptimizers)
  .openapi(r.getOptimizerRoute, h.getOptimizer)
  .openapi(r.patchOptimizerRoute, h.patchOptimizer)
  .openapi(r.deleteOptimizerRoute, h.deleteOptimizer)
  .openapi(r.stepOptimizerRoute, h.stepOptimizer)
  .openapi(r.getParamsRoute, h.getParams)
  .openapi(r.putParamsRoute, h.putParams)
  .openapi(r.getStateRoute, h.getState)
  .openapi(r.putStateRoute, h.putState)
  .openapi(r.rotateTokenRoute, h.rotateToken)
  .openapi(r.historyRoute, h.getHistory)
  .openapi(r.historyPlotRoute, h.plotHistory);
