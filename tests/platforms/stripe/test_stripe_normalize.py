"""Stripe normalizer: every fixture, both API shapes, decline classification, and fuzzing.

Fixtures: tests/fixtures/stripe/*.json are published Stripe CLI payloads (API 2020-08-27);
tests/fixtures/stripe/current/*.json are BillOps-written payloads in the 2026-10-28 shape
(see tests/fixtures/SOURCES.md).
"""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billops.domain.billing import DeclineCategory, InvoiceStatus
from billops.domain.events import CanonicalEvent, EventKind
from billops.errors import WebhookRejected
from billops.platforms.stripe.normalize import (
    EVENT_KINDS,
    normalize_event,
    stripe_charge_attempt,
    stripe_customer,
    stripe_invoice,
    stripe_payment_intent_attempt,
    stripe_payment_method,
    stripe_subscription,
)
from support import fuzz

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "stripe"
OLD = sorted(FIXTURES.glob("*.json"))
CURRENT = sorted((FIXTURES / "current").glob("*.json"))
ALL = OLD + CURRENT


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def ts(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def envelope(event_type: str, obj: Any, **extra: Any) -> dict[str, Any]:
    return {
        "id": "evt_test",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": 1793700000,
        "data": {"object": obj, **extra},
        "livemode": False,
        "type": event_type,
    }


# ------------------------------------------------------------------------------------------------
# every fixture


def test_fixture_sets_are_complete() -> None:
    assert len(OLD) == 14
    assert {p.name for p in CURRENT} >= {
        "invoice.payment_failed.json",
        "charge.failed.json",
        "payment_intent.payment_failed.json",
        "invoice.paid.json",
        "customer.subscription.updated.json",
        "payment_method.automatically_updated.json",
        "customer.source.expiring.json",
        "invoice.marked_uncollectible.json",
    }


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_fixture_normalizes(path: Path) -> None:
    payload = json.loads(path.read_text(encoding="utf-8"))
    event = normalize_event(payload)
    assert isinstance(event, CanonicalEvent)
    assert event.platform == "stripe"
    assert event.event_id == payload["id"]
    assert event.event_type == payload["type"]
    assert event.kind == EVENT_KINDS[payload["type"]][0]
    assert event.occurred_at == ts(payload["created"])
    assert event.occurred_at.tzinfo is not None
    assert event.api_version == payload.get("api_version")
    assert event.customer_id is None or event.customer_id.startswith("cus_")
    carried = [event.invoice, event.attempt, event.subscription, event.payment_method, event.customer]
    assert any(obj is not None for obj in carried)
    for obj in carried:
        if obj is not None:
            assert obj.platform == "stripe"
    # serializable both ways: the inbox stores it as JSON
    assert CanonicalEvent.model_validate_json(event.model_dump_json()) == event


# ------------------------------------------------------------------------------------------------
# published fixtures (API 2020-08-27)


def test_old_invoice_payment_failed() -> None:
    event = normalize_event(load("invoice.payment_failed.json"))
    inv = event.invoice
    assert event.kind == EventKind.payment_failed
    assert inv is not None
    assert inv.id == "in_000000000000000000000000"
    assert inv.status == InvoiceStatus.open
    assert (inv.amount_due, inv.amount_paid, inv.amount_remaining) == (2000, 0, 2000)
    assert inv.currency == "usd"
    assert inv.customer_id == "cus_00000000000000"
    assert inv.subscription_id is None
    assert inv.attempt_count == 1
    assert inv.next_payment_attempt is None
    assert inv.auto_advance is False
    assert inv.number == "C93E45D7-0001"
    assert inv.billing_reason == "manual"
    assert inv.created_at == datetime(2022, 3, 26, 18, 40, 7, tzinfo=UTC)
    assert inv.period_start == inv.period_end == ts(1648320007)
    assert inv.hosted_invoice_url is not None
    assert inv.hosted_invoice_url.startswith("https://invoice.stripe.com/")
    assert inv.plan_name == "(created by Stripe CLI)"  # one-time item: no nickname, its description
    # the charge is only an id here: no attempt, but its id is remembered
    assert event.attempt is None
    assert inv.latest_attempt_id == "ch_000000000000000000000000"
    assert inv.payment_intent_id == "pi_000000000000000000000000"
    assert event.starts_recovery
    assert event.customer is None and event.customer_id == "cus_00000000000000"
    assert inv.money_due.format() == "20.00 USD"


@pytest.mark.parametrize("name", ["invoice.paid.json", "invoice.payment_succeeded.json"])
def test_old_invoice_paid(name: str) -> None:
    event = normalize_event(load(name))
    assert event.kind == EventKind.invoice_paid
    assert event.invoice is not None
    assert event.invoice.status == InvoiceStatus.paid
    assert (event.invoice.amount_paid, event.invoice.amount_remaining) == (2000, 0)
    assert event.invoice.number == "EE1DF78D-0001"
    assert not event.starts_recovery


@pytest.mark.parametrize(
    ("name", "kind", "status"),
    [
        ("invoice.created.json", EventKind.invoice_created, InvoiceStatus.draft),
        ("invoice.finalized.json", EventKind.invoice_finalized, InvoiceStatus.paid),
        ("invoice.payment_action_required.json", EventKind.payment_action_required, InvoiceStatus.open),
    ],
)
def test_old_invoice_lifecycle(name: str, kind: EventKind, status: InvoiceStatus) -> None:
    event = normalize_event(load(name))
    assert event.kind == kind
    assert event.invoice is not None
    assert event.invoice.status == status


def test_old_invoice_created_subscription_fields() -> None:
    inv = normalize_event(load("invoice.created.json")).invoice
    assert inv is not None
    assert inv.subscription_id == "sub_000000000000000000000000"
    assert inv.billing_reason == "subscription_create"
    assert inv.next_payment_attempt == ts(1648323710)
    assert inv.auto_advance is True
    assert inv.amount_due == 1500
    assert inv.latest_attempt_id is None and inv.payment_intent_id is None
    assert inv.plan_name == "1 × myproduct (at $15.00 / month)"


def test_old_invoice_upcoming_gets_a_synthetic_id() -> None:
    event = normalize_event(load("invoice.upcoming.json"))
    inv = event.invoice
    assert event.kind == EventKind.invoice_upcoming
    assert inv is not None
    assert inv.id == "upcoming:sub_00000000000000"  # never the id of a real invoice
    assert inv.status == InvoiceStatus.draft
    assert (inv.amount_due, inv.amount_remaining, inv.currency) == (1000, 1000, "usd")
    assert inv.period_end == ts(1380674075)
    assert event.api_version is None


def test_upcoming_invoice_ignores_its_own_id_and_falls_back_to_customer() -> None:
    obj = load("invoice.upcoming.json")["data"]["object"]
    obj["id"] = "in_real_one"
    obj["subscription"] = None
    event = normalize_event(envelope("invoice.upcoming", obj))
    assert event.invoice is not None
    assert event.invoice.id == "upcoming:cus_00000000000000"
    assert stripe_invoice(obj, upcoming=True).id == "upcoming:cus_00000000000000"


def test_old_charge_failed() -> None:
    event = normalize_event(load("charge.failed.json"))
    att = event.attempt
    assert event.kind == EventKind.payment_failed
    assert event.invoice is None and not event.starts_recovery
    assert att is not None
    assert att.id == "ch_000000000000000000000000"
    assert (att.amount, att.currency, att.outcome) == (2000, "usd", "failed")
    assert att.attempted_at == ts(1648320028)
    assert att.invoice_id is None and att.customer_id is None
    assert att.payment_intent_id == "pi_000000000000000000000000"
    assert att.payment_method_id == "pm_000000000000000000000000"
    assert att.decline is not None
    assert att.decline.code == "generic_decline"  # outcome.reason beats failure_code card_declined
    assert att.decline.category == DeclineCategory.soft
    assert att.decline.message == "Your card was declined."
    assert att.decline.network == "visa"
    assert not att.decline.never_retry
    assert att.card is not None
    assert (att.card.brand, att.card.funding, att.card.country) == ("visa", "credit", "US")
    assert (att.card.exp_month, att.card.exp_year, att.card.last4) == (3, 2023, "0002")
    assert att.card.fingerprint == "kMzSwhaalD1uR96R"


def test_old_payment_intent_failed_uses_its_charge() -> None:
    event = normalize_event(load("payment_intent.payment_failed.json"))
    att = event.attempt
    assert event.kind == EventKind.payment_failed and event.invoice is None
    assert att is not None
    # the same attempt id as charge.failed, so the two events describe one try
    assert att.id == normalize_event(load("charge.failed.json")).attempt.id  # type: ignore[union-attr]
    assert att.payment_intent_id == "pi_000000000000000000000000"
    assert att.decline is not None and att.decline.code == "generic_decline"
    assert att.card is not None and att.card.last4 == "0002"


def test_old_subscription_updated() -> None:
    event = normalize_event(load("customer.subscription.updated.json"))
    sub = event.subscription
    assert event.kind == EventKind.subscription_updated
    assert sub is not None
    assert sub.id == "sub_000000000000000000000000"
    assert sub.customer_id == "cus_00000000000000"
    assert sub.status == "active"
    assert sub.plan_id == "price_000000000000000000000000"
    assert sub.plan_name is None
    assert (sub.amount, sub.currency, sub.interval) == (1500, "usd", "month")
    assert sub.current_period_end == ts(1650998505)
    assert sub.created_at == ts(1648320105)
    assert not sub.cancel_at_period_end and not sub.paused
    assert event.previous == {"schedule": "sub_sched_000000000000000000000000"}
    assert event.customer is None


def test_old_subscription_deleted() -> None:
    event = normalize_event(load("customer.subscription.deleted.json"))
    assert event.kind == EventKind.subscription_canceled
    assert event.subscription is not None and event.subscription.status == "canceled"


def test_old_trial_will_end_sums_items_in_one_currency() -> None:
    event = normalize_event(load("customer.subscription.trial_will_end.json"))
    sub = event.subscription
    assert event.kind == EventKind.trial_will_end
    assert sub is not None
    assert (sub.id, sub.status, sub.plan_id) == ("su_00000000000000", "trialing", "fkx0AFo_00000000000000")
    assert (sub.amount, sub.currency) == (100, "usd")  # the eur item of this sample is not added to usd
    assert sub.current_period_end == ts(1383759023)


def test_old_payment_method_attached() -> None:
    event = normalize_event(load("payment_method.attached.json"))
    pm = event.payment_method
    assert event.kind == EventKind.payment_method_updated
    assert pm is not None
    assert (pm.id, pm.customer_id, pm.type) == ("card_000000000000000000000000", "cus_00000000000000", "card")
    assert pm.card is not None
    assert (pm.card.brand, pm.card.exp_month, pm.card.exp_year, pm.card.last4) == ("visa", 3, 2023, "4242")
    assert pm.created_at == ts(1648320107)
    assert not pm.usable_at(datetime(2026, 1, 1, tzinfo=UTC))


def test_old_customer_source_updated_is_a_legacy_card() -> None:
    event = normalize_event(load("customer.source.updated.json"))
    pm = event.payment_method
    assert event.kind == EventKind.payment_method_updated
    assert pm is not None and pm.card is not None
    assert pm.card.brand == "visa"  # legacy "Visa"
    assert pm.customer_id == "cus_00000000000000"
    assert event.previous == {"metadata": {"foo": None}}


# ------------------------------------------------------------------------------------------------
# BillOps-written payloads, API 2026-10-28


def test_current_invoice_payment_failed() -> None:
    event = normalize_event(load("current/invoice.payment_failed.json"))
    inv = event.invoice
    assert event.kind == EventKind.payment_failed and event.starts_recovery
    assert inv is not None
    assert inv.id == "in_1TRa0fLkdIwHu7ixVb3nCqKe"
    assert inv.subscription_id == "sub_1TQx7RLkdIwHu7ixS2dFqWmA"  # parent.subscription_details
    assert inv.payment_intent_id == "pi_3TRa3pLkdIwHu7ix0mJQk2Cs"  # payments.data[].payment
    assert inv.latest_attempt_id is None and event.attempt is None  # the PI is only an id
    assert (inv.amount_due, inv.amount_remaining, inv.attempt_count) == (4900, 4900, 1)
    assert inv.next_payment_attempt == datetime(2026, 11, 6, 9, 0, tzinfo=UTC)
    assert inv.billing_reason == "subscription_cycle"
    assert inv.plan_name == "2 × BillOps Pro (at $24.50 / month)"
    assert inv.metadata == {"plan_tier": "pro"}
    assert event.api_version == "2026-10-28.endive"


def test_current_charge_failed_mastercard_advice_24() -> None:
    event = normalize_event(load("current/charge.failed.json"))
    att = event.attempt
    assert att is not None
    assert att.invoice_id is None  # a Charge has no `invoice` since basil
    assert att.payment_intent_id == "pi_3TRa3pLkdIwHu7ix0mJQk2Cs"
    assert att.customer_id == "cus_TQx7Rb2eZvKYlo"
    d = att.decline
    assert d is not None
    assert d.code == "insufficient_funds" and d.raw_code == "insufficient_funds"
    assert d.category == DeclineCategory.try_later
    assert (d.advice_code, d.network_advice_code, d.network_decline_code) == ("try_again_later", "24", "51")
    assert d.network == "mastercard"
    assert d.retry_after_hours == 1
    assert not d.never_retry
    assert att.card is not None and (att.card.brand, att.card.exp_month, att.card.exp_year) == (
        "mastercard",
        8,
        2028,
    )


def test_current_payment_intent_failed_visa_category_1() -> None:
    payload = load("current/payment_intent.payment_failed.json")
    event = normalize_event(payload)
    att = event.attempt
    assert event.kind == EventKind.payment_failed and event.invoice is None
    assert att is not None
    assert att.id == "ch_3TRb7xLkdIwHu7ix1Hk2Lm5N"  # latest_charge
    assert att.payment_intent_id == "pi_3TRb7xLkdIwHu7ix1pVn4Rz8"
    assert att.attempted_at == ts(payload["created"])  # the try happened at the event, not at PI creation
    assert (att.amount, att.outcome, att.payment_method_id) == (1900, "failed", "pm_1TQz1LLkdIwHu7ixA7bW2yQe")
    d = att.decline
    assert d is not None
    assert d.code == "generic_decline"
    assert d.network_decline_code == "46" and d.network == "visa"
    assert d.category == DeclineCategory.hard and d.never_retry
    assert "Visa category 1" in d.reason
    assert att.card is not None and (att.card.brand, att.card.last4, att.card.exp_year) == (
        "visa",
        "1881",
        2027,
    )


def test_current_invoice_paid() -> None:
    event = normalize_event(load("current/invoice.paid.json"))
    inv = event.invoice
    assert event.kind == EventKind.invoice_paid
    assert inv is not None and inv.status == InvoiceStatus.paid
    assert (inv.amount_paid, inv.amount_remaining, inv.attempt_count) == (4900, 0, 2)
    assert inv.payment_intent_id == "pi_3TRa3pLkdIwHu7ix0mJQk2Cs"
    assert inv.next_payment_attempt is None


def test_current_invoice_marked_uncollectible() -> None:
    event = normalize_event(load("current/invoice.marked_uncollectible.json"))
    assert event.kind == EventKind.invoice_uncollectible
    assert event.invoice is not None and event.invoice.status == InvoiceStatus.uncollectible
    assert event.invoice.attempt_count == 4 and event.invoice.auto_advance is False


def test_current_subscription_paused() -> None:
    event = normalize_event(load("current/customer.subscription.updated.json"))
    sub = event.subscription
    assert sub is not None
    assert sub.paused and sub.status == "active"
    assert (sub.plan_id, sub.plan_name) == ("price_1TQx6yLkdIwHu7ixQ8rP0aZb", "Pro monthly")
    assert (sub.amount, sub.currency, sub.interval) == (4900, "usd", "month")  # 2 × 2450
    assert sub.current_period_end == datetime(2026, 12, 3, 9, 0, tzinfo=UTC)  # from the item
    assert event.previous == {"pause_collection": None}


def test_current_payment_method_automatically_updated() -> None:
    event = normalize_event(load("current/payment_method.automatically_updated.json"))
    pm = event.payment_method
    assert event.kind == EventKind.payment_method_updated
    assert pm is not None and pm.card is not None
    assert (pm.id, pm.customer_id) == ("pm_1TQx7ALkdIwHu7ixM5cEe9Dn", "cus_TQx7Rb2eZvKYlo")
    assert (pm.card.brand, pm.card.exp_month, pm.card.exp_year) == ("mastercard", 8, 2030)
    assert event.previous == {"card": {"exp_month": 8, "exp_year": 2028}}


def test_current_customer_source_expiring() -> None:
    event = normalize_event(load("current/customer.source.expiring.json"))
    pm = event.payment_method
    assert event.kind == EventKind.card_expiring
    assert pm is not None and pm.card is not None
    assert pm.card.brand == "amex"  # legacy "American Express"
    assert pm.card.months_to_expiry(datetime(2026, 10, 24, tzinfo=UTC)) == 1
    assert pm.customer_id == "cus_NgL2wQ5eRtYu8i"


# ------------------------------------------------------------------------------------------------
# both invoice shapes give the same canonical invoice


def _to_current_shape(old: dict[str, Any], pi: Any) -> dict[str, Any]:
    """Rewrite a 2020-08-27 invoice into the basil+ shape, keeping its facts."""
    new = copy.deepcopy(old)
    sub = new.pop("subscription")
    new.pop("charge")
    new.pop("payment_intent")
    new["parent"] = (
        {"type": "subscription_details", "subscription_details": {"subscription": sub, "metadata": {}}}
        if sub
        else None
    )
    new["payments"] = {
        "object": "list",
        "data": [
            {
                "object": "invoice_payment",
                "id": "inpay_1",
                "amount_requested": old["amount_due"],
                "amount_paid": old["amount_paid"] or None,
                "status": "paid" if old["status"] == "paid" else "open",
                "payment": {"type": "payment_intent", "payment_intent": pi},
                "status_transitions": {"paid_at": None, "canceled_at": None},
            }
        ],
    }
    for line in new["lines"]["data"]:
        price = line.pop("price")
        line.pop("plan", None)
        line["pricing"] = {
            "type": "price_details",
            "price_details": {"price": price, "product": price["product"]},
        }
    return new


@pytest.mark.parametrize("name", ["invoice.payment_failed.json", "invoice.paid.json", "invoice.created.json"])
def test_both_invoice_shapes_give_the_same_invoice(name: str) -> None:
    old = load(name)["data"]["object"]
    expected = stripe_invoice(old)
    pi_id = old["payment_intent"]
    # the PaymentIntent as an id only: everything but the charge id is known
    as_id = stripe_invoice(_to_current_shape(old, pi_id))
    assert as_id.model_dump(exclude={"latest_attempt_id"}) == expected.model_dump(
        exclude={"latest_attempt_id"}
    )
    assert as_id.payment_intent_id == pi_id
    # expanded with its latest_charge: identical
    if pi_id:
        pi = {"id": pi_id, "object": "payment_intent", "status": "processing", "latest_charge": old["charge"]}
        assert stripe_invoice(_to_current_shape(old, pi)) == expected


def test_current_invoice_in_old_shape_is_the_same() -> None:
    new = load("current/invoice.payment_failed.json")["data"]["object"]
    old = copy.deepcopy(new)
    for key in ("payments", "parent"):
        old.pop(key)
    old["subscription"] = "sub_1TQx7RLkdIwHu7ixS2dFqWmA"
    old["payment_intent"] = "pi_3TRa3pLkdIwHu7ix0mJQk2Cs"
    old["charge"] = None
    assert stripe_invoice(old) == stripe_invoice(new)


def test_current_invoice_without_payments_still_normalizes() -> None:
    """`payments` is an includable field: a payload may come without it."""
    obj = load("current/invoice.payment_failed.json")["data"]["object"]
    del obj["payments"]
    event = normalize_event(envelope("invoice.payment_failed", obj))
    assert event.invoice is not None
    assert event.invoice.payment_intent_id is None
    assert event.invoice.subscription_id == "sub_1TQx7RLkdIwHu7ixS2dFqWmA"


def test_payments_prefers_the_paid_then_open_payment() -> None:
    obj = load("current/invoice.paid.json")["data"]["object"]
    paid = obj["payments"]["data"][0]
    canceled = {**paid, "id": "inpay_old", "status": "canceled", "created": paid["created"] + 99}
    canceled["payment"] = {"type": "payment_intent", "payment_intent": "pi_canceled"}
    obj["payments"]["data"] = [canceled, paid]
    assert stripe_invoice(obj).payment_intent_id == "pi_3TRa3pLkdIwHu7ix0mJQk2Cs"


# ------------------------------------------------------------------------------------------------
# attempts carried by invoice events


def test_old_invoice_with_expanded_charge_carries_the_attempt() -> None:
    obj = load("invoice.payment_failed.json")["data"]["object"]
    obj["charge"] = load("charge.failed.json")["data"]["object"]
    event = normalize_event(envelope("invoice.payment_failed", obj))
    assert event.attempt is not None and event.invoice is not None
    assert event.attempt.invoice_id == event.invoice.id
    assert event.invoice.latest_attempt_id == event.attempt.id == "ch_000000000000000000000000"
    assert event.attempt.decline is not None and event.attempt.decline.code == "generic_decline"


def test_current_invoice_with_expanded_payment_intent_carries_the_attempt() -> None:
    obj = load("current/invoice.payment_failed.json")["data"]["object"]
    pi = load("current/payment_intent.payment_failed.json")["data"]["object"]
    obj["payments"]["data"][0]["payment"]["payment_intent"] = pi
    event = normalize_event(envelope("invoice.payment_failed", obj))
    att, inv = event.attempt, event.invoice
    assert att is not None and inv is not None
    assert att.invoice_id == inv.id
    assert inv.payment_intent_id == pi["id"]
    assert inv.latest_attempt_id == att.id == pi["latest_charge"]
    assert att.decline is not None and att.decline.category == DeclineCategory.hard


def test_expanded_latest_charge_on_payment_intent() -> None:
    pi = load("current/payment_intent.payment_failed.json")["data"]["object"]
    charge = load("current/charge.failed.json")["data"]["object"]
    charge["id"] = pi["latest_charge"]
    pi["latest_charge"] = charge
    att = stripe_payment_intent_attempt(pi)
    assert att.id == charge["id"]
    assert att.attempted_at == ts(charge["created"])
    assert att.decline is not None
    # last_payment_error.decline_code beats outcome.reason; outcome's network signals still count
    assert att.decline.code == "generic_decline"
    assert att.decline.network_advice_code == "24"


# ------------------------------------------------------------------------------------------------
# decline code precedence and card sources


def _failed_charge(**changes: Any) -> dict[str, Any]:
    charge = load("charge.failed.json")["data"]["object"]
    charge.update(changes)
    return charge


def test_outcome_reason_that_is_not_a_decline_code_is_skipped() -> None:
    charge = _failed_charge(failure_code="card_declined")
    charge["outcome"] = {
        "type": "blocked",
        "reason": "highest_risk_level",
        "network_status": "not_sent_to_network",
    }
    d = stripe_charge_attempt(charge).decline
    assert d is not None and d.code == "card_declined"


def test_failure_code_used_when_outcome_has_no_reason() -> None:
    charge = _failed_charge(failure_code="expired_card", outcome=None)
    d = stripe_charge_attempt(charge).decline
    assert d is not None and d.code == "expired_card" and d.category == DeclineCategory.needs_new_card


def test_last_payment_error_code_is_the_last_resort() -> None:
    pi = load("current/payment_intent.payment_failed.json")["data"]["object"]
    pi["last_payment_error"].update(decline_code=None, code="processing_error", network_decline_code=None)
    d = stripe_payment_intent_attempt(pi).decline
    assert d is not None and (d.code, d.category) == ("processing_error", DeclineCategory.try_later)


def test_do_not_try_again_advice_makes_it_hard() -> None:
    charge = _failed_charge()
    charge["outcome"]["advice_code"] = "do_not_try_again"
    d = stripe_charge_attempt(charge).decline
    assert d is not None and d.category == DeclineCategory.hard and d.never_retry


def test_mastercard_stop_recurring_advice() -> None:
    charge = load("current/charge.failed.json")["data"]["object"]
    charge["outcome"].update(network_advice_code="21", advice_code=None)
    d = stripe_charge_attempt(charge).decline
    assert d is not None and d.category == DeclineCategory.hard and d.never_retry


def test_legacy_source_card_on_a_charge() -> None:
    charge = _failed_charge(payment_method_details=None, payment_method=None)
    charge["source"] = load("customer.source.updated.json")["data"]["object"]
    att = stripe_charge_attempt(charge)
    assert att.card is not None and att.card.brand == "visa" and att.card.last4 == "4242"
    assert att.payment_method_id == "card_000000000000000000000000"


def test_old_charge_with_invoice_id_and_successful_charge() -> None:
    charge = _failed_charge(invoice="in_1", status="succeeded", failure_code=None, failure_message=None)
    event = normalize_event(envelope("charge.succeeded", charge))
    assert event.kind == EventKind.payment_succeeded
    assert event.attempt is not None
    assert (event.attempt.invoice_id, event.attempt.outcome, event.attempt.decline) == (
        "in_1",
        "succeeded",
        None,
    )


def test_payment_intent_succeeded() -> None:
    pi = load("current/payment_intent.payment_failed.json")["data"]["object"]
    pi.update(status="succeeded", last_payment_error=None, amount_received=1900, payment_method="pm_x")
    event = normalize_event(envelope("payment_intent.succeeded", pi))
    assert event.kind == EventKind.payment_succeeded
    assert event.attempt is not None
    assert (event.attempt.outcome, event.attempt.id, event.attempt.payment_method_id) == (
        "succeeded",
        pi["latest_charge"],
        "pm_x",
    )


# ------------------------------------------------------------------------------------------------
# other object functions and event kinds


def test_customer_events_and_stripe_customer() -> None:
    cust = {
        "id": "cus_1",
        "object": "customer",
        "email": "a@example.com",
        "name": "A",
        "created": 1749738000,
        "address": {"country": "DE"},
        "invoice_settings": {"default_payment_method": "pm_1"},
        "metadata": {"k": "v"},
    }
    event = normalize_event(envelope("customer.updated", cust))
    assert event.kind == EventKind.customer_updated
    assert event.customer == stripe_customer(cust)
    assert event.customer is not None
    assert (event.customer.country, event.customer.default_payment_method_id) == ("DE", "pm_1")
    assert event.customer_id == "cus_1"
    legacy = {**cust, "invoice_settings": {"default_payment_method": None}, "default_source": "card_1"}
    assert stripe_customer(legacy).default_payment_method_id == "card_1"


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("customer.subscription.created", EventKind.subscription_created),
        ("customer.subscription.paused", EventKind.subscription_paused),
        ("customer.subscription.resumed", EventKind.subscription_resumed),
    ],
)
def test_subscription_kinds(event_type: str, kind: EventKind) -> None:
    obj = load("current/customer.subscription.updated.json")["data"]["object"]
    assert normalize_event(envelope(event_type, obj)).kind == kind


def test_invoice_voided() -> None:
    obj = load("current/invoice.marked_uncollectible.json")["data"]["object"]
    obj["status"] = "void"
    event = normalize_event(envelope("invoice.voided", obj))
    assert event.kind == EventKind.invoice_voided
    assert event.invoice is not None and event.invoice.status == InvoiceStatus.void


def test_payment_method_detached_keeps_the_old_customer() -> None:
    obj = load("current/payment_method.automatically_updated.json")["data"]["object"]
    obj["customer"] = None
    event = normalize_event(
        envelope("payment_method.detached", obj, previous_attributes={"customer": "cus_old"})
    )
    assert event.payment_method is not None and event.payment_method.customer_id == "cus_old"


def test_stripe_payment_method_handles_a_source_object() -> None:
    source = {
        "id": "src_1",
        "object": "source",
        "type": "card",
        "customer": "cus_1",
        "card": {"brand": "MasterCard", "exp_month": 1, "exp_year": 2030, "last4": "5454"},
    }
    pm = stripe_payment_method(source)
    assert pm.card is not None and pm.card.brand == "mastercard"
    assert stripe_payment_method({"id": "ba_1", "object": "bank_account"}).type == "bank_account"


def test_stripe_subscription_metered_has_no_fixed_amount() -> None:
    obj = load("current/customer.subscription.updated.json")["data"]["object"]
    obj["items"]["data"][0]["price"]["recurring"]["usage_type"] = "metered"
    assert stripe_subscription(obj).amount is None


def test_unknown_event_type_is_other_with_what_can_be_read() -> None:
    invoice = load("current/invoice.payment_failed.json")["data"]["object"]
    event = normalize_event(envelope("invoice.overdue", invoice))
    assert event.kind == EventKind.other and event.invoice is not None
    refunded = normalize_event(envelope("charge.refunded", _failed_charge(status="succeeded")))
    assert refunded.kind == EventKind.other and refunded.attempt is not None
    discount = normalize_event(envelope("customer.discount.created", {"id": "di_1", "object": "discount"}))
    assert discount.kind == EventKind.other
    assert (discount.invoice, discount.attempt, discount.customer) == (None, None, None)
    # an event we do not act on is never rejected for a malformed object
    broken = normalize_event(envelope("invoice.overdue", {**invoice, "amount_due": "lots"}))
    assert broken.kind == EventKind.other and broken.invoice is None


# ------------------------------------------------------------------------------------------------
# rejections: 422 with a message naming the field


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda p: p["data"]["object"].update(amount_due="2000"),
            "data.object.amount_due: expected an integer",
        ),
        (
            lambda p: p["data"]["object"].update(amount_due=True),
            "data.object.amount_due: expected an integer",
        ),
        (
            lambda p: p["data"]["object"].update(amount_due=20.5),
            "data.object.amount_due: expected an integer",
        ),
        (
            lambda p: p["data"]["object"].pop("amount_due"),
            "data.object.amount_due: required field is missing",
        ),
        (
            lambda p: p["data"]["object"].update(currency="dollars"),
            "data.object.currency: expected a 3-letter",
        ),
        (lambda p: p["data"]["object"].update(status="lost"), "data.object.status: expected one of"),
        (
            lambda p: p["data"]["object"].update(created=-5),
            "data.object.created: timestamp -5 is out of range",
        ),
        (
            lambda p: p["data"]["object"].update(object="charge"),
            "data.object.object: a invoice.payment_failed",
        ),
        (
            lambda p: p["data"]["object"].update(lines={"data": [1]}),
            "data.object.lines.data[0]: expected an object",
        ),
        (lambda p: p["data"]["object"].update(customer=7), "data.object.customer: expected an id string"),
        (lambda p: p.pop("id"), "id: required field is missing"),
        (lambda p: p.update(type=""), "type: must not be empty"),
        (lambda p: p.update(created="yesterday"), "created: expected a Unix timestamp"),
        (lambda p: p.update(object="invoice"), "object: expected 'event'"),
        (lambda p: p.update(livemode="no"), "livemode: expected a boolean"),
        (lambda p: p.pop("data"), "data: required field is missing"),
        (lambda p: p["data"].update(object=None), "data.object: must not be null"),
        (lambda p: p["data"].update(previous_attributes=[]), "data.previous_attributes: expected an object"),
    ],
)
def test_rejections_name_the_field(mutate: Any, message: str) -> None:
    payload = load("invoice.payment_failed.json")
    mutate(payload)
    with pytest.raises(WebhookRejected) as info:
        normalize_event(payload)
    assert info.value.status == 422
    assert message in info.value.message


@pytest.mark.parametrize("payload", [None, [], "evt", 3, 2.5, True, {}])
def test_non_events_are_rejected(payload: Any) -> None:
    with pytest.raises(WebhookRejected) as info:
        normalize_event(payload)
    assert info.value.status == 422


def test_object_functions_name_their_object() -> None:
    obj = load("invoice.payment_failed.json")["data"]["object"]
    obj["amount_due"] = None
    with pytest.raises(WebhookRejected, match=r"^invoice\.amount_due: must not be null$"):
        stripe_invoice(obj)
    with pytest.raises(WebhookRejected, match=r"^charge\.status: expected succeeded, failed or pending"):
        stripe_charge_attempt(_failed_charge(status="weird"))
    with pytest.raises(WebhookRejected, match="an upcoming invoice needs a subscription or a customer"):
        stripe_invoice({"amount_due": 1, "currency": "usd"}, upcoming=True)


# ------------------------------------------------------------------------------------------------
# fuzzing: any JSON value in, a CanonicalEvent or a WebhookRejected out

STRIPE_KEYS = sorted(
    {
        "id", "object", "type", "created", "data", "previous_attributes", "livemode", "api_version",
        "amount", "amount_due", "amount_paid", "currency", "status", "customer", "subscription", "charge",
        "payment_intent", "payments", "payment", "lines", "price", "plan", "pricing", "price_details",
        "parent", "subscription_details", "items", "quantity", "unit_amount", "recurring", "outcome",
        "payment_method_details", "card", "source", "last_payment_error", "latest_charge", "charges",
        "decline_code", "failure_code", "network_advice_code", "exp_month", "brand", "metadata",
        "pause_collection", "current_period_end", "next_payment_attempt", "invoice_settings", "address",
    }
)  # fmt: skip

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["usd", "invoice", "charge", "card", "failed", "open", "visa", "in_1", "cus_1"])
)
json_keys = st.sampled_from(STRIPE_KEYS) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=6),
    max_leaves=25,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _normalize_or_reject(payload: Any) -> None:
    try:
        event = normalize_event(payload)
    except WebhookRejected as exc:
        assert exc.status in (400, 422)
        assert exc.message
    else:
        assert isinstance(event, CanonicalEvent)


FIXTURE_PAYLOADS = [json.loads(p.read_text(encoding="utf-8")) for p in ALL]


@FUZZ
@given(json_values)
def test_fuzz_any_json_value(payload: Any) -> None:
    _normalize_or_reject(payload)


@FUZZ
@given(
    st.sampled_from([*sorted(EVENT_KINDS), "invoice.overdue", "charge.refunded"]),
    st.dictionaries(json_keys, json_values, max_size=12) | json_values,
)
def test_fuzz_random_object_in_a_valid_envelope(event_type: str, obj: Any) -> None:
    _normalize_or_reject(envelope(event_type, obj))


@FUZZ
@given(st.data())
def test_fuzz_mutated_fixtures(data: st.DataObject) -> None:
    payload = copy.deepcopy(data.draw(st.sampled_from(FIXTURE_PAYLOADS)))
    rnd = random.Random(data.draw(st.integers(min_value=0, max_value=2**32)))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        # uniform over the tree (sampled_from would favour the first keys); the root is covered above
        path = rnd.choice(fuzz.paths(payload))
        op = data.draw(st.sampled_from(["delete", "replace"]))
        payload = fuzz.mutate(payload, path, op, data.draw(json_values))
    _normalize_or_reject(payload)


OBJECT_FUNCTIONS: dict[str, Any] = {
    "invoice": stripe_invoice,
    "charge": stripe_charge_attempt,
    "payment_intent": stripe_payment_intent_attempt,
    "subscription": stripe_subscription,
    "payment_method": stripe_payment_method,
    "card": stripe_payment_method,
}
OBJECT_SOURCES = [
    (OBJECT_FUNCTIONS[p["data"]["object"]["object"]], p["data"]["object"])
    for p in FIXTURE_PAYLOADS
    if p["data"]["object"].get("object") in OBJECT_FUNCTIONS
]


@FUZZ
@given(st.data())
def test_fuzz_object_functions(data: st.DataObject) -> None:
    function, source = data.draw(st.sampled_from(OBJECT_SOURCES))
    obj = copy.deepcopy(source)
    rnd = random.Random(data.draw(st.integers(min_value=0, max_value=2**32)))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path = rnd.choice(fuzz.paths(obj))
        op = data.draw(st.sampled_from(["delete", "replace"]))
        obj = fuzz.mutate(obj, path, op, data.draw(json_values))
    try:
        function(obj)
    except WebhookRejected as exc:
        assert exc.status == 422
