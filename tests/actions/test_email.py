"""Email delivered to real SMTP servers (aiosmtpd) on 127.0.0.1: headers, both parts, one-click
unsubscribe, no PII beyond the recipient's own address, and the error classes."""

from __future__ import annotations

import email
import email.policy
import re
import socket
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from billops.actions.base import channel_unavailable
from billops.actions.email import send_email, text_to_html
from billops.errors import ConfigError, DeliveryError, InputError
from support.channels import SMTP_PASSWORD, SMTP_USER, Smtp, free_port

from .conftest import make_settings

TO = "jane.doe@customer.example"
FROM_ADDR = "billing@acme.example"
UNSUB = "https://billops.acme.example/unsubscribe/tok_abc123"
KEY = "stripe:evt_1PzSecretish:draft-email"
TEXT = (
    "Hello,\n\nyour payment of 49.00 USD for invoice ACME-0042 did not go through.\n"
    "Update your card here: https://billing.stripe.com/p/session/test_abc.\n\nThanks,\nAcme billing"
)


def _settings(tmp_path: Path, port: int, security: str = "none", **kw: Any) -> Any:
    kw.setdefault("smtp_timeout_seconds", 5)
    return make_settings(
        tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security=security,
        smtp_from=f"Acme Billing <{FROM_ADDR}>",
        **kw,
    )


def _send(settings: Any, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "to": TO,
        "subject": "Your payment did not go through",
        "text": TEXT,
        "idempotency_key": KEY,
        "unsubscribe_url": UNSUB,
    }
    return send_email(settings, **{**args, **kw})


def _parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_plain_relay_headers_parts_and_unsubscribe(tmp_path: Path, smtp_plain: Smtp) -> None:
    settings = _settings(tmp_path, smtp_plain.port, smtp_reply_to="help@acme.example")
    receipt = _send(settings, unsubscribe_mailto="unsubscribe@acme.example")

    [got] = smtp_plain.handler.messages
    assert got.mail_from == FROM_ADDR and got.rcpt_tos == [TO]
    msg = _parse(got.raw)
    assert msg["From"] == f"Acme Billing <{FROM_ADDR}>"
    assert msg["To"] == TO
    assert msg["Subject"] == "Your payment did not go through"
    assert msg["Reply-To"] == "help@acme.example"
    assert msg["Date"]
    assert msg["Auto-Submitted"] == "auto-generated"
    assert re.fullmatch(r"<[0-9a-f]{32}@acme\.example>", msg["Message-ID"])
    assert receipt.channel == "email" and receipt.provider_id == msg["Message-ID"]
    assert msg["List-Unsubscribe"] == f"<{UNSUB}>, <mailto:unsubscribe@acme.example>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().rstrip("\n") == TEXT
    html_part = parts[1].get_content()
    assert html_part == text_to_html(TEXT)
    assert '<a href="https://billing.stripe.com/p/session/test_abc">' in html_part
    assert "invoice ACME-0042" in html_part


def test_no_pii_or_key_beyond_recipient(tmp_path: Path, smtp_plain: Smtp) -> None:
    settings = _settings(tmp_path, smtp_plain.port)
    _send(settings)
    raw = smtp_plain.handler.messages[0].raw.decode("utf-8")
    msg = _parse(raw.encode())
    local_part_of_message_id = msg["Message-ID"].strip("<>").split("@")[0]
    addresses = set(re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", raw))
    addresses.discard(f"{local_part_of_message_id}@acme.example")
    assert addresses == {TO, FROM_ADDR}
    # The idempotency key names platform ids: only its digest may leave the machine.
    assert "evt_1PzSecretish" not in raw and "draft-email" not in raw
    assert "127.0.0.1" not in raw  # no Received/X-Originating-IP-style headers from the sender side


def test_same_key_same_message_id_other_key_other_id(tmp_path: Path, smtp_plain: Smtp) -> None:
    settings = _settings(tmp_path, smtp_plain.port)
    first = _send(settings)
    again = _send(settings)
    other = _send(settings, idempotency_key=KEY + "-2")
    ids = [_parse(m.raw)["Message-ID"] for m in smtp_plain.handler.messages]
    assert ids[0] == ids[1] == first.provider_id == again.provider_id
    assert ids[2] == other.provider_id != ids[0]


def test_without_unsubscribe_url_no_one_click_header(tmp_path: Path, smtp_plain: Smtp) -> None:
    _send(
        _settings(tmp_path, smtp_plain.port), unsubscribe_url=None, unsubscribe_mailto="mailto:u@acme.example"
    )
    msg = _parse(smtp_plain.handler.messages[0].raw)
    assert msg["List-Unsubscribe"] == "<mailto:u@acme.example>"
    assert msg["List-Unsubscribe-Post"] is None


def test_starttls_with_auth(tmp_path: Path, smtp_starttls: Smtp, tls_cert: tuple[Path, Path]) -> None:
    settings = _settings(
        tmp_path,
        smtp_starttls.port,
        security="starttls",
        smtp_username=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        smtp_ca_file=tls_cert[0],
    )
    receipt = _send(settings, html="<p>Custom <b>HTML</b></p>")
    [got] = smtp_starttls.handler.messages
    assert got.tls and got.authenticated and got.rcpt_tos == [TO]
    msg = _parse(got.raw)
    html_part = msg.get_body(preferencelist=("html",))
    assert html_part is not None and html_part.get_content().strip() == "<p>Custom <b>HTML</b></p>"
    assert receipt.detail == {"smtp_host": "127.0.0.1", "security": "starttls"}


def test_starttls_wrong_password_is_permanent(
    tmp_path: Path, smtp_starttls: Smtp, tls_cert: tuple[Path, Path]
) -> None:
    settings = _settings(
        tmp_path,
        smtp_starttls.port,
        security="starttls",
        smtp_username=SMTP_USER,
        smtp_password="not-the-password",
        smtp_ca_file=tls_cert[0],
    )
    with pytest.raises(DeliveryError) as err:
        _send(settings)
    assert err.value.channel == "email" and not err.value.retryable
    assert err.value.code == "smtp-535"
    assert smtp_starttls.handler.messages == []


def test_untrusted_certificate_is_permanent(tmp_path: Path, smtp_starttls: Smtp) -> None:
    settings = _settings(
        tmp_path,
        smtp_starttls.port,
        security="starttls",
        smtp_username=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
    )
    with pytest.raises(DeliveryError) as err:
        _send(settings)
    assert not err.value.retryable and err.value.code == "tls-verify"
    assert smtp_starttls.handler.messages == []


def test_starttls_required_but_server_has_none(tmp_path: Path, smtp_plain: Smtp) -> None:
    """A server without STARTTLS is refused, never used in clear text."""
    with pytest.raises(DeliveryError) as err:
        _send(_settings(tmp_path, smtp_plain.port, security="starttls"))
    assert not err.value.retryable and err.value.code == "smtp-not-supported"
    assert smtp_plain.handler.messages == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls(tmp_path: Path, smtp_implicit_tls: Smtp, tls_cert: tuple[Path, Path]) -> None:
    settings = _settings(
        tmp_path,
        smtp_implicit_tls.port,
        security="tls",
        smtp_username=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        smtp_ca_file=tls_cert[0],
    )
    _send(settings)
    [got] = smtp_implicit_tls.handler.messages
    assert got.authenticated and _parse(got.raw)["To"] == TO
    # The port speaks TLS only: a clear-text client gets no greeting (aiosmtpd's session.ssl stays
    # None for implicit TLS, so this is how the test knows the message went over TLS).
    clear = _settings(tmp_path, smtp_implicit_tls.port, smtp_timeout_seconds=0.3)
    with pytest.raises(DeliveryError) as err:
        _send(clear)
    assert err.value.retryable
    assert len(smtp_implicit_tls.handler.messages) == 1


@pytest.mark.parametrize(
    ("reply", "retryable", "code"),
    [("550 5.1.1 No such user", False, "smtp-550"), ("451 4.3.0 Try again later", True, "smtp-451")],
)
def test_refused_recipient(tmp_path: Path, smtp_plain: Smtp, reply: str, retryable: bool, code: str) -> None:
    smtp_plain.handler.rcpt_reply = reply
    with pytest.raises(DeliveryError) as err:
        _send(_settings(tmp_path, smtp_plain.port))
    assert err.value.retryable is retryable and err.value.code == code
    assert TO not in str(err.value)  # error messages reach logs: no address
    assert smtp_plain.handler.messages == []


def test_nothing_listening_is_retryable(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as err:
        _send(_settings(tmp_path, free_port()))
    assert err.value.retryable and err.value.code == "connection"


def test_silent_server_times_out_retryable(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts the connection, never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        settings = _settings(tmp_path, listener.getsockname()[1], smtp_timeout_seconds=0.3)
        with pytest.raises(DeliveryError) as err:
            _send(settings)
    assert err.value.retryable and err.value.code in ("timeout", "connection", "no-answer")


def test_a_server_that_hangs_up_after_the_message_is_an_unknown_outcome(tmp_path: Path) -> None:
    """The connection closes after the message's final dot, before the reply: the server may have queued
    it. Retryable, with code `no-answer`, which the delivery step treats as "maybe sent"."""
    import threading

    got: list[bytes] = []

    def serve(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rwb") as f:
            f.write(b"220 fake ESMTP\r\n")
            f.flush()
            while line := f.readline():
                got.append(line)
                if line.upper().startswith((b"EHLO", b"HELO")):
                    f.write(b"250 fake\r\n")
                elif line.upper().startswith(b"DATA"):
                    f.write(b"354 go ahead\r\n")
                elif line == b".\r\n":
                    return  # hang up instead of "250 queued"
                elif line.upper().startswith((b"MAIL", b"RCPT")):
                    f.write(b"250 ok\r\n")
                f.flush()

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        t = threading.Thread(target=serve, args=(listener,), daemon=True)
        t.start()
        with pytest.raises(DeliveryError) as err:
            _send(_settings(tmp_path, listener.getsockname()[1]))
        t.join(5)
    assert err.value.retryable and err.value.code == "no-answer"
    assert b".\r\n" in got  # the whole message was sent before the hang-up


def test_bad_input_and_config(tmp_path: Path, smtp_plain: Smtp) -> None:
    settings = _settings(tmp_path, smtp_plain.port)
    with pytest.raises(DeliveryError) as err:
        _send(settings, to="not an address")
    assert err.value.code == "invalid-address" and not err.value.retryable
    with pytest.raises(InputError):
        _send(settings, subject="two\nlines")
    with pytest.raises(InputError):
        _send(settings, unsubscribe_url="javascript:alert(1)")
    with pytest.raises(ConfigError):
        _send(make_settings(tmp_path, smtp_from=FROM_ADDR))
    assert smtp_plain.handler.messages == []


def test_channel_unavailable_reasons(tmp_path: Path) -> None:
    blank = make_settings(tmp_path)
    assert channel_unavailable(blank, "email") == "no SMTP host configured (BILLOPS_SMTP_HOST)"
    assert "BILLOPS_TWILIO_ACCOUNT_SID" in (channel_unavailable(blank, "sms") or "")
    assert "BILLOPS_SLACK_WEBHOOK_URL" in (channel_unavailable(blank, "slack") or "")
    assert "BILLOPS_OUTBOUND_WEBHOOKS" in (channel_unavailable(blank, "webhook") or "")
    assert "BILLOPS_SMTP_FROM" in (channel_unavailable(make_settings(tmp_path, smtp_host="h"), "email") or "")
    full = make_settings(
        tmp_path,
        smtp_host="smtp.example",
        smtp_from=FROM_ADDR,
        twilio_account_sid="AC123",
        twilio_auth_token="tok",
        twilio_from="+15005550006",
        slack_webhook_url="https://hooks.slack.com/services/T/B/X",
    )
    assert [channel_unavailable(full, c) for c in ("email", "sms", "slack")] == [None, None, None]
    with pytest.raises(ValueError):
        channel_unavailable(full, "pigeon")


def test_text_to_html_escapes_and_links() -> None:
    out = text_to_html("A <b> & 'c'\nline two https://x.example/a?b=1&c=2.\n\n\nSecond para")
    assert "&lt;b&gt; &amp; &#x27;c&#x27;<br>" in out
    assert '<a href="https://x.example/a?b=1&amp;c=2">https://x.example/a?b=1&amp;c=2</a>.' in out
    assert out.count("<p>") == 2 and "<p>Second para</p>" in out
    assert "<script" not in text_to_html("<script>alert(1)</script>")
