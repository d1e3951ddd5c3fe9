// Typed arrays stored as SQLite BLOB chunks of at most 1 MiB, so no row nears the 2 MB production
// limit (local workerd accepts ~8 MiB and would not catch it). Synchronous: callers wrap writes in
// `transactionSync` so one step's state is committed atomically.

import type { Dtype, FloatArray } from '../optim/adam.ts';

/** Largest BLOB we write; production SQLite-backed Durable Objects reject rows above 2 MB. */
export const CHUNK_BYTES = 1 << 20;

export const TENSOR_SCHEMA = `CREATE TABLE IF NOT EXISTS tensor_chunks (
  tensor TEXT NOT NULL,
  idx INTEGER NOT NULL,
  bytes BLOB NOT NULL,
  PRIMARY KEY (tensor, idx)
)`;

/** Writes `data` as chunks of `tensor`, replacing what was there (including surplus old chunks). */
export function writeTensor(sql: SqlStorage, tensor: string, data: FloatArray): void {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const count = Math.max(1, Math.ceil(bytes.length / CHUNK_BYTES));
  for (let idx = 0; idx < count; idx++) {
    // slice() copies the chunk into its own buffer: a bound view would not be trimmed to the view.
    const chunk = bytes.slice(idx * CHUNK_BYTES, Math.min((idx + 1) * CHUNK_BYTES, bytes.length));
    sql.exec('INSERT OR REPLACE INTO tensor_chunks (tensor, idx, bytes) VALUES (?, ?, ?)', tensor, idx, chunk.buffer);
  }
  sql.exec('DELETE FROM tensor_chunks WHERE tensor = ? AND idx >= ?', tensor, count);
}

/** Reads a tensor of `length` elements back into a new array of the dtype's type. */
export function readTensor(sql: SqlStorage, tensor: string, dtype: Dtype, length: number): FloatArray {
  const out = dtype === 'float32' ? new Float32Array(length) : new Float64Array(length);
  const bytes = new Uint8Array(out.buffer);
  let off = 0;
  for (const row of sql.exec<{ bytes: ArrayBuffer }>('SELECT bytes FROM tensor_chunks WHERE tensor = ? ORDER BY idx', tensor)) {
    const chunk = new Uint8Array(row.bytes);
    if (off + chunk.length > bytes.length) throw new Error(`stored tensor ${tensor} is longer than ${length} elements`);
    bytes.set(chunk, off);
    off += chunk.length;
  }
  if (off !== bytes.length) throw new Error(`stored tensor ${tensor} has ${off} bytes, expected ${bytes.length}`);
  return out;
}

/** Removes a tensor's chunks. */
export function deleteTensor(sql: SqlStorage, tensor: string): void {
  sql.exec('DELETE FROM tensor_chunks WHERE tensor = ?', tensor);
}
