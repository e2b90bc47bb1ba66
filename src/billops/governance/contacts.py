"""Contact preferences: the opt-out list every customer-facing message checks first.

An opt-out is per customer (platform + customer id) and channel: `email`, `sms`, or `all`. It is
written by the one-click unsubscribe link in every email (RFC 8058), by a provider telling us a number
opted out (Twilio error 21610, a STOP reply), by the API and by the CLI; each write is audited. The
guardrail `opt_out` (guardrails.check_action) blocks a message to an opted-out customer before anything
is drafted into a delivery.

Unsubscribe links carry a signed token (itsdangerous, keyed like the console cookies), so a link works
for the customer it was made for only and needs no login; a GET shows a confirmation button and only
the POST (the one-click request mail clients send) changes anything, so link scanners that prefetch
URLs never unsubscribe anyone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billops.config import Settings
from billops.errors import InputError, NotFound
from billops.governance import audit
from billops.store.models import ContactOptOut

Channel = Literal["all", "email", "sms"]
CHANNELS: tuple[str, ...] = ("all", "email", "sms")
_SALT = "billops-unsubscribe"


def opted_out(s: Session, platform: str, customer_id: str | None, channel: str) -> ContactOptOut | None:
    """The opt-out that stops `channel` for this customer (a channel's own or 'all'), if any."""
    if not customer_id:
        return None
    return s.scalar(
        sa.select(ContactOptOut)
        .where(
            ContactOptOut.platform == platform,
            ContactOptOut.customer_id == customer_id,
            ContactOptOut.channel.in_([channel, "all"]),
        )
        .order_by(ContactOptOut.at)
        .limit(1)
    )


def add_optout(
    s: Session,
    platform: str,
    customer_id: str,
    channel: str,
    *,
    source: str,
    by: str,
    why: str | None = None,
) -> bool:
    """Record an opt-out (audited). Returns False when it was already there (nothing changes)."""
    _check(platform, customer_id, channel)
    existing = s.scalar(
        sa.select(ContactOptOut).where(
            ContactOptOut.platform == platform,
            ContactOptOut.customer_id == customer_id,
            ContactOptOut.channel == channel,
        )
    )
    if existing is not None:
        return False
    try:
        with s.begin_nested():
            s.add(
                ContactOptOut(
                    platform=platform,
                    customer_id=customer_id,
                    channel=channel,
                    source=source,
                    by=by,
                    why=why,
                    at=datetime.now(UTC),
                )
            )
    except IntegrityError:  # another worker recorded the same opt-out a moment ago
        return False
    audit.record(
        s,
        action="contact.opted_out",
        actor_type="human" if source in ("api", "cli", "unsubscribe_link") else "system",
        actor=by,
        subject=f"{platform}:customer:{customer_id}",
        outcome={"channel": channel, "source": source, "why": why},
    )
    return True


def remove_optout(s: Session, platform: str, customer_id: str, channel: str, *, by: str, why: str) -> None:
    """Contact allowed again on `channel` (audited, with who and why: consent must be traceable)."""
    _check(platform, customer_id, channel)
    row = s.scalar(
        sa.select(ContactOptOut).where(
            ContactOptOut.platform == platform,
            ContactOptOut.customer_id == customer_id,
            ContactOptOut.channel == channel,
        )
    )
    if row is None:
        raise NotFound(f"{platform} customer {customer_id} has no {channel} opt-out")
    s.delete(row)
    audit.record(
        s,
        action="contact.opted_in",
        actor_type="human",
        actor=by,
        subject=f"{platform}:customer:{customer_id}",
        outcome={"channel": channel, "why": why, "was": {"source": row.source, "at": row.at.isoformat()}},
    )


def list_optouts(
    s: Session, *, platform: str | None = None, customer_id: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    q = sa.select(ContactOptOut).order_by(ContactOptOut.at.desc()).limit(limit)
    if platform:
        q = q.where(ContactOptOut.platform == platform)
    if customer_id:
        q = q.where(ContactOptOut.customer_id == customer_id)
    return [
        {
            "platform": r.platform,
            "customer_id": r.customer_id,
            "channel": r.channel,
            "source": r.source,
            "by": r.by,
            "why": r.why,
            "at": r.at.isoformat(),
        }
        for r in s.scalars(q)
    ]


def _check(platform: str, customer_id: str, channel: str) -> None:
    if channel not in CHANNELS:
        raise InputError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    if not platform or not customer_id:
        raise InputError("platform and customer id are required")


# ------------------------------------------------------------------ unsubscribe links


def _serializer(settings: Settings) -> URLSafeSerializer:
    from billops.web.security import console_key

    return URLSafeSerializer(console_key(settings), salt=_SALT)


def unsubscribe_token(settings: Settings, platform: str, customer_id: str, channel: str = "email") -> str:
    return str(_serializer(settings).dumps([platform, customer_id, channel]))


def unsubscribe_url(
    settings: Settings, platform: str, customer_id: str, channel: str = "email"
) -> str | None:
    """The one-click unsubscribe URL for an email, or None when no public URL is configured."""
    if not settings.public_url:
        return None
    token = unsubscribe_token(settings, platform, customer_id, channel)
    return f"{settings.public_url.rstrip('/')}/unsubscribe/{token}"


def read_unsubscribe_token(settings: Settings, token: str) -> tuple[str, str, str]:
    try:
        raw = _serializer(settings).loads(token)
    except BadSignature as exc:
        raise InputError("this unsubscribe link is not valid (it may have been cut or altered)") from exc
    if not (isinstance(raw, list) and len(raw) == 3 and all(isinstance(x, str) for x in raw)):
        raise InputError("this unsubscribe link is not valid")
    platform, customer_id, channel = raw
    return platform, customer_id, channel
