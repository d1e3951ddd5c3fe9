// One operation at a time on a hosted optimizer. A Durable Object's input gate closes only during
// storage calls: while a request awaits anything else (its streamed body, a snapshot being read
// by the client), other requests run. Every operation that reads or writes the tensors holds this
// lock, so none ever sees another's half-done work.

export class Mutex {
  #tail: Promise<void> = Promise.resolve();

  /** Resolves when the lock is held; call the returned function to release it (later calls do nothing). */
  acquire(): Promise<() => void> {
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((resolve) => (release = resolve));
    return previous.then(() => {
      let released = false;
      return () => {
        if (!released) {
          released = true;
          release();
        }
      };
    });
  }

  /** Runs `fn` holding the lock. */
  async run<T>(fn: () => T | Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
