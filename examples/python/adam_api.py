"""A dependency-free Python client for adam-api (standard library only: urllib and json).

    from adam_api import AdamApi, AdamApiError

    api = AdamApi("http://localhost:8787")

    # Stateless: you keep the state and send it back with the next step.
    out = api.step(params=[1.0, -2.0, 3.0], grads=[0.1, -0.2, 0.3], hyperparams={"lr": 0.01})
    out = api.step(params=out["params"], grads=[0.1, -0.2, 0.3], state=out["state"], hyperparams={"lr": 0.01})

    # Hosted: the service keeps params and state; you send gradients.
    opt = api.create_optimizer({"w": [0.0, 0.0], "b": 0.0}, hyperparams={"lr": 0.1})
    opt.step({"w": [0.5, -0.25], "b": 0.1}, loss=0.75, idempotency_key="batch-1")
    print(opt.params())
    opt.delete()

    # Binary: raw little-endian elements in the optimizer's layout order, and safetensors checkpoints.
    opt = api.create_optimizer_by_shapes({"fc.weight": [3, 4], "fc.bias": [3]})
    opt.upload("fc.weight", array.array("f", weights))            # or numpy: a.astype("<f4")
    opt.upload("fc.bias", array.array("f", bias))
    out = opt.step_raw(array.array("f", grads))                   # out["params"]: bytes
    params = array.array("f", opt.params_raw())                   # or np.frombuffer(..., "<f4")
    other = api.create_optimizer([0.0])
    other.restore_checkpoint(opt.checkpoint())                    # safetensors bytes, as torch names them

Every 4xx/5xx answer raises AdamApiError, which carries the RFC 9457 problem+json body. Tensors
may be numbers, nested lists, dicts of names to tensors, or anything with a ``tolist()`` method
(numpy arrays), which is called before sending.
"""

from __future__ import annotations

import array
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Mapping, Optional

__all__ = ["AdamApi", "AdamApiError", "HostedOptimizer"]

_UNSET: Any = object()


class AdamApiError(Exception):
    """A 4xx/5xx answer. ``problem`` is the problem+json body (a dict), or None if there was none."""

    def __init__(self, method: str, url: str, status: int, problem: Optional[Dict[str, Any]], text: str = ""):
        self.method = method
        self.url = url
        self.status = status
        self.problem = problem
        self.text = text
        p = problem or {}
        self.type: Optional[str] = p.get("type")
        self.title: Optional[str] = p.get("title")
        self.detail: Optional[str] = p.get("detail")
        self.errors: list = p.get("errors") or []
        summary = f"{p.get('title', 'HTTP error')}: {p.get('detail', '')}" if problem else (text[:200] or "no body")
        super().__init__(f"{method} {url} -> {status} {summary}")


def _plain(value: Any) -> Any:
    """Converts numpy arrays/scalars (anything with tolist()) and tuples to JSON-ready values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Response:
    """An HTTP answer: status, headers (lower-case names) and the parsed body (dict, str or None)."""

    def __init__(self, status: int, headers: Dict[str, str], body: Any):
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Response(status={self.status}, body={self.body!r:.200})"


class AdamApi:
    """Client of one adam-api server."""

    def __init__(self, base_url: str = "http://localhost:8787", timeout: float = 60.0, user_agent: str = "adam-api-python/0.1"):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.user_agent = user_agent

    # -- transport ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        query: Optional[Mapping[str, Any]] = None,
    ) -> Response:
        """Sends one request; returns the Response, or raises AdamApiError on 4xx/5xx."""
        url = self.base_url + path
        if query:
            pairs = {k: ("true" if v is True else "false" if v is False else v) for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        all_headers = {"accept": "application/json, application/problem+json;q=0.9, */*;q=0.1", "user-agent": self.user_agent}
        data = None
        if isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)  # a binary body: the caller's headers say what it is
        elif body is not None:
            # allow_nan=False: JSON has no NaN/Infinity, so refuse them here rather than send invalid JSON.
            data = json.dumps(_plain(body), allow_nan=False, separators=(",", ":")).encode("utf-8")
            all_headers["content-type"] = "application/json"
        all_headers.update(headers or {})
        req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as res:
                return Response(res.status, {k.lower(): v for k, v in res.headers.items()}, _decode(res.headers.get("content-type"), res.read()))
        except urllib.error.HTTPError as err:
            raw = err.read() if err.fp is not None else b""
            decoded = _decode(err.headers.get("content-type") if err.headers else None, raw)
            problem = decoded if isinstance(decoded, dict) else None
            raise AdamApiError(method, url, err.code, problem, raw.decode("utf-8", "replace")) from None

    def _json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request(method, path, body, **kw).body

    # -- service --------------------------------------------------------------------------------

    def info(self) -> Dict[str, Any]:
        """GET /: name, version, links."""
        return self._json("GET", "/")

    def health(self) -> Dict[str, Any]:
        """GET /healthz: {"status": "ok"}."""
        return self._json("GET", "/healthz")

    def openapi(self) -> Dict[str, Any]:
        """GET /openapi.json: the OpenAPI 3.1 document."""
        return self._json("GET", "/openapi.json")

    # -- stateless step -------------------------------------------------------------------------

    def step(
        self,
        params: Any,
        grads: Any,
        state: Optional[Mapping[str, Any]] = None,
        hyperparams: Optional[Mapping[str, Any]] = None,
        dtype: Optional[str] = None,
        schedule: Optional[Mapping[str, Any]] = None,
        metrics: Optional[list] = None,
    ) -> Dict[str, Any]:
        """POST /v1/adam/step: one Adam/AdamW step. Returns {"params", "state", "lr"}.

        Pass the returned "state" (and "params") with the next call to continue the trajectory.
        """
        body: Dict[str, Any] = {"params": params, "grads": grads}
        for key, value in (("state", state), ("hyperparams", hyperparams), ("dtype", dtype), ("schedule", schedule), ("metrics", metrics)):
            if value is not None:
                body[key] = value
        return self._json("POST", "/v1/adam/step", body)

    # -- schedules ------------------------------------------------------------------------------

    def evaluate_schedule(self, schedule: Mapping[str, Any], steps: Any = None, metrics: Optional[list] = None) -> Dict[str, Any]:
        """POST /v1/schedules/evaluate: {"steps": [...], "lr": [...]}."""
        body: Dict[str, Any] = {"schedule": schedule}
        if steps is not None:
            body["steps"] = steps
        if metrics is not None:
            body["metrics"] = metrics
        return self._json("POST", "/v1/schedules/evaluate", body)

    def plot_schedule(self, schedule: Mapping[str, Any], steps: Any = None, **options: Any) -> str:
        """POST /v1/schedules/plot: the SVG text. options: metrics, log_scale, width, height, title."""
        body: Dict[str, Any] = {"schedule": schedule, **options}
        if steps is not None:
            body["steps"] = steps
        return self._json("POST", "/v1/schedules/plot", body)

    # -- hosted optimizers ----------------------------------------------------------------------

    def create_optimizer(
        self,
        params: Any,
        hyperparams: Optional[Mapping[str, Any]] = None,
        schedule: Optional[Mapping[str, Any]] = None,
        dtype: Optional[str] = None,
    ) -> "HostedOptimizer":
        """POST /v1/optimizers: a new hosted optimizer holding `params` and a fresh Adam state."""
        body: Dict[str, Any] = {"params": params}
        if hyperparams is not None:
            body["hyperparams"] = hyperparams
        if schedule is not None:
            body["schedule"] = schedule
        if dtype is not None:
            body["dtype"] = dtype
        return self._create(body)

    def create_optimizer_by_shapes(
        self,
        shapes: Any,
        hyperparams: Optional[Mapping[str, Any]] = None,
        schedule: Optional[Mapping[str, Any]] = None,
        dtype: Optional[str] = None,
    ) -> "HostedOptimizer":
        """POST /v1/optimizers with `shapes` ({"fc.weight": [3, 4], ...}): params start as zeros and must all be
        uploaded (HostedOptimizer.upload) before the first step. `created["layout"]` gives the raw element order."""
        body: Dict[str, Any] = {"shapes": shapes}
        for key, value in (("hyperparams", hyperparams), ("schedule", schedule), ("dtype", dtype)):
            if value is not None:
                body[key] = value
        return self._create(body)

    def _create(self, body: Dict[str, Any]) -> "HostedOptimizer":
        res = self.request("POST", "/v1/optimizers", body)
        created = res.body
        return HostedOptimizer(self, created["id"], created["token"], created, res.headers.get("etag"))

    def optimizer(self, optimizer_id: str, token: str) -> "HostedOptimizer":
        """Attaches to an existing hosted optimizer (no request is sent)."""
        return HostedOptimizer(self, optimizer_id, token)


class HostedOptimizer:
    """An optimizer whose params and state live in the service. `created` is the creation answer."""

    def __init__(self, api: AdamApi, optimizer_id: str, token: str, created: Optional[Dict[str, Any]] = None, etag: Optional[str] = None):
        self.api = api
        self.id = optimizer_id
        self.token = token
        self.created = created
        self.etag = etag  # the state version (ETag) seen last

    def __repr__(self) -> str:
        return f"HostedOptimizer(id={self.id[:12]}…)"

    @property
    def path(self) -> str:
        return "/v1/optimizers/" + urllib.parse.quote(self.id, safe="")

    def _call(self, method: str, suffix: str = "", body: Any = None, headers: Optional[Mapping[str, str]] = None, query: Optional[Mapping[str, Any]] = None) -> Response:
        all_headers = {"authorization": f"Bearer {self.token}", **(headers or {})}
        res = self.api.request(method, self.path + suffix, body, headers=all_headers, query=query)
        if "etag" in res.headers:
            self.etag = res.headers["etag"]
        return res

    def step(
        self,
        grads: Any,
        loss: Optional[float] = None,
        idempotency_key: Optional[str] = None,
        expected_step: Optional[int] = None,
        if_match: Optional[str] = None,
        return_params: bool = True,
    ) -> Dict[str, Any]:
        """POST .../step: applies one gradient. Returns {"step", "lr", "params"?, "replayed"?}.

        idempotency_key: any unique string per logical step; retrying with the same key returns the
        first answer (with "replayed": True) instead of applying the gradient twice.
        expected_step / if_match (an ETag): refuse (409 / 412) if the optimizer has moved on.
        """
        body: Dict[str, Any] = {"grads": grads}
        if loss is not None:
            body["loss"] = float(loss)
        if expected_step is not None:
            body["expected_step"] = expected_step
        headers: Dict[str, str] = {}
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        if if_match is not None:
            headers["if-match"] = if_match
        query = None if return_params else {"return": "none"}
        return self._call("POST", "/step", body, headers=headers, query=query).body

    def step_raw(
        self,
        grads: Any,
        dtype: Optional[str] = None,
        loss: Optional[float] = None,
        idempotency_key: Optional[str] = None,
        expected_step: Optional[int] = None,
        if_match: Optional[str] = None,
        return_params: bool = True,
    ) -> Dict[str, Any]:
        """POST .../step with the gradients as raw elements (see _raw): every element of every tensor, in
        layout order. Returns {"step", "lr", "params": the new params as raw bytes of the optimizer's dtype, "replayed"}.
        """
        data, dtype = _raw(grads, dtype)
        headers = {"content-type": _raw_type(dtype), "accept": _accept(_RAW)}
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        if if_match is not None:
            headers["if-match"] = if_match
        query = {"loss": repr(float(loss)) if loss is not None else None, "expected_step": expected_step, "return": None if return_params else "none"}
        res = self._call("POST", "/step", data, headers=headers, query=query)
        return {"step": int(res.headers["step"]), "lr": float(res.headers["lr"]), "params": res.body or b"", "replayed": res.headers.get("idempotent-replayed") == "true"}

    def params_raw(self) -> bytes:
        """GET .../params as raw bytes of the optimizer's dtype in layout order (np.frombuffer(b, "<f4"), array("f", b))."""
        return self._call("GET", "/params", headers={"accept": _accept(_RAW)}).body or b""

    def upload(self, tensor: Optional[str], data: Any, offset: int = 0, dtype: Optional[str] = None) -> Dict[str, Any]:
        """PUT .../params: raw elements (see _raw) into `tensor` (a name from the layout) from element `offset`, or,
        with tensor=None, into the flat params from `offset`. Returns the metadata; its "upload" tells what is missing."""
        data, dtype = _raw(data, dtype)
        query = {"tensor": tensor, "offset": offset or None}
        return self._call("PUT", "/params", data, headers={"content-type": _raw_type(dtype)}, query=query).body

    def checkpoint(self) -> bytes:
        """GET .../state as a safetensors checkpoint (params/…, exp_avg/…, exp_avg_sq/…, step/…; see checkpoint.py)."""
        return self._call("GET", "/state", headers={"accept": _accept(_SAFETENSORS)}).body

    def restore_checkpoint(self, data: bytes) -> Dict[str, Any]:
        """PUT .../state with a safetensors checkpoint (from checkpoint() or checkpoint.from_torch). Returns the metadata."""
        return self._call("PUT", "/state", bytes(data), headers={"content-type": _SAFETENSORS}).body

    def info(self) -> Dict[str, Any]:
        """GET: step, hyperparameters, schedule, next lr, shapes."""
        return self._call("GET").body

    def params(self) -> Any:
        """GET .../params: the current parameters, in the structure given at creation."""
        return self._call("GET", "/params").body["params"]

    def state(self) -> Dict[str, Any]:
        """GET .../state: the full snapshot (params, m, v, hyperparameters, schedule); restore() takes it back."""
        return self._call("GET", "/state").body

    def restore(self, snapshot: Mapping[str, Any]) -> Dict[str, Any]:
        """PUT .../state: replaces params and state atomically with a snapshot. Returns the new metadata."""
        return self._call("PUT", "/state", dict(snapshot)).body

    def update(self, hyperparams: Optional[Mapping[str, Any]] = None, schedule: Any = _UNSET) -> Dict[str, Any]:
        """PATCH: merges hyperparameters and/or replaces the schedule (None removes it)."""
        body: Dict[str, Any] = {}
        if hyperparams is not None:
            body["hyperparams"] = hyperparams
        if schedule is not _UNSET:
            body["schedule"] = schedule
        return self._call("PATCH", "", body).body

    def history(self, limit: Optional[int] = None) -> Dict[str, Any]:
        """GET .../history: {"entries": [{"step", "lr", "loss", "at"}, ...], "kept"}, oldest first."""
        return self._call("GET", "/history", query={"limit": limit}).body

    def plot_history(self, limit: Optional[int] = None, log_scale: bool = False) -> str:
        """GET .../history/plot: loss and learning rate per step as SVG text."""
        return self._call("GET", "/history/plot", query={"limit": limit, "log_scale": log_scale or None}).body

    def delete(self) -> None:
        """DELETE: removes the optimizer and everything stored for it; later calls raise 404."""
        self._call("DELETE")


_RAW = "application/octet-stream"
_SAFETENSORS = "application/vnd.safetensors"
_ARRAY_DTYPES = {"f": "float32", "d": "float64"}
_NUMPY_DTYPES = {"float16": "<f2", "float32": "<f4", "float64": "<f8"}


def _raw(data: Any, dtype: Optional[str]):
    """(bytes, dtype name or None) of raw elements. bytes are sent as they are (dtype: their element type, None
    for the optimizer's); numpy arrays (C order) and array.array("f"/"d") as their element type, or converted to
    `dtype`; a flat sequence of numbers as float32 (or `dtype` float64)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), dtype
    if hasattr(data, "dtype") and hasattr(data, "tobytes"):  # numpy
        dtype = dtype or str(data.dtype)
        return data.astype(_NUMPY_DTYPES[dtype]).tobytes(), dtype
    if not isinstance(data, array.array):
        data = array.array("d" if dtype == "float64" else "f", data)
    if dtype is not None and _ARRAY_DTYPES.get(data.typecode) != dtype:
        data = array.array({v: k for k, v in _ARRAY_DTYPES.items()}[dtype], data)
    if sys.byteorder != "little":
        data = array.array(data.typecode, data)
        data.byteswap()
    return data.tobytes(), _ARRAY_DTYPES[data.typecode]


def _accept(media: str) -> str:
    return f"{media}, application/problem+json;q=0.9"


def _raw_type(dtype: Optional[str]) -> str:
    return _RAW if dtype is None else f"{_RAW}; dtype={dtype}"


def _decode(content_type: Optional[str], raw: bytes) -> Any:
    if not raw:
        return None
    media = (content_type or "").split(";")[0].strip().lower()
    if media in (_RAW, _SAFETENSORS):
        return raw
    text = raw.decode("utf-8", "replace")
    if media == "application/json" or media.endswith("+json"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text
