// Unit tests of the binary wire: exact widening (checked against the IEEE formulas written out
// independently), bodies split at every possible byte boundary, safetensors headers, negotiation.

import { describe, expect, it } from 'vitest';
import { elementSink, parseDtypeName, type WireDtype } from './dtypes.ts';
import { acceptFormat, bodyFormat } from './media.ts';
import { WireError, encodeHeader, headerLength, parseHeader } from './safetensors.ts';
import { ByteReader, StreamLengthError, pullSource } from './stream.ts';

/** float16 bits → value by the IEEE 754 binary16 definition. */
function half(h: number): number {
  const s = h >> 15 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** bfloat16 bits → value: sign, 8-bit exponent, 7-bit fraction. */
function bhalf(h: number): number {
  const s = h >> 15 ? -1 : 1;
  const e = (h >> 7) & 0xff;
  const f = h & 0x7f;
  if (e === 0) return s * 2 ** -126 * (f / 128);
  if (e === 255) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 127) * (1 + f / 128);
}

const u16le = (values: number[]) => new Uint8Array(Uint16Array.from(values).buffer);

describe('exact widening', () => {
  const all = Array.from({ length: 65536 }, (_, i) => i);
  for (const [src, ref] of [['F16', half], ['BF16', bhalf]] as const) {
    for (const Out of [Float32Array, Float64Array]) {
      it(`every ${src} bit pattern into ${Out.name}`, () => {
        const out = new Out(all.length);
        const sink = elementSink(src, out, 0, all.length);
        sink.write(u16le(all));
        expect(sink.done()).toBe(true);
        for (const h of all) {
          const want = ref(h);
          if (!Object.is(out[h], want) && !(Number.isNaN(want) && Number.isNaN(out[h]!))) expect.fail(`${src} 0x${h.toString(16)}: ${out[h]} vs ${want}`);
        }
      });
    }
  }

  it('writes the same values whatever the piece boundaries (every split of a widening and a same-type body)', () => {
    const values = [1.5, -2.25, 3.125e-3, 65504, -0, 7];
    const cases: Array<[WireDtype, Uint8Array]> = [
      ['F16', u16le([0x3e00, 0xc080, 0x1a66, 0x7bff, 0x8000, 0x4700])],
      ['F32', new Uint8Array(Float32Array.from(values).buffer)],
      ['F64', new Uint8Array(Float64Array.from(values).buffer)],
    ];
    for (const [src, bytes] of cases) {
      const whole = new Float64Array(values.length);
      elementSink(src, whole, 0, values.length).write(bytes);
      for (let a = 0; a <= bytes.length; a++) {
        for (let b = a; b <= bytes.length; b++) {
          const out = new Float64Array(values.length + 2);
          const sink = elementSink(src, out, 1, values.length);
          for (const piece of [bytes.subarray(0, a), bytes.subarray(a, b), bytes.subarray(b)]) sink.write(piece);
          expect(sink.done()).toBe(true);
          expect([...out.subarray(1, -1)]).toEqual([...whole]);
          expect([out[0], out.at(-1)]).toEqual([0, 0]);
        }
      }
    }
  });

  it('names dtypes as numpy and safetensors do', () => {
    expect(['bfloat16', 'float16', 'float32', 'float64', 'F32', 'bf16'].map(parseDtypeName)).toEqual(['BF16', 'F16', 'F32', 'F64', 'F32', 'BF16']);
    expect(parseDtypeName('int8')).toBeNull();
  });
});

describe('ByteReader', () => {
  const streamOf = (pieces: number[][]) =>
    new ReadableStream<Uint8Array>({
      start(c) {
        for (const p of pieces) c.enqueue(Uint8Array.from(p));
        c.close();
      },
    });

  it('reads exact amounts across pieces and notices short and long bodies', async () => {
    const r = new ByteReader(streamOf([[1, 2], [], [3, 4, 5], [6]]));
    expect([...(await r.readExactly(3))]).toEqual([1, 2, 3]);
    const seen: number[] = [];
    await r.read(2, (p) => seen.push(...p));
    expect(seen).toEqual([4, 5]);
    await expect(r.expectEnd()).rejects.toBeInstanceOf(StreamLengthError);
    const short = new ByteReader(streamOf([[1, 2]]));
    await expect(short.readExactly(3)).rejects.toMatchObject({ kind: 'short' });
    const capped = new ByteReader(streamOf([[1, 2], [3, 4]]));
    await expect(capped.readToEnd(3, () => {})).rejects.toMatchObject({ kind: 'long' });
  });

  it('turns a failing stream into a short body, not a crash', async () => {
    const broken = new ReadableStream<Uint8Array>({
      pull(c) {
        c.error(new Error('connection reset'));
      },
    });
    await expect(new ByteReader(broken).readExactly(4)).rejects.toMatchObject({ kind: 'short' });
  });
});

describe('safetensors headers', () => {
  it('encode → parse gives back the tensors, in order, with an 8-byte aligned data section', () => {
    const specs = [
      { name: 'b', dtype: 'F32' as const, shape: [2, 3] },
      { name: 'a', dtype: 'BF16' as const, shape: [] },
      { name: 'empty', dtype: 'F64' as const, shape: [0, 4] },
    ];
    const { header, dataLength } = encodeHeader(specs, { step: '3' });
    expect(header.length % 8).toBe(0);
    expect(dataLength).toBe(26);
    const n = headerLength(header.subarray(0, 8), header.length + dataLength);
    const parsed = parseHeader(header.subarray(8, 8 + n), dataLength);
    expect(parsed.metadata).toEqual({ step: '3' });
    expect(parsed.entries.map((e) => [e.name, e.start, e.end])).toEqual([['b', 0, 24], ['a', 24, 26], ['empty', 26, 26]]);
  });

  it('finds duplicated names JSON.parse would hide, even with escapes and nesting', () => {
    const text = '{"a\\"b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "__metadata__": {"a\\"b": "x"}, "a\\u0022b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}';
    expect(() => parseHeader(new TextEncoder().encode(text), 8)).toThrow(/appears twice/);
  });

  it('checks every number before using it', () => {
    const header = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));
    const bad = [
      { x: { dtype: 'F32', shape: [2 ** 53], data_offsets: [0, 4] } },
      { x: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } },
      { x: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } },
      { x: { dtype: 'F32', shape: [1], data_offsets: [0, 4, 8] } },
      { x: { dtype: 'F32', shape: [1] } },
    ];
    for (const o of bad) expect(() => parseHeader(header(o), 4), JSON.stringify(o)).toThrow(WireError);
    const eight = new Uint8Array(8);
    new DataView(eight.buffer).setUint32(4, 1, true); // 2^32 bytes
    expect(() => headerLength(eight, null)).toThrow(/at most/);
  });
});

describe('negotiation', () => {
  it('reads Content-Type and its dtype parameter', () => {
    expect(bodyFormat('application/octet-stream; dtype=bfloat16', ['raw'])).toEqual({ format: 'raw', dtype: 'BF16' });
    expect(bodyFormat('application/json; charset=utf-8', ['json'])).toEqual({ format: 'json', dtype: null });
    expect(() => bodyFormat('application/vnd.safetensors; dtype=F32', ['safetensors'])).toThrow(/octet-stream/);
    expect(() => bodyFormat(undefined, ['json'])).toThrow(/not accepted/);
  });

  it('honours q-values, wildcards and the default', () => {
    const all = ['json', 'raw', 'safetensors'] as const;
    expect(acceptFormat(undefined, all, 'raw')).toBe('raw');
    expect(acceptFormat('*/*', all, 'raw')).toBe('raw');
    expect(acceptFormat('application/json;q=0.4, application/vnd.safetensors;q=0.8', all, 'raw')).toBe('safetensors');
    expect(acceptFormat('application/octet-stream;q=0, */*;q=0.1', all, 'raw')).toBe('json');
    expect(() => acceptFormat('image/png', all, 'raw')).toThrow(/allows none/);
  });
});

describe('pullSource: a stream handed on in whole pieces', () => {
  /** A stream of `chunks` (each delivered after `delayMs`). */
  const streamOf = (chunks: Uint8Array[], delayMs = 0) =>
    new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
        const next = chunks.shift();
        if (next) controller.enqueue(next);
        else controller.close();
      },
    });
  const bytes = (from: number, n: number) => Uint8Array.from({ length: n }, (_, i) => (from + i) % 251);

  it('joins small frames into pieces of the given size (the last shorter), each its own buffer', async () => {
    const frames = Array.from({ length: 10 }, (_, k) => bytes(k * 7, 7)); // 70 bytes in frames of 7
    const pull = pullSource(streamOf(frames), 16);
    const pieces: Uint8Array[] = [];
    for (let p = await pull(); p !== null; p = await pull()) pieces.push(p);
    expect(pieces.map((p) => p.length)).toEqual([16, 16, 16, 16, 6]);
    for (const p of pieces) expect(p.byteOffset === 0 && p.buffer.byteLength === p.length).toBe(true);
    expect(Array.from(new Uint8Array(pieces.flatMap((p) => Array.from(p))))).toEqual(Array.from(bytes(0, 70)));
    expect(await pull()).toBeNull();
  });

  it('hands on a begun piece when the next frame is slow, and loses no byte', async () => {
    const frames = [bytes(0, 5), bytes(5, 5), bytes(10, 5)];
    const pull = pullSource(streamOf(frames, 60), 1024, 20);
    const pieces: number[][] = [];
    for (let p = await pull(); p !== null; p = await pull()) pieces.push(Array.from(p));
    expect(pieces.length).toBeGreaterThan(1);
    expect(pieces.flat()).toEqual(Array.from(bytes(0, 15)));
  });
});
