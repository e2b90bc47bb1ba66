"""Email over SMTP with the standard library: one message with a plain-text and an HTML part, a
deterministic Message-ID per idempotency key and the one-click unsubscribe headers of RFC 8058.

Security modes (settings.smtp_security): "starttls" (port 587: plain connection upgraded with
STARTTLS; a server that does not offer STARTTLS is refused, never used in clear), "tls" (implicit
TLS, port 465) and "none" (a local relay on a trusted network). The server certificate is always
verified, against settings.smtp_ca_file when given (a private relay), else the system store."""

from __future__ import annotations

import html
import re
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import TYPE_CHECKING

from billops.actions.base import Receipt, hashed_key
from billops.errors import ConfigError, DeliveryError, InputError

if TYPE_CHECKING:
    from billops.config import Settings

CHANNEL = "email"
_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def text_to_html(text: str) -> str:
    """The HTML twin of a plain-text body: escaped, blank-line separated paragraphs, line breaks kept,
    http(s) URLs made into links. The text stays the source of truth; this only renders it."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()) if p.strip()]
    rendered = []
    for p in paragraphs:
        lines = [_linkify(line) for line in p.strip().split("\n")]
        rendered.append("<p>" + "<br>\n".join(lines) + "</p>")
    body = "\n".join(rendered)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
        '<body style="font-family: sans-serif; line-height: 1.5;">\n' + body + "\n</body></html>\n"
    )


def _linkify(line: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _URL.finditer(line):
        url = m.group(0).rstrip(_TRAILING)
        end = m.start() + len(url)
        out.append(html.escape(line[pos : m.start()]))
        out.append(f'<a href="{html.escape(url)}">{html.escape(url)}</a>')
        pos = end
    out.append(html.escape(line[pos:]))
    return "".join(out)


def message_id(idempotency_key: str, sender: str | None) -> str:
    """`<sha256(key)[:32]@sender-domain>`: the same workflow step always yields the same Message-ID,
    so a resend after a crash is recognisable (some mailbox providers show it only once), while
    the key itself (it names platform ids) never leaves the machine."""
    domain = _domain(sender) or "billops.invalid"
    return f"<{hashed_key(idempotency_key)}@{domain}>"


def _domain(sender: str | None) -> str | None:
    addr = parseaddr(sender or "")[1]
    _, at, domain = addr.rpartition("@")
    return domain.lower() if at and domain else None


def build_message(
    settings: Settings,
    *,
    to: str,
    subject: str,
    text: str,
    idempotency_key: str,
    unsubscribe_url: str | None,
    html_body: str | None = None,
    reply_to: str | None = None,
    unsubscribe_mailto: str | None = None,
    now: datetime | None = None,
) -> EmailMessage:
    """The message `send_email` sends (separate so it can be inspected without a server)."""
    if not settings.smtp_from:
        raise ConfigError("email: no sender address configured (BILLOPS_SMTP_FROM)")
    if not _ADDRESS.match(to):
        raise DeliveryError(
            "email: the recipient address is not a valid address [permanent]",
            channel=CHANNEL,
            retryable=False,
            code="invalid-address",
        )
    if "\n" in subject or "\r" in subject:
        raise InputError("email: the subject must be one line")
    if not subject.strip() or not text.strip():
        raise InputError("email: subject and text must not be empty")
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime((now or datetime.now(UTC)).astimezone(UTC), usegmt=True)
    msg["Message-ID"] = message_id(idempotency_key, settings.smtp_from)
    reply = reply_to or settings.smtp_reply_to
    if reply:
        msg["Reply-To"] = reply
    unsubscribe = []
    if unsubscribe_url:
        if not re.match(r"^https?://[^\s<>]+$", unsubscribe_url):
            raise InputError("email: the unsubscribe URL must be an http(s) URL without spaces")
        unsubscribe.append(f"<{unsubscribe_url}>")
    if unsubscribe_mailto:
        mailto = (
            unsubscribe_mailto if unsubscribe_mailto.startswith("mailto:") else f"mailto:{unsubscribe_mailto}"
        )
        if re.search(r"[\s<>]", mailto):
            raise InputError("email: the unsubscribe mailto must not contain spaces or angle brackets")
        unsubscribe.append(f"<{mailto}>")
    if unsubscribe:
        msg["List-Unsubscribe"] = ", ".join(unsubscribe)
    if unsubscribe_url:
        # RFC 8058: the receiver may POST this body to the URL to unsubscribe in one click.
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: auto-responders must not answer
    msg.set_content(text if text.endswith("\n") else text + "\n")
    msg.add_alternative(html_body if html_body is not None else text_to_html(text), subtype="html")
    return msg


def send_email(
    settings: Settings,
    *,
    to: str,
    subject: str,
    text: str,
    idempotency_key: str,
    unsubscribe_url: str | None,
    html: str | None = None,
    reply_to: str | None = None,
    unsubscribe_mailto: str | None = None,
) -> Receipt:
    """Send one email (one attempt) to `to`, a bare address (no display name: the customer's name is
    not needed to deliver and stays out of the headers). Raises DeliveryError(retryable=…) when the
    server or the network fails, ConfigError when email is not configured, InputError for a malformed
    message (a bug)."""
    if not settings.smtp_host:
        raise ConfigError("email: no SMTP host configured (BILLOPS_SMTP_HOST)")
    msg = build_message(
        settings,
        to=to,
        subject=subject,
        text=text,
        idempotency_key=idempotency_key,
        unsubscribe_url=unsubscribe_url,
        html_body=html,
        reply_to=reply_to,
        unsubscribe_mailto=unsubscribe_mailto,
    )
    sender = parseaddr(settings.smtp_from or "")[1]
    try:
        smtp = _connect(settings)
    except (smtplib.SMTPException, OSError) as exc:
        raise _delivery_error(exc) from None
    try:
        smtp.send_message(msg, from_addr=sender, to_addrs=[to])
    except (smtplib.SMTPException, OSError) as exc:
        raise _delivery_error(exc) from None
    finally:
        _close(smtp)
    return Receipt(
        channel=CHANNEL,
        provider_id=str(msg["Message-ID"]),
        detail={"smtp_host": settings.smtp_host, "security": settings.smtp_security},
    )


def _tls_context(settings: Settings) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(
            cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"email: cannot load BILLOPS_SMTP_CA_FILE {settings.smtp_ca_file}: {exc}") from exc


def _connect(settings: Settings) -> smtplib.SMTP:
    host, port, timeout = settings.smtp_host or "", settings.smtp_port, settings.smtp_timeout_seconds
    smtp: smtplib.SMTP
    if settings.smtp_security == "tls":
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=_tls_context(settings))
    else:
        context = _tls_context(settings) if settings.smtp_security == "starttls" else None
        smtp = smtplib.SMTP(host, port, timeout=timeout)
        if context is not None:
            try:
                smtp.ehlo()
                # SMTPNotSupportedError when the server offers no STARTTLS: never fall back to clear text.
                smtp.starttls(context=context)
                smtp.ehlo()
            except BaseException:
                _close(smtp)
                raise
    if settings.smtp_username:
        try:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            smtp.login(settings.smtp_username, password)
        except BaseException:
            _close(smtp)
            raise
    return smtp


def _close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _delivery_error(exc: BaseException) -> DeliveryError:
    """SMTP reply classes decide: 5xx is permanent (the server will answer the same next time), 4xx
    is transient. Network trouble is retryable; a certificate that does not verify or a missing
    STARTTLS/AUTH extension is a configuration problem and permanent. Messages never carry the
    recipient address (they reach logs and the audit log)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        code = codes[0] if codes else 550
        return _reply_error("the server refused the recipient", code)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return DeliveryError(
            f"email: the SMTP server does not support a required extension ({exc}) [permanent]",
            channel=CHANNEL,
            retryable=False,
            code="smtp-not-supported",
        )
    if isinstance(exc, smtplib.SMTPConnectError):
        return DeliveryError(
            f"email: the SMTP server refused the connection ({exc.smtp_code}) [retryable]",
            channel=CHANNEL,
            retryable=True,
            code=f"smtp-{exc.smtp_code}",
        )
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return _reply_error("authentication failed (BILLOPS_SMTP_USERNAME/PASSWORD)", exc.smtp_code)
    if isinstance(exc, smtplib.SMTPResponseException):
        what = {
            smtplib.SMTPSenderRefused: "the server refused the sender",
            smtplib.SMTPDataError: "the server refused the message",
            smtplib.SMTPHeloError: "the server refused the greeting",
        }.get(type(exc), "the server answered with an error")
        return _reply_error(what, exc.smtp_code)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DeliveryError(
            f"email: the SMTP server's certificate does not verify ({exc.verify_message}); "
            "set BILLOPS_SMTP_CA_FILE for a private CA [permanent]",
            channel=CHANNEL,
            retryable=False,
            code="tls-verify",
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return DeliveryError(
            "email: the SMTP server closed the connection without an answer; it may have taken the "
            "message [retryable]",
            channel=CHANNEL,
            retryable=True,
            code="no-answer",
        )
    if isinstance(exc, TimeoutError):
        return DeliveryError(
            "email: the SMTP server timed out [retryable]", channel=CHANNEL, retryable=True, code="timeout"
        )
    kind = type(exc).__name__
    return DeliveryError(
        f"email: SMTP connection failed ({kind}) [retryable]",
        channel=CHANNEL,
        retryable=True,
        code="connection",
    )


def _reply_error(what: str, code: int) -> DeliveryError:
    retryable = not 500 <= code < 600
    kind = "retryable" if retryable else "permanent"
    return DeliveryError(
        f"email: {what}: SMTP {code} [{kind}]", channel=CHANNEL, retryable=retryable, code=f"smtp-{code}"
    )
