// Review probe: an optimizer whose names collide once dotted ("a.b" and {"a": {"b"}}): the 422
// says "address them with JSON", but JSON uploads are refused too.

import { describe, expect, it } from 'vitest';
import { createOptimizer, opCall } from '../helpers/optimizers.ts';

describe('colliding dotted names', () => {
  it('JSON step works; JSON upload of params should too', async () => {
    const opt = await createOptimizer({ params: { 'a.b': [1], a: { b: [2] } } });
    expect((await opCall('POST', opt, '/step', { grads: { 'a.b': [1], a: { b: [1] } } })).status).toBe(200);
    const up = await opCall('PUT', opt, '/params', { params: { 'a.b': [5], a: { b: [6] } } });
    expect(up.status, JSON.stringify(up.body)).toBe(200);
  });
});
