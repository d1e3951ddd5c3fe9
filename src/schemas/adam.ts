// The step count as torch's Adam keeps it (a float32 tensor), shared by the hosted-optimizer schemas.
// Adam's stateless step is described from its optimizer definition (src/schemas/family.ts).

import { z } from '@hono/zod-openapi';
import { MAX_STEP } from '../optim/adam.ts';

export const StepCountSchema = z
  .number()
  .int()
  .min(0)
  .max(MAX_STEP)
  .openapi({ description: `Completed optimizer steps (torch \`state["step"]\`). torch keeps it in a float32, so it saturates at 2^24 = ${MAX_STEP}.` });
