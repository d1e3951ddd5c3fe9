// Worker entry: the Hono app handles every request; Durable Object classes are exported by name.
// The Adam step runs on the WebAssembly SIMD kernel (bit-identical to the JS one), registered here
// because only the Worker can import a precompiled .wasm module (workerd forbids compiling bytes).

import { createApp } from './app.ts';
import { useWasmKernel } from './optim/adam.ts';
import adamWasm from './optim/wasm/adam.wasm';
import { createWasmAdam } from './optim/wasm/kernel.ts';

useWasmKernel(createWasmAdam(adamWasm));

const app = createApp();

export default app;
export { HostedOptimizer } from './durable-objects/hosted-optimizer.ts';
export { KeyRegistry } from './durable-objects/key-registry.ts';
