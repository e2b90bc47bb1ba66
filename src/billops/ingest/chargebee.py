"""Chargebee webhook authentication. Chargebee does not sign webhooks; it can send HTTP Basic
credentials per endpoint. BillOps requires them (an endpoint without credentials is not accepted),
compares them in constant time, accepts several during a rotation, and answers a missing or wrong
header with 401 and a `WWW-Authenticate` challenge."""

from __future__ import annotations

import base64
import binascii
import hmac

from billops.config import Settings
from billops.errors import NotFound, WebhookRejected

CHALLENGE = 'Basic realm="billops-chargebee", charset="UTF-8"'


def verify(settings: Settings, endpoint: str, header: str | None) -> None:
    creds = settings.chargebee_webhook_credentials.get(endpoint)
    if not creds:
        raise NotFound(f"no Chargebee webhook endpoint {endpoint!r} is configured")
    if not header:
        raise WebhookRejected("missing Authorization header (HTTP Basic)", status=401)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        raise WebhookRejected("Authorization is not HTTP Basic", status=401)
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookRejected("malformed HTTP Basic credentials", status=401) from exc
    ok = False
    for c in creds:  # every candidate is compared, so timing does not tell which one matched
        ok |= hmac.compare_digest(given, c.get_secret_value().encode("utf-8"))
    if not ok:
        raise WebhookRejected("HTTP Basic credentials do not match this endpoint", status=401)
