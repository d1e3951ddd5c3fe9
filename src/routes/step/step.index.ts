// POST /v1/adam/step: Adam's stateless step, served by the same handler as every optimizer's
// (src/routes/family) in Adam's JSON dialect, which names the state m, v and v_max as it always
// has; safetensors files use torch's exp_avg, exp_avg_sq and max_exp_avg_sq, as for /v1/adamw/step.

import { createRouter } from '../../lib/router.ts';
import { adam } from '../../optim/adamw/index.ts';
import type { JsonDialect } from '../../schemas/family.ts';
import { familyStepHandler } from '../family/family.handlers.ts';
import { familyStepRoute } from '../family/family.routes.ts';

export const ADAM_JSON_DIALECT: JsonDialect = {
  key: 'adam-route',
  slotNames: { exp_avg: 'm', exp_avg_sq: 'v', max_exp_avg_sq: 'v_max' },
  stepRequest: 'StepRequest',
  stepResponse: 'StepResponse',
};

export const stepRouter = createRouter().openapi(familyStepRoute(adam, ADAM_JSON_DIALECT), familyStepHandler(adam, ADAM_JSON_DIALECT) as never);
