"""Move optimizers between adam-api and PyTorch as safetensors checkpoints (needs torch).

    from adam_api.checkpoint import to_torch, from_torch

    # adam-api -> torch: the body of GET /v1/optimizers/{id}/state (Accept: application/vnd.safetensors)
    optimizer = to_torch(checkpoint_bytes, model)   # also loads the params into model
    # torch -> adam-api: the body of PUT /v1/optimizers/{id}/state (Content-Type: application/vnd.safetensors)
    checkpoint_bytes = from_torch(model, optimizer)

A checkpoint holds, for each parameter name of model.named_parameters(): ``params/<name>``, the
optimizer's state under torch's ``state_dict`` names (``exp_avg/<name>``, ``momentum_buffer/<name>``,
``square_avg/<name>``, ``sum/<name>``, ...), ``step/<name>`` (a float32 scalar where torch 1.13 keeps a
float32 tensor, a float64 holding the integer where torch keeps a Python int, none for SGD) and
NAdam's ``mu_product/<name>``; in ``__metadata__`` the optimizer, step count, dtype, and hyperparams,
schedule and scheduler state as JSON text. Works for every optimizer torch has a class for (Adam,
AdamW, SGD, RMSprop, Adagrad, Adamax, NAdam, RAdam, Adadelta); uses the safetensors package when
installed for ``save``/``load`` and its own reader/writer of the format when not.
"""

from __future__ import annotations

import ctypes
import inspect
import json
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from . import wire

__all__ = ["to_torch", "from_torch", "save", "load", "save_file", "load_file", "torch_class", "api_name"]

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}

# adam-api optimizer -> torch.optim class name (adam with decoupled_weight_decay is torch's AdamW).
_TORCH_CLASSES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop", "adagrad": "Adagrad",
                  "adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam", "adadelta": "Adadelta",
                  "sparse_adam": "SparseAdam", "muon": "Muon"}
_API_NAMES = {v: k for k, v in _TORCH_CLASSES.items()}
# torch keeps these step counts as Python ints (the others as float32 tensors, SGD none).
_INT_STEPS = {"rmsprop", "adadelta", "sparse_adam"}
_NO_STEPS = {"sgd", "lion", "muon"}
# Per-parameter scalars of the state (not shaped like the parameter), with torch's initial value.
_SCALARS = {"mu_product": 1.0}
# torch's keyword arguments that choose an implementation, not the math; adam-api computes
# torch's single-tensor path (foreach=False) on one thread.
TORCH_ONLY = {"foreach": None, "capturable": False, "differentiable": False, "fused": None}
# Keys of a torch param group that are not hyperparameters.
_NOT_HYPERPARAMS = {"params", "param_names", "initial_lr"}
# Gradient controls adam-api applies before the step (torch does them outside the optimizer).
CONTROLS = ("clip_grad_norm", "clip_grad_value", "nonfinite")


# -- the safetensors format, with torch tensors -------------------------------------------------

def _tensor_bytes(t: "torch.Tensor") -> bytes:
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return b""
    assert sys.byteorder == "little", "safetensors data is little-endian"
    return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())


def _from_wire(t: wire.Tensor) -> "torch.Tensor":
    dtype = DTYPES[t.dtype]
    if not t.data:
        return torch.empty(t.shape, dtype=dtype)
    return torch.frombuffer(bytearray(t.data), dtype=dtype).reshape(t.shape)


def save(tensors: Mapping[str, "torch.Tensor"], metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """The bytes of a safetensors file of ``tensors`` ({name: tensor}) in the order given (adam-api takes
    the order of ``params/…`` as its storage order); ``metadata`` ({str: str}) goes in ``__metadata__``."""
    return wire.dump_safetensors({k: wire.Tensor(_NAMES[v.dtype], list(v.shape), _tensor_bytes(v)) for k, v in tensors.items()}, metadata)


def load(data: bytes) -> Tuple[Dict[str, "torch.Tensor"], Dict[str, str]]:
    """(tensors, metadata) of the bytes of a safetensors file; metadata is {} when there is none."""
    tensors, metadata = wire.load_safetensors(data)
    return {k: _from_wire(v) for k, v in tensors.items()}, metadata


def save_file(tensors: Mapping[str, "torch.Tensor"], filename: str, metadata: Optional[Mapping[str, str]] = None) -> None:
    with open(filename, "wb") as f:
        f.write(save(tensors, metadata))


def load_file(filename: str) -> Tuple[Dict[str, "torch.Tensor"], Dict[str, str]]:
    """(tensors, metadata) of a safetensors file (safetensors' own load_file returns the tensors only)."""
    with open(filename, "rb") as f:
        return load(f.read())


# -- names: torch's keywords <-> adam-api's hyperparameters --------------------------------------

def torch_class(name: str, hyperparams: Optional[Mapping[str, Any]] = None):
    """The torch.optim class of adam-api's optimizer ``name`` (None if this torch has none: lion, or
    muon before torch 2.9); ``adam`` with ``decoupled_weight_decay`` is AdamW."""
    if name == "adam" and (hyperparams or {}).get("decoupled_weight_decay"):
        name = "adamw"
    cls_name = _TORCH_CLASSES.get(name)
    return getattr(torch.optim, cls_name, None) if cls_name else None


def api_name(optimizer: Any) -> str:
    """adam-api's name of a torch optimizer (an instance or a class): Adam -> adam, RMSprop -> rmsprop."""
    cls = optimizer if isinstance(optimizer, type) else type(optimizer)
    for klass in cls.__mro__:
        if klass.__name__ in _API_NAMES and klass.__module__.startswith("torch.optim"):
            return _API_NAMES[klass.__name__]
    raise TypeError(f"adam-api has no optimizer for {cls.__name__}")


def _number(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item()
    return v


def to_api(group: Mapping[str, Any]) -> Dict[str, Any]:
    """adam-api hyperparameters of a torch param group or keyword arguments: ``betas`` -> beta1/beta2,
    Muon's ``ns_coefficients`` -> ns_a/ns_b/ns_c; implementation switches (foreach, fused, ...),
    ``params``, ``param_names`` and schedulers' ``initial_lr`` are left out."""
    out: Dict[str, Any] = {}
    for key, value in group.items():
        if key in _NOT_HYPERPARAMS or key in TORCH_ONLY:
            continue
        if key == "betas":
            b1, b2 = value
            out["beta1"], out["beta2"] = float(_number(b1)), float(_number(b2))
        elif key == "ns_coefficients":
            out["ns_a"], out["ns_b"], out["ns_c"] = (float(_number(x)) for x in value)
        else:
            out[key] = _number(value)
    return out


def from_api(hyperparams: Mapping[str, Any]) -> Dict[str, Any]:
    """torch's keyword names of adam-api hyperparameters (beta1/beta2 -> ``betas``, ns_a/b/c -> ``ns_coefficients``)."""
    out = dict(hyperparams)
    if "beta1" in out and "beta2" in out:
        out["betas"] = (out.pop("beta1"), out.pop("beta2"))
    if all(k in out for k in ("ns_a", "ns_b", "ns_c")):
        out["ns_coefficients"] = (out.pop("ns_a"), out.pop("ns_b"), out.pop("ns_c"))
    return out


def torch_only_defaults(cls: Any) -> Dict[str, Any]:
    """The implementation switches ``cls`` takes (foreach, capturable, ...) with its defaults."""
    if cls is None:
        return {}
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return {}
    return {k: params[k].default for k in TORCH_ONLY if k in params and params[k].default is not inspect.Parameter.empty}


def torch_kwargs(cls: Any, hyperparams: Mapping[str, Any]) -> Dict[str, Any]:
    """Keyword arguments of ``cls`` from adam-api hyperparameters: the ones it takes, foreach=False."""
    try:
        accepted = set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        accepted = set()
    kw = {k: v for k, v in from_api(hyperparams).items() if k in accepted}
    if "foreach" in accepted:
        kw["foreach"] = False
    return kw


# -- state: checkpoint tensors <-> torch's state_dict -------------------------------------------

def state_from_checkpoint(tensors: Mapping[str, wire.Tensor], metadata: Mapping[str, str], names: Sequence[str], dtype: Optional["torch.dtype"] = None) -> Dict[int, Dict[str, Any]]:
    """torch's ``state_dict()["state"]`` ({index: {"step", slots…}}, indices in ``names`` order) of a checkpoint."""
    slots: List[str] = []
    for full in tensors:
        prefix = full.split("/", 1)[0]
        if prefix not in ("params", "step") and prefix not in _SCALARS and prefix not in slots:
            slots.append(prefix)
    step_meta = metadata.get("step")
    optimizer = metadata.get("optimizer", "adam")
    state: Dict[int, Dict[str, Any]] = {}
    for i, name in enumerate(names):
        entry: Dict[str, Any] = {}
        step_t = tensors.get(f"step/{name}")
        if step_t is not None:
            value = float(step_t.tolist())
            entry["step"] = torch.tensor(value, dtype=torch.float32) if step_t.dtype == "F32" else int(value)
        for slot in slots:
            t = tensors.get(f"{slot}/{name}")
            if t is not None:
                entry[slot] = _from_wire(t) if dtype is None else _from_wire(t).to(dtype)
        for scalar in _SCALARS:
            t = tensors.get(f"{scalar}/{name}")
            if t is not None:
                entry[scalar] = torch.tensor(float(t.tolist()), dtype=torch.float32)
        if "step" not in entry and optimizer not in _NO_STEPS and step_meta is not None and len(entry) > 0:
            entry["step"] = int(step_meta) if optimizer in _INT_STEPS else torch.tensor(float(step_meta), dtype=torch.float32)
        if any(k != "step" for k in entry):
            state[i] = entry
    return state


def _fresh_slots(optimizer: str, hyperparams: Mapping[str, Any]) -> List[str]:
    """The slots torch creates at a parameter's first step, by torch's names (scalars included)."""
    hp = hyperparams
    slots = {"adam": ["exp_avg", "exp_avg_sq"], "adamw": ["exp_avg", "exp_avg_sq"], "adamax": ["exp_avg", "exp_inf"],
             "nadam": ["mu_product", "exp_avg", "exp_avg_sq"], "radam": ["exp_avg", "exp_avg_sq"],
             "rmsprop": ["square_avg"], "adadelta": ["square_avg", "acc_delta"],
             "sparse_adam": ["exp_avg", "exp_avg_sq"]}.get(optimizer, [])
    if optimizer in ("adam", "adamw") and hp.get("amsgrad"):
        slots = slots + ["max_exp_avg_sq"]
    if optimizer == "rmsprop":
        slots = slots + (["momentum_buffer"] if hp.get("momentum", 0) > 0 else []) + (["grad_avg"] if hp.get("centered") else [])
    return slots


def _floats(hyperparams: Mapping[str, Any]) -> Dict[str, Any]:
    """Numbers as floats (torch's defaults mix 0 and 0.0), but for the integer ones (Muon's ns_steps)."""
    return {k: float(v) if isinstance(v, int) and not isinstance(v, bool) and k != "ns_steps" else v for k, v in hyperparams.items()}


def checkpoint_from_state(
    optimizer: str,
    named: Sequence[Tuple[str, "torch.Tensor"]],
    state: Mapping[int, Mapping[str, Any]],
    hyperparams: Mapping[str, Any],
    param_groups: Optional[List[Mapping[str, Any]]] = None,
    schedule: Optional[Mapping[str, Any]] = None,
    scheduler_state: Any = None,
    step: Optional[int] = None,
) -> bytes:
    """A checkpoint adam-api restores (PUT /v1/optimizers/{id}/state) from torch's state ({index: {...}},
    indices in ``named`` order) and the parameters' current values.

    Parameters that have not stepped yet get zeros for each slot, which is what torch starts from,
    and step 0; a slot torch keeps as None (its group keeps none) is left out. SGD, Lion and Muon keep no step count:
    ``step`` is the optimizer's own (for schedules).
    """
    dtypes = {p.dtype for _, p in named}
    if dtypes - {torch.float32, torch.float64} or len(dtypes) != 1:
        raise ValueError(f"adam-api keeps all params in one dtype, float32 or float64; these are {sorted(map(str, dtypes))}")
    dtype = dtypes.pop()
    states = [dict(state.get(i) or {}) for i in range(len(named))]
    fresh = not any(states) and optimizer not in _NO_STEPS
    if fresh:  # torch has not stepped: the zeros it starts from, step 0
        states = [{"step": 0, **{slot: None for slot in _fresh_slots(optimizer, hyperparams)}} for _ in named]
    slots: List[str] = []
    for s in states:
        for key in s:
            if key != "step" and key not in _SCALARS and key not in slots and (fresh or s[key] is not None):
                slots.append(key)
    tensors: Dict[str, "torch.Tensor"] = {}
    for name, p in named:
        tensors[f"params/{name}"] = p.detach()
    for slot in slots:
        for (name, p), s in zip(named, states):
            value = s.get(slot)
            if value is None and (fresh or not s) and optimizer not in _NO_STEPS:
                value = torch.zeros_like(p)  # not stepped yet: what torch starts from
            if value is not None:  # else its group keeps no such slot (torch's None)
                tensors[f"{slot}/{name}"] = value.detach().to(device="cpu", dtype=dtype)
    steps = [float(_number(s.get("step", 0))) for s in states]
    if optimizer not in _NO_STEPS:
        kind = torch.float64 if optimizer in _INT_STEPS else torch.float32
        for (name, _), value in zip(named, steps):
            tensors[f"step/{name}"] = torch.tensor(value, dtype=kind)
    for scalar, initial in _SCALARS.items():
        if any(scalar in s for s in states):
            for (name, _), s in zip(named, states):
                value = s.get(scalar)
                tensors[f"{scalar}/{name}"] = torch.tensor(float(_number(initial if value is None else value)), dtype=torch.float32)
    metadata: Dict[str, str] = {}
    if optimizer in _NO_STEPS:
        metadata["step"] = str(int(step or 0))
    elif len(set(steps)) == 1 and steps[0] == int(steps[0]):
        metadata["step"] = str(int(steps[0]))
    if optimizer != "adam":  # absent means adam, as in checkpoints made before other optimizers
        metadata["optimizer"] = optimizer
    metadata["dtype"] = str(dtype).replace("torch.", "")
    metadata["hyperparams"] = json.dumps(_floats(hyperparams))
    metadata["schedule"] = json.dumps(schedule)
    if param_groups:
        metadata["param_groups"] = json.dumps([_floats(g) for g in param_groups])
    if scheduler_state is not None:
        metadata["scheduler_state"] = json.dumps(scheduler_state)
    # The storage order adam-api gives the tensors (raw bodies follow it): the order given here.
    metadata["layout"] = json.dumps([name for name, _ in named])
    return save(tensors, metadata)


def groups_to_api(groups: Sequence[Mapping[str, Any]], names: Sequence[Sequence[str]]) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """(hyperparams, param_groups) of torch param groups: the first group's hyperparameters for every
    tensor, and for each later group that differs, its tensor names and the values that differ."""
    apis = [to_api(g) for g in groups]
    top = apis[0]
    out: List[Dict[str, Any]] = []
    for api, tensor_names in zip(apis[1:], names[1:]):
        diff = {k: v for k, v in api.items() if top.get(k, _MISSING) != v}
        if diff:
            out.append({"params": list(tensor_names), **diff})
    return top, out


_MISSING = object()


# -- whole optimizers -----------------------------------------------------------------------------

def to_torch(checkpoint: Any, model: "torch.nn.Module", optimizer_cls: Any = None, lr: Optional[float] = None, **overrides: Any):
    """Loads an adam-api checkpoint (bytes, or a file path) into ``model`` (its parameters, by name) and
    returns a torch optimizer over model.parameters() holding the checkpoint's state, foreach=False.

    optimizer_cls defaults to the checkpoint's optimizer's torch class (AdamW for adam with
    decoupled_weight_decay). With a schedule the optimizer starts at the checkpoint's next_lr (or
    ``lr``); attach a torch LR scheduler yourself if training goes on in torch. ``overrides`` are
    keyword arguments for the class.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        with open(checkpoint, "rb") as f:
            checkpoint = f.read()
    tensors, meta = wire.load_safetensors(checkpoint)
    name = meta.get("optimizer", "adam")
    hp = json.loads(meta.get("hyperparams", "{}"))
    schedule = json.loads(meta.get("schedule", "null"))
    if schedule is not None and lr is None:
        lr = json.loads(meta.get("next_lr", "null"))  # adam-api's checkpoints say the next step's rate
        if lr is None:
            raise ValueError(f"the checkpoint follows a {schedule.get('type')} schedule and does not say the next rate: "
                             "pass lr= (next_lr of GET /v1/optimizers/{id})")
    cls = optimizer_cls or torch_class(name, hp)
    if cls is None:
        raise TypeError(f"this torch has no class for adam-api's {name}: pass optimizer_cls")
    if name == "adam" and (cls is torch.optim.AdamW) != bool(hp.get("decoupled_weight_decay")):
        raise ValueError(f"decoupled_weight_decay is {bool(hp.get('decoupled_weight_decay'))}: use {'AdamW' if hp.get('decoupled_weight_decay') else 'Adam'}")
    named = dict(model.named_parameters())
    sent = {k.split("/", 1)[1] for k in tensors if k.startswith("params/")}
    if sent != set(named):
        raise ValueError(f"the checkpoint's params do not match the model's: missing {sorted(set(named) - sent)}, "
                         f"unknown {sorted(sent - set(named))}")
    for pname, p in named.items():
        t = tensors["params/" + pname]
        if DTYPES[t.dtype] != p.dtype or list(t.shape) != list(p.shape):
            raise ValueError(f"params/{pname} is {t.dtype} {t.shape}, the model's is {p.dtype} {list(p.shape)}")
    model.load_state_dict({pname: _from_wire(tensors["params/" + pname]) for pname in named}, strict=False)
    kw = torch_kwargs(cls, {k: v for k, v in hp.items() if k not in CONTROLS and k != "decoupled_weight_decay"})
    if lr is not None:
        kw["lr"] = lr
    kw.update(overrides)
    optimizer = cls(model.parameters(), **kw)
    state = state_from_checkpoint(tensors, meta, list(named))
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return optimizer


def from_torch(model: "torch.nn.Module", optimizer: "torch.optim.Optimizer", schedule: Optional[Mapping[str, Any]] = None, name: Optional[str] = None) -> bytes:
    """An adam-api checkpoint (bytes) of ``model``'s parameters and ``optimizer``'s state, for PUT …/state.
    An optimizer restored from it takes raw tensors (application/octet-stream) in model.parameters() order.

    name: the hosted optimizer it goes to; by default the class's (Adam and AdamW go to ``adam``, AdamW
        as decoupled_weight_decay, as hosted Adam optimizers keep it; pass ``name="adamw"`` for an adamw one).
    schedule: adam-api's schedule (a dict such as {"type": "step", "lr": 0.1, "step_size": 30}) or None.
    Parameter groups with different hyperparameters go as ``param_groups``.
    """
    named = list(model.named_parameters())
    index = {id(p): i for i, (_, p) in enumerate(named)}
    held = [id(p) for g in optimizer.param_groups for p in g["params"]]
    left_out = [n for n, p in named if id(p) not in set(held)]
    if left_out or len(held) != len(named):
        raise ValueError(f"the optimizer must hold exactly the model's parameters (not held: {left_out})")
    cls_name = api_name(optimizer)
    name = name or ("adam" if cls_name == "adamw" else cls_name)
    state = {index[id(p)]: optimizer.state[p] for g in optimizer.param_groups for p in g["params"] if optimizer.state.get(p)}
    names_of = [[named[index[id(p)]][0] for p in g["params"]] for g in optimizer.param_groups]
    hyperparams, groups = groups_to_api(optimizer.param_groups, names_of)
    for g in groups:
        g.pop("decoupled_weight_decay", None)
    hyperparams.pop("decoupled_weight_decay", None)
    if name == "adam":  # Adam's own hyperparameters, in its order: AdamW is its decoupled_weight_decay
        keys = list(hyperparams)
        at = keys.index("weight_decay") + 1 if "weight_decay" in keys else len(keys)
        items = list(hyperparams.items())
        hyperparams = dict(items[:at] + [("decoupled_weight_decay", cls_name == "adamw")] + items[at:])
    return checkpoint_from_state(name, named, state, hyperparams, groups or None, schedule)
