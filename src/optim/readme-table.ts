// The README's table of optimizers, written from the registry (scripts/readme-optimizers.ts puts
// it in README.md; test/readme.test.ts fails when the README's copy drifts from it). Not used by
// the Worker.

import type { HyperparamDef, OptimizerDef } from './optimizer.ts';
import { OPTIMIZERS } from './registry.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;

export const TABLE_BEGIN = '<!-- optimizers-table:begin (generated from src/optim/registry.ts by `npm run readme:optimizers`) -->';
export const TABLE_END = '<!-- optimizers-table:end -->';

function hyperparam(name: string, d: HyperparamDef): string {
  if (d.default === undefined) return `\`${name}\` (required)`;
  return `\`${name}=${String(d.default)}\``;
}

const STEP_COUNTER = { float32: 'float32 tensor', integer: 'int', none: 'none' } as const;

function row(def: AnyDef): string {
  const route = `\`POST /v1/${def.name}/step\``;
  const hps = Object.entries(def.hyperparams).map(([k, d]) => hyperparam(k, d as HyperparamDef)).join(', ');
  const state = [...def.slots.map((s) => `\`${s.name}\``), ...def.scalars.map((s) => `\`${s.name}\``)].join(', ') || '—';
  return `| \`${def.name}\` | ${route} | ${hps} | \`${def.torch}\` | ${state}; step: ${STEP_COUNTER[def.stepCounter]} |`;
}

/** The table, markers included, one line per optimizer in registry order. */
export function optimizersTable(): string {
  return [
    TABLE_BEGIN,
    '| name | route | hyperparameters (defaults) | torch | state (`state_dict` names); step count |',
    '|---|---|---|---|---|',
    ...OPTIMIZERS.map(row),
    TABLE_END,
  ].join('\n');
}
