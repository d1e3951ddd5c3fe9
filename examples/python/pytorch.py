#!/usr/bin/env python3
"""Train a small PyTorch model with a hosted optimizer: adam_api.torch.HostedOptimizer in place of
torch.optim.AdamW, with a server-side warm-up + cosine schedule.

    python3 examples/python/pytorch.py [--base-url http://localhost:8787] [--steps 30]

A second copy of the model trains with torch's own AdamW and LambdaLR (the same warm-up + cosine)
on the same batches; the script checks that both hold the very same bits after every step, then
moves the hosted state into a local torch optimizer (state_dict) and back. Needs torch; exits with
status 1 (and says why) if anything differs.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys

import torch

# The package in this repository (clients/python); pip install ./clients/python makes this line unneeded.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
from adam_api.torch import HostedOptimizer  # noqa: E402


def warmup_cosine(warmup: int, total: int):
    """Hugging Face's get_cosine_schedule_with_warmup, the schedule adam-api calls warmup_cosine."""
    def lr_lambda(k: int) -> float:
        if k < warmup:
            return float(k) / float(max(1, warmup))
        progress = float(k - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(0.5) * 2.0 * progress)))
    return lr_lambda


def same_bits(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p.detach().view(torch.int32), q.detach().view(torch.int32)) for p, q in zip(a.parameters(), b.parameters()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=os.environ.get("ADAM_API_URL") or os.environ.get("ADAM_API") or "http://localhost:8787")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lr, warmup = 3e-2, args.steps // 10

    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    twin = copy.deepcopy(model)
    opt = HostedOptimizer(model.named_parameters(), base_url=args.base_url, optimizer="adamw", lr=lr, weight_decay=0.01,
                          schedule={"type": "warmup_cosine", "lr": lr, "warmup_steps": warmup, "total_steps": args.steps})
    local = torch.optim.AdamW(twin.parameters(), lr=lr, weight_decay=0.01, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(local, warmup_cosine(warmup, args.steps))
    print(f"hosted optimizer {opt.id[:12]}… at {args.base_url}")

    g = torch.Generator().manual_seed(1)
    w_true = torch.randn(8, 1, generator=g)
    loss_fn = torch.nn.MSELoss()
    try:
        for step in range(args.steps):
            x = torch.randn(64, 8, generator=g)
            y = x @ w_true
            loss = loss_fn(model(x), y); loss.backward()        # the usual loop, with the hosted optimizer
            opt.step()
            opt.zero_grad()

            local_loss = loss_fn(twin(x), y); local_loss.backward()
            local.step(); sched.step(); local.zero_grad()
            if not same_bits(model, twin):
                print(f"FAILED: step {step + 1}: the hosted and the local AdamW differ", file=sys.stderr)
                return 1
            if step % 10 == 0 or step == args.steps - 1:
                print(f"step {step + 1:3d}  loss {loss.item():.6f}  lr {opt.last_lr:.3e}")
        print(f"identical to torch.optim.AdamW + LambdaLR at every one of {args.steps} steps")

        # The hosted state into a local torch optimizer (torch's state_dict format), one more step each.
        back = torch.optim.AdamW(twin.parameters(), lr=lr, weight_decay=0.01, foreach=False)
        back.load_state_dict(opt.state_dict())
        x = torch.randn(64, 8, generator=g)
        for m, o in ((model, opt), (twin, back)):
            loss_fn(m(x), x @ w_true).backward(); o.step(); o.zero_grad()
        if not same_bits(model, twin):
            print("FAILED: a torch AdamW loaded from HostedOptimizer.state_dict() steps differently", file=sys.stderr)
            return 1
        print("state_dict: a local AdamW loaded from the hosted state takes the same next step")
    finally:
        opt.delete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
