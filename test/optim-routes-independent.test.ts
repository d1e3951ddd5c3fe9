// Lion and Muon (no torch 1.13 reference: independent numpy implementations of the papers and of
// torch 2.9, test/fixtures/optim/independent.py) and SparseAdam (torch 1.13, rows in JSON), through
// the stateless steps bit for bit (test/helpers/optim-replay.ts; split from test/optim-routes.test.ts).

import lionFile from './fixtures/optim/lion.json';
import muonFile from './fixtures/optim/muon.json';
import sparseAdamFile from './fixtures/optim/sparseadam.json';
import { replaySuites } from './helpers/optim-replay.ts';

replaySuites({
  lion: { cases: lionFile.cases.map((c) => ({ ...c, optimizer: 'lion' })) },
  muon: { cases: muonFile.cases.map((c) => ({ ...c, optimizer: 'muon' })) },
  // Gradients as rows ({indices, values}), JSON only.
  sparse_adam: { cases: sparseAdamFile.cases.map((c) => ({ ...c, optimizer: 'sparse_adam' })) },
});
