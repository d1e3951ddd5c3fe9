// The committed src/optim/wasm/adam.wasm must be what `npm run build:wasm` assembles from adam.wat.
// wabt cannot run in workerd (it compiles its own WebAssembly from bytes, which workerd blocks), so
// this test checks the hash of adam.wat that the build script writes into the binary's custom
// section "adam-api:wat-sha256": editing adam.wat without rebuilding fails here. The byte-for-byte
// comparison runs in Node: `npm run build:wasm -- --check`. It also pins where relaxed SIMD may
// appear: only the kernels kernel.ts selects after its fused-multiply-add probe, and the probe.

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

  it('exports the memory, the exact and relaxed kernels, the probe and the finiteness scans, and imports nothing', () => {
    expect(WebAssembly.Module.imports(adamWasm)).toEqual([]);
    expect(WebAssembly.Module.exports(adamWasm).map((e) => `${e.kind} ${e.name}`).sort()).toEqual([
      'function adam_f32',
      'function adam_f32_fma',
      'function adam_f64',
      'function adam_f64_fma',
      'function first_nonfinite_f32',
      'function first_nonfinite_f64',
      'function fma_probe',
      'memory memory',
    ]);
  });

  it('uses relaxed SIMD only in the relaxed kernels and the probe (the exact kernels are deterministic)', () => {
    const code = wat.replace(/;;.*$/gm, '');
    const funcs = code.split(/\n\s*\(func /).slice(1);
    const relaxed = funcs.filter((f) => /\.relaxed_/.test(f)).map((f) => /^\(export "(\w+)"\)|^\$(\w+)/.exec(f)?.slice(1).find(Boolean));
    expect(relaxed.sort()).toEqual(['adam_f32_fma', 'adam_f64_fma', 'fma_probe']);
    expect(code.match(/\.relaxed_\w+/g)?.filter((op) => op !== '.relaxed_madd')).toEqual([]);
  });
});
