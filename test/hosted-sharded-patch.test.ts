// PATCH of param_groups and of the state slots kept on sharded hosted optimizers, through HTTP. The
// same sequence of steps and PATCHes (groups replaced, cleared, slots created and dropped: amsgrad on
// and off, SGD's momentum from 0 and back, NAdam's per-group mu_product, reduce_on_plateau's group
// rates) goes to an unsharded optimizer (its PATCH tested against the stateless step in
// hosted-groups) and to sharded ones over 2 and 3 objects, shards evicted in between: the params of
// every step and the state after every call are the same bit for bit. A refused PATCH changes no shard.

import { evictDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { authed, createOptimizer, expectProblem, opCall, type Created } from './helpers/optimizers.ts';
import { callBytes } from './helpers/http.ts';
import { leavesOf } from './helpers/trees.ts';

type Json = Record<string, any>;

const P = { 'enc.w': [[0.5, -0.25], [1, 2], [0.125, -3]], 'enc.b': [0.1, -0.1, 0.3], 'head.w': [[0.75, -1.5]], 'head.b': [0.25] };
const G = (k: number) => ({
  'enc.w': [[Math.sin(k + 1), Math.cos(k + 2)], [0.5 - k / 7, Math.sin(3 * k)], [k / 9, -0.3]],
  'enc.b': [Math.cos(k) / 3, -0.25, 0.5 * k],
  'head.w': [[0.125 * (k + 1), -Math.sin(k / 2)]],
  'head.b': [1 - k / 5],
});

/** A step's gradients, or a PATCH body; `loss` goes with a step (reduce_on_plateau). */
type Move = { step: number; loss?: number } | { patch: Json; status?: number };

interface Case {
  title: string;
  optimizer: string;
  dtype: 'float32' | 'float64';
  hyperparams: Json;
  param_groups?: Json[];
  schedule?: Json;
  moves: Move[];
}

const CASES: Case[] = [
  {
    title: 'SGD: groups replaced (a buffer created from the next gradient), momentum dropped and back, groups cleared',
    optimizer: 'sgd',
    dtype: 'float64',
    hyperparams: { lr: 0.1, momentum: 0.9, dampening: 0.5 },
    param_groups: [{ params: ['*.b', 'head.w'], momentum: 0 }],
    moves: [
      { step: 0 },
      { step: 1 },
      { patch: { param_groups: [{ params: ['head.*'], momentum: 0 }] } },
      { step: 2 },
      { patch: { hyperparams: { momentum: 0 } } },
      { step: 3 },
      { patch: { hyperparams: { momentum: 0.5 }, param_groups: [{ params: ['enc.b'], lr: 0.3, nesterov: true, dampening: 0 }] } },
      { step: 4 },
      { patch: { param_groups: null } },
      { step: 5 },
    ],
  },
  {
    title: 'Adam: amsgrad on for a group, then for all, then off; lr and betas by group',
    optimizer: 'adam',
    dtype: 'float32',
    hyperparams: { lr: 0.01, weight_decay: 0.01 },
    moves: [
      { step: 0 },
      { patch: { param_groups: [{ params: ['head.*'], amsgrad: true, lr: 0.02 }] } },
      { step: 1 },
      { step: 2 },
      { patch: { hyperparams: { amsgrad: true }, param_groups: [{ params: ['enc.w'], betas: [0.8, 0.99] }] } },
      { step: 3 },
      { patch: { hyperparams: { amsgrad: false } } },
      { step: 4 },
    ],
  },
  {
    title: 'NAdam: a group with other betas from step 2 (its own mu_product), then none',
    optimizer: 'nadam',
    dtype: 'float64',
    hyperparams: { lr: 0.01 },
    moves: [
      { step: 0 },
      { step: 1 },
      { patch: { param_groups: [{ params: ['head.*', 'enc.b'], beta1: 0.8, momentum_decay: 0.01 }] } },
      { step: 2 },
      { step: 3 },
      { patch: { param_groups: null } },
      { step: 4 },
    ],
  },
  {
    title: 'RMSprop under reduce_on_plateau: a group added (its rate from its lr), centered and momentum in it',
    optimizer: 'rmsprop',
    dtype: 'float64',
    hyperparams: {},
    schedule: { type: 'reduce_on_plateau', lr: 0.01, factor: 0.5, patience: 0 },
    moves: [
      { step: 0, loss: 1 },
      { step: 1, loss: 2 },
      { patch: { param_groups: [{ params: ['enc.w'], lr: 0.05, centered: true, momentum: 0.5 }] } },
      { step: 2, loss: 3 },
      { step: 3, loss: 0.5 },
      // Refused: a group of no tensor, and momentum below 0. Nothing changes on any shard.
      { patch: { param_groups: [{ params: ['nope'] }] }, status: 422 },
      { patch: { param_groups: [{ params: ['enc.b'], momentum: -1 }] }, status: 422 },
      { step: 4, loss: 4 },
    ],
  },
];

const stateOf = (snapshot: Json): Json => {
  const { id: _i, created_at: _c, updated_at: _u, shards: _n, ...rest } = snapshot;
  return rest;
};

const diffs = (label: string, actual: unknown, expected: unknown): string[] => {
  const a = new Map(leavesOf(actual).map((l) => [l.path, l.value]));
  const e = new Map(leavesOf(expected).map((l) => [l.path, l.value]));
  const out: string[] = [];
  for (const k of new Set([...a.keys(), ...e.keys()])) if (!Object.is(a.get(k), e.get(k))) out.push(`${label}${k}: ${a.get(k)} != ${e.get(k)}`);
  return out;
};

const evictShards = async (opt: Created, shards: number) => {
  for (let i = 0; i < shards; i++) await evictDurableObject(env.HOSTED_OPTIMIZER.get(env.HOSTED_OPTIMIZER.idFromName(`${opt.id}/shard/${i}`)));
};

describe.each(CASES.map((c) => ({ c, title: c.title })))('$title', ({ c }) => {
  it('sharded over 2 and 3 objects equals unsharded after every step and PATCH, bit for bit', { timeout: 120_000 }, async () => {
    const create = (shards?: number) =>
      createOptimizer({ optimizer: c.optimizer, dtype: c.dtype, params: P, hyperparams: c.hyperparams, ...(c.param_groups ? { param_groups: c.param_groups } : {}), ...(c.schedule ? { schedule: c.schedule } : {}), ...(shards ? { shards } : {}) });
    const one = await create();
    const sharded = [await create(2), await create(3)];
    expect(sharded.map((o) => o.body.shards)).toEqual([2, 3]);
    const problems: string[] = [];
    for (const [k, move] of c.moves.entries()) {
      if ('step' in move) {
        const body = { grads: G(move.step), ...(move.loss === undefined ? {} : { loss: move.loss }) };
        const want = await opCall('POST', one, '/step', body);
        expect(want.status, JSON.stringify(want.body)).toBe(200);
        for (const [i, opt] of sharded.entries()) {
          const got = await opCall('POST', opt, '/step', body);
          expect(got.status, JSON.stringify(got.body)).toBe(200);
          problems.push(...diffs(`move ${k}, ${i + 2} shards: `, { params: got.body.params, lr: got.body.lr, step: got.body.step }, { params: want.body.params, lr: want.body.lr, step: want.body.step }));
        }
      } else {
        const want = await opCall('PATCH', one, '', move.patch);
        expect(want.status, JSON.stringify(want.body)).toBe(move.status ?? 200);
        for (const [i, opt] of sharded.entries()) {
          const before = await opCall('GET', opt, '');
          const got = await opCall('PATCH', opt, '', move.patch);
          if (move.status) {
            expectProblem(got, move.status, want.body.errors[0].field);
            expect(got.body.errors).toEqual(want.body.errors);
            expect((await opCall('GET', opt, '')).headers.get('etag')).toBe(before.headers.get('etag'));
          } else {
            expect(got.status, JSON.stringify(got.body)).toBe(200);
            expect(got.body.param_groups).toEqual(want.body.param_groups);
            expect(got.body.hyperparams).toEqual(want.body.hyperparams);
          }
          if (k % 2 === 0) await evictShards(opt, i + 2);
        }
      }
      const snap = stateOf((await opCall('GET', one, '/state')).body);
      for (const [i, opt] of sharded.entries()) problems.push(...diffs(`move ${k}, ${i + 2} shards, state: `, stateOf((await opCall('GET', opt, '/state')).body), snap));
    }
    expect(problems.slice(0, 10)).toEqual([]);
    // The checkpoints agree too (tensor for tensor; metadata but for the id and times).
    const file = async (opt: Created) => (await callBytes('GET', `/v1/optimizers/${opt.id}/state`, undefined, authed(opt.token, { accept: 'application/vnd.safetensors' }))).bytes.length;
    for (const opt of sharded) expect(await file(opt)).toBe(await file(one));
  });
});
