// Sharded hosted optimizers against torch 1.13: nadam and adadelta (test/helpers/sharded-replay.ts; the rest in
// test/hosted-sharded.test.ts).

import nadamCases from './fixtures/optim/nadam.json';
import adadeltaCases from './fixtures/optim/adadelta.json';
import { plain, replaySharded } from './helpers/sharded-replay.ts';

replaySharded('nadam and adadelta', [...plain(nadamCases), ...plain(adadeltaCases)], ['nadam', 'adadelta']);
