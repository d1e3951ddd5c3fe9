"""Every route of adam-api through the client, against a running server (ADAM_API_URL): JSON with the
standard library, and the binary formats with numpy when it is importable."""

import array
import struct
import unittest
import uuid

from adam_api import (
    AdamApi,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PreconditionFailedError,
    UnauthorizedError,
    ValidationError,
    wire,
)

from _support import BASE_URL, need_numpy, need_server, numpy as np

# Hyperparameters each optimizer's stateless and hosted steps get here (other than the defaults where it matters).
HYPERPARAMS = {
    "adam": {"lr": 0.01, "amsgrad": True},
    "adamw": {"lr": 0.01, "weight_decay": 0.1},
    "sgd": {"lr": 0.1, "momentum": 0.9, "nesterov": True},
    "rmsprop": {"lr": 0.01, "momentum": 0.5, "centered": True},
    "adagrad": {"lr": 0.1, "lr_decay": 0.01},
    "adamax": {"lr": 0.01},
    "nadam": {"lr": 0.01},
    "radam": {"lr": 0.01},
    "adadelta": {"lr": 1.0},
    "lion": {"lr": 0.001, "weight_decay": 0.1},
    "muon": {"lr": 0.01},
    "sparse_adam": {"lr": 0.01},
}
PARAMS = {"w": [[0.5, -0.25, 1.0], [0.125, 2.0, -1.5]], "b": [0.1, -0.1]}
GRADS = {"w": [[0.1, 0.2, -0.3], [0.05, -0.4, 0.25]], "b": [0.5, -0.5]}


def bits(x):
    """A tensor's values as the bits of their float32 (so -0.0 and 0.0 differ)."""
    flat = x.ravel().tolist() if hasattr(x, "ravel") else _flat(x)
    return struct.pack(f"<{len(flat)}f", *flat)


def _flat(x):
    if isinstance(x, (int, float)):
        return [float(x)]
    if isinstance(x, dict):
        return [v for k in x for v in _flat(x[k])]
    return [v for e in x for v in _flat(e)]


@need_server
class ServiceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.api = AdamApi(BASE_URL)
        cls.names = [a["name"] for a in cls.api.algorithms()]

    def step_args(self, name):
        """(params, grads) that optimizer takes: Muon matrices only, SparseAdam sparse rows."""
        if name == "muon":
            return {"w": PARAMS["w"]}, {"w": GRADS["w"]}
        if name == "sparse_adam":
            return {"w": PARAMS["w"]}, {"w": {"indices": [1], "values": [GRADS["w"][1]]}}
        return PARAMS, GRADS

    def test_service_description(self):
        self.assertEqual(self.api.health(), {"status": "ok"})
        self.assertEqual(self.api.info()["name"], "adam-api")
        self.assertTrue(self.api.openapi()["openapi"].startswith("3.1"))
        self.assertIn("openapi: 3.1", self.api.openapi_yaml())
        self.assertIn("sgd", self.names)
        self.assertEqual(self.api.algorithm("sgd")["torch"], "torch.optim.SGD")
        with self.assertRaises(NotFoundError):
            self.api.algorithm("nope")

    def test_a_stateless_step_of_every_optimizer_fed_its_state_back(self):
        for name in self.names:
            with self.subTest(optimizer=name):
                params, grads = self.step_args(name)
                first = self.api.step(params, grads, hyperparams=HYPERPARAMS[name], optimizer=name)
                second = self.api.step(first["params"], grads, state=first["state"], hyperparams=HYPERPARAMS[name], optimizer=name)
                self.assertEqual(second["state"]["step"], 2)
                self.assertNotEqual(bits(second["params"]), bits(first["params"]))
                self.assertEqual(second["lr"], HYPERPARAMS[name]["lr"])
        # /v1/adam/step keeps its m, v, v_max; the step is torch's (README's example).
        out = self.api.step([1.0, -2.0, 3.0], [0.1, -0.2, 0.3], hyperparams={"lr": 0.01}, dtype="float64")
        self.assertEqual(out["params"], [0.9900000009999999, -1.9900000005, 2.990000000333333])
        self.assertEqual(sorted(out["state"]), ["m", "step", "v"])

    def test_param_groups_frozen_tensors_and_clipping_in_a_stateless_step(self):
        out = self.api.step({"fc.weight": [0.5, -0.5], "fc.bias": [0.1], "emb.weight": [1.0]}, {"fc.weight": [3.0, 4.0], "fc.bias": [1.0], "emb.weight": None},
                            hyperparams={"lr": 0.1, "momentum": 0.9, "clip_grad_norm": 1.0}, dtype="float64", optimizer="sgd",
                            param_groups=[{"params": ["*.bias"], "lr": 0.01, "momentum": 0}])
        self.assertEqual(out["params"]["emb.weight"], [1])
        self.assertEqual(out["grad_norm"], 5.0990195135927845)
        self.assertIsNone(out["state"]["momentum_buffer"]["fc.bias"])

    @need_numpy
    def test_numpy_steps_go_as_safetensors_with_the_bits_of_json(self):
        for name in self.names:
            if name == "sparse_adam":
                continue  # sparse rows have no safetensors form yet
            with self.subTest(optimizer=name):
                params, grads = self.step_args(name)
                as_np = lambda tree: {k: np.asarray(v, "<f4") for k, v in tree.items()}  # noqa: E731
                j1 = self.api.step(params, grads, hyperparams=HYPERPARAMS[name], optimizer=name)
                b1 = self.api.step(as_np(params), as_np(grads), hyperparams=HYPERPARAMS[name], optimizer=name)
                self.assertIsInstance(b1["params"]["w"], np.ndarray)
                j2 = self.api.step(j1["params"], grads, state=j1["state"], hyperparams=HYPERPARAMS[name], optimizer=name)
                b2 = self.api.step(b1["params"], as_np(grads), state=b1["state"], hyperparams=HYPERPARAMS[name], optimizer=name)
                self.assertEqual(b2["state"]["step"], 2)
                for k in params:
                    self.assertEqual(bits(b2["params"][k]), bits(j2["params"][k]))
                for slot, value in j2["state"].items():
                    if isinstance(value, dict) and slot != "tensors":
                        for k, v in value.items():
                            self.assertEqual(bits(b2["state"][slot][k]), bits(v), f"{slot}/{k}")
                    elif slot != "tensors":
                        self.assertEqual(b2["state"][slot], value, slot)
        # A single unnamed tensor, float64 from the arrays' dtype, a frozen tensor, Adam's m/v names.
        one = self.api.step(np.array([1.0, -2.0, 3.0]), np.array([0.1, -0.2, 0.3]), hyperparams={"lr": 0.01})
        self.assertEqual(one["params"].tolist(), [0.9900000009999999, -1.9900000005, 2.990000000333333])
        self.assertEqual(sorted(one["state"]), ["m", "step", "v"])
        frozen = self.api.step({"a": np.ones(2, "f4"), "b": np.ones(1, "f4")}, {"a": np.ones(2, "f4"), "b": None}, hyperparams={"lr": 0.1}, optimizer="sgd")
        self.assertEqual(frozen["params"]["b"].tolist(), [1.0])
        self.assertEqual(frozen["params"]["a"].tolist(), [np.float32(0.9)] * 2)

    def test_compare(self):
        runs = [{"optimizer": "sgd", "hyperparams": {"lr": 0.001}, "label": "SGD"}, {"optimizer": "adam", "hyperparams": {"lr": 0.02}, "label": "Adam"}]
        out = self.api.compare(runs, {"name": "rosenbrock"}, steps=10, dtype="float64")
        self.assertEqual([r["label"] for r in out["runs"]], ["SGD", "Adam"])
        self.assertEqual(len(out["runs"][0]["loss"]), 11)
        self.assertIn("<svg", self.api.compare(runs, {"name": "beale"}, steps=5, svg=True, title="t"))

    def test_schedules(self):
        lr = self.api.evaluate_schedule({"type": "cosine", "lr": 0.1, "total_steps": 100}, steps=[0, 50, 100])["lr"]
        self.assertEqual(lr, [0.1, 0.05000000000000004, 0])
        self.assertIn("<svg", self.api.plot_schedule({"type": "step", "lr": 0.1, "step_size": 30}, steps={"stop": 100}, log_scale=True))
        self.assertEqual(self.api.schedule("step", lr=0.1, step_size=3, gamma=0.5, steps="0:8")["lr"], [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])
        self.assertEqual(self.api.schedule("multistep", lr=1.0, milestones=[1, 2], steps="0:3")["lr"], [1.0, 0.1, 0.010000000000000002])
        self.assertIn("<svg", self.api.schedule_plot("one_cycle", max_lr=0.1, total_steps=100, steps="0:100"))
        plateau = self.api.evaluate_schedule({"type": "reduce_on_plateau", "lr": 1.0, "patience": 0}, steps=[0, 1, 2], metrics=[1.0, 2.0])["lr"]
        self.assertEqual(plateau, [1.0, 1.0, 0.1])
        with self.assertRaises(ValidationError) as caught:
            self.api.schedule("step", lr=0.1, step_size=3, nope=1)
        self.assertIn("nope", caught.exception.fields)

    def test_a_hosted_optimizer_its_whole_life(self):
        opt = self.api.create_optimizer({"w": [0.0, 0.0], "b": 0.0}, hyperparams={"lr": 0.1}, ttl=3600)
        self.assertEqual((opt.created["step"], opt.created["ttl"], opt.dtype), (0, 3600, "float32"))
        self.assertEqual([t["name"] for t in opt.layout], ["w", "b"])
        grads = {"w": [0.5, -0.25], "b": 0.1}
        first = opt.step(grads, loss=0.75, idempotency_key="life-1")
        retry = opt.step(grads, loss=0.75, idempotency_key="life-1")
        self.assertEqual((first["step"], retry["replayed"], retry["params"]), (1, True, first["params"]))
        with self.assertRaises(ConflictError):
            opt.step(grads, expected_step=0)
        stale = opt.etag
        opt.step(grads, if_match=stale)
        with self.assertRaises(PreconditionFailedError) as caught:
            opt.step(grads, if_match=stale)
        self.assertEqual(caught.exception.etag, opt.etag)
        self.assertEqual(opt.info()["step"], 2)
        snapshot = opt.state()
        self.assertEqual(sorted(k for k in ("exp_avg", "exp_avg_sq", "m", "v") if k in snapshot), ["m", "v"])
        opt.step(grads)
        self.assertEqual(opt.restore(snapshot)["step"], 2)
        self.assertEqual(opt.params(), snapshot["params"])
        self.assertEqual(opt.update(hyperparams={"lr": 0.05})["next_lr"], 0.05)
        self.assertEqual(opt.update(schedule={"type": "exponential", "lr": 0.05, "gamma": 0.5})["schedule"]["type"], "exponential")
        self.assertIsNone(opt.update(schedule=None)["schedule"])
        self.assertEqual(opt.update(ttl=120)["ttl"], 120)
        entries = opt.history()["entries"]
        self.assertEqual([e["loss"] for e in entries][:1], [0.75])
        self.assertIn("<svg", opt.plot_history(log_scale=True))
        old = opt.token
        new = opt.rotate_token()
        self.assertNotEqual(new, old)
        self.assertEqual(opt.info()["step"], 2)
        with self.assertRaises(UnauthorizedError):
            self.api.optimizer(opt.id, old).info()
        again = self.api.optimizer(opt.id, new)
        self.assertEqual(again.params(), snapshot["params"])
        opt.delete()
        with self.assertRaises(NotFoundError) as caught:
            again.info()
        self.assertEqual(caught.exception.type, "urn:adam-api:problem:not-found")

    def test_binary_wire_with_the_standard_library(self):
        opt = self.api.create_optimizer_by_shapes({"fc.weight": [2, 2], "fc.bias": [2]}, hyperparams={"lr": 0.05, "decoupled_weight_decay": True, "weight_decay": 0.1})
        start = [0.5, -0.5, 0.25, 1.0]
        opt.upload("fc.weight", array.array("f", start[:3]))
        with self.assertRaises(ConflictError):
            opt.step_raw(array.array("f", [0.0] * 6))
        opt.upload("fc.weight", array.array("f", start[3:]), offset=3)
        info = opt.upload(None, struct.pack("<2f", 0.1, -0.1), offset=4)
        self.assertTrue(info["upload"]["complete"])
        twin = self.api.create_optimizer({"fc.weight": [start[:2], start[2:]], "fc.bias": [0.1, -0.1]}, hyperparams={"lr": 0.05, "decoupled_weight_decay": True, "weight_decay": 0.1})
        g = [0.1, 0.2, -0.3, 0.4, 0.5, -0.6]
        raw = opt.step_raw(array.array("f", g), loss=0.5)
        json_params = twin.step({"fc.weight": [g[:2], g[2:4]], "fc.bias": g[4:]})["params"]
        self.assertEqual(raw["params"], bits(json_params))
        self.assertEqual(opt.params_raw(), raw["params"])
        st = opt.step_safetensors({"fc.weight": [g[:2], g[2:4]], "fc.bias": g[4:]}, loss=0.4)
        self.assertEqual(st["step"], 2)
        self.assertEqual(st["params"]["fc.weight"].shape, [2, 2])
        self.assertEqual(st["params"]["fc.weight"], opt.params_safetensors()["fc.weight"])
        half = b"".join(struct.pack("<f", x)[2:] for x in [0.5] * 6)  # bfloat16: the high halves
        self.assertEqual(opt.step_raw(half, dtype="bfloat16")["step"], 3)
        ckpt = opt.checkpoint()
        tensors, meta = wire.load_safetensors(ckpt)
        self.assertEqual(meta["step"], "3")
        self.assertEqual(sorted(tensors), sorted(f"{s}/{n}" for s in ("params", "exp_avg", "exp_avg_sq", "step") for n in ("fc.weight", "fc.bias")))
        copy = self.api.create_optimizer([0.0])
        self.assertEqual(copy.restore_checkpoint(ckpt)["step"], 3)
        self.assertEqual(copy.step_raw(array.array("f", g))["params"], opt.step_raw(array.array("f", g))["params"])
        self.assertEqual(opt.upload_params({"fc.bias": [1.0, 2.0]})["step"], 4)
        self.assertEqual(opt.params()["fc.bias"], [1.0, 2.0])
        safe = self.api.create_optimizer_from_safetensors(wire.dump_safetensors({"a": [1.0, 2.0], "b": [[3.0]]}), optimizer="sgd", hyperparams=None, lr=0.5)
        self.assertEqual((safe.created["optimizer"], safe.created["hyperparams"]["lr"], [t["name"] for t in safe.layout]), ("sgd", 0.5, ["a", "b"]))
        for o in (opt, twin, copy, safe):
            o.delete()

    @need_numpy
    def test_numpy_arrays_go_raw_and_come_back_as_arrays(self):
        w = np.arange(6, dtype="<f4").reshape(2, 3) / 7
        b = np.array([0.5, -0.5], "<f4")
        opt = self.api.create_optimizer({"w": w, "b": b}, optimizer="rmsprop", hyperparams={"lr": 0.01, "centered": True})
        self.assertEqual(opt.created["upload"]["complete"] if opt.created["upload"]["complete"] else opt.info()["upload"]["complete"], True)
        got = opt.params_arrays()
        self.assertTrue(np.array_equal(got["w"], w) and np.array_equal(got["b"], b))
        twin = self.api.create_optimizer({"w": w.tolist(), "b": b.tolist()}, optimizer="rmsprop", hyperparams={"lr": 0.01, "centered": True})
        g = {"w": np.full((2, 3), 0.25, "<f4"), "b": np.array([1.0, -1.0], "<f4")}
        out = opt.step(g, loss=1.5)
        self.assertEqual((out["step"], out["replayed"]), (1, False))
        ref = twin.step({k: v.tolist() for k, v in g.items()})["params"]
        self.assertEqual(bits(out["params"]["w"]), bits(ref["w"]))
        self.assertEqual(out["params"]["w"].shape, (2, 3))
        # A None gradient goes as JSON null (frozen); the server may not take it on hosted optimizers yet.
        flat = opt.step(np.concatenate([g["w"].ravel(), g["b"]]))
        self.assertEqual(flat["step"], 2)
        self.assertEqual(opt.upload_params({"b": np.array([3.0, 4.0], "<f4")})["step"], 2)
        self.assertEqual(opt.params_arrays()["b"].tolist(), [3.0, 4.0])
        for o in (opt, twin):
            o.delete()

    def test_every_optimizer_hosted_and_checkpointed_into_another(self):
        for name in self.names:  # sparse_adam with rows (JSON {"indices", "values"}), as its stateless step
            with self.subTest(optimizer=name):
                params, grads = self.step_args(name)
                opt = self.api.create_optimizer(params, optimizer=name, hyperparams=HYPERPARAMS[name])
                opt.step(grads)
                opt.step(grads)
                copy = self.api.create_optimizer(params, optimizer=name, hyperparams={"lr": 1.0})
                restored = copy.restore_checkpoint(opt.checkpoint())
                self.assertEqual((restored["step"], restored["hyperparams"]), (2, opt.info()["hyperparams"]))
                self.assertEqual(copy.step(grads)["params"], opt.step(grads)["params"])
                json_copy = self.api.create_optimizer(params, optimizer=name, hyperparams={"lr": 1.0})
                json_copy.restore(opt.state())
                self.assertEqual(json_copy.step(grads)["params"], opt.step(grads)["params"])
                for o in (opt, copy, json_copy):
                    o.delete()

    def test_workers_contribute_to_one_accumulated_step(self):
        opt = self.api.create_optimizer({"w": [0.5, -0.5]}, optimizer="sgd", hyperparams={"lr": 0.5}, accumulate=2)
        plain = self.api.create_optimizer({"w": [0.5, -0.5]}, optimizer="sgd", hyperparams={"lr": 0.5})
        self.assertEqual(opt.info()["accumulate"], {"contributions": 2, "reduce": "mean", "received": [], "missing": 2})
        first = opt.step({"w": [0.5, 1.5]}, loss=1.0, expected_step=0, worker=1)
        self.assertEqual((first["pending"], first["received"], first["missing"]), (True, [1], 1))
        with self.assertRaises(ConflictError) as caught:  # the step waits for worker 0
            opt.wait_params_raw(1, wait=1, timeout=0)
        self.assertEqual(caught.exception.problem["step"], 0)
        last = opt.step({"w": [0.25, -0.5]}, loss=3.0, expected_step=0, worker=0)
        self.assertEqual(last["step"], 1)
        # The mean, (g0 + g1) / 2 = [0.375, 0.5], in one plain step.
        self.assertEqual(last["params"], plain.step({"w": [0.375, 0.5]})["params"])
        self.assertEqual(opt.wait_params_raw(1)["params"], bits(last["params"]["w"]))
        self.assertEqual(opt.history()["entries"][-1]["loss"], 2.0)
        opt.update(accumulate=None)
        self.assertIsNone(opt.info().get("accumulate"))
        for o in (opt, plain):
            o.delete()

    def test_errors_name_the_field(self):
        with self.assertRaises(ValidationError) as caught:
            self.api.step([1.0], [0.1], hyperparams={"lr": -1})
        self.assertEqual(caught.exception.fields, ["hyperparams.lr"])
        self.assertEqual(caught.exception.status, 422)
        with self.assertRaises(ValidationError):
            self.api.create_optimizer([0.0], optimizer="sgd")  # SGD's lr is required
        with self.assertRaises(NotFoundError):
            self.api.optimizer("0" * 64, "token").info()
        with self.assertRaises(ForbiddenError):
            self.api.list_optimizers()  # a server without API_KEYS lists nothing

    def test_an_idempotency_key_reused_with_other_gradients_is_refused(self):
        opt = self.api.create_optimizer([0.0, 0.0], hyperparams={"lr": 0.1})
        key = uuid.uuid4().hex
        opt.step([1.0, 1.0], idempotency_key=key)
        with self.assertRaises(ValidationError):
            opt.step([2.0, 2.0], idempotency_key=key)
        opt.delete()


if __name__ == "__main__":
    unittest.main()
