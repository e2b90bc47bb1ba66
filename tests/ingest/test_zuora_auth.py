"""Zuora callout authentication (`billops.ingest.zuora.verify`): HTTP Basic (constant time, rotation,
401 + challenge), HMAC the way a Zuora callout template signs (algorithm, HEX/BASE64, signed-data
template, header name and prefix, several secrets, freshness of the signed timestamp), and both."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from billops.config import Settings, ZuoraEndpoint, ZuoraHmac
from billops.errors import NotFound, WebhookRejected
from billops.ingest.zuora import CHALLENGE, render_signed_data, verify

FIXTURE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "zuora" / "payment_declined_insufficient_funds.json"
)
USER_NEW, USER_OLD = "zuora:new-password-0123", "zuora:old-password-4567"
SECRET_NEW, SECRET_OLD = "hmac-secret-new-0123456789", "hmac-secret-old-9876543210"
HEADER = "X-BillOps-Signature"


def settings(**endpoints: dict[str, Any]) -> Settings:
    return Settings(
        zuora_webhook_endpoints={k: ZuoraEndpoint.model_validate(v) for k, v in endpoints.items()},
        webhook_tolerance_seconds=300,
    )


def basic(cred: str) -> str:
    return "Basic " + base64.b64encode(cred.encode()).decode()


def body(ts: Any = None, **changes: Any) -> bytes:
    payload = json.loads(FIXTURE.read_text(encoding="utf-8"))
    payload["timestamp"] = datetime.now(UTC).isoformat() if ts is None else ts
    payload.update(changes)
    return json.dumps(payload, indent=2).encode()


def sign(data: bytes, secret: str = SECRET_NEW, algo: str = "sha256", encoding: str = "hex") -> str:
    mac = hmac.new(secret.encode(), data, getattr(hashlib, algo)).digest()
    return mac.hex() if encoding == "hex" else base64.b64encode(mac).decode()


def rejected(s: Settings, raw: bytes, headers: dict[str, str], endpoint: str = "default") -> WebhookRejected:
    with pytest.raises(WebhookRejected) as err:
        verify(s, endpoint, raw, headers)
    return err.value


HMAC = {"hmac": {"secrets": [SECRET_NEW, SECRET_OLD]}}


# ---------------------------------------------------------------- endpoint


def test_unknown_endpoint() -> None:
    with pytest.raises(NotFound) as err:
        verify(settings(default={"basic": [USER_NEW]}), "other", b"{}", {})
    assert err.value.status == 404 and "'other'" in err.value.message


def test_challenge_is_a_basic_realm() -> None:
    assert CHALLENGE == 'Basic realm="billops-zuora", charset="UTF-8"'


# ---------------------------------------------------------------- HTTP Basic


def test_basic_accepts_every_credential_of_a_rotation() -> None:
    s = settings(default={"basic": [USER_NEW, USER_OLD]})
    verify(s, "default", body(), {"authorization": basic(USER_NEW)})
    verify(s, "default", body(), {"Authorization": basic(USER_OLD)})  # header names in any case


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing Authorization header (HTTP Basic)"),
        (basic("zuora:wrong-password-000"), "HTTP Basic credentials do not match this endpoint"),
        (basic("zuora"), "HTTP Basic credentials do not match this endpoint"),
        ("Bearer abc", "Authorization is not HTTP Basic"),
        ("Basic !!!not-base64", "malformed HTTP Basic credentials"),
        ("Basic ", "Authorization is not HTTP Basic"),
    ],
)
def test_basic_rejections_are_401(header: str | None, message: str) -> None:
    s = settings(default={"basic": [USER_NEW]})
    err = rejected(s, body(), {"authorization": header} if header is not None else {})
    assert (err.status, err.message) == (401, message)


# ---------------------------------------------------------------- HMAC


def test_hmac_over_the_raw_body() -> None:
    raw = body()
    verify(settings(default=HMAC), "default", raw, {HEADER: sign(raw)})
    verify(settings(default=HMAC), "default", raw, {HEADER.lower(): sign(raw).upper()})  # hex in any case


def test_hmac_rotation_accepts_the_old_secret() -> None:
    raw = body()
    verify(settings(default=HMAC), "default", raw, {HEADER: sign(raw, SECRET_OLD)})


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda raw, sig: (raw.replace(b"49.99", b"0.01"), sig), "does not match any configured HMAC secret"),
        (
            lambda raw, sig: (raw, sign(raw, "some-other-secret-000000")),
            "does not match any configured HMAC secret",
        ),
        (lambda raw, sig: (raw, sign(raw, algo="sha1")), "wrong length for an HMAC-SHA256"),
        (lambda raw, sig: (raw, ""), f"missing {HEADER} header"),
    ],
)
def test_hmac_forged(tamper: Any, message: str) -> None:
    raw = body()
    raw, sig = tamper(raw, sign(raw))
    err = rejected(settings(default=HMAC), raw, {HEADER: sig})
    assert err.status == 401 and message in err.message


def test_hmac_in_another_header_is_missing() -> None:
    raw = body()
    err = rejected(settings(default=HMAC), raw, {"X-Zuora-Signature": sign(raw)})
    assert (err.status, err.message) == (401, f"missing {HEADER} header (HMAC signature)")


@pytest.mark.parametrize(
    "ts",
    [
        lambda now: now.isoformat(),  # ISO 8601, UTC
        lambda now: now.astimezone(timezone(timedelta(hours=-8))).isoformat(
            timespec="milliseconds"
        ),  # Zuora's
        lambda now: int(now.timestamp()),  # Unix seconds
        lambda now: str(int(now.timestamp() * 1000)),  # Unix milliseconds, as text
        lambda now: int(now.timestamp() * 1000),
    ],
)
def test_hmac_timestamp_formats(ts: Any) -> None:
    raw = body(ts(datetime.now(UTC) - timedelta(seconds=30)))
    verify(settings(default=HMAC), "default", raw, {HEADER: sign(raw)})


@pytest.mark.parametrize(
    ("shift", "message"),
    [(-400, "stale callout: timestamp"), (400, "is in the future")],
)
def test_hmac_stale_or_future(shift: int, message: str) -> None:
    raw = body((datetime.now(UTC) + timedelta(seconds=shift)).isoformat())
    err = rejected(settings(default=HMAC), raw, {HEADER: sign(raw)})
    assert err.status == 401 and message in err.message and "tolerance 300 s" in err.message


def test_stale_milliseconds_are_stale_too() -> None:
    raw = body(int((time.time() - 3600) * 1000))
    assert "stale" in rejected(settings(default=HMAC), raw, {HEADER: sign(raw)}).message


@pytest.mark.parametrize(
    ("raw", "sig", "message"),
    [
        (b"\xff\xfe not utf-8", None, "body is not UTF-8"),
        (b"{not json", None, "body is not valid JSON"),
        (None, "zz-not-hex", f"{HEADER} is not a hex signature"),
    ],
)
def test_hmac_malformed_is_400(raw: bytes | None, sig: str | None, message: str) -> None:
    raw = raw if raw is not None else body()
    err = rejected(settings(default=HMAC), raw, {HEADER: sig if sig is not None else sign(raw)})
    assert err.status == 400 and message in err.message


@pytest.mark.parametrize(
    ("ts", "message"),
    [("", "the body has no 'timestamp' field"), ("next tuesday", "unreadable event time: timestamp")],
)
def test_hmac_unreadable_timestamp_is_400(ts: str, message: str) -> None:
    raw = body(ts)
    err = rejected(settings(default=HMAC), raw, {HEADER: sign(raw)})
    assert err.status == 400 and message in err.message


def test_hmac_with_prefix_base64_and_sha512() -> None:
    config = {"hmac": {"secrets": [SECRET_NEW], "header": "Authorization-HMAC", "algorithm": "sha512",
                       "encoding": "base64", "prefix": "HMAC-SHA512 "}}  # fmt: skip
    raw = body()
    sig = sign(raw, algo="sha512", encoding="base64")
    verify(settings(default=config), "default", raw, {"authorization-hmac": f"HMAC-SHA512 {sig}"})
    err = rejected(settings(default=config), raw, {"authorization-hmac": sig})
    assert err.status == 401 and "does not start with the configured prefix 'HMAC-SHA512 '" in err.message


def test_hmac_over_merge_fields() -> None:
    """Zuora hmacData `{{DataSource.Payment.Id}}|{{DataSource.Payment.UpdatedDate}}` is BillOps'
    `{payment.id}|{timestamp}` when the body carries those merge fields as payment.id and timestamp."""
    config = {
        "hmac": {"secrets": [SECRET_NEW], "data_template": "{payment.id}|{timestamp}", "algorithm": "sha384"}
    }
    ts = datetime.now(UTC).isoformat()
    raw = body(ts)
    signed = f"8ad09be48db5aa7a018f3a5b6c7d0101|{ts}".encode()
    assert render_signed_data("{payment.id}|{timestamp}", raw, json.loads(raw)) == signed
    verify(settings(default=config), "default", raw, {HEADER: sign(signed, algo="sha384")})
    err = rejected(
        settings(default=config), body(ts, payment={"amount": "1"}), {HEADER: sign(signed, algo="sha384")}
    )
    assert (err.status, err.message) == (401, "the signed field 'payment.id' is missing from the body")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[" * 5000 + b"]" * 5000, "nests arrays and objects more than 64 levels deep"),
        (b"{not json", "is not valid JSON"),
        ('{"payment": {"id": "x"}}'.encode("utf-16"), "is not UTF-8"),
    ],
)
def test_hmac_over_fields_cannot_authenticate_an_unreadable_body(raw: bytes, message: str) -> None:
    """A template that signs body fields needs the body parsed before the signature can be checked:
    an unreadable body is unauthenticated (401), whatever the header says, never a parse error first."""
    config = {"hmac": {"secrets": [SECRET_NEW], "data_template": "{payment.id}|{timestamp}"}}
    err = rejected(settings(default=config), raw, {HEADER: sign(b"anything")})
    assert err.status == 401 and f"cannot check {HEADER}" in err.message and message in err.message


def test_hmac_over_the_raw_body_is_checked_before_parsing() -> None:
    """The default template signs the raw bytes: junk with a wrong signature is a 401 (not a parse
    error), and a correctly signed body that is not JSON is a 400 (authenticated, then refused)."""
    deep = b"[" * 5000 + b"]" * 5000
    err = rejected(settings(default=HMAC), deep, {HEADER: sign(b"something else")})
    assert err.status == 401 and "does not match" in err.message
    err = rejected(settings(default=HMAC), deep, {HEADER: sign(deep)})
    assert err.status == 400 and "nests arrays and objects more than 64 levels deep" in err.message


def test_signed_data_template_literals() -> None:
    assert (
        render_signed_data("{{literal}}:{a}:{b.c}:{n}", b"", {"a": "x", "b": {"c": "y"}, "n": 5})
        == b"{literal}:x:y:5"
    )
    assert render_signed_data("v1 {body}", b'{"k": 1}', None) == b'v1 {"k": 1}'


def test_hmac_without_freshness_check() -> None:
    config = {"hmac": {"secrets": [SECRET_NEW], "timestamp_field": None}}
    raw = body("2020-01-01T00:00:00Z")
    verify(settings(default=config), "default", raw, {HEADER: sign(raw)})


# ---------------------------------------------------------------- both


def test_basic_and_hmac_must_both_pass() -> None:
    s = settings(default={"basic": [USER_NEW], **HMAC})
    raw = body()
    good = {"Authorization": basic(USER_NEW), HEADER: sign(raw)}
    verify(s, "default", raw, good)
    err = rejected(s, raw, {HEADER: sign(raw)})  # Zuora's first, non-preemptive try: no credentials yet
    assert (err.status, err.message) == (401, "missing Authorization header (HTTP Basic)")
    err = rejected(s, raw, {"Authorization": basic(USER_NEW), HEADER: sign(raw, "some-other-secret-000000")})
    assert err.status == 401 and "HMAC" in err.message
    err = rejected(s, raw, {"Authorization": basic(USER_OLD), HEADER: sign(raw)})
    assert err.status == 401 and "HTTP Basic" in err.message


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"secrets": ["short"]}, "at least 16 characters"),
        ({"secrets": [SECRET_NEW], "algorithm": "md5"}, "algorithm"),
        ({"secrets": [SECRET_NEW], "data_template": "{payment.id}"}, "must sign the timestamp"),
        ({"secrets": [SECRET_NEW], "data_template": "constant"}, "signs nothing"),
        ({"secrets": [SECRET_NEW], "encoding": "base32"}, "encoding"),
    ],
)
def test_hmac_settings_are_validated(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ZuoraHmac.model_validate(config)


def test_endpoint_needs_some_auth() -> None:
    with pytest.raises(ValidationError, match="needs `basic` credentials, `hmac`, or both"):
        ZuoraEndpoint.model_validate({})
    with pytest.raises(ValidationError, match="12\\+ characters"):
        ZuoraEndpoint.model_validate({"basic": ["zuora:short"]})
