#!/usr/bin/env python3
"""Fit y = 3x - 2 (plus noise) with a hosted adam-api optimizer.

The data are deterministic (a seeded generator). Each step computes the mean squared error and its
gradients locally (with numpy when it is importable, in plain Python otherwise), sends the gradients
to the hosted optimizer and gets the new parameters back. The script prints the loss every
--every steps and exits with status 1 if the final loss is not below --threshold.

    python3 examples/python/linear_regression.py                  # server at $ADAM_API or localhost:8787
    python3 examples/python/linear_regression.py --base-url http://127.0.0.1:8787 --steps 300
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import uuid

# The package in this repository (clients/python); pip install ./clients/python makes this line unneeded.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
from adam_api import AdamApi, AdamApiError  # noqa: E402

try:  # numpy is optional: the plain-Python path gives the same numbers (up to rounding).
    import numpy as np
except ImportError:  # pragma: no cover - depends on the machine
    np = None

TRUE_W, TRUE_B, NOISE = 3.0, -2.0, 0.1


def make_data(n: int, seed: int = 0):
    """n points with x evenly spaced in [-1, 1] and y = 3x - 2 + N(0, 0.1^2) noise, always the same."""
    rng = random.Random(seed)
    xs = [-1.0 + 2.0 * i / (n - 1) for i in range(n)]
    ys = [TRUE_W * x + TRUE_B + rng.gauss(0.0, NOISE) for x in xs]
    return xs, ys


def loss_and_grads_python(w: float, b: float, xs, ys):
    """MSE = mean((w x + b - y)^2) and its gradients d/dw = 2 mean(r x), d/db = 2 mean(r)."""
    n = len(xs)
    residuals = [w * x + b - y for x, y in zip(xs, ys)]
    loss = sum(r * r for r in residuals) / n
    grad_w = 2.0 * sum(r * x for r, x in zip(residuals, xs)) / n
    grad_b = 2.0 * sum(residuals) / n
    return loss, grad_w, grad_b


def loss_and_grads_numpy(w: float, b: float, xs, ys):
    r = w * xs + b - ys
    return float(np.mean(r * r)), float(2.0 * np.mean(r * xs)), float(2.0 * np.mean(r))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=os.environ.get("ADAM_API_URL") or os.environ.get("ADAM_API") or "http://localhost:8787", help="adam-api base URL (default: $ADAM_API or http://localhost:8787)")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    parser.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (default 0.1)")
    parser.add_argument("--points", type=int, default=64, help="data points (default 64)")
    parser.add_argument("--every", type=int, default=20, help="print the loss every N steps (default 20)")
    parser.add_argument("--threshold", type=float, default=0.02, help="fail unless the final MSE is below this (default 0.02; the noise alone gives about 0.01)")
    parser.add_argument("--no-numpy", action="store_true", help="compute the gradients in plain Python even if numpy is available")
    parser.add_argument("--keep", action="store_true", help="keep the hosted optimizer instead of deleting it at the end")
    args = parser.parse_args(argv)

    xs, ys = make_data(args.points)
    use_numpy = np is not None and not args.no_numpy
    if use_numpy:
        xs, ys = np.asarray(xs), np.asarray(ys)
        loss_and_grads = loss_and_grads_numpy
    else:
        loss_and_grads = loss_and_grads_python
    print(f"fitting y = {TRUE_W}x + ({TRUE_B}) + noise on {args.points} points with a hosted Adam (lr={args.lr}) at {args.base_url}; gradients with {'numpy' if use_numpy else 'plain Python'}")

    api = AdamApi(args.base_url)
    opt = api.create_optimizer({"w": 0.0, "b": 0.0}, hyperparams={"lr": args.lr}, dtype="float64")
    print(f"optimizer {opt.id}")
    run_id = uuid.uuid4().hex[:8]
    try:
        params = opt.params()
        loss = float("nan")
        for step in range(args.steps):
            loss, grad_w, grad_b = loss_and_grads(params["w"], params["b"], xs, ys)
            if step % args.every == 0:
                print(f"step {step:4d}  loss {loss:.6f}  w {params['w']:+.4f}  b {params['b']:+.4f}")
            # The key makes a retry of this request (e.g. after a timeout) safe: never applied twice.
            out = opt.step({"w": grad_w, "b": grad_b}, loss=loss, idempotency_key=f"{run_id}-{step}", expected_step=step)
            params = out["params"]
        loss, _, _ = loss_and_grads(params["w"], params["b"], xs, ys)
        history = opt.history(limit=5)["entries"]
        print(f"step {args.steps:4d}  loss {loss:.6f}  w {params['w']:+.4f}  b {params['b']:+.4f}")
        print(f"last recorded steps: {[(e['step'], round(e['loss'], 6)) for e in history]}")
    except AdamApiError as err:
        print(f"error: {err}", file=sys.stderr)
        if err.problem:
            print(f"problem: {err.problem}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            opt.delete()

    print(f"final loss: {loss:.6f} (threshold {args.threshold})")
    print(f"fitted: w = {params['w']:.4f}, b = {params['b']:.4f} (true: {TRUE_W}, {TRUE_B})")
    if not loss < args.threshold:
        print(f"FAILED: final loss {loss:.6f} is not below {args.threshold}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
