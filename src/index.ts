// Worker entry: the Hono app handles every request; Durable Object classes are exported by name.

import { createApp } from './app.ts';

const app = createApp();

export default app;
export { HostedOptimizer } from './durable-objects/hosted-optimizer.ts';
