// The committed src/optim/wasm/adam.wasm must be what `npm run build:wasm` assembles from adam.wat.
// wabt cannot run in workerd (it compiles its own WebAssembly from bytes, which workerd blocks), so
// this test checks the hash of adam.wat that the build script writes into the binary's custom
// section "adam-api:wat-sha256": editing adam.wat without rebuilding fails here. The byte-for-byte
// comparison runs in Node: `npm run build:wasm -- --check`.

import { describe, expect, it } from 'vitest';
import adamWasm from '../src/optim/wasm/adam.wasm';
import wat from '../src/optim/wasm/adam.wat?raw';

const HASH_SECTION = 'adam-api:wat-sha256';

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

describe('adam.wasm is built from adam.wat', () => {
  it('carries the SHA-256 of the current adam.wat', async () => {
    const sections = WebAssembly.Module.customSections(adamWasm, HASH_SECTION);
    expect(sections.length, `custom section ${HASH_SECTION}`).toBe(1);
    const recorded = new TextDecoder().decode(sections[0]);
    expect(recorded, 'adam.wat changed since adam.wasm was built: run npm run build:wasm').toBe(await sha256Hex(wat));
  });

  it('exports the memory and the two kernels, and imports nothing', () => {
    expect(WebAssembly.Module.imports(adamWasm)).toEqual([]);
    expect(WebAssembly.Module.exports(adamWasm).map((e) => `${e.kind} ${e.name}`).sort()).toEqual(['function adam_f32', 'function adam_f64', 'memory memory']);
  });

  it('uses no relaxed-SIMD instruction (deterministic results)', () => {
    expect(wat).not.toMatch(/\.relaxed_/);
  });
});
