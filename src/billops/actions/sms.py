"""SMS through the Twilio REST API shape (`POST /2010-04-01/Accounts/{sid}/Messages.json`).

Any server that speaks this shape works (Twilio itself, a regional proxy, the tests' local server):
point BILLOPS_TWILIO_API_URL at it. A messaging service (MG…) is preferred over a bare From number:
it handles sender pools, opt-out keywords and compliance per country.

No idempotency: Twilio's Messages API takes no idempotency key (`I-Twilio-Idempotency-Token` is a header
Twilio puts on the webhooks it sends to you, not one it honours on API requests), so a request sent twice
is two text messages. Nothing here pretends otherwise: the delivery step's row (recovery/delivery.py) is
what keeps a replay from sending again. After an attempt whose outcome is unknown (the worker died, or
the request timed out), `find_sent_sms` reads Twilio's message log first (a read before the write, as
for platforms without idempotency keys): a message already there is not sent again."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

from billops.actions.base import USER_AGENT, Receipt, http_status_error, transport_error
from billops.errors import ConfigError, DeliveryError, InputError

if TYPE_CHECKING:
    from billops.config import Settings

CHANNEL = "sms"
MAX_BODY = 1600  # Twilio refuses longer bodies (error 21617)
E164 = re.compile(r"^\+[1-9]\d{7,14}$")
# Twilio error codes meaning "this recipient must not be texted": 21610 = the number replied STOP.
OPT_OUT_CODES = frozenset({"21610"})


def is_opt_out_code(code: str | int | None) -> bool:
    """True when a Twilio error code says the recipient unsubscribed (replied STOP): the caller adds the
    customer to the opt-out list, and no retry will ever succeed."""
    return code is not None and str(code) in OPT_OUT_CODES


def send_sms(settings: Settings, *, to: str, body: str, idempotency_key: str) -> Receipt:
    """Send one SMS (one attempt). `to` must be E.164 (+ and 8–15 digits): anything else is a permanent
    DeliveryError("invalid-number") and nothing is sent. Twilio's JSON error `code` becomes the error
    code (21610: opted out, see `is_opt_out_code`; 21211: invalid number). `idempotency_key` is the
    delivery step's key; Twilio has no field for it (see above), so it does not leave the machine."""
    if not settings.twilio_account_sid or settings.twilio_auth_token is None:
        raise ConfigError("sms: no Twilio account configured (BILLOPS_TWILIO_ACCOUNT_SID, _AUTH_TOKEN)")
    if not (settings.twilio_messaging_service_sid or settings.twilio_from):
        raise ConfigError("sms: no sender (BILLOPS_TWILIO_MESSAGING_SERVICE_SID or BILLOPS_TWILIO_FROM)")
    if not body.strip():
        raise InputError("sms: empty body")
    if len(body) > MAX_BODY:
        raise InputError(f"sms: body of {len(body)} characters, the limit is {MAX_BODY}")
    if not E164.match(to):
        raise DeliveryError(
            "sms: the recipient number is not E.164 (+ and 8–15 digits) [permanent]",
            channel=CHANNEL,
            retryable=False,
            code="invalid-number",
        )
    sid = settings.twilio_account_sid
    url = f"{settings.twilio_api_url.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
    form = {"To": to, "Body": body}
    if settings.twilio_messaging_service_sid:
        form["MessagingServiceSid"] = settings.twilio_messaging_service_sid
    else:
        form["From"] = settings.twilio_from or ""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    try:
        resp = httpx.post(
            url,
            data=form,
            headers=headers,
            auth=(sid, settings.twilio_auth_token.get_secret_value()),
            timeout=settings.http_timeout_seconds,
        )
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.TimeoutException) as exc:
        raise transport_error(CHANNEL, "Twilio", exc) from None
    except httpx.TransportError as exc:  # the request went out and no answer came back
        raise DeliveryError(
            f"sms: Twilio closed the connection without an answer ({type(exc).__name__}); it may have "
            "taken the message [retryable]",
            channel=CHANNEL,
            retryable=True,
            code="no-answer",
        ) from None
    payload = _json(resp)
    if resp.is_success:
        return Receipt(
            channel=CHANNEL,
            provider_id=str(payload.get("sid")) if payload.get("sid") else None,
            detail={"status_code": resp.status_code, "status": payload.get("status")},
        )
    # Twilio's error "message" may quote the phone number: only the numeric code is kept.
    code = str(payload["code"]) if payload.get("code") is not None else None
    raise http_status_error(CHANNEL, "Twilio", resp.status_code, code, _HINTS.get(code or ""))


# Twilio's statuses of a message that will not reach the phone: sending again is right.
NOT_DELIVERED = frozenset({"failed", "undelivered", "canceled"})
CLOCK_SKEW = timedelta(minutes=5)


def find_sent_sms(settings: Settings, *, to: str, body: str, since: datetime) -> Receipt | None:
    """The message Twilio already holds for `to` with this body, created at or after `since` (less a few
    minutes of clock skew), among the newest 50 to that number; None when there is none. Used before a
    resend whose earlier attempt has no known outcome. Raises DeliveryError like `send_sms` (the caller
    then sends: at least once)."""
    if not settings.twilio_account_sid or settings.twilio_auth_token is None:
        raise ConfigError("sms: no Twilio account configured (BILLOPS_TWILIO_ACCOUNT_SID, _AUTH_TOKEN)")
    sid = settings.twilio_account_sid
    url = f"{settings.twilio_api_url.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
    try:
        resp = httpx.get(
            url,
            params={"To": to, "PageSize": "50"},
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            auth=(sid, settings.twilio_auth_token.get_secret_value()),
            timeout=settings.http_timeout_seconds,
        )
    except httpx.TransportError as exc:
        raise transport_error(CHANNEL, "Twilio", exc) from None
    payload = _json(resp)
    if not resp.is_success:
        code = str(payload["code"]) if payload.get("code") is not None else None
        raise http_status_error(CHANNEL, "Twilio", resp.status_code, code, _HINTS.get(code or ""))
    for m in payload.get("messages") or []:
        if not isinstance(m, dict) or m.get("to") != to or m.get("status") in NOT_DELIVERED:
            continue
        # A messaging service may append its opt-out text: the body we sent is a prefix.
        if not str(m.get("body") or "").startswith(body):
            continue
        try:
            created = parsedate_to_datetime(str(m.get("date_created") or ""))
        except (TypeError, ValueError):
            continue
        if created.tzinfo is not None and created >= since - CLOCK_SKEW:
            return Receipt(
                channel=CHANNEL,
                provider_id=str(m.get("sid")) if m.get("sid") else None,
                detail={"status": m.get("status"), "found_in_provider_log": True},
            )
    return None


_HINTS = {
    "21610": "the recipient replied STOP (add them to the opt-out list)",
    "21211": "invalid 'To' number",
    "21614": "'To' is not a mobile number",
    "21408": "SMS to this region is not enabled on the account",
}


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
