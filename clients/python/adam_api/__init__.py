"""adam-api: PyTorch's optimizers over HTTP, bit for bit.

    from adam_api import AdamApi

    api = AdamApi()                     # $ADAM_API_URL (default http://localhost:8787), $ADAM_API_KEY
    out = api.step(params=[1.0, -2.0], grads=[0.1, -0.2], hyperparams={"lr": 0.01})
    opt = api.create_optimizer({"w": [0.0, 0.0]}, optimizer="sgd", hyperparams={"lr": 0.1, "momentum": 0.9})
    opt.step({"w": [0.5, -0.25]}, loss=0.75)

    from adam_api.torch import HostedOptimizer   # a torch.optim.Optimizer whose state lives in adam-api

The core needs only the standard library; numpy (binary tensors) and torch (adam_api.torch,
adam_api.checkpoint) are used when installed.
"""

from .client import DEFAULT_BASE_URL, ENV_KEY, ENV_URL, AdamApi, RemoteOptimizer, Response
from .errors import (
    AdamApiConnectionError,
    AdamApiError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    MethodNotAllowedError,
    NotAcceptableError,
    NotFoundError,
    PayloadTooLargeError,
    PreconditionFailedError,
    QuotaExceededError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "AdamApi",
    "RemoteOptimizer",
    "Response",
    "DEFAULT_BASE_URL",
    "ENV_URL",
    "ENV_KEY",
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
]
