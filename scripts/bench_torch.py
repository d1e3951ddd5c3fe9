"""Times torch.optim.Adam's CPU step (foreach=False, one thread) for the sizes given on the command
line and prints JSON: {"torch", "threads", "capability", "allocator", "results": [{"n", "dtype",
"median_s", "best_s", "times_s"}]} (times_s: every timed step, so runs can be pooled). Called by scripts/bench.ts; needs /usr/bin/python3 with Debian's
python3-torch. bench.ts starts it with Debian's libjemalloc preloaded when present, so that the
step's temporaries reuse memory instead of page-faulting fresh pages (torch at its best).

Each size gets a warm-up of at least 5 steps and 0.3 s before timing, then about BENCH_TORCH_BUDGET_S
seconds (default 1) of timed steps, at least 7 and at most 400. ATEN_CPU_CAPABILITY (avx2, avx512)
picks torch's kernel family; 1.13 defaults to AVX2 even on AVX-512 CPUs."""

import json
import os
import statistics
import sys
import time

import torch

torch.set_num_threads(1)


def capability():
    """The ATen CPU kernel family in use (1.13 has no get_cpu_capability(); its build summary says)."""
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage:" in line:
            return line.split(":", 1)[1].strip()
    return "unknown"


def bench(n, dtype, budget_s, max_runs=400):
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(n, generator=g, dtype=dtype))
    p.grad = torch.randn(n, generator=g, dtype=dtype)
    opt = torch.optim.Adam([p], lr=1e-3, foreach=False)
    warm_until = time.perf_counter() + 0.3
    i = 0
    while i < 5 or time.perf_counter() < warm_until:
        opt.step()
        i += 1
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < 7 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def main():
    sizes = [int(float(s)) for s in sys.argv[1:]]
    budget_s = float(os.environ.get("BENCH_TORCH_BUDGET_S", "1.0"))
    out = []
    for dtype_name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        for n in sizes:
            times = bench(n, dtype, budget_s)
            out.append({"n": n, "dtype": dtype_name, "median_s": statistics.median(times), "best_s": min(times), "times_s": times})
    preload = os.environ.get("LD_PRELOAD", "")
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "capability": capability(),
        "allocator": "jemalloc" if "jemalloc" in preload else "glibc malloc",
        "results": out,
    }))


if __name__ == "__main__":
    main()
