"""The binary wire formats, with the standard library (numpy when present).

- raw (``application/octet-stream``): every element of the optimizer's tensors in layout order,
  little-endian, each tensor row-major: numpy's ``a.astype("<f4").tobytes()`` concatenated.
- safetensors (``application/vnd.safetensors``): an 8-byte little-endian header length, a JSON header
  naming each tensor's dtype, shape and byte range, then the data.
"""

from __future__ import annotations

import array
import json
import struct
import sys
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

try:  # optional: arrays in and out of the binary formats
    import numpy as np
except ImportError:  # pragma: no cover - depends on the machine
    np = None  # type: ignore[assignment]

__all__ = [
    "RAW",
    "SAFETENSORS",
    "JSON",
    "Tensor",
    "encode_raw",
    "raw_content_type",
    "dump_safetensors",
    "load_safetensors",
    "is_array",
    "numpy_available",
]

RAW = "application/octet-stream"
SAFETENSORS = "application/vnd.safetensors"
JSON = "application/json"

# safetensors dtype -> (struct/array typecode, bytes per element, numpy dtype, adam-api dtype name)
ST_DTYPES: Dict[str, Tuple[str, int, str, str]] = {
    "F64": ("d", 8, "<f8", "float64"),
    "F32": ("f", 4, "<f4", "float32"),
    "F16": ("e", 2, "<f2", "float16"),
    "BF16": ("", 2, "", "bfloat16"),
    "I64": ("q", 8, "<i8", "int64"),
    "I32": ("i", 4, "<i4", "int32"),
    "I16": ("h", 2, "<i2", "int16"),
    "I8": ("b", 1, "i1", "int8"),
    "U8": ("B", 1, "u1", "uint8"),
    "BOOL": ("?", 1, "?", "bool"),
}
_ST_OF_NAME = {v[3]: k for k, v in ST_DTYPES.items()}
_ARRAY_DTYPES = {"f": "float32", "d": "float64"}
_NUMPY_DTYPES = {"float16": "<f2", "float32": "<f4", "float64": "<f8"}


def numpy_available() -> bool:
    return np is not None


def is_array(value: Any) -> bool:
    """True for numpy arrays (and numpy scalars): anything the binary path can send."""
    return np is not None and isinstance(value, (np.ndarray, np.generic))


class Tensor:
    """A tensor of a safetensors file: dtype (``F32``, ``F64``, ...), shape and little-endian bytes.

    ``tolist()`` gives nested Python lists (numbers for a scalar); ``numpy()`` an array (needs numpy).
    """

    __slots__ = ("dtype", "shape", "data")

    def __init__(self, dtype: str, shape: Sequence[int], data: bytes):
        self.dtype = dtype
        self.shape = [int(d) for d in shape]
        self.data = bytes(data)

    def __repr__(self) -> str:
        return f"Tensor({self.dtype}, shape={self.shape})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tensor) and (self.dtype, self.shape, self.data) == (other.dtype, other.shape, other.data)

    def numpy(self):
        if np is None:
            raise ImportError("numpy is not installed: use Tensor.tolist() or .data")
        code = ST_DTYPES[self.dtype][2]
        if not code:
            raise TypeError(f"numpy has no {self.dtype}")
        return np.frombuffer(self.data, code).reshape(self.shape).copy()

    def tolist(self) -> Any:
        code = ST_DTYPES[self.dtype][0]
        if self.dtype == "BF16":  # the high half of a float32
            flat: List[Any] = [struct.unpack("<f", b"\0\0" + self.data[i:i + 2])[0] for i in range(0, len(self.data), 2)]
        else:
            a = array.array(code)
            a.frombytes(self.data)
            if sys.byteorder != "little":
                a.byteswap()
            flat = a.tolist()
        return _nest(flat, self.shape)


def _nest(flat: List[Any], shape: Sequence[int]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _flatten(values: Any) -> Tuple[List[float], List[int]]:
    """Nested lists (or a number) -> (flat values, shape)."""
    if isinstance(values, (int, float)):
        return [float(values)], []
    values = list(values)
    if not values:
        return [], [0]
    if isinstance(values[0], (int, float)):
        return [float(v) for v in values], [len(values)]
    parts = [_flatten(v) for v in values]
    shape = parts[0][1]
    if any(p[1] != shape for p in parts):
        raise ValueError("ragged nested list: every row must have the same shape")
    return [x for p in parts for x in p[0]], [len(values)] + shape


def encode_raw(data: Any, dtype: Optional[str] = None) -> Tuple[bytes, Optional[str]]:
    """(bytes, element dtype or None) of raw elements.

    bytes are sent as they are (``dtype``: their element type; None means the optimizer's own);
    numpy arrays (C order) and ``array.array("f"/"d")`` as their element type, or converted to
    ``dtype``; a flat sequence of numbers as float32 (float64 with ``dtype="float64"``).
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), dtype
    if is_array(data):
        dtype = dtype or str(data.dtype)
        return np.ascontiguousarray(data, _NUMPY_DTYPES[dtype]).tobytes(), dtype
    if not isinstance(data, array.array):
        data = array.array("d" if dtype == "float64" else "f", data)
    if dtype is not None and _ARRAY_DTYPES.get(data.typecode) != dtype:
        data = array.array({v: k for k, v in _ARRAY_DTYPES.items()}[dtype], data)
    if sys.byteorder != "little":
        data = array.array(data.typecode, data)
        data.byteswap()
    return data.tobytes(), _ARRAY_DTYPES[data.typecode]


def raw_content_type(dtype: Optional[str]) -> str:
    return RAW if dtype is None else f"{RAW}; dtype={dtype}"


def tensor_of(value: Any, dtype: str = "float32") -> Tensor:
    """A Tensor from a Tensor, a numpy array, an ``array.array`` (flat) or nested lists, in ``dtype``
    (``float32``/``float64``) unless it is already a Tensor or a numpy array of another float type."""
    if isinstance(value, Tensor):
        return value
    st = _ST_OF_NAME[dtype]
    if is_array(value):
        a = np.asarray(value, ST_DTYPES[st][2], order="C")  # 0-d stays 0-d
        return Tensor(st, list(a.shape), a.tobytes())
    if isinstance(value, array.array):
        flat, shape = list(value), [len(value)]
    else:
        flat, shape = _flatten(value)
    a = array.array(ST_DTYPES[st][0], flat)
    if sys.byteorder != "little":
        a.byteswap()
    return Tensor(st, shape, a.tobytes())


def dump_safetensors(tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]] = None, dtype: str = "float32") -> bytes:
    """The bytes of a safetensors file of ``tensors`` ({name: Tensor, numpy array or nested lists}),
    the data in the order given (the safetensors package sorts by name; adam-api takes the order of
    the data as the storage order unless ``__metadata__.layout`` says otherwise)."""
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs: List[bytes] = []
    offset = 0
    for name, value in tensors.items():
        t = tensor_of(value, dtype)
        header[name] = {"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + len(t.data)]}
        blobs.append(t.data)
        offset += len(t.data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def load_safetensors(data: bytes) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """(tensors in file order, metadata) of the bytes of a safetensors file; metadata is {} when absent."""
    data = bytes(data)
    if len(data) < 8:
        raise ValueError(f"a safetensors file has at least 8 bytes, got {len(data)}")
    (n,) = struct.unpack_from("<Q", data)
    if 8 + n > len(data):
        raise ValueError("the safetensors header reaches beyond the data")
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", None) or {}
    start = 8 + n
    tensors: Dict[str, Tensor] = {}
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        tensors[name] = Tensor(info["dtype"], info["shape"], data[start + begin:start + end])
    return tensors, metadata


def layout_order(tensors: Iterable[str], layout: Optional[Sequence[Mapping[str, Any]]]) -> List[str]:
    """Names in layout order (a layout is GET /v1/optimizers/{id}'s ``layout``: [{name, shape, offset, size}])."""
    names = list(tensors)
    if not layout:
        return names
    return [t["name"] for t in sorted(layout, key=lambda t: t["offset"])]
