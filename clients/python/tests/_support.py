"""Shared by the tests: the server under test and optional dependencies.

ADAM_API_URL: the adam-api server the service tests call (they skip without it).
ADAM_API_TEST_REQUIRE: comma-separated "server", "numpy", "torch": fail instead of skipping when one
is missing (CI sets it, so nothing is skipped unnoticed).
"""

import os
import unittest

REQUIRED = {x.strip() for x in os.environ.get("ADAM_API_TEST_REQUIRE", "").split(",") if x.strip()}
BASE_URL = os.environ.get("ADAM_API_URL")

try:
    import numpy
except ImportError:  # pragma: no cover - depends on the machine
    numpy = None

try:
    import torch
except ImportError:  # pragma: no cover - depends on the machine
    torch = None


def need(what, available, install):
    """Skip (or, when ADAM_API_TEST_REQUIRE names it, fail) a test or class without ``what``."""
    if available:
        return lambda obj: obj
    message = f"{what} is not available: {install}"
    if what in REQUIRED:
        def failing(obj):
            if isinstance(obj, type):
                def setUpClass(cls):
                    raise AssertionError(f"{message} (required by ADAM_API_TEST_REQUIRE)")
                obj.setUpClass = classmethod(setUpClass)
                return obj
            def test(self):
                self.fail(f"{message} (required by ADAM_API_TEST_REQUIRE)")
            return test
        return failing
    return unittest.skip(message)


need_server = need("server", BASE_URL, "set ADAM_API_URL to a running adam-api (npm run dev)")
need_numpy = need("numpy", numpy is not None, "apt-get install python3-numpy")
need_torch = need("torch", torch is not None, "apt-get install python3-torch")
