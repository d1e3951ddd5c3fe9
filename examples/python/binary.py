#!/usr/bin/env python3
"""The binary wire from Python's standard library: raw float32 tensors and safetensors checkpoints.

    python3 examples/python/binary.py [--base-url http://localhost:8787] [--require-torch]

Creates an optimizer by shapes, uploads its params in raw parts, fits a small linear model
(y = W x + b) by stepping with raw float32 gradients, reads the params raw, and moves the state
to a second optimizer through a safetensors checkpoint, checking each answer (a twin stepped
with JSON must hold the very same bits). With numpy, the same through np.frombuffer / astype.
With torch, the checkpoint goes into torch (adam_api.checkpoint.to_torch), training goes on there and on
the server side by side, bit for bit, and comes back (adam_api.checkpoint.from_torch).
Exits with status 1 (and says why) if an answer is not what adam-api documents.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import random
import struct
import sys

# The package in this repository (clients/python); pip install ./clients/python makes this line unneeded.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
from adam_api import AdamApi, AdamApiError  # noqa: E402

SHAPES = {"fc.weight": [3, 4], "fc.bias": [3]}  # layout order: the weight's 12 elements, then the bias's 3
HYPERPARAMS = {"lr": 0.05, "amsgrad": True, "weight_decay": 0.01, "decoupled_weight_decay": True}


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok  {what}")


def f32(values) -> list:
    """Python floats rounded to float32 (what the optimizer holds)."""
    return list(array.array("f", values))


def make_data(n=32, seed=0):
    rng = random.Random(seed)
    xs = [[rng.uniform(-1, 1) for _ in range(4)] for _ in range(n)]
    w_true, b_true = [[rng.gauss(0, 1) for _ in range(4)] for _ in range(3)], [rng.gauss(0, 1) for _ in range(3)]
    ys = [[sum(w * x for w, x in zip(row, xi)) + b for row, b in zip(w_true, b_true)] for xi in xs]
    return xs, ys


def loss_and_grads(flat, xs, ys):
    """MSE of y = W x + b (W row-major in flat[:12], b in flat[12:]) and its gradient, in layout order."""
    w, b = [flat[4 * i:4 * i + 4] for i in range(3)], flat[12:]
    gw, gb, loss = [0.0] * 12, [0.0] * 3, 0.0
    for xi, yi in zip(xs, ys):
        for i in range(3):
            r = sum(wj * xj for wj, xj in zip(w[i], xi)) + b[i] - yi[i]
            loss += r * r
            gb[i] += 2 * r
            for j in range(4):
                gw[4 * i + j] += 2 * r * xi[j]
    n = len(xs) * 3
    return loss / n, [g / n for g in gw + gb]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=os.environ.get("ADAM_API_URL") or os.environ.get("ADAM_API") or "http://localhost:8787")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--require-torch", action="store_true", help="fail instead of skipping the torch part when torch is missing")
    args = parser.parse_args(argv)
    api = AdamApi(args.base_url)
    xs, ys = make_data()
    rng = random.Random(1)
    start = f32(rng.gauss(0, 0.5) for _ in range(15))

    # Create by shapes, then upload in raw parts: the weight in two runs, the bias by flat offset.
    opt = api.create_optimizer_by_shapes(SHAPES, hyperparams=HYPERPARAMS)
    layout = opt.created["layout"]
    check([(t["name"], t["offset"], t["size"]) for t in layout] == [("fc.weight", 0, 12), ("fc.bias", 12, 3)], f"layout {layout}")
    opt.upload("fc.weight", array.array("f", start[:5]))
    info = opt.upload("fc.weight", array.array("f", start[5:12]), offset=5)
    check(info["upload"]["missing_tensors"] == ["fc.bias"], f"weight uploaded in two parts, waiting for {info['upload']['missing_tensors']}")
    try:
        opt.step_raw(array.array("f", [0.0] * 15))
        check(False, "a step before every param is uploaded is refused")
    except AdamApiError as err:
        check(err.status == 409, f"step before the upload is complete: {err.status} {err.detail}")
    info = opt.upload(None, struct.pack("<3f", *start[12:]), offset=12)
    check(info["upload"]["complete"], "bias uploaded by flat offset: complete")
    check(list(array.array("f", opt.params_raw())) == start, "params read back raw")

    # Train with raw float32 gradients; a twin created from the same params steps with JSON.
    twin = api.create_optimizer({"fc.weight": [start[4 * i:4 * i + 4] for i in range(3)], "fc.bias": start[12:]}, hyperparams=HYPERPARAMS)
    params, first_loss = start, None
    for k in range(args.steps):
        loss, grads = loss_and_grads(params, xs, ys)
        first_loss = first_loss if first_loss is not None else loss
        out = opt.step_raw(array.array("f", grads), loss=loss, idempotency_key=f"binary-{k}")
        params = list(array.array("f", out["params"]))
        twin_params = twin.step({"fc.weight": [f32(grads[4 * i:4 * i + 4]) for i in range(3)], "fc.bias": f32(grads[12:])})["params"]
        if params != sum(twin_params["fc.weight"], []) + twin_params["fc.bias"]:
            check(False, f"step {k + 1}: raw and JSON steps give the same bits")
    check(out["step"] == args.steps, f"{args.steps} raw steps, loss {first_loss:.4f} -> {loss_and_grads(params, xs, ys)[0]:.4f}")
    check(loss_and_grads(params, xs, ys)[0] < first_loss / 2, "the loss fell")
    check(True, "raw and JSON steps gave the same bits at every step")
    check(array.array("f", opt.params_raw()).tolist() == params, "GET params raw equals the last step's answer")
    try:
        opt.step_raw(array.array("f", grads[:14]))
        check(False, "a gradient one element short is refused")
    except AdamApiError as err:
        check(err.status == 422 and err.errors[0]["field"] == "body", f"a gradient one element short: 422 {err.detail}")

    # A safetensors checkpoint into a second optimizer (any shape; it takes the checkpoint's).
    ckpt = opt.checkpoint()
    (n,) = struct.unpack_from("<Q", ckpt)
    header = json.loads(ckpt[8:8 + n])
    names = sorted(k for k in header if k != "__metadata__")
    check(names == sorted(f"{slot}/{t}" for slot in ("params", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step") for t in SHAPES),
          f"checkpoint tensors: {names}")
    check(header["__metadata__"]["step"] == str(args.steps), "checkpoint metadata step")
    copy = api.create_optimizer([0.0])
    restored = copy.restore_checkpoint(ckpt)
    check(restored["step"] == args.steps and restored["shapes"] == SHAPES, "checkpoint PUT into a second optimizer")
    loss, grads = loss_and_grads(params, xs, ys)
    a = opt.step_raw(array.array("f", grads))["params"]
    b = copy.step_raw(array.array("f", grads))["params"]
    check(a == b, "both go on with the same bits")
    params = list(array.array("f", a))

    try:
        import numpy as np
    except ImportError:
        np = None
        print("numpy: not importable, numpy part skipped")
    if np is not None:
        p = np.frombuffer(opt.params_raw(), "<f4")
        check(p.tolist() == params, 'numpy: np.frombuffer(body, "<f4")')
        g = np.array(loss_and_grads(params, xs, ys)[1])  # float64
        out = opt.step_raw(g.astype("<f4"))
        check(np.array_equal(np.frombuffer(out["params"], "<f4"), np.frombuffer(copy.step_raw(g, dtype="float32")["params"], "<f4")),
              'numpy: a.astype("<f4") gradients')
        params = np.frombuffer(out["params"], "<f4").tolist()

    try:
        import torch
    except ImportError:
        torch = None
    if torch is None:
        if args.require_torch:
            raise SystemExit("FAILED: torch is not importable (--require-torch)")
        print("torch: not importable, to_torch/from_torch part skipped")
    else:
        torch_roundtrip(api, opt, xs, ys, torch)

    for o in (opt, twin, copy):
        o.delete()
    print("binary: all checks passed")
    return 0


def torch_roundtrip(api, opt, xs, ys, torch):
    """The server's checkpoint into torch; torch and the server go on side by side; back with from_torch."""
    from adam_api.checkpoint import from_torch, load, to_torch

    torch.set_num_threads(1)
    model = torch.nn.ModuleDict({"fc": torch.nn.Linear(4, 3)})  # parameter names fc.weight, fc.bias
    optimizer = to_torch(opt.checkpoint(), model)
    check(type(optimizer).__name__ == "AdamW" and optimizer.param_groups[0]["amsgrad"], "torch: to_torch gives AdamW with amsgrad")
    x, y = torch.tensor(xs), torch.tensor(ys)
    for k in range(5):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model["fc"](x), y).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])  # layout order
        optimizer.step()
        served = opt.step_raw(array.array("f", grads.tolist()))["params"]
        here = struct.pack("<15f", *torch.cat([p.detach().flatten() for p in model.parameters()]).tolist())
        if served != here:
            check(False, f"torch: step {k + 1} equals the server's bit for bit")
    check(True, "torch: 5 steps after to_torch equal the server's, bit for bit")
    mine, _ = load(from_torch(model, optimizer))
    theirs, meta = load(opt.checkpoint())
    check(all(torch.equal(mine[k], theirs[k]) for k in mine) and set(mine) == set(theirs), "torch: from_torch equals the server's checkpoint, tensor for tensor")
    back = api.create_optimizer([0.0])
    check(back.restore_checkpoint(from_torch(model, optimizer))["step"] == int(meta["step"]), "torch: from_torch PUTs back")
    back.delete()


if __name__ == "__main__":
    sys.exit(main())
