"""What the local HTTP servers of the tests share (the Stripe recording proxy and the fake Chargebee,
Recurly and Zuora APIs): a ThreadingHTTPServer on 127.0.0.1 served from a daemon thread, and every
request recorded as a `RecordedRequest`."""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(user, password) of an HTTP Basic `Authorization` header, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        return None
    return user, password


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int = 0  # what the server answered (0: none, e.g. the connection was dropped)
    replayed: bool = False  # answered from the idempotency-key cache (nothing was executed)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def form(self) -> dict[str, str]:
        """The form-encoded body as a flat dict (Stripe/Chargebee style keys, e.g. `customer[id]`)."""
        parsed = parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}

    @property
    def params(self) -> dict[str, str]:
        """The query string as a flat dict."""
        return {k: v[-1] for k, v in self.query.items()}

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def basic_credentials(self) -> tuple[str, str] | None:
        return basic_credentials(self.header("authorization"))

    @property
    def basic_user(self) -> str | None:
        """The HTTP Basic user name (Chargebee: the API key), or None."""
        creds = self.basic_credentials
        return creds[0] if creds else None


def read_request(h: BaseHTTPRequestHandler, *, unquote_path: bool = False) -> RecordedRequest:
    """Read the request a handler is serving (its body included) into a RecordedRequest."""
    parts = urlsplit(h.path)
    length = int(h.headers.get("content-length") or 0)
    return RecordedRequest(
        method=h.command,
        path=unquote(parts.path) if unquote_path else parts.path,
        query=parse_qs(parts.query, keep_blank_values=True),
        headers={k.lower(): v for k, v in h.headers.items()},
        body=h.rfile.read(length) if length else b"",
    )


class LoopbackServer:
    """Base of the test servers: call `_listen(host)` at the end of `__init__` (after setting
    `self._lock`), implement `_handler_class`; recorded requests go to `self.requests`."""

    thread_name = "loopback-server"
    poll_interval = 0.05
    requests: list[RecordedRequest]
    _lock: threading.Lock | threading.RLock

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def _listen(self, host: str) -> None:
        self.requests = []
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": self.poll_interval},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def find(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        """Recorded requests with this method whose path matches the regular expression (re.search)."""
        rx = re.compile(path_pattern)
        with self._lock:
            return [r for r in self.requests if r.method == method.upper() and rx.search(r.path)]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()
