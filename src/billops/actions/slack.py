"""Internal alerts through a Slack incoming webhook (escalations, permanent delivery failures).

The webhook URL is a secret (anyone holding it can post to the channel): it is kept as a SecretStr
and never appears in an error message or a log line."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

from billops.actions.base import USER_AGENT, Receipt, http_status_error, short, transport_error
from billops.errors import ConfigError, InputError

if TYPE_CHECKING:
    from billops.config import Settings

CHANNEL = "slack"
MAX_TEXT = 40_000  # Slack truncates longer messages
MAX_BLOCKS = 50  # Slack's limit per message


def post_slack(settings: Settings, *, text: str, blocks: list[dict[str, Any]] | None = None) -> Receipt:
    """Post one message (one attempt). `text` is always sent: it is the notification text and the
    fallback when `blocks` (Block Kit) are given. Slack answers 200 "ok"; errors are plain-text codes
    (invalid_payload, no_service, channel_is_archived, …) that become the DeliveryError code."""
    if settings.slack_webhook_url is None:
        raise ConfigError("slack: no incoming webhook configured (BILLOPS_SLACK_WEBHOOK_URL)")
    if not text.strip():
        raise InputError("slack: empty text")
    if len(text) > MAX_TEXT:
        raise InputError(f"slack: text of {len(text)} characters, the limit is {MAX_TEXT}")
    payload: dict[str, Any] = {"text": text}
    if blocks:
        if len(blocks) > MAX_BLOCKS:
            raise InputError(f"slack: {len(blocks)} blocks, the limit is {MAX_BLOCKS}")
        payload["blocks"] = blocks
    try:
        resp = httpx.post(
            settings.slack_webhook_url.get_secret_value(),
            content=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT},
            timeout=settings.http_timeout_seconds,
        )
    except httpx.TransportError as exc:
        raise transport_error(CHANNEL, "Slack", exc) from None
    if resp.is_success:
        return Receipt(
            channel=CHANNEL,
            provider_id=None,
            detail={"status_code": resp.status_code, "body": short(resp.text, 40)},
        )
    raise http_status_error(CHANNEL, "Slack", resp.status_code, short(resp.text, 60) or None)
