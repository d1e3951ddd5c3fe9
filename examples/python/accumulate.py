#!/usr/bin/env python3
"""Many workers, one optimizer: data-parallel training over HTTP, standard library only.

    python3 examples/python/accumulate.py [--base-url http://localhost:8787] [--workers 4] [--steps 6]

Creates one hosted Adam optimizer with ``accumulate: {"contributions": N, "reduce": "mean"}`` and
starts N worker processes. Each owns one shard of a small regression data set (y = W x + b). At
every step each worker reads the params (raw float32), computes the gradient of its shard's mean
squared error, rounds it to float32 and posts it as its contribution
(``POST .../step?worker=i&expected_step=k``, a raw float32 body); the first N-1 are answered 202,
the last one applies the step. Then each waits for the new params with
``GET .../params?min_step=k+1&wait=30`` (a long-poll).

Afterwards, in this process, the same training runs on a plain hosted optimizer (no accumulate):
the same per-worker gradients, averaged as the server documents it, in float32 and in ascending
worker id order, ``((g0 + g1) + g2 + ...) / float32(N)`` (numpy: the same expression on float32
arrays), one step each. The two optimizers' params must be equal bit for bit. Exits with status 1
(and says why) otherwise. $ADAM_API_KEY is sent when creating optimizers, if set.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import struct
import sys
import urllib.error
import urllib.request

IN, OUT = 3, 2  # W is [OUT, IN], b is [OUT]; layout (keys in order): W's 6 elements, then b's 2
SIZE = OUT * IN + OUT
SAMPLES_PER_WORKER = 16
RAW = "application/octet-stream"


def f32(x: float) -> float:
    """x rounded to float32 (Python adds and divides in float64: rounding once gives float32's result)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def pack(values) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def unpack(data: bytes) -> list:
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def request(base: str, method: str, path: str, body=None, headers=None):
    """(status, headers, body bytes); 4xx/5xx answers are returned too, not raised."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    h = {"content-type": "application/json"} if isinstance(body, (dict, list)) else {}
    h.update(headers or {})
    req = urllib.request.Request(base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, res.headers, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def shard(worker: int):
    """Worker `worker`'s samples: (x, y) pairs of y = W* x + b* plus a little deterministic noise."""
    w_true = [[0.5, -1.25, 2.0], [1.5, 0.25, -0.75]]
    b_true = [0.3, -0.6]
    out = []
    for k in range(SAMPLES_PER_WORKER):
        n = worker * SAMPLES_PER_WORKER + k
        x = [((n * 37 + j * 11) % 23) / 11.5 - 1.0 for j in range(IN)]
        y = [sum(w_true[o][j] * x[j] for j in range(IN)) + b_true[o] + ((n * 13 + o) % 7 - 3) / 100 for o in range(OUT)]
        out.append((x, y))
    return out


def gradient(params: list, data) -> tuple:
    """The gradient of the shard's mean squared error (float64), rounded to float32, and the loss."""
    w = [params[o * IN:(o + 1) * IN] for o in range(OUT)]
    b = params[OUT * IN:]
    gw = [[0.0] * IN for _ in range(OUT)]
    gb = [0.0] * OUT
    loss = 0.0
    for x, y in data:
        for o in range(OUT):
            err = sum(w[o][j] * x[j] for j in range(IN)) + b[o] - y[o]
            loss += err * err
            for j in range(IN):
                gw[o][j] += 2 * err * x[j] / len(data)
            gb[o] += 2 * err / len(data)
    return [f32(g) for row in gw for g in row] + [f32(g) for g in gb], loss / len(data)


def mean_f32(grads: list) -> list:
    """The server's reduction, in float32: acc = g0; acc = acc + g1; ...; acc / N."""
    acc = list(grads[0])
    for g in grads[1:]:
        acc = [f32(a + x) for a, x in zip(acc, g)]
    return [f32(a / len(grads)) for a in acc]


def worker_main(base: str, opt_id: str, token: str, worker: int, steps: int, errors) -> None:
    auth = {"authorization": f"Bearer {token}"}
    data = shard(worker)
    try:
        step = 0
        status, headers, body = request(base, "GET", f"/v1/optimizers/{opt_id}/params", headers={**auth, "accept": RAW})
        assert status == 200, f"worker {worker}: GET params answered {status}"
        while step < steps:
            params = unpack(body)
            grads, loss = gradient(params, data)
            status, _, answer = request(
                base, "POST", f"/v1/optimizers/{opt_id}/step?worker={worker}&expected_step={step}&loss={loss!r}&return=none",
                pack(grads), {**auth, "content-type": RAW, "accept": "application/json"},
            )
            assert status in (200, 202), f"worker {worker}, step {step}: the contribution answered {status}: {answer[:300]!r}"
            # Wait for the step this contribution joined (long-poll; a 409 says it has not landed yet: ask again).
            while True:
                status, headers, body = request(base, "GET", f"/v1/optimizers/{opt_id}/params?min_step={step + 1}&wait=30", headers={**auth, "accept": RAW})
                if status == 200:
                    break
                assert status == 409, f"worker {worker}: waiting for step {step + 1} answered {status}: {body[:300]!r}"
            step = int(headers["step"])
    except Exception as err:  # reported by the parent
        errors.put(f"{type(err).__name__}: {err}")


def create(base: str, params: list, accumulate=None) -> dict:
    headers = {}
    if os.environ.get("ADAM_API_KEY"):
        headers["authorization"] = f"Bearer {os.environ['ADAM_API_KEY']}"
    body = {"optimizer": "adam", "params": {"W": [params[o * IN:(o + 1) * IN] for o in range(OUT)], "b": params[OUT * IN:]}, "hyperparams": {"lr": 0.05}}
    if accumulate:
        body["accumulate"] = accumulate
    status, _, answer = request(base, "POST", "/v1/optimizers", body, headers)
    if status != 201:
        raise SystemExit(f"FAILED: creating an optimizer answered {status}: {answer[:300]!r}")
    return json.loads(answer)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok  {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", default=os.environ.get("ADAM_API_URL", "http://localhost:8787"))
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    base, n, steps = args.base_url.rstrip("/"), args.workers, args.steps
    initial = [f32(0.1 * ((k * 7) % 5 - 2)) for k in range(SIZE)]

    opt = create(base, initial, {"contributions": n, "reduce": "mean"})
    check(opt.get("accumulate") == {"contributions": n, "reduce": "mean", "received": [], "missing": n}, f"one optimizer taking {n} contributions per step")
    errors = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=worker_main, args=(base, opt["id"], opt["token"], w, steps, errors)) for w in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    problems = []
    while True:
        try:
            problems.append(errors.get(timeout=0.1))
        except queue.Empty:
            break
    check(not problems and all(p.exitcode == 0 for p in procs), f"{n} worker processes trained {steps} steps" + (f": {problems}" if problems else ""))
    auth = {"authorization": f"Bearer {opt['token']}"}
    status, headers, body = request(base, "GET", f"/v1/optimizers/{opt['id']}/params", headers={**auth, "accept": RAW})
    check(status == 200 and headers["step"] == str(steps), f"the shared optimizer is at step {steps}")
    shared = body
    status, _, history = request(base, "GET", f"/v1/optimizers/{opt['id']}/history", headers=auth)
    losses = [e["loss"] for e in json.loads(history)["entries"]]
    print("losses (mean over the workers):", " ".join(f"{x:.4f}" for x in losses))

    # The same training in one process, on a plain optimizer, with the gradients averaged here.
    ref = create(base, initial)
    ref_auth = {"authorization": f"Bearer {ref['token']}"}
    params = list(initial)
    numpy_same = []
    for step in range(steps):
        grads = [gradient(params, shard(w))[0] for w in range(n)]
        mean = mean_f32(grads)
        try:
            import numpy as np

            gs = [np.array(g, dtype=np.float32) for g in grads]
            acc = gs[0]
            for g in gs[1:]:
                acc = acc + g
            numpy_same.append(pack(mean) == (acc / np.float32(n)).astype("<f4").tobytes())
        except ImportError:
            pass
        status, _, body = request(base, "POST", f"/v1/optimizers/{ref['id']}/step", pack(mean), {**ref_auth, "content-type": RAW, "accept": RAW})
        if status != 200:
            raise SystemExit(f"FAILED: the single-process step answered {status}: {body[:300]!r}")
        params = unpack(body)
    check(pack(params) == shared, f"{n} workers through one optimizer equal single-process training with the averaged gradients, bit for bit")
    if numpy_same:
        check(all(numpy_same), "numpy's float32 ((g0 + g1) + ...) / np.float32(N) gives the same bits at every step")
    else:
        print("(numpy not installed: the float32 mean was computed with struct only)")
    for o in (opt, ref):
        request(base, "DELETE", f"/v1/optimizers/{o['id']}", headers={"authorization": f"Bearer {o['token']}"})
    print("W =", [[round(x, 3) for x in params[o * IN:(o + 1) * IN]] for o in range(OUT)], "b =", [round(x, 3) for x in params[OUT * IN:]])
    print("accumulate: all checks passed")


if __name__ == "__main__":
    main()
