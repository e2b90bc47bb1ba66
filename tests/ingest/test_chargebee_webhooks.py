"""POST /webhooks/chargebee/{endpoint}: HTTP Basic per endpoint (constant-time, several credentials
during a rotation, 401 with a challenge), nothing stored on any rejection, one event stored once, and
a failed payment reaching a recorded shadow decision."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.store.models import Decision, InboxEvent
from support.helpers import wait_for

FIXTURES = Path(__file__).parents[1] / "fixtures" / "chargebee"
NEW, OLD = "billops:new-password-123", "billops:old-password-456"


def event(name: str = "payment_failed_insufficient_funds") -> dict[str, Any]:
    ev = json.loads((FIXTURES / f"{name}.json").read_text())
    ev["id"] = f"ev_test_{time.time_ns()}"
    return ev


def basic(cred: str) -> str:
    return "Basic " + base64.b64encode(cred.encode()).decode()


@pytest.fixture
def client(database_url: str, settings_factory: Any, runtime_factory: Any) -> Any:
    settings = settings_factory(
        database_url, chargebee_webhook_credentials={"default": [NEW, OLD]}, webhook_max_bytes=64 * 1024
    )
    rt = runtime_factory(settings)
    with TestClient(create_app(settings, manage_runtime=False)) as c:
        c.rt = rt  # type: ignore[attr-defined]
        yield c


def stored(client: Any) -> int:
    with client.rt.db.reader() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(InboxEvent)) or 0


def post(client: Any, body: bytes, auth: str | None, endpoint: str = "default") -> Any:
    headers = {"content-type": "application/json"}
    if auth is not None:
        headers["authorization"] = auth
    return client.post(f"/webhooks/chargebee/{endpoint}", content=body, headers=headers)


@pytest.mark.parametrize(
    ("auth", "status", "message"),
    [
        (None, 401, "missing Authorization"),
        ("Bearer abc", 401, "not HTTP Basic"),
        ("Basic !!!not-base64", 401, "malformed HTTP Basic"),
        (basic("billops:wrong-password-000"), 401, "do not match"),
        (basic("someone:new-password-123"), 401, "do not match"),
    ],
)
def test_bad_credentials_are_refused_with_a_challenge(
    client: Any, auth: str | None, status: int, message: str
) -> None:
    r = post(client, json.dumps(event()).encode(), auth)
    assert r.status_code == status and message in r.json()["error"]
    assert r.headers["www-authenticate"].startswith("Basic realm=")
    assert stored(client) == 0


def test_unknown_endpoint_and_malformed_bodies_store_nothing(client: Any) -> None:
    assert post(client, json.dumps(event()).encode(), basic(NEW), endpoint="nope").status_code == 404
    r = post(client, b"{not json", basic(NEW))
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = post(client, json.dumps({"hello": "world"}).encode(), basic(NEW))
    assert 400 <= r.status_code < 500 and r.json()["error"]
    big = json.dumps({**event(), "padding": "x" * 70_000}).encode()
    assert post(client, big, basic(NEW)).status_code == 413
    assert stored(client) == 0


def test_both_credentials_work_during_a_rotation_and_a_redelivery_is_a_duplicate(client: Any) -> None:
    ev = event("invoice_updated_paid")
    body = json.dumps(ev).encode()
    first = post(client, body, basic(NEW))
    assert first.status_code == 200 and first.json()["status"] == "accepted", first.text
    assert first.json()["workflow_id"] == f"chargebee:{ev['id']}"
    again = post(client, body, basic(OLD))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert stored(client) == 1


def test_a_failed_payment_becomes_a_shadow_decision(client: Any) -> None:
    ev = event("payment_failed_insufficient_funds")
    r = post(client, json.dumps(ev).encode(), basic(NEW))
    assert r.status_code == 200, r.text
    wf = r.json()["workflow_id"]

    def decided() -> Decision | None:
        with client.rt.db.reader() as s:
            return s.get(Decision, wf)

    d = wait_for(decided, timeout=30)
    assert d.platform == "chargebee" and d.mode == "shadow" and d.status == "recorded"
    assert d.decline_code == "insufficient_funds" and d.decline_category == "soft"
    assert d.invoice_id == ev["content"]["invoice"]["id"]
    assert d.amount == ev["content"]["transaction"]["amount"]


def test_credentials_must_be_user_and_a_long_password() -> None:
    from pydantic import ValidationError

    from billops.config import Settings

    with pytest.raises(ValidationError, match="at least 12 characters"):
        Settings(chargebee_webhook_credentials={"default": ["billops:short"]})
    with pytest.raises(ValidationError, match="has no credentials"):
        Settings(chargebee_webhook_credentials={"default": []})


# ---------------------------------------------------------------- re-fetching events through the API


@pytest.fixture
def refetching(database_url: str, settings_factory: Any, runtime_factory: Any) -> Any:
    from support.chargebee_api import FakeChargebeeAPI

    with FakeChargebeeAPI() as api:
        settings = settings_factory(
            database_url,
            chargebee_webhook_credentials={"default": [NEW]},
            chargebee_site=api.site,
            chargebee_api_key=api.api_key,
            chargebee_api_url=api.url,
            chargebee_refetch_events=True,
        )
        rt = runtime_factory(settings)
        with TestClient(create_app(settings, manage_runtime=False)) as c:
            c.rt = rt  # type: ignore[attr-defined]
            c.api = api  # type: ignore[attr-defined]
            yield c


def test_refetch_trusts_the_api_copy_not_the_delivered_one(refetching: Any) -> None:
    api = refetching.api
    ev = event("payment_failed_insufficient_funds")
    api.seed_event(ev)  # what Chargebee really sent
    forged = json.loads(json.dumps(ev))
    forged["content"]["transaction"]["amount"] = 1  # a tampered copy with valid credentials
    r = post(refetching, json.dumps(forged).encode(), basic(NEW))
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    [fetch] = api.find("GET", rf"/events/{ev['id']}$")
    assert fetch.basic_user == api.api_key
    with refetching.rt.db.reader() as s:
        row = s.scalar(sa.select(InboxEvent))
        assert row.canonical["attempt"]["amount"] == ev["content"]["transaction"]["amount"]

    # A redelivery is answered from the inbox, without another API read.
    again = post(refetching, json.dumps(forged).encode(), basic(NEW))
    assert again.json()["status"] == "duplicate"
    assert len(api.find("GET", rf"/events/{ev['id']}$")) == 1
    assert stored(refetching) == 1


def test_refetch_refuses_an_event_chargebee_does_not_know(refetching: Any) -> None:
    r = post(refetching, json.dumps(event()).encode(), basic(NEW))  # never seeded in the API
    assert r.status_code == 422 and "chargebee API" in r.json()["error"]
    assert stored(refetching) == 0


def test_refetch_with_the_api_down_stores_nothing_and_asks_for_a_redelivery(refetching: Any) -> None:
    api = refetching.api
    ev = event()
    api.seed_event(ev)
    api.fail_next(503, path_pattern=r"/events/")
    r = post(refetching, json.dumps(ev).encode(), basic(NEW))
    assert r.status_code == 503 and "will redeliver" in r.json()["error"]
    assert stored(refetching) == 0
    assert post(refetching, json.dumps(ev).encode(), basic(NEW)).json()["status"] == "accepted"
    assert stored(refetching) == 1
