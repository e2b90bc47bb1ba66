"""Zuora normalizer: our callout bodies (tests/fixtures/zuora, BillOps' documented templates filled in),
Object Query objects, exact amounts, timestamps, declines, and fuzzing (only WebhookRejected escapes)."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billops.domain.billing import DeclineCategory, InvoiceStatus
from billops.domain.declines import load_taxonomy
from billops.domain.events import EventKind
from billops.errors import WebhookRejected
from billops.platforms.zuora.normalize import (
    load_platform_declines,
    minor_units,
    normalize_event,
    parse_time,
    to_decimal,
    zuora_account,
    zuora_invoice,
    zuora_payment_attempt,
    zuora_payment_method,
    zuora_subscription,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "zuora"
ALL = sorted(FIXTURES.glob("*.json"))
PST = timezone(timedelta(hours=-8))


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def rejected(payload: Any) -> str:
    with pytest.raises(WebhookRejected) as err:
        normalize_event(payload)
    assert err.value.status == 422
    return err.value.message


def test_fixture_set() -> None:
    assert len(ALL) == 11


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_fixture_normalizes(path: Path) -> None:
    body = json.loads(path.read_text(encoding="utf-8"))
    event = normalize_event(body)
    assert event.platform == "zuora" and event.event_type == body["eventType"]
    assert event.occurred_at.tzinfo is UTC
    assert event.customer is not None and event.customer.id == body["account"]["id"]
    assert event.event_id == normalize_event(copy.deepcopy(body)).event_id  # stable: Zuora's retries dedupe
    if "payment" in body:
        assert event.attempt is not None
        assert event.event_id == (body.get("eventId") or f"{body['eventType']}:{body['payment']['id']}")


# ---------------------------------------------------------------- payment events


@pytest.mark.parametrize(
    ("name", "code", "category", "never_retry", "network", "ndc", "amount", "currency"),
    [
        (
            "payment_declined_insufficient_funds",
            "insufficient_funds",
            DeclineCategory.soft,
            False,
            "visa",
            None,
            4999,
            "usd",
        ),
        (
            "payment_declined_do_not_honor",
            "do_not_honor",
            DeclineCategory.soft,
            False,
            "visa",
            "05",
            12900,
            "eur",
        ),
        (
            "payment_declined_stolen_card",
            "stolen_card",
            DeclineCategory.hard,
            True,
            "mastercard",
            None,
            7550,
            "eur",
        ),
        (
            "payment_declined_expired_card",
            "expired_card",
            DeclineCategory.needs_new_card,
            False,
            "amex",
            None,
            120000,
            "usd",
        ),
        (
            "payment_declined_closed_account",
            "invalid_account",
            DeclineCategory.hard,
            True,
            "visa",
            "46",
            1900,
            "usd",
        ),
        (
            "payment_declined_with_invoice",
            "insufficient_funds",
            DeclineCategory.soft,
            False,
            "visa",
            "51",
            9800,
            "jpy",
        ),
    ],
)
def test_payment_declined(
    name: str,
    code: str,
    category: DeclineCategory,
    never_retry: bool,
    network: str,
    ndc: str | None,
    amount: int,
    currency: str,
) -> None:
    body = load(name)
    event = normalize_event(body)
    assert event.kind == EventKind.payment_failed
    att = event.attempt
    assert att is not None and att.outcome == "failed" and att.id == body["payment"]["id"]
    assert (att.amount, att.currency) == (amount, currency)
    assert att.payment_method_id == body["paymentMethod"]["id"] and att.customer_id == body["account"]["id"]
    assert att.gateway == body["payment"]["gateway"]
    d = att.decline
    assert d is not None
    assert (d.code, d.category, d.never_retry, d.network, d.network_decline_code) == (
        code, category, never_retry, network, ndc,
    )  # fmt: skip
    assert d.raw_code == body["payment"]["gatewayResponseCode"]
    assert d.message == body["payment"]["gatewayResponse"] and d.taxonomy_version == "declines-v1"
    assert event.payment_method is not None and event.payment_method.is_default
    assert event.payment_method.card is not None and event.payment_method.card.brand == network


def test_payment_declined_insufficient_funds_in_detail() -> None:
    event = normalize_event(load("payment_declined_insufficient_funds"))
    assert event.event_id == "PaymentDeclined:8ad09be48db5aa7a018f3a5b6c7d0101"
    assert event.occurred_at == datetime(2026, 11, 3, 17, 15, 2, tzinfo=UTC)
    att = event.attempt
    assert att is not None and att.attempted_at == datetime(2026, 11, 3, 9, 15, tzinfo=PST)
    assert att.card is not None
    assert (att.card.brand, att.card.last4, att.card.exp_month, att.card.exp_year) == (
        "visa",
        "4242",
        8,
        2028,
    )
    assert att.invoice_id is None and event.invoice is None  # Zuora's Payment data source has no invoice
    assert not event.starts_recovery
    cust = event.customer
    assert cust is not None
    assert (cust.name, cust.email, cust.country) == (
        "Northwind Analytics",
        "billing@northwind.example",
        "United States",
    )
    assert cust.default_payment_method_id == "8ad09be48db5aa7a018dc0a1b2c3pm01"
    assert cust.metadata == {"account_number": "A00001042"}


def test_payment_declined_with_an_invoice_starts_a_recovery() -> None:
    event = normalize_event(load("payment_declined_with_invoice"))
    assert event.event_id == "wf-run-88213:PaymentDeclined"  # the template's own eventId wins
    assert event.occurred_at == datetime(2026, 11, 3, 9, 55, 2, tzinfo=UTC)  # Unix seconds, as text
    inv = event.invoice
    assert inv is not None and inv.id == "8ad09fc28d4e5f6a018f3dff00000501" and inv.number == "INV00030021"
    assert (inv.status, inv.amount_due, inv.amount_remaining, inv.currency) == (
        InvoiceStatus.open,
        9800,
        9800,
        "jpy",
    )
    assert inv.latest_attempt_id == event.attempt.id  # type: ignore[union-attr]
    assert inv.due_date == datetime(2026, 11, 3, tzinfo=UTC) and inv.auto_advance is True
    assert event.attempt is not None and event.attempt.invoice_id == inv.id
    assert event.starts_recovery


def test_payment_processed() -> None:
    event = normalize_event(load("payment_processed"))
    assert event.kind == EventKind.payment_succeeded
    assert event.event_id == "PaymentProcessed:8ad09be48db5aa7a018f4a0000000111"
    att = event.attempt
    assert att is not None and att.outcome == "succeeded" and att.decline is None and att.amount == 4999


def test_payment_status_must_agree_with_the_event() -> None:
    body = load("payment_declined_insufficient_funds")
    body["payment"]["status"] = "Processed"
    assert "payment.status" in rejected(body)
    body = load("payment_processed")
    body["payment"]["status"] = "Error"
    assert "payment.status" in rejected(body)
    body["payment"]["status"] = ""  # an empty merge field: the event decides
    assert normalize_event(body).attempt.outcome == "succeeded"  # type: ignore[union-attr]


# ---------------------------------------------------------------- invoice events


def test_invoice_posted() -> None:
    event = normalize_event(load("invoice_posted"))
    assert event.kind == EventKind.invoice_finalized
    assert event.event_id == "InvoicePosted:8ad09be48db5aa7a018f2f0000001001"
    inv = event.invoice
    assert inv is not None
    assert (inv.status, inv.amount_due, inv.amount_paid, inv.amount_remaining) == (
        InvoiceStatus.open,
        4999,
        0,
        4999,
    )
    assert (
        inv.created_at == datetime(2026, 11, 1, 8, 5, 10, tzinfo=UTC)
        and inv.billing_reason == "subscription_cycle"
    )
    assert inv.customer_id == "8ad09be48db5aa7a018dc0a1b2c30001" and event.attempt is None


def test_invoice_posted_with_nothing_to_collect_is_paid() -> None:
    inv = normalize_event(load("invoice_posted_fully_credited")).invoice
    assert inv is not None
    assert (inv.status, inv.amount_due, inv.amount_paid, inv.amount_remaining) == (
        InvoiceStatus.paid,
        120000,
        120000,
        0,
    )
    assert inv.auto_advance is False


def test_invoice_due() -> None:
    event = normalize_event(load("invoice_due"))
    assert event.kind == EventKind.invoice_upcoming
    assert event.event_id == "InvoiceDue:8ad0887e8e1f4b2c018f2f0000002001:2026-12-01"
    body = load("invoice_due")
    body["timestamp"] = "2026-12-05T06:00:00-08:00"  # past due: stored, starts nothing
    assert normalize_event(body).kind == EventKind.other


def test_unknown_event_type_is_other_and_best_effort() -> None:
    event = normalize_event(load("account_created_unhandled"))
    assert event.kind == EventKind.other and event.customer is not None
    assert event.customer.default_payment_method_id is None  # "" rendered for a missing merge field
    body = load("account_created_unhandled")
    body["invoice"] = {"id": "X", "status": "Weird"}  # not read strictly for an event BillOps does not act on
    assert normalize_event(body).invoice is None


@pytest.mark.parametrize(
    ("status", "balance", "expected"),
    [
        ("Posted", "10.00", InvoiceStatus.open),
        ("Posted", "0", InvoiceStatus.paid),
        ("Canceled", "10.00", InvoiceStatus.void),
        ("Draft", "10.00", InvoiceStatus.draft),
        ("Reversed", "0", InvoiceStatus.void),
    ],
)
def test_invoice_status_mapping(status: str, balance: str, expected: InvoiceStatus) -> None:
    inv = zuora_invoice(
        {"id": "I1", "status": status, "amount": "10.00", "balance": balance, "currency": "USD"}
    )
    assert inv.status == expected
    assert inv.amount_remaining == (0 if expected in (InvoiceStatus.paid, InvoiceStatus.void) else 1000)


def test_unknown_invoice_status_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match=r"invoice.status: expected one of"):
        zuora_invoice({"id": "I1", "status": "Frozen", "amount": "10", "currency": "USD"})


# ---------------------------------------------------------------- money and time


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [("49.99", "usd", 4999), ("49.990000000", "usd", 4999), (Decimal("0.1"), "usd", 10), (0.1, "eur", 10),
     (9800, "jpy", 9800), ("1.234", "kwd", 1234), ("1e3", "usd", 100000), ("-5.00", "usd", -500),
     ("1,234.56", "usd", 123456)],
)  # fmt: skip
def test_minor_units_are_exact(value: Any, currency: str, minor: int) -> None:
    d = to_decimal(value, "x")
    assert d is not None and minor_units(d, currency, "x") == minor


@pytest.mark.parametrize(
    ("value", "currency", "problem"),
    [("49.999", "usd", "more decimals"), ("10.5", "jpy", "more decimals"), ("NaN", "usd", "finite"),
     ("Infinity", "usd", "finite"), ("1e30", "usd", "out of range"), ("ten", "usd", "decimal amount"),
     (True, "usd", "boolean"), ([1], "usd", "array")],
)  # fmt: skip
def test_bad_amounts(value: Any, currency: str, problem: str) -> None:
    with pytest.raises(WebhookRejected, match=problem) as err:
        d = to_decimal(value, "payment.amount")
        assert d is not None
        minor_units(d, currency, "payment.amount")
    assert err.value.message.startswith("payment.amount")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1793727302, datetime(2026, 11, 3, 17, 35, 2, tzinfo=UTC)),
     ("1793727302000", datetime(2026, 11, 3, 17, 35, 2, tzinfo=UTC)),
     ("2026-11-03T09:35:02.000-08:00", datetime(2026, 11, 3, 17, 35, 2, tzinfo=UTC)),
     ("2026-11-03T17:35:02Z", datetime(2026, 11, 3, 17, 35, 2, tzinfo=UTC)),
     ("2026-11-03 17:35:02", datetime(2026, 11, 3, 17, 35, 2, tzinfo=UTC)),
     ("2026-11-03", datetime(2026, 11, 3, tzinfo=UTC))],
)  # fmt: skip
def test_parse_time(value: Any, expected: datetime) -> None:
    parsed = parse_time(value, "timestamp")
    assert parsed == expected and parsed is not None and parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value", ["yesterday", "2026-13-01", -5, 10**15, True, {"a": 1}, "0001-01-01T00:00:00+01:00"]
)
def test_bad_times(value: Any) -> None:
    with pytest.raises(WebhookRejected, match=r"^timestamp: "):
        parse_time(value, "timestamp")


# ---------------------------------------------------------------- rejections name the field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b.pop("eventType"), "eventType: required field is missing"),
        (lambda b: b.update(eventType="  "), "eventType: must not be blank"),
        (lambda b: b.pop("timestamp"), "timestamp: required field is missing"),
        (lambda b: b["account"].update(id=""), "account.id: required field is missing"),
        (lambda b: b.pop("payment"), "payment.id: required field is missing"),
        (
            lambda b: b["payment"].update(amount={"value": 1}),
            "payment.amount: expected a decimal amount, got object",
        ),
        (lambda b: b["payment"].update(currency="US Dollar"), "payment.currency: expected a 3-letter"),
        (lambda b: b["payment"].update(createdDate=7, updatedDate=None), None),
        (lambda b: b["paymentMethod"].update(creditCardExpirationMonth="8.5"), "creditCardExpirationMonth"),
        (lambda b: b["payment"].update(gatewayResponse=["x"]), "payment.gatewayResponse: expected a string"),
        (lambda b: b.update(account="A1"), "account: expected an object, got string"),
    ],
)
def test_rejections_name_the_field(change: Any, field: str | None) -> None:
    body = load("payment_declined_insufficient_funds")
    change(body)
    if field is None:  # still valid: a Unix time is accepted anywhere a date is
        assert normalize_event(body).attempt is not None
        return
    assert field in rejected(body)


def test_not_an_object() -> None:
    assert rejected([1, 2]) == "body: expected an object, got array"


# ---------------------------------------------------------------- declines


def decline_of(code: str | None, text: str | None, card: str = "Visa") -> Any:
    att = zuora_payment_attempt(
        {"id": "P1", "status": "Error", "amount": "1.00", "currency": "USD", "createdDate": "2026-11-03",
         "gatewayResponseCode": code, "gatewayResponse": text,
         "paymentMethod": {"id": "PM", "creditCardType": card, "creditCardMaskNumber": "****1111"}}
    )  # fmt: skip
    return att.decline


@pytest.mark.parametrize(
    ("code", "text", "card", "expected", "category"),
    [
        (
            "card_declined",
            "Transaction declined.402 - [card_error/card_declined/expired_card] Your card has expired.",
            "Visa",
            "expired_card",
            DeclineCategory.needs_new_card,
        ),
        (None, "Refused - Not enough balance", "Visa", "insufficient_funds", DeclineCategory.soft),
        (
            "CardSecurityCodeCheckingFailed",
            None,
            "MasterCard",
            "incorrect_cvc",
            DeclineCategory.needs_new_card,
        ),
        (
            "FraudProtectionDeclined",
            "Declined by fraud screening",
            "Visa",
            "fraudulent",
            DeclineCategory.hard,
        ),
        ("04", "Pick up card", "Visa", "pickup_card", DeclineCategory.hard),
        ("R1", None, "Visa", "revocation_of_authorization", DeclineCategory.hard),
        ("2001", "Insufficient Funds", "Discover", "insufficient_funds", DeclineCategory.soft),
        ("Declined", "Declined", "Visa", "generic_decline", DeclineCategory.soft),
        ("XYZ-77", "Something odd happened", "Visa", "generic_decline", DeclineCategory.soft),
        (None, None, "Visa", "generic_decline", DeclineCategory.soft),
    ],
)
def test_decline_mapping(
    code: str | None, text: str | None, card: str, expected: str, category: DeclineCategory
) -> None:
    d = decline_of(code, text, card)
    assert (d.code, d.category) == (expected, category)


def test_visa_category_1_response_code_is_never_retried() -> None:
    d = decline_of("15", "No such issuer")  # incorrect_number: needs a new card, but Visa says never
    assert (d.code, d.network_decline_code, d.category) == ("incorrect_number", "15", DeclineCategory.hard)
    assert d.never_retry and "category 1" in d.reason
    mc = decline_of("15", None, "MasterCard")
    assert mc.network_decline_code is None and mc.category == DeclineCategory.needs_new_card


def test_zuora_decline_section_maps_onto_the_taxonomy() -> None:
    mapping = load_platform_declines()
    taxonomy = load_taxonomy()
    assert mapping.default == "generic_decline" and len(mapping.codes) > 80
    assert sorted({c for c in mapping.codes.values() if c not in taxonomy.codes}) == []
    assert mapping.lookup("05") == "do_not_honor" and mapping.lookup("5") is None  # codes stay strings


# ---------------------------------------------------------------- API objects (Object Query JSON)


def test_api_objects() -> None:
    acct = zuora_account(
        {
            "id": "A1",
            "name": "",
            "accountNumber": "A0001",
            "currency": "EUR",
            "crmId": "0015",
            "billTo": {"firstName": "Lena", "lastName": "Vogt", "personalEmail": "lena@example.com"},
            "createdDate": "2026-01-05T00:00:00.000-08:00",
        }
    )
    assert (acct.name, acct.email, acct.metadata) == (
        "Lena Vogt",
        "lena@example.com",
        {"account_number": "A0001", "crm_id": "0015"},
    )
    pm = zuora_payment_method(
        {"id": "PM2", "accountId": "A1", "type": "ACH", "achAccountNumberMask": "****6789"}, default_id="PM2"
    )
    assert (pm.type, pm.card, pm.is_default, pm.customer_id) == ("us_bank_account", None, True, "A1")
    sub = zuora_subscription(
        {
            "id": "S1",
            "accountId": "A1",
            "status": "Suspended",
            "cMRR": Decimal("49.99"),
            "currency": "USD",
            "termEndDate": "2027-01-01",
            "autoRenew": False,
            "termType": "TERMED",
        }
    )
    assert (sub.status, sub.paused, sub.amount, sub.interval) == ("paused", True, 4999, "month")
    active = zuora_subscription({"id": "S2", "status": "Active", "autoRenew": False, "termType": "TERMED"})
    assert active.cancel_at_period_end and active.amount is None
    att = zuora_payment_attempt(
        {
            "id": "P1",
            "status": "Processed",
            "amount": Decimal("12.50"),
            "currency": "USD",
            "createdDate": "2026-11-03T10:00:00.000-08:00",
            "paymentMethodId": "PM1",
            "paymentApplications": [{"invoiceId": "I9", "applyAmount": Decimal("12.50")}],
            "paymentMethod": {
                "id": "PM1",
                "creditCardType": "AmericanExpress",
                "creditCardMaskNumber": "***0005",
            },
        }
    )
    assert (att.invoice_id, att.amount, att.outcome, att.card.brand) == ("I9", 1250, "succeeded", "amex")  # type: ignore[union-attr]
    created = zuora_payment_attempt(
        {
            "id": "P2",
            "number": "P-1",
            "status": "Processing",
            "amount": 3,
            "currency": "JPY",
            "effectiveDate": "2026-11-03",
        }
    )
    assert (created.outcome, created.amount, created.attempted_at) == (
        "pending",
        3,
        datetime(2026, 11, 3, tzinfo=UTC),
    )


# ---------------------------------------------------------------- fuzzing: only WebhookRejected escapes

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELD_VALUES = JSON | st.sampled_from(
    ["", "NaN", "1e999999", "-1", "49.999", "2026-02-30", "9999-12-31T23:59:59-14:00", "Error", "Posted",
     "Processed", "USD", "ZZZ", "1793727302000", "0", "true", "08"]
)  # fmt: skip


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    for key in path[:-1]:
        obj = obj[key]
    if delete:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


def _only_rejections(payload: Any) -> None:
    try:
        normalize_event(payload)
    except WebhookRejected as exc:
        assert exc.status == 422 and exc.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_random_json_only_rejects(payload: Any) -> None:
    _only_rejections(payload)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(ALL), st.randoms(use_true_random=False), FIELD_VALUES, st.booleans(), st.integers(1, 3)
)
def test_mutated_fixtures_only_reject(
    path: Path, rnd: random.Random, value: Any, delete: bool, times: int
) -> None:
    body = json.loads(path.read_text(encoding="utf-8"))
    for _ in range(times):
        paths = _paths(body)
        if not paths:
            break
        _set(body, rnd.choice(paths), copy.deepcopy(value), delete)
    _only_rejections(body)
