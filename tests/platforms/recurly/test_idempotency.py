"""Recurly keeps no idempotency keys, and the fake Recurly API does not pretend to: a write sent twice is
applied twice. Every write the recovery makes, replayed with the same key `<workflow id>:<step>` as a DBOS
replay of the step would, is kept to one by BillOps's at-most-once ledger (platforms/ledger.py): the
second call sends no write at all and returns the stored result."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from billops.domain import Money
from billops.errors import PlatformError
from billops.platforms.ledger import WriteLedger
from billops.platforms.recurly.client import RecurlyPlatformClient
from billops.store import Database
from support.recurly_api import API_VERSION, FakeRecurlyAPI

pytestmark = pytest.mark.slow

ADA, PAST_DUE, SUB = "a1ada7k2m9qx", "i1001adapast", "s1adapro0001"
WF = "recurly:evt_replay_1"


@pytest.fixture
def api() -> Iterator[FakeRecurlyAPI]:
    with FakeRecurlyAPI() as server:
        server.seed_fixtures()
        yield server


@pytest.fixture
def ledger(tmp_path: Path) -> WriteLedger:
    db = Database(f"sqlite:///{tmp_path}/ledger.db")
    db.migrate()
    return WriteLedger(db)


@pytest.fixture
def client(api: FakeRecurlyAPI, ledger: WriteLedger) -> RecurlyPlatformClient:
    return RecurlyPlatformClient(api.api_key, api_url=api.url, ledger=ledger, timeout=5)


def test_the_fake_like_recurly_ignores_idempotency_keys(api: FakeRecurlyAPI) -> None:
    auth = base64.b64encode(f"{api.api_key}:".encode()).decode()
    headers = {
        "Authorization": f"Basic {auth}",
        "Accept": f"application/vnd.recurly.{API_VERSION}",
        "Idempotency-Key": "k-note-1",
    }
    for _ in range(2):
        r = httpx.post(f"{api.url}/accounts/{ADA}/notes", json={"message": "hello"}, headers=headers)
        assert r.status_code in (200, 201)
        assert "idempotent-replayed" not in r.headers
    assert [n["message"] for n in api.notes].count("hello") == 2


def test_every_recovery_write_happens_once_when_replayed(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient, ledger: WriteLedger
) -> None:
    resume = datetime.now(UTC) + timedelta(days=40)

    def writes() -> list[object]:
        pay = client.pay_invoice(PAST_DUE, idempotency_key=f"{WF}:pay:1")
        return [
            (pay.outcome, pay.invoice, pay.attempt),
            client.write_note(PAST_DUE, {"route": "retry"}, idempotency_key=f"{WF}:act:1"),
            client.pause_subscription(SUB, resume_at=resume, idempotency_key=f"{WF}:act:2"),
            client.apply_coupon(ADA, "winback-20", subscription_id=SUB, idempotency_key=f"{WF}:act:3"),
            client.apply_credit(
                ADA, Money(amount=700, currency="usd"), reason="sorry", idempotency_key=f"{WF}:act:4"
            ),
        ]

    first = writes()
    assert first[0][0] == "succeeded"  # type: ignore[index]
    api.clear_requests()
    again = writes()

    assert again == first  # the stored results
    assert api.writes() == []  # the replay sent no write at all
    assert len(api.notes) == 1 and len(api.redemptions) == 1 and len(api.line_items) == 1
    keys = [f"{WF}:pay:1"] + [f"{WF}:act:{i}" for i in range(1, 5)]
    assert [ledger.status(k) for k in keys] == ["done"] * 5
    # Recurly's own dunning cannot be stopped per invoice: the client says so (nothing is written).
    with pytest.raises(PlatformError) as info:
        client.set_native_retries(PAST_DUE, False, idempotency_key=f"{WF}:act:5")
    assert info.value.code == "unsupported"


def test_a_replay_after_a_lost_answer_reads_recurly_instead_of_writing_again(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient, ledger: WriteLedger
) -> None:
    api.fail_next(mode="apply_then_drop", method="POST", path=r"/line_items$")
    with pytest.raises(PlatformError) as info:
        client.apply_credit(
            ADA, Money(amount=900, currency="usd"), reason="outage", idempotency_key=f"{WF}:cr"
        )
    assert info.value.retryable and ledger.status(f"{WF}:cr") == "pending"
    client.apply_credit(ADA, Money(amount=900, currency="usd"), reason="outage", idempotency_key=f"{WF}:cr")
    assert len(api.find("POST", r"/line_items$")) == 1 and len(api.line_items) == 1
    assert ledger.status(f"{WF}:cr") == "done"
