"""Times torch.optim.Adam's CPU step (foreach=False, one thread) for the sizes given on the command
line and prints JSON: {"torch": version, "results": [{"n", "dtype", "median_s", "runs"}]}.
Called by scripts/bench.ts; needs /usr/bin/python3 with Debian's python3-torch."""

import json
import statistics
import sys
import time

import torch

torch.set_num_threads(1)


def bench(n, dtype, budget_s=1.0, max_runs=200):
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(n, generator=g, dtype=dtype))
    p.grad = torch.randn(n, generator=g, dtype=dtype)
    opt = torch.optim.Adam([p], lr=1e-3, foreach=False)
    for _ in range(3):
        opt.step()
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < 5 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def main():
    sizes = [int(float(s)) for s in sys.argv[1:]]
    out = []
    for dtype_name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        for n in sizes:
            median, runs = bench(n, dtype)
            out.append({"n": n, "dtype": dtype_name, "median_s": median, "runs": runs})
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": out}))


if __name__ == "__main__":
    main()
