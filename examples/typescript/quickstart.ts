// The typed TypeScript client in a few lines: a stateless step, then a hosted optimizer.
//   npx node examples/typescript/quickstart.ts        (Node 22.18+ runs TypeScript directly)
// Server: $ADAM_API, or http://localhost:8787 (`npm run dev`).

import { AdamApiError, bearer, createAdamApiClient, unwrap } from '../../clients/typescript/client.ts';

const api = createAdamApiClient(process.env.ADAM_API ?? 'http://localhost:8787');

// One stateless step, then the next one from the returned state.
const body = { params: [1, -2, 3], grads: [0.1, -0.2, 0.3], hyperparams: { lr: 0.01 }, dtype: 'float64' as const };
const first = await unwrap(api.POST('/v1/adam/step', { body }));
const second = await unwrap(api.POST('/v1/adam/step', { body: { ...body, params: first.params!, state: { step: first.state.step, m: first.state.m!, v: first.state.v! } } }));
console.log('stateless:', second.state.step, second.params);

// A hosted optimizer: the service keeps params and state, you send gradients.
const opt = await unwrap(api.POST('/v1/optimizers', { body: { params: { w: [0, 0], b: 0 }, hyperparams: { lr: 0.1 } } }));
const path = { id: opt.id };
const step = await unwrap(
  api.POST('/v1/optimizers/{id}/step', {
    params: { path, header: { ...bearer(opt.token), 'idempotency-key': 'batch-1' } },
    body: { grads: { w: [0.5, -0.25], b: 0.1 }, loss: 0.75 },
  }),
);
// A 202 (no params) answers only contributions to an accumulated step (`?worker=`); this is a 200.
console.log('hosted:', step.step, 'params' in step ? step.params : undefined);
console.log('params:', (await unwrap(api.GET('/v1/optimizers/{id}/params', { params: { path, header: bearer(opt.token) } }))).params);
await unwrap(api.DELETE('/v1/optimizers/{id}', { params: { path, header: bearer(opt.token) } }));

// Errors are AdamApiError with the problem+json body.
try {
  await unwrap(api.POST('/v1/adam/step', { body: { params: [1], grads: [0.1], hyperparams: { lr: -1 } } }));
} catch (err) {
  if (!(err instanceof AdamApiError)) throw err;
  console.log('error:', err.status, err.problem?.errors?.[0]?.field);
}
