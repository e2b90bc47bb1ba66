"""What every sender shares: the `Receipt` it returns, whether a channel is configured, and the
small helpers that keep identifiers out of what leaves the machine (hashed idempotency keys).

Senders are plain synchronous functions. They do one attempt and raise `DeliveryError` with
`retryable` set; retries with backoff and the idempotency row per workflow step are the delivery
step's job (recovery/delivery.py), so a sender never sleeps and never touches the database."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from billops.errors import DeliveryError

if TYPE_CHECKING:
    from billops.config import Settings

CHANNELS = ("email", "sms", "slack", "webhook")
USER_AGENT = "billops"


@dataclass(frozen=True)
class Receipt:
    """Proof that a provider accepted a message. `detail` holds only technical facts (status code,
    provider status), never the message text or an address: it goes to the audit log."""

    channel: str  # "email" | "sms" | "slack" | "webhook"
    provider_id: str | None  # SMTP Message-ID, Twilio message SID, webhook-id
    detail: dict[str, Any] = field(default_factory=dict)


def channel_unavailable(settings: Settings, channel: str) -> str | None:
    """None when `channel` is configured, else the reason in words (recorded when a message is skipped,
    so an operator sees which setting is missing)."""
    if channel == "email":
        if not settings.smtp_host:
            return "no SMTP host configured (BILLOPS_SMTP_HOST)"
        if not settings.smtp_from:
            return "no sender address configured (BILLOPS_SMTP_FROM)"
        if settings.smtp_username and settings.smtp_password is None:
            return "SMTP user set without a password (BILLOPS_SMTP_PASSWORD)"
        return None
    if channel == "sms":
        if not settings.twilio_account_sid:
            return "no Twilio account configured (BILLOPS_TWILIO_ACCOUNT_SID)"
        if settings.twilio_auth_token is None:
            return "no Twilio auth token configured (BILLOPS_TWILIO_AUTH_TOKEN)"
        if not (settings.twilio_messaging_service_sid or settings.twilio_from):
            return "no Twilio sender configured (BILLOPS_TWILIO_MESSAGING_SERVICE_SID or BILLOPS_TWILIO_FROM)"
        return None
    if channel == "slack":
        if settings.slack_webhook_url is None:
            return "no Slack incoming webhook configured (BILLOPS_SLACK_WEBHOOK_URL)"
        return None
    if channel == "webhook":
        if not settings.outbound_webhooks:
            return "no outbound webhook endpoint configured (BILLOPS_OUTBOUND_WEBHOOKS)"
        return None
    raise ValueError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")


def hashed_key(idempotency_key: str, length: int = 32) -> str:
    """A stable digest of an idempotency key. The key names platform ids and the workflow; providers
    and message headers get only this digest, which still makes a resend recognisable."""
    return hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:length]


def short(text: str, limit: int = 120) -> str:
    """A provider's error text cut to fit in an error code or a log line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def http_status_error(
    channel: str, what: str, status: int, code: str | None, hint: str | None = None
) -> DeliveryError:
    """The shared HTTP mapping: 408, 425, 429 and 5xx are worth another try (the receiver is busy or
    down); every other 4xx is permanent (the request itself is wrong, sending it again changes nothing)."""
    retryable = status in (408, 425, 429) or status >= 500
    kind = "retryable" if retryable else "permanent"
    return DeliveryError(
        f"{channel}: {what} answered HTTP {status}"
        + (f" ({code})" if code else "")
        + (f": {hint}" if hint else "")
        + f" [{kind}]",
        channel=channel,
        retryable=retryable,
        code=code or f"http-{status}",
    )


def transport_error(channel: str, what: str, exc: httpx.TransportError) -> DeliveryError:
    """A timeout, refused connection or broken TLS: always retryable."""
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
    return DeliveryError(
        f"{channel}: {what} unreachable ({kind}: {type(exc).__name__}) [retryable]",
        channel=channel,
        retryable=True,
        code=kind,
    )
