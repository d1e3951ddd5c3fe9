// Reaching a hosted optimizer's Durable Object from a request: its stub, the caller's token hash,
// and the object's answers unwrapped into values or thrown problems.

import type { Context, MiddlewareHandler } from 'hono';
import type { HostedOptimizer } from '../../durable-objects/hosted-optimizer.ts';
import type { Outcome } from '../../durable-objects/protocol.ts';
import { sha256Hex } from '../../lib/digest.ts';
import { ProblemError } from '../../lib/problem.ts';
import type { AppEnv } from '../../lib/router.ts';

/** The value of a Durable Object's answer, or its problem thrown (rendered by app.onError). */
export function unwrap<O extends Outcome<unknown>>(outcome: O): O extends { ok: true; value: infer T } ? T : never {
  if (!outcome.ok) throw ProblemError.fromData(outcome.problem);
  return outcome.value as never;
}

export function stubFor(c: Context<AppEnv>, id: string): DurableObjectStub<HostedOptimizer> {
  const ns = c.env.HOSTED_OPTIMIZER;
  let doId: DurableObjectId;
  try {
    doId = ns.idFromString(id);
  } catch {
    throw new ProblemError(404, 'not-found', 'no optimizer with this id (not a valid optimizer id)');
  }
  return ns.get(doId);
}


/** SHA-256 of the bearer token, or null when there is no Authorization header. */
export async function tokenHash(c: Context<AppEnv>): Promise<string | null> {
  const header = c.req.header('authorization');
  if (header === undefined) return null;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  // A malformed header is a wrong token, not a missing one.
  return sha256Hex(match ? match[1]! : `malformed:${header}`);
}

export function newToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

/** Bodies above this many bytes are parsed only once the object has accepted the token. */
export const PRE_AUTHORIZE_ABOVE = 64 * 1024;

/**
 * Route middleware (before validation) on hosted routes with a body: a large body is parsed only
 * after the optimizer has checked the id and token, so an anonymous caller cannot make the Worker
 * parse and allocate for it.
 */
export const authorizeBeforeParsing: MiddlewareHandler<AppEnv> = async (c, next) => {
  // Binary bodies are not parsed here: the object checks the token before it reads them.
  const json = /^application\/([a-z0-9.+-]*\+)?json/i.test(c.req.header('content-type') ?? '');
  const length = Number(c.req.header('content-length') ?? Infinity);
  if (json && length > PRE_AUTHORIZE_ABOVE) unwrap(await stubFor(c, c.req.param('id')!).authorize(await tokenHash(c)));
  await next();
};

