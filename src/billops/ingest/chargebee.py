"""Chargebee webhook authentication. Chargebee does not sign webhooks; it can send HTTP Basic
credentials per endpoint. BillOps requires them (an endpoint without credentials is not accepted),
compares them in constant time, accepts several during a rotation, and answers a missing or wrong
header with 401 and a `WWW-Authenticate` challenge."""

from __future__ import annotations

from billops.config import Settings
from billops.errors import NotFound
from billops.ingest.basic_auth import check_basic

CHALLENGE = 'Basic realm="billops-chargebee", charset="UTF-8"'


def verify(settings: Settings, endpoint: str, header: str | None) -> None:
    creds = settings.chargebee_webhook_credentials.get(endpoint)
    if not creds:
        raise NotFound(f"no Chargebee webhook endpoint {endpoint!r} is configured")
    check_basic([c.get_secret_value() for c in creds], header)
