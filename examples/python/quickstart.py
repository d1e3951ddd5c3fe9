#!/usr/bin/env python3
"""A tour of the Python client (the adam_api package, clients/python): every operation once, checking each answer.

    python3 examples/python/quickstart.py [--base-url http://localhost:8787]

Exits with status 1 (and says why) if an answer is not what adam-api documents.
"""

from __future__ import annotations

import argparse
import os
import sys

# The package in this repository (clients/python); pip install ./clients/python makes this line unneeded.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
from adam_api import AdamApi, AdamApiError  # noqa: E402


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok  {what}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=os.environ.get("ADAM_API_URL") or os.environ.get("ADAM_API") or "http://localhost:8787")
    args = parser.parse_args(argv)
    api = AdamApi(args.base_url)

    check(api.health() == {"status": "ok"}, "health")
    check(api.info()["name"] == "adam-api", "service info")
    check(api.openapi()["openapi"].startswith("3.1"), "OpenAPI document")

    # Stateless steps: the README example, then the same step fed back its state.
    out = api.step(params=[1.0, -2.0, 3.0], grads=[0.1, -0.2, 0.3], hyperparams={"lr": 0.01}, dtype="float64")
    check(out["params"] == [0.9900000009999999, -1.9900000005, 2.990000000333333], f"one step: {out['params']}")
    out2 = api.step(params=out["params"], grads=[0.1, -0.2, 0.3], state=out["state"], hyperparams={"lr": 0.01}, dtype="float64")
    check(out2["state"]["step"] == 2 and out2["params"][0] < out["params"][0], f"second step from the returned state: step {out2['state']['step']}")

    try:
        api.step(params=[1.0], grads=[0.1], hyperparams={"lr": -1})
        check(False, "a negative lr is refused")
    except AdamApiError as err:
        check(err.status == 422 and err.type == "urn:adam-api:problem:validation-error", f"422 problem+json: {err}")
        check(err.errors[0]["field"] == "hyperparams.lr", "the problem names the field")

    # Schedules.
    lr = api.evaluate_schedule({"type": "cosine", "lr": 0.1, "total_steps": 100}, steps=[0, 50, 100])["lr"]
    check(lr == [0.1, 0.05000000000000004, 0], f"cosine schedule (torch's recursive CosineAnnealingLR): {lr}")
    svg = api.plot_schedule({"type": "step", "lr": 0.1, "step_size": 30}, steps={"stop": 100})
    check(svg.lstrip().startswith("<?xml") and "<svg" in svg, "schedule plot is SVG")

    # A hosted optimizer, its whole life.
    opt = api.create_optimizer({"w": [0.0, 0.0], "b": 0.0}, hyperparams={"lr": 0.1})
    check(opt.created["step"] == 0 and opt.etag is not None, f"created {opt.id[:12]}… at step 0")
    grads = {"w": [0.5, -0.25], "b": 0.1}
    first = opt.step(grads, loss=0.75, idempotency_key="quickstart-1")
    retry = opt.step(grads, loss=0.75, idempotency_key="quickstart-1")
    check(first["step"] == 1 and retry.get("replayed") is True and retry["params"] == first["params"], "a retry with the same Idempotency-Key is replayed")
    try:
        opt.step(grads, expected_step=0)
        check(False, "a stale expected_step is refused")
    except AdamApiError as err:
        check(err.status == 409, f"stale expected_step: {err.status} {err.title}")
    check(opt.params() == first["params"], "params after one step")
    snapshot = opt.state()
    check(snapshot["step"] == 1 and "m" in snapshot and "v" in snapshot, "state snapshot")
    opt.step({"w": [1.0, 1.0], "b": 1.0}, loss=0.5, if_match=opt.etag)
    check(opt.info()["step"] == 2, "second step with If-Match")
    check(opt.restore(snapshot)["step"] == 1 and opt.params() == first["params"], "restore the snapshot: back to step 1")
    check(opt.update(hyperparams={"lr": 0.05})["next_lr"] == 0.05, "PATCH the learning rate")
    check(opt.update(schedule={"type": "exponential", "lr": 0.05, "gamma": 0.5})["schedule"]["type"] == "exponential", "PATCH a schedule")
    check(opt.update(schedule=None)["schedule"] is None, "remove the schedule")
    entries = opt.history()["entries"]
    check([e["loss"] for e in entries][:1] == [0.75], f"history: {[(e['step'], e['loss']) for e in entries]}")
    check("<svg" in opt.plot_history(), "history plot is SVG")
    opt.delete()
    try:
        opt.info()
        check(False, "a deleted optimizer is gone")
    except AdamApiError as err:
        check(err.status == 404 and err.type == "urn:adam-api:problem:not-found", f"deleted: {err.status} {err.type}")

    print("quickstart: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
