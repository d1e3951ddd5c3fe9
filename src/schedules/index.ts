// Public API of the learning-rate schedules: functions of the step, torch 1.13's numbers (its recursions replayed where torch recurses).

// Nothing in this folder imports Hono, zod or cloudflare:*; the API routes and the Durable Object share it.
export { bisectRight } from './bisect.ts';
export { allSpecIssues, ScheduleSpecError, specIssues, type SpecIssue } from './checks.ts';
export { compileSchedule, evaluateSchedule } from './compile.ts';
export { constantSchedule } from './constant.ts';
export { cosineSchedule } from './cosine.ts';
export { cyclicSchedule } from './cyclic.ts';
export { exponentialSchedule } from './exponential.ts';
export { inverseSqrtSchedule } from './inverse-sqrt.ts';
export { CORRECTLY_ROUNDED, RUNTIME_LIBM, cos, pow, type Libm } from './libm.ts';
export { linearSchedule } from './linear.ts';
export { oneCycleSchedule } from './one-cycle.ts';
export { plateauInit, plateauTrajectory, plateauUpdate, type PlateauState } from './plateau.ts';
export { polynomialSchedule } from './polynomial.ts';
export { CHECKPOINT_STRIDE, COS_WEIGHT, POW_WEIGHT, ReplayBudget, ReplayLimitError, recurrence, type RecurrenceOptions } from './recurrence.ts';
export { sequentialSchedule } from './sequential.ts';
export { multistepSchedule, stepSchedule } from './step.ts';
export * from './types.ts';
export { warmRestartsSchedule } from './warm-restarts.ts';
export { warmupCosineSchedule, warmupLinearSchedule } from './warmup.ts';
