// Test-side safetensors reader and writer and tensor-tree helpers, written independently of
// src/wire and src/tensors so the API's own codecs are not used to check themselves.

export type Dt = 'F16' | 'BF16' | 'F32' | 'F64';
const SIZE: Record<Dt, number> = { F16: 2, BF16: 2, F32: 4, F64: 8 };

export interface TestTensor {
  name: string;
  dtype: Dt;
  shape: number[];
  data: Uint8Array;
}

/** A safetensors file: header JSON (unpadded, in the given order), then the tensors back to back. */
export function writeSafetensors(tensors: TestTensor[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  return rawSafetensors(JSON.stringify(header), tensors.map((t) => t.data));
}

/** A file from header text and data pieces as given (for malformed files). */
export function rawSafetensors(headerText: string, data: Uint8Array[], claimedLength?: number): Uint8Array {
  const json = new TextEncoder().encode(headerText);
  const total = 8 + json.length + data.reduce((n, d) => n + d.length, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  view.setUint32(0, claimedLength ?? json.length, true);
  view.setUint32(4, 0, true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const d of data) {
    out.set(d, at);
    at += d.length;
  }
  return out;
}

export function readSafetensors(bytes: Uint8Array): { tensors: Map<string, TestTensor>; metadata: Record<string, string> | null; order: string[] } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, any>;
  const dataStart = 8 + n;
  const tensors = new Map<string, TestTensor>();
  let metadata: Record<string, string> | null = null;
  const order: Array<[string, number]> = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = info;
      continue;
    }
    const [s, e] = info.data_offsets as [number, number];
    tensors.set(name, { name, dtype: info.dtype, shape: info.shape, data: bytes.slice(dataStart + s, dataStart + e) });
    order.push([name, s]);
  }
  return { tensors, metadata, order: order.sort((a, b) => a[1] - b[1]).map(([name]) => name) };
}

/** Little-endian bytes of numbers in a dtype (F32 rounds like Math.fround; F16/BF16 values must be exact). */
export function encodeValues(values: number[], dtype: Dt): Uint8Array {
  const out = new Uint8Array(values.length * SIZE[dtype]);
  const view = new DataView(out.buffer);
  values.forEach((x, i) => {
    if (dtype === 'F32') view.setFloat32(i * 4, x, true);
    else if (dtype === 'F64') view.setFloat64(i * 8, x, true);
    else if (dtype === 'BF16') {
      const f = new DataView(new ArrayBuffer(4));
      f.setFloat32(0, x);
      if ((f.getUint32(0) & 0xffff) !== 0) throw new Error(`${x} is not a bfloat16`);
      view.setUint16(i * 2, f.getUint32(0) >>> 16, true);
    } else view.setUint16(i * 2, toHalf(x), true);
  });
  return out;
}

/** float16 bits of x, which must be exactly representable. */
function toHalf(x: number): number {
  for (let h = 0; h < 0x10000; h++) if (Object.is(fromHalf(h), x)) return h;
  throw new Error(`${x} is not a float16`);
}

export function fromHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 31;
  const f = h & 1023;
  if (e === 0) return sign * f * 2 ** -24;
  if (e === 31) return f ? NaN : sign * Infinity;
  return sign * (1 + f / 1024) * 2 ** (e - 15);
}

export function decodeValues(t: TestTensor): number[] {
  const view = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const out: number[] = [];
  for (let i = 0; i < t.data.length / SIZE[t.dtype]; i++) {
    if (t.dtype === 'F32') out.push(view.getFloat32(i * 4, true));
    else if (t.dtype === 'F64') out.push(view.getFloat64(i * 8, true));
    else if (t.dtype === 'BF16') out.push(new DataView(new Uint32Array([view.getUint16(i * 2, true) << 16]).buffer).getFloat32(0, true));
    else out.push(fromHalf(view.getUint16(i * 2, true)));
  }
  return out;
}

/** The tensors of a JSON tree (number, nested array, or object of such), named by dotted path ("" for a bare tensor). */
export function namedTensors(tree: unknown, prefix: string[] = []): Array<{ name: string; shape: number[]; values: number[] }> {
  if (tree !== null && typeof tree === 'object' && !Array.isArray(tree)) {
    return Object.entries(tree as Record<string, unknown>).flatMap(([k, v]) => namedTensors(v, [...prefix, k]));
  }
  const shape: number[] = [];
  for (let v: unknown = tree; Array.isArray(v); v = v[0]) shape.push(v.length);
  const values = (Array.isArray(tree) ? (tree as unknown[]).flat(Infinity) : [tree]) as number[];
  return [{ name: prefix.join('.'), shape, values }];
}

/** Tensors of a tree under a slot prefix (`slot/name`, or `slot` for a bare tensor). */
export function slotTensors(slot: string, tree: unknown, dtype: Dt): TestTensor[] {
  return namedTensors(tree).map((t) => ({ name: t.name === '' ? slot : `${slot}/${t.name}`, dtype, shape: t.shape, data: encodeValues(t.values, dtype) }));
}

/** The JSON tree of a slot read back from a file, shaped like `like`. */
export function treeFromSlot(file: Map<string, TestTensor>, slot: string, like: unknown): unknown {
  const rebuild = (node: unknown, path: string[]): unknown => {
    if (node !== null && typeof node === 'object' && !Array.isArray(node)) {
      return Object.fromEntries(Object.entries(node as Record<string, unknown>).map(([k, v]) => [k, rebuild(v, [...path, k])]));
    }
    const name = path.length === 0 ? slot : `${slot}/${path.join('.')}`;
    const t = file.get(name);
    if (!t) throw new Error(`tensor ${name} missing from the answer`);
    const values = decodeValues(t);
    let i = 0;
    const nest = (n: unknown): unknown => (Array.isArray(n) ? n.map(nest) : values[i++]);
    return nest(node);
  };
  return rebuild(like, []);
}
