"""``HostedOptimizer``: a ``torch.optim.Optimizer`` whose state lives in a hosted adam-api optimizer.

    from adam_api.torch import HostedOptimizer

    opt = HostedOptimizer(model.named_parameters(), base_url=URL, optimizer="adamw", lr=3e-3,
                          weight_decay=0.01, schedule={"type": "warmup_cosine", "lr": 3e-3,
                                                       "warmup_steps": 100, "total_steps": 10_000})
    for x, y in data:
        loss = loss_fn(model(x), y); loss.backward()
        opt.step()          # uploads every .grad (raw float32), writes the new params into the tensors in place
        opt.zero_grad()

Each ``step()`` is one request: the gradients go as raw bytes in the optimizer's layout order, the
new parameters come back the same way and are copied into the parameters, so the model trains
exactly as with the local torch optimizer (torch 1.13's ``foreach=False`` arithmetic, bit for bit).
"""

from __future__ import annotations

import json
import math
import re
import sys
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from . import checkpoint as _ckpt
from . import wire
from .client import AdamApi, RemoteOptimizer, _quietly, accumulate_setting
from .errors import ConflictError
from .checkpoint import CONTROLS, TORCH_ONLY, from_api, to_api

__all__ = ["HostedOptimizer"]

_UPLOAD_BYTES = 32 << 20  # bytes per params upload request (a sharded optimizer takes at most 32 MiB per PUT)
_DTYPES = {torch.float32: "float32", torch.float64: "float64"}
_COALESCING = ("adagrad", "sparse_adam")  # torch coalesces a sparse gradient before these step with it; SGD does not


def _named_groups(params: Any) -> List[Dict[str, Any]]:
    """Param groups with names: [{"params": [tensors], "param_names": [names], **overrides}].

    Takes model.named_parameters() ((name, tensor) pairs), dicts with "params" as such pairs (or as
    tensors with "param_names"), or plain tensors (named by their position, "0", "1", ...).
    """
    if isinstance(params, torch.Tensor):
        raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, but got " + torch.typename(params))
    items = list(params)
    if not items:
        raise ValueError("optimizer got an empty parameter list")
    dicts = items if isinstance(items[0], Mapping) else [{"params": items}]
    groups: List[Dict[str, Any]] = []
    position = 0
    for d in dicts:
        if not isinstance(d, Mapping):
            raise TypeError("param groups must all be dicts, or none")
        group = dict(d)
        entries = group.pop("params")
        entries = [entries] if isinstance(entries, torch.Tensor) else list(entries)
        names = group.pop("param_names", None) or group.pop("names", None)
        tensors: List[torch.Tensor] = []
        found: List[str] = []
        for j, e in enumerate(entries):
            if isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], str):
                found.append(e[0])
                tensors.append(e[1])
            elif isinstance(e, torch.Tensor):
                found.append(str(names[j]) if names is not None else str(position))
                tensors.append(e)
            else:
                raise TypeError(f"a parameter is a (name, tensor) pair or a tensor, got {type(e).__name__}")
            position += 1
        groups.append({"params": tensors, "param_names": found, **group})
    seen: Dict[str, int] = {}
    for g in groups:
        for n in g["param_names"]:
            if n in seen:
                raise ValueError(f"parameter name {n!r} appears twice: each tensor of a hosted optimizer has its own name")
            seen[n] = 1
    return groups


def _overrides(group: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in group.items() if k not in ("params", "param_names")}


def _pattern(text: str) -> "re.Pattern[str]":
    """A param_groups entry as the service reads it: a name, or a pattern where * matches any run of characters."""
    return re.compile("".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", text)) + r"\Z", re.S)


def _split_like(group: Dict[str, Any], server_groups: List[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One group of named tensors split as the service's param_groups split them: the tensors no group
    names first (the top-level hyperparameters), then each group with its overrides (torch's names)."""
    assigned: List[Optional[int]] = [None] * len(group["params"])
    for gi, sg in enumerate(server_groups):
        patterns = [_pattern(p) for p in sg.get("params", [])]
        for j, name in enumerate(group["param_names"]):
            if assigned[j] is None and any(p.match(name) for p in patterns):
                assigned[j] = gi
    out: List[Dict[str, Any]] = []
    for gi in [None] + list(range(len(server_groups))):
        members = [j for j, a in enumerate(assigned) if a == gi]
        if not members:
            continue
        overrides = {} if gi is None else from_api({k: v for k, v in server_groups[gi].items() if k != "params"})
        out.append({"params": [group["params"][j] for j in members], "param_names": [group["param_names"][j] for j in members], **overrides})
    return out


def _check_options(options: Dict[str, Any]) -> Dict[str, Any]:
    """Removes torch's implementation switches (foreach=None/False, ...) and refuses the ones adam-api cannot honour."""
    kept = {}
    for key in list(options):
        if key in TORCH_ONLY:
            value = options.pop(key)
            if value not in (None, False):
                raise ValueError(f"{key}={value!r}: adam-api computes torch's single-tensor path (foreach=False) on the CPU; pass {key}=None or False")
            kept[key] = value
    return kept


def _flat_bytes(tensors: Sequence[torch.Tensor], dtype: torch.dtype) -> bytes:
    """The tensors' elements, row-major, little-endian, one after another (the raw wire format)."""
    assert sys.byteorder == "little", "the raw wire format is little-endian"
    if not tensors:
        return b""
    flat = torch.cat([t.detach().reshape(-1).to(device="cpu", dtype=dtype) for t in tensors])
    return _ckpt._tensor_bytes(flat)


class HostedOptimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer backed by a hosted adam-api optimizer.

    params: ``model.named_parameters()``, or param-group dicts whose "params" are (name, tensor)
        pairs (or tensors, with "param_names"), each with its own hyperparameters (torch's param
        groups, sent as the API's ``param_groups``). Names identify tensors on the service.
    base_url / api_key / client: the service (``$ADAM_API_URL``, ``$ADAM_API_KEY`` by default), or an
        ``AdamApi`` to use.
    optimizer: any optimizer of ``GET /v1/algorithms`` (adam, adamw, sgd, rmsprop, adagrad, adamax,
        nadam, radam, adadelta, lion, muon); hyperparameters as keyword arguments with torch's names
        (``lr``, ``betas=(b1, b2)``, ``weight_decay``, ``momentum``, ...), plus adam-api's gradient
        controls ``clip_grad_norm``, ``clip_grad_value``, ``nonfinite="skip"``.
    schedule: a server-side learning-rate schedule (``{"type": "warmup_cosine", ...}``); the
        service then sets each step's rate, and ``last_lr`` is the rate the last step applied.
        Without one, changes to ``param_groups[i]["lr"]`` (e.g. by a torch LR scheduler) and to any
        other hyperparameter are sent (PATCH) before the next step.
    ttl: seconds the hosted optimizer lives after its last call (the service's default otherwise).
    accumulate: many workers, one optimizer: N (or ``{"contributions": N, "reduce": "mean" | "sum"}``);
        each step then takes one gradient from each of N workers, reduced in ascending worker id order.
    worker: this process's worker id 0..N-1 under ``accumulate`` (the others ``attach(..., worker=i)``):
        ``step()`` posts the gradients as its contribution and returns once the step is applied (waiting
        for the other workers' contributions), with the new params in the tensors, as after a
        DistributedDataParallel step.

    A parameter with a sparse ``.grad`` (``nn.Embedding(..., sparse=True)``) is sent as rows, for the
    optimizers that take them (``sgd``, ``adagrad``, ``sparse_adam``), with torch's numbers.

    ``id`` and ``token`` attach another process to the same state (``HostedOptimizer.attach``);
    ``remote`` is the adam_api.RemoteOptimizer for everything else (history, snapshots, delete).
    """

    def __init__(
        self,
        params: Any,
        base_url: Optional[str] = None,
        optimizer: str = "adam",
        *,
        api_key: Optional[str] = None,
        client: Optional[AdamApi] = None,
        schedule: Optional[Mapping[str, Any]] = None,
        ttl: Optional[int] = None,
        accumulate: Any = None,
        worker: Optional[int] = None,
        shards: Optional[int] = None,
        **hyperparams: Any,
    ):
        api = client or AdamApi(base_url, api_key)
        groups = _named_groups(params)
        switches = _check_options(hyperparams)
        for g in groups:
            switches.update({k: v for k, v in _check_options(g).items() if k not in switches})
        dtype = self._dtype_of([p for g in groups for p in g["params"]])
        catalogue = api.algorithm(optimizer)["hyperparams"]
        known = set(catalogue) | set(CONTROLS)
        # The keyword arguments all go (the service names a wrong one); a group's other keys stay local, as torch allows.
        base = to_api(hyperparams)
        own = [{k: v for k, v in to_api(_overrides(g)).items() if k in known} for g in groups]
        for key in {k for o in own for k in o} - set(base):
            if "default" in catalogue.get(key, {}):
                base[key] = catalogue[key]["default"]  # what the groups that do not set it use
        full = [{**base, **o} for o in own]
        top, api_groups = _ckpt.groups_to_api(full, [g["param_names"] for g in groups])
        shapes = {n: list(p.shape) for g in groups for n, p in zip(g["param_names"], g["params"])}
        remote = api.create_optimizer_by_shapes(shapes, top, schedule, _DTYPES[dtype], optimizer, api_groups or None, ttl, accumulate_setting(accumulate), shards=shards)
        try:
            answered = remote.created["hyperparams"]
            for g, f in zip(groups, full):
                g.update(from_api({**answered, **f}))  # every hyperparameter explicit: torch's defaults are not group 0's
            self._setup(api, remote, remote.created, groups, switches, {**answered, **base}, worker)
            self._upload_all()
        except BaseException:
            _quietly(remote.delete)
            raise

    @classmethod
    def attach(
        cls,
        optimizer_id: str,
        token: str,
        params: Any,
        base_url: Optional[str] = None,
        *,
        api_key: Optional[str] = None,
        client: Optional[AdamApi] = None,
        pull: bool = True,
        worker: Optional[int] = None,
    ) -> "HostedOptimizer":
        """Resumes a hosted optimizer (its ``id`` and ``token``) from another process: ``params`` must name
        the same tensors with the same shapes. pull: copy the service's params into the tensors (the
        model continues from the hosted state); with pull=False the local values are uploaded.
        worker: this process's worker id when the optimizer has ``accumulate`` (see the class)."""
        api = client or AdamApi(base_url, api_key)
        remote = api.optimizer(optimizer_id, token)
        info = remote.info()
        groups = _named_groups(params)
        if info.get("param_groups") and len(groups) == 1 and set(groups[0]) == {"params", "param_names"}:
            groups = _split_like(groups[0], info["param_groups"])
        switches: Dict[str, Any] = {}
        for g in groups:
            switches.update(_check_options(g))
        self = cls.__new__(cls)
        self._setup(api, remote, info, groups, switches, None, worker)
        if pull:
            self._pull()
        else:
            self._upload_all()
        return self

    # -- set-up -------------------------------------------------------------------------------

    @staticmethod
    def _dtype_of(tensors: Sequence[torch.Tensor]) -> torch.dtype:
        dtypes = {p.dtype for p in tensors}
        if len(dtypes) != 1 or not dtypes <= set(_DTYPES):
            raise TypeError(f"a hosted optimizer keeps all params in one dtype, float32 or float64; these are {sorted(map(str, dtypes))}")
        return dtypes.pop()

    def _setup(self, api: AdamApi, remote: RemoteOptimizer, info: Mapping[str, Any], groups: List[Dict[str, Any]], switches: Mapping[str, Any], defaults_api: Optional[Mapping[str, Any]] = None, worker: Optional[int] = None) -> None:
        self.api = api
        self.remote = remote
        self.optimizer = info["optimizer"]
        accumulate = info.get("accumulate")
        if worker is not None:
            if not accumulate:
                raise ValueError(f"worker={worker!r}: the hosted optimizer takes no contributions (create it with accumulate=N)")
            if isinstance(worker, bool) or not isinstance(worker, int) or not 0 <= worker < accumulate["contributions"]:
                raise ValueError(f"worker is 0..{accumulate['contributions'] - 1} (accumulate: {accumulate['contributions']} contributions), got {worker!r}")
        #: This process's worker id under accumulate (step() contributes and waits), or None.
        self.worker = worker
        self.schedule = info.get("schedule")
        self._hosted_step = int(info["step"])
        self.last_lr: Optional[float] = None
        self.grad_norm: Optional[float] = None
        self.skipped: Optional[bool] = None
        self._ready = False
        names = [n for g in groups for n in g["param_names"]]
        tensors = [p for g in groups for p in g["params"]]
        self._dtype = self._dtype_of(tensors)
        if _DTYPES[self._dtype] != info["dtype"]:
            raise TypeError(f"the hosted optimizer is {info['dtype']}, the params are {_DTYPES[self._dtype]}")
        layout = info["layout"]
        by_name = dict(zip(names, tensors))
        missing = [t["name"] for t in layout if t["name"] not in by_name]
        unknown = sorted(set(by_name) - {t["name"] for t in layout})
        if missing or unknown:
            raise ValueError(f"the params do not match the hosted optimizer's tensors: missing {missing}, unknown {unknown}")
        for t in layout:
            if list(by_name[t["name"]].shape) != list(t["shape"]):
                raise ValueError(f"{t['name']} has shape {list(by_name[t['name']].shape)}, the hosted optimizer's is {t['shape']}")
        # Raw bodies follow the service's layout order, whatever order the groups give.
        self._layout = [(t["name"], by_name[t["name"]]) for t in sorted(layout, key=lambda t: t["offset"])]
        self._known = set(api.algorithm(self.optimizer)["hyperparams"]) | set(CONTROLS)
        hp = info["hyperparams"] if defaults_api is None else defaults_api
        defaults = {**from_api(hp), **_ckpt.torch_only_defaults(_ckpt.torch_class(self.optimizer, hp)), **switches}
        super().__init__(groups, defaults)
        self._synced = self._hyperparams()
        self._sent_groups = bool(_ckpt.groups_to_api(self._synced, [g["param_names"] for g in self.param_groups])[1])
        self._versions = self._current_versions()
        self._ready = True

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        if getattr(self, "_ready", False):
            raise NotImplementedError("a hosted optimizer's tensors are fixed at creation: create another HostedOptimizer for new parameters")
        super().add_param_group(param_group)

    # -- what the service holds -----------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.remote.id

    @property
    def token(self) -> str:
        return self.remote.token

    @property
    def step_count(self) -> int:
        """Steps the hosted optimizer has taken (skipped ones not counted)."""
        return self._hosted_step

    def _hyperparams(self) -> List[Dict[str, Any]]:
        # Under a server-side schedule a group's lr is its base rate (the schedule's lr for its tensors).
        return [{k: v for k, v in to_api(_overrides(g)).items() if k in self._known} for g in self.param_groups]

    def _current_versions(self) -> List[int]:
        return [p._version for _, p in self._layout]

    def _sync(self) -> None:
        """Sends what changed locally since the last call: hyperparameters (a torch LR scheduler's lr, a
        changed weight_decay) by PATCH, and parameters modified in place (model.load_state_dict, an
        init) by PUT, so the service steps what torch would."""
        now = self._hyperparams()
        if now != self._synced:
            top, groups = _ckpt.groups_to_api(now, [g["param_names"] for g in self.param_groups])
            if groups or self._sent_groups:  # the groups as they are now (None: every tensor uses hyperparams)
                self.remote.update(hyperparams=top, param_groups=groups or None)
            else:
                self.remote.update(hyperparams=top)
            self._synced, self._sent_groups = now, bool(groups)
        changed = [i for i, (v, (_, p)) in enumerate(zip(self._versions, self._layout)) if p._version != v]
        width = 4 if self._dtype == torch.float32 else 8
        for i in changed:
            name, p = self._layout[i]
            data = _flat_bytes([p], self._dtype)
            for start in range(0, max(len(data), 1), _UPLOAD_BYTES):
                self.remote.upload(name, data[start:start + _UPLOAD_BYTES], offset=start // width, dtype=None)
        if changed:
            self._versions = self._current_versions()

    def _upload_all(self) -> None:
        """PUT the local params, in parts of at most _UPLOAD_ELEMENTS elements, by flat offset."""
        tensors = [p for _, p in self._layout]
        data = _flat_bytes(tensors, self._dtype)
        width = 4 if self._dtype == torch.float32 else 8
        total = len(data) // width
        part = _UPLOAD_BYTES // width
        for start in range(0, max(total, 1), part):
            end = min(total, start + part)
            self.remote.upload(None, data[start * width:end * width], offset=start)
        self._versions = self._current_versions()

    def _pull(self) -> None:
        self._write(self.remote.params_raw())

    def _write(self, raw: bytes) -> None:
        """Copies raw params (layout order) into the tensors, in place."""
        flat = torch.frombuffer(bytearray(raw), dtype=self._dtype) if raw else torch.empty(0, dtype=self._dtype)
        offset = 0
        with torch.no_grad():
            for _, p in self._layout:
                n = p.numel()
                p.copy_(flat[offset:offset + n].view(p.shape))
                offset += n
        self._versions = self._current_versions()

    # -- torch's optimizer contract -------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Any = None, *, loss: Optional[float] = None) -> Any:
        """One optimizer step, as torch's: calls ``closure`` (with grad enabled) when given and returns its
        loss. The loss (the closure's, or ``loss=``) is reported to the hosted optimizer, which feeds it
        to a reduce_on_plateau schedule and records it in the history. Parameters whose ``.grad`` is
        None are left alone, as torch skips them."""
        result = None
        if closure is not None:
            with torch.enable_grad():
                result = closure()
        reported = loss if loss is not None else result
        value = float(reported) if reported is not None else None
        if value is not None and not math.isfinite(value):
            value = None  # JSON and the query have no NaN; the service records none
        self._sync()
        grads = [p.grad for _, p in self._layout]
        key = uuid.uuid4().hex  # one per step, the same on every retry: never applied twice
        if self.worker is not None:  # the other workers wait for this one: it contributes even without gradients
            self._contribute(grads, value, key)
            return result
        if all(g is None for g in grads):
            return result  # torch does nothing either
        if any(g is not None and g.is_sparse for g in grads):
            out = self._step_rows(grads, value, key)
        elif all(g is not None for g in grads):
            out = self.remote.step_raw(_flat_bytes(grads, self._dtype), loss=value, idempotency_key=key, expected_step=self._hosted_step)
        else:
            # Frozen tensors: JSON with null for them (the raw format has every tensor), params back raw.
            body = {"grads": {name: (None if g is None else g.detach().to(device="cpu", dtype=self._dtype).tolist()) for (name, _), g in zip(self._layout, grads)}, "expected_step": self._hosted_step}
            if value is not None:
                body["loss"] = value
            res = self.remote._call("POST", "/step", body, headers={"idempotency-key": key, "accept": "application/octet-stream, application/problem+json;q=0.9"})
            out = _raw_step(res)
        self._stepped(out)
        return result

    def _stepped(self, out: Mapping[str, Any]) -> None:
        self._write(out["params"])
        self._hosted_step = out["step"]
        self.last_lr = out["lr"]
        self.grad_norm = out.get("grad_norm")
        self.skipped = out.get("skipped")

    def _step_rows(self, grads: Sequence[Optional[torch.Tensor]], loss: Optional[float], key: str) -> Dict[str, Any]:
        """A step with sparse gradients, as a safetensors file: a sparse ``.grad`` as its rows
        (``grads.indices/<name>``, ``grads.values/<name>``), a dense one by name, None left out (frozen).
        Adagrad's and SparseAdam's rows are coalesced here with torch's own coalesce(), as their torch
        steps do first; SGD's go as they are, as torch adds them. The params come back raw."""
        width = "F32" if self._dtype == torch.float32 else "F64"
        tensors: Dict[str, Any] = {}
        for (name, p), g in zip(self._layout, grads):
            if g is None:
                continue
            if g.is_sparse:
                if self.optimizer in _COALESCING:
                    g = g.coalesce()
                if g.sparse_dim() != 1:
                    raise ValueError(f"{name}: a sparse gradient has rows of the first dimension (sparse_dim 1), this one has sparse_dim {g.sparse_dim()}")
                rows = g._indices().reshape(-1).to(device="cpu", dtype=torch.int64)
                values = g._values().detach().to(device="cpu", dtype=self._dtype)
                tensors[f"grads.indices/{name}"] = wire.Tensor("I64", [rows.numel()], _ckpt._tensor_bytes(rows))
                tensors[f"grads.values/{name}"] = wire.Tensor(width, [rows.numel(), *p.shape[1:]], _ckpt._tensor_bytes(values))
            else:
                flat = g.detach().to(device="cpu", dtype=self._dtype)
                tensors[name] = wire.Tensor(width, list(p.shape), _ckpt._tensor_bytes(flat))
        headers = {"content-type": wire.SAFETENSORS, "accept": "application/octet-stream, application/problem+json;q=0.9", "idempotency-key": key}
        query = {"loss": repr(loss) if loss is not None else None, "expected_step": self._hosted_step}
        res = self.remote._call("POST", "/step", wire.dump_safetensors(tensors), headers=headers, query=query)
        return _raw_step(res)

    def _contribute(self, grads: Sequence[Optional[torch.Tensor]], loss: Optional[float], key: str) -> None:
        """This worker's contribution to the pending accumulated step (raw, with ``worker`` and
        ``expected_step``), then the new params: from the answer when it completed the set, else by
        long-polling GET …/params?min_step=k+1&wait=30. A parameter without ``.grad`` contributes zeros
        (the service takes dense contributions only, as DistributedDataParallel reduces zeros for it)."""
        dense = []
        for (name, p), g in zip(self._layout, grads):
            if g is not None and g.is_sparse:
                raise NotImplementedError(f"{name} has a sparse gradient: contributions to an accumulated step are dense (send g.to_dense(), or train without accumulate)")
            dense.append(torch.zeros_like(p, dtype=self._dtype) if g is None else g)
        expected = self._hosted_step
        out = self.remote.step_raw(_flat_bytes(dense, self._dtype), loss=loss, idempotency_key=key, expected_step=expected, worker=self.worker)
        while out.get("pending"):
            try:
                got = self.remote.wait_params_raw(expected + 1, timeout=0)  # one long-poll of up to 30 s
                out = {"step": got["step"], "lr": None, "params": got["params"]}
            except ConflictError:
                info = self.remote.info()
                if int(info["step"]) == expected and self.worker not in (info.get("accumulate") or {}).get("received", []):
                    # The set was dropped without a step: a skipped one (nonfinite="skip"), or a restore.
                    out = {"step": expected, "lr": None, "params": self.remote.params_raw(), "skipped": True}
        self._stepped(out)

    def state_dict(self) -> Dict[str, Any]:
        """torch's optimizer state_dict of the hosted state ({"state": {index: {"step", "exp_avg", ...}},
        "param_groups": [...]}), loadable into the matching torch.optim class (Adam, AdamW, SGD, ...)
        and back into a HostedOptimizer. With a schedule, each group's "lr" is the rate of the next step
        and "initial_lr" its base, as a torch LR scheduler leaves them. "adam_api" holds the hosted
        optimizer's step, schedule and scheduler state."""
        self._sync()
        tensors, meta = wire.load_safetensors(self.remote.checkpoint())
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        order = [name for g in self.param_groups for name in g["param_names"]]
        state = _ckpt.state_from_checkpoint(tensors, meta, order, self._dtype)
        schedule = _json(meta.get("schedule"))
        next_lr = _json(meta.get("next_lr"))
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["param_names"] = list(g["param_names"])
            if schedule is not None and next_lr is not None:
                packed["initial_lr"] = g["lr"]
                packed["lr"] = float(self._next_lr_of(g, meta, next_lr))
            packed["params"] = [index[id(p)] for p in g["params"]]
            groups.append(packed)
        extra = {"optimizer": meta.get("optimizer"), "id": self.id, "step": int(meta["step"]), "dtype": meta.get("dtype"),
                 "schedule": schedule, "scheduler_state": _json(meta.get("scheduler_state"))}
        return {"state": state, "param_groups": groups, "adam_api": extra}

    def _next_lr_of(self, group: Mapping[str, Any], meta: Mapping[str, str], next_lr: float) -> float:
        """The rate group ``group`` steps with next: the schedule's (next_lr), unless the service keeps a group
        of these tensors with its own lr, which then drives the schedule for them (torch's base_lrs per
        group; reduce_on_plateau's own rate per group)."""
        server_groups = _json(meta.get("param_groups")) or []
        names = set(group["param_names"])
        j = next((i for i, sg in enumerate(server_groups) if "lr" in sg and names <= {n for n in group["param_names"] if any(_pattern(p).match(n) for p in sg["params"])}), None)
        if j is None:
            return next_lr
        schedule = _json(meta["schedule"])
        if schedule.get("type") == "reduce_on_plateau":
            lrs = (_json(meta.get("scheduler_state")) or {}).get("group_lrs") or []
            return lrs[j] if j < len(lrs) and lrs[j] is not None else server_groups[j]["lr"]
        return self.api.evaluate_schedule(_with_base_lr(schedule, server_groups[j]["lr"]), steps=[int(meta["step"])])["lr"][0]

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores a state_dict into the hosted optimizer (PUT …/state): one from ``state_dict()`` here or
        in another process, or from the matching local torch optimizer (training then goes on remotely
        exactly where torch left it). The parameters are the tensors' current values: load the model's
        state_dict as well, before or after (in-place changes are uploaded before the next step)."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for g, s in zip(self.param_groups, saved_groups):
            if len(g["params"]) != len(s["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of optimizer's group")
            if "param_names" in s and list(s["param_names"]) != list(g["param_names"]):
                raise ValueError(f"loaded state dict names other parameters: {list(s['param_names'])[:5]}… for {g['param_names'][:5]}…")
        # torch's state_dict numbers the params across groups in order; ours are those of self.param_groups.
        saved_ids = [i for s in saved_groups for i in s["params"]]
        state = {pos: state_dict["state"][i] for pos, i in enumerate(saved_ids) if i in state_dict["state"]}
        extra = state_dict.get("adam_api") or {}
        schedule = extra["schedule"] if "schedule" in extra else self.schedule
        scheduler_state = extra.get("scheduler_state") if "schedule" in extra else None
        for g, s in zip(self.param_groups, saved_groups):
            for k, v in s.items():
                if k not in ("params", "param_names", "initial_lr"):
                    g[k] = v
            if schedule is not None and "initial_lr" in s:
                g["lr"] = s["initial_lr"]  # under a server-side schedule a group's lr is its base rate
        named = [(name, p) for g in self.param_groups for name, p in zip(g["param_names"], g["params"])]
        hyperparams, groups = _ckpt.groups_to_api(self._hyperparams(), [g["param_names"] for g in self.param_groups])
        data = _ckpt.checkpoint_from_state(self.optimizer, named, state, hyperparams, groups or None, schedule, scheduler_state, extra.get("step", self._hosted_step))
        info = self.remote.restore_checkpoint(data)
        self.schedule = info.get("schedule")
        self._hosted_step = int(info["step"])
        self._synced = self._hyperparams()
        self._sent_groups = bool(groups)
        self._versions = self._current_versions()

    def push(self) -> None:
        """Uploads every parameter's current value (PUT …/params). Changes made in place are uploaded
        before the next step anyway (torch's version counter shows them); not those made through
        ``.data``, which torch does not count: push() after them."""
        self._upload_all()

    def pull(self) -> None:
        """Copies the hosted parameters into the tensors, in place."""
        self._pull()

    def delete(self) -> None:
        """Deletes the hosted optimizer and everything stored for it."""
        self.remote.delete()

    def __repr__(self) -> str:
        return f"HostedOptimizer({self.optimizer}, id={self.id[:12]}…, step={self._hosted_step})\n" + super().__repr__()

    def __getstate__(self) -> Dict[str, Any]:
        raise TypeError("a HostedOptimizer is not picklable: save state_dict(), or its id and token to attach")


def _raw_step(res: Any) -> Dict[str, Any]:
    """{"step", "lr", "params": raw bytes, "grad_norm"?, "skipped"?} of a step answered with raw params."""
    out: Dict[str, Any] = {"step": int(res.headers["step"]), "lr": float(res.headers["lr"]), "params": res.body or b""}
    for k in ("grad_norm", "skipped"):
        if k in res.headers:
            out[k] = None if res.headers[k] == "null" else (res.headers[k] == "true" if k == "skipped" else float(res.headers[k]))
    return out


def _with_base_lr(spec: Any, lr: float) -> Any:
    """A schedule with every ``lr`` replaced, as the service drives a group's tensors from the group's lr."""
    if isinstance(spec, list):
        return [_with_base_lr(s, lr) for s in spec]
    if isinstance(spec, dict):
        return {k: (lr if k == "lr" else _with_base_lr(v, lr)) for k, v in spec.items()}
    return spec


def _json(text: Optional[str]) -> Any:
    return None if text is None else json.loads(text)
