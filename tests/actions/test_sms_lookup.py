"""Twilio's Messages API takes no idempotency key, so after an attempt whose outcome is unknown BillOps
reads Twilio's message log before sending again (`find_sent_sms`), against a local fake of the two
calls (tests/support/twilio_api.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from billops.actions.sms import find_sent_sms, send_sms
from billops.errors import DeliveryError
from support.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioAPI

from .conftest import make_settings

PHONE = "+351912345678"
MG = "MG0123456789abcdef0123456789abcdef"


@pytest.fixture
def twilio() -> Iterator[FakeTwilioAPI]:
    with FakeTwilioAPI() as api:
        yield api


def settings(tmp_path: Path, url: str, **kw: Any) -> Any:
    base = {"twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": AUTH_TOKEN,
            "twilio_messaging_service_sid": MG, "twilio_api_url": url, "http_timeout_seconds": 5}  # fmt: skip
    return make_settings(tmp_path, **{**base, **kw})


def test_like_twilio_the_fake_texts_twice_when_asked_twice(tmp_path: Path, twilio: FakeTwilioAPI) -> None:
    s = settings(tmp_path, twilio.url)
    first = send_sms(s, to=PHONE, body="Your payment failed.", idempotency_key="wf:1:send_sms")
    second = send_sms(s, to=PHONE, body="Your payment failed.", idempotency_key="wf:1:send_sms")
    assert first.provider_id != second.provider_id and len(twilio.messages) == 2


def test_a_message_twilio_took_before_the_answer_was_lost_is_found(
    tmp_path: Path, twilio: FakeTwilioAPI
) -> None:
    s = settings(tmp_path, twilio.url)
    started = datetime.now(UTC)
    twilio.lose_answer_next()
    with pytest.raises(DeliveryError) as info:
        send_sms(s, to=PHONE, body="Your payment failed. Reply STOP to opt out.", idempotency_key="k")
    assert info.value.retryable and info.value.code == "no-answer"  # it may have been taken

    found = find_sent_sms(s, to=PHONE, body="Your payment failed. Reply STOP to opt out.", since=started)
    assert found is not None and found.provider_id == twilio.messages[0]["sid"]
    assert found.detail["found_in_provider_log"] is True
    [lookup] = twilio.find("GET", r"/Messages\.json$")
    assert lookup.params == {"To": PHONE, "PageSize": "50"}
    assert lookup.basic_credentials == (ACCOUNT_SID, AUTH_TOKEN)


def test_other_bodies_numbers_older_or_failed_messages_do_not_count(
    tmp_path: Path, twilio: FakeTwilioAPI
) -> None:
    s = settings(tmp_path, twilio.url)
    send_sms(s, to=PHONE, body="Another message.", idempotency_key="a")
    send_sms(s, to="+351900000000", body="Your payment failed.", idempotency_key="b")
    send_sms(s, to=PHONE, body="Your payment failed.", idempotency_key="c")
    twilio.messages[-1]["status"] = "undelivered"
    assert find_sent_sms(s, to=PHONE, body="Your payment failed.", since=datetime.now(UTC)) is None
    twilio.messages[-1]["status"] = "delivered"
    later = datetime.now(UTC) + timedelta(hours=1)  # the message is older than the first attempt
    assert find_sent_sms(s, to=PHONE, body="Your payment failed.", since=later) is None
    assert find_sent_sms(s, to=PHONE, body="Your payment failed.", since=datetime.now(UTC)) is not None


def test_a_lookup_that_fails_raises_so_the_caller_sends(tmp_path: Path, twilio: FakeTwilioAPI) -> None:
    with pytest.raises(DeliveryError) as info:
        find_sent_sms(settings(tmp_path, twilio.url, twilio_auth_token="wrong"), to=PHONE, body="x",
                      since=datetime.now(UTC))  # fmt: skip
    assert not info.value.retryable and info.value.code == "20003"
