// A sharded optimizer restored from a checkpoint (another layout, dtype or shard count; JSON or
// safetensors) against an unsharded one restored from the same file (itself checked against torch
// 1.13 in checkpoint-torch.test.ts): the same status, the same error fields (tensor names and element
// indexes as the client sent them, never a shard's pieces), and after a 200 byte-identical snapshots,
// params and descriptions, then the same steps. A refused restore changes nothing and leaves no
// shard object behind. (Written as an independent review's probes; the nine it found failing are fixed.)
import { runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { callBytes } from './helpers/http.ts';
import { authed, createOptimizer, opCall, type Created } from './helpers/optimizers.ts';
import { encodeValues, readSafetensors, writeSafetensors, type Dt, type TestTensor } from './helpers/safetensors.ts';

const ST = 'application/vnd.safetensors';
const RAW = 'application/octet-stream';
const binary = (opt: Pick<Created, 'id' | 'token'>, method: string, path: string, body?: Uint8Array, headers: Record<string, string> = {}) =>
  callBytes(method, `/v1/optimizers/${opt.id}${path}`, body, authed(opt.token, headers));
const shardStub = (opt: Created, i: number) => env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/${i}`));
const holdsState = (opt: Created, i: number) =>
  runInDurableObject(shardStub(opt, i), (_o, state) => state.storage.sql.exec("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\'").one().n as number).then((n) => n > 0);
const strip = ({ id: _a, created_at: _b, updated_at: _c, shards: _d, ...rest }: Record<string, unknown>) => rest;

type Put = { json?: unknown; file?: Uint8Array };
async function put(opt: Created, p: Put) {
  if (p.file) return binary(opt, 'PUT', '/state', p.file, { 'content-type': ST });
  const r = await callBytes('PUT', `/v1/optimizers/${opt.id}/state`, JSON.stringify(p.json), authed(opt.token, { 'content-type': 'application/json' }));
  return r;
}

/** Differences between unsharded and sharded after the same restore (and steps). */
async function compare(spec: Record<string, unknown>, shards: number, p: Put, steps: Array<unknown> = [], shardedSpec: Record<string, unknown> = {}) {
  const one = await createOptimizer(spec);
  const sh = await createOptimizer({ ...spec, ...shardedSpec, shards });
  const before = strip((await opCall('GET', sh, '/state')).body);
  const a = await put(one, p);
  const b = await put(sh, p);
  const out: string[] = [];
  if (a.status !== b.status) out.push(`status one=${a.status} ${JSON.stringify(a.body)?.slice(0, 300)} sharded=${b.status} ${JSON.stringify(b.body)?.slice(0, 300)}`);
  else if (a.status >= 400) {
    const fa = JSON.stringify((a.body.errors ?? []).map((e: any) => e.field));
    const fb = JSON.stringify((b.body.errors ?? []).map((e: any) => e.field));
    if (fa !== fb || a.body.type !== b.body.type) out.push(`error one=${fa} ${a.body.detail} sharded=${fb} ${b.body.detail}`);
  }
  if (b.status >= 400) {
    const after = strip((await opCall('GET', sh, '/state')).body);
    if (JSON.stringify(after) !== JSON.stringify(before)) out.push('refused sharded restore changed state');
    for (let i = shards; i < shards + 8; i++) if (await holdsState(sh, i)) out.push(`shard ${i} left behind`);
  }
  if (a.status !== 200 || b.status !== 200) return { out, one, sh };
  await cmpState(one, sh, out, 'after restore');
  for (const [k, g] of steps.entries()) {
    const x = await opCall('POST', one, '/step', { grads: g });
    const y = await opCall('POST', sh, '/step', { grads: g });
    if (x.status !== y.status || JSON.stringify(x.body.params) !== JSON.stringify(y.body.params)) out.push(`step ${k}: one=${x.status} ${JSON.stringify(x.body).slice(0, 200)} sharded=${y.status} ${JSON.stringify(y.body).slice(0, 200)}`);
  }
  if (steps.length > 0) await cmpState(one, sh, out, 'after steps');
  return { out, one, sh };
}

async function cmpState(one: Created, sh: Created, out: string[], when: string) {
  const ja = strip((await opCall('GET', one, '/state')).body);
  const jb = strip((await opCall('GET', sh, '/state')).body);
  if (JSON.stringify(ja) !== JSON.stringify(jb)) out.push(`${when}: JSON state differs:\n one=${JSON.stringify(ja).slice(0, 900)}\n sh =${JSON.stringify(jb).slice(0, 900)}`);
  const sa = await binary(one, 'GET', '/state', undefined, { accept: ST });
  const sb = await binary(sh, 'GET', '/state', undefined, { accept: ST });
  if (sa.status !== 200 || sb.status !== 200) out.push(`${when}: GET state st ${sa.status} ${sb.status}`);
  else {
    const fa = readSafetensors(sa.bytes);
    const fb = readSafetensors(sb.bytes);
    const ma = { ...fa.metadata };
    const mb = { ...fb.metadata };
    for (const m of [ma, mb]) {
      delete m.id;
      delete m.created_at;
      delete m.updated_at;
      delete m.shards;
    }
    if (JSON.stringify(ma) !== JSON.stringify(mb)) out.push(`${when}: st metadata differs one=${JSON.stringify(ma)} sh=${JSON.stringify(mb)}`);
    if (JSON.stringify(fa.order) !== JSON.stringify(fb.order)) out.push(`${when}: st order differs one=${fa.order} sh=${fb.order}`);
    for (const n of fa.order) {
      const x = fa.tensors.get(n)!;
      const y = fb.tensors.get(n);
      if (!y || x.dtype !== y.dtype || JSON.stringify(x.shape) !== JSON.stringify(y.shape) || x.data.join() !== y.data.join()) out.push(`${when}: st tensor ${n} differs`);
    }
  }
  const pa = await binary(one, 'GET', '/params', undefined, { accept: RAW });
  const pb = await binary(sh, 'GET', '/params', undefined, { accept: RAW });
  if (pa.status !== pb.status || pa.bytes.join() !== pb.bytes.join()) out.push(`${when}: raw params differ ${pa.status} ${pb.status}`);
  const ia = strip((await opCall('GET', one, '')).body);
  const ib = strip((await opCall('GET', sh, '')).body);
  for (const k of ['max_elements', 'limits', 'expires_at']) {
    delete ia[k];
    delete ib[k];
  }
  if (JSON.stringify(ia) !== JSON.stringify(ib)) out.push(`${when}: info differs one=${JSON.stringify(ia).slice(0, 600)} sh=${JSON.stringify(ib).slice(0, 600)}`);
}

const snapshotOf = async (spec: Record<string, unknown>, steps: unknown[], st = false) => {
  const src = await createOptimizer(spec);
  for (const g of steps) {
    const r = await opCall('POST', src, '/step', { grads: g });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
  }
  if (st) return { file: (await binary(src, 'GET', '/state', undefined, { accept: ST })).bytes };
  const { id: _a, created_at: _b, updated_at: _c, ...snap } = (await opCall('GET', src, '/state')).body;
  return { json: snap };
};

const P = { a: [[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 0, 1]], b: [0.5, -0.5, 2], c: [[2, 4, 6, 8]] };
const G = (k: number, frozen?: string) => {
  const g: Record<string, unknown> = { a: [[1, -1, 0.5], [0.25, 2, -2], [1, 1, 1], [k, 0, -k]], b: [1, 2, -k], c: [[0.5, 0.5, -1, k]] };
  if (frozen) g[frozen] = null;
  return g;
};
const INIT = { z: [[1, 2], [3, 4]], y: [5, 6, 7] };
const GI = { z: [[1, 1], [1, 1]], y: [1, 1, 1] };

describe('differential: sharded vs unsharded restore', () => {
  const sources: Array<[string, Record<string, unknown>, unknown[]]> = [
    ['adam groups + frozen', { optimizer: 'adam', params: P, hyperparams: { lr: 0.01 }, param_groups: [{ params: ['c'], lr: 0.1 }] }, [G(1), G(2, 'b'), G(3, 'a')]],
    ['sgd momentum partial', { optimizer: 'sgd', params: P, hyperparams: { lr: 0.1, momentum: 0.9 } }, [G(1, 'b')]],
    ['nadam groups', { optimizer: 'nadam', params: P, hyperparams: { lr: 0.01 }, param_groups: [{ params: ['c'], betas: [0.8, 0.99] }] }, [G(1), G(2, 'c')]],
    ['adam plateau', { optimizer: 'adam', params: P, schedule: { type: 'reduce_on_plateau', lr: 0.01, factor: 0.5, patience: 0 } }, [G(1), G(2)]],
    ['adam steplr', { optimizer: 'adam', params: P, schedule: { type: 'step', lr: 0.01, step_size: 1, gamma: 0.5 } }, [G(1), G(2)]],
    ['muon', { optimizer: 'muon', params: { a: P.a, c: P.c }, hyperparams: { lr: 0.02, momentum: 0.9 } }, [{ a: G(1).a, c: G(1).c }, { a: G(2).a, c: G(2).c }]],
  ];
  for (const fmt of ['json', 'st'] as const)
    for (const [what, spec, steps] of sources)
      for (const n of [2, 5])
        it(`${what} ${fmt} into ${n} shards`, async () => {
          const p = await snapshotOf(spec, steps, fmt === 'st');
          const muon = spec.optimizer === 'muon';
          const { out } = await compare({ optimizer: spec.optimizer, params: muon ? { z: INIT.z, y: [[1, 2, 3]], x1: [[1]], x2: [[2]], x3: [[3]] } : INIT, hyperparams: { lr: 0.5 } }, n, p, muon ? [{ a: G(7).a, c: G(7).c }] : [G(7), G(8, 'b')]);
          expect(out).toEqual([]);
        });
});

const fileOf = async (spec: Record<string, unknown>, steps: unknown[]) => readSafetensors((await snapshotOf(spec, steps, true)).file!);
const rewrite = (ck: ReturnType<typeof readSafetensors>, edit: (t: TestTensor) => TestTensor | null, meta?: (m: Record<string, string>) => Record<string, string>) =>
  writeSafetensors(ck.order.flatMap((n) => edit(ck.tensors.get(n)!) ?? []), meta ? meta({ ...ck.metadata! }) : ck.metadata!);
const toDt = (t: TestTensor, dt: Dt): TestTensor => {
  const src = t.dtype === 'F32' ? new Float32Array(t.data.slice().buffer) : new Float64Array(t.data.slice().buffer);
  return { ...t, dtype: dt, data: encodeValues([...src], dt) };
};

describe('edge checkpoints', () => {
  const base = { optimizer: 'adam', params: INIT, hyperparams: { lr: 0.01 } };
  const cases: Array<[string, () => Promise<Put>, number]> = [
    ['1 tensor into 5 shards', async () => fileOf({ optimizer: 'adam', params: { w: [1, 2, 3, 4, 5, 6, 7] } }, [{ w: [1, 1, 1, 1, 1, 1, 1] }]).then((ck) => ({ file: rewrite(ck, (t) => t) })), 5],
    ['1 tensor of 3 into 5 shards', async () => fileOf({ optimizer: 'adam', params: { w: [1, 2, 3] } }, [{ w: [1, 1, 1] }]).then((ck) => ({ file: rewrite(ck, (t) => t) })), 5],
    ['zero-size dim', async () => fileOf({ optimizer: 'adam', params: { w: [1, 2, 3], e: [] } }, [{ w: [1, 1, 1], e: [] }]).then((ck) => ({ file: rewrite(ck, (t) => t) })), 3],
    ['zero-size 2d', async () => fileOf({ optimizer: 'adam', params: { w: [1, 2, 3], e: [[], []] } }, [{ w: [1, 1, 1], e: [[], []] }]).then((ck) => ({ file: rewrite(ck, (t) => t) })), 3],
    ['F16 params', async () => fileOf({ optimizer: 'adam', params: { w: [1, 2, 3, 4], v: [0.5] } }, []).then((ck) => ({ file: rewrite(ck, (t) => (t.name.startsWith('params/') ? toDt(t, 'F16') : t)) })), 2],
    ['BF16 params', async () => fileOf({ optimizer: 'adam', params: { w: [1, 2, 3, 4], v: [0.5] } }, []).then((ck) => ({ file: rewrite(ck, (t) => (t.name.startsWith('params/') ? toDt(t, 'BF16') : t)) })), 2],
    ['F64 params, metadata float32', async () => fileOf({ optimizer: 'adam', params: { w: [1, 2, 3, 4], v: [0.5] } }, [{ w: [1, 1, 1, 1], v: [1] }]).then((ck) => ({ file: rewrite(ck, (t) => (t.name.startsWith('params/') ? toDt(t, 'F64') : t), (m) => ({ ...m, dtype: 'float32' })) })), 2],
    ['F32 all, metadata float64', async () => fileOf({ optimizer: 'adam', params: { w: [1, 2, 3, 4], v: [0.5] } }, [{ w: [1, 1, 1, 1], v: [1] }]).then((ck) => ({ file: rewrite(ck, (t) => t, (m) => ({ ...m, dtype: 'float64' })) })), 2],
    ['F64 all, no metadata dtype', async () => fileOf({ optimizer: 'adam', params: { w: [1, 2, 3, 4], v: [0.5] } }, [{ w: [1, 1, 1, 1], v: [1] }]).then((ck) => ({ file: rewrite(ck, (t) => (t.name.includes('/') && !t.name.startsWith('step/') ? toDt(t, 'F64') : t), (m) => { const { dtype: _d, ...r } = m; return r; }) })), 2],
    ['same layout, F64 all, metadata float64', async () => fileOf({ optimizer: 'adam', params: INIT }, [GI]).then((ck) => ({ file: rewrite(ck, (t) => (t.name.includes('/') && !t.name.startsWith('step/') ? toDt(t, 'F64') : t), (m) => ({ ...m, dtype: 'float64' })) })), 2],
    ['same layout: F64 params, metadata float32', async () => fileOf({ optimizer: 'adam', params: INIT }, [GI]).then((ck) => ({ file: rewrite(ck, (t) => (t.name.startsWith('params/') ? toDt(t, 'F64') : t), (m) => ({ ...m, dtype: 'float32' })) })), 2],
    ['same layout: missing exp_avg of one tensor', async () => fileOf({ optimizer: 'adam', params: INIT }, [GI]).then((ck) => ({ file: rewrite(ck, (t) => (t.name === 'exp_avg/y' ? null : t)) })), 2],
    ['missing exp_avg of one tensor', async () => fileOf({ optimizer: 'adam', params: { w: [1, 2, 3, 4], v: [0.5] } }, [{ w: [1, 1, 1, 1], v: [1] }]).then((ck) => ({ file: rewrite(ck, (t) => (t.name === 'exp_avg/v' ? null : t)) })), 2],
    ['no metadata at all', async () => fileOf({ optimizer: 'adam', params: { w: [1, 2, 3, 4], v: [0.5] } }, [{ w: [1, 1, 1, 1], v: [1] }]).then((ck) => ({ file: writeSafetensors(ck.order.map((n) => ck.tensors.get(n)!)) })), 2],
    ['nested collision json', async () => ({ json: { ...(await snapshotOf({ optimizer: 'adam', params: { w: [1, 2] } }, [])).json as object, params: { a: { b: [1, 2] }, 'a.b': [3] } } }), 2],
    ['dotted names st', async () => fileOf({ optimizer: 'adam', params: { a: { b: [1, 2], c: [[1, 2], [3, 4]] }, 'x.y': [5] } }, [{ a: { b: [1, 1], c: [[1, 1], [1, 1]] }, 'x.y': [2] }]).then((ck) => ({ file: rewrite(ck, (t) => t) })), 3],
    ['dotted names json', async () => snapshotOf({ optimizer: 'adam', params: { a: { b: [1, 2], c: [[1, 2], [3, 4]] }, 'x.y': [5] } }, [{ a: { b: [1, 1], c: [[1, 1], [1, 1]] }, 'x.y': [2] }]), 3],
    ['names with brackets', async () => fileOf({ optimizer: 'adam', params: { 'w[0:2]': [1, 2, 3], w: [4, 5] } }, [{ 'w[0:2]': [1, 1, 1], w: [1, 1] }]).then((ck) => ({ file: rewrite(ck, (t) => t) })), 2],
  ];
  for (const [what, make, n] of cases)
    it(what, async () => {
      const p = await make();
      const { out } = await compare(base, n, p);
      expect(out).toEqual([]);
    });
});

describe('more', () => {
  const base = { optimizer: 'adam', params: INIT, hyperparams: { lr: 0.01 } };
  const ckW = () => fileOf({ optimizer: 'adam', params: { w: [1, 2, 3, 4], v: [0.5, 1, 2] } }, [{ w: [1, 1, 1, 1], v: [1, 1, 1] }]);
  it('NaN in exp_avg_sq of the second tensor: same error field', async () => {
    const ck = await ckW();
    const file = rewrite(ck, (t) => (t.name === 'exp_avg_sq/v' ? { ...t, data: encodeValues([1, NaN, 1], 'F32') } : t));
    expect((await compare(base, 3, { file })).out).toEqual([]);
  });
  it('negative exp_avg_sq: same error field', async () => {
    const ck = await ckW();
    const file = rewrite(ck, (t) => (t.name === 'exp_avg_sq/v' ? { ...t, data: encodeValues([1, -1, 1], 'F32') } : t));
    expect((await compare(base, 3, { file })).out).toEqual([]);
  });
  it('exp_avg of a wrong shape: same error field', async () => {
    const ck = await ckW();
    const file = rewrite(ck, (t) => (t.name === 'exp_avg/v' ? { ...t, shape: [1, 3] } : t));
    expect((await compare(base, 3, { file })).out).toEqual([]);
  });
  it('params of F64 containing values that do not fit float32, metadata float32', async () => {
    const ck = await ckW();
    const file = rewrite(ck, (t) => (t.name === 'params/v' ? { ...t, dtype: 'F64', data: encodeValues([1e300, 1, 1], 'F64') } : t), (m) => ({ ...m, dtype: 'float32' }));
    expect((await compare(base, 3, { file })).out).toEqual([]);
  });
  it('sparse_adam', async () => {
    const p = await snapshotOf({ optimizer: 'sparse_adam', params: { e: [[1, 2], [3, 4], [5, 6]], f: [[1, 1]] } }, []);
    expect((await compare({ optimizer: 'sparse_adam', params: INIT }, 3, p)).out).toEqual([]);
  });
  it('grow, shrink, grow again', async () => {
    const big = await snapshotOf({ optimizer: 'adam', params: { a: [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]], b: [1, 2, 3, 4, 5, 6, 7, 8] } }, [{ a: [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]], b: [1, 2, 3, 4, 5, 6, 7, 8] }]);
    const small = await snapshotOf({ optimizer: 'adam', params: { s: [1, 2] } }, [{ s: [1, 1] }]);
    const one = await createOptimizer({ ...base });
    const sh = await createOptimizer({ ...base, shards: 2 });
    const out: string[] = [];
    for (const p of [big, small, big, small, big]) {
      const a = await put(one, p);
      const b = await put(sh, p);
      expect([a.status, b.status]).toEqual([200, 200]);
      await cmpState(one, sh, out, `after ${b.body.shards}`);
      const g = Object.fromEntries(Object.entries((p.json as any).params).map(([k, v]) => [k, v]));
      const x = await opCall('POST', one, '/step', { grads: g });
      const y = await opCall('POST', sh, '/step', { grads: g });
      expect(y.body.params).toEqual(x.body.params);
    }
    expect(out).toEqual([]);
    expect((await opCall('DELETE', sh, '')).status).toBe(204);
    for (let i = 0; i < 6; i++) expect(await holdsState(sh, i), `shard ${i}`).toBe(false);
  });
  it('a step in parts under way, then a restore of another layout, then the next part', async () => {
    const sh = await createOptimizer({ optimizer: 'sgd', params: { x: [1, 2, 3, 4, 5, 6] }, hyperparams: { lr: 1 }, shards: 2 });
    const key = { 'idempotency-key': 'parts-1', 'content-type': RAW };
    const p0 = await binary(sh, 'POST', '/step?part_offset=0', encodeValues([1, 1, 1], 'F32'), key);
    expect(p0.status, JSON.stringify(p0.body)).toBe(202);
    const snap = await snapshotOf({ optimizer: 'sgd', params: { y: [10, 20, 30, 40, 50, 60] }, hyperparams: { lr: 1 } }, []);
    expect((await put(sh, snap)).status).toBe(200);
    const p1 = await binary(sh, 'POST', '/step?part_offset=3', encodeValues([1, 1, 1], 'F32'), key);
    expect(p1.status, JSON.stringify(p1.body)).toBe(409);
    expect((await opCall('GET', sh, '/params')).body.params).toEqual({ y: [10, 20, 30, 40, 50, 60] });
    const full = await binary(sh, 'POST', '/step?part_offset=0', encodeValues([1, 1, 1, 1, 1, 1], 'F32'), { ...key, 'idempotency-key': 'parts-2' });
    expect(full.status, JSON.stringify(full.body)).toBe(200);
    expect((await opCall('GET', sh, '/params')).body.params).toEqual({ y: [9, 19, 29, 39, 49, 59] });
  });
  it('an old idempotency key after restore of another layout', async () => {
    const one = await createOptimizer({ optimizer: 'sgd', params: { x: [1, 2] }, hyperparams: { lr: 1 } });
    const sh = await createOptimizer({ optimizer: 'sgd', params: { x: [1, 2] }, hyperparams: { lr: 1 }, shards: 2 });
    const snap = await snapshotOf({ optimizer: 'sgd', params: { y: [10, 20, 30] }, hyperparams: { lr: 1 } }, []);
    const res: unknown[] = [];
    for (const o of [one, sh]) {
      await opCall('POST', o, '/step', { grads: { x: [1, 1] } }, { 'idempotency-key': 'k1' });
      expect((await put(o, snap)).status).toBe(200);
      const r = await opCall('POST', o, '/step', { grads: { x: [1, 1] } }, { 'idempotency-key': 'k1' });
      res.push([r.status, r.body.errors?.map((e: any) => e.field), r.body.params]);
    }
    expect(res[1]).toEqual(res[0]);
  });
  it('restore racing a step', async () => {
    const sh = await createOptimizer({ optimizer: 'sgd', params: { x: [1, 2, 3, 4] }, hyperparams: { lr: 1 }, shards: 2 });
    const snap = await snapshotOf({ optimizer: 'sgd', params: { y: [10, 20, 30, 40, 50, 60], z: [[1, 2], [3, 4]] }, hyperparams: { lr: 1 } }, []);
    const [r, s] = await Promise.all([put(sh, snap), opCall('POST', sh, '/step', { grads: { x: [1, 1, 1, 1] } })]);
    expect(r.status).toBe(200);
    const params = (await opCall('GET', sh, '/params')).body;
    if (s.status === 200) expect(params.params).toEqual({ y: [10, 20, 30, 40, 50, 60], z: [[1, 2], [3, 4]] });
    else expect(s.status).toBeGreaterThanOrEqual(400);
    const st = await binary(sh, 'GET', '/state', undefined, { accept: ST });
    expect(st.status).toBe(200);
  });
});

describe('more2', () => {
  it('NaN in exp_avg_sq of a tensor split across shards (other layout): element index', async () => {
    const ck = await fileOf({ optimizer: 'adam', params: { w: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] } }, [{ w: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1] }]);
    const file = rewrite(ck, (t) => (t.name === 'exp_avg_sq/w' ? { ...t, data: encodeValues([1, 1, 1, 1, 1, 1, 1, 1, NaN, 1], 'F32') } : t));
    expect((await compare({ optimizer: 'adam', params: INIT, hyperparams: { lr: 0.01 } }, 4, { file })).out).toEqual([]);
  });
  it('same layout, split tensor, NaN at element 8 (pre-existing path)', async () => {
    const spec = { optimizer: 'adam', params: { w: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] } };
    const ck = await fileOf(spec, [{ w: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1] }]);
    const file = rewrite(ck, (t) => (t.name === 'exp_avg_sq/w' ? { ...t, data: encodeValues([1, 1, 1, 1, 1, 1, 1, 1, NaN, 1], 'F32') } : t));
    expect((await compare(spec, 4, { file })).out).toEqual([]);
  });
  it('accumulate set: restore of another layout, then contributions', async () => {
    const spec = { optimizer: 'sgd', params: { x: [1, 2, 3, 4] }, hyperparams: { lr: 1 }, accumulate: { contributions: 2, reduce: 'mean' } };
    const snap = await snapshotOf({ optimizer: 'sgd', params: { y: [10, 20, 30], z: [[1, 2], [3, 4]] }, hyperparams: { lr: 1 } }, []);
    const { out, one, sh } = await compare(spec, 3, snap);
    expect(out).toEqual([]);
    const res: unknown[] = [];
    for (const o of [one, sh]) {
      for (const w of [0, 1]) {
        const r = await opCall('POST', o, `/step?worker=${w}`, { grads: { y: [w, 1, 2], z: [[1, w], [0, 1]] }, expected_step: 0 });
        res.push([r.status, r.body.params ?? r.body.errors ?? r.body.received]);
      }
    }
    expect(res.slice(2)).toEqual(res.slice(0, 2));
    expect((res[1] as unknown[])[0]).toBe(200);
    const out2: string[] = [];
    await cmpState(one, sh, out2, 'after acc');
    expect(out2).toEqual([]);
  });
  it('accumulate: contribution held, restore of another layout drops it', async () => {
    const spec = { optimizer: 'sgd', params: { x: [1, 2, 3, 4] }, hyperparams: { lr: 1 }, accumulate: { contributions: 2 } };
    const snap = await snapshotOf({ optimizer: 'sgd', params: { x: [1, 2, 3, 4, 5, 6] }, hyperparams: { lr: 1 } }, []);
    const one = await createOptimizer(spec);
    const sh = await createOptimizer({ ...spec, shards: 2 });
    const res: unknown[] = [];
    for (const o of [one, sh]) {
      const c0 = await opCall('POST', o, '/step?worker=0', { grads: { x: [1, 1, 1, 1] }, expected_step: 0 });
      expect(c0.status, JSON.stringify(c0.body)).toBeLessThan(300);
      expect((await put(o, snap)).status).toBe(200);
      const c1 = await opCall('POST', o, '/step?worker=1', { grads: { x: [1, 1, 1, 1, 1, 1] }, expected_step: 0 });
      const c0b = await opCall('POST', o, '/step?worker=0', { grads: { x: [2, 2, 2, 2, 2, 2] }, expected_step: 0 });
      res.push([c1.status, c0b.status, c0b.body.params]);
    }
    expect(res[1]).toEqual(res[0]);
  });
});

