// Serves the built Worker under plain workerd (what production runs), without `wrangler dev`'s
// local proxy: `wrangler deploy --dry-run` bundles it, a workerd config embeds the bundle and its
// wasm modules, declares the Durable Object namespaces (SQLite-backed ones with enableSql) on a
// temporary disk, and passes the vars as text bindings. A second worker on its own socket echoes
// request bodies: the floor of an HTTP round trip carrying the same bytes through the same workerd.
//
// Used by scripts/bench-http.ts (startWorkerd); also runnable on its own:
//   node scripts/workerd-serve.ts [--port 8787] [--var NAME:VALUE ...]
// serves until Ctrl-C. The workerd process runs in its own process group, which is killed on stop,
// on exit and on SIGINT/SIGTERM; its temporary directory (bundle, config, storage) is removed.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..');
export const WORKERD = join(ROOT, 'node_modules', '@cloudflare', 'workerd-linux-64', 'bin', 'workerd');
const WRANGLER = join(ROOT, 'node_modules', 'wrangler', 'bin', 'wrangler.js');
const QUIET = { CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_SEND_METRICS: 'false' };

/**
 * The echo worker: reads a POST's body whole and answers with it, or with `?bytes=N` zero bytes
 * instead (N = 0 for a step's `?return=none`, or the size of a step's answer); a GET answers
 * `?bytes=N` zero bytes. With `?durable=1` the body first goes to a Durable Object that writes it
 * into its SQLite storage (1 MiB rows, one transaction, rewriting the same rows each time) before
 * the answer leaves: the floor of any step that is stored before it is acknowledged.
 */
const ECHO_WORKER = `import { DurableObject } from 'cloudflare:workers';
export class DurableEcho extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.storage.sql.exec('CREATE TABLE IF NOT EXISTS rows (i INTEGER PRIMARY KEY, b BLOB NOT NULL)');
  }
  store(bytes) {
    const view = new Uint8Array(bytes);
    this.ctx.storage.transactionSync(() => {
      for (let i = 0, off = 0; off < view.length; i++, off += 1 << 20) {
        this.ctx.storage.sql.exec('INSERT OR REPLACE INTO rows (i, b) VALUES (?, ?)', i, view.subarray(off, Math.min(view.length, off + (1 << 20))));
      }
    });
    return view.length;
  }
}
export default {
  async fetch(req, env) {
    const url = new URL(req.url);
    const bytes = url.searchParams.get('bytes');
    const body = req.body ? await req.arrayBuffer() : null;
    if (body && url.searchParams.get('durable') === '1') await env.ECHO.getByName('floor').store(body);
    return new Response(bytes === null ? body : new Uint8Array(Number(bytes)));
  },
};
`;

export interface WorkerdServer {
  /** Base URL of the Worker, e.g. http://127.0.0.1:41234. */
  url: string;
  /** Base URL of the echo worker in the same workerd process. */
  echoUrl: string;
  /** `workerd --version`, e.g. "workerd 2026-11-02". */
  version: string;
  pid: number;
  /** The vars the Worker got (wrangler.toml's, with overrides applied). */
  vars: Record<string, string>;
  /** Kills workerd's process group and removes its temporary directory. Idempotent. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Overrides of wrangler.toml [vars]. */
  vars?: Record<string, string>;
  /** Port of the Worker (default: a free one). The echo worker always gets a free one. */
  port?: number;
  /** Progress messages (default: none). */
  log?: (message: string) => void;
  /** Serve the V8 inspector on this loopback port (scripts/scale-run.ts reads isolate heap sizes from it). */
  inspectorPort?: number;
}

/** A port nobody listens on right now (the kernel's choice for port 0). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** A Cap'n Proto text literal. */
const capnpString = (s: string) => JSON.stringify(s);

interface WranglerConfig {
  compatibility_date?: string;
  compatibility_flags: string[];
  vars: Record<string, unknown>;
  durable_objects: { bindings: Array<{ name: string; class_name: string; script_name?: string }> };
  migrations: Array<{ new_sqlite_classes?: string[]; new_classes?: string[] }>;
}

async function readWranglerConfig(): Promise<WranglerConfig> {
  const { unstable_readConfig } = (await import('wrangler')) as unknown as { unstable_readConfig: (args: { config: string }) => WranglerConfig };
  return unstable_readConfig({ config: join(ROOT, 'wrangler.toml') });
}

/** The workerd config serving `bundle` (index.js plus modules) as wrangler.toml describes it. */
function workerdConfig(config: WranglerConfig, modules: string[], vars: Record<string, string>, ports: { main: number; echo: number }, diskPath: string): string {
  const sqlite = new Set(config.migrations.flatMap((m) => m.new_sqlite_classes ?? []));
  const classes = [...new Set(config.durable_objects.bindings.filter((b) => !b.script_name).map((b) => b.class_name))];
  const moduleLines = modules.map((name) => {
    if (name === 'index.js') return `(name = "index.js", esModule = embed "bundle/index.js")`;
    if (name.endsWith('.wasm')) return `(name = ${capnpString(name)}, wasm = embed ${capnpString(`bundle/${name}`)})`;
    throw new Error(`workerd-serve: no module type for bundle file ${name}`);
  });
  const bindings = [
    ...Object.entries(vars).map(([name, value]) => `(name = ${capnpString(name)}, text = ${capnpString(value)})`),
    ...config.durable_objects.bindings.map((b) => `(name = ${capnpString(b.name)}, durableObjectNamespace = ${capnpString(b.class_name)})`),
  ];
  const namespaces = classes.map((c) => `(className = ${capnpString(c)}, uniqueKey = ${capnpString(`adam-api-${c}`)}${sqlite.has(c) ? ', enableSql = true' : ''})`);
  return `using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .mainWorker),
    (name = "echo", worker = .echoWorker),
    (name = "disk", disk = (path = ${capnpString(diskPath)}, writable = true)),
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:${ports.main}", http = (), service = "main"),
    (name = "echo", address = "127.0.0.1:${ports.echo}", http = (), service = "echo"),
  ],
);

const mainWorker :Workerd.Worker = (
  modules = [
    ${moduleLines.join(',\n    ')}
  ],
  compatibilityDate = ${capnpString(config.compatibility_date ?? '2026-11-01')},
  compatibilityFlags = [${config.compatibility_flags.map(capnpString).join(', ')}],
  bindings = [
    ${bindings.join(',\n    ')}
  ],
  durableObjectNamespaces = [
    ${namespaces.join(',\n    ')}
  ],
  durableObjectStorage = (localDisk = "disk"),
);

const echoWorker :Workerd.Worker = (
  modules = [(name = "echo.js", esModule = embed "echo.js")],
  compatibilityDate = ${capnpString(config.compatibility_date ?? '2026-11-01')},
  bindings = [(name = "ECHO", durableObjectNamespace = "DurableEcho")],
  durableObjectNamespaces = [(className = "DurableEcho", uniqueKey = "adam-api-bench-DurableEcho", enableSql = true)],
  durableObjectStorage = (localDisk = "disk"),
);
`;
}

const live = new Set<() => void>();
let hooked = false;

/** Kills every started workerd (and removes its directory) on exit and on SIGINT/SIGTERM (then exits 130/143). */
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const kill of live) kill();
  });
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.on(signal, () => {
      for (const kill of live) kill();
      process.exit(code);
    });
  }
}

async function waitReady(url: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`workerd exited (${child.exitCode ?? child.signalCode}) before serving:\n${log()}`);
    try {
      if ((await fetch(url)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`workerd did not answer ${url} within 30 s:\n${log()}`);
}

/** Builds the bundle and serves it (and the echo worker) under workerd on loopback. */
export async function startWorkerd(options: StartOptions = {}): Promise<WorkerdServer> {
  const log = options.log ?? (() => {});
  hookExit();
  const dir = mkdtempSync(join(tmpdir(), 'adam-workerd-'));
  const cleanupDir = () => rmSync(dir, { recursive: true, force: true });
  live.add(cleanupDir);
  try {
    log('building the bundle (wrangler deploy --dry-run)');
    execFileSync(process.execPath, [WRANGLER, 'deploy', '--dry-run', '--outdir', join(dir, 'bundle')], {
      cwd: ROOT,
      env: { ...process.env, ...QUIET },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const config = await readWranglerConfig();
    // The main module comes first (workerd's rule).
    const modules = ['index.js', ...readdirSync(join(dir, 'bundle')).filter((f) => f.endsWith('.wasm'))];
    const vars: Record<string, string> = { ...Object.fromEntries(Object.entries(config.vars).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)])), ...options.vars };
    const disk = join(dir, 'storage');
    mkdirSync(disk);
    const ports = { main: options.port ?? (await freePort()), echo: await freePort() };
    writeFileSync(join(dir, 'echo.js'), ECHO_WORKER);
    writeFileSync(join(dir, 'config.capnp'), workerdConfig(config, modules, vars, ports, disk));
    const version = execFileSync(WORKERD, ['--version'], { encoding: 'utf8' }).trim();

    log(`starting ${version} on 127.0.0.1:${ports.main} (echo on ${ports.echo})`);
    // Output to a file, not a pipe: the Worker logs a line per request, and a pipe nobody drains
    // (the benchmark blocks its event loop while wrk runs) fills up and stalls workerd.
    const logFile = join(dir, 'workerd.log');
    const logFd = openSync(logFile, 'a');
    const inspector = options.inspectorPort === undefined ? [] : [`--inspector-addr=127.0.0.1:${options.inspectorPort}`];
    const child = spawn(WORKERD, ['serve', join(dir, 'config.capnp'), '--experimental', ...inspector], { cwd: dir, detached: true, stdio: ['ignore', logFd, logFd] });
    closeSync(logFd);
    const outputTail = () => {
      try {
        return readFileSync(logFile, 'utf8').slice(-20_000);
      } catch {
        return '';
      }
    };
    const pid = child.pid!;
    // On exit or a signal: kill the group and remove the directory (synchronously: the process is ending).
    const kill = () => {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {}
      cleanupDir();
    };
    live.add(kill);
    let stopped = false;
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((r) => child.once('exit', () => r()));
        try {
          process.kill(-pid, 'SIGTERM');
        } catch {}
        const timer = setTimeout(kill, 3000);
        await exited;
        clearTimeout(timer);
      }
      live.delete(kill);
      live.delete(cleanupDir);
      cleanupDir();
    };
    const url = `http://127.0.0.1:${ports.main}`;
    try {
      await waitReady(`${url}/healthz`, child, outputTail);
    } catch (e) {
      await stop();
      throw e;
    }
    return { url, echoUrl: `http://127.0.0.1:${ports.echo}`, version, pid, vars, stop };
  } catch (e) {
    live.delete(cleanupDir);
    cleanupDir();
    throw e;
  }
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const vars: Record<string, string> = {};
  let port: number | undefined;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--port') port = Number(args[++i]);
    else if (args[i] === '--var') {
      const [name, ...rest] = args[++i]!.split(':');
      vars[name!] = rest.join(':');
    } else throw new Error(`usage: node scripts/workerd-serve.ts [--port N] [--var NAME:VALUE ...] (unknown argument ${args[i]})`);
  }
  const server = await startWorkerd({ vars, port, log: (m) => console.error(m) });
  console.error(`serving ${server.url} (echo ${server.echoUrl}), ${server.version}; Ctrl-C stops`);
}
