// Review probe: If-Match is honoured on steps only; on the other mutating routes a stale tag is
// silently ignored (RFC 9110 §13.1.1: the origin server MUST NOT perform the method when If-Match
// does not match a current representation's tag). The routes do send ETags.

import { describe, expect, it } from 'vitest';
import { createOptimizer, opCall } from '../helpers/optimizers.ts';

describe('If-Match outside steps', () => {
  it('a stale If-Match on PATCH, PUT params, PUT state, DELETE is a 412', async () => {
    const opt = await createOptimizer({ params: { w: [1, 2] } });
    const stale = opt.etag!;
    await opCall('POST', opt, '/step', { grads: { w: [1, 1] } });
    const snap = (await opCall('GET', opt, '/state')).body;
    const got: Record<string, number> = {};
    got.patch = (await opCall('PATCH', opt, '', { hyperparams: { lr: 0.5 } }, { 'if-match': stale })).status;
    got.putParams = (await opCall('PUT', opt, '/params', { params: { w: [9, 9] } }, { 'if-match': stale })).status;
    got.putState = (await opCall('PUT', opt, '/state', snap, { 'if-match': stale })).status;
    got.delete = (await opCall('DELETE', opt, '', undefined, { 'if-match': stale })).status;
    expect(got).toEqual({ patch: 412, putParams: 412, putState: 412, delete: 412 });
  });
});
