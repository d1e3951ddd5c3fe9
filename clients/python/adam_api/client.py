"""The HTTP client: every route of adam-api, with retries and typed errors (standard library only).

numpy is used when it is importable: numpy arrays go over the binary formats (raw bytes or
safetensors) and come back as numpy arrays; everything else goes as JSON.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from . import wire
from .errors import AdamApiConnectionError, AdamApiError, ConflictError, error_for
from .wire import JSON, RAW, SAFETENSORS, is_array, np

__all__ = ["AdamApi", "RemoteOptimizer", "Response", "DEFAULT_BASE_URL", "ENV_URL", "ENV_KEY"]

DEFAULT_BASE_URL = "http://localhost:8787"
ENV_URL = "ADAM_API_URL"  # the service's base URL
ENV_KEY = "ADAM_API_KEY"  # an API key (the server's API_KEYS), for the service routes
_ENV_URL_LEGACY = "ADAM_API"  # what the example scripts and examples/curl.sh read

_UNSET: Any = object()

# Statuses after which a request is sent again: the service did nothing (408, 429), or a proxy or
# the platform failed (5xx; 501 and 505 never get better).
_RETRY_STATUSES = frozenset([408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 525, 526, 527, 530])
# The statuses that say for sure that nothing was done: retried even for requests that are not
# idempotent (creating an optimizer, rotating a token).
_NOTHING_DONE = frozenset([408, 429])

# The stateless step's state is named m, v, v_max in /v1/adam/step's JSON and by torch's names in
# its safetensors files (and everywhere else).
_ADAM_JSON_SLOTS = {"m": "exp_avg", "v": "exp_avg_sq", "v_max": "max_exp_avg_sq"}


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds of a Retry-After header: a number of seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _plain(value: Any) -> Any:
    """JSON-ready values: numpy arrays and scalars (anything with tolist()), tuples, nested mappings."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _dumps(value: Any) -> bytes:
    # allow_nan=False: JSON has no NaN/Infinity, so refuse them here rather than send invalid JSON.
    return json.dumps(_plain(value), allow_nan=False, separators=(",", ":")).encode("utf-8")


def _accept(media: str) -> str:
    return f"{media}, application/problem+json;q=0.9"


def _decode(content_type: Optional[str], raw: bytes) -> Any:
    if not raw:
        return None
    media = (content_type or "").split(";")[0].strip().lower()
    if media in (RAW, SAFETENSORS):
        return raw
    text = raw.decode("utf-8", "replace")
    if media == JSON or media.endswith("+json"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _number(text: Optional[str]) -> Optional[float]:
    if text is None or text == "null":
        return None
    return float(text)


class Response:
    """An HTTP answer: status, headers (lower-case names), the parsed body (dict, list, str, bytes or None)
    and how many attempts it took."""

    def __init__(self, status: int, headers: Dict[str, str], body: Any, attempts: int = 1):
        self.status = status
        self.headers = headers
        self.body = body
        self.attempts = attempts

    def __repr__(self) -> str:
        return f"Response(status={self.status}, body={self.body!r:.200})"


class AdamApi:
    """Client of one adam-api server.

    base_url: the service, else ``$ADAM_API_URL`` (or ``$ADAM_API``), else http://localhost:8787.
    api_key: sent as ``Authorization: Bearer`` on the service routes (stateless steps, schedules,
        creating and listing optimizers), else ``$ADAM_API_KEY``; hosted optimizers use their own token.
    max_retries: how many times a request is sent again after a connection error, a timeout, 408,
        429 or a 5xx, waiting ``backoff·2^k`` seconds (at most ``max_backoff``, with jitter) or what
        ``Retry-After`` says, whichever is longer. Steps always carry an ``Idempotency-Key`` (one per
        logical step, the same on every retry), so a retried step is never applied twice. Creating an
        optimizer and rotating a token are retried only when the service did nothing for sure (408,
        429, a refused connection). ``max_retry_after``: a longer Retry-After is not waited for.
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        user_agent: Optional[str] = None,
    ):
        from . import __version__

        base = base_url or os.environ.get(ENV_URL) or os.environ.get(_ENV_URL_LEGACY) or DEFAULT_BASE_URL
        self.base_url = base.rstrip("/")
        self.api_key = api_key if api_key is not None else (os.environ.get(ENV_KEY) or None)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.user_agent = user_agent or f"adam-api-python/{__version__}"
        self._catalogue: Optional[Dict[str, Dict[str, Any]]] = None

    def __repr__(self) -> str:
        return f"AdamApi({self.base_url!r})"

    # -- transport ------------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:  # a method, so tests can record the waits
        time.sleep(seconds)

    def _delay(self, retry: int, retry_after: Optional[float]) -> float:
        delay = min(self.max_backoff, self.backoff * (2 ** retry)) * (0.5 + random.random() / 2)
        return delay if retry_after is None else max(delay, retry_after)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        query: Optional[Mapping[str, Any]] = None,
        auth: Optional[str] = _UNSET,
        retry: str = "idempotent",
        ok_after_retry: Sequence[int] = (),
    ) -> Response:
        """Sends one request (again after a failure, as ``retry`` allows); returns the Response, or raises
        the AdamApiError subclass of the status (AdamApiConnectionError without an answer).

        body: bytes as they are (set content-type in ``headers``), anything else as JSON.
        auth: the bearer credential; by default the API key (service routes).
        retry: ``"idempotent"`` (sending it twice does no harm: reads, PUT, PATCH, DELETE, pure
            computations, steps with an Idempotency-Key), ``"unsent"`` (only when nothing was done for
            sure), or ``"never"``.
        ok_after_retry: statuses that mean success when they answer a retry (404 for a DELETE whose
            first attempt went through).
        """
        url = self.base_url + path
        if query:
            pairs = {k: ("true" if v is True else "false" if v is False else v) for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        all_headers = {"accept": "application/json, application/problem+json;q=0.9, */*;q=0.1", "user-agent": self.user_agent}
        credential = self.api_key if auth is _UNSET else auth
        if credential:
            all_headers["authorization"] = f"Bearer {credential}"
        data = None
        if isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)
        elif body is not None:
            data = _dumps(body)
            all_headers["content-type"] = JSON
        all_headers.update(headers or {})
        attempt = 0
        while True:
            attempt += 1
            req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as res:
                    return Response(res.status, {k.lower(): v for k, v in res.headers.items()}, _decode(res.headers.get("content-type"), res.read()), attempt)
            except urllib.error.HTTPError as err:
                raw = err.read() if err.fp is not None else b""
                got = {k.lower(): v for k, v in err.headers.items()} if err.headers else {}
                if attempt > 1 and err.code in ok_after_retry:
                    return Response(err.code, got, _decode(got.get("content-type"), raw), attempt)
                decoded = _decode(got.get("content-type"), raw)
                problem = decoded if isinstance(decoded, dict) else None
                error = error_for(method, url, err.code, problem, raw.decode("utf-8", "replace"), got)
                may = err.code in _RETRY_STATUSES if retry == "idempotent" else err.code in _NOTHING_DONE if retry == "unsent" else False
                wait = _retry_after(got.get("retry-after"))
                if not may or attempt > self.max_retries or (wait is not None and wait > self.max_retry_after):
                    raise error from None
                self._sleep(self._delay(attempt - 1, wait))
            except (OSError, http.client.HTTPException) as err:  # URLError, resets, timeouts, bad status lines
                reason = getattr(err, "reason", err)
                unsent = isinstance(reason, ConnectionRefusedError) or isinstance(reason, socket.gaierror)
                may = retry == "idempotent" or (retry == "unsent" and unsent)
                if not may or attempt > self.max_retries:
                    raise AdamApiConnectionError(method, url, reason if isinstance(reason, BaseException) else err, attempt) from None
                self._sleep(self._delay(attempt - 1, None))

    def _json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request(method, path, body, **kw).body

    # -- service --------------------------------------------------------------------------------

    def info(self) -> Dict[str, Any]:
        """GET /: name, version, links, the active kernel."""
        return self._json("GET", "/")

    def health(self) -> Dict[str, Any]:
        """GET /healthz: {"status": "ok"}."""
        return self._json("GET", "/healthz")

    def openapi(self) -> Dict[str, Any]:
        """GET /openapi.json: the OpenAPI 3.1 document."""
        return self._json("GET", "/openapi.json")

    def openapi_yaml(self) -> str:
        """GET /openapi.yaml: the same document as YAML text."""
        return self._json("GET", "/openapi.yaml", headers={"accept": "application/yaml, text/yaml, */*"})

    def algorithms(self) -> List[Dict[str, Any]]:
        """GET /v1/algorithms: every optimizer with its hyperparameters (defaults, bounds) and state names."""
        return self._json("GET", "/v1/algorithms")["algorithms"]

    def algorithm(self, name: str) -> Dict[str, Any]:
        """GET /v1/algorithms/{name}: one optimizer's entry (kept for the client's lifetime)."""
        if self._catalogue is None:
            self._catalogue = {}
        if name not in self._catalogue:
            self._catalogue[name] = self._json("GET", "/v1/algorithms/" + urllib.parse.quote(name, safe=""))
        return self._catalogue[name]

    # -- stateless steps ------------------------------------------------------------------------

    def step(
        self,
        params: Any,
        grads: Any,
        state: Optional[Mapping[str, Any]] = None,
        hyperparams: Optional[Mapping[str, Any]] = None,
        dtype: Optional[str] = None,
        schedule: Optional[Mapping[str, Any]] = None,
        metrics: Optional[list] = None,
        optimizer: str = "adam",
        param_groups: Optional[List[Mapping[str, Any]]] = None,
        wire_format: Optional[str] = None,
    ) -> Dict[str, Any]:
        """POST /v1/{optimizer}/step: one step of any optimizer. Returns {"params", "state", "lr"} (and
        "grad_norm" / "skipped" with those controls); send "state" (and "params") back with the next call.

        Tensors are numbers, nested lists, dicts of names to tensors, or numpy arrays. With numpy
        arrays (a single one, or a flat dict of names to arrays; a gradient may be None: frozen), the
        step goes as safetensors and params and state come back as numpy arrays, bit for bit what the
        JSON step gives; ``wire_format="json"`` or ``"safetensors"`` forces one.
        """
        path = "/v1/" + urllib.parse.quote(optimizer, safe="") + "/step"
        binary = wire_format == "safetensors" or (wire_format is None and _binary_step_ok(params, grads))
        if binary:
            return self._step_safetensors(path, optimizer, params, grads, state, hyperparams, dtype, schedule, metrics, param_groups)
        body: Dict[str, Any] = {"params": params, "grads": grads}
        for key, value in (("state", state), ("hyperparams", hyperparams), ("dtype", dtype), ("schedule", schedule), ("metrics", metrics), ("param_groups", param_groups)):
            if value is not None:
                body[key] = value
        return self._json("POST", path, body)

    def _step_safetensors(self, path, optimizer, params, grads, state, hyperparams, dtype, schedule, metrics, param_groups) -> Dict[str, Any]:
        single = not isinstance(params, Mapping)
        named_params = {"": params} if single else dict(params)
        named_grads = {"": grads} if single else dict(grads)
        if dtype is None:
            dtype = "float64" if any(is_array(v) and v.dtype == np.float64 for v in named_params.values()) else "float32"
        rename = _ADAM_JSON_SLOTS if optimizer == "adam" else {}
        tensors: Dict[str, Any] = {}
        st = lambda slot, name: slot if name == "" else f"{slot}/{name}"  # noqa: E731
        for name, value in named_params.items():
            tensors[st("params", name)] = value
        for name, value in named_grads.items():
            if value is not None:  # frozen: no grads/<name>
                tensors[st("grads", name)] = value
        metadata: Dict[str, str] = {"dtype": dtype}
        for key, value in (("hyperparams", hyperparams), ("schedule", schedule), ("metrics", metrics), ("param_groups", param_groups)):
            if value is not None:
                metadata[key] = json.dumps(_plain(value), allow_nan=False)
        for key, value in (state or {}).items():
            if key == "step":
                metadata["step"] = str(int(value))
            elif key == "tensors":
                metadata["tensors"] = json.dumps(_plain(value))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                metadata[key] = repr(float(value))  # a scalar of the state (NAdam's mu_product)
            elif value is not None:
                slot = rename.get(key, key)
                values = {"": value} if single else value
                for name, t in values.items():
                    if t is not None:
                        tensors[st(slot, name)] = t
        body = wire.dump_safetensors(tensors, metadata, dtype)
        res = self.request("POST", path, body, headers={"content-type": SAFETENSORS, "accept": _accept(SAFETENSORS)})
        got, meta = wire.load_safetensors(res.body)
        back = {v: k for k, v in rename.items()}
        out_params: Dict[str, Any] = {}
        out_state: Dict[str, Any] = {"step": int(meta["step"])} if "step" in meta else {}
        for full, t in got.items():
            slot, _, name = full.partition("/")
            value = t.numpy() if np is not None else t.tolist()
            if slot == "params":
                out_params[name] = value
            else:
                out_state.setdefault(back.get(slot, slot), {})[name] = value
        for key, text in meta.items():
            if key in ("step", "lr", "dtype", "grad_norm", "skipped"):
                continue
            out_state[key] = json.loads(text) if key == "tensors" else float(text)
        if single:
            out_params = out_params[""]
            out_state = {k: (v.get("") if isinstance(v, dict) and k != "tensors" else v) for k, v in out_state.items()}
        else:  # a slot torch has not created for a tensor is None, as JSON answers null
            for key, value in out_state.items():
                if isinstance(value, dict) and key != "tensors":
                    for name in named_params:
                        value.setdefault(name, None)
        out: Dict[str, Any] = {"params": out_params, "state": out_state, "lr": float(meta["lr"])}
        if "grad_norm" in meta:
            out["grad_norm"] = _number(meta["grad_norm"])
        if "skipped" in meta:
            out["skipped"] = meta["skipped"] == "true"
        return out

    def compare(self, runs: List[Mapping[str, Any]], problem: Mapping[str, Any], steps: Optional[int] = None, dtype: Optional[str] = None, svg: bool = False, **chart: Any) -> Any:
        """POST /v1/compare: optimizers side by side on a built-in test function. JSON (a dict), or with
        ``svg=True`` the chart's SVG text (chart options: log_scale, width, height, title)."""
        body: Dict[str, Any] = {"runs": runs, "problem": problem, **chart}
        if steps is not None:
            body["steps"] = steps
        if dtype is not None:
            body["dtype"] = dtype
        headers = {"accept": _accept("image/svg+xml")} if svg else None
        return self._json("POST", "/v1/compare", body, headers=headers)

    # -- schedules ------------------------------------------------------------------------------

    def evaluate_schedule(self, schedule: Mapping[str, Any], steps: Any = None, metrics: Optional[list] = None) -> Dict[str, Any]:
        """POST /v1/schedules/evaluate: {"steps": [...], "lr": [...]}. steps: a list, or {"start", "stop", "every"}."""
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
        return self._json("POST", "/v1/schedules/plot", body, headers={"accept": _accept("image/svg+xml")})

    def schedule(self, type: str, steps: Optional[str] = None, **params: Any) -> Dict[str, Any]:
        """GET /v1/schedules/{type}?…: the same as evaluate_schedule from a query string
        (``api.schedule("step", lr=0.1, step_size=3, steps="0:8")``; lists as Python lists)."""
        return self._json("GET", "/v1/schedules/" + urllib.parse.quote(type, safe=""), query=_query(params, steps))

    def schedule_plot(self, type: str, steps: Optional[str] = None, **params: Any) -> str:
        """GET /v1/schedules/{type}/plot?…: SVG text."""
        return self._json("GET", "/v1/schedules/" + urllib.parse.quote(type, safe="") + "/plot", query=_query(params, steps), headers={"accept": _accept("image/svg+xml")})

    # -- hosted optimizers ----------------------------------------------------------------------

    def create_optimizer(
        self,
        params: Any,
        hyperparams: Optional[Mapping[str, Any]] = None,
        schedule: Optional[Mapping[str, Any]] = None,
        dtype: Optional[str] = None,
        optimizer: Optional[str] = None,
        param_groups: Optional[List[Mapping[str, Any]]] = None,
        ttl: Optional[int] = None,
        accumulate: Any = None,
        shards: Optional[int] = None,
    ) -> "RemoteOptimizer":
        """POST /v1/optimizers: a new hosted optimizer (default ``adam``) holding ``params`` and a fresh state.

        numpy params (an array, or a flat dict of names to arrays) are created by shapes and uploaded
        as raw bytes, bit for bit; anything else goes as JSON. accumulate: many workers, one optimizer
        (``{"contributions": N, "reduce": "mean"}``, or N): each step takes one gradient from each
        worker 0..N-1 (``step(..., worker=i, expected_step=k)``). shards: Durable Objects to spread the
        tensors over (default: one, or the fewest that hold them).
        """
        if _all_arrays(params):
            named = params if isinstance(params, Mapping) else {"": params}
            if dtype is None:
                dtype = "float64" if any(v.dtype == np.float64 for v in named.values()) else "float32"
            shapes = {k: list(v.shape) for k, v in named.items()} if isinstance(params, Mapping) else list(params.shape)
            opt = self.create_optimizer_by_shapes(shapes, hyperparams, schedule, dtype, optimizer, param_groups, ttl, accumulate, shards=shards)
            try:
                # In parts of at most 32 MiB (what a sharded optimizer takes per request).
                part = (32 << 20) // np.dtype(dtype).itemsize
                for name, value in named.items():
                    flat = value.astype(dtype, copy=False).reshape(-1)
                    for start in range(0, max(flat.size, 1), part):
                        opt.upload(name if isinstance(params, Mapping) else None, flat[start:start + part], offset=start, dtype=dtype)
            except BaseException:
                _quietly(opt.delete)
                raise
            return opt
        body: Dict[str, Any] = {"params": params}
        return self._create(_options(body, optimizer=optimizer, hyperparams=hyperparams, schedule=schedule, dtype=dtype, param_groups=param_groups, ttl=ttl, accumulate=accumulate_setting(accumulate), shards=shards))

    def create_optimizer_by_shapes(
        self,
        shapes: Any,
        hyperparams: Optional[Mapping[str, Any]] = None,
        schedule: Optional[Mapping[str, Any]] = None,
        dtype: Optional[str] = None,
        optimizer: Optional[str] = None,
        param_groups: Optional[List[Mapping[str, Any]]] = None,
        ttl: Optional[int] = None,
        accumulate: Any = None,
        shards: Optional[int] = None,
    ) -> "RemoteOptimizer":
        """POST /v1/optimizers with ``shapes`` ({"fc.weight": [3, 4], ...}): params start as zeros and must all
        be uploaded (RemoteOptimizer.upload) before the first step. ``created["layout"]`` gives the raw order."""
        body: Dict[str, Any] = {"shapes": shapes}
        return self._create(_options(body, optimizer=optimizer, hyperparams=hyperparams, schedule=schedule, dtype=dtype, param_groups=param_groups, ttl=ttl, accumulate=accumulate_setting(accumulate), shards=shards))

    def create_optimizer_from_safetensors(self, data: bytes, optimizer: Optional[str] = None, ttl: Optional[int] = None, **query: Any) -> "RemoteOptimizer":
        """POST /v1/optimizers with a safetensors file of the params (names as model.state_dict() has
        them); options in its ``__metadata__`` (optimizer, dtype, hyperparams, schedule, layout) or here."""
        q = {"optimizer": optimizer, "ttl": ttl, **query}
        res = self.request("POST", "/v1/optimizers", bytes(data), headers={"content-type": SAFETENSORS}, query=q, retry="unsent")
        return RemoteOptimizer(self, res.body["id"], res.body["token"], res.body, res.headers.get("etag"))

    def _create(self, body: Dict[str, Any]) -> "RemoteOptimizer":
        res = self.request("POST", "/v1/optimizers", body, retry="unsent")
        created = res.body
        return RemoteOptimizer(self, created["id"], created["token"], created, res.headers.get("etag"))

    def optimizer(self, optimizer_id: str, token: str) -> "RemoteOptimizer":
        """Attaches to an existing hosted optimizer (no request is sent)."""
        return RemoteOptimizer(self, optimizer_id, token)

    def list_optimizers(self, limit: Optional[int] = None, cursor: Optional[str] = None) -> Dict[str, Any]:
        """GET /v1/optimizers (needs an API key): one page {"optimizers", "next_cursor", "usage", "limits"}."""
        return self._json("GET", "/v1/optimizers", query={"limit": limit, "cursor": cursor})

    def iter_optimizers(self, limit: Optional[int] = None) -> Iterator[Dict[str, Any]]:
        """Every optimizer of the API key, page after page."""
        cursor = None
        while True:
            page = self.list_optimizers(limit, cursor)
            yield from page["optimizers"]
            cursor = page.get("next_cursor")
            if not cursor:
                return


def _options(body: Dict[str, Any], **options: Any) -> Dict[str, Any]:
    for key, value in options.items():
        if value is not None:
            body[key] = value
    return body


def _query(params: Mapping[str, Any], steps: Optional[str]) -> Dict[str, Any]:
    q = {k: (",".join(repr(x) if isinstance(x, float) else str(x) for x in v) if isinstance(v, (list, tuple)) else v) for k, v in params.items()}
    q = {k: (repr(v) if isinstance(v, float) else v) for k, v in q.items()}
    if steps is not None:
        q["steps"] = steps
    return q


def _quietly(fn: Any) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - best effort clean-up
        pass


def _all_arrays(value: Any) -> bool:
    if is_array(value):
        return True
    return isinstance(value, Mapping) and len(value) > 0 and all(is_array(v) for v in value.values())


def _binary_step_ok(params: Any, grads: Any) -> bool:
    """numpy tensors in a shape safetensors names: one array, or a flat dict of arrays (None grads allowed)."""
    if np is None:
        return False
    if is_array(params):
        return is_array(grads)
    if not isinstance(params, Mapping) or not isinstance(grads, Mapping) or not params:
        return False
    return all(is_array(v) for v in params.values()) and all(v is None or is_array(v) for v in grads.values())


class RemoteOptimizer:
    """A hosted optimizer: its params and state live in the service; you send gradients.

    ``id`` and ``token`` are all another process needs to attach (``AdamApi.optimizer(id, token)``);
    ``created`` is the creation answer; ``etag`` the state version seen last.
    """

    def __init__(self, api: AdamApi, optimizer_id: str, token: str, created: Optional[Dict[str, Any]] = None, etag: Optional[str] = None):
        self.api = api
        self.id = optimizer_id
        self.token = token
        self.created = created
        self.etag = etag
        self._layout: Optional[List[Dict[str, Any]]] = created.get("layout") if created else None
        self._dtype: Optional[str] = created.get("dtype") if created else None

    def __repr__(self) -> str:
        return f"RemoteOptimizer(id={self.id[:12]}…)"

    @property
    def path(self) -> str:
        return "/v1/optimizers/" + urllib.parse.quote(self.id, safe="")

    @property
    def layout(self) -> List[Dict[str, Any]]:
        """The tensors in storage (raw) order: [{"name", "shape", "offset", "size"}]."""
        if self._layout is None:
            self.info()
        return self._layout  # type: ignore[return-value]

    @property
    def dtype(self) -> str:
        if self._dtype is None:
            self.info()
        return self._dtype  # type: ignore[return-value]

    def _call(self, method: str, suffix: str = "", body: Any = None, headers: Optional[Mapping[str, str]] = None, query: Optional[Mapping[str, Any]] = None, **kw: Any) -> Response:
        res = self.api.request(method, self.path + suffix, body, headers=headers, query=query, auth=self.token, **kw)
        if "etag" in res.headers:
            self.etag = res.headers["etag"]
        if isinstance(res.body, dict) and "layout" in res.body and "dtype" in res.body:
            self._layout, self._dtype = res.body["layout"], res.body["dtype"]
        return res

    # -- steps ----------------------------------------------------------------------------------

    def step(
        self,
        grads: Any,
        loss: Optional[float] = None,
        idempotency_key: Optional[str] = None,
        expected_step: Optional[int] = None,
        if_match: Optional[str] = None,
        return_params: bool = True,
        worker: Optional[int] = None,
    ) -> Dict[str, Any]:
        """POST .../step: applies one gradient. Returns {"step", "lr", "params"?, "replayed"?, "grad_norm"?, "skipped"?}.

        grads: the gradients' tree as JSON takes it (None for a frozen tensor), or numpy arrays (one
            array in layout order, or a dict of names to arrays): those go as raw bytes and the params
            come back as a dict of numpy arrays (None gradients go as JSON null).
        idempotency_key: one per logical step (a new random one by default); a retry with the same
            key answers the first result (``"replayed": True``) instead of applying the gradient twice.
        expected_step / if_match (an ETag): refused (409 / 412) if the optimizer has moved on.
        worker: with ``accumulate``, this worker's id: the gradient is its contribution to the step after
            ``expected_step`` (required then). Until the last one arrives the answer is
            {"pending": True, "worker", "step", "received", "missing", ...} (a 202); the last one steps.
            ``wait_params(step + 1)`` then gives the new params.
        """
        key = idempotency_key or uuid.uuid4().hex
        headers: Dict[str, str] = {"idempotency-key": key}
        if if_match is not None:
            headers["if-match"] = if_match
        if np is not None and (is_array(grads) or (isinstance(grads, Mapping) and grads and all(v is None or is_array(v) for v in grads.values()) and any(is_array(v) for v in grads.values()))):
            if is_array(grads) or all(v is not None for v in grads.values()):
                return self._step_arrays(grads, key, loss, expected_step, if_match, return_params, worker)
            # Frozen tensors (None) have no raw form: JSON with null, the params back as raw bytes.
            headers["accept"] = _accept(RAW)
            res = self._call("POST", "/step", _step_body(grads, loss, expected_step), headers=headers, query=_step_query(return_params, worker))
            return self._raw_answer(res, return_params)
        res = self._call("POST", "/step", _step_body(grads, loss, expected_step), headers=headers, query=_step_query(return_params, worker))
        return res.body

    def _step_arrays(self, grads: Any, key: str, loss: Optional[float], expected_step: Optional[int], if_match: Optional[str], return_params: bool, worker: Optional[int] = None) -> Dict[str, Any]:
        if is_array(grads):
            flat = grads
        else:
            missing = [t["name"] for t in self.layout if t["name"] not in grads]
            unknown = [n for n in grads if n not in {t["name"] for t in self.layout}]
            if missing or unknown:
                raise ValueError(f"gradients must name every tensor of the optimizer: missing {missing}, unknown {unknown}")
            flat = np.concatenate([np.ravel(grads[t["name"]]) for t in self.layout]) if self.layout else np.zeros(0)
        dtype = str(flat.dtype) if str(flat.dtype) in ("float32", "float64", "float16") else self.dtype
        res = self.step_raw(flat, dtype=dtype if dtype != self.dtype else None, loss=loss, idempotency_key=key, expected_step=expected_step, if_match=if_match, return_params=return_params, worker=worker, _response=True)
        return self._raw_answer(res, return_params)

    def _raw_answer(self, res: Response, return_params: bool) -> Dict[str, Any]:
        if res.status == 202:
            return dict(res.body)
        out = _step_head(res.headers)
        if return_params:
            out["params"] = self._arrays(res.body or b"")
        return out

    def step_raw(
        self,
        grads: Any,
        dtype: Optional[str] = None,
        loss: Optional[float] = None,
        idempotency_key: Optional[str] = None,
        expected_step: Optional[int] = None,
        if_match: Optional[str] = None,
        return_params: bool = True,
        worker: Optional[int] = None,
        _response: bool = False,
    ) -> Any:
        """POST .../step with the gradients as raw elements (see wire.encode_raw): every element of every
        tensor, in layout order. Returns {"step", "lr", "params": the new params as raw bytes of the
        optimizer's dtype, "replayed", ...}. ``dtype="bfloat16"`` with bytes halves the upload. worker: a
        contribution to an accumulated step (see step()); {"pending": True, ...} until the last one.
        A gradient of more than STEP_PART_BYTES (only a sharded optimizer's is) goes in parts under one
        Idempotency-Key (``?part_offset=``); the last part applies the step."""
        data, dtype = wire.encode_raw(grads, dtype)
        headers = {"content-type": wire.raw_content_type(dtype), "accept": _accept(RAW), "idempotency-key": idempotency_key or uuid.uuid4().hex}
        if if_match is not None:
            headers["if-match"] = if_match
        query = {"loss": repr(float(loss)) if loss is not None else None, "expected_step": expected_step, **_step_query(return_params, worker)}
        item = _ITEM_BYTES[dtype or self.dtype]
        part = max(item, STEP_PART_BYTES - STEP_PART_BYTES % item)
        if worker is None and len(data) > part:
            view = memoryview(data)
            last = (len(data) - 1) // part * part
            for at in range(0, last, part):
                self._call("POST", "/step", bytes(view[at:at + part]), headers=headers, query={**query, "part_offset": at // item})
            res = self._call("POST", "/step", bytes(view[last:]), headers=headers, query={**query, "part_offset": last // item})
        else:
            res = self._call("POST", "/step", data, headers=headers, query=query)
        if _response:
            return res
        if res.status == 202:
            return dict(res.body)
        out = _step_head(res.headers)
        out["params"] = res.body or b""
        return out

    def step_safetensors(self, grads: Mapping[str, Any], loss: Optional[float] = None, idempotency_key: Optional[str] = None, expected_step: Optional[int] = None, if_match: Optional[str] = None, worker: Optional[int] = None) -> Dict[str, Any]:
        """POST .../step with a safetensors file of the gradients by name ({name: array or nested lists});
        the params come back as safetensors: {"step", "lr", "params": {name: wire.Tensor}, ...}.
        A sparse (row) gradient of ``sgd``, ``adagrad`` or ``sparse_adam`` is ``grads.indices/<name>``
        (a wire.Tensor of dtype I64 or I32) with ``grads.values/<name>`` in place of ``<name>``.
        worker: a contribution to an accumulated step (see step())."""
        body = grads if isinstance(grads, (bytes, bytearray)) else wire.dump_safetensors(grads, dtype=self.dtype)
        headers = {"content-type": SAFETENSORS, "accept": _accept(SAFETENSORS), "idempotency-key": idempotency_key or uuid.uuid4().hex}
        if if_match is not None:
            headers["if-match"] = if_match
        res = self._call("POST", "/step", bytes(body), headers=headers, query={"loss": repr(float(loss)) if loss is not None else None, "expected_step": expected_step, "worker": worker})
        if res.status == 202:
            return dict(res.body)
        out = _step_head(res.headers)
        out["params"], _ = wire.load_safetensors(res.body)
        return out

    # -- params ---------------------------------------------------------------------------------

    def params(self) -> Any:
        """GET .../params: the current parameters, in the structure given at creation."""
        return self._call("GET", "/params").body["params"]

    def params_raw(self) -> bytes:
        """GET .../params as raw bytes of the optimizer's dtype in layout order (np.frombuffer(b, "<f4"), array("f", b))."""
        return self._call("GET", "/params", headers={"accept": _accept(RAW)}).body or b""

    def wait_params_raw(self, min_step: int, wait: float = 30, timeout: Optional[float] = None) -> Dict[str, Any]:
        """GET .../params?min_step=k&wait=s as raw bytes, asked again (long-poll) until the optimizer has
        completed ``min_step`` steps: {"step", "params": raw bytes}. A worker of an accumulating optimizer
        waits so for the step its contribution joined. timeout: seconds in all (None: no end); then the
        ConflictError of the last answer is raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seconds = max(0, min(30, int(wait)))
        while True:
            try:
                res = self._call("GET", "/params", headers={"accept": _accept(RAW)}, query={"min_step": int(min_step), "wait": seconds})
                return {"step": int(res.headers["step"]), "params": res.body or b""}
            except ConflictError:  # not there yet: the step waits for other workers
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    def params_arrays(self) -> Dict[str, Any]:
        """GET .../params as raw bytes, split by the layout into {name: numpy array} (needs numpy)."""
        return self._arrays(self.params_raw())

    def params_safetensors(self) -> Dict[str, "wire.Tensor"]:
        """GET .../params as a safetensors file: {name: wire.Tensor}."""
        tensors, _ = wire.load_safetensors(self._call("GET", "/params", headers={"accept": _accept(SAFETENSORS)}).body)
        return tensors

    def _arrays(self, raw: bytes) -> Dict[str, Any]:
        if np is None:
            raise ImportError("numpy is needed for arrays; use params_raw()")
        flat = np.frombuffer(raw, "<f8" if self.dtype == "float64" else "<f4")
        return {t["name"]: flat[t["offset"]:t["offset"] + t["size"]].reshape(t["shape"]).copy() for t in self.layout}

    def upload(self, tensor: Optional[str], data: Any, offset: int = 0, dtype: Optional[str] = None) -> Dict[str, Any]:
        """PUT .../params: raw elements (see wire.encode_raw) into ``tensor`` (a name from the layout) from
        element ``offset``, or, with tensor=None, into the flat params from ``offset``. Returns the
        metadata; its "upload" says what is still missing."""
        data, dtype = wire.encode_raw(data, dtype)
        query = {"tensor": tensor, "offset": offset or None}
        return self._call("PUT", "/params", data, headers={"content-type": wire.raw_content_type(dtype)}, query=query).body

    def upload_params(self, params: Any) -> Dict[str, Any]:
        """PUT .../params with whole tensors by name: JSON (a tree), or a safetensors file when they are numpy arrays."""
        if _all_arrays(params) and isinstance(params, Mapping):
            return self._call("PUT", "/params", wire.dump_safetensors(params, dtype=self.dtype), headers={"content-type": SAFETENSORS}).body
        return self._call("PUT", "/params", {"params": params}).body

    # -- snapshots ------------------------------------------------------------------------------

    def state(self) -> Dict[str, Any]:
        """GET .../state: the full JSON snapshot (params, state by torch's names, hyperparameters, schedule)."""
        return self._call("GET", "/state").body

    def restore(self, snapshot: Mapping[str, Any], if_match: Optional[str] = None) -> Dict[str, Any]:
        """PUT .../state: replaces params and state atomically with a JSON snapshot. Returns the new metadata."""
        return self._call("PUT", "/state", dict(snapshot), headers={"if-match": if_match} if if_match else None).body

    def checkpoint(self) -> bytes:
        """GET .../state as a safetensors checkpoint (params/…, the slots by torch's names, step/…)."""
        return self._call("GET", "/state", headers={"accept": _accept(SAFETENSORS)}).body

    def restore_checkpoint(self, data: bytes, if_match: Optional[str] = None) -> Dict[str, Any]:
        """PUT .../state with a safetensors checkpoint (from checkpoint() or adam_api.checkpoint.from_torch)."""
        headers = {"content-type": SAFETENSORS}
        if if_match:
            headers["if-match"] = if_match
        return self._call("PUT", "/state", bytes(data), headers=headers).body

    # -- metadata and the rest ------------------------------------------------------------------

    def info(self) -> Dict[str, Any]:
        """GET: optimizer, step, hyperparameters, schedule, next_lr, shapes, layout, upload status, ttl."""
        return self._call("GET").body

    def update(self, hyperparams: Optional[Mapping[str, Any]] = None, schedule: Any = _UNSET, ttl: Optional[int] = None, param_groups: Any = _UNSET, if_match: Optional[str] = None, accumulate: Any = _UNSET) -> Dict[str, Any]:
        """PATCH: merges hyperparameters, replaces the schedule (None removes it), sets the time-to-live,
        sets ``accumulate`` (N or {"contributions", "reduce"}; None turns it off)."""
        body: Dict[str, Any] = {}
        if accumulate is not _UNSET:
            body["accumulate"] = accumulate_setting(accumulate)
        if hyperparams is not None:
            body["hyperparams"] = hyperparams
        if schedule is not _UNSET:
            body["schedule"] = schedule
        if param_groups is not _UNSET:
            body["param_groups"] = param_groups
        if ttl is not None:
            body["ttl"] = ttl
        return self._call("PATCH", "", body, headers={"if-match": if_match} if if_match else None).body

    def history(self, limit: Optional[int] = None) -> Dict[str, Any]:
        """GET .../history: {"entries": [{"step", "lr", "loss", "at", ...}, ...], "kept"}, oldest first."""
        return self._call("GET", "/history", query={"limit": limit}).body

    def plot_history(self, limit: Optional[int] = None, log_scale: bool = False) -> str:
        """GET .../history/plot: loss and learning rate per step as SVG text."""
        return self._call("GET", "/history/plot", query={"limit": limit, "log_scale": log_scale or None}, headers={"accept": _accept("image/svg+xml")}).body

    def rotate_token(self) -> str:
        """POST .../token: a new token, kept in ``self.token`` and returned; the old one is dead from now on."""
        res = self._call("POST", "/token", retry="unsent")
        self.token = res.body["token"]
        return self.token

    def delete(self, if_match: Optional[str] = None) -> None:
        """DELETE: removes the optimizer and everything stored for it; later calls raise NotFoundError."""
        self._call("DELETE", headers={"if-match": if_match} if if_match else None, ok_after_retry=(404,))


def accumulate_setting(value: Any) -> Any:
    """The API's accumulate object of N (contributions, mean) or a mapping; None stays None."""
    if value is None or isinstance(value, Mapping):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"accumulate is a number of contributions or {{'contributions': N, 'reduce': 'mean' | 'sum'}}, got {value!r}")
    return {"contributions": value, "reduce": "mean"}


# Most bytes of gradient one step request carries; more go in parts (the platform takes 100 MB
# bodies on most plans). Only a sharded optimizer's gradient is ever this large.
STEP_PART_BYTES = 64 * 1024 * 1024
_ITEM_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}


def _step_query(return_params: bool, worker: Optional[int]) -> Dict[str, Any]:
    return {"return": None if return_params else "none", "worker": worker}


def _step_body(grads: Any, loss: Optional[float], expected_step: Optional[int]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"grads": grads}
    if loss is not None:
        body["loss"] = float(loss)
    if expected_step is not None:
        body["expected_step"] = expected_step
    return body


def _step_head(headers: Mapping[str, str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"step": int(headers["step"]), "lr": float(headers["lr"]), "replayed": headers.get("replayed") == "true" or headers.get("idempotent-replayed") == "true"}
    if "grad_norm" in headers:
        out["grad_norm"] = _number(headers["grad_norm"])
    if "skipped" in headers:
        out["skipped"] = headers["skipped"] == "true"
    return out
