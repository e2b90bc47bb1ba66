"""Recurly webhook authentication: the `recurly-signature` header of JSON webhooks.

Header: ``recurly-signature: <timestamp>,<hex>[,<hex>…]``. Each hex value is the HMAC-SHA256 of
``f"{timestamp}.{raw_body}"`` keyed with one of the endpoint's signature keys; during a key rotation
Recurly signs with the new and the old key for 24 hours, so the header carries several signatures and
BillOps accepts any signature made with any configured key (`BILLOPS_RECURLY_WEBHOOK_KEYS`).

Recurly documents the timestamp as milliseconds (its Ruby client reads it so) while its examples show
seconds: both are accepted, told apart by magnitude (≥ 10^11 is milliseconds: 10^11 seconds is in the
year 5138, 10^11 milliseconds in 1973). The timestamp must be within `webhook_tolerance_seconds` of now,
in either direction. A replayed request with a valid, fresh signature is accepted here and deduplicated
downstream on the event id; a replay of an old request is stale.

XML webhooks are not signed: they carry no `recurly-signature` header and are refused (400).

Every rejection is `WebhookRejected(status=400)` (not 401: the shared receive route adds an HTTP Basic
challenge to 401 answers, which means nothing to Recurly) with a message saying what was wrong; an
endpoint that is not configured is `NotFound` (404). The Python SDK has no verification helper, so this
uses `hmac` directly, comparing in constant time against every key and every signature.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from billops.config import Settings
from billops.errors import NotFound, WebhookRejected

HEADER = "recurly-signature"
MILLISECONDS_FROM = 10**11  # a timestamp at or above this is in milliseconds
MAX_SIGNATURES = 16  # Recurly sends one, or two during a rotation: more is not Recurly
_HEX = frozenset("0123456789abcdef")


def _malformed(why: str) -> WebhookRejected:
    return WebhookRejected(
        f"malformed {HEADER} header ({why}): expected '<timestamp>,<hex signature>[,<hex signature>…]'",
        status=400,
    )


def parse_header(header: str) -> tuple[str, float, list[str]]:
    """``"1700000000123,abc…,def…"`` -> (the timestamp as sent, the timestamp in seconds, signatures)."""
    parts = [p.strip() for p in header.split(",")]
    if len(parts) < 2:
        raise _malformed("no signature after the timestamp")
    raw_ts, signatures = parts[0], parts[1:]
    if not raw_ts or not raw_ts.isascii() or not raw_ts.isdigit() or len(raw_ts) > 16:
        raise _malformed("the timestamp is not a Unix time in seconds or milliseconds")
    if len(signatures) > MAX_SIGNATURES:
        raise _malformed(f"more than {MAX_SIGNATURES} signatures")
    for sig in signatures:
        if len(sig) != 64 or not set(sig.lower()) <= _HEX:
            raise _malformed("a signature is not 64 hexadecimal characters (HMAC-SHA256)")
    ts = int(raw_ts)
    seconds = ts / 1000 if ts >= MILLISECONDS_FROM else float(ts)
    return raw_ts, seconds, [s.lower() for s in signatures]


def signature(key: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 Recurly sends for `body` at `timestamp` (as written in the header)."""
    return hmac.new(key.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify(settings: Settings, endpoint: str, body: bytes, header: str | None) -> None:
    keys = settings.recurly_webhook_keys.get(endpoint)
    if not keys:
        raise NotFound(f"no Recurly webhook endpoint {endpoint!r} is configured")
    if header is None or not header.strip():
        raise WebhookRejected(
            f"missing {HEADER} header (BillOps accepts only signed JSON webhooks; XML webhooks are unsigned)",
            status=400,
        )
    raw_ts, seconds, given = parse_header(header)

    matched = False
    for key in keys:  # every key against every signature: the timing does not tell which matched
        expected = signature(key.get_secret_value(), raw_ts, body)
        for sig in given:
            matched |= hmac.compare_digest(expected, sig)
    if not matched:
        raise WebhookRejected(
            f"{HEADER} does not match any signature key configured for this endpoint", status=400
        )

    tolerance = settings.webhook_tolerance_seconds
    now = time.time()
    if seconds < now - tolerance:
        raise WebhookRejected(
            f"stale {HEADER} timestamp: signed {int(now - seconds)} s ago, "
            f"more than the {tolerance} s allowed",
            status=400,
        )
    if seconds > now + tolerance:
        raise WebhookRejected(
            f"{HEADER} timestamp is {int(seconds - now)} s in the future (more than {tolerance} s)",
            status=400,
        )
