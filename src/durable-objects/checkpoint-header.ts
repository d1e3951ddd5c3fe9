// The byte bound of a hosted optimizer's checkpoint header, checked wherever a layout is given:
// by the Worker before it relays a create or restore (so names cannot push the RPC value past its
// 32 MiB), and by the object itself. Pure: no storage, no HTTP.

import { fieldError, validationProblem } from '../lib/problem.ts';
import type { OptimizerDef } from '../optim/optimizer.ts';
import { namedLeaves } from '../tensors/names.ts';
import { layoutSize, type TensorLayout } from '../tensors/tree.ts';
import { MAX_HEADER_BYTES, entryBytesBound, utf8Length } from '../wire/safetensors.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDef = OptimizerDef<any>;

/** Room in a checkpoint's header for the `__metadata__` besides the layout (hyperparams, schedule, ids, times). */
const CHECKPOINT_METADATA_BYTES = 256 * 1024;

/**
 * 422 unless the safetensors checkpoint of `layout` has a header within MAX_HEADER_BYTES, so
 * GET state → PUT state round-trips at every size: each tensor is named once per slot
 * (`params/…`, the optimizer's slots such as `exp_avg/…`, `step/…`, scalars) and once more in
 * `__metadata__.layout` (JSON text in a JSON string: escaped twice). Runs before anything changes.
 */
export function checkCheckpointHeader(def: AnyDef, layout: TensorLayout, path: Array<string | number>): void {
  // The optimizer's tensor prefixes: params, its slots, the step count and its scalars (0-d).
  const scalarNames = new Set(['step', ...def.scalars.map((s) => s.name)]);
  const prefixes = ['params', ...def.slots.map((s) => s.name), ...scalarNames];
  // Data offsets count bytes of the data section: every slot in float64 bounds them.
  const offsetDigits = String(prefixes.length * 8 * layoutSize(layout)).length;
  let bytes = CHECKPOINT_METADATA_BYTES;
  for (const leaf of namedLeaves(layout)) {
    const quoted = JSON.stringify(leaf.name);
    const nameBytes = utf8Length(quoted);
    for (const slot of prefixes) bytes += entryBytesBound(slot.length + 1 + nameBytes, scalarNames.has(slot) ? [] : leaf.shape, offsetDigits);
    bytes += utf8Length(JSON.stringify(quoted)) - 1; // in __metadata__.layout: JSON text inside a JSON string, a comma between
  }
  if (bytes > MAX_HEADER_BYTES) {
    throw validationProblem([
      fieldError(path, `the tensor names and shapes are too long for a checkpoint: its safetensors header would take up to ${bytes} bytes, more than ${MAX_HEADER_BYTES} (16 MiB); use shorter names or fewer tensors`),
    ]);
  }
}
