"""HTTP Basic credentials on a webhook (Chargebee, Zuora): compared in constant time against every
accepted `user:password` (several during a rotation); a missing, malformed or wrong header is a 401 that
the route answers with the platform's `WWW-Authenticate` challenge."""

from __future__ import annotations

import base64
import binascii
import hmac

from billops.errors import WebhookRejected


def check_basic(credentials: list[str], header: str | None) -> None:
    if not header:
        raise WebhookRejected("missing Authorization header (HTTP Basic)", status=401)
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        raise WebhookRejected("Authorization is not HTTP Basic", status=401)
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookRejected("malformed HTTP Basic credentials", status=401) from exc
    ok = False
    for cred in credentials:  # every candidate is compared: the timing does not tell which one matched
        ok |= hmac.compare_digest(given, cred.encode("utf-8"))
    if not ok:
        raise WebhookRejected("HTTP Basic credentials do not match this endpoint", status=401)
