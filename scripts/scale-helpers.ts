// Helpers of the scale runs (scripts/scale-run.ts, scripts/scale-run-sharded.ts): one keep-alive
// HTTP client, the Worker's isolate through the V8 inspector, and the workerd process's memory.

import http from 'node:http';
import { readFileSync } from 'node:fs';

/** An answer: status, body, milliseconds from the call to its last byte, headers. */
export interface Reply {
  status: number;
  body: Buffer;
  ms: number;
  headers: http.IncomingHttpHeaders;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

export function request(url: string, method: string, headers: Record<string, string>, body?: Uint8Array): Promise<Reply> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent, headers: { ...headers, ...(body ? { 'content-length': String(body.length) } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks), ms: performance.now() - t0, headers: res.headers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export async function expectOk(what: string, p: Promise<Reply>, status = 200) {
  const r = await p;
  if (r.status !== status) throw new Error(`${what}: HTTP ${r.status} ${r.body.toString('utf8').slice(0, 300)}`);
  return r;
}

/**
 * The Worker's isolate (where its Durable Objects run, as in production) through the V8 inspector:
 * `Runtime.getHeapUsage` gives the JS heap and the ArrayBuffer backing stores (typed arrays and
 * WebAssembly memory), what the 128 MB limit counts. Sampled every 10 ms while requests run.
 */
export class Isolate {
  private id = 0;
  peak = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly ws: WebSocket;
  private constructor(ws: WebSocket) {
    this.ws = ws;
  }
  static async open(port: number): Promise<Isolate> {
    const list = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as Array<{ id: string; webSocketDebuggerUrl: string }>;
    const ws = new WebSocket(list.find((t) => t.id === 'main')!.webSocketDebuggerUrl);
    await new Promise((r) => ws.addEventListener('open', r, { once: true }));
    return new Isolate(ws);
  }
  private call(method: string): Promise<Record<string, number>> {
    const id = ++this.id;
    return new Promise((resolve, reject) => {
      const onMessage = (ev: MessageEvent) => {
        const m = JSON.parse(String(ev.data));
        if (m.id !== id) return;
        this.ws.removeEventListener('message', onMessage);
        if (m.error) reject(new Error(`${method}: ${m.error.message}`));
        else resolve(m.result);
      };
      this.ws.addEventListener('message', onMessage);
      this.ws.send(JSON.stringify({ id, method, params: {} }));
    });
  }
  /** JS heap used plus backing stores, in MB. */
  async usedMb(): Promise<number> {
    const u = await this.call('Runtime.getHeapUsage');
    return (u.usedSize! + (u.backingStorageSize ?? 0)) / 2 ** 20;
  }
  /**
   * After a full garbage collection: what the isolate keeps. workerd runs the collection when the
   * isolate next wakes, so a request to `wake` pumps it.
   */
  async settledMb(wake: string): Promise<number | null> {
    let done = false;
    const collected = this.call('HeapProfiler.collectGarbage').then(() => (done = true));
    for (let i = 0; i < 50 && !done; i++) {
      await fetch(wake);
      await Promise.race([collected, new Promise((r) => setTimeout(r, 100))]);
    }
    return done ? this.usedMb() : null;
  }

  startSampling(): void {
    this.peak = 0;
    let busy = false;
    this.timer = setInterval(() => {
      if (busy) return;
      busy = true;
      this.usedMb().then(
        (mb) => {
          this.peak = Math.max(this.peak, mb);
          busy = false;
        },
        () => (busy = false),
      );
    }, 10);
  }
  async stopSampling(): Promise<number> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.peak = Math.max(this.peak, await this.usedMb());
    return this.peak;
  }
  close(): void {
    this.ws.close();
  }
}

/** Resident memory of the workerd process (and its children), in MB. */
export function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}
