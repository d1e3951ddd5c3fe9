// Stubs of the Durable Objects by name, for the Worker and for the objects themselves. Type-only
// imports: importable from Node (scripts/gen-openapi.ts), which cannot load cloudflare:workers.

import type { KeyRegistry } from './key-registry.ts';

/** The registry of the service API key whose SHA-256 is `owner`. */
export function registryOf(env: Env, owner: string): DurableObjectStub<KeyRegistry> {
  return env.KEY_REGISTRY.get(env.KEY_REGISTRY.idFromName(owner));
}
