"""The client's transport against a scripted local HTTP server: retries, backoff, Retry-After,
Idempotency-Keys, typed problem+json errors, and the environment variables. No adam-api needed."""

import email.utils
import http.server
import json
import os
import socket
import threading
import time
import unittest
from unittest import mock

import adam_api
from adam_api import (
    AdamApi,
    AdamApiConnectionError,
    AdamApiError,
    ConflictError,
    NotFoundError,
    PreconditionFailedError,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
    ValidationError,
)

PROBLEM = "application/problem+json"


def problem(status, type_="urn:adam-api:problem:server", **extra):
    return {"type": type_, "title": "T", "status": status, "detail": "D", **extra}


class Stub:
    """A local HTTP server answering from a script: each entry a (status, headers, body) or "drop"
    (the connection is closed without an answer). Records every request it gets."""

    def __init__(self):
        self.script = []
        self.requests = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                stub.requests.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                entry = stub.script.pop(0) if stub.script else (200, {}, {"ok": True})
                if entry == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, headers, payload = entry
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                ctype = headers.pop("content-type", PROBLEM if status >= 400 else "application/json")
                self.send_header("content-type", ctype)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Recording(AdamApi):
    """An AdamApi that records the waits instead of sleeping."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.waits = []

    def _sleep(self, seconds):
        self.waits.append(seconds)


STEP_HEADERS = {"step": "1", "lr": "0.1"}


class TransportTest(unittest.TestCase):
    def setUp(self):
        self.stub = Stub()
        self.api = Recording(self.stub.url, max_retries=3, backoff=0.01)

    def tearDown(self):
        self.stub.close()

    def test_a_step_is_retried_after_5xx_and_a_dropped_connection_with_one_idempotency_key(self):
        self.stub.script = [(503, {}, problem(503)), "drop", (502, {"content-type": "text/plain"}, b"bad gateway"), (200, dict(STEP_HEADERS), {"step": 1, "lr": 0.1, "params": [1.0]})]
        opt = self.api.optimizer("abc", "tok")
        out = opt.step([0.5], loss=0.25)
        self.assertEqual(out["step"], 1)
        self.assertEqual(len(self.stub.requests), 4)
        keys = {r["headers"]["idempotency-key"] for r in self.stub.requests}
        self.assertEqual(len(keys), 1, "every attempt of one step carries the same Idempotency-Key")
        self.assertTrue(all(r["headers"]["authorization"] == "Bearer tok" for r in self.stub.requests))
        self.assertEqual(json.loads(self.stub.requests[-1]["body"]), {"grads": [0.5], "loss": 0.25})
        self.assertEqual(len(self.api.waits), 3)
        # Exponential backoff with jitter: backoff·2^k·[0.5, 1].
        for k, wait in enumerate(self.api.waits):
            self.assertGreaterEqual(wait, 0.01 * 2 ** k * 0.5)
            self.assertLessEqual(wait, 0.01 * 2 ** k)

    def test_two_steps_have_two_keys_and_a_given_key_is_sent_as_is(self):
        opt = self.api.optimizer("abc", "tok")
        self.stub.script = [(200, {}, {"step": 1, "lr": 0.1}), (200, {}, {"step": 2, "lr": 0.1}), (200, {}, {"step": 3, "lr": 0.1})]
        opt.step([0.5])
        opt.step([0.5])
        opt.step([0.5], idempotency_key="mine-7")
        keys = [r["headers"]["idempotency-key"] for r in self.stub.requests]
        self.assertNotEqual(keys[0], keys[1])
        self.assertEqual(keys[2], "mine-7")

    def test_retry_after_is_honoured_in_seconds_and_as_a_date(self):
        date = email.utils.formatdate(time.time() + 30, usegmt=True)
        self.stub.script = [(429, {"retry-after": "7"}, problem(429, "urn:adam-api:problem:rate-limited")), (503, {"retry-after": date}, problem(503)), (200, {}, {"steps": [0], "lr": [0.1]})]
        self.assertEqual(self.api.evaluate_schedule({"type": "constant", "lr": 0.1}, steps=[0])["lr"], [0.1])
        self.assertGreaterEqual(self.api.waits[0], 7)
        self.assertGreater(self.api.waits[1], 25)

    def test_a_retry_after_beyond_max_retry_after_is_not_waited_for(self):
        api = Recording(self.stub.url, max_retries=3, max_retry_after=5)
        self.stub.script = [(429, {"retry-after": "10"}, problem(429, "urn:adam-api:problem:rate-limited"))]
        with self.assertRaises(RateLimitedError) as caught:
            api.health()
        self.assertEqual(caught.exception.retry_after, 10)
        self.assertEqual(api.waits, [])
        self.assertEqual(len(self.stub.requests), 1)

    def test_retries_run_out_with_the_last_typed_error(self):
        self.stub.script = [(503, {}, problem(503))] * 4
        with self.assertRaises(ServerError) as caught:
            self.api.health()
        err = caught.exception
        self.assertEqual((err.status, err.type, err.detail), (503, "urn:adam-api:problem:server", "D"))
        self.assertEqual(len(self.stub.requests), 4)  # the first and max_retries=3 more

    def test_creating_an_optimizer_is_retried_only_when_nothing_was_done(self):
        self.stub.script = [(503, {}, problem(503))]
        with self.assertRaises(ServerError):
            self.api.create_optimizer([0.0])
        self.assertEqual(len(self.stub.requests), 1, "a 5xx may have created it: not sent again")
        self.stub.requests.clear()
        self.stub.script = [(429, {"retry-after": "1"}, problem(429)), (201, {}, {"id": "x", "token": "t", "step": 0})]
        self.assertEqual(self.api.create_optimizer([0.0]).id, "x")
        self.assertEqual(len(self.stub.requests), 2)
        self.stub.requests.clear()
        self.stub.script = ["drop"]
        with self.assertRaises(AdamApiConnectionError):
            self.api.create_optimizer([0.0])
        self.assertEqual(len(self.stub.requests), 1, "a cut connection may have created it: not sent again")

    def test_token_rotation_is_not_resent_after_an_unclear_failure(self):
        self.stub.script = [(502, {}, problem(502))]
        opt = self.api.optimizer("abc", "old")
        with self.assertRaises(ServerError):
            opt.rotate_token()
        self.assertEqual(opt.token, "old")
        self.stub.script = [(200, {}, {"id": "abc", "token": "new"})]
        self.assertEqual(opt.rotate_token(), "new")
        self.assertEqual(opt.token, "new")

    def test_a_delete_whose_first_attempt_went_through_succeeds(self):
        self.stub.script = ["drop", (404, {}, problem(404, "urn:adam-api:problem:not-found"))]
        self.api.optimizer("abc", "tok").delete()
        self.assertEqual([r["method"] for r in self.stub.requests], ["DELETE", "DELETE"])
        self.stub.script = [(404, {}, problem(404, "urn:adam-api:problem:not-found"))]
        with self.assertRaises(NotFoundError):
            self.api.optimizer("abc", "tok").delete()

    def test_no_server_is_a_connection_error_after_the_retries(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        api = Recording(f"http://127.0.0.1:{port}", max_retries=2)
        with self.assertRaises(AdamApiConnectionError) as caught:
            api.health()
        self.assertEqual(caught.exception.attempts, 3)
        self.assertIsNone(caught.exception.status)
        self.assertIsInstance(caught.exception, AdamApiError)
        self.assertEqual(len(api.waits), 2)

    def test_problems_become_typed_exceptions_carrying_their_fields(self):
        field = {"field": "hyperparams.lr", "pointer": "/hyperparams/lr", "message": "must be >= 0, got -1", "value": -1}
        cases = [
            (422, problem(422, "urn:adam-api:problem:validation-error", errors=[field], errors_omitted=2), {}, ValidationError),
            (409, problem(409, "urn:adam-api:problem:conflict"), {}, ConflictError),
            (412, problem(412, "urn:adam-api:problem:precondition-failed"), {"etag": '"s3-r4"'}, PreconditionFailedError),
            (401, problem(401, "urn:adam-api:problem:unauthorized"), {}, UnauthorizedError),
            (403, problem(403, "urn:adam-api:problem:quota-exceeded", quota="optimizers", limit=3, usage=3), {}, QuotaExceededError),
        ]
        for status, body, headers, cls in cases:
            with self.subTest(status=status):
                self.stub.script = [(status, dict(headers), body)]
                with self.assertRaises(cls) as caught:
                    self.api.step([1.0], [0.1])
                err = caught.exception
                self.assertEqual(err.status, status)
                self.assertEqual(err.problem, body)
                self.assertEqual(err.type, body["type"])
                self.assertIn(str(status), str(err))
        err = self._raises(422, problem(422, "urn:adam-api:problem:validation-error", errors=[field], errors_omitted=2))
        self.assertEqual((err.fields, err.errors_omitted, err.errors[0]["value"]), (["hyperparams.lr"], 2, -1))
        self.assertIsInstance(err, ValueError)
        self.assertEqual(self._raises(412, problem(412), {"etag": '"s3-r4"'}).etag, '"s3-r4"')
        quota = self._raises(403, problem(403, "urn:adam-api:problem:quota-exceeded", quota="elements", limit=10, usage=8, requested=5))
        self.assertEqual((quota.quota, quota.limit, quota.usage, quota.requested), ("elements", 10, 8, 5))
        self.assertEqual(len(self.stub.requests), 8, "4xx answers are not retried")

    def _raises(self, status, body, headers=None):
        self.stub.script = [(status, dict(headers or {}), body)]
        try:
            self.api.step([1.0], [0.1])
        except AdamApiError as err:
            return err
        self.fail("no error raised")

    def test_nan_is_refused_before_sending(self):
        with self.assertRaises(ValueError):
            self.api.step([float("nan")], [0.1])
        self.assertEqual(self.stub.requests, [])

    def test_base_url_and_api_key_come_from_the_environment(self):
        env = {"ADAM_API_URL": self.stub.url + "/", "ADAM_API_KEY": "k-123"}
        with mock.patch.dict(os.environ, env):
            api = AdamApi()
        self.assertEqual((api.base_url, api.api_key), (self.stub.url, "k-123"))
        self.stub.script = [(200, {}, {"steps": [0], "lr": [0.1]}), (200, {}, {"step": 0}), (201, {}, {"id": "i", "token": "t"})]
        api.evaluate_schedule({"type": "constant", "lr": 0.1}, steps=[0])
        api.optimizer("i", "tok").info()
        api.create_optimizer([0.0])
        auth = [r["headers"].get("authorization") for r in self.stub.requests]
        self.assertEqual(auth, ["Bearer k-123", "Bearer tok", "Bearer k-123"], "the API key on service routes, the token on hosted ones")
        with mock.patch.dict(os.environ, {"ADAM_API_URL": "", "ADAM_API": "http://legacy:1", "ADAM_API_KEY": ""}):
            api = AdamApi()
        self.assertEqual((api.base_url, api.api_key), ("http://legacy:1", None))
        with mock.patch.dict(os.environ, env):
            self.assertEqual(AdamApi("http://given:2", api_key="k2").base_url, "http://given:2")
        with mock.patch.dict(os.environ, {"ADAM_API_URL": "", "ADAM_API": ""}):
            self.assertEqual(AdamApi().base_url, adam_api.DEFAULT_BASE_URL)


if __name__ == "__main__":
    unittest.main()
