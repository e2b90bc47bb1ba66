"""SMS (Twilio REST shape) and Slack incoming webhooks delivered over real HTTP to local servers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from billops.actions.base import hashed_key
from billops.actions.slack import post_slack
from billops.actions.sms import is_opt_out_code, send_sms
from billops.errors import ConfigError, DeliveryError, InputError
from support.channels import Reply, ScriptedServer, free_port
from support.loopback import RecordedRequest

from .conftest import make_settings

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "twilio-auth-token-xyz"
MG = "MG0123456789abcdef0123456789abcdef"
PHONE = "+14155550123"
KEY = "stripe:evt_1Sms:send-sms"

Start = Callable[[Callable[[RecordedRequest], Reply]], ScriptedServer]


def _twilio_created(req: RecordedRequest) -> Reply:
    body = {
        "sid": "SM" + "1" * 32,
        "status": "accepted",
        "to": req.form.get("To"),
        "body": req.form.get("Body"),
    }
    return 201, json.dumps(body), "application/json"


def _sms_settings(tmp_path: Path, url: str, **kw: Any) -> Any:
    base = {
        "twilio_account_sid": SID,
        "twilio_auth_token": TOKEN,
        "twilio_messaging_service_sid": MG,
        "twilio_api_url": url,
        "http_timeout_seconds": 5,
    }
    return make_settings(tmp_path, **{**base, **kw})


def test_sms_sent_with_form_auth_and_no_pretend_idempotency(tmp_path: Path, http_server: Start) -> None:
    srv = http_server(_twilio_created)
    receipt = send_sms(
        _sms_settings(tmp_path, srv.url), to=PHONE, body="Your payment failed.", idempotency_key=KEY
    )
    [req] = srv.requests
    assert req.method == "POST" and req.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert req.form == {"To": PHONE, "Body": "Your payment failed.", "MessagingServiceSid": MG}
    assert req.basic_credentials == (SID, TOKEN)
    # Twilio's Messages API honours no idempotency key: none is sent, and the key never leaves the machine.
    assert req.header("I-Twilio-Idempotency-Token") is None and req.header("Idempotency-Key") is None
    assert KEY not in repr(req.headers) + req.body.decode() and hashed_key(KEY, 64) not in repr(req.headers)
    assert receipt.channel == "sms" and receipt.provider_id == "SM" + "1" * 32
    assert receipt.detail == {"status_code": 201, "status": "accepted"}


def test_sms_from_number_without_messaging_service(tmp_path: Path, http_server: Start) -> None:
    srv = http_server(_twilio_created)
    settings = _sms_settings(tmp_path, srv.url, twilio_messaging_service_sid=None, twilio_from="+15005550006")
    send_sms(settings, to=PHONE, body="Hi", idempotency_key=KEY)
    assert srv.requests[0].form == {"To": PHONE, "Body": "Hi", "From": "+15005550006"}


def test_sms_5xx_then_success_sends_the_same_request_again(tmp_path: Path, http_server: Start) -> None:
    srv = http_server(_twilio_created)
    srv.reply_with((500, '{"code": 20500, "message": "Internal Server Error"}', "application/json"))
    settings = _sms_settings(tmp_path, srv.url)
    with pytest.raises(DeliveryError) as err:
        send_sms(settings, to=PHONE, body="Hi", idempotency_key=KEY)
    assert err.value.retryable and err.value.channel == "sms" and err.value.code == "20500"
    send_sms(settings, to=PHONE, body="Hi", idempotency_key=KEY)  # the delivery step's retry
    assert [r.status for r in srv.requests] == [500, 201]
    assert len({r.body for r in srv.requests}) == 1  # the same message; Twilio cannot tell it is a retry


def test_sms_429_is_retryable(tmp_path: Path, http_server: Start) -> None:
    srv = http_server(lambda r: (429, '{"code": 20429, "message": "Too Many Requests"}', "application/json"))
    with pytest.raises(DeliveryError) as err:
        send_sms(_sms_settings(tmp_path, srv.url), to=PHONE, body="Hi", idempotency_key=KEY)
    assert err.value.retryable and err.value.code == "20429"


def test_sms_opted_out_recipient_is_permanent(tmp_path: Path, http_server: Start) -> None:
    body = {
        "code": 21610,
        "message": f"Attempt to send to unsubscribed recipient {PHONE}",
        "more_info": "https://www.twilio.com/docs/errors/21610",
        "status": 400,
    }
    srv = http_server(lambda r: (400, json.dumps(body), "application/json"))
    with pytest.raises(DeliveryError) as err:
        send_sms(_sms_settings(tmp_path, srv.url), to=PHONE, body="Hi", idempotency_key=KEY)
    assert not err.value.retryable and err.value.code == "21610"
    assert is_opt_out_code(err.value.code) and not is_opt_out_code("21211") and not is_opt_out_code(None)
    assert PHONE not in str(err.value)  # Twilio's message quotes the number: it is not copied


def test_sms_invalid_number_never_calls_out(tmp_path: Path, http_server: Start) -> None:
    srv = http_server(_twilio_created)
    settings = _sms_settings(tmp_path, srv.url)
    for bad in ("0612345678", "+0123456789", "+1234567", "+1234567890123456", "+1 415 555 0123"):
        with pytest.raises(DeliveryError) as err:
            send_sms(settings, to=bad, body="Hi", idempotency_key=KEY)
        assert err.value.code == "invalid-number" and not err.value.retryable
    with pytest.raises(InputError):
        send_sms(settings, to=PHONE, body="x" * 1601, idempotency_key=KEY)
    with pytest.raises(ConfigError):
        send_sms(make_settings(tmp_path), to=PHONE, body="Hi", idempotency_key=KEY)
    assert srv.requests == []


def test_sms_unreachable_is_retryable(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as err:
        send_sms(
            _sms_settings(tmp_path, f"http://127.0.0.1:{free_port()}"),
            to=PHONE,
            body="Hi",
            idempotency_key=KEY,
        )
    assert err.value.retryable and err.value.code == "connection"


# ------------------------------------------------------------------ Slack

SLACK_PATH = "/services/T000/B000/XXXXsecretXXXX"


def _slack_settings(tmp_path: Path, url: str, **kw: Any) -> Any:
    return make_settings(tmp_path, slack_webhook_url=url + SLACK_PATH, http_timeout_seconds=5, **kw)


def test_slack_posts_json(tmp_path: Path, http_server: Start) -> None:
    srv = http_server(lambda r: (200, "ok", "text/html"))
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Escalated* invoice ACME-1"}}]
    receipt = post_slack(_slack_settings(tmp_path, srv.url), text="Escalated: invoice ACME-1", blocks=blocks)
    [req] = srv.requests
    assert req.path == SLACK_PATH
    assert (req.header("content-type") or "").startswith("application/json")
    assert req.json == {"text": "Escalated: invoice ACME-1", "blocks": blocks}
    assert receipt.channel == "slack" and receipt.detail == {"status_code": 200, "body": "ok"}


def test_slack_500_retryable_then_ok(tmp_path: Path, http_server: Start) -> None:
    srv = http_server(lambda r: (200, "ok", "text/html"))
    srv.reply_with((500, "rollup_error", "text/html"))
    settings = _slack_settings(tmp_path, srv.url)
    with pytest.raises(DeliveryError) as err:
        post_slack(settings, text="hello")
    assert err.value.retryable and err.value.code == "rollup_error"
    post_slack(settings, text="hello")
    assert [r.status for r in srv.requests] == [500, 200]


@pytest.mark.parametrize(
    ("status", "body"),
    [(404, "no_service"), (410, "channel_is_archived"), (400, "invalid_payload"), (403, "action_prohibited")],
)
def test_slack_4xx_permanent(tmp_path: Path, http_server: Start, status: int, body: str) -> None:
    srv = http_server(lambda r: (status, body, "text/html"))
    with pytest.raises(DeliveryError) as err:
        post_slack(_slack_settings(tmp_path, srv.url), text="hello")
    assert not err.value.retryable and err.value.code == body and err.value.channel == "slack"
    assert "XXXXsecretXXXX" not in str(err.value)  # the webhook URL is a secret


def test_slack_unreachable_and_config(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as err:
        post_slack(_slack_settings(tmp_path, f"http://127.0.0.1:{free_port()}"), text="hello")
    assert err.value.retryable and "XXXXsecretXXXX" not in str(err.value)
    with pytest.raises(ConfigError):
        post_slack(make_settings(tmp_path), text="hello")
