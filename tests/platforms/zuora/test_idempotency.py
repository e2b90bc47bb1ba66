"""`Idempotency-Key` as Zuora documents it (POST and PATCH, 24 h, the saved answer replayed whatever the
body; 422 for another URL), on the fake Zuora API, and every write the recovery makes replayed with the
same key `<workflow id>:<step>`. Zuora's PUT writes (autoPay, comments, suspend) take no key: the client
reads first, so a replay of them writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from billops.domain import InvoiceStatus, Money
from billops.platforms.zuora.client import ZuoraPlatformClient
from support.idempotency import ZUORA_TTL, ManualClock
from support.zuora_api import FakeZuoraAPI

pytestmark = pytest.mark.slow

ACCT, VISA, INV, SUB = "A-ACCT-0001", "PM-VISA-0001", "INV-ID-0001", "SUB-0001"
WF = "zuora:evt_replay_1"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def api(clock: ManualClock) -> Iterator[FakeZuoraAPI]:
    with FakeZuoraAPI() as server:
        server.idempotency.clock = clock
        server.add_account(ACCT, number="A00001042", name="Northwind", default_payment_method=VISA)
        server.add_payment_method(
            VISA, ACCT, card_type="Visa", mask="************4242", exp_month=8, exp_year=2030
        )
        server.add_invoice(
            INV,
            ACCT,
            number="INV00029871",
            amount="49.99",
            subscription_id=SUB,
            posted=datetime.now(UTC) - timedelta(days=3),
        )
        server.add_subscription(SUB, ACCT)
        yield server


@pytest.fixture
def client(api: FakeZuoraAPI) -> Iterator[ZuoraPlatformClient]:
    c = ZuoraPlatformClient(api.url, api.client_id, api.client_secret, credit_charge_id="PRPC-CREDIT-01")
    yield c
    c.close()


def raw(api: FakeZuoraAPI) -> httpx.Client:
    token = httpx.post(
        f"{api.url}/oauth/token",
        data={
            "client_id": api.client_id,
            "client_secret": api.client_secret,
            "grant_type": "client_credentials",
        },
    ).json()["access_token"]
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=5)


def memo(amount: str) -> dict[str, object]:
    return {"accountId": ACCT, "charges": [{"productRatePlanChargeId": "C1", "amount": amount}]}


def test_the_saved_answer_is_replayed_whatever_the_body_and_another_url_is_422(
    api: FakeZuoraAPI, clock: ManualClock
) -> None:
    with raw(api) as http:
        key = {"Idempotency-Key": "k-memo-1"}
        first = http.post("/v1/creditmemos", json=memo("5.00"), headers=key).json()
        again = http.post("/v1/creditmemos", json=memo("9.00"), headers=key).json()  # not compared
        assert again == first and len(api.state.credit_memos) == 1
        other = http.post("/v1/payments", json={"accountId": ACCT}, headers=key)
        assert other.status_code == 422 and other.json()["success"] is False
        put = http.put(f"/v1/invoices/{INV}", json={"comments": "x"}, headers={"Idempotency-Key": "k-put"})
        assert put.status_code == 200 and api.idempotency.keys() == ["k-memo-1"]  # PUT ignores the key

        clock.advance(ZUORA_TTL - 1)
        assert http.post("/v1/creditmemos", json=memo("5.00"), headers=key).json() == first
        clock.advance(2)  # removed 24 h after it was set: a new request
        assert http.post("/v1/creditmemos", json=memo("5.00"), headers=key).json()["id"] != first["id"]
        assert len(api.state.credit_memos) == 2


def test_a_replayed_declined_payment_makes_no_second_payment(
    api: FakeZuoraAPI, client: ZuoraPlatformClient
) -> None:
    api.decline(VISA, "05", "Do not honor")
    first = client.pay_invoice(INV, idempotency_key=f"{WF}:pay:1")
    replay = client.pay_invoice(INV, idempotency_key=f"{WF}:pay:1")  # still open: the POST goes out
    assert first.outcome == replay.outcome == "failed"
    assert first.attempt is not None and replay.attempt is not None and replay.attempt.id == first.attempt.id
    posts = api.find("POST", r"^/v1/payments$")
    assert [p.replayed for p in posts] == [False, True]
    assert {p.header("idempotency-key") for p in posts} == {f"{WF}:pay:1"}
    assert len([p for p in api.state.payments.values() if p["status"] == "Error"]) == 1


def test_a_payment_whose_answer_was_lost_is_made_once(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    api.fail_next(502, {"message": "Bad gateway"}, method="POST", path="^/v1/payments$", after=True)
    first = client.pay_invoice(INV, idempotency_key=f"{WF}:pay:2")  # the client looks, finds the payment
    assert first.outcome == "succeeded"
    replay = client.pay_invoice(INV, idempotency_key=f"{WF}:pay:2")
    assert replay.outcome == "already_settled" and replay.invoice.status == InvoiceStatus.paid
    assert len(api.find("POST", r"^/v1/payments$")) == 1
    assert len([p for p in api.state.payments.values() if p["status"] == "Processed"]) == 1


def test_every_recovery_write_happens_once_when_replayed(
    api: FakeZuoraAPI, client: ZuoraPlatformClient
) -> None:
    resume = datetime.now(UTC) + timedelta(days=30)

    def writes() -> list[object]:
        return [
            client.set_native_retries(INV, False, idempotency_key=f"{WF}:act:1"),
            client.write_note(INV, {"route": "retry"}, idempotency_key=f"{WF}:act:2"),
            client.apply_credit(
                ACCT, Money(amount=500, currency="usd"), reason="sorry", idempotency_key=f"{WF}:act:3"
            ),
            client.pause_subscription(SUB, resume_at=resume, idempotency_key=f"{WF}:act:4"),
        ]

    first = writes()
    api.clear_requests()
    again = writes()

    assert first == again
    assert len(api.state.credit_memos) == 1
    assert api.state.subscriptions[SUB]["status"] == "Suspended"
    assert str(api.state.invoices[INV]["comments"]).count("[billops]") == 1
    [credit] = api.find("POST", r"^/v1/creditmemos$")
    assert credit.replayed and credit.header("idempotency-key") == f"{WF}:act:3"
    # The PUT writes were read first: the comment and the suspension were not sent again.
    assert api.find("PUT", rf"^/v1/invoices/{INV}$") == [
        r for r in api.find("PUT", ".") if "autoPay" in json.loads(r.body)
    ]
    assert api.find("PUT", r"/suspend$") == []
