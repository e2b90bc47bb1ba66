"""A tiny recording HTTP proxy on loopback, for proving what the Stripe SDK actually sends.

localstripe ignores (and cannot log) request headers, so tests point the SDK's `api_base` at this
proxy instead: it forwards every request unchanged to the upstream server (localstripe) and records
method, path, query, headers (e.g. `Idempotency-Key`) and the decoded form body.

It can also answer the next N (matching) requests itself, with a canned error (`fail_next`) or any
JSON body (`answer_next`), so tests can exercise the client's error mapping (402, 429, 5xx) and
endpoints localstripe lacks, without a misbehaving server.

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
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from support.loopback import LoopbackServer, read_request

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

    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._listen(host)

    # ---- test helpers

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()

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
        body = {"error": error or {"type": "api_error", "message": f"injected HTTP {status}"}}
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

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def _handle(self) -> None:
                rec = read_request(self)
                body = rec.body
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
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out = {
                        k: v
                        for k, v in resp.getheaders()
                        if k.lower() not in _HOP | {"content-length", "server", "date"}
                    }
                    rec.status = resp.status
                    self._reply(resp.status, out, data)
                except OSError as exc:
                    rec.status = 502
                    self._reply(
                        502, {"Content-Type": "text/plain"}, f"proxy: upstream failed: {exc}".encode()
                    )
                finally:
                    conn.close()

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _handle

        return Handler
