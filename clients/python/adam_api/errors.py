"""Typed exceptions of the adam-api client.

Every rejection the service answers is an RFC 9457 problem+json body; the exception raised for it
carries its fields (``type``, ``title``, ``status``, ``detail``, ``instance``, ``errors``) and any
extension members (``quota``, ``limit``, ``usage``, ``requested``, ...) in ``problem``. The class
follows the status, so callers can catch what they can act on::

    try:
        opt.step(grads, expected_step=7)
    except ConflictError:          # 409: the optimizer has moved on
        ...
    except ValidationError as err: # 422: err.errors[0]["field"] names the bad field
        ...
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Type

__all__ = [
    "AdamApiError",
    "AdamApiConnectionError",
    "BadRequestError",
    "UnauthorizedError",
    "ForbiddenError",
    "QuotaExceededError",
    "NotFoundError",
    "MethodNotAllowedError",
    "NotAcceptableError",
    "RequestTimeoutError",
    "ConflictError",
    "PreconditionFailedError",
    "PayloadTooLargeError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "RateLimitedError",
    "ServerError",
    "error_for",
]


class AdamApiError(Exception):
    """A request the service refused (4xx/5xx), or, as AdamApiConnectionError, one that got no answer.

    ``status`` is the HTTP status (None without an answer), ``problem`` the problem+json body as a
    dict (None when the answer had none), ``headers`` the answer's headers (lower-case names).
    """

    def __init__(
        self,
        method: str,
        url: str,
        status: Optional[int],
        problem: Optional[Dict[str, Any]] = None,
        text: str = "",
        headers: Optional[Mapping[str, str]] = None,
        message: Optional[str] = None,
    ):
        self.method = method
        self.url = url
        self.status = status
        self.problem = problem
        self.text = text
        self.headers: Dict[str, str] = dict(headers or {})
        p = problem or {}
        self.type: Optional[str] = p.get("type")
        self.title: Optional[str] = p.get("title")
        self.detail: Optional[str] = p.get("detail")
        self.instance: Optional[str] = p.get("instance")
        self.errors: List[Dict[str, Any]] = list(p.get("errors") or [])
        self.errors_omitted: int = int(p.get("errors_omitted") or 0)
        if message is None:
            summary = f"{p.get('title', 'HTTP error')}: {p.get('detail', '')}" if problem else (text[:200] or "no body")
            message = f"{method} {url} -> {status} {summary}"
        super().__init__(message)

    @property
    def fields(self) -> List[str]:
        """The fields the problem names (``errors[*].field``), e.g. ``["hyperparams.lr"]``."""
        return [e.get("field") for e in self.errors if e.get("field") is not None]

    def __getattr__(self, name: str) -> Any:
        # Extension members of the problem (quota, limit, usage, requested, ...) as attributes.
        problem = self.__dict__.get("problem") or {}
        if name in problem:
            return problem[name]
        raise AttributeError(name)


class AdamApiConnectionError(AdamApiError):
    """No answer: the connection failed, was cut or timed out (after the retries the client allows)."""

    def __init__(self, method: str, url: str, reason: BaseException, attempts: int = 1):
        self.reason = reason
        self.attempts = attempts
        super().__init__(method, url, None, message=f"{method} {url}: no answer after {attempts} attempt(s): {reason!r}")


class BadRequestError(AdamApiError):
    """400: the body is not valid JSON."""


class UnauthorizedError(AdamApiError):
    """401: a missing or wrong token (hosted optimizer) or API key (service routes)."""


class ForbiddenError(AdamApiError):
    """403: e.g. listing optimizers on a server without API keys."""


class QuotaExceededError(ForbiddenError):
    """403 ``quota-exceeded``: the API key's quota is full (``quota``, ``limit``, ``usage``, ``requested``)."""


class NotFoundError(AdamApiError):
    """404: unknown path, or an optimizer that does not exist (deleted or expired)."""


class MethodNotAllowedError(AdamApiError):
    """405."""


class NotAcceptableError(AdamApiError):
    """406: the route answers none of the formats ``Accept`` allows."""


class RequestTimeoutError(AdamApiError):
    """408: a binary body stopped arriving; nothing changed."""


class ConflictError(AdamApiError):
    """409: ``expected_step`` does not match, or params created by shapes are not all uploaded."""


class PreconditionFailedError(AdamApiError):
    """412: ``If-Match`` does not match; ``etag`` is the optimizer's current ETag."""

    @property
    def etag(self) -> Optional[str]:
        return self.headers.get("etag")


class PayloadTooLargeError(AdamApiError):
    """413: the body or the tensors exceed a limit of the service."""


class UnsupportedMediaTypeError(AdamApiError):
    """415: a Content-Type the route does not take."""


class ValidationError(AdamApiError, ValueError):
    """422: a field or tensor is invalid; ``errors`` names each one (``field``, ``pointer``, ``message``, ``value``)."""


class RateLimitedError(AdamApiError):
    """429: too many requests; ``retry_after`` is the seconds the service asks to wait."""

    @property
    def retry_after(self) -> Optional[float]:
        from .client import _retry_after  # late: client imports this module

        return _retry_after(self.headers.get("retry-after"))


class ServerError(AdamApiError):
    """5xx."""


_BY_STATUS: Dict[int, Type[AdamApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    406: NotAcceptableError,
    408: RequestTimeoutError,
    409: ConflictError,
    412: PreconditionFailedError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: ValidationError,
    429: RateLimitedError,
}


def error_for(method: str, url: str, status: int, problem: Optional[Dict[str, Any]], text: str = "", headers: Optional[Mapping[str, str]] = None) -> AdamApiError:
    """The exception for an answer with this status and problem."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else AdamApiError)
    if status == 403 and (problem or {}).get("type") == "urn:adam-api:problem:quota-exceeded":
        cls = QuotaExceededError
    return cls(method, url, status, problem, text, headers)
