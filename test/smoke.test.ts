import { describe, expect, it } from 'vitest';
import { getJson, postJson } from './helpers/http.ts';

describe('smoke', () => {
  it('health', async () => {
    const r = await getJson('/healthz');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ status: 'ok' });
  });
  it('step', async () => {
    const r = await postJson('/v1/adam/step', { params: [1, 2], grads: [0.5, -0.5], dtype: 'float64' });
    expect(r.status).toBe(200);
    console.log(JSON.stringify(r.body));
  });
});
