"""A tiny recording HTTP proxy on loopback, for proving what the Stripe SDK actually sends.

localstripe ignores (and cannot log) request headers, so tests point the SDK's `api_base` at this
proxy instead: it forwards every request unchanged to the upstream server (localstripe) and records
method, path, query, headers (e.g. `Idempotency-Key`) and the decoded form body.

It can also answer the next N (matching) requests itself, with a canned error (`fail_next`) or any
JSON body (`answer_next`), so tests can exercise the client's error mapping (402, 429, 5xx) and
endpoints localstripe lacks, without a misbehaving server. These injected answers stand for trouble in
front of Stripe's API (a load balancer, a lost connection): they are not saved for the idempotency key.

Idempotency as Stripe documents it (docs.stripe.com/idempotency; localstripe has none): a POST with an
`Idempotency-Key` header is executed once per key and API key (the account); the first answer, whatever
its status, is saved for 24 hours and a request with the same key and the same parameters gets it back
with `Idempotent-Replayed: true`, without reaching localstripe. The same key with other parameters, or
on another endpoint, is answered 400 `idempotency_error`; the same key while the first request still
runs, 409 `idempotency_key_in_use`. Nothing is saved when the endpoint never began (401, 429, upstream
unreachable). GET and DELETE ignore the header. `stub(...)` serves an endpoint localstripe lacks *behind*
this layer (e.g. billing portal sessions), so a replay of it is deduplicated like any other.
`executed` lists the requests that reached localstripe or a stub (the side effects); `idempotency` is the
key cache (tests.support.idempotency), with an injectable clock.

    with RecordingProxy("http://127.0.0.1:8420") as proxy:
        client = StripePlatformClient("sk_test_x", proxy.url)
        ...
        [req] = proxy.find("POST", r"/v1/invoices/in_\\w+/pay$")
        assert req.header("Idempotency-Key") == "wf-1:pay"
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from support.idempotency import (
    STRIPE_TTL,
    Conflict,
    IdempotencyCache,
    Replay,
    form_fingerprint,
)
from support.loopback import LoopbackServer, RecordedRequest, read_request

# A stubbed endpoint: (status, JSON body) for a request, or None to pass it on to the upstream server.
StubHandler = Callable[[RecordedRequest], "tuple[int, dict[str, object]] | None"]

# Hop-by-hop headers are not forwarded (RFC 9110 §7.6.1).
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}


@dataclass
class _Failure:
    status: int
    body: dict[str, object]
    headers: dict[str, str] = field(default_factory=dict)
    method: str | None = None
    path: re.Pattern[str] | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or bool(self.path.search(path))
        )


class RecordingProxy(LoopbackServer):
    thread_name = "recording-proxy"

    def __init__(
        self,
        upstream: str,
        host: str = "127.0.0.1",
        *,
        idempotency: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._stubs: list[tuple[str, re.Pattern[str], StubHandler]] = []
        self._lose: list[_Failure] = []
        self.honour_idempotency = idempotency
        self.idempotency = IdempotencyCache(ttl_seconds=STRIPE_TTL, clock=clock)
        self.executed: list[RecordedRequest] = []
        self._listen(host)

    # ---- test helpers

    def clear(self) -> None:
        """Forget recorded requests and pending injected answers (idempotency keys are kept, as Stripe
        keeps them; `idempotency.clear()` forgets those)."""
        with self._lock:
            self.requests.clear()
            self.executed.clear()
            self._failures.clear()
            self._lose.clear()

    def lose_answer_next(self, *, method: str | None = None, path_pattern: str | None = None) -> None:
        """The next matching request is executed (and its answer saved for its idempotency key), then
        the connection is closed without an answer: a timeout or a worker killed mid-request, as the
        client sees it."""
        rx = re.compile(path_pattern) if path_pattern else None
        with self._lock:
            self._lose.append(_Failure(0, {}, {}, method.upper() if method else None, rx))

    def stub(self, method: str, path_pattern: str, handler: StubHandler) -> None:
        """Serve matching requests here instead of upstream, behind the idempotency layer (an endpoint
        localstripe lacks, or a parameter it refuses). `handler` returns (status, JSON body), or None to
        pass the request on to upstream."""
        with self._lock:
            self._stubs.append((method.upper(), re.compile(path_pattern), handler))

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        error: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        method: str | None = None,
        path_pattern: str | None = None,
    ) -> None:
        """Answer the next `times` requests (those with `method` and a path matching `path_pattern`, when
        given) with `status` and a Stripe-shaped error body, without forwarding them."""
        default = {"type": "api_error", "message": f"injected HTTP {status}"}
        body: dict[str, object] = {"error": error or default}
        self.answer_next(status, body, times=times, headers=headers, method=method, path_pattern=path_pattern)

    def answer_next(
        self,
        status: int,
        body: dict[str, object],
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        method: str | None = None,
        path_pattern: str | None = None,
    ) -> None:
        """Answer the next `times` matching requests with this JSON body (e.g. an endpoint the upstream
        server lacks), without forwarding them."""
        rx = re.compile(path_pattern) if path_pattern else None
        m = method.upper() if method else None
        with self._lock:
            self._failures.extend(_Failure(status, body, dict(headers or {}), m, rx) for _ in range(times))

    # ---- server

    def _execute(
        self, rec: RecordedRequest, h: BaseHTTPRequestHandler
    ) -> tuple[int, dict[str, str], bytes, bool]:
        """Run the request: a stub's answer, else upstream's; the flag says whether it was executed
        (False: upstream could not be reached, answered 502)."""
        with self._lock:
            stubs = [fn for m, rx, fn in self._stubs if m == rec.method and rx.search(rec.path)]
        for fn in stubs:
            answer = fn(rec)
            if answer is not None:
                with self._lock:
                    self.executed.append(rec)
                return answer[0], {"Content-Type": "application/json"}, json.dumps(answer[1]).encode(), True
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
            conn.request(rec.method, h.path, body=rec.body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            with self._lock:
                self.executed.append(rec)
            out = {
                k: v
                for k, v in resp.getheaders()
                if k.lower() not in _HOP | {"content-length", "server", "date"}
            }
            return resp.status, out, data, True
        except OSError as exc:
            return 502, {"Content-Type": "text/plain"}, f"proxy: upstream failed: {exc}".encode(), False
        finally:
            conn.close()

    def executed_on(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        """The requests with this method and path that were executed (not replayed, not refused)."""
        rx = re.compile(path_pattern)
        with self._lock:
            return [r for r in self.executed if r.method == method.upper() and rx.search(r.path)]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def _handle(self) -> None:
                rec = read_request(self)
                with proxy._lock:
                    proxy.requests.append(rec)
                    failure = next((f for f in proxy._failures if f.matches(rec.method, rec.path)), None)
                    if failure is not None:
                        proxy._failures.remove(failure)
                if failure is not None:
                    payload = json.dumps(failure.body).encode()
                    rec.status = failure.status
                    self._reply(
                        failure.status, {"Content-Type": "application/json", **failure.headers}, payload
                    )
                    return
                key = rec.header("Idempotency-Key")
                if not (proxy.honour_idempotency and key and rec.method == "POST"):
                    self._send(rec, *proxy._execute(rec, self)[:3])
                    return
                scope = _account(rec)
                verdict = proxy.idempotency.begin(
                    scope, key, rec.method, rec.path, form_fingerprint(rec.body) + "?" + _query(rec)
                )
                if isinstance(verdict, Replay):
                    rec.replayed = True
                    stored = verdict.stored
                    self._send(rec, stored.status, {**dict(stored.headers), "Idempotent-Replayed": "true"},
                               stored.body)  # fmt: skip
                    return
                if isinstance(verdict, Conflict):
                    self._send(rec, *_conflict(verdict, key, rec.path))
                    return
                status, headers, data, executed = proxy._execute(rec, self)
                if not executed or status in (401, 429):  # the endpoint never began: nothing saved
                    proxy.idempotency.forget(verdict)
                else:
                    proxy.idempotency.finish(verdict, status, headers.items(), data)
                self._send(rec, status, {**headers, "Idempotency-Key": key}, data)

            def _lost(self, rec: RecordedRequest) -> bool:
                with proxy._lock:
                    lose = next((f for f in proxy._lose if f.matches(rec.method, rec.path)), None)
                    if lose is not None:
                        proxy._lose.remove(lose)
                if lose is not None:
                    rec.status = 0
                    self.close_connection = True
                return lose is not None

            def _send(self, rec: RecordedRequest, status: int, headers: dict[str, str], data: bytes) -> None:
                if self._lost(rec):
                    return
                rec.status = status
                self._reply(status, headers, data)

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _handle

        return Handler


def _account(rec: RecordedRequest) -> str:
    """What Stripe scopes keys by: the account, i.e. here the API key (Bearer, or Basic user name)."""
    scheme, _, token = (rec.header("authorization") or "").partition(" ")
    if scheme.lower() == "bearer":
        return token.strip()
    return rec.basic_user or ""


def _query(rec: RecordedRequest) -> str:
    return json.dumps(sorted((k, v) for k, vs in rec.query.items() for v in vs))


def _conflict(c: Conflict, key: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """Stripe's answers to a key reused wrongly (type `idempotency_error`)."""
    hint = f"Try using a key other than '{key}' if you meant to execute a different request."
    if c.reason == "in_flight":
        status, error = (
            409,
            {
                "type": "idempotency_error",
                "code": "idempotency_key_in_use",
                "message": "There is currently another in-progress request using this Idempotent Key "
                "(that probably means you submitted twice, and the other request is still going through): "
                f"{key}. Please try again later.",
            },
        )
    elif c.reason == "other_endpoint":
        status, error = (
            400,
            {
                "type": "idempotency_error",
                "message": "Keys for idempotent requests can only be used for the same endpoint they were "
                f"first used for ('{c.first_method} {c.first_path}' vs 'POST {path}'). {hint}",
            },
        )
    else:
        status, error = (
            400,
            {
                "type": "idempotency_error",
                "message": "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. {hint}",
            },
        )
    return status, {"Content-Type": "application/json"}, json.dumps({"error": error}).encode()
