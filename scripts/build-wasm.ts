// `npm run build:wasm`: assembles src/optim/wasm/adam.wat into src/optim/wasm/adam.wasm with wabt.
// `npm run build:wasm -- --check`: assembles in memory and exits 1 if the committed adam.wasm differs.
//
// The binary ends with a custom section "adam-api:wat-sha256" holding the hex SHA-256 of the .wat
// it was built from, so the drift test (test/wasm-drift.test.ts) can check inside workerd, where
// wabt cannot run (it compiles its own WebAssembly at runtime, which workerd blocks), that the
// committed binary belongs to the current source. This script's --check compares every byte.

import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import wabtInit from 'wabt';

export const WAT_PATH = join(import.meta.dirname, '..', 'src', 'optim', 'wasm', 'adam.wat');
export const WASM_PATH = join(import.meta.dirname, '..', 'src', 'optim', 'wasm', 'adam.wasm');
export const HASH_SECTION = 'adam-api:wat-sha256';

function leb128(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

/** A custom section (id 0): name and payload, each length-prefixed as the binary format says. */
function customSection(name: string, payload: Uint8Array): Uint8Array {
  const nameBytes = new TextEncoder().encode(name);
  const body = [...leb128(nameBytes.length), ...nameBytes, ...payload];
  return Uint8Array.from([0, ...leb128(body.length), ...body]);
}

/**
 * The module bytes for a .wat source: wabt's binary (SIMD and relaxed SIMD on, nothing else) plus
 * the hash section. wabt 1.0.39 assembles relaxed SIMD behind its relaxed_simd feature flag.
 */
export async function assemble(watText: string): Promise<Uint8Array> {
  const wabt = await wabtInit();
  let mod: ReturnType<typeof wabt.parseWat>;
  try {
    mod = wabt.parseWat('adam.wat', watText, { simd: true, relaxed_simd: true });
  } catch (e) {
    // Rethrown from here: Node would otherwise print wabt's one-line minified source.
    throw new Error((e as Error).message);
  }
  try {
    mod.validate();
    const { buffer } = mod.toBinary({ canonicalize_lebs: true, write_debug_names: false });
    const hash = createHash('sha256').update(watText, 'utf8').digest('hex');
    const section = customSection(HASH_SECTION, new TextEncoder().encode(hash));
    const out = new Uint8Array(buffer.length + section.length);
    out.set(buffer, 0);
    out.set(section, buffer.length);
    return out;
  } finally {
    mod.destroy();
  }
}

async function main() {
  const bytes = await assemble(readFileSync(WAT_PATH, 'utf8'));
  if (!WebAssembly.validate(bytes)) throw new Error('assembled module does not validate');
  if (process.argv.includes('--check')) {
    const committed = readFileSync(WASM_PATH);
    if (Buffer.compare(committed, Buffer.from(bytes)) !== 0) {
      console.error(`${WASM_PATH} is stale: run npm run build:wasm`);
      process.exit(1);
    }
    console.log(`${WASM_PATH} matches adam.wat (${bytes.length} bytes)`);
    return;
  }
  writeFileSync(WASM_PATH, bytes);
  console.log(`wrote ${WASM_PATH} (${bytes.length} bytes)`);
}

if (process.argv[1] === import.meta.filename) await main();
