// torch.optim.SGD, torch 1.13 single-tensor path (sgd.py:225-245), dense and sparse gradients.

import { dtypeOps } from '../dtype-ops.ts';
import { flag, MAXIMIZE, nonNegative, type OptimizerDef, type SparseStepArgs, type StepArgs } from '../optimizer.ts';
import { addSparse, negated } from '../sparse.ts';

export interface SgdHyperparams {
  [key: string]: number | boolean;
  lr: number;
  momentum: number;
  dampening: number;
  weight_decay: number;
  nesterov: boolean;
  maximize: boolean;
}

/**
 * g = ±grad (+ wd·p); with momentum: buf = g on its first step (a clone: no dampening), else
 * buf = momentum·buf + (1-dampening)·g, and g = g + momentum·buf (nesterov) or buf; p -= lr·g.
 */
function step({ dtype, hp, params, grads, slots, fresh }: StepArgs<SgdHyperparams>): Record<string, number> {
  const { r, fma } = dtypeOps(dtype);
  const wd = r(hp.weight_decay), negLr = r(-hp.lr);
  const mom = r(hp.momentum), oneMinusDamp = r(1 - hp.dampening);
  const sign = hp.maximize ? -1 : 1;
  const buf = hp.momentum !== 0 ? slots.momentum_buffer! : null;
  const clone = fresh.has('momentum_buffer');
  const n = params.length;
  for (let i = 0; i < n; i++) {
    const p = params[i]!;
    let g = sign * grads[i]!; // :226 -grad if maximize
    if (hp.weight_decay !== 0) g = fma(p, wd, g); // :229 d_p.add(param, alpha=wd)
    if (buf !== null) {
      // :235 torch.clone(d_p) on the first step; :238 buf.mul_(momentum).add_(d_p, alpha=1-dampening)
      const b = clone ? g : fma(g, oneMinusDamp, r(buf[i]! * mom));
      buf[i] = b;
      g = hp.nesterov ? fma(b, mom, g) : b; // :241 d_p.add(buf, alpha=momentum) / :243 d_p = buf
    }
    params[i] = fma(g, negLr, p); // :245 param.add_(d_p, alpha=-lr)
  }
  return {};
}

/**
 * The same lines with d_p sparse (sgd.py:225-245): nothing coalesces it, so each row sent is added
 * on its own, in the order sent (see addSparse). With momentum, torch's first step makes a sparse
 * buffer (a clone of d_p), returned as its `to_dense()`; from a dense buffer, torch's
 * `buf.mul_(momentum).add_(d_p)` scales every row and adds the sent ones, and the param moves by
 * the whole buffer. weight_decay and nesterov are refused (checkSparse).
 */
function sparseStep({ dtype, hp, params, grad, shape, slots, fresh }: SparseStepArgs<SgdHyperparams>): Record<string, number> {
  const { r, fma } = dtypeOps(dtype);
  const negLr = r(-hp.lr), mom = r(hp.momentum), oneMinusDamp = r(1 - hp.dampening);
  const d_p = hp.maximize ? negated(grad) : grad; // :226 -d_p_list[i]
  if (hp.momentum === 0) {
    addSparse(dtype, params, d_p, negLr, shape); // :245 param.add_(d_p, alpha=-lr)
    return {};
  }
  const buf = slots.momentum_buffer!;
  if (fresh.has('momentum_buffer')) {
    // :235 torch.clone(d_p), sparse; its to_dense() is zeros with each row added in turn.
    buf.fill(0);
    addSparse(dtype, buf, d_p, 1, shape);
    addSparse(dtype, params, d_p, negLr, shape); // :245 param.add_(buf, alpha=-lr), buf the sparse clone
    return {};
  }
  const n = params.length;
  for (let i = 0; i < n; i++) buf[i] = r(buf[i]! * mom); // :238 buf.mul_(momentum)
  addSparse(dtype, buf, d_p, oneMinusDamp, shape); // :238 .add_(d_p, alpha=1 - dampening)
  for (let i = 0; i < n; i++) params[i] = fma(buf[i]!, negLr, params[i]!); // :243 d_p = buf; :245 param.add_(d_p, alpha=-lr)
  return {};
}

export const sgd: OptimizerDef<SgdHyperparams> = {
  name: 'sgd',
  torch: 'torch.optim.SGD',
  description:
    'Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and L2 weight decay. `lr` is required, as in torch. ' +
    'A gradient may also be sparse rows, `{"indices": [...], "values": [[row], ...]}` (JSON; stateless and hosted steps), as an embedding\'s backward makes ' +
    'them: each row sent is added on its own, as torch adds an uncoalesced gradient, and the momentum buffer stays dense (torch\'s first sparse ' +
    'step keeps a sparse clone, returned as its to_dense()). With a sparse gradient, weight_decay (torch raises) and nesterov (torch needs its ' +
    'sparse buffer) are refused.',
  hyperparams: {
    lr: nonNegative(undefined, 'Learning rate (torch `lr`), required: torch.optim.SGD has no default.'),
    momentum: nonNegative(0, 'Momentum factor (torch `momentum`); 0 keeps no buffer.'),
    dampening: {
      type: 'number',
      default: 0,
      description: 'Dampening for momentum (torch `dampening`), not range-checked, as in torch; ignored on the step that creates the buffer.',
    },
    weight_decay: nonNegative(0, 'L2 penalty added to the gradient (torch `weight_decay`); 0 with a sparse gradient (torch raises).'),
    nesterov: flag(false, 'Nesterov momentum (torch `nesterov`); needs momentum > 0 and dampening = 0 in `hyperparams` (torch checks its constructor\'s defaults; a param group is not checked, and with momentum 0 nesterov has no effect), and a dense gradient.'),
    maximize: MAXIMIZE,
  },
  // torch 1.13's SGD.__init__ checks its defaults only: a group may set (or inherit) nesterov with
  // momentum 0, where _single_tensor_sgd never reads it (no buffer: plain SGD), or with a dampening.
  constructorCheck(hp) {
    if (hp.nesterov && (hp.momentum <= 0 || hp.dampening !== 0)) {
      return { field: 'nesterov', message: 'Nesterov momentum requires a momentum and zero dampening (as torch.optim.SGD).' };
    }
    return null;
  },
  checkSparse(hp) {
    if (hp.weight_decay !== 0) {
      // sgd.py:229 d_p.add(param, alpha=weight_decay) with d_p sparse
      return { field: 'weight_decay', message: 'torch.optim.SGD cannot apply weight_decay to a sparse gradient (torch raises "add(sparse, dense) is not supported"); use 0, or a dense gradient' };
    }
    if (hp.nesterov) {
      // sgd.py:241 d_p.add(buf, alpha=momentum): torch raises as above once the buffer is dense, as the API keeps it
      return {
        field: 'nesterov',
        message: 'Nesterov momentum with a sparse gradient needs torch\'s sparse momentum buffer, which the API keeps dense (from a dense buffer torch raises "add(sparse, dense) is not supported"); use false, or a dense gradient',
      };
    }
    return null;
  },
  slots: [
    {
      name: 'momentum_buffer',
      description: 'The momentum buffer (torch `momentum_buffer`), created from the first gradient of a step with momentum != 0; while momentum is 0 it is kept unchanged, unread.',
      present: (hp) => hp.momentum !== 0,
      initial: () => null,
    },
  ],
  scalars: [],
  stepCounter: 'none',
  step,
  sparse: 'also',
  sparseStep,
};
