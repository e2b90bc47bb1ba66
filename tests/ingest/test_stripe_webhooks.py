"""POST /webhooks/stripe/{endpoint}: every way a request can be wrong is rejected with a clear 4xx and
stores nothing; a valid event is stored once and starts exactly one workflow."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.store.models import InboxEvent
from support.helpers import OLD_SECRET, SECRET, sign, wait_for, workflow_ids

FIXTURES = Path(__file__).parents[1] / "fixtures" / "stripe"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture
def client(database_url: str, settings_factory: Any, runtime_factory: Any) -> Any:
    settings = settings_factory(database_url, webhook_max_bytes=64 * 1024)
    rt = runtime_factory(settings)
    with TestClient(create_app(settings, manage_runtime=False)) as c:
        c.rt = rt  # type: ignore[attr-defined]
        yield c


def stored(client: Any) -> int:
    with client.rt.db.reader() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(InboxEvent)) or 0


def workflows(client: Any) -> list[str]:
    return workflow_ids(client.rt)


def post(client: Any, body: bytes, header: str | None, endpoint: str = "default", **headers: str) -> Any:
    h = {"content-type": "application/json", **headers}
    if header is not None:
        h["stripe-signature"] = header
    return client.post(f"/webhooks/stripe/{endpoint}", content=body, headers=h)


def unique_event(name: str = "customer.subscription.updated") -> dict[str, Any]:
    ev = fixture(name)
    ev["id"] = f"evt_test_{time.time_ns()}"
    return ev


def test_valid_event_is_stored_once_and_starts_one_workflow(client: Any) -> None:
    ev = unique_event()
    body, header = sign(ev)
    r = post(client, body, header)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "accepted"
    assert r.json()["workflow_id"] == f"stripe:{ev['id']}"
    assert stored(client) == 1
    with client.rt.db.reader() as s:
        row = s.scalar(sa.select(InboxEvent))
        assert row.payload == body.decode()  # raw body kept byte for byte
        assert row.canonical["kind"] == "subscription_updated"
    wait_for(lambda: f"stripe:{ev['id']}" in workflows(client))

    # Redelivery (Stripe retries on timeouts): 200, nothing new stored or started.
    body2, header2 = sign(ev)
    r2 = post(client, body2, header2)
    assert r2.status_code == 200 and r2.json()["status"] == "duplicate"
    assert stored(client) == 1
    assert workflows(client).count(f"stripe:{ev['id']}") == 1
    with client.rt.db.reader() as s:
        assert s.scalar(sa.select(InboxEvent.deliveries)) == 2


def test_rotated_secret_is_accepted(client: Any) -> None:
    body, header = sign(unique_event(), secret=OLD_SECRET)
    assert post(client, body, header).status_code == 200
    # During a roll Stripe sends one v1 per secret; either match is enough.
    ev = unique_event()
    body, h_new = sign(ev, secret=SECRET)
    _, h_bogus = sign(ev, secret="whsec_someone_else")
    both = h_bogus + "," + h_new.split(",")[1]
    assert post(client, body, both).status_code == 200
    assert stored(client) == 2


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("wrong_secret", 400, "does not match"),
        ("stale", 400, "stale"),
        ("future", 400, "future"),
        ("missing_header", 400, "missing Stripe-Signature"),
        ("garbled_header", 400, "malformed"),
        ("malformed_json", 400, "not valid JSON"),
        ("not_an_event", 422, ""),
        ("oversized", 413, "limit"),
        ("unknown_endpoint", 404, "no Stripe webhook endpoint"),
        ("not_utf8", 400, "UTF-8"),
    ],
)
def test_rejections_store_nothing(client: Any, case: str, status: int, message: str) -> None:
    ev = unique_event()
    endpoint = "default"
    if case == "wrong_secret":
        body, header = sign(ev, secret="whsec_forged")
    elif case == "stale":
        body, header = sign(ev, timestamp=int(time.time()) - 301)
    elif case == "future":
        body, header = sign(ev, timestamp=int(time.time()) + 3600)
    elif case == "missing_header":
        body, header = json.dumps(ev).encode(), None
    elif case == "garbled_header":
        body, header = json.dumps(ev).encode(), "v1=abc,t=notanumber"
    elif case == "malformed_json":
        body, header = sign('{"id": "evt_1", "type": ')
    elif case == "not_an_event":
        body, header = sign({"id": "evt_x", "hello": "world"})
    elif case == "oversized":
        ev["data"]["object"]["metadata"] = {"pad": "x" * 70_000}
        body, header = sign(ev)
    elif case == "unknown_endpoint":
        body, header = sign(ev)
        endpoint = "nope"
    else:
        body = b'{"id": "evt_\xff"}'
        header = "t=1,v1=00"
    r = post(client, body, header, endpoint=endpoint)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert stored(client) == 0
    assert workflows(client) == []


def test_oversized_without_content_length_is_cut_off(client: Any) -> None:
    ev = unique_event()
    ev["data"]["object"]["metadata"] = {"pad": "x" * 70_000}
    body, header = sign(ev)

    def chunks() -> Any:
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    r = client.post("/webhooks/stripe/default", content=chunks(), headers={"stripe-signature": header})
    assert r.status_code == 413
    assert stored(client) == 0


def test_health_metrics_and_openapi(client: Any) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    body, header = sign(unique_event())
    post(client, body, header)
    metrics = client.get("/metrics").text
    assert 'billops_webhooks_total{outcome="accepted",platform="stripe"}' in metrics
    assert "billops_webhook_seconds_bucket" in metrics
    spec = client.get("/openapi.json").json()
    assert "/webhooks/stripe/{endpoint}" in spec["paths"]
    assert client.get("/docs").status_code == 200
