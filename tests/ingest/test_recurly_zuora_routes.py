"""POST /webhooks/recurly/{endpoint} and /webhooks/zuora/{endpoint} through the real app: authentication
as each platform does it, nothing stored on any rejection, enrichment through the API before storing,
and redeliveries answered from the inbox without another API read."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.store.models import InboxEvent

FIXTURES = Path(__file__).parents[1] / "fixtures"
RKEY, RKEY_OLD = "recurly-route-key-0002-new", "recurly-route-key-0001-old"
ZCRED = "zuora:route-password-1234"
ZSECRET = "zuora-hmac-secret-0123456789"


def stored(client: Any) -> list[InboxEvent]:
    with client.rt.db.reader() as s:
        return list(s.scalars(sa.select(InboxEvent)))


@pytest.fixture
def app(database_url: str, settings_factory: Any, runtime_factory: Any) -> Iterator[TestClient]:
    from support.recurly_api import FakeRecurlyAPI

    with FakeRecurlyAPI() as api:
        api.seed_fixtures()
        settings = settings_factory(
            database_url,
            recurly_webhook_keys={"default": [RKEY, RKEY_OLD]},
            recurly_api_key=api.api_key,
            recurly_api_url=api.url,
            zuora_webhook_endpoints={
                "default": {"basic": [ZCRED]},
                "signed": {"hmac": {"secrets": [ZSECRET], "header": "X-Zuora-Signature"}},
            },
        )
        rt = runtime_factory(settings)
        with TestClient(create_app(settings, manage_runtime=False)) as c:
            c.rt = rt  # type: ignore[attr-defined]
            c.api = api  # type: ignore[attr-defined]
            yield c


# ---------------------------------------------------------------- Recurly


def recurly_body(name: str = "payment.failed") -> bytes:
    env = json.loads((FIXTURES / "recurly" / "webhooks" / f"{name}.json").read_text())
    env["id"] = f"r{uuid.uuid4().hex[:11]}"
    return json.dumps(env).encode()


def recurly_sig(body: bytes, key: str = RKEY, ts: int | None = None) -> str:
    t = str(ts if ts is not None else int(time.time() * 1000))
    return f"{t},{hmac.new(key.encode(), t.encode() + b'.' + body, hashlib.sha256).hexdigest()}"


def post_recurly(app: TestClient, body: bytes, sig: str | None) -> Any:
    headers = {"content-type": "application/json", **({"recurly-signature": sig} if sig else {})}
    return app.post("/webhooks/recurly/default", content=body, headers=headers)


def test_recurly_thin_event_is_enriched_before_it_is_stored(app: Any) -> None:
    body = recurly_body()
    r = post_recurly(app, body, recurly_sig(body))
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    [row] = stored(app)
    assert row.kind == "payment_failed" and row.payload == body.decode()
    assert row.canonical["invoice"]["id"] == "i1001adapast"
    assert row.canonical["attempt"]["decline"]["code"] == "insufficient_funds"
    assert row.canonical["customer"]["id"] == "a1ada7k2m9qx"
    reads = len(app.api.requests)

    # A redelivery (signed again, with the old key during a rotation) reads nothing more.
    again = post_recurly(app, body, recurly_sig(body, RKEY_OLD))
    assert again.json()["status"] == "duplicate"
    assert len(app.api.requests) == reads and len(stored(app)) == 1


@pytest.mark.parametrize(
    ("sig", "message"),
    [
        (None, "missing recurly-signature"),
        ("garbage", "malformed"),
        ("SIG_FORGED", "does not match"),
        ("SIG_STALE", "stale"),
    ],
)
def test_recurly_rejections_store_nothing(app: Any, sig: str | None, message: str) -> None:
    body = recurly_body()
    if sig == "SIG_FORGED":
        sig = recurly_sig(body, "someone-elses-key-000000")
    elif sig == "SIG_STALE":  # a replay of a once-valid request, 10 minutes later
        sig = recurly_sig(body, ts=int(time.time()) - 600)
    r = post_recurly(app, body, sig)
    assert 400 <= r.status_code < 500 and message in r.json()["error"], r.text
    assert stored(app) == [] and app.api.requests == []


def test_recurly_api_trouble_is_503_or_422_and_stores_nothing(app: Any) -> None:
    body = recurly_body()
    app.api.fail_next(503, method="GET")
    r = post_recurly(app, body, recurly_sig(body))
    assert r.status_code == 503 and "will redeliver" in r.json()["error"]
    env = json.loads(body)
    env["uuid"] = "ffffffffffffffffffffffffffffffff"  # a transaction Recurly does not have
    missing = json.dumps(env).encode()
    r = post_recurly(app, missing, recurly_sig(missing))
    assert r.status_code == 422, r.text
    assert stored(app) == []
    assert post_recurly(app, body, recurly_sig(body)).json()["status"] == "accepted"


def test_recurly_without_an_api_key_asks_for_a_redelivery(
    database_url: str, settings_factory: Any, runtime_factory: Any
) -> None:
    settings = settings_factory(database_url, recurly_webhook_keys={"default": [RKEY]})
    rt = runtime_factory(settings)
    with TestClient(create_app(settings, manage_runtime=False)) as c:
        c.rt = rt  # type: ignore[attr-defined]
        body = recurly_body()
        r = post_recurly(c, body, recurly_sig(body))
        assert r.status_code == 503 and "BILLOPS_RECURLY_API_KEY" in r.json()["error"]
        assert stored(c) == []


# ---------------------------------------------------------------- Zuora


def zuora_body(name: str = "payment_processed") -> dict[str, Any]:
    body = json.loads((FIXTURES / "zuora" / f"{name}.json").read_text())
    body["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body["eventId"] = f"zev-{uuid.uuid4().hex[:10]}"
    return body


def test_zuora_basic_auth_challenge_flow(app: Any) -> None:
    """Zuora sends Basic credentials only after a 401 challenge (unless preemptive is on)."""
    body = json.dumps(zuora_body()).encode()
    first = app.post("/webhooks/zuora/default", content=body)
    assert first.status_code == 401
    assert first.headers["www-authenticate"].startswith('Basic realm="billops-zuora"')
    assert stored(app) == []
    auth = "Basic " + base64.b64encode(ZCRED.encode()).decode()
    second = app.post("/webhooks/zuora/default", content=body, headers={"authorization": auth})
    assert second.status_code == 200 and second.json()["status"] == "accepted", second.text
    third = app.post("/webhooks/zuora/default", content=body, headers={"authorization": auth})
    assert third.json()["status"] == "duplicate"
    wrong = "Basic " + base64.b64encode(b"zuora:wrong-password-0000").decode()
    other = json.dumps(zuora_body()).encode()
    assert (
        app.post("/webhooks/zuora/default", content=other, headers={"authorization": wrong}).status_code
        == 401
    )
    assert len(stored(app)) == 1


def test_zuora_hmac_endpoint(app: Any) -> None:
    body = json.dumps(zuora_body()).encode()
    good = hmac.new(ZSECRET.encode(), body, hashlib.sha256).hexdigest()
    r = app.post("/webhooks/zuora/signed", content=body, headers={"x-zuora-signature": good})
    assert r.status_code == 200, r.text
    tampered = body.replace(b"PaymentProcessed", b"PaymentDeclined")
    r = app.post("/webhooks/zuora/signed", content=tampered, headers={"x-zuora-signature": good})
    assert r.status_code == 401 and r.json()["error"]
    assert app.post("/webhooks/zuora/signed", content=body).status_code == 401
    assert len(stored(app)) == 1


@pytest.mark.parametrize("platform", ["recurly", "zuora"])
def test_oversized_and_unknown_endpoints_store_nothing(app: Any, platform: str) -> None:
    big = b'{"padding": "' + b"x" * (600 * 1024) + b'"}'
    headers = {
        "content-type": "application/json",
        "authorization": "Basic " + base64.b64encode(ZCRED.encode()).decode(),
    }
    if platform == "recurly":
        headers["recurly-signature"] = recurly_sig(big)
    assert app.post(f"/webhooks/{platform}/default", content=big, headers=headers).status_code == 413
    body = recurly_body() if platform == "recurly" else json.dumps(zuora_body()).encode()
    if platform == "recurly":
        headers["recurly-signature"] = recurly_sig(body)
    assert app.post(f"/webhooks/{platform}/nope", content=body, headers=headers).status_code == 404
    if platform == "recurly":
        headers["recurly-signature"] = recurly_sig(b"{not json")
    r = app.post(f"/webhooks/{platform}/default", content=b"{not json", headers=headers)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert stored(app) == []
