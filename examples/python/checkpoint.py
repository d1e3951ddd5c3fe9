"""Move an Adam optimizer between adam-api and PyTorch as a safetensors checkpoint.

    from checkpoint import to_torch, from_torch

    # adam-api -> torch: the body of GET /v1/optimizers/{id}/state (Accept: application/vnd.safetensors)
    optimizer = to_torch(checkpoint_bytes, model)   # also loads the params into model
    # torch -> adam-api: the body of PUT /v1/optimizers/{id}/state (Content-Type: application/vnd.safetensors)
    checkpoint_bytes = from_torch(model, optimizer)

A checkpoint holds, for each parameter name of model.named_parameters(): params/<name>,
exp_avg/<name>, exp_avg_sq/<name>, max_exp_avg_sq/<name> (amsgrad) and step/<name> (a float32
scalar, as torch 1.13 keeps it), and in __metadata__ the step count, dtype, and hyperparams and
schedule as JSON text. Needs torch only; uses the safetensors package when it is installed and a
small reader/writer of the same format (save, load) when it is not.
"""

import ctypes
import json
import os
import struct
import sys

import torch

try:
    from safetensors.torch import load as _st_load, save as _st_save
except ImportError:
    _st_load = _st_save = None

__all__ = ["to_torch", "from_torch", "save", "load", "save_file", "load_file"]

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_HYPERPARAMS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
                "decoupled_weight_decay": False, "amsgrad": False, "maximize": False}


def save(tensors, metadata=None):
    """The bytes of a safetensors file of `tensors` ({name: tensor}); `metadata` ({str: str}) goes in __metadata__."""
    return _st_save(tensors, metadata) if _st_save is not None else _write(tensors, metadata)


def _write(tensors, metadata):
    """safetensors' format, the tensors' data in the order given (safetensors' own writer sorts them by name)."""
    assert sys.byteorder == "little", "safetensors data is little-endian"
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        data = ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()) if t.numel() else b""
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # spaces up to a multiple of 8, so the data starts aligned (as safetensors writes)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def load(data):
    """(tensors, metadata) of the bytes of a safetensors file; metadata is {} when there is none."""
    (n,) = struct.unpack_from("<Q", data)
    header = json.loads(bytes(data[8:8 + n]))
    metadata = header.pop("__metadata__", None) or {}
    if _st_load is not None:
        return _st_load(bytes(data)), metadata
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]  # relative to the data, which starts after the header
        dtype = DTYPES[info["dtype"]]
        chunk = bytearray(data[8 + n + begin:8 + n + end])  # a copy: torch.frombuffer wants writable memory
        t = torch.frombuffer(chunk, dtype=dtype) if chunk else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(info["shape"])
    return tensors, metadata


def save_file(tensors, filename, metadata=None):
    with open(filename, "wb") as f:
        f.write(save(tensors, metadata))


def load_file(filename):
    """(tensors, metadata) of a safetensors file (safetensors' own load_file returns the tensors only)."""
    with open(filename, "rb") as f:
        return load(f.read())


def to_torch(checkpoint, model, optimizer_cls=None, lr=None):
    """Loads an adam-api checkpoint (bytes, or a file path) into `model` (its parameters, by name) and
    returns a torch optimizer over model.parameters() holding the checkpoint's Adam state.

    optimizer_cls defaults to AdamW when the checkpoint's decoupled_weight_decay is true, Adam otherwise.
    With a schedule the optimizer starts at the checkpoint's next_lr (or `lr` when given); attach a
    torch LR scheduler yourself if training goes on in torch.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        tensors, meta = load_file(checkpoint)
    else:
        tensors, meta = load(checkpoint)
    hp = {**_HYPERPARAMS, **json.loads(meta["hyperparams"])}
    schedule = json.loads(meta.get("schedule", "null"))
    if schedule is not None and lr is None:
        lr = json.loads(meta.get("next_lr", "null"))  # adam-api's checkpoints say the next step's rate
        if lr is None:
            raise ValueError(f"the checkpoint follows a {schedule.get('type')} schedule and does not say the next rate: "
                             "pass lr= (next_lr of GET /v1/optimizers/{id})")
    named = dict(model.named_parameters())
    sent = {k.split("/", 1)[1] for k in tensors if k.startswith("params/")}
    if sent != set(named):
        raise ValueError(f"the checkpoint's params do not match the model's: missing {sorted(set(named) - sent)}, "
                         f"unknown {sorted(sent - set(named))}")
    for name, p in named.items():
        t = tensors["params/" + name]
        if t.dtype != p.dtype or t.shape != p.shape:
            raise ValueError(f"params/{name} is {t.dtype} {list(t.shape)}, the model's is {p.dtype} {list(p.shape)}")
    model.load_state_dict({name: tensors["params/" + name] for name in named}, strict=False)

    decoupled = bool(hp["decoupled_weight_decay"])
    cls = optimizer_cls or (torch.optim.AdamW if decoupled else torch.optim.Adam)
    if issubclass(cls, torch.optim.AdamW) != decoupled:
        raise ValueError(f"decoupled_weight_decay is {decoupled}: use {'AdamW' if decoupled else 'Adam'}")
    optimizer = cls(model.parameters(), lr=hp["lr"] if lr is None else lr, betas=(hp["beta1"], hp["beta2"]),
                    eps=hp["eps"], weight_decay=hp["weight_decay"], amsgrad=hp["amsgrad"],
                    maximize=hp["maximize"], foreach=False)
    state = {}
    if int(meta["step"]) > 0:  # at step 0 torch starts from no state at all
        slots = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if hp["amsgrad"] else [])
        for i, name in enumerate(named):  # model.parameters() order: the optimizer's indices
            state[i] = {slot: tensors[f"{slot}/{name}"] for slot in slots}
            state[i]["step"] = tensors.get("step/" + name, torch.tensor(float(meta["step"]))).to(torch.float32)
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return optimizer


def from_torch(model, optimizer, schedule=None):
    """An adam-api checkpoint (bytes) of `model`'s parameters and `optimizer`'s state, for PUT .../state.
    An optimizer restored from it takes raw tensors (application/octet-stream) in model.parameters() order.

    optimizer: torch.optim.Adam or AdamW with one param group holding every parameter of the model.
    schedule: adam-api's schedule (a dict such as {"type": "step", "lr": 0.1, "step_size": 30}) or None.
    """
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        raise TypeError(f"adam-api runs Adam and AdamW, not {type(optimizer).__name__}")
    if len(optimizer.param_groups) != 1:
        raise ValueError(f"the optimizer has {len(optimizer.param_groups)} param groups: adam-api keeps one set of hyperparameters")
    group = optimizer.param_groups[0]
    named = list(model.named_parameters())
    in_group = {id(p) for p in group["params"]}
    left_out = [name for name, p in named if id(p) not in in_group]
    if left_out or len(in_group) != len(named):
        raise ValueError(f"the optimizer must hold exactly the model's parameters (not held: {left_out})")
    dtypes = {p.dtype for _, p in named}
    if dtypes - {torch.float32, torch.float64} or len(dtypes) != 1:
        raise ValueError(f"adam-api keeps all params in one dtype, float32 or float64; the model has {sorted(map(str, dtypes))}")
    states = [optimizer.state.get(p, {}) for _, p in named]
    steps = {float(s["step"]) if s else 0.0 for s in states}  # no state yet: step 0
    if len(steps) != 1:
        raise ValueError(f"the parameters have taken different numbers of steps ({sorted(steps)}): adam-api keeps one step count")
    step = steps.pop()
    if step != int(step) or not 0 <= step <= 2 ** 24:
        raise ValueError(f"step {step} is not a step count (an integer up to 2^24)")

    amsgrad = bool(group["amsgrad"])
    slots = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else [])
    tensors = {}
    for slot in ["params"] + slots:
        for (name, p), s in zip(named, states):
            t = p if slot == "params" else s.get(slot, torch.zeros_like(p))  # zeros: torch's fresh state
            tensors[f"{slot}/{name}"] = t.detach().contiguous()
    for name, _ in named:
        tensors["step/" + name] = torch.tensor(step, dtype=torch.float32)
    beta1, beta2 = group["betas"]
    hyperparams = {"lr": float(group["lr"]), "beta1": float(beta1), "beta2": float(beta2), "eps": float(group["eps"]),
                   "weight_decay": float(group["weight_decay"]),
                   "decoupled_weight_decay": isinstance(optimizer, torch.optim.AdamW),
                   "amsgrad": amsgrad, "maximize": bool(group["maximize"])}
    metadata = {"step": str(int(step)), "dtype": str(next(iter(dtypes))).replace("torch.", ""),
                "hyperparams": json.dumps(hyperparams), "schedule": json.dumps(schedule),
                # The storage order adam-api gives the tensors (raw bodies follow it): model.parameters().
                "layout": json.dumps([name for name, _ in named])}
    # Our writer, not safetensors': the order of params/… in the data becomes the optimizer's raw
    # element order (its layout), which should be model.parameters() order, not alphabetical.
    return _write(tensors, metadata)
