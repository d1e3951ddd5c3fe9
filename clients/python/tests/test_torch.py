"""adam_api.torch.HostedOptimizer against torch 1.13's own optimizers and LR schedulers, bit for bit at
every step: a small MLP trained side by side, one copy with torch.optim (foreach=False, one thread,
float32), the other with a hosted optimizer of a running adam-api (ADAM_API_URL)."""

import copy
import io
import math
import unittest
import warnings

from adam_api import AdamApi, ValidationError

from _support import BASE_URL, need_server, need_torch, torch

STEPS = 12


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 4, generator=g), torch.randn(16, 3, generator=g)) for _ in range(n)]


def warmup_cosine(warmup, total):
    """Hugging Face's get_cosine_schedule_with_warmup lambda (num_cycles=0.5), for torch's LambdaLR."""
    def lr_lambda(k):
        if k < warmup:
            return float(k) / float(max(1, warmup))
        progress = float(k - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(0.5) * 2.0 * progress)))
    return lr_lambda


def shards(workers, steps, seed=31):
    """Per step, each worker's batch: [[(x, y) of worker 0, (x, y) of worker 1, ...] of step 0, ...]."""
    g = torch.Generator().manual_seed(seed)
    return [[(torch.randn(8, 4, generator=g), torch.randn(8, 3, generator=g)) for _ in range(workers)] for _ in range(steps)]


def accumulate_worker(base_url, opt_id, token, worker, workers, steps, results):
    """One worker process of the accumulate test: attaches as worker `worker`, trains on its shard of each
    step's batch with the torch drop-in (step() contributes, then waits for the step), reports the params."""
    try:
        torch.set_num_threads(1)
        from adam_api.torch import HostedOptimizer

        model = mlp(1000 + worker)  # another init: attach pulls the hosted params
        opt = HostedOptimizer.attach(opt_id, token, model.named_parameters(), base_url=base_url, worker=worker)
        seen = []
        for batch in shards(workers, steps):
            x, y = batch[worker]
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step(loss=loss)
            seen.append((opt.step_count, [bits(p).tolist() for p in model.parameters()]))
        results.put((worker, seen, None))
    except BaseException as err:  # noqa: BLE001 - reported to the test
        results.put((worker, None, f"{type(err).__name__}: {err}"))


def bits(t):
    t = t.detach()
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int64)


@need_server
@need_torch
class HostedOptimizerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        warnings.filterwarnings("ignore", "The epoch parameter", UserWarning)  # SequentialLR's own call
        cls.api = AdamApi(BASE_URL)
        cls.made = []

    @classmethod
    def tearDownClass(cls):
        for opt in cls.made:
            try:
                opt.delete()
            except Exception:  # noqa: BLE001 - gone already
                pass

    def hosted(self, params, **kw):
        from adam_api.torch import HostedOptimizer

        opt = HostedOptimizer(params, client=self.api, **kw)
        self.made.append(opt)
        return opt

    def assert_same(self, a, b, what):
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            self.assertTrue(torch.equal(bits(p), bits(q)), f"{what}: {name} differs: {p.flatten()[:4].tolist()} vs {q.flatten()[:4].tolist()}")

    def train(self, pairs, data, what, schedulers=(), lrs=None, report_loss=False):
        """Steps every (model, optimizer) pair on the same batches; after each step the models must hold
        the same bits. lrs: (hosted optimizer, local optimizer) whose applied rates must agree.
        report_loss: hosted optimizers get step(loss=…) (for reduce_on_plateau), as torch's gets sched.step(loss)."""
        from adam_api.torch import HostedOptimizer

        for k, (x, y) in enumerate(data):
            losses = []
            applied = lrs[1].param_groups[0]["lr"] if lrs else None
            for model, opt in pairs:
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                if report_loss and isinstance(opt, HostedOptimizer):
                    opt.step(loss=loss)
                else:
                    opt.step()
                losses.append(loss.item())
            for s in schedulers:
                s.step(losses[0]) if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau) else s.step()
            for model, _ in pairs[1:]:
                self.assert_same(pairs[0][0], model, f"{what}, step {k + 1}")
            self.assertEqual(len(set(losses)), 1, f"{what}, step {k + 1}: losses {losses}")
            if lrs:
                self.assertEqual(lrs[0].last_lr, applied, f"{what}, step {k + 1}: the hosted rate")

    # -- Adam / AdamW with a warm-up and a cosine ------------------------------------------------

    def test_adam_with_a_linear_warmup_and_cosine_equals_torch_sequential_lr(self):
        local_model, hosted_model = mlp(), mlp()
        lr, warm, total = 0.02, 4, 16
        local = torch.optim.Adam(local_model.parameters(), lr=lr, betas=(0.85, 0.995), weight_decay=0.01, amsgrad=True, foreach=False)
        sched = torch.optim.lr_scheduler.SequentialLR(local, [
            torch.optim.lr_scheduler.LinearLR(local, start_factor=0.1, total_iters=warm),
            torch.optim.lr_scheduler.CosineAnnealingLR(local, T_max=total - warm, eta_min=1e-4),
        ], milestones=[warm])
        schedule = {"type": "sequential", "milestones": [warm], "schedules": [
            {"type": "linear", "lr": lr, "start_factor": 0.1, "total_steps": warm},
            {"type": "cosine", "lr": lr, "total_steps": total - warm, "min_lr": 1e-4},
        ]}
        hosted = self.hosted(hosted_model.named_parameters(), optimizer="adam", lr=lr, betas=(0.85, 0.995), weight_decay=0.01, amsgrad=True, schedule=schedule)
        self.train([(local_model, local), (hosted_model, hosted)], batches(total + 4), "Adam + SequentialLR(LinearLR, CosineAnnealingLR)", [sched], lrs=(hosted, local))
        self.assertEqual(hosted.step_count, total + 4)

    def test_a_sharded_optimizer_equals_torch_adamw_with_clipping(self):
        # Spread over 3 Durable Objects; clip_grad_norm_ needs the norm over every shard. Every third
        # step one layer has no gradient (.grad None): torch skips it, and its own step count lags.
        local_model, hosted_model = mlp(), mlp()
        hosted_model.load_state_dict(local_model.state_dict())
        local = torch.optim.AdamW(local_model.parameters(), lr=0.02, weight_decay=0.05, foreach=False)
        hosted = self.hosted(hosted_model.named_parameters(), optimizer="adamw", lr=0.02, weight_decay=0.05, clip_grad_norm=0.5, shards=3)
        self.assertEqual(hosted.remote.info()["shards"], 3)
        # Each step's gradient (67 float32) goes in parts of at most 100 bytes, as a gradient of more than 64 MiB would.
        from unittest import mock
        import adam_api.client as client_module
        parts = mock.patch.object(client_module, "STEP_PART_BYTES", 100)
        parts.start()
        self.addCleanup(parts.stop)
        for k, (x, y) in enumerate(batches(8)):
            for model, opt in ((local_model, local), (hosted_model, hosted)):
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(x), y).backward()
                if k % 3 == 1:
                    first = next(model.parameters())
                    first.grad = None
                if opt is local:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                opt.step()
            self.assert_same(local_model, hosted_model, f"sharded AdamW, step {k + 1}")
        mine, theirs = hosted.state_dict()["state"], local.state_dict()["state"]
        self.assertEqual([float(mine[i]["step"]) for i in sorted(mine)], [float(theirs[i]["step"]) for i in sorted(theirs)])
        self.assertLess(float(theirs[0]["step"]), 8)

    def test_adamw_with_warmup_cosine_equals_torch_lambda_lr(self):
        lr, warm, total = 3e-3, 3, 15
        for name, extra in (("adam", {"decoupled_weight_decay": True}), ("adamw", {})):
            with self.subTest(optimizer=name):
                local_model, hosted_model = mlp(1), mlp(1)
                local = torch.optim.AdamW(local_model.parameters(), lr=lr, weight_decay=0.05, foreach=False)
                sched = torch.optim.lr_scheduler.LambdaLR(local, warmup_cosine(warm, total))
                hosted = self.hosted(hosted_model.named_parameters(), optimizer=name, lr=lr, weight_decay=0.05, **extra,
                                     schedule={"type": "warmup_cosine", "lr": lr, "warmup_steps": warm, "total_steps": total})
                self.train([(local_model, local), (hosted_model, hosted)], batches(total), f"{name} + LambdaLR(warm-up cosine)", [sched], lrs=(hosted, local))

    def test_a_torch_lr_scheduler_can_drive_the_hosted_rate(self):
        local_model, hosted_model = mlp(2), mlp(2)
        local = torch.optim.AdamW(local_model.parameters(), lr=0.01, foreach=False)
        hosted = self.hosted(hosted_model.named_parameters(), optimizer="adamw", lr=0.01)
        scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8, eta_min=1e-3) for o in (local, hosted)]
        self.train([(local_model, local), (hosted_model, hosted)], batches(STEPS), "AdamW + CosineAnnealingLR on both", scheds, lrs=(hosted, local))
        # The scheduler's last rate goes with the next step; the service holds the one applied last.
        self.assertEqual(hosted.remote.info()["hyperparams"]["lr"], hosted.last_lr)

    # -- SGD ------------------------------------------------------------------------------------

    def test_sgd_with_momentum_and_param_groups(self):
        local_model, hosted_model = mlp(3), mlp(3)
        def groups(model, named):
            ps = list(model.named_parameters())
            pick = lambda want: [(n, p) if named else p for n, p in ps if n.endswith(want)]  # noqa: E731
            # "name": a key of torch's param group that is no hyperparameter (kept, not sent).
            return [{"params": pick("weight"), "weight_decay": 1e-3, "name": "weights"}, {"params": pick("bias"), "lr": 0.05, "momentum": 0.5, "dampening": 0.1}]
        local = torch.optim.SGD(groups(local_model, False), lr=0.1, momentum=0.9, foreach=False)
        hosted = self.hosted(groups(hosted_model, True), optimizer="sgd", lr=0.1, momentum=0.9)
        for mine, theirs in zip(hosted.param_groups, local.param_groups):
            self.assertEqual({k: v for k, v in mine.items() if k not in ("params", "param_names", "foreach")},
                             {k: v for k, v in theirs.items() if k not in ("params", "foreach")})
        # A torch StepLR on both: each group's rate changes, and the hosted groups follow by PATCH.
        scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5) for o in (local, hosted)]
        self.train([(local_model, local), (hosted_model, hosted)], batches(STEPS), "SGD with two param groups and StepLR", scheds, lrs=(hosted, local))
        sd = hosted.state_dict()
        self.assertEqual([g["lr"] for g in sd["param_groups"]], [g["lr"] for g in local.param_groups])
        self.assertEqual(hosted.remote.info()["param_groups"][0]["lr"], local.param_groups[1]["lr"])  # state_dict() sent the last change
        # Attached from another process with plain named_parameters(), it splits them as the service's groups do.
        from adam_api.torch import HostedOptimizer

        other_model = mlp(31)
        other = HostedOptimizer.attach(hosted.id, hosted.token, other_model.named_parameters(), client=self.api)
        self.assertEqual([g["param_names"] for g in other.param_groups], [["0.weight", "2.weight"], ["0.bias", "2.bias"]])
        for mine, theirs in zip(other.param_groups, local.param_groups):
            self.assertEqual({k: mine[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov")},
                             {k: theirs[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov")})
        self.train([(local_model, local), (other_model, other)], batches(3, seed=5), "attached with groups")
        self.assertEqual([g["params"] for g in sd["param_groups"]], [g["params"] for g in local.state_dict()["param_groups"]])

    def test_options_turned_off_and_back_on_between_steps_equal_torch(self):
        # torch keeps a buffer while its option is off (no group reads it) and resumes from it when the
        # option is back on; the drop-in sends each change by PATCH before the next step.
        pattern = [True, True, False, False, True, False, True]
        data = batches(len(pattern), seed=9)
        cases = [
            ("sgd", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.25}, "momentum", 0.9, 0.0),
            ("rmsprop", torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.5, "centered": True}, "centered", True, False),
            ("rmsprop", torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.5}, "momentum", 0.5, 0.0),
            ("adam", torch.optim.Adam, {"lr": 0.01, "amsgrad": True}, "amsgrad", True, False),
        ]
        for name, cls, kw, key, on, off in cases:
            with self.subTest(optimizer=name, option=key):
                local_model, hosted_model = mlp(7), mlp(7)
                def groups(model, named):
                    ps = list(model.named_parameters())
                    pick = lambda want: [(n, p) if named else p for n, p in ps if n.endswith(want)]  # noqa: E731
                    return [{"params": pick("weight")}, {"params": pick("bias"), "lr": kw["lr"] / 2}]
                local = cls(groups(local_model, False), foreach=False, **kw)
                hosted = self.hosted(groups(hosted_model, True), optimizer=name, **kw)
                for k, batch in enumerate(data):
                    for opt in (local, hosted):
                        for g in opt.param_groups:
                            g[key] = on if pattern[k] else off
                    self.train([(local_model, local), (hosted_model, hosted)], [batch], f"{name} {key} {'on' if pattern[k] else 'off'} at step {k + 1}")
                # The kept buffer is in both state_dicts while the option is off.
                for opt in (local, hosted):
                    for g in opt.param_groups:
                        g[key] = off
                mine, theirs = hosted.state_dict()["state"], local.state_dict()["state"]
                self.assertEqual(sorted(mine), sorted(theirs))
                for i in theirs:
                    self.assertEqual(sorted(k for k in mine[i] if k != "step"), sorted(k for k in theirs[i] if k != "step"), f"{name} state {i}")
                    for k, v in theirs[i].items():
                        if torch.is_tensor(v) and v.dim() > 0:
                            self.assertTrue(torch.equal(bits(mine[i][k]), bits(v)), f"{name} state {i} {k}")

    def test_adamw_param_groups_under_a_server_schedule_equal_torch_step_lr(self):
        local_model, hosted_model = mlp(15), mlp(15)
        def groups(model, named):
            ps = list(model.named_parameters())
            pick = lambda want: [(n, p) if named else p for n, p in ps if n.endswith(want)]  # noqa: E731
            return [{"params": pick("weight")}, {"params": pick("bias"), "lr": 0.02, "weight_decay": 0.0}]
        local = torch.optim.AdamW(groups(local_model, False), lr=0.01, weight_decay=0.05, foreach=False)
        sched = torch.optim.lr_scheduler.StepLR(local, step_size=3, gamma=0.5)
        hosted = self.hosted(groups(hosted_model, True), optimizer="adamw", lr=0.01, weight_decay=0.05,
                             schedule={"type": "step", "lr": 0.01, "step_size": 3, "gamma": 0.5})
        self.train([(local_model, local), (hosted_model, hosted)], batches(8), "AdamW groups + a step schedule (each group from its own lr)", [sched], lrs=(hosted, local))
        sd = hosted.state_dict()
        self.assertEqual([g["lr"] for g in sd["param_groups"]], [g["lr"] for g in local.param_groups])
        self.assertEqual([g["initial_lr"] for g in sd["param_groups"]], [0.01, 0.02])
        back_model = copy.deepcopy(hosted_model)
        back = torch.optim.AdamW(groups(back_model, False), lr=0.01, weight_decay=0.05, foreach=False)
        back.load_state_dict(sd)
        back_sched = torch.optim.lr_scheduler.StepLR(back, step_size=3, gamma=0.5, last_epoch=7)
        self.assertEqual([g["lr"] for g in back.param_groups], [g["lr"] for g in local.param_groups])
        self.train([(local_model, local), (back_model, back), (hosted_model, hosted)], batches(4, seed=9), "back in torch", [sched, back_sched])
        # torch's state_dict with its groups into a new hosted optimizer: it goes on from there.
        again_model = mlp(0)
        again = self.hosted(groups(again_model, True), optimizer="adamw", lr=0.01, weight_decay=0.05,
                            schedule={"type": "step", "lr": 0.01, "step_size": 3, "gamma": 0.5})
        again_model.load_state_dict(local_model.state_dict())
        again.load_state_dict(local.state_dict())
        self.assertEqual((again.step_count, [g["lr"] for g in again.param_groups]), (12, [0.01, 0.02]))
        self.train([(local_model, local), (again_model, again)], batches(4, seed=10), "torch's groups into a hosted optimizer", [sched], lrs=(again, local))

    def test_param_groups_under_reduce_on_plateau_equal_torch(self):
        local_model, hosted_model = mlp(16), mlp(16)
        def groups(model, named):
            ps = list(model.named_parameters())
            pick = lambda want: [(n, p) if named else p for n, p in ps if n.endswith(want)]  # noqa: E731
            return [{"params": pick("weight")}, {"params": pick("bias"), "lr": 0.3}]
        local = torch.optim.SGD(groups(local_model, False), lr=0.1, momentum=0.5, foreach=False)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(local, factor=0.5, patience=0, threshold=0.05)
        hosted = self.hosted(groups(hosted_model, True), optimizer="sgd", lr=0.1, momentum=0.5,
                             schedule={"type": "reduce_on_plateau", "lr": 0.1, "factor": 0.5, "patience": 0, "threshold": 0.05})
        self.train([(local_model, local), (hosted_model, hosted)], batches(8), "SGD groups + ReduceLROnPlateau", [sched], lrs=(hosted, local), report_loss=True)
        self.assertLess(local.param_groups[1]["lr"], 0.3)
        self.assertEqual([g["lr"] for g in hosted.state_dict()["param_groups"]], [g["lr"] for g in local.param_groups])

    def test_sgd_with_nesterov_momentum_and_a_plateau_schedule_fed_by_the_closure(self):
        local_model, hosted_model = mlp(4), mlp(4)
        local = torch.optim.SGD(local_model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3, foreach=False)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(local, factor=0.5, patience=1, threshold=0.05)
        hosted = self.hosted(hosted_model.named_parameters(), optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3,
                             schedule={"type": "reduce_on_plateau", "lr": 0.1, "factor": 0.5, "patience": 1, "threshold": 0.05})
        lrs = set()
        for k, (x, y) in enumerate(batches(STEPS)):
            def closure(model=hosted_model, x=x, y=y):
                hosted.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                return loss
            local.zero_grad()
            local_loss = torch.nn.functional.mse_loss(local_model(x), y)
            local_loss.backward()
            applied = local.param_groups[0]["lr"]
            local.step()
            sched.step(local_loss.item())
            returned = hosted.step(closure)
            self.assertIsInstance(returned, torch.Tensor, "step(closure) returns the closure's loss")
            self.assertEqual(returned.item(), local_loss.item())
            self.assert_same(local_model, hosted_model, f"SGD nesterov + ReduceLROnPlateau, step {k + 1}")
            self.assertEqual(hosted.last_lr, applied)
            lrs.add(applied)
        self.assertGreater(len(lrs), 2, f"the plateau schedule lowered the rate: {sorted(lrs)}")
        losses = [e["loss"] for e in hosted.remote.history()["entries"]]
        self.assertEqual(len(losses), STEPS)

    # -- resuming ---------------------------------------------------------------------------------

    def test_resume_from_a_local_checkpoint_and_back(self):
        lr, warm, total, split = 0.01, 3, 14, 6
        data = batches(total)
        local_model = mlp(5)
        local = torch.optim.AdamW(local_model.parameters(), lr=lr, weight_decay=0.02, amsgrad=True, foreach=False)
        sched = torch.optim.lr_scheduler.LambdaLR(local, warmup_cosine(warm, total))
        self.train([(local_model, local)], data[:split], "local", [sched])
        buffer = io.BytesIO()
        torch.save({"model": local_model.state_dict(), "optimizer": local.state_dict()}, buffer)
        buffer.seek(0)
        ckpt = torch.load(buffer)

        # torch -> adam-api: a new process loads the checkpoint into a model and a hosted optimizer.
        hosted_model = mlp(99)
        hosted = self.hosted(hosted_model.named_parameters(), optimizer="adamw", lr=lr, weight_decay=0.02, amsgrad=True,
                             schedule={"type": "warmup_cosine", "lr": lr, "warmup_steps": warm, "total_steps": total})
        hosted_model.load_state_dict(ckpt["model"])
        hosted.load_state_dict(ckpt["optimizer"])
        self.assertEqual(hosted.step_count, split)
        self.train([(local_model, local), (hosted_model, hosted)], data[split:split + 4], "resumed on adam-api", [sched], lrs=(hosted, local))

        # adam-api -> torch: the hosted state_dict into a local AdamW with its LambdaLR where it was.
        back_model = copy.deepcopy(hosted_model)
        back = torch.optim.AdamW(back_model.parameters(), lr=lr, weight_decay=0.02, amsgrad=True, foreach=False)
        back.load_state_dict(hosted.state_dict())
        back_sched = torch.optim.lr_scheduler.LambdaLR(back, warmup_cosine(warm, total), last_epoch=split + 4 - 1)
        self.assertEqual(back.param_groups[0]["lr"], local.param_groups[0]["lr"])
        self.train([(local_model, local), (back_model, back), (hosted_model, hosted)], data[split + 4:], "back in torch", [sched, back_sched])

    def test_a_state_dict_moves_between_hosted_optimizers(self):
        model = mlp(6)
        a = self.hosted(model.named_parameters(), optimizer="rmsprop", lr=0.01, momentum=0.5, centered=True)
        self.train([(model, a)], batches(3), "first")
        other = copy.deepcopy(model)
        b = self.hosted(other.named_parameters(), optimizer="rmsprop", lr=0.5)
        b.load_state_dict(a.state_dict())
        self.assertEqual((b.step_count, b.param_groups[0]["lr"], b.param_groups[0]["centered"]), (3, 0.01, True))
        self.train([(model, a), (other, b)], batches(3, seed=7), "a's state_dict in b")

    def test_attach_from_another_process(self):
        local_model, hosted_model = mlp(7), mlp(7)
        local = torch.optim.NAdam(local_model.parameters(), lr=0.01, foreach=False)
        hosted = self.hosted(hosted_model.named_parameters(), optimizer="nadam", lr=0.01)
        data = batches(6)
        self.train([(local_model, local), (hosted_model, hosted)], data[:3], "before attach")
        from adam_api.torch import HostedOptimizer

        other_model = mlp(123)  # another process: a fresh model, the hosted state pulled into it
        other = HostedOptimizer.attach(hosted.id, hosted.token, other_model.named_parameters(), base_url=BASE_URL)
        self.assert_same(local_model, other_model, "attached")
        self.assertEqual((other.step_count, other.param_groups[0]["lr"], other.param_groups[0]["betas"]), (3, 0.01, (0.9, 0.999)))
        self.train([(local_model, local), (other_model, other)], data[3:], "after attach")
        with self.assertRaises(ValueError):
            HostedOptimizer.attach(hosted.id, hosted.token, torch.nn.Linear(2, 2).named_parameters(), base_url=BASE_URL)

    def test_params_changed_in_place_are_uploaded_and_a_step_without_gradients_does_nothing(self):
        local_model, hosted_model = mlp(8), mlp(8)
        local = torch.optim.Adagrad(local_model.parameters(), lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, foreach=False)
        hosted = self.hosted(hosted_model.named_parameters(), optimizer="adagrad", lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)
        self.train([(local_model, local), (hosted_model, hosted)], batches(2), "before")
        fresh = mlp(9).state_dict()
        local_model.load_state_dict(fresh)
        hosted_model.load_state_dict(fresh)
        self.train([(local_model, local), (hosted_model, hosted)], batches(2, seed=3), "after load_state_dict into the model")
        for m in (local_model, hosted_model):
            m[0].weight.data.mul_(0.5)  # torch does not count changes through .data: push() sends them
        hosted.push()
        self.train([(local_model, local), (hosted_model, hosted)], batches(1, seed=4), "after push()")
        with torch.no_grad():
            hosted_model[2].bias.zero_()
        hosted.pull()
        self.assert_same(local_model, hosted_model, "pull()")
        hosted.zero_grad(set_to_none=True)
        self.assertIsNone(hosted.step())
        self.assertEqual(hosted.remote.info()["step"], 5)

    # -- every optimizer ------------------------------------------------------------------------

    def test_every_optimizer_with_torch_keywords_and_its_state_dict(self):
        from adam_api.checkpoint import from_torch, to_torch

        cases = [
            ("adam", torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "amsgrad": True, "maximize": True}),
            ("adamw", torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
            ("sgd", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.01}),
            ("rmsprop", torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.9, "momentum": 0.3, "centered": True}),
            ("adagrad", torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.01, "eps": 1e-8}),
            ("adamax", torch.optim.Adamax, {"lr": 0.02, "betas": (0.9, 0.99), "weight_decay": 0.01}),
            ("nadam", torch.optim.NAdam, {"lr": 0.01, "momentum_decay": 0.01}),
            ("radam", torch.optim.RAdam, {"lr": 0.01, "weight_decay": 0.01}),
            ("adadelta", torch.optim.Adadelta, {"lr": 0.5, "rho": 0.8}),
        ]
        for name, cls, kw in cases:
            with self.subTest(optimizer=name):
                local_model, hosted_model = mlp(10), mlp(10)
                local = cls(local_model.parameters(), foreach=False, **kw)
                hosted = self.hosted(hosted_model.named_parameters(), optimizer=name, **kw)
                self.assertEqual({k: hosted.param_groups[0][k] for k in kw}, kw)
                data = batches(6, seed=11)
                self.train([(local_model, local), (hosted_model, hosted)], data[:4], name)
                mine, theirs = hosted.state_dict(), local.state_dict()
                self.assertEqual(sorted(mine["state"]), sorted(theirs["state"]))
                for i, expected in theirs["state"].items():
                    for key, value in expected.items():
                        got = mine["state"][i][key]
                        if isinstance(value, torch.Tensor):
                            self.assertEqual(got.dtype, value.dtype, f"{name} state[{i}][{key}]")
                            self.assertTrue(torch.equal(bits(got), bits(value)), f"{name} state[{i}][{key}]")
                        else:
                            self.assertEqual(got, value, f"{name} state[{i}][{key}]")
                for key, value in theirs["param_groups"][0].items():
                    if key not in ("foreach", "params"):
                        self.assertEqual(mine["param_groups"][0][key], value, f"{name} param_groups[0][{key}]")
                back_model = copy.deepcopy(hosted_model)
                back = cls(back_model.parameters(), foreach=False, **kw)
                back.load_state_dict(mine)
                # The safetensors checkpoint into a fresh model: to_torch picks the class and loads params and state.
                ckpt_model = mlp(77)
                from_ckpt = to_torch(hosted.remote.checkpoint(), ckpt_model)
                self.assertIs(type(from_ckpt), cls)
                self.train([(local_model, local), (back_model, back), (ckpt_model, from_ckpt), (hosted_model, hosted)], data[4:], f"{name} back in torch")
                # And from torch to a hosted optimizer as a checkpoint (from_torch), to go on there.
                again = self.api.create_optimizer([0.0], optimizer=name, hyperparams={"lr": 1.0})
                self.made.append(again)
                again.restore_checkpoint(from_torch(local_model, local, name=name))
                self.assertEqual(again.params_raw(), hosted.remote.params_raw())

    def test_lion_steps_as_the_stateless_route_does(self):
        model = mlp(12)
        hosted = self.hosted(model.named_parameters(), optimizer="lion", lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
        params = {n: p.detach().tolist() for n, p in model.named_parameters()}
        state = None
        for x, y in batches(3):
            hosted.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            grads = {n: p.grad.tolist() for n, p in model.named_parameters()}
            hosted.step()
            out = self.api.step(params, grads, state=state, hyperparams={"lr": 1e-3, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.1}, optimizer="lion")
            params, state = out["params"], out["state"]
            self.assertEqual({n: p.detach().tolist() for n, p in model.named_parameters()}, params)
        self.assertEqual(sorted(hosted.state_dict()["state"][0]), ["exp_avg"])

    def test_frozen_parameters_are_left_alone_as_torch_does(self):
        local_model, hosted_model = mlp(13), mlp(13)
        for m in (local_model, hosted_model):
            m[0].bias.requires_grad_(False)  # never gets a .grad
        local = torch.optim.Adam(local_model.parameters(), lr=0.01, foreach=False)
        hosted = self.hosted(hosted_model.named_parameters(), optimizer="adam", lr=0.01)
        self.train([(local_model, local), (hosted_model, hosted)], batches(4), "a frozen bias")

    # -- sparse (row) gradients -----------------------------------------------------------------

    def test_sparse_embedding_gradients_equal_torch(self):
        # nn.Embedding(sparse=True): its .grad is sparse (uncoalesced, rows repeated as the batch repeats
        # them) and goes as rows; SparseAdam and Adagrad coalesce as torch does, SGD adds them as sent.
        # SGD with momentum keeps a dense buffer on the service, torch a sparse one: the same numbers
        # when each step's rows are sorted and distinct (the service's README), as in that case.
        cases = [
            ("sparse_adam", torch.optim.SparseAdam, {"lr": 0.01, "betas": (0.8, 0.99)}, False, False),
            ("sgd", torch.optim.SGD, {"lr": 0.1}, True, False),
            ("adagrad", torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.01}, True, False),
            ("sgd", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.1}, True, True),
        ]
        g = torch.Generator().manual_seed(21)
        # 40 indices into 12 rows per batch: rows repeat (some three times or more), unsorted.
        repeated = [(torch.randint(0, 12, (10, 4), generator=g), torch.randn(10, 3, generator=g)) for _ in range(5)]
        distinct = [(torch.randperm(12, generator=g)[:8].sort().values.view(2, 4), torch.randn(2, 3, generator=g)) for _ in range(5)]
        # Each case on one Durable Object and over 3 (the table's rows split between shards).
        for (name, cls, kw, with_linear, sorted_rows), objects in [(c, n) for c in cases for n in (None, 3)]:
            data = distinct if sorted_rows else repeated
            with self.subTest(optimizer=name, shards=objects, **kw):
                def model():
                    torch.manual_seed(22)
                    emb = torch.nn.Embedding(12, 3, sparse=True)
                    return torch.nn.ModuleDict({"emb": emb, "head": torch.nn.Linear(3, 3)}) if with_linear else torch.nn.ModuleDict({"emb": emb})
                local_model, hosted_model = model(), model()
                local = cls(local_model.parameters(), **kw) if name == "sparse_adam" else cls(local_model.parameters(), foreach=False, **kw)
                hosted = self.hosted(hosted_model.named_parameters(), optimizer=name, **kw, **({"shards": objects} if objects else {}))
                for k, (idx, y) in enumerate(data):
                    for m, opt in ((local_model, local), (hosted_model, hosted)):
                        opt.zero_grad()
                        h = m["emb"](idx).sum(1)
                        out = m["head"](h) if with_linear else h
                        torch.nn.functional.mse_loss(out, y).backward()
                        self.assertTrue(m["emb"].weight.grad.is_sparse)
                        opt.step()
                    self.assert_same(local_model, hosted_model, f"{name}, step {k + 1}")
                self.assertEqual(hosted.step_count, len(data))
                if name == "sparse_adam":  # the state as torch keeps it
                    mine, theirs = hosted.state_dict()["state"][0], local.state_dict()["state"][0]
                    for key in ("exp_avg", "exp_avg_sq"):
                        self.assertTrue(torch.equal(bits(mine[key]), bits(theirs[key])), key)

    # -- many workers, one optimizer ------------------------------------------------------------

    def test_worker_processes_accumulating_equal_one_process_with_the_averaged_gradients(self):
        self.workers_accumulating()

    def test_worker_processes_feeding_a_sharded_optimizer_equal_one_process(self):
        # The same over 3 Durable Objects: each contribution's slices are held by the shards.
        self.workers_accumulating(objects=3)

    def workers_accumulating(self, objects=None):
        # 3 worker processes (multiprocessing, spawn) each attach with worker=i and train one model:
        # every step is one hosted Adam step with the mean of their gradients. The same training in this
        # process with torch.optim.Adam and the gradients averaged as the service documents it,
        # ((g0 + g1) + g2) / 3 in float32, holds the same bits after every step, in every worker.
        import multiprocessing

        workers, steps = 3, 4
        hosted_model = mlp(30)
        hosted = self.hosted(hosted_model.named_parameters(), optimizer="adam", lr=0.01, weight_decay=0.01, accumulate=workers, **({"shards": objects} if objects else {}))
        if objects:
            self.assertEqual(hosted.remote.info()["shards"], objects)
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        procs = [ctx.Process(target=accumulate_worker, args=(BASE_URL, hosted.id, hosted.token, w, workers, steps, results)) for w in range(workers)]
        for p in procs:
            p.start()
        got = {}
        try:
            for _ in procs:
                worker, seen, error = results.get(timeout=240)
                self.assertIsNone(error, f"worker {worker}")
                got[worker] = seen
        finally:
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
        self.assertEqual(sorted(got), list(range(workers)))

        local_model = mlp(30)
        local = torch.optim.Adam(local_model.parameters(), lr=0.01, weight_decay=0.01, foreach=False)
        for k, batch in enumerate(shards(workers, steps)):
            grads = []
            for x, y in batch:
                local_model.zero_grad()
                torch.nn.functional.mse_loss(local_model(x), y).backward()
                grads.append([p.grad.clone() for p in local_model.parameters()])
            for i, p in enumerate(local_model.parameters()):
                acc = grads[0][i]
                for g in grads[1:]:
                    acc = acc + g[i]
                p.grad = acc / torch.tensor(workers, dtype=torch.float32)
            local.step()
            want = [bits(p).tolist() for p in local_model.parameters()]
            for w in range(workers):
                self.assertEqual(got[w][k], (k + 1, want), f"worker {w}, step {k + 1}")
        info = hosted.remote.info()
        self.assertEqual((info["step"], info["accumulate"]["received"]), (steps, []))
        self.assertEqual(len([e for e in hosted.remote.history()["entries"] if e.get("loss") is not None]), steps)

    def test_what_a_hosted_optimizer_refuses(self):
        from adam_api.torch import HostedOptimizer

        model = mlp(14)
        with self.assertRaises(ValueError):
            HostedOptimizer(model.named_parameters(), client=self.api, foreach=True)
        with self.assertRaises(TypeError):
            HostedOptimizer(model.half().named_parameters(), client=self.api)
        with self.assertRaises(ValidationError) as caught:
            HostedOptimizer(mlp().named_parameters(), client=self.api, optimizer="sgd", momentum=0.9)  # SGD's lr is required
        self.assertIn("hyperparams.lr", caught.exception.fields)
        hosted = self.hosted(mlp().named_parameters(), lr=0.01)
        with self.assertRaises(NotImplementedError):
            hosted.add_param_group({"params": [torch.zeros(2, requires_grad=True)]})
        with self.assertRaises(ValueError):
            HostedOptimizer.attach(hosted.id, hosted.token, hosted.param_groups[0]["params"], client=self.api, worker=0)  # no accumulate
        emb = torch.nn.Embedding(4, 2, sparse=True)
        adam = self.hosted(emb.named_parameters(), lr=0.01)
        emb(torch.tensor([1, 1, 3])).sum().backward()
        with self.assertRaises(ValidationError) as caught:  # Adam takes no rows: the service says so, naming the tensor
            adam.step()
        self.assertIn('safetensors["grads.values/weight"]', caught.exception.fields)
        self.assertEqual(adam.remote.info()["step"], 0)
        accumulating = self.hosted(torch.nn.Embedding(4, 2, sparse=True).named_parameters(), optimizer="sgd", lr=0.1, accumulate=2, worker=1)
        self.assertEqual(accumulating.remote.info()["accumulate"], {"contributions": 2, "reduce": "mean", "received": [], "missing": 2})
        accumulating.param_groups[0]["params"][0].grad = emb.weight.grad
        with self.assertRaises(NotImplementedError):  # contributions are dense
            accumulating.step()
        with self.assertRaises(ValueError):
            HostedOptimizer.attach(accumulating.id, accumulating.token, accumulating.param_groups[0]["params"], client=self.api, worker=2)


if __name__ == "__main__":
    unittest.main()
