"""`billops.ingest.recurly.verify`: the recurly-signature header (HMAC-SHA256 hex of "{timestamp}.{body}"),
several signatures and several keys during a rotation, seconds or milliseconds, tolerance both ways."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from billops.config import Settings
from billops.errors import NotFound, WebhookRejected
from billops.ingest.recurly import verify

KEY = "recurly-endpoint-key-0001-new"
OLD_KEY = "recurly-endpoint-key-0000-old"
OTHER_KEY = "some-other-endpoints-key-9999"
BODY = json.dumps(
    {
        "id": "rk1p0f4i1ed0",
        "object_type": "payment",
        "site_id": "s7bx2kq9m4pd",
        "event_type": "failed",
        "event_time": "2026-11-01T09:00:06Z",
        "uuid": "0c4f5e6d7a8b9c0d1e2f3a4b5c6d7e8f",
    }
).encode()


def settings(**keys: list[str]) -> Settings:
    return Settings(
        recurly_webhook_keys=keys or {"default": [KEY, OLD_KEY]},  # type: ignore[arg-type]
        webhook_tolerance_seconds=300,
    )


def sig(key: str, timestamp: str, body: bytes = BODY) -> str:
    """Computed independently of the code under test, exactly as Recurly documents it."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def now_s() -> str:
    return str(int(time.time()))


def now_ms() -> str:
    return str(int(time.time() * 1000))


def rejected(header: str | None, *, body: bytes = BODY, s: Settings | None = None) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as err:
        verify(s or settings(), "default", body, header)
    return err.value


def test_valid_signature_in_seconds_passes() -> None:
    ts = now_s()
    verify(settings(), "default", BODY, f"{ts},{sig(KEY, ts)}")


def test_valid_signature_in_milliseconds_passes() -> None:
    ts = now_ms()
    verify(settings(), "default", BODY, f"{ts},{sig(KEY, ts)}")


def test_upper_case_hex_and_spaces_are_accepted() -> None:
    ts = now_s()
    verify(settings(), "default", BODY, f" {ts} , {sig(KEY, ts).upper()} ")


def test_any_of_several_signatures_may_match() -> None:
    ts = now_ms()
    header = f"{ts},{sig(OTHER_KEY, ts)},{sig(KEY, ts)}"
    verify(settings(), "default", BODY, header)


def test_rotation_old_key_still_accepted_and_both_signatures_sent() -> None:
    ts = now_ms()
    s = settings(default=[OLD_KEY])  # the endpoint knows only the old key: Recurly sends new and old
    verify(s, "default", BODY, f"{ts},{sig(KEY, ts)},{sig(OLD_KEY, ts)}")
    s2 = settings(default=[KEY, OLD_KEY])  # both configured, only the new one signs
    verify(s2, "default", BODY, f"{ts},{sig(KEY, ts)}")


def test_keys_are_per_endpoint() -> None:
    ts = now_s()
    s = settings(shop=[KEY], billing=[OTHER_KEY])
    verify(s, "shop", BODY, f"{ts},{sig(KEY, ts)}")
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(s, "billing", BODY, f"{ts},{sig(KEY, ts)}")


def test_forged_signature_is_rejected() -> None:
    ts = now_s()
    err = rejected(f"{ts},{sig(OTHER_KEY, ts)}")
    assert err.status == 400
    assert "does not match any signature key" in err.message


def test_tampered_body_is_rejected() -> None:
    ts = now_s()
    err = rejected(f"{ts},{sig(KEY, ts)}", body=BODY.replace(b"failed", b"succeeded"))
    assert "does not match" in err.message


def test_timestamp_is_part_of_the_signature() -> None:
    ts = now_s()
    other = str(int(ts) - 1)
    err = rejected(f"{other},{sig(KEY, ts)}")
    assert "does not match" in err.message


def test_stale_timestamp_is_rejected_even_with_a_valid_signature() -> None:
    for ts in (str(int(time.time()) - 301), str(int(time.time() * 1000) - 301_000)):
        err = rejected(f"{ts},{sig(KEY, ts)}")
        assert err.status == 400
        assert "stale" in err.message


def test_replay_within_the_tolerance_passes_verification() -> None:
    # a replayed, valid and fresh request is accepted here and deduplicated downstream on the event id
    ts = str(int(time.time()) - 250)
    header = f"{ts},{sig(KEY, ts)}"
    verify(settings(), "default", BODY, header)
    verify(settings(), "default", BODY, header)


def test_future_timestamp_is_rejected() -> None:
    for ts in (str(int(time.time()) + 301), str(int(time.time() * 1000) + 301_000)):
        err = rejected(f"{ts},{sig(KEY, ts)}")
        assert "in the future" in err.message


def test_forgery_is_reported_before_staleness() -> None:
    ts = str(int(time.time()) - 10_000)
    assert "does not match" in rejected(f"{ts},{sig(OTHER_KEY, ts)}").message


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header_is_rejected(header: str | None) -> None:
    err = rejected(header)
    assert err.status == 400
    assert "missing recurly-signature" in err.message
    assert "XML" in err.message


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("1700000000", "no signature"),
        ("1700000000,", "not 64 hexadecimal"),
        ("t=1700000000,v1=" + "a" * 64, "timestamp"),
        ("abc," + "a" * 64, "timestamp"),
        ("-17," + "a" * 64, "timestamp"),
        ("17000000000000000000," + "a" * 64, "timestamp"),
        ("1700000000," + "z" * 64, "not 64 hexadecimal"),
        ("1700000000," + "a" * 63, "not 64 hexadecimal"),
        ("1700000000," + ",".join(["a" * 64] * 17), "more than 16"),
        ("１７００," + "a" * 64, "timestamp"),  # full-width digits are not ASCII digits
    ],
)
def test_malformed_header_is_rejected(header: str, why: str) -> None:
    err = rejected(header)
    assert err.status == 400
    assert "malformed recurly-signature" in err.message
    assert why in err.message


def test_unknown_endpoint_is_not_found() -> None:
    ts = now_s()
    with pytest.raises(NotFound, match="no Recurly webhook endpoint 'nope'"):
        verify(settings(), "nope", BODY, f"{ts},{sig(KEY, ts)}")


def test_body_bytes_are_signed_as_is() -> None:
    body = '{"id":"é"}'.encode()  # non-ASCII: signed over the raw bytes, not a re-encoding
    ts = now_s()
    verify(settings(), "default", body, f"{ts},{sig(KEY, ts, body)}")
