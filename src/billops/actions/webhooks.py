"""Outbound webhooks to ticketing/CRM systems, signed per the Standard Webhooks spec
(https://www.standardwebhooks.com) with the `standardwebhooks` package, so a receiver verifies them
with any Standard Webhooks library.

- `webhook-id` is stable per workflow step (see `message_id`): a resend carries the same id and the
  receiver de-duplicates on it.
- `webhook-timestamp` is the time of this attempt (receivers refuse signatures older than ~5 minutes),
  while the envelope's `timestamp` is when the event happened and stays the same on a resend.
- `data` is validated against the event's model before anything is sent: a payload that does not
  match its documented schema is a bug (InputError), never delivered.

Status mapping (one attempt; the delivery step retries): 2xx delivered; 408, 425, 429 and 5xx
retryable; timeouts and connection errors retryable; every other status (3xx redirects are not
followed, 4xx including 409 and 410) permanent, code "http-<status>"."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import ValidationError
from standardwebhooks import Webhook

from billops.actions.base import USER_AGENT, Receipt, http_status_error, transport_error
from billops.actions.events import EVENT_MODELS, envelope
from billops.actions.settings import OutboundWebhook
from billops.errors import InputError

if TYPE_CHECKING:
    from billops.config import Settings

CHANNEL = "webhook"
_MSG_ID = re.compile(r"^[\x21-\x7e]{1,256}$")  # printable ASCII, no spaces: it goes in a header


def new_secret() -> str:
    """A fresh signing secret: 'whsec_' + base64 of 32 random bytes (`billops webhooks secret`)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def message_id(workflow_id: str, step: str) -> str:
    """A webhook-id stable per workflow step: 'msg_' + a digest of both, so resends share it."""
    return "msg_" + hashlib.sha256(f"{workflow_id}\x1f{step}".encode()).hexdigest()[:32]


def endpoints_for(settings: Settings, event_type: str) -> list[OutboundWebhook]:
    """The configured endpoints subscribed to `event_type`, in configuration order."""
    if event_type not in EVENT_MODELS:
        raise InputError(f"unknown webhook event {event_type!r}; known: {', '.join(EVENT_MODELS)}")
    return [e for e in settings.outbound_webhooks if event_type in e.events]


def build_request(
    endpoint: OutboundWebhook,
    *,
    event_type: str,
    msg_id: str,
    data: dict[str, Any],
    now: datetime | None = None,
    occurred_at: datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The exact body and headers `deliver_webhook` sends (validated and signed)."""
    model = EVENT_MODELS.get(event_type)
    if model is None:
        raise InputError(f"unknown webhook event {event_type!r}; known: {', '.join(EVENT_MODELS)}")
    if not _MSG_ID.match(msg_id):
        raise InputError("webhook: msg_id must be 1–256 printable ASCII characters without spaces")
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise InputError(f"webhook {event_type}: data does not match its schema: {problems}") from None
    sent_at = (now or datetime.now(UTC)).astimezone(UTC)
    body = json.dumps(
        envelope(event_type, parsed, occurred_at or sent_at), separators=(",", ":"), ensure_ascii=False
    )
    signature = Webhook(endpoint.secret.get_secret_value()).sign(msg_id, sent_at, body)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    return body.encode("utf-8"), headers


def deliver_webhook(
    endpoint: OutboundWebhook,
    *,
    event_type: str,
    msg_id: str,
    data: dict[str, Any],
    timeout: float,
    now: datetime | None = None,
    occurred_at: datetime | None = None,
) -> Receipt:
    """Deliver one event to one endpoint (one attempt). `now` is the signing time (default: the clock),
    `occurred_at` the envelope timestamp (default: `now`); pass the event's own time so resends
    carry the same body."""
    body, headers = build_request(
        endpoint, event_type=event_type, msg_id=msg_id, data=data, now=now, occurred_at=occurred_at
    )
    what = f"webhook endpoint {endpoint.name!r}"
    try:
        resp = httpx.post(
            endpoint.url, content=body, headers=headers, timeout=timeout, follow_redirects=False
        )
    except httpx.TransportError as exc:
        raise transport_error(CHANNEL, what, exc) from None
    if resp.is_success:
        return Receipt(
            channel=CHANNEL,
            provider_id=msg_id,
            detail={"status_code": resp.status_code, "endpoint": endpoint.name, "event": event_type},
        )
    raise http_status_error(CHANNEL, what, resp.status_code, None)
