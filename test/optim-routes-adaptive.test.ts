// NAdam, RAdam and Adadelta's stateless steps against real torch 1.13 trajectories, in JSON and
// in safetensors, bit for bit (test/helpers/optim-replay.ts; split from test/optim-routes.test.ts).

import adadeltaCases from './fixtures/optim/adadelta.json';
import nadamCases from './fixtures/optim/nadam.json';
import radamCases from './fixtures/optim/radam.json';
import { replaySuites } from './helpers/optim-replay.ts';

replaySuites({ nadam: nadamCases, radam: radamCases, adadelta: adadeltaCases });
