// Learning-rate schedule routes (evaluate, plot). Filled in by the schedules work.

import { createRouter } from '../../lib/router.ts';

export const schedulesRouter = createRouter();
