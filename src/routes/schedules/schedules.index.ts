// Wires the learning-rate schedule routes (evaluate and plot, as JSON bodies or query strings) to their handlers.

import { createRouter } from '../../lib/router.ts';
import { evaluateHandler, evaluateQueryHandler, plotHandler, plotQueryHandler } from './schedules.handlers.ts';
import { evaluateQueryRoute, evaluateRoute, plotQueryRoute, plotRoute } from './schedules.routes.ts';

export const schedulesRouter = createRouter()
  .openapi(evaluateRoute, evaluateHandler)
  .openapi(plotRoute, plotHandler)
  .openapi(evaluateQueryRoute, evaluateQueryHandler)
  .openapi(plotQueryRoute, plotQueryHandler);
