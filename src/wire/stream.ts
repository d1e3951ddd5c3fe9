// Reading byte streams in exact amounts: request bodies decoded as they arrive (straight into the
// memory that keeps them, with no copy of the whole body), and snapshots relayed slot by slot.

/** Thrown when a stream ends early or holds more bytes than allowed. */
export class StreamLengthError extends Error {
  /** Bytes received when the error was noticed. */
  readonly received: number;
  readonly kind: 'short' | 'long';
  constructor(kind: 'short' | 'long', received: number, message: string) {
    super(message);
    this.name = 'StreamLengthError';
    this.kind = kind;
    this.received = received;
  }
}

/**
 * How fast a transfer that holds an optimizer's lock must go: a request body streamed into it, or a
 * snapshot streamed out of it. It may take `graceMs` plus one second per `bytesPerSecond` bytes so
 * far, so a steady transfer at that rate or faster is never cut, whatever its size, and a stalled
 * one is cut after at most `graceMs` plus the time its bytes so far had earned.
 */
export interface Pace {
  graceMs: number;
  bytesPerSecond: number;
}

/** The pace every locked transfer keeps (mutable for tests only). */
export const TRANSFER_PACE: Pace = { graceMs: 30_000, bytesPerSecond: 64 * 1024 };

/** Milliseconds (Date.now()) by which a transfer started at `startedAt` must have moved past `bytes`. */
export function paceDeadline(startedAt: number, bytes: number, pace: Pace = TRANSFER_PACE): number {
  return startedAt + pace.graceMs + (bytes * 1000) / pace.bytesPerSecond;
}

/** Thrown when a body does not arrive at TRANSFER_PACE. */
export class StreamTimeoutError extends Error {
  readonly received: number;
  constructor(received: number, message: string) {
    super(message);
    this.name = 'StreamTimeoutError';
    this.received = received;
  }
}

/**
 * A body as the Worker may hand it on: bytes already read, a stream, or a function returning its
 * next piece (null at the end): called over RPC, one round trip per piece of PULL_PIECE_BYTES.
 */
export type ByteSource = Uint8Array | ReadableStream<Uint8Array> | PullSource;
export type PullSource = () => Promise<Uint8Array | null>;

/** Bytes per piece of a pull source (pullSource). */
export const PULL_PIECE_BYTES = 1 << 20;
/** How long a pull source waits for more bytes before handing on a piece it has begun. */
export const PULL_LINGER_MS = 20;

/**
 * A stream read in pieces of `size` bytes (the last shorter), each a whole array (RPC serializes a
 * view's whole buffer). A stream passed over RPC arrives in frames of about 4 KiB, each an I/O
 * round trip for the reader (a 16 MB gradient: ~4,000); the object calling this instead makes one
 * call per piece, and the frames are joined here, where reading them is cheap.
 */
export function pullSource(stream: ReadableStream<Uint8Array>, size = PULL_PIECE_BYTES, lingerMs = PULL_LINGER_MS): PullSource {
  const reader = stream.getReader();
  let carry: Uint8Array | null = null;
  let next: Promise<ReadableStreamReadResult<Uint8Array>> | null = null; // a read still under way
  return async () => {
    const piece = new Uint8Array(size);
    let filled = 0;
    while (filled < size) {
      let chunk = carry;
      carry = null;
      if (!chunk) {
        next ??= reader.read();
        // A body arriving slowly is handed on as it comes (so the object sees it keep pace): once
        // the piece holds something, a read that takes longer than lingerMs ends it.
        let timer: ReturnType<typeof setTimeout> | undefined;
        const result = filled === 0 ? await next : await Promise.race([next, new Promise<null>((r) => (timer = setTimeout(() => r(null), lingerMs)))]);
        if (timer !== undefined) clearTimeout(timer);
        if (result === null) break;
        next = null;
        if (result.done) break;
        chunk = result.value;
      }
      const take = Math.min(size - filled, chunk.length);
      piece.set(chunk.subarray(0, take), filled);
      filled += take;
      if (take < chunk.length) carry = chunk.subarray(take);
    }
    if (filled === 0) return null;
    return filled === size ? piece : piece.slice(0, filled);
  };
}

export class ByteReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array> | null;
  readonly #pull: PullSource | null = null;
  #pending: Uint8Array;
  #received = 0;
  #done = false;
  readonly #startedAt = Date.now();
  readonly #paced: boolean;

  /** With `paced`, a stream that does not keep TRANSFER_PACE is cancelled (StreamTimeoutError). */
  constructor(source: ByteSource, paced = false) {
    this.#paced = paced;
    if (typeof source === 'function') {
      this.#reader = null;
      this.#pull = source;
      this.#pending = new Uint8Array(0);
    } else if (source instanceof Uint8Array) {
      this.#reader = null;
      this.#pending = source;
      this.#done = true;
      this.#received = source.length;
    } else {
      this.#reader = source.getReader();
      this.#pending = new Uint8Array(0);
    }
  }

  /** Bytes consumed so far. */
  get position(): number {
    return this.#received - this.#pending.length;
  }

  async #fill(): Promise<boolean> {
    while (this.#pending.length === 0 && !this.#done) {
      let chunk: ReadableStreamReadResult<Uint8Array> | 'late';
      let timer: ReturnType<typeof setTimeout> | null = null;
      try {
        const pull = this.#pull;
        const read: Promise<ReadableStreamReadResult<Uint8Array>> = pull
          ? pull().then((value) => (value === null ? { done: true, value: undefined } : { done: false, value }))
          : this.#reader!.read();
        if (!this.#paced) chunk = await read;
        else {
          const wait = paceDeadline(this.#startedAt, this.#received) - Date.now();
          chunk = await Promise.race([read, new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), Math.max(0, wait))))]);
        }
      } catch {
        // The sender went away (a client that disconnected mid-upload): not a server fault.
        this.#done = true;
        throw new StreamLengthError('short', this.position, `the body could not be read to its end (${this.position} bytes arrived)`);
      } finally {
        if (timer !== null) clearTimeout(timer);
      }
      if (chunk === 'late') {
        const at = this.#received;
        void this.cancel();
        const { graceMs, bytesPerSecond } = TRANSFER_PACE;
        throw new StreamTimeoutError(at, `the body stopped arriving: ${at} bytes in ${Math.round((Date.now() - this.#startedAt) / 1000)} s (a body may take ${graceMs / 1000} s plus one second per ${bytesPerSecond} bytes)`);
      }
      const { done, value } = chunk;
      if (done) this.#done = true;
      else if (value.length > 0) {
        this.#pending = value;
        this.#received += value.length;
      }
    }
    return this.#pending.length > 0;
  }

  /**
   * Passes the next `n` bytes to `sink` in pieces, each with its offset from the start of the n
   * bytes; a StreamLengthError('short') if the stream ends first.
   */
  async read(n: number, sink: (piece: Uint8Array, offset: number) => void): Promise<void> {
    let done = 0;
    while (done < n) {
      if (!(await this.#fill())) throw new StreamLengthError('short', this.position, `the body ended after ${this.position} bytes`);
      const take = Math.min(n - done, this.#pending.length);
      sink(this.#pending.subarray(0, take), done);
      this.#pending = this.#pending.subarray(take);
      done += take;
    }
  }

  /** The next `n` bytes as one array (copied when they span pieces). */
  async readExactly(n: number): Promise<Uint8Array> {
    if (this.#pending.length >= n || (await this.#fill(), this.#pending.length >= n)) {
      const out = this.#pending.subarray(0, n);
      this.#pending = this.#pending.subarray(n);
      return out;
    }
    const out = new Uint8Array(n);
    await this.read(n, (piece, offset) => out.set(piece, offset));
    return out;
  }

  /**
   * Passes every remaining byte to `sink` (offsets from here), or a StreamLengthError('long') once
   * more than `max` bytes arrive. Returns the count.
   */
  async readToEnd(max: number, sink: (piece: Uint8Array, offset: number) => void): Promise<number> {
    let done = 0;
    while (await this.#fill()) {
      if (done + this.#pending.length > max) {
        const at = this.position + (max - done);
        await this.cancel();
        throw new StreamLengthError('long', at, `the body holds more than the ${max} bytes that fit here`);
      }
      sink(this.#pending, done);
      done += this.#pending.length;
      this.#pending = new Uint8Array(0);
    }
    return done;
  }

  /** Skips the next `n` bytes. */
  skip(n: number): Promise<void> {
    return this.read(n, () => {});
  }

  /** Resolves when the stream has ended with nothing left; a StreamLengthError('long') otherwise. */
  async expectEnd(): Promise<void> {
    if (await this.#fill()) {
      const at = this.position;
      await this.cancel();
      throw new StreamLengthError('long', at, `the body holds more than the ${at} bytes expected`);
    }
  }

  /** Stops reading (the sender sees the stream cancelled). */
  async cancel(): Promise<void> {
    this.#pending = new Uint8Array(0);
    if (!this.#done) {
      this.#done = true;
      await this.#reader?.cancel().catch(() => {});
    }
  }
}

/** Copies `bytes` into a fresh array aligned for `bytesPerElement`-byte elements when it is not. */
export function aligned(bytes: Uint8Array, bytesPerElement: number): Uint8Array {
  return bytes.byteOffset % bytesPerElement === 0 ? bytes : bytes.slice();
}
