"""The simulated business and its Stripe webhook stream: deterministic, realistic, current API shape,
signed like Stripe signs, and understood by the Stripe normalizer."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe

from billops.domain.events import EventKind
from billops.platforms.stripe.normalize import normalize_event
from billops.sim.business import DECLINE_MIX, Business, generate_business
from billops.sim.stream import API_VERSION, build_events, encode, generate_events, sign

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def small() -> tuple[Business, list[dict[str, Any]]]:
    b = generate_business(customers=300, days=60, seed=11, now=NOW)
    return b, build_events(b)


@pytest.fixture(scope="module")
def large() -> Business:
    return generate_business(customers=4000, days=90, seed=3, now=NOW)


def test_same_seed_same_stream_and_different_seed_differs() -> None:
    a = generate_events(customers=40, days=30, seed=5, now=NOW)
    b = generate_events(customers=40, days=30, seed=5, now=NOW)
    c = generate_events(customers=40, days=30, seed=6, now=NOW)
    assert json.dumps(a) == json.dumps(b)
    assert [e["id"] for e in a] != [e["id"] for e in c]


def test_more_customers_keep_the_first_ones_unchanged() -> None:
    few = generate_business(customers=10, days=30, seed=5, now=NOW)
    many = generate_business(customers=30, days=30, seed=5, now=NOW)
    assert [c.id for c in few.customers] == [c.id for c in many.customers[:10]]
    assert [i.id for i in few.invoices] == [i.id for i in many.invoices if i.customer.index < 10]


def test_ids_unique_events_chronological_and_inside_the_window(small: tuple[Business, list[dict]]) -> None:
    _, events = small
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))
    assert all(i.startswith("evt_") for i in ids)
    created = [e["created"] for e in events]
    assert created == sorted(created)
    assert created[-1] <= int(NOW.timestamp())
    # everything but the customers' original sign-ups happens inside the window
    window = [e for e in events if e["type"].startswith(("invoice.", "charge.", "payment_intent."))]
    assert min(e["created"] for e in window) > int((NOW - timedelta(days=60)).timestamp())


def test_default_now_is_the_current_time() -> None:
    events = generate_events(customers=30, days=30, seed=1)
    now = datetime.now(UTC).timestamp()
    invoice_times = [e["created"] for e in events if e["type"] == "invoice.created"]
    assert invoice_times and max(invoice_times) <= now and min(invoice_times) >= now - 31 * 86400


def test_customers_have_realistic_profiles(large: Business) -> None:
    from zoneinfo import ZoneInfo

    currencies = Counter(c.currency for c in large.customers)
    assert currencies.most_common(1)[0][0] == "usd" and {"eur", "gbp"} <= set(currencies)
    brands = Counter(c.card.brand for c in large.customers)
    assert brands["visa"] > brands["mastercard"] > brands["amex"] > 0
    funding = Counter(c.card.funding for c in large.customers)
    assert funding["credit"] > funding["debit"] > funding["prepaid"] > 0
    for c in large.customers[:200]:
        ZoneInfo(c.timezone)  # a real IANA zone
    ages = [(NOW - c.created).days for c in large.customers]
    assert min(ages) >= 0 and max(ages) <= 3 * 365 and max(ages) > 2 * 365
    assert {p.interval for p in large.plans} == {"month", "year"}
    assert {s.plan.name for s in large.subscriptions} == {"Starter", "Team", "Business", "Enterprise"}


def test_failure_rate_and_decline_mix(large: Business) -> None:
    renewals, failed = large.renewals, large.failed_renewals()
    assert 0.08 <= len(failed) / len(renewals) <= 0.12
    codes = Counter(i.attempts[0].decline.code for i in failed)
    share = {k: v / len(failed) for k, v in codes.items()}
    assert 0.33 <= share["insufficient_funds"] <= 0.47
    assert 0.18 <= share.get("generic_decline", 0) + share.get("do_not_honor", 0) <= 0.32
    assert 0.06 <= share["expired_card"] <= 0.15
    stolen = sum(share.get(k, 0) for k in ("lost_card", "stolen_card", "fraudulent", "pickup_card"))
    assert 0.015 <= stolen <= 0.07
    assert set(codes) <= set(DECLINE_MIX)
    # some failed invoices are paid later in the window, some stay open
    paid_later = [i for i in failed if i.paid]
    assert 0.25 * len(failed) < len(paid_later) < 0.8 * len(failed)


def test_network_codes_match_the_card_network(large: Business) -> None:
    attempts = [a for i in large.failed_renewals() for a in i.attempts if a.decline is not None]
    macs = [a for a in attempts if a.decline.network_advice_code]
    ndcs = [a for a in attempts if a.decline.network_decline_code]
    assert macs and ndcs
    assert all(a.card.brand == "mastercard" for a in macs)
    assert {a.decline.network_advice_code for a in macs} <= {"01", "02", "03", "21", *map(str, range(24, 31))}
    assert all(a.card.brand == "visa" for a in ndcs)


def test_expired_card_declines_use_really_expired_cards(large: Business) -> None:
    for inv in large.failed_renewals():
        a = inv.attempts[0]
        if a.decline.code == "expired_card":
            assert a.card.expires_at() < a.at


def _walk(value: Any, path: str = "") -> list[tuple[str, Any]]:
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((f"{path}.{k}", v))
            out.extend(_walk(v, f"{path}.{k}"))
    elif isinstance(value, list):
        for v in value:
            out.extend(_walk(v, f"{path}[]"))
    return out


def test_money_is_integer_minor_units(small: tuple[Business, list[dict]]) -> None:
    b, events = small
    for e in events:
        for path, v in _walk(e["data"]["object"]):
            last = path.rsplit(".", 1)[-1]
            if "amount" in last and not last.endswith(("amounts", "_decimal", "amount_details")):
                assert v is None or (isinstance(v, int) and not isinstance(v, bool)), (e["type"], path, v)
    assert all(isinstance(p.amount, int) for p in b.plans)
    assert {p.amount for p in b.plans if p.name == "Starter" and p.currency == "usd"} == {1900, 19000}


def test_current_api_shapes(small: tuple[Business, list[dict]]) -> None:
    _, events = small
    types = Counter(e["type"] for e in events)
    for t in (
        "customer.created", "payment_method.attached", "customer.subscription.created", "invoice.created",
        "invoice.finalized", "charge.succeeded", "payment_intent.succeeded", "invoice.paid", "charge.failed",
        "payment_intent.payment_failed", "invoice.payment_failed", "customer.subscription.updated",
        "payment_method.automatically_updated",
    ):  # fmt: skip
        assert types[t] > 0, t
    for e in events:
        assert e["object"] == "event" and e["api_version"] == API_VERSION == stripe.api_version
        obj = e["data"]["object"]
        if obj["object"] == "invoice":
            assert "charge" not in obj and "payment_intent" not in obj and "subscription" not in obj
            assert obj["parent"]["subscription_details"]["subscription"].startswith("sub_")
            assert obj["payments"]["object"] == "list"
            if obj["status"] != "draft":
                (pay,) = obj["payments"]["data"]
                assert pay["object"] == "invoice_payment" and pay["id"].startswith("inpay_")
                assert pay["payment"]["type"] == "payment_intent"
                assert pay["payment"]["payment_intent"].startswith("pi_")
        if e["type"] == "invoice.payment_failed":
            assert obj["status"] == "open" and obj["attempt_count"] >= 1 and obj["amount_remaining"] > 0
        if e["type"] == "charge.failed":
            assert obj["outcome"]["type"] == "issuer_declined" and obj["failure_code"]
            assert obj["payment_intent"].startswith("pi_")
            card = obj["payment_method_details"]["card"]
            assert {"brand", "funding", "country", "exp_month", "exp_year", "last4", "fingerprint"} <= set(
                card
            )
        if obj["object"] == "subscription":
            assert (
                obj["items"]["data"][0]["current_period_end"]
                > obj["items"]["data"][0]["current_period_start"]
            )
    first_failures = [e for e in events if e["type"] == "invoice.payment_failed"]
    assert any(e["data"]["object"]["next_payment_attempt"] for e in first_failures)
    past_due = [e for e in events if e["type"] == "customer.subscription.updated"]
    assert {e["data"]["object"]["status"] for e in past_due} == {"past_due", "active"}


def test_signature_verifies_with_the_sdk() -> None:
    event = generate_events(customers=2, days=30, seed=1, now=NOW)[0]
    body = encode(event)
    header = sign(body, "whsec_abc")
    parsed = stripe.Webhook.construct_event(body, header, "whsec_abc", tolerance=300)
    assert parsed["id"] == event["id"]
    assert sign(body, "whsec_abc", timestamp=1_700_000_000).startswith("t=1700000000,v1=")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, header, "whsec_other", tolerance=300)


def test_every_event_normalizes_and_declines_classify_as_simulated(
    small: tuple[Business, list[dict]],
) -> None:
    b, events = small
    attempts = {a.id: (a, inv) for inv in b.invoices for a in inv.attempts}
    failed_seen = Counter()
    for e in events:
        ev = normalize_event(json.loads(encode(e)))
        assert ev.platform == "stripe" and ev.event_id == e["id"] and ev.event_type == e["type"]
        obj = e["data"]["object"]
        if e["type"] in ("charge.failed", "payment_intent.payment_failed"):
            charge_id = obj["id"] if obj["object"] == "charge" else obj["latest_charge"]
            sim, inv = attempts[charge_id]
            expected = sim.decline.classify()
            assert ev.kind == EventKind.payment_failed
            assert ev.attempt is not None and ev.attempt.outcome == "failed"
            got = ev.attempt.decline
            assert got is not None
            assert (got.code, got.category) == (expected.code, expected.category), e["id"]
            assert got.never_retry == expected.never_retry
            assert got.network_advice_code == expected.network_advice_code
            assert ev.attempt.payment_intent_id == inv.payment_intent_id
            failed_seen[e["type"]] += 1
        elif e["type"] == "invoice.payment_failed":
            assert ev.kind == EventKind.payment_failed and ev.starts_recovery
            assert ev.invoice.payment_intent_id == obj["payments"]["data"][0]["payment"]["payment_intent"]
            assert ev.invoice.subscription_id == obj["parent"]["subscription_details"]["subscription"]
            assert ev.invoice.amount_due == obj["amount_due"]
            failed_seen[e["type"]] += 1
        elif e["type"] == "invoice.paid":
            assert ev.kind == EventKind.invoice_paid and ev.invoice.status.value == "paid"
        elif e["type"] == "charge.succeeded":
            assert ev.kind == EventKind.payment_succeeded and ev.attempt.card.fingerprint
    assert failed_seen["charge.failed"] == failed_seen["payment_intent.payment_failed"]
    assert failed_seen["charge.failed"] == failed_seen["invoice.payment_failed"] > 0
    categories = {a.decline.classify().category.value for a, _ in attempts.values() if a.decline}
    assert {"soft", "try_later", "needs_new_card"} <= categories
