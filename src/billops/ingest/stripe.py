"""Stripe webhook verification with the official SDK: `Stripe-Signature`, HMAC-SHA256 over
`{t}.{body}`, a 300 s tolerance (always passed explicitly: the SDK skips the check without one), and
several secrets per endpoint so a secret can be rolled without dropping events."""

from __future__ import annotations

import time

import stripe

from billops.config import Settings
from billops.errors import NotFound, WebhookRejected
from billops.ingest.body import decode_utf8


def verify(settings: Settings, endpoint: str, body: bytes, header: str | None) -> None:
    secrets = settings.stripe_webhook_secrets.get(endpoint)
    if not secrets:
        raise NotFound(f"no Stripe webhook endpoint {endpoint!r} is configured")
    if not header:
        raise WebhookRejected("missing Stripe-Signature header", status=400)
    payload = decode_utf8(body)  # the SDK signs text; Stripe sends UTF-8 (without a BOM)
    tolerance = settings.webhook_tolerance_seconds
    errors: list[str] = []
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret.get_secret_value(), tolerance)
            break
        except stripe.SignatureVerificationError as exc:
            errors.append(str(getattr(exc, "user_message", None) or exc))
    else:
        msg = " ".join(errors)
        if "tolerance" in msg:  # the signature matched a secret, but it is too old
            raise WebhookRejected(f"stale Stripe-Signature timestamp (older than {tolerance} s)", status=400)
        if "Unable to extract" in msg or "No signatures found with expected scheme" in msg:
            raise WebhookRejected("malformed Stripe-Signature header", status=400)
        raise WebhookRejected(
            "Stripe-Signature does not match any configured secret for this endpoint", status=400
        )
    # The SDK accepts any timestamp in the future; a signature from far ahead is as suspicious as a stale one.
    try:
        ts = int(next(p.split("=", 1)[1] for p in header.split(",") if p.startswith("t=")))
    except (StopIteration, ValueError) as exc:
        raise WebhookRejected("malformed Stripe-Signature header", status=400) from exc
    if ts > time.time() + tolerance:
        raise WebhookRejected("Stripe-Signature timestamp is in the future", status=400)
