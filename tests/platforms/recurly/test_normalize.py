"""Recurly thin envelopes -> ThinEvent; enrichment through the local fake API -> CanonicalEvent; the API
object normalizers (amounts, states, declines); and hypothesis: malformed envelopes and API objects only ever
raise WebhookRejected (normalizers) or PlatformError(unreadable_response) (through the client)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billops.domain import DeclineCategory, EventKind, InvoiceStatus
from billops.errors import PlatformError, WebhookRejected
from billops.platforms.ledger import WriteLedger
from billops.platforms.recurly.client import RecurlyPlatformClient
from billops.platforms.recurly.normalize import (
    EVENT_KINDS,
    enrich,
    recurly_account,
    recurly_billing_info,
    recurly_invoice,
    recurly_subscription,
    recurly_transaction_attempt,
    thin_event,
    to_minor,
)
from billops.store import Database
from support.recurly_api import FIXTURES, FakeRecurlyAPI, load_fixture

WEBHOOKS = sorted((FIXTURES / "webhooks").glob("*.json"))
ADA, GRACE, KENJI = "a1ada7k2m9qx", "a2grace4r8tb", "a3kenji6w2vc"


def api_object(collection: str, object_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(o for o in load_fixture(f"api/{collection}") if o["id"] == object_id)
    return found


@pytest.fixture(scope="module")
def api() -> Iterator[FakeRecurlyAPI]:
    with FakeRecurlyAPI() as server:
        server.seed_fixtures()
        yield server


@pytest.fixture(scope="module")
def client(api: FakeRecurlyAPI, tmp_path_factory: pytest.TempPathFactory) -> RecurlyPlatformClient:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('ledger')}/l.db")
    db.migrate()
    return RecurlyPlatformClient(api.api_key, api_url=api.url, ledger=WriteLedger(db))


# ------------------------------------------------------------------------------------------------------
# every fixture: thin event, then enrichment

# file stem -> what the scenario in tests/fixtures/recurly/README.md says the canonical event is:
# (kind, API calls, invoice (id, status, amount_due), attempt (id, outcome, decline code), customer,
#  subscription (id, status), payment method)
Inv = tuple[str, InvoiceStatus, int] | None
Att = tuple[str, str, str | None] | None
EXPECTED: dict[str, tuple[EventKind, list[str], Inv, Att, str | None, tuple[str, str] | None, str | None]] = {
    "payment.failed": (
        EventKind.payment_failed,
        ["/transactions/uuid-0c4f5e6d7a8b9c0d1e2f3a4b5c6d7e8f", "/invoices/i1001adapast", f"/accounts/{ADA}"],
        ("i1001adapast", InvoiceStatus.open, 4900),
        ("t1ada0decl01", "failed", "insufficient_funds"),
        ADA, None, "bi1ada0visa1",
    ),
    "payment.succeeded": (
        EventKind.payment_succeeded,
        ["/transactions/uuid-e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7", "/invoices/i1002gracepd",
         f"/accounts/{GRACE}"],
        ("i1002gracepd", InvoiceStatus.paid, 2450),
        ("t3grace0ok01", "succeeded", None),
        GRACE, None, "bi2grace0mc1",
    ),
    "charge_invoice.created": (
        EventKind.invoice_created,
        ["/invoices/number-1003", f"/accounts/{KENJI}"],
        ("i1003kenjijp", InvoiceStatus.open, 5500),  # JPY: zero-decimal, 5500 yen
        None, KENJI, None, None,
    ),
    "charge_invoice.past_due": (
        EventKind.invoice_finalized,
        ["/invoices/number-1001", f"/accounts/{ADA}"],
        ("i1001adapast", InvoiceStatus.open, 4900),
        ("t1ada0decl01", "failed", "insufficient_funds"),
        ADA, None, "bi1ada0visa1",
    ),
    "charge_invoice.paid": (
        EventKind.invoice_paid,
        ["/invoices/number-1002", f"/accounts/{GRACE}"],
        ("i1002gracepd", InvoiceStatus.paid, 2450),
        ("t3grace0ok01", "succeeded", None),  # the later of the two tries
        GRACE, None, "bi2grace0mc1",
    ),
    "charge_invoice.failed": (
        EventKind.invoice_uncollectible,
        ["/invoices/number-1004", f"/accounts/{ADA}"],
        ("i1004adafail", InvoiceStatus.uncollectible, 1500),
        ("t4ada0expd01", "failed", "expired_card"),
        ADA, None, "bi1ada0visa1",
    ),
    "invoice.created": (
        EventKind.invoice_created,
        ["/invoices/number-1003", f"/accounts/{KENJI}"],
        ("i1003kenjijp", InvoiceStatus.open, 5500),
        None, KENJI, None, None,
    ),
    "invoice.past_due": (
        EventKind.invoice_finalized,
        ["/invoices/number-1001", f"/accounts/{ADA}"],
        ("i1001adapast", InvoiceStatus.open, 4900),
        ("t1ada0decl01", "failed", "insufficient_funds"),
        ADA, None, "bi1ada0visa1",
    ),
    "invoice.closed": (
        EventKind.invoice_uncollectible,  # closed with a balance left: refined from invoice_paid
        ["/invoices/number-1005", f"/accounts/{GRACE}"],
        ("i1005gracecl", InvoiceStatus.uncollectible, 1200),
        None, GRACE, None, "bi2grace0mc1",
    ),
    "subscription.updated": (
        EventKind.subscription_updated,
        ["/subscriptions/uuid-6b1e8f0c2d3a4b5c9e7f0a1b2c3d4e5f", f"/accounts/{ADA}"],
        None, None, ADA, ("s1adapro0001", "active"), "bi1ada0visa1",
    ),
    "subscription.canceled": (
        EventKind.subscription_canceled,
        ["/subscriptions/uuid-1f2e3d4c5b6a79880f1e2d3c4b5a6978", f"/accounts/{ADA}"],
        None, None, ADA, ("s3adaseats01", "active"), "bi1ada0visa1",  # active until the period ends
    ),
    "subscription.expired": (
        EventKind.subscription_canceled,
        ["/subscriptions/uuid-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b", f"/accounts/{KENJI}"],
        None, None, KENJI, ("s4kenjibas01", "canceled"), None,
    ),
    "subscription.renewed": (
        EventKind.subscription_updated,
        ["/subscriptions/uuid-6b1e8f0c2d3a4b5c9e7f0a1b2c3d4e5f", f"/accounts/{ADA}"],
        None, None, ADA, ("s1adapro0001", "active"), "bi1ada0visa1",
    ),
    "subscription.paused": (
        EventKind.subscription_paused,
        ["/subscriptions/uuid-a0b1c2d3e4f5061728394a5b6c7d8e9f", f"/accounts/{GRACE}"],
        None, None, GRACE, ("s2gracepaus1", "paused"), "bi2grace0mc1",
    ),
    "subscription.resumed": (
        EventKind.subscription_resumed,
        ["/subscriptions/uuid-6b1e8f0c2d3a4b5c9e7f0a1b2c3d4e5f", f"/accounts/{ADA}"],
        None, None, ADA, ("s1adapro0001", "active"), "bi1ada0visa1",
    ),
    "subscription.renewal.cc_will_expire": (
        EventKind.card_expiring,
        ["/subscriptions/uuid-5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d", f"/accounts/{GRACE}"],
        None, None, GRACE, ("s5gracetri01", "trialing"), "bi2grace0mc1",
    ),
    "billing_info.updated": (
        EventKind.payment_method_updated,
        ["/accounts/code-cust-grace"],
        None, None, GRACE, None, "bi2grace0mc1",
    ),
    "dunning_event.created": (
        EventKind.invoice_finalized,
        ["/invoices/number-1001", f"/accounts/{ADA}"],
        ("i1001adapast", InvoiceStatus.open, 4900),
        ("t1ada0decl01", "failed", "insufficient_funds"),
        ADA, None, "bi1ada0visa1",
    ),
    "account.created": (EventKind.other, [], None, None, None, None, None),
}  # fmt: skip


def test_every_listed_event_type_has_a_fixture() -> None:
    stems = {p.stem for p in WEBHOOKS}
    assert set(EVENT_KINDS) <= stems
    assert stems == set(EXPECTED)


@pytest.mark.parametrize("path", WEBHOOKS, ids=lambda p: p.stem)
def test_thin_event(path: Path) -> None:
    raw = json.loads(path.read_text())
    thin = thin_event(raw)
    assert thin.event_id == raw["id"]
    assert thin.type == path.stem == f"{raw['object_type']}.{raw['event_type']}"
    assert thin.site_id == "s7bx2kq9m4pd"
    assert thin.occurred_at == datetime.fromisoformat(raw["event_time"])
    assert thin.occurred_at.tzinfo is not None
    assert thin.kind == (EVENT_KINDS[path.stem][0] if path.stem in EVENT_KINDS else EventKind.other)
    for ref in ("uuid", "invoice_number", "account_code"):
        assert getattr(thin, ref) == (str(raw[ref]) if ref in raw else None)


@pytest.mark.parametrize("path", WEBHOOKS, ids=lambda p: p.stem)
def test_enrich(path: Path, api: FakeRecurlyAPI, client: RecurlyPlatformClient) -> None:
    kind, calls, inv, att, customer, sub, method = EXPECTED[path.stem]
    api.clear_requests()
    event = enrich(thin_event(json.loads(path.read_text())), client)

    assert [(r.method, r.path) for r in api.requests] == [("GET", c) for c in calls]  # the fewest calls
    assert event.platform == "recurly"
    assert event.event_type == path.stem
    assert event.kind == kind
    assert event.api_version == "v2021-02-25"
    assert (event.customer.id if event.customer else None) == customer
    assert (event.payment_method.id if event.payment_method else None) == method
    if inv is None:
        assert event.invoice is None
    else:
        assert event.invoice is not None
        assert (event.invoice.id, event.invoice.status, event.invoice.amount_due) == inv
        assert event.invoice.customer_id == customer
    if att is None:
        assert event.attempt is None
    else:
        assert event.attempt is not None and event.invoice is not None
        decline = event.attempt.decline.code if event.attempt.decline else None
        assert (event.attempt.id, event.attempt.outcome, decline) == att
        assert event.attempt.invoice_id == event.invoice.id
        assert event.invoice.latest_attempt_id == event.attempt.id
    if sub is None:
        assert event.subscription is None
    else:
        assert event.subscription is not None
        assert (event.subscription.id, event.subscription.status) == sub
    assert event.starts_recovery == (kind == EventKind.payment_failed)


def test_billing_info_fetched_when_the_account_does_not_embed_it(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient
) -> None:
    api.embed_billing_info = False
    try:
        api.clear_requests()
        event = enrich(thin_event(load_fixture("webhooks/billing_info.updated")), client)
    finally:
        api.embed_billing_info = True
    assert [r.path for r in api.requests] == ["/accounts/code-cust-grace", f"/accounts/{GRACE}/billing_info"]
    assert event.payment_method is not None and event.payment_method.id == "bi2grace0mc1"
    assert event.payment_method.card is not None and event.payment_method.card.brand == "mastercard"


def test_enrich_not_found_is_a_platform_error(client: RecurlyPlatformClient) -> None:
    raw = load_fixture("webhooks/payment.failed") | {"uuid": "ffffffffffffffffffffffffffffffff"}
    with pytest.raises(PlatformError) as err:
        enrich(thin_event(raw), client)
    assert err.value.code == "not_found"
    assert not err.value.retryable


# ------------------------------------------------------------------------------------------------------
# thin envelope validation


def envelope(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = load_fixture("webhooks/payment.failed")
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not ...}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "notification: expected an object, got array"),
        (envelope(id=...), "id: required field is missing"),
        (envelope(id="  "), "id: must not be blank"),
        (envelope(object_type=7), "object_type: expected a string, got integer"),
        (envelope(event_time=...), "event_time: required field is missing"),
        (envelope(event_time=1700000000), "event_time: expected an ISO 8601 time (string), got integer"),
        (envelope(event_time="yesterday"), "event_time: 'yesterday' is not an ISO 8601 time"),
        (envelope(event_time="2026-11-01T09:00:06"), "event_time: '2026-11-01T09:00:06' has no UTC offset"),
        (envelope(site_id=None), "site_id: must not be null"),
        (envelope(uuid=...), "uuid: required field is missing"),
        (envelope(uuid=""), "uuid: must not be blank"),
        (envelope(uuid=["x"]), "uuid: expected a string, got array"),
        (
            load_fixture("webhooks/invoice.closed") | {"invoice_number": 0},
            "invoice_number: expected a positive",
        ),
        (
            load_fixture("webhooks/invoice.closed") | {"invoice_number": True},
            "invoice_number: expected an invoice",
        ),
        (
            load_fixture("webhooks/billing_info.updated") | {"account_code": None},
            "account_code: must not be null",
        ),
    ],
)
def test_thin_envelope_rejections_name_the_field(payload: Any, message: str) -> None:
    with pytest.raises(WebhookRejected) as err:
        thin_event(payload)
    assert err.value.status == 422
    assert message in err.value.message


def test_unknown_event_types_need_no_reference() -> None:
    thin = thin_event(envelope(object_type="gift_card", event_type="purchased", uuid=...))
    assert thin.kind == EventKind.other
    assert thin.type == "gift_card.purchased"


# ------------------------------------------------------------------------------------------------------
# object normalizers


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [(49.0, "usd", 4900), (10.99, "usd", 1099), (0.07, "usd", 7), (19.99, "eur", 1999), (49, "usd", 4900),
     (5500, "jpy", 5500), (5500.0, "krw", 5500), (-12.5, "usd", -1250), (0.1 + 0.2 - 0.3, "usd", None),
     (19.999, "usd", None), (10.5, "jpy", None), (float("nan"), "usd", None), (float("inf"), "usd", None),
     ("10.00", "usd", None), (True, "usd", None), (1e30, "usd", None)],
)  # fmt: skip
def test_amounts_become_exact_minor_units(value: Any, currency: str, minor: int | None) -> None:
    if minor is None:
        with pytest.raises(WebhookRejected) as err:
            to_minor(value, currency, "invoice.total")
        assert err.value.message.startswith("invoice.total: ")
    else:
        assert to_minor(value, currency, "invoice.total") == minor


@pytest.mark.parametrize(
    ("state", "balance", "status"),
    [("pending", 49.0, InvoiceStatus.open), ("processing", 49.0, InvoiceStatus.open),
     ("past_due", 49.0, InvoiceStatus.open), ("open", 49.0, InvoiceStatus.open),
     ("paid", 0.0, InvoiceStatus.paid), ("failed", 49.0, InvoiceStatus.uncollectible),
     ("voided", 0.0, InvoiceStatus.void), ("closed", 0.0, InvoiceStatus.paid),
     ("closed", 49.0, InvoiceStatus.uncollectible)],
)  # fmt: skip
def test_invoice_states(state: str, balance: float, status: InvoiceStatus) -> None:
    raw = api_object("invoices", "i1001adapast") | {
        "state": state,
        "balance": balance,
        "paid": 49.0 - balance,
    }
    inv = recurly_invoice(raw)
    assert inv.status == status
    assert inv.amount_remaining == round(balance * 100)  # what is left unpaid, whatever the state
    assert inv.metadata["state"] == state


def test_invoice_fields() -> None:
    raw = api_object("invoices", "i1001adapast")
    inv = recurly_invoice(raw)
    assert (inv.id, inv.number, inv.customer_id, inv.subscription_id) == (
        "i1001adapast", "1001", ADA, "s1adapro0001",
    )  # fmt: skip
    assert (inv.currency, inv.amount_due, inv.amount_paid, inv.amount_remaining) == ("usd", 4900, 0, 4900)
    assert inv.period_start == datetime(2026, 11, 1, 9, tzinfo=UTC)
    assert inv.period_end == datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert (inv.billing_reason, inv.plan_name, inv.auto_advance) == (
        "subscription_cycle",
        "Pro (monthly)",
        True,
    )
    assert inv.next_payment_attempt is None
    assert inv.attempt_count == 0 and inv.latest_attempt_id is None  # no transactions embedded here


def test_invoice_unknown_state_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match=r"invoice.state: expected one of .* got 'drafted'"):
        recurly_invoice(api_object("invoices", "i1001adapast") | {"state": "drafted"})


def test_transaction_decline_with_gateway_code_and_mastercard_advice() -> None:
    attempt = recurly_transaction_attempt(api_object("transactions", "t2grace0dcl1"))
    assert attempt.outcome == "failed" and attempt.amount == 2450 and attempt.currency == "usd"
    assert attempt.card is not None and (attempt.card.brand, attempt.card.last4) == ("mastercard", "5454")
    assert attempt.gateway == "stripe"
    d = attempt.decline
    assert d is not None
    # status_code "declined" says nothing specific: the gateway's ISO code 05 does (do not honor) ...
    assert (d.code, d.raw_code) == ("do_not_honor", "declined")
    # ... and the Mastercard Merchant Advice Code 24 tightens it: retry after an hour
    assert (d.category, d.network_advice_code, d.retry_after_hours) == (DeclineCategory.try_later, "24", 1)


def test_transaction_error_decline_code_wins_and_category_is_a_fallback() -> None:
    txn = api_object("transactions", "t1ada0decl01")
    stolen = recurly_transaction_attempt(txn, {"code": "declined", "decline_code": "stolen_card"})
    assert stolen.decline is not None
    assert (stolen.decline.code, stolen.decline.category, stolen.decline.never_retry) == (
        "stolen_card", DeclineCategory.hard, True,
    )  # fmt: skip
    bare = txn | {"status_code": None, "status_message": None, "gateway_response_code": None}
    fraud = recurly_transaction_attempt(bare, {"category": "fraud", "code": "declined"})
    assert fraud.decline is not None and fraud.decline.code == "fraudulent"
    nothing = recurly_transaction_attempt(bare)
    assert nothing.decline is not None and nothing.decline.code == "generic_decline"
    unknown = recurly_transaction_attempt(bare, {"decline_code": "Weird Gateway Thing"})
    assert unknown.decline is not None
    assert (unknown.decline.code, unknown.decline.category) == ("weird_gateway_thing", DeclineCategory.soft)
    assert "not in the taxonomy" in unknown.decline.reason


def test_visa_category_1_gateway_code_is_never_retried() -> None:
    txn = api_object("transactions", "t1ada0decl01") | {
        "status_code": "declined",
        "gateway_response_code": "46",
    }
    d = recurly_transaction_attempt(txn).decline
    assert d is not None and d.network == "visa" and d.network_decline_code == "46"
    assert d.category == DeclineCategory.hard and d.never_retry


@pytest.mark.parametrize(
    ("status", "outcome"),
    [("success", "succeeded"), ("declined", "failed"), ("error", "failed"), ("void", "failed"),
     ("pending", "pending"), ("processing", "pending"), ("scheduled", "pending")],
)  # fmt: skip
def test_transaction_statuses(status: str, outcome: str) -> None:
    attempt = recurly_transaction_attempt(api_object("transactions", "t1ada0decl01") | {"status": status})
    assert attempt.outcome == outcome
    assert (attempt.decline is not None) == (status in ("declined", "error"))


def test_subscription_states() -> None:
    canceled = recurly_subscription(api_object("subscriptions", "s3adaseats01"))
    assert (canceled.status, canceled.cancel_at_period_end, canceled.amount) == ("active", True, 1500)
    paused = recurly_subscription(api_object("subscriptions", "s2gracepaus1"))
    assert (paused.status, paused.paused, paused.plan_id, paused.plan_name) == (
        "paused", True, "team-monthly", "Team (monthly)",
    )  # fmt: skip
    trial = recurly_subscription(api_object("subscriptions", "s5gracetri01"))
    assert (trial.status, trial.amount, trial.currency) == ("trialing", 999, "usd")
    jpy = recurly_subscription(api_object("subscriptions", "s4kenjibas01"))
    assert (jpy.status, jpy.amount, jpy.currency) == ("canceled", 1100, "jpy")


def test_account_and_billing_info() -> None:
    acc = api_object("accounts", ADA) | {"billing_info": api_object("billing_infos", "bi1ada0visa1")}
    customer = recurly_account(acc)
    assert (customer.id, customer.email, customer.name, customer.country, customer.timezone) == (
        ADA, "ada@example.com", "Ada Lovelace", "GB", "Europe/London",
    )  # fmt: skip
    assert customer.default_payment_method_id == "bi1ada0visa1"
    assert customer.metadata["account_code"] == "cust-ada"
    pm = recurly_billing_info(api_object("billing_infos", "bi2grace0amx"))
    assert (pm.id, pm.customer_id, pm.type, pm.is_default) == ("bi2grace0amx", GRACE, "card", False)
    assert pm.card is not None and (pm.card.brand, pm.card.exp_month, pm.card.exp_year) == ("amex", 6, 2028)
    paypal = recurly_billing_info(
        api_object("billing_infos", "bi1ada0visa1")
        | {"payment_method": {"object": "paypal_billing_agreement", "billing_agreement_id": "B-1"}}
    )
    assert (paypal.type, paypal.card) == ("paypal_billing_agreement", None)


# ------------------------------------------------------------------------------------------------------
# hypothesis: malformed input never raises anything but the documented errors

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
TIMES = st.sampled_from(
    ["2026-11-01T09:00:00Z", "0001-01-01T00:00:00+01:00", "2026-13-01T00:00:00Z", "", "Z"]
)


def mutate(obj: Any, data: st.DataObject, depth: int = 0) -> Any:
    """Replace, delete or keep fields of a JSON object, recursively."""
    if isinstance(obj, dict) and obj:
        out = dict(obj)
        for key in data.draw(st.lists(st.sampled_from(sorted(out)), max_size=3, unique=True)):
            action = data.draw(st.sampled_from(["json", "delete", "time", "deeper"]))
            if action == "json":
                out[key] = data.draw(JSON)
            elif action == "delete":
                del out[key]
            elif action == "time":
                out[key] = data.draw(TIMES)
            elif depth < 3:
                out[key] = mutate(out[key], data, depth + 1)
        return out
    if isinstance(obj, list) and obj:
        return [mutate(item, data, depth + 1) for item in obj]
    return obj


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_malformed_envelopes_raise_only_webhook_rejected(data: st.DataObject) -> None:
    base = load_fixture(f"webhooks/{data.draw(st.sampled_from([p.stem for p in WEBHOOKS]))}")
    payload = data.draw(JSON) if data.draw(st.booleans()) else mutate(base, data)
    try:
        thin_event(payload)
    except WebhookRejected as exc:
        assert exc.status == 422


NORMALIZERS = [
    (recurly_invoice, "invoices", "i1002gracepd"),
    (recurly_account, "accounts", ADA),
    (recurly_transaction_attempt, "transactions", "t2grace0dcl1"),
    (recurly_subscription, "subscriptions", "s5gracetri01"),
    (recurly_billing_info, "billing_infos", "bi2grace0mc1"),
]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_malformed_api_objects_raise_only_webhook_rejected(data: st.DataObject) -> None:
    normalize, collection, object_id = data.draw(st.sampled_from(NORMALIZERS))
    raw = api_object(collection, object_id)
    if collection == "invoices":
        raw["transactions"] = load_fixture("api/transactions")[1:3]
    try:
        normalize(mutate(raw, data))
    except WebhookRejected as exc:
        assert exc.status == 422


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_malformed_api_answers_become_unreadable_response(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient, data: st.DataObject
) -> None:
    """Through the SDK and the client over HTTP: a malformed object is a PlatformError, never a crash."""
    event = data.draw(st.sampled_from(["payment.failed", "charge_invoice.paid", "subscription.paused"]))
    thin = thin_event(load_fixture(f"webhooks/{event}"))
    collection = {"payment": "transactions", "charge_invoice": "invoices", "subscription": "subscriptions"}
    target = collection[thin.object_type]
    ref = {"transactions": "t1ada0decl01", "invoices": "i1002gracepd", "subscriptions": "s2gracepaus1"}[
        target
    ]
    original = copy.deepcopy(api.store[target][ref])
    api.store[target][ref] = mutate(original, data) | {"id": ref, "uuid": original["uuid"]}
    if target == "invoices":
        api.store[target][ref]["number"] = original["number"]
    try:
        enrich(thin, client)
    except PlatformError as exc:
        assert exc.code in ("unreadable_response", "not_found"), exc
    finally:
        api.store[target][ref] = original
