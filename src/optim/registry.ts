// Every optimizer the API serves, by name. Adding one is a folder under src/optim and a line here:
// routes, schemas, OpenAPI components, the catalogue and hosted storage are derived from its
// definition.

import { adadelta } from './adadelta/index.ts';
import { adagrad } from './adagrad/index.ts';
import { adamax } from './adamax/index.ts';
import { lion } from './lion/index.ts';
import { muon } from './muon/index.ts';
import { adam, adamw } from './adamw/index.ts';
import { nadam } from './nadam/index.ts';
import type { OptimizerDef } from './optimizer.ts';
import { radam } from './radam/index.ts';
import { rmsprop } from './rmsprop/index.ts';
import { sgd } from './sgd/index.ts';
import { sparseAdam } from './sparse_adam/index.ts';

// `any`: each definition is typed by its own hyperparameters; callers go through the generic helpers.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;

export const OPTIMIZERS: readonly AnyDef[] = [adam, adamw, sgd, rmsprop, adagrad, adamax, nadam, radam, adadelta, lion, muon, sparseAdam];

const BY_NAME = new Map(OPTIMIZERS.map((d) => [d.name, d]));

export const OPTIMIZER_NAMES = OPTIMIZERS.map((d) => d.name);

/** The definition of `name`, or undefined. */
export function optimizerDef(name: string): AnyDef | undefined {
  return BY_NAME.get(name);
}

/** The refusal of sparse (row) gradients by an optimizer without a sparse branch, naming those that take them. */
export const denseOnlyMessage = (def: AnyDef): string =>
  `${def.torch} takes dense gradients only; sparse (row) gradients go to ${OPTIMIZERS.filter((d) => d.sparse).map((d) => d.name).join(', ')}`;
