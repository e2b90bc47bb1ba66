"""`chargebee-idempotency-key` as Chargebee documents it, on the fake Chargebee API, and every write the
recovery makes replayed with the same key `<workflow id>:<step>`, as a DBOS replay of the step would: the
side effect happens once and the second call gets the first answer (`chargebee-idempotency-replayed`),
or, where the client reads first (a settled invoice, a paused subscription), sends nothing at all."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import chargebee
import pytest

from billops.domain import Money
from billops.errors import PlatformError
from billops.platforms.chargebee.client import ChargebeePlatformClient
from support.chargebee_api import FakeChargebeeAPI, load_fixture
from support.idempotency import CHARGEBEE_TTL

pytestmark = pytest.mark.slow

INVOICE, CUSTOMER, SUBSCRIPTION = "INV-2026-0117", "AzZlGJVAb1c2d3E4", "AzZlGJVAb1cXy9F7"
WF = "chargebee:ev_replay_1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_790_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(clock: Clock) -> Iterator[FakeChargebeeAPI]:
    with FakeChargebeeAPI(clock=clock) as server:
        server.seed_event(load_fixture("payment_failed_insufficient_funds"))
        server.add_coupon("WINBACK20", discount_type="percentage", discount_percentage=20.0)
        yield server


@pytest.fixture
def client(api: FakeChargebeeAPI) -> ChargebeePlatformClient:
    return ChargebeePlatformClient(api.site, api.api_key, api_url=api.url)


def transactions(api: FakeChargebeeAPI, status: str) -> list[str]:
    return [t["id"] for t in api.store["transactions"].values() if t.get("status") == status]


def test_same_key_same_parameters_is_replayed_other_parameters_refused(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    cb = client._cb  # the official SDK, pointed at the fake
    params = {"entity_type": "invoice", "entity_id": INVOICE, "notes": "hello"}
    key = {"chargebee-idempotency-key": "k-note-1"}
    first = cb.Comment.create(params, key)
    again = cb.Comment.create(params, key)
    assert again.comment.id == first.comment.id
    assert getattr(again, "is_idempotency_replayed", False) is True
    assert len(api.comments) == 1
    with pytest.raises(chargebee.InvalidRequestError) as info:
        cb.Comment.create({**params, "notes": "other"}, key)
    assert info.value.http_status_code == 400 and len(api.comments) == 1
    # The key is separate per endpoint (Chargebee keeps one record per request path).
    cb.HostedPage.update_payment_method({"customer": {"id": CUSTOMER}}, key)
    assert len(api.hosted_pages) == 1


def test_a_replayed_declined_collect_is_answered_from_the_first_try(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    api.decline_next_collect(error_code="51", error_detail={"decline_code": "insufficient_funds"})
    failed_before = transactions(api, "failure")
    first = client.pay_invoice(INVOICE, idempotency_key=f"{WF}:pay:1")
    replay = client.pay_invoice(INVOICE, idempotency_key=f"{WF}:pay:1")

    assert first.outcome == replay.outcome == "failed"
    assert first.attempt is not None and replay.attempt is not None
    assert (replay.attempt.decline and replay.attempt.decline.code) == (
        first.attempt.decline and first.attempt.decline.code
    )
    collects = api.find("POST", rf"/invoices/{INVOICE}/collect_payment$")
    assert [r.replayed for r in collects] == [False, True]
    assert len(transactions(api, "failure")) == len(failed_before) + 1  # one card attempt, not two


def test_a_collect_whose_answer_was_lost_is_not_collected_again(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    api.lose_answer_next(method="POST", path_pattern=r"/collect_payment$")
    with pytest.raises(PlatformError) as info:
        client.pay_invoice(INVOICE, idempotency_key=f"{WF}:pay:2")
    assert info.value.retryable
    again = client.pay_invoice(INVOICE, idempotency_key=f"{WF}:pay:2")
    # The invoice is paid now: the client's read-before-write stops the replay before any request.
    assert again.outcome == "already_settled"
    assert len(api.find("POST", r"/collect_payment$")) == 1
    assert len(transactions(api, "success")) == 1


def test_every_recovery_write_happens_once_when_replayed(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    resume = datetime.fromtimestamp(api.clock(), UTC) + timedelta(days=30)

    def writes() -> list[object]:
        return [
            client.set_native_retries(INVOICE, False, idempotency_key=f"{WF}:act:1"),
            client.write_note(INVOICE, {"route": "retry"}, idempotency_key=f"{WF}:act:2"),
            client.card_update_link(CUSTOMER, return_url=None, idempotency_key=f"{WF}:act:3"),
            client.apply_credit(
                CUSTOMER, Money(amount=500, currency="eur"), reason="sorry", idempotency_key=f"{WF}:act:4"
            ),
            client.apply_coupon(
                CUSTOMER, "WINBACK20", subscription_id=SUBSCRIPTION, idempotency_key=f"{WF}:act:5"
            ),
            client.pause_subscription(SUBSCRIPTION, resume_at=resume, idempotency_key=f"{WF}:act:6"),
        ]

    first = writes()
    api.clear_requests()
    again = writes()

    assert first == again  # the same hosted page URL, the same None results
    assert len(api.comments) == 1 and len(api.hosted_pages) == 1 and len(api.promotional_credits) == 1
    sub = api.get("subscriptions", SUBSCRIPTION)
    assert sub is not None and sub["status"] == "paused"
    assert [c["coupon_id"] for c in sub["coupons"]] == ["WINBACK20"]
    cust = api.get("customers", CUSTOMER)
    assert cust is not None and cust["promotional_credits"] == 500
    # Every replayed POST was answered from the key's record; the coupon was not even sent again (the
    # client reads the subscription first and sees the coupon applied).
    posts = [r for r in api.requests if r.method == "POST"]
    assert posts and all(r.replayed for r in posts)
    assert {r.header("chargebee-idempotency-key") for r in posts} == {
        f"{WF}:act:{i}" for i in (1, 2, 3, 4, 6)
    }


def test_after_the_idempotency_window_a_paid_invoice_is_still_not_collected_twice(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient, clock: Clock
) -> None:
    assert client.pay_invoice(INVOICE, idempotency_key=f"{WF}:pay:3").outcome == "succeeded"
    clock.now += int(CHARGEBEE_TTL) + 1  # Chargebee forgot the key
    assert api.idempotency.keys() == []
    again = client.pay_invoice(INVOICE, idempotency_key=f"{WF}:pay:3")
    assert again.outcome == "already_settled"  # the client's read-before-write
    assert len(api.find("POST", r"/collect_payment$")) == 1 and len(transactions(api, "success")) == 1


def test_a_replayed_collect_whose_answer_was_lost_reports_the_first_answer(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    """A step re-run after a kill mid-pay (`replay=True`) sends the same key again instead of reading the
    invoice first: Chargebee answers with the first collect's result, so the recovery is `succeeded`
    (its own pay settled the invoice), not `already_settled` — and nothing is charged twice."""
    api.lose_answer_next(method="POST", path_pattern=r"/collect_payment$")
    with pytest.raises(PlatformError):
        client.pay_invoice(INVOICE, idempotency_key=f"{WF}:pay:4")
    again = client.pay_invoice(INVOICE, idempotency_key=f"{WF}:pay:4", replay=True)
    assert again.outcome == "succeeded" and "replayed" in again.message
    assert len(transactions(api, "success")) == 1


def test_a_replay_past_the_idempotency_window_still_does_not_charge_twice(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient, clock: Clock
) -> None:
    assert client.pay_invoice(INVOICE, idempotency_key=f"{WF}:pay:5").outcome == "succeeded"
    clock.now += int(CHARGEBEE_TTL) + 1  # Chargebee forgot the key: the collect is refused, read back
    again = client.pay_invoice(INVOICE, idempotency_key=f"{WF}:pay:5", replay=True)
    assert again.outcome == "already_settled"
    assert len(transactions(api, "success")) == 1
