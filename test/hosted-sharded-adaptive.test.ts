// Sharded hosted optimizers against torch 1.13: rmsprop and adagrad (test/helpers/sharded-replay.ts; the rest in
// test/hosted-sharded.test.ts).

import rmspropCases from './fixtures/optim/rmsprop.json';
import adagradCases from './fixtures/optim/adagrad.json';
import { plain, replaySharded } from './helpers/sharded-replay.ts';

replaySharded('rmsprop and adagrad', [...plain(rmspropCases), ...plain(adagradCases)], ['rmsprop', 'adagrad']);
