// Byte blobs (tensors, and the tensor layout) stored as SQLite BLOB chunks of at most 1 MiB, so no
// row nears the 2 MB production limit (local workerd accepts ~8 MiB and would not catch it).
// Synchronous: callers wrap writes in `transactionSync` so one step's state commits atomically.

import type { Dtype, FloatArray } from '../optim/adam.ts';

/** Largest BLOB we write; production SQLite-backed Durable Objects reject rows above 2 MB. */
export const CHUNK_BYTES = 1 << 20;

export const TENSOR_SCHEMA = `CREATE TABLE IF NOT EXISTS tensor_chunks (
  tensor TEXT NOT NULL,
  idx INTEGER NOT NULL,
  bytes BLOB NOT NULL,
  PRIMARY KEY (tensor, idx)
)`;

/** Writes `bytes` as the chunks of blob `name`, replacing what was there (surplus old chunks too). */
export function writeBlob(sql: SqlStorage, name: string, bytes: Uint8Array): void {
  const count = Math.max(1, Math.ceil(bytes.length / CHUNK_BYTES));
  for (let idx = 0; idx < count; idx++) {
    // slice() copies the chunk into its own buffer: a bound view would not be trimmed to the view.
    const chunk = bytes.slice(idx * CHUNK_BYTES, Math.min((idx + 1) * CHUNK_BYTES, bytes.length));
    sql.exec('INSERT OR REPLACE INTO tensor_chunks (tensor, idx, bytes) VALUES (?, ?, ?)', name, idx, chunk.buffer);
  }
  sql.exec('DELETE FROM tensor_chunks WHERE tensor = ? AND idx >= ?', name, count);
}

/** Reads blob `name` back into `out` (whose length must be the stored length), or a new array. */
export function readBlob(sql: SqlStorage, name: string, out?: Uint8Array): Uint8Array {
  const chunks = sql.exec<{ bytes: ArrayBuffer }>('SELECT bytes FROM tensor_chunks WHERE tensor = ? ORDER BY idx', name).toArray();
  const total = chunks.reduce((n, c) => n + c.bytes.byteLength, 0);
  if (out && out.length !== total) throw new Error(`stored ${name} has ${total} bytes, expected ${out.length}`);
  const bytes = out ?? new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    bytes.set(new Uint8Array(c.bytes), off);
    off += c.bytes.byteLength;
  }
  return bytes;
}

export function writeTensor(sql: SqlStorage, name: string, data: FloatArray): void {
  writeBlob(sql, name, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
}

/** Reads a tensor of `length` elements into a new array of the dtype's type. */
export function readTensor(sql: SqlStorage, name: string, dtype: Dtype, length: number): FloatArray {
  const out = dtype === 'float32' ? new Float32Array(length) : new Float64Array(length);
  readBlob(sql, name, new Uint8Array(out.buffer));
  return out;
}

export function deleteBlob(sql: SqlStorage, name: string): void {
  sql.exec('DELETE FROM tensor_chunks WHERE tensor = ?', name);
}
