// One SQLite-backed Durable Object per service API key, named by the key's SHA-256: the hosted
// optimizers the key created, for listing them and for the key's quotas (most optimizers, most
// elements). Methods return data (Outcome); the Worker speaks HTTP.
//
// The registry and the optimizers are separate objects, so a failure between two writes can leave
// an entry whose optimizer does not exist: a creation that died after its reservation, or an
// optimizer deleted (or expired) whose notice never arrived. The registry tolerates such entries:
// a listing asks each optimizer of the page for its summary (step, times: they change with every
// step, which the registry is not told about) and shows only those that answer; an entry whose
// optimizer is missing is dropped once it is older than PENDING_GRACE_MS (a younger one may be a
// creation under way). A quota that looks exceeded is re-checked the same way before a refusal,
// so a key is never refused for optimizers that no longer exist. Sizes come from the optimizers
// too: a restore that changes the size tells the registry first, and re-checks correct drift.

import { DurableObject } from 'cloudflare:workers';
import type { KeyQuota } from '../lib/config.ts';
import { ProblemError, fieldError } from '../lib/problem.ts';
import type { HostedOptimizer } from './hosted-optimizer.ts';
import type { KeyUsage, OptimizerPage, OptimizerSummary, Outcome } from './protocol.ts';

/** An entry whose optimizer is missing is dropped once this old (younger: maybe a creation under way). */
export const PENDING_GRACE_MS = 10 * 60_000;
/** Optimizers asked for their summary at once (each call is a subrequest). */
const FAN_OUT = 25;

const SCHEMA =
  'CREATE TABLE IF NOT EXISTS optimizers (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, added_at INTEGER NOT NULL)';

type Entry = {
  seq: number;
  id: string;
  size: number;
  added_at: number;
};

/** Turns a thrown problem into an outcome (RPC would lose the class); anything else is a bug. */
async function outcome<T>(fn: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (e) {
    if (e instanceof ProblemError) return { ok: false, problem: e.toData() };
    throw e;
  }
}

export class KeyRegistry extends DurableObject<Env> {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.storage.sql.exec(SCHEMA);
  }

  get #sql(): SqlStorage {
    return this.ctx.storage.sql;
  }

  #usage(): KeyUsage {
    const row = this.#sql.exec<{ n: number; e: number }>('SELECT count(*) AS n, coalesce(sum(size), 0) AS e FROM optimizers').one();
    return { optimizers: row.n, elements: row.e };
  }

  /** The problem when `id` taking `size` elements (and, if new, a place) would exceed the quota, else null. */
  #overQuota(quota: KeyQuota, id: string, size: number, field: string): ProblemError | null {
    const current = this.#sql.exec<{ size: number }>('SELECT size FROM optimizers WHERE id = ?', id).toArray()[0];
    const usage = this.#usage();
    if (!current && usage.optimizers + 1 > quota.maxOptimizers) {
      return new ProblemError(
        403,
        'quota-exceeded',
        `this API key already holds ${usage.optimizers} optimizers, its limit (KEY_MAX_OPTIMIZERS): delete one (or let one expire) first`,
        undefined,
        { quota: 'optimizers', limit: quota.maxOptimizers, usage: usage.optimizers },
      );
    }
    const others = usage.elements - (current?.size ?? 0);
    if (others + size > quota.maxElements) {
      const message = `${size} elements would bring this API key to ${others + size}, over its limit of ${quota.maxElements} (KEY_MAX_ELEMENTS)`;
      return new ProblemError(403, 'quota-exceeded', `${message}; its other optimizers hold ${others}`, [fieldError([field], message, size)], {
        quota: 'elements',
        limit: quota.maxElements,
        usage: others,
        requested: size,
      });
    }
    return null;
  }

  /**
   * Summaries of the entries' optimizers (undefined where one could not be asked); drops entries
   * whose optimizer is missing and older than PENDING_GRACE_MS, and corrects sizes that drifted.
   */
  async #verify(owner: string, entries: Entry[]): Promise<Array<OptimizerSummary | null | undefined>> {
    const ns = this.env.HOSTED_OPTIMIZER;
    const out: Array<OptimizerSummary | null | undefined> = [];
    for (let i = 0; i < entries.length; i += FAN_OUT) {
      const batch = entries.slice(i, i + FAN_OUT);
      out.push(
        ...(await Promise.all(
          batch.map((e) =>
            (ns.get(ns.idFromString(e.id)) as DurableObjectStub<HostedOptimizer>).summary(owner).catch((err: unknown) => {
              console.error('registry: could not ask an optimizer for its summary', e.id, err);
              return undefined;
            }),
          ),
        )),
      );
    }
    const now = Date.now();
    entries.forEach((e, i) => {
      const summary = out[i];
      if (summary === null && now - e.added_at >= PENDING_GRACE_MS) this.#sql.exec('DELETE FROM optimizers WHERE id = ?', e.id);
      else if (summary && summary.size !== e.size) this.#sql.exec('UPDATE optimizers SET size = ? WHERE id = ?', summary.size, e.id);
    });
    return out;
  }

  /** Every entry checked against its optimizer (only when a quota looks exceeded: a call per optimizer). */
  async #verifyAll(owner: string): Promise<void> {
    await this.#verify(owner, this.#sql.exec<Entry>('SELECT seq, id, size, added_at FROM optimizers ORDER BY seq').toArray());
  }

  /**
   * Records optimizer `id` of `size` elements before it is created (or its new size, before a
   * restore changes it), or a 403 problem when that would exceed the quota; `field` names the
   * request field the elements come from.
   */
  reserve(owner: string, id: string, size: number, quota: KeyQuota, field: string): Promise<Outcome<KeyUsage>> {
    return outcome(async () => {
      if (this.#overQuota(quota, id, size, field)) await this.#verifyAll(owner);
      const problem = this.#overQuota(quota, id, size, field);
      if (problem) throw problem;
      this.#sql.exec('INSERT INTO optimizers (id, size, added_at) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET size = excluded.size', id, size, Date.now());
      return this.#usage();
    });
  }

  /** Forgets optimizer `id` (deleted, expired, or never created). */
  async release(id: string): Promise<void> {
    this.#sql.exec('DELETE FROM optimizers WHERE id = ?', id);
  }

  /** Up to `limit` live optimizers after position `after`, oldest first, with the key's usage. */
  async list(owner: string, after: number, limit: number): Promise<OptimizerPage> {
    const rows = this.#sql.exec<Entry>('SELECT seq, id, size, added_at FROM optimizers WHERE seq > ? ORDER BY seq LIMIT ?', after, limit + 1).toArray();
    const page = rows.slice(0, limit);
    const summaries = await this.#verify(owner, page);
    return {
      optimizers: summaries.filter((s): s is OptimizerSummary => !!s),
      next: rows.length > limit ? page.at(-1)!.seq : null,
      usage: this.#usage(),
    };
  }

  /** What the key holds. */
  async usage(): Promise<KeyUsage> {
    return this.#usage();
  }
}
