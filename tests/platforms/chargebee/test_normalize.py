"""Chargebee normalizer: BillOps-written v2 payloads (tests/fixtures/chargebee), declines, fuzzing."""

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
from billops.errors import ConfigError, WebhookRejected
from billops.platforms.chargebee.normalize import (
    EVENT_KINDS,
    chargebee_card,
    chargebee_invoice,
    chargebee_transaction_attempt,
    load_platform_declines,
    normalize_event,
    parse_platform_declines,
)
from support import fuzz

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "chargebee"
ALL = sorted(FIXTURES.glob("*.json"))
T = 1793700000


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def ts(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def test_fixture_set() -> None:
    assert len(ALL) == 8


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_fixture_normalizes(path: Path) -> None:
    payload = json.loads(path.read_text(encoding="utf-8"))
    event = normalize_event(payload)
    assert event.platform == "chargebee"
    assert event.event_id == payload["id"]
    assert event.event_type == payload["event_type"]
    assert event.occurred_at == ts(payload["occurred_at"])
    assert event.occurred_at.tzinfo is UTC
    assert event.api_version == "v2"


def test_payment_failed_insufficient_funds_visa() -> None:
    event = normalize_event(load("payment_failed_insufficient_funds.json"))
    assert event.kind == EventKind.payment_failed
    assert event.starts_recovery
    assert event.customer_id == "AzZlGJVAb1c2d3E4"

    inv = event.invoice
    assert inv is not None
    assert inv.id == "INV-2026-0117"
    assert inv.status == InvoiceStatus.open
    assert (inv.amount_due, inv.amount_paid, inv.amount_remaining, inv.currency) == (4900, 0, 4900, "eur")
    assert inv.money_due.format() == "49.00 EUR"
    assert inv.subscription_id == "AzZlGJVAb1cXy9F7"
    assert inv.next_payment_attempt == ts(T + 3 * 86400)
    assert inv.created_at == ts(T - 86400)
    assert inv.period_start == ts(T - 86400)
    assert inv.period_end == ts(T - 86400 + 30 * 86400)
    assert inv.plan_name == "Growth Plan"
    assert inv.billing_reason == "subscription_cycle"
    assert inv.attempt_count == 1
    assert inv.latest_attempt_id == "txn_AzZlGJVAb1fT01"

    att = event.attempt
    assert att is not None
    assert att.id == "txn_AzZlGJVAb1fT01"
    assert att.outcome == "failed"
    assert (att.amount, att.currency) == (4900, "eur")
    assert att.attempted_at == ts(T)
    assert att.attempted_at.tzinfo is UTC
    assert att.invoice_id == "INV-2026-0117"
    assert att.customer_id == "AzZlGJVAb1c2d3E4"
    assert att.payment_method_id == "pm_AzZlGJVAb1dPs01"
    assert att.gateway == "stripe"
    assert att.card is not None
    assert (att.card.brand, att.card.funding, att.card.last4, att.card.country) == (
        "visa",
        "credit",
        "4242",
        "PT",
    )
    assert (att.card.exp_month, att.card.exp_year) == (8, 2028)

    d = att.decline
    assert d is not None
    assert d.code == "insufficient_funds"
    assert d.category == DeclineCategory.soft
    assert d.never_retry is False
    assert d.raw_code == "insufficient_funds"
    assert d.message == "Your card has insufficient funds."
    assert d.network == "visa"
    assert d.network_decline_code == "51"
    assert d.network_advice_code is None
    assert d.taxonomy_version == "declines-v1"

    assert event.customer is not None
    assert event.customer.name == "Ana Silva"
    assert event.customer.email == "ana.silva@example.com"
    assert event.customer.country == "PT"
    assert event.customer.default_payment_method_id == "pm_AzZlGJVAb1dPs01"
    assert event.customer.metadata == {"segment": "smb"}
    assert event.subscription is not None
    assert event.subscription.status == "active"
    assert event.subscription.amount == 4900
    assert event.payment_method is not None
    assert event.payment_method.is_default


def test_payment_failed_mastercard_mac_03_is_never_retried() -> None:
    event = normalize_event(load("payment_failed_mastercard_mac03.json"))
    assert event.kind == EventKind.payment_failed
    att = event.attempt
    assert att is not None
    assert (att.amount, att.currency, att.gateway) == (12900, "eur", "adyen")
    assert att.card is not None and att.card.brand == "mastercard" and att.card.funding == "debit"
    d = att.decline
    assert d is not None
    assert d.code == "generic_decline"  # payment_processing_failed / "Refused": nothing specific
    assert d.raw_code == "payment_processing_failed"
    assert d.network == "mastercard"
    assert d.network_advice_code == "03"
    assert d.category == DeclineCategory.hard
    assert d.never_retry is True
    assert "Mastercard advice 03" in d.reason
    assert event.invoice is not None and event.invoice.plan_name == "Pro Plan (annual)"
    pm = event.payment_method
    assert pm is not None and pm.id == "pm_AzZlGJVAb3mC01" and pm.created_at == ts(T - 40 * 86400)


def test_mac_is_ignored_on_a_visa_card() -> None:
    payload = load("payment_failed_mastercard_mac03.json")
    payload["content"]["payment_source"]["card"]["brand"] = "visa"
    d = normalize_event(payload).attempt.decline  # type: ignore[union-attr]
    assert d is not None and d.network_advice_code is None and d.category == DeclineCategory.soft


def test_payment_succeeded() -> None:
    event = normalize_event(load("payment_succeeded.json"))
    assert event.kind == EventKind.payment_succeeded
    assert not event.starts_recovery
    att = event.attempt
    assert att is not None
    assert att.outcome == "succeeded" and att.decline is None
    assert att.attempted_at == ts(T + 3 * 86400)
    inv = event.invoice
    assert inv is not None
    assert inv.status == InvoiceStatus.paid
    assert (inv.amount_due, inv.amount_paid, inv.amount_remaining) == (4900, 4900, 0)
    assert inv.next_payment_attempt is None
    assert inv.attempt_count == 2
    assert inv.latest_attempt_id == "txn_AzZlGJVAb4fT03"


def test_invoice_updated_to_paid() -> None:
    event = normalize_event(load("invoice_updated_paid.json"))
    assert event.kind == EventKind.invoice_paid
    assert event.attempt is None
    inv = event.invoice
    assert inv is not None
    assert inv.status == InvoiceStatus.paid
    assert (inv.amount_due, inv.amount_paid, inv.amount_remaining, inv.currency) == (4900, 4900, 0, "eur")
    assert event.customer_id == "AzZlGJVAb1c2d3E4"


@pytest.mark.parametrize(
    ("status", "canonical", "kind"),
    [
        ("payment_due", InvoiceStatus.open, EventKind.invoice_finalized),
        ("posted", InvoiceStatus.open, EventKind.invoice_finalized),
        ("not_paid", InvoiceStatus.uncollectible, EventKind.invoice_uncollectible),
        ("voided", InvoiceStatus.void, EventKind.invoice_voided),
        ("pending", InvoiceStatus.draft, EventKind.invoice_finalized),
    ],
)
def test_invoice_statuses(status: str, canonical: InvoiceStatus, kind: EventKind) -> None:
    payload = load("invoice_updated_paid.json")
    payload["content"]["invoice"]["status"] = status
    event = normalize_event(payload)
    assert event.invoice is not None and event.invoice.status == canonical
    assert event.kind == kind


def test_subscription_cancelled() -> None:
    event = normalize_event(load("subscription_cancelled.json"))
    assert event.kind == EventKind.subscription_canceled
    sub = event.subscription
    assert sub is not None
    assert sub.id == "AzZlGJVAb1cXy9F7"
    assert sub.status == "canceled"
    assert sub.plan_id == "growth-plan-EUR-Monthly"
    assert (sub.amount, sub.currency, sub.interval) == (4900, "eur", "month")
    assert sub.current_period_end == ts(T + 14 * 86400)
    assert sub.created_at == ts(1761955200)
    assert not sub.cancel_at_period_end and not sub.paused


def test_card_expired() -> None:
    event = normalize_event(load("card_expired.json"))
    assert event.kind == EventKind.payment_method_updated
    pm = event.payment_method
    assert pm is not None
    assert pm.id == "pm_AzZlGJVAb1dPs01"
    assert pm.customer_id == "AzZlGJVAb1c2d3E4"
    assert pm.is_default
    assert pm.card is not None
    assert (pm.card.brand, pm.card.exp_month, pm.card.exp_year, pm.card.last4) == ("visa", 10, 2026, "4242")
    assert not pm.usable_at(event.occurred_at)


def test_card_event_with_only_the_customer() -> None:
    payload = load("card_expired.json")
    del payload["content"]["card"]
    pm = normalize_event(payload).payment_method
    assert pm is not None and pm.id == "pm_AzZlGJVAb1dPs01" and pm.card is None and pm.is_default


def test_payment_source_updated() -> None:
    event = normalize_event(load("payment_source_updated.json"))
    assert event.kind == EventKind.payment_method_updated
    pm = event.payment_method
    assert pm is not None and pm.card is not None
    assert pm.id == "pm_AzZlGJVAb3mC01" and pm.is_default
    assert (pm.card.brand, pm.card.funding, pm.card.last4, pm.card.exp_year) == (
        "mastercard",
        "unknown",
        "0005",
        2030,
    )
    assert event.customer is not None and event.customer.name == "Jonas Weber"


def test_unknown_event_type_is_other() -> None:
    event = normalize_event(load("credit_note_created.json"))
    assert event.kind == EventKind.other
    assert event.customer is not None and event.customer.id == "AzZlGJVAb1c2d3E4"
    assert event.invoice is None and event.attempt is None


def test_unknown_event_type_with_a_bad_resource_is_kept() -> None:
    payload = load("credit_note_created.json")
    payload["content"]["customer"]["created_at"] = "yesterday"
    event = normalize_event(payload)
    assert event.kind == EventKind.other and event.customer is None


def test_event_kinds_cover_the_reference_events() -> None:
    for name in ["payment_failed", "payment_succeeded", "invoice_generated", "invoice_updated",
                 "subscription_changed", "subscription_cancelled", "subscription_paused",
                 "subscription_resumed", "subscription_renewed", "card_expiry_reminder", "card_expired",
                 "card_updated", "payment_source_updated", "payment_source_expiring",
                 "payment_source_expired"]:  # fmt: skip
        assert name in EVENT_KINDS


# ------------------------------------------------------------------------------------------------
# declines from error codes and texts


def _failed(**error: Any) -> dict[str, Any]:
    txn = load("payment_failed_insufficient_funds.json")["content"]["transaction"]
    for key in ("error_code", "error_text", "error_detail"):
        txn.pop(key, None)
    txn.update(error)
    return txn


@pytest.mark.parametrize(
    ("error", "code", "category"),
    [
        ({"error_code": "card_expired"}, "expired_card", DeclineCategory.needs_new_card),
        ({"error_code": "payment_processing_failed", "error_text": "Insufficient funds"},
         "insufficient_funds", DeclineCategory.soft),
        ({"error_code": "3001", "error_text": "Do Not Honor"}, "do_not_honor", DeclineCategory.soft),
        ({"error_code": "payment_method_verification_failed"}, "incorrect_number",
         DeclineCategory.needs_new_card),
        ({"error_code": "payment_processing_failed"}, "generic_decline", DeclineCategory.soft),
        ({"error_detail": {"decline_code": "stolen_card"}, "error_code": "card_declined"}, "stolen_card",
         DeclineCategory.hard),
        ({"error_detail": {"decline_code": "2046"}, "error_text": "Declined"}, "2046", DeclineCategory.soft),
        ({}, "generic_decline", DeclineCategory.soft),
    ],
)  # fmt: skip
def test_decline_codes(error: dict[str, Any], code: str, category: DeclineCategory) -> None:
    d = chargebee_transaction_attempt(_failed(**error)).decline
    assert d is not None
    assert d.code == code
    assert d.category == category
    assert d.never_retry is (category == DeclineCategory.hard)


def test_visa_category_1_and_timeout() -> None:
    visa = {"card_type": "visa", "customer_id": "c"}
    d = chargebee_transaction_attempt(_failed(error_detail={"network_error_code": "R1"}), card=visa).decline
    assert d is not None and d.never_retry and d.network_decline_code == "R1"
    d = chargebee_transaction_attempt(_failed(status="timeout")).decline
    assert d is not None and d.code == "issuer_not_available" and d.category == DeclineCategory.try_later


def test_mac_from_network_error_code_with_a_retry_wait() -> None:
    mc = {"card_type": "mastercard", "customer_id": "c"}
    d = chargebee_transaction_attempt(_failed(error_detail={"network_error_code": "25"}), card=mc).decline
    assert d is not None and d.network_advice_code == "25" and d.retry_after_hours == 24


def test_platform_declines_file() -> None:
    table = load_platform_declines()
    assert table.version == "platform-declines-v1"
    assert table.default == "generic_decline"
    assert table.lookup("Insufficient funds.") == "insufficient_funds"
    assert load_platform_declines() is table  # cached


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "expected a mapping"),
        ({"chargebee": {"error_codes": {}}}, "`version`"),
        ({"version": "v", "chargebee": []}, "`chargebee` must be a mapping"),
        ({"version": "v", "chargebee": {"error_codes": []}}, "`chargebee.error_codes` must be a mapping"),
        ({"version": "v", "chargebee": {"error_codes": {"x": 3}}}, "`chargebee.error_codes.x`"),
        ({"version": "v", "chargebee": {"error_codes": {"A b": "x", "a_b": "y"}}}, "twice"),
    ],
)
def test_malformed_platform_declines(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_platform_declines(raw, "test.yaml")


def test_platform_declines_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_platform_declines(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_platform_declines(str(bad))


# ------------------------------------------------------------------------------------------------
# rejections


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.pop("id"), "id: required field is missing"),
        (lambda p: p.update(id=" "), "id: must not be blank"),
        (lambda p: p.update(id=5), "id: expected a string, got integer"),
        (lambda p: p.pop("event_type"), "event_type: required field is missing"),
        (lambda p: p.pop("content"), "content: required field is missing"),
        (lambda p: p.update(content=[]), "content: expected an object, got array"),
        (lambda p: p.update(occurred_at="2026-11-03"), "occurred_at: expected a Unix timestamp"),
        (lambda p: p.update(object="invoice"), "object: expected 'event'"),
        (lambda p: p["content"].pop("transaction"), "content.transaction: required field is missing"),
        (lambda p: p["content"]["transaction"].update(amount="49.00"),
         "content.transaction.amount: expected an integer, got string"),
        (lambda p: p["content"]["transaction"].update(status="weird"),
         "content.transaction.status: expected one of"),
        (lambda p: p["content"]["transaction"].update(currency_code="EURO"),
         "content.transaction.currency_code: expected a 3-letter"),
        (lambda p: p["content"]["transaction"].update(linked_invoices={}),
         "content.transaction.linked_invoices: expected a list, got object"),
        (lambda p: p["content"]["invoice"].update(status="open"), "content.invoice.status: expected one of"),
        (lambda p: p["content"]["invoice"].update(next_retry_at=-5),
         "content.invoice.next_retry_at: timestamp"),
        (lambda p: p["content"]["card"].update(expiry_month="08"),
         "content.card.expiry_month: expected an integer"),
        (lambda p: p["content"]["transaction"]["error_detail"].update(decline_code=[]),
         "content.transaction.error_detail.decline_code: expected a string"),
    ],
)  # fmt: skip
def test_rejections_name_the_field(mutate: Any, message: str) -> None:
    payload = load("payment_failed_insufficient_funds.json")
    mutate(payload)
    with pytest.raises(WebhookRejected) as info:
        normalize_event(payload)
    assert info.value.status == 422
    assert message in info.value.message


@pytest.mark.parametrize("payload", [None, [], "ev_1", 3, 2.5, True, {}])
def test_non_events_are_rejected(payload: Any) -> None:
    with pytest.raises(WebhookRejected) as info:
        normalize_event(payload)
    assert info.value.status == 422


def test_card_event_without_a_card_is_rejected() -> None:
    payload = load("card_expired.json")
    payload["content"] = {}
    with pytest.raises(WebhookRejected, match="card, a payment_source or a customer"):
        normalize_event(payload)


def test_object_functions_name_their_object() -> None:
    with pytest.raises(WebhookRejected, match=r"^invoice\.currency_code: required field is missing$"):
        chargebee_invoice({"id": "1", "status": "paid", "amount_due": 0})
    with pytest.raises(WebhookRejected, match=r"^card: a card needs payment_source_id or customer_id$"):
        chargebee_card({"card_type": "visa"})


# ------------------------------------------------------------------------------------------------
# fuzzing: any JSON value in, a CanonicalEvent or a WebhookRejected out

KEYS = sorted(
    {
        "id", "object", "event_type", "occurred_at", "content", "api_version", "source", "customer",
        "subscription", "invoice", "transaction", "card", "payment_source", "credit_note", "amount",
        "amount_due", "amount_paid", "total", "currency_code", "status", "date", "error_code", "error_text",
        "error_detail", "decline_code", "network_error_code", "processor_advice_code", "linked_invoices",
        "linked_payments", "line_items", "subscription_items", "card_type", "brand", "expiry_month",
        "payment_source_id", "primary_payment_source_id", "customer_id", "meta_data",
    }
)  # fmt: skip

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["USD", "failure", "success", "paid", "mastercard", "visa", "03", "pm_1", "event"])
)
json_keys = st.sampled_from(KEYS) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=6),
    max_leaves=25,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIXTURE_PAYLOADS = [json.loads(p.read_text(encoding="utf-8")) for p in ALL]


def _normalize_or_reject(payload: Any) -> None:
    try:
        event = normalize_event(payload)
    except WebhookRejected as exc:
        assert exc.status == 422
        assert exc.message
    else:
        assert isinstance(event, CanonicalEvent)


@FUZZ
@given(json_values)
def test_fuzz_any_json_value(payload: Any) -> None:
    _normalize_or_reject(payload)


@FUZZ
@given(
    st.sampled_from([*sorted(EVENT_KINDS), "credit_note_created", "dunning_updated"]),
    st.dictionaries(json_keys, json_values, max_size=8) | json_values,
)
def test_fuzz_random_content_in_a_valid_envelope(event_type: str, content: Any) -> None:
    _normalize_or_reject(
        {"id": "ev_1", "occurred_at": T, "object": "event", "api_version": "v2", "event_type": event_type,
         "content": content}
    )  # fmt: skip


@FUZZ
@given(st.data())
def test_fuzz_mutated_fixtures(data: st.DataObject) -> None:
    payload = copy.deepcopy(data.draw(st.sampled_from(FIXTURE_PAYLOADS)))
    rnd = random.Random(data.draw(st.integers(min_value=0, max_value=2**32)))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path = rnd.choice(fuzz.paths(payload))  # uniform over the tree; the root is covered above
        op = data.draw(st.sampled_from(["delete", "replace"]))
        payload = fuzz.mutate(payload, path, op, data.draw(json_values))
    _normalize_or_reject(payload)


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("dunning_updated", "invoice_finalized"),
        ("payment_due_reminder", "other"),
        ("transaction_updated", "other"),
    ],
)
def test_dunning_reminder_and_transaction_updates_are_mirrored(event_type: str, kind: str) -> None:
    raw = json.loads((FIXTURES / "payment_failed_insufficient_funds.json").read_text())
    raw["event_type"] = event_type
    ev = normalize_event(raw)
    assert ev.kind.value == kind
    assert ev.invoice is not None and ev.invoice.id == "INV-2026-0117" and ev.invoice.source_version
    assert ev.attempt is not None and ev.attempt.source_version == 1793700000000
    broken = json.loads(json.dumps(raw))
    del broken["content"]["invoice" if event_type != "transaction_updated" else "transaction"]
    with pytest.raises(WebhookRejected):
        normalize_event(broken)
