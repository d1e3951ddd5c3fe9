// torch.optim.Adagrad, torch 1.13 single-tensor path, dense gradients (adagrad.py:244-279) and
// sparse ones (adagrad.py:259-270).

import { dtypeOps } from '../dtype-ops.ts';
import { MAXIMIZE, nonNegative, type OptimizerDef, type SparseStepArgs, type StepArgs } from '../optimizer.ts';
import { addSparse, coalesce, negated } from '../sparse.ts';

export interface AdagradHyperparams {
  [key: string]: number | boolean;
  lr: number;
  lr_decay: number;
  weight_decay: number;
  initial_accumulator_value: number;
  eps: number;
  maximize: boolean;
}

/** g = ±grad (+ wd·p); clr = lr / (1 + (t-1)·lr_decay); sum += g²; p -= clr·g / (sqrt(sum) + eps). */
function step({ dtype, hp, params, grads, slots, step }: StepArgs<AdagradHyperparams>): Record<string, number> {
  const { r, fma } = dtypeOps(dtype);
  const t = Math.fround(step + 1); // :246 state_step += 1 (float32 tensor)
  const clr = hp.lr / (1 + (t - 1) * hp.lr_decay); // :257 host double
  const wd = r(hp.weight_decay), eps = r(hp.eps), negClr = r(-clr);
  const sign = hp.maximize ? -1 : 1;
  const sum = slots.sum!;
  const n = params.length;
  for (let i = 0; i < n; i++) {
    const p = params[i]!;
    let g = sign * grads[i]!; // :248
    if (hp.weight_decay !== 0) g = fma(p, wd, g); // :255 grad.add(param, alpha=wd)
    const s = fma(g, g, sum[i]!); // :277 state_sum.addcmul_(grad, grad, value=1)
    sum[i] = s;
    const std = r(r(Math.sqrt(s)) + eps); // :278 state_sum.sqrt().add_(eps)
    params[i] = r(p + r(r(negClr * g) / std)); // :279 param.addcdiv_(grad, std, value=-clr)
  }
  return {};
}

/**
 * A sparse gradient: coalesced (rows sorted, repeats summed), then only its rows change:
 * sum += g², p -= clr·g / (sqrt(sum) + eps), p moved row by row as addSparse does.
 */
function sparseStep({ dtype, hp, params, grad, shape, slots, step }: SparseStepArgs<AdagradHyperparams>): Record<string, number> {
  const { r } = dtypeOps(dtype);
  const t = Math.fround(step + 1); // :246 state_step += 1 (float32 tensor)
  const clr = hp.lr / (1 + (t - 1) * hp.lr_decay); // :257 host double
  const eps = r(hp.eps);
  const g = coalesce(dtype, hp.maximize ? negated(grad) : grad); // :248 -grad; :260 grad.coalesce()
  const sum = slots.sum!;
  const { rows, values, rowSize } = g;
  const update = dtype === 'float32' ? new Float32Array(values.length) : new Float64Array(values.length);
  for (let k = 0; k < rows.length; k++) {
    const base = rows[k]! * rowSize;
    for (let j = 0; j < rowSize; j++) {
      const x = values[k * rowSize + j]!;
      const s = r(sum[base + j]! + r(x * x)); // :265 state_sum.add_(_make_sparse(grad, grad_indices, grad_values.pow(2)))
      sum[base + j] = s;
      const std = r(r(Math.sqrt(s)) + eps); // :266-267 state_sum.sparse_mask(grad)._values().sqrt_().add_(eps)
      update[k * rowSize + j] = r(x / std); // :269 grad_values / std_values
    }
  }
  addSparse(dtype, params, { ...g, values: update }, r(-clr), shape); // :268 param.add_(_make_sparse(...), alpha=-clr)
  return {};
}

export const adagrad: OptimizerDef<AdagradHyperparams> = {
  name: 'adagrad',
  torch: 'torch.optim.Adagrad',
  description:
    'Adagrad (Duchi et al. 2011): per-element learning rates from the sum of squared gradients. A gradient may also be sparse rows, ' +
    '`{"indices": [...], "values": [[row], ...]}` (JSON; stateless and hosted steps), as an embedding\'s backward makes it: torch coalesces it (repeated rows ' +
    'summed) and changes only those rows of `sum` and of the params. torch refuses weight_decay with a sparse gradient, and a sparse gradient ' +
    'without rows on a tensor of two or more dimensions whose last is 2 or more.',
  hyperparams: {
    lr: nonNegative(0.01, 'Learning rate (torch `lr`).'),
    lr_decay: nonNegative(0, 'Learning-rate decay: step t uses lr / (1 + (t-1)·lr_decay) (torch `lr_decay`).'),
    weight_decay: nonNegative(0, 'L2 penalty added to the gradient (torch `weight_decay`); 0 with a sparse gradient (torch raises).'),
    initial_accumulator_value: nonNegative(
      0,
      'Starting value of the sum of squares (torch `initial_accumulator_value`): the top-level value starts every tensor\'s `sum`. A param group may set it ' +
        '(torch keeps it in the group) but, as in torch 1.13, whose `Adagrad.__init__` fills `sum` from its constructor argument, it has no effect.',
    ),
    eps: nonNegative(1e-10, 'Added to sqrt(sum) (torch `eps`).'),
    maximize: MAXIMIZE,
  },
  slots: [
    {
      name: 'sum',
      description: 'Sum of squared gradients (torch `sum`), starting at initial_accumulator_value.',
      present: () => true,
      initial: (hp) => hp.initial_accumulator_value,
      nonNegative: true,
    },
  ],
  scalars: [],
  stepCounter: 'float32',
  step,
  sparse: 'also',
  sparseStep,
  checkSparse(hp) {
    if (hp.weight_decay === 0) return null;
    // adagrad.py:250-254
    return { field: 'weight_decay', message: 'torch.optim.Adagrad refuses weight_decay with a sparse gradient ("weight_decay option is not compatible with sparse gradients"); use 0, or a dense gradient' };
  },
  checkSparseGrad(shape, rows) {
    if (rows > 0 || shape.length < 2 || shape[shape.length - 1]! <= 1) return null;
    // adagrad.py:265-269: _make_sparse gives empty_like(grad), whose values (shape [0]) broadcast with
    // the rows' only when their last dimension is 0 or 1 (checked with torch 1.13)
    return 'torch.optim.Adagrad raises for a sparse gradient without rows on a tensor of two or more dimensions whose last is not 0 or 1 (a size mismatch); send null to leave the tensor as it is';
  },
};
