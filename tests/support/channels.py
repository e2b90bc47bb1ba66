"""Real servers on 127.0.0.1 for the channels, shared by tests/actions and the delivery end-to-end tests:
aiosmtpd SMTP servers (plain, STARTTLS with AUTH, implicit TLS) that keep what they accept, a throwaway
self-signed certificate (openssl), and a scripted HTTP server that records requests and answers what each
test tells it to (Twilio's REST API, a Slack incoming webhook, an outbound webhook receiver)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from support.loopback import LoopbackServer, RecordedRequest, read_request

SMTP_USER = "billops-relay"
SMTP_PASSWORD = "relay-password-123"

Reply = tuple[int, str, str]  # status, body, content type


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ SMTP


@dataclass
class Received:
    mail_from: str | None
    rcpt_tos: list[str]
    raw: bytes
    authenticated: bool
    tls: bool

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.raw, policy=email_policy.default)

    def part(self, subtype: str) -> str:
        """The decoded text/<subtype> part (plain or html)."""
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part"
        return str(body.get_content())


@dataclass
class SmtpRecorder:
    """aiosmtpd handler: stores every accepted message; `rcpt_reply` makes it refuse recipients."""

    messages: list[Received] = field(default_factory=list)
    rcpt_reply: str | None = None
    data_replies: deque[str] = field(default_factory=deque)  # answers to DATA, in order (e.g. "451 …")

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_replies:
            return self.data_replies.popleft()
        self.messages.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                raw=envelope.original_content,
                authenticated=bool(session.authenticated),
                tls=session.ssl is not None,
            )
        )
        return "250 Message accepted for delivery"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@dataclass
class Smtp:
    handler: SmtpRecorder
    port: int

    def settings(self) -> dict[str, Any]:
        """Settings for a plain local relay (the e2e tests; tests/actions cover the TLS options)."""
        return {
            "smtp_host": "127.0.0.1",
            "smtp_port": self.port,
            "smtp_security": "none",
            "smtp_from": "Acme Billing <billing@acme.test>",
        }


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (cert, key), made with openssl."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_tls(tls_cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tls_cert[0]), str(tls_cert[1]))
    return ctx


@contextlib.contextmanager
def running_smtp(**kw: Any) -> Iterator[Smtp]:
    handler = SmtpRecorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kw)
    controller.start()
    try:
        yield Smtp(handler, port)
    finally:
        controller.stop()


# ------------------------------------------------------------------ HTTP


class ScriptedServer(LoopbackServer):
    """Records every request; answers with queued replies (`reply_with`), else with `responder`."""

    thread_name = "scripted-http"

    def __init__(self, responder: Callable[[RecordedRequest], Reply]) -> None:
        self._lock = threading.Lock()
        self.responder = responder
        self.queued: deque[Reply] = deque()
        self.delay = 0.0
        self._listen("127.0.0.1")

    def reply_with(self, *replies: Reply) -> None:
        with self._lock:
            self.queued.extend(replies)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                req = read_request(self)
                with server._lock:
                    queued = server.queued.popleft() if server.queued else None
                status, body, ctype = queued or server.responder(req)
                req.status = status
                with server._lock:
                    server.requests.append(req)
                if server.delay:
                    threading.Event().wait(server.delay)
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def json_reply(status: int, body: Any) -> Reply:
    return status, json.dumps(body), "application/json"


def twilio_created(sid: str = "SM0123456789abcdef0123456789abcdef") -> Reply:
    return json_reply(201, {"sid": sid, "status": "accepted"})


def twilio_error(status: int, code: int, message: str) -> Reply:
    return json_reply(status, {"code": code, "message": message, "status": status})


@contextlib.contextmanager
def scripted(default: Reply) -> Iterator[ScriptedServer]:
    """A scripted server answering `default` unless a test queued other replies."""
    srv = ScriptedServer(lambda _req: default).start()
    try:
        yield srv
    finally:
        srv.stop()
