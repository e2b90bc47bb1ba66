"""ChargebeePlatformClient over real HTTP, through the official SDK, against the local fake Chargebee API
(tests/support/chargebee_api.py), which records every request: method, path, query, Basic auth,
idempotency header and form body are asserted from what the SDK actually sent."""

from __future__ import annotations

import base64
import copy
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from billops.domain import DeclineCategory, InvoiceStatus, Money, PaymentMethod
from billops.errors import InputError, PlatformError
from billops.platforms.base import PlatformClient
from billops.platforms.chargebee.client import (
    IDEMPOTENCY_KEY_MAX,
    RESOURCES,
    ChargebeePlatformClient,
    note_text,
    sdk_address,
)
from support.chargebee_api import FakeChargebeeAPI, load_fixture
from support.loopback import RecordedRequest

pytestmark = pytest.mark.slow

CUSTOMER = "AzZlGJVAb1c2d3E4"  # Ana Silva, of payment_failed_insufficient_funds.json
SUBSCRIPTION = "AzZlGJVAb1cXy9F7"
INVOICE = "INV-2026-0117"
OLD_TXN = "txn_AzZlGJVAb1fT01"
VISA = "pm_AzZlGJVAb1dPs01"  # Ana's primary payment source
MASTERCARD = "pm_AzZlGJVAb1dPs02"  # a second, backup card


@pytest.fixture
def api() -> Iterator[FakeChargebeeAPI]:
    with FakeChargebeeAPI() as server:
        yield server


@pytest.fixture
def client(api: FakeChargebeeAPI) -> ChargebeePlatformClient:
    return ChargebeePlatformClient(api.site, api.api_key, api_url=api.url)


def visa_source() -> dict[str, Any]:
    """Ana's Visa as a Payment Sources API object, from the card in our payment_failed fixture."""
    card = load_fixture("payment_failed_insufficient_funds")["content"]["card"]
    return {
        "id": VISA,
        "object": "payment_source",
        "customer_id": CUSTOMER,
        "type": "card",
        "status": "valid",
        "gateway": "stripe",
        "gateway_account_id": "gw_AzZlGJVAb0gW01",
        "created_at": 1761955200,
        "card": {
            "brand": card["card_type"],
            "funding_type": card["funding_type"],
            "expiry_month": card["expiry_month"],
            "expiry_year": card["expiry_year"],
            "issuing_country": card["issuing_country"],
            "last4": card["last4"],
            "masked_number": card["masked_number"],
            "object": "card",
        },
    }


def mastercard_source() -> dict[str, Any]:
    """The Mastercard of payment_source_updated.json, given to Ana as a backup card."""
    ps = load_fixture("payment_source_updated")["content"]["payment_source"]
    return {**ps, "id": MASTERCARD, "customer_id": CUSTOMER, "created_at": 1790244000}


def seed_failed_invoice(api: FakeChargebeeAPI) -> None:
    """Ana's open invoice INV-2026-0117 (4900 EUR, in dunning) with its failed transaction, her
    subscription and two payment sources (Visa primary, Mastercard backup)."""
    api.seed_event(load_fixture("payment_failed_insufficient_funds"))
    api.add_payment_source(visa_source())
    api.add_payment_source(mastercard_source())


def stored(api: FakeChargebeeAPI, resource: str, obj_id: str) -> dict[str, Any]:
    obj = api.get(resource, obj_id)
    assert obj is not None, f"{resource} {obj_id} is not in the fake's store"
    return obj


def only(api: FakeChargebeeAPI, method: str, pattern: str) -> RecordedRequest:
    found = api.find(method, pattern)
    assert len(found) == 1, f"expected one {method} {pattern}, got {[r.path for r in found]}"
    return found[0]


def assert_write(req: RecordedRequest, api: FakeChargebeeAPI, key: str, status: int = 200) -> None:
    """A write as Chargebee expects it: Basic auth with the API key as user name and an empty password,
    the caller's idempotency key, a form-encoded body."""
    expected = "Basic " + base64.b64encode(f"{api.api_key}:".encode()).decode()
    assert req.header("authorization") == expected
    assert req.basic_user == api.api_key
    assert req.header("chargebee-idempotency-key") == key
    assert req.header("content-type") == "application/x-www-form-urlencoded"
    assert req.status == status


# ------------------------------------------------------------------------------------ set-up


def test_implements_the_protocol_with_every_capability(client: ChargebeePlatformClient) -> None:
    assert isinstance(client, PlatformClient)
    assert client.platform == "chargebee"
    caps = client.capabilities
    flags = [
        caps.retry_invoice,
        caps.disable_native_retries,
        caps.write_note,
        caps.card_update_link,
        caps.pay_with_other_method,
        caps.idempotency_keys,
        caps.backfill,
        caps.pause_subscription,
        caps.credit,
        caps.coupon,
    ]
    assert all(flags)
    assert (
        client.backfill_resources()
        == list(RESOURCES)
        == [
            "customers",
            "subscriptions",
            "invoices",
            "payment_attempts",
            "payment_methods",
        ]
    )


@pytest.mark.parametrize(
    ("site", "api_url", "expected"),
    [
        ("acme", None, ("acme", None, "https")),
        ("x", "http://127.0.0.1:8080", ("127", "0.0.1:8080", "http")),
        ("x", "https://acme-test.chargebee.com", ("acme-test", "chargebee.com", "https")),
        ("x", "http://cb.internal.example:9000/api/v2/", ("cb", "internal.example:9000", "http")),
        ("x", "https://10.1.2.3", ("10", "1.2.3", "https")),
    ],
)
def test_api_url_becomes_site_domain_and_protocol(
    site: str, api_url: str | None, expected: tuple[str, str | None, str]
) -> None:
    assert sdk_address(site, api_url) == expected


def test_the_sdk_talks_to_the_local_server(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    assert client.api_base == f"{api.url}/api/v2"
    seed_failed_invoice(api)
    client.get_invoice(INVOICE)
    req = only(api, "GET", rf"^/api/v2/invoices/{INVOICE}$")
    assert req.header("host") == api.url.removeprefix("http://")


@pytest.mark.parametrize(
    "api_url",
    [
        "http://localhost:8080",  # no dot: not <site>.<domain>
        "http://[::1]:8080",
        "ftp://127.0.0.1:21",
        "127.0.0.1:8080",
        "http://127.0.0.1:8080/chargebee",
        "http://user:pw@127.0.0.1:8080",
        "http://127.0.0.1:8080/?x=1",
        "http://127.0.0.1:99999",
    ],
)
def test_an_api_url_the_sdk_cannot_express_is_an_input_error(api_url: str) -> None:
    with pytest.raises(InputError, match="Chargebee API URL"):
        ChargebeePlatformClient("acme", "key", api_url=api_url)


def test_missing_key_or_site_is_an_input_error() -> None:
    with pytest.raises(InputError, match="API key"):
        ChargebeePlatformClient("acme", "")
    with pytest.raises(InputError, match="site"):
        ChargebeePlatformClient("", "key")
    with pytest.raises(InputError, match="site"):
        ChargebeePlatformClient("acme.chargebee.com/x", "key")


# ------------------------------------------------------------------------------------ reads


def test_reads_invoice_customer_attempt_and_payment_methods(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    seed_failed_invoice(api)

    invoice = client.get_invoice(INVOICE)
    assert invoice.platform == "chargebee"
    assert invoice.status == InvoiceStatus.open
    assert (invoice.customer_id, invoice.subscription_id) == (CUSTOMER, SUBSCRIPTION)
    assert (invoice.amount_due, invoice.amount_remaining, invoice.currency) == (4900, 4900, "eur")
    assert invoice.latest_attempt_id == OLD_TXN

    customer = client.get_customer(CUSTOMER)
    assert (customer.email, customer.name, customer.country) == ("ana.silva@example.com", "Ana Silva", "PT")
    assert customer.default_payment_method_id == VISA

    attempt = client.latest_attempt(invoice)
    assert attempt is not None
    assert (attempt.id, attempt.outcome, attempt.invoice_id, attempt.customer_id) == (
        OLD_TXN,
        "failed",
        INVOICE,
        CUSTOMER,
    )
    assert attempt.decline is not None
    assert attempt.decline.code == "insufficient_funds"
    assert attempt.decline.category == DeclineCategory.soft
    assert attempt.card is not None and attempt.card.brand == "visa"  # from its payment source
    assert attempt.payment_method_id == VISA

    methods = {pm.id: pm for pm in client.list_payment_methods(CUSTOMER)}
    assert set(methods) == {VISA, MASTERCARD}
    assert methods[VISA].is_default and not methods[MASTERCARD].is_default
    backup_card = methods[MASTERCARD].card
    assert backup_card is not None and (backup_card.brand, backup_card.last4) == ("mastercard", "0005")
    assert all(pm.customer_id == CUSTOMER for pm in methods.values())

    # What the SDK sent: GETs with Basic auth (API key as user), the documented list parameters.
    assert all(r.method == "GET" and r.basic_user == api.api_key for r in api.requests)
    payments = only(api, "GET", rf"^/api/v2/invoices/{INVOICE}/payments$")
    assert payments.params == {"limit": "10"}
    only(api, "GET", rf"^/api/v2/payment_sources/{VISA}$")
    listed = only(api, "GET", r"^/api/v2/payment_sources$")
    assert listed.params == {"customer_id[is]": CUSTOMER, "limit": "100"}
    assert len(api.find("GET", rf"^/api/v2/customers/{CUSTOMER}$")) == 2


def test_latest_attempt_reads_the_card_brand_so_network_rules_apply(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    """The Mastercard fixture's transaction carries MAC 03 but no card: only the payment source says
    it is a Mastercard, which makes the advice code a Mastercard Merchant Advice Code."""
    api.seed_event(load_fixture("payment_failed_mastercard_mac03"))
    invoice = client.get_invoice("INV-2026-0342")
    attempt = client.latest_attempt(invoice)
    assert attempt is not None and attempt.decline is not None
    assert attempt.card is not None and attempt.card.brand == "mastercard"
    assert attempt.decline.network == "mastercard"
    assert attempt.decline.network_advice_code == "03"


def test_latest_attempt_is_the_newest_payment_transaction(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    seed_failed_invoice(api)
    old = api.get("transactions", OLD_TXN)
    assert old is not None
    newer = {**copy.deepcopy(old), "id": "txn_newer", "date": old["date"] + 3600, "status": "success"}
    for key in ("error_code", "error_text", "error_detail"):
        newer.pop(key)
    refund = {**copy.deepcopy(newer), "id": "txn_refund", "type": "refund", "date": old["date"] + 7200}
    api.add_transaction(newer)
    api.add_transaction(refund)  # newest, but not a payment
    attempt = client.latest_attempt(client.get_invoice(INVOICE))
    assert attempt is not None
    assert (attempt.id, attempt.outcome, attempt.decline) == ("txn_newer", "succeeded", None)


def test_latest_attempt_is_none_without_transactions(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    seed_failed_invoice(api)
    fresh = {
        **stored(api, "invoices", INVOICE),
        "id": "INV-fresh",
        "linked_payments": [],
        "dunning_attempts": [],
    }
    api.add_invoice(fresh)
    invoice = client.get_invoice("INV-fresh")
    assert invoice.latest_attempt_id is None
    assert client.latest_attempt(invoice) is None


def test_payment_methods_of_a_site_without_payment_sources_come_from_the_card(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    api.seed_event(load_fixture("payment_failed_insufficient_funds"))  # customer + card, no payment_source
    [pm] = client.list_payment_methods(CUSTOMER)
    assert (pm.id, pm.is_default, pm.customer_id) == (VISA, True, CUSTOMER)
    assert pm.card is not None and (pm.card.brand, pm.card.last4) == ("visa", "4242")


def test_an_object_billops_cannot_read_is_unreadable_response(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    seed_failed_invoice(api)
    broken = {**stored(api, "invoices", INVOICE), "id": "INV-broken", "status": "in_limbo"}
    api.add_invoice(broken)
    with pytest.raises(PlatformError) as err:
        client.get_invoice("INV-broken")
    assert err.value.code == "unreadable_response"
    assert "invoice.status" in err.value.message and not err.value.retryable


def test_a_missing_object_is_not_found(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    with pytest.raises(PlatformError) as err:
        client.get_customer("nobody")
    assert (err.value.code, err.value.retryable) == ("not_found", False)
    with pytest.raises(InputError):
        client.get_invoice("")


# ------------------------------------------------------------------------------------ pay


def test_pay_succeeds_and_sends_the_idempotency_key(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    seed_failed_invoice(api)
    result = client.pay_invoice(INVOICE, idempotency_key="wf-1:pay")

    assert result.outcome == "succeeded"
    assert result.invoice.status == InvoiceStatus.paid and result.invoice.amount_remaining == 0
    attempt = result.attempt
    assert attempt is not None
    assert (attempt.outcome, attempt.amount, attempt.currency, attempt.invoice_id) == (
        "succeeded",
        4900,
        "eur",
        INVOICE,
    )
    assert attempt.initiated_by == "billops" and attempt.payment_method_id == VISA
    assert attempt.card is not None and attempt.card.brand == "visa"

    req = only(api, "POST", rf"^/api/v2/invoices/{INVOICE}/collect_payment$")
    assert_write(req, api, "wf-1:pay")
    assert req.form == {"payment_initiator": "merchant"}
    assert req.query == {}
    # The invoice was read first; the store shows one new successful transaction.
    assert api.requests[0].method == "GET" and api.requests[0].path == f"/api/v2/invoices/{INVOICE}"
    stored = api.get("invoices", INVOICE)
    assert stored is not None and stored["status"] == "paid"


def test_pay_with_another_payment_method(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    seed_failed_invoice(api)
    result = client.pay_invoice(INVOICE, idempotency_key="wf-2:pay-backup", payment_method_id=MASTERCARD)
    assert result.outcome == "succeeded"
    assert result.attempt is not None and result.attempt.payment_method_id == MASTERCARD
    assert result.attempt.card is not None and result.attempt.card.brand == "mastercard"
    req = only(api, "POST", r"/collect_payment$")
    assert_write(req, api, "wf-2:pay-backup")
    assert req.form == {"payment_initiator": "merchant", "payment_source_id": MASTERCARD}


@pytest.mark.parametrize(
    ("decline", "code", "category"),
    [
        # the gateway's decline code in error_detail wins
        (
            {
                "error_code": "payment_processing_failed",
                "error_text": "Your card has insufficient funds.",
                "error_detail": {"decline_code": "insufficient_funds", "network_error_code": "51"},
            },
            "insufficient_funds",
            DeclineCategory.soft,
        ),
        # no error_detail: the gateway's error_code
        ({"error_code": "do_not_honor", "error_text": "Do not honor"}, "do_not_honor", None),
        # a hard decline: never retried
        (
            {
                "error_code": "card_declined",
                "error_text": "Stolen card",
                "error_detail": {"decline_code": "stolen_card"},
            },
            "stolen_card",
            DeclineCategory.hard,
        ),
    ],
)
def test_pay_decline_is_a_failed_result_with_the_classified_transaction(
    api: FakeChargebeeAPI,
    client: ChargebeePlatformClient,
    decline: dict[str, Any],
    code: str,
    category: DeclineCategory | None,
) -> None:
    seed_failed_invoice(api)
    api.decline_next_collect(**decline)
    result = client.pay_invoice(INVOICE, idempotency_key="wf-3:pay")

    assert result.outcome == "failed"
    assert result.invoice.status == InvoiceStatus.open
    attempt = result.attempt
    assert attempt is not None
    assert attempt.id != OLD_TXN and attempt.id.startswith("txn_fake")  # the one this call made
    assert (attempt.outcome, attempt.invoice_id, attempt.initiated_by) == ("failed", INVOICE, "billops")
    assert attempt.decline is not None and attempt.decline.code == code
    if category is not None:
        assert attempt.decline.category == category
    assert attempt.card is not None and attempt.card.brand == "visa"
    assert decline["error_text"] in result.message
    req = only(api, "POST", r"/collect_payment$")
    assert_write(req, api, "wf-3:pay", status=402)
    assert req.form == {"payment_initiator": "merchant"}


def test_pay_decline_without_a_recorded_transaction_is_described_from_the_error(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    seed_failed_invoice(api)
    api.decline_next_collect(
        error_code="expired_card", error_text="Your card has expired.", record_transaction=False
    )
    result = client.pay_invoice(INVOICE, idempotency_key="wf-4:pay")
    assert result.outcome == "failed"
    attempt = result.attempt
    assert attempt is not None
    assert attempt.id == "declined_wf-4:pay"
    assert (attempt.outcome, attempt.amount, attempt.invoice_id, attempt.customer_id) == (
        "failed",
        4900,
        INVOICE,
        CUSTOMER,
    )
    assert attempt.decline is not None
    assert attempt.decline.code == "expired_card"
    assert attempt.decline.category == DeclineCategory.needs_new_card
    assert attempt.decline.message == "Your card has expired."


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status": "paid", "amount_due": 0, "amount_paid": 4900}, "already paid"),
        ({"status": "voided"}, "voided"),
        ({"status": "not_paid", "write_off_amount": 4900, "amount_due": 0}, "written off"),
    ],
)
def test_pay_on_a_settled_invoice_makes_no_collect_call(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient, change: dict[str, Any], reason: str
) -> None:
    seed_failed_invoice(api)
    api.add_invoice({**stored(api, "invoices", INVOICE), **change})
    result = client.pay_invoice(INVOICE, idempotency_key="wf-5:pay")
    assert result.outcome == "already_settled"
    assert reason in result.message
    assert result.attempt is None
    assert api.writes() == []


def test_pay_collects_a_not_paid_invoice_after_dunning_ran_out(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    seed_failed_invoice(api)
    api.add_invoice({**stored(api, "invoices", INVOICE), "status": "not_paid", "dunning_status": "exhausted"})
    assert client.get_invoice(INVOICE).status == InvoiceStatus.uncollectible
    result = client.pay_invoice(INVOICE, idempotency_key="wf-6:pay")
    assert result.outcome == "succeeded"
    assert len(api.find("POST", r"/collect_payment$")) == 1


def test_pay_5xx_is_retryable_and_the_retry_with_the_same_key_pays_once(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    seed_failed_invoice(api)
    api.fail_next(503, method="POST", path_pattern=r"/collect_payment$")
    with pytest.raises(PlatformError) as err:
        client.pay_invoice(INVOICE, idempotency_key="wf-7:pay")
    assert err.value.retryable is True
    assert err.value.code == "internal_temporary_error"
    assert "503" in err.value.message
    assert len(api.find("POST", r"/collect_payment$")) == 1  # the SDK did not resend it on its own

    result = client.pay_invoice(INVOICE, idempotency_key="wf-7:pay")
    assert result.outcome == "succeeded"
    keys = [r.header("chargebee-idempotency-key") for r in api.find("POST", r"/collect_payment$")]
    assert keys == ["wf-7:pay", "wf-7:pay"]
    txns = [t for t in api.store["transactions"].values() if t["status"] == "success"]
    assert len(txns) == 1

    # A replay of the whole step after success: re-read, already settled, no third collect.
    again = client.pay_invoice(INVOICE, idempotency_key="wf-7:pay")
    assert again.outcome == "already_settled"
    assert len(api.find("POST", r"/collect_payment$")) == 2


def test_pay_non_json_5xx_is_retryable(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    seed_failed_invoice(api)
    api.fail_next(503, text="503 Service Temporarily Unavailable", method="POST", path_pattern="collect")
    with pytest.raises(PlatformError) as err:
        client.pay_invoice(INVOICE, idempotency_key="wf-8:pay")
    assert err.value.retryable is True and err.value.code == "http_503"


def test_a_replayed_idempotency_key_gets_the_first_answer(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    """Chargebee, not only BillOps, deduplicates: the same key on the same write is answered from the
    first response, without a second comment."""
    seed_failed_invoice(api)
    client.write_note(INVOICE, {"decision": "retry"}, idempotency_key="wf-9:note")
    client.write_note(INVOICE, {"decision": "retry"}, idempotency_key="wf-9:note")
    assert len(api.find("POST", r"^/api/v2/comments$")) == 2
    assert len(api.comments) == 1


# ------------------------------------------------------------------------------------ other writes


def test_stop_dunning(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    seed_failed_invoice(api)
    client.set_native_retries(INVOICE, False, idempotency_key="wf-10:stop-dunning")
    req = only(api, "POST", rf"^/api/v2/invoices/{INVOICE}/stop_dunning$")
    assert_write(req, api, "wf-10:stop-dunning")
    assert req.form == {"comment": "BillOps manages the payment retries of this invoice from now on"}
    stored = api.get("invoices", INVOICE)
    assert stored is not None and stored["dunning_status"] == "stopped" and "next_retry_at" not in stored
    assert client.get_invoice(INVOICE).next_payment_attempt is None


def test_stop_dunning_when_chargebee_is_not_retrying_is_done(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    seed_failed_invoice(api)
    inv = api.get("invoices", INVOICE)
    assert inv is not None
    inv.pop("next_retry_at")
    api.add_invoice({**inv, "dunning_status": "exhausted"})
    client.set_native_retries(INVOICE, False, idempotency_key="wf-11:stop-dunning")  # no error
    assert only(api, "POST", r"/stop_dunning$").status == 400


def test_turning_native_retries_back_on_is_unsupported(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    with pytest.raises(PlatformError) as err:
        client.set_native_retries(INVOICE, True, idempotency_key="wf-12:resume")
    assert err.value.code == "unsupported" and not err.value.retryable
    assert "stop_dunning" in err.value.message
    assert api.requests == []


def test_write_note_is_an_invoice_comment(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    seed_failed_invoice(api)
    client.write_note(INVOICE, {"decision": "retry in 24h", "case": "case-42"}, idempotency_key="wf-13:note")
    req = only(api, "POST", r"^/api/v2/comments$")
    assert_write(req, api, "wf-13:note")
    assert req.form == {
        "entity_type": "invoice",
        "entity_id": INVOICE,
        "notes": "BillOps\ndecision: retry in 24h\ncase: case-42",
    }
    assert api.comments[0]["entity_id"] == INVOICE

    client.write_note(INVOICE, {}, idempotency_key="wf-13:empty")  # nothing to write
    assert len(api.writes()) == 1
    assert len(note_text({"k": "v" * 5000})) == 1000


def test_card_update_link_is_a_hosted_page(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    seed_failed_invoice(api)
    url = client.card_update_link(
        CUSTOMER, return_url="https://app.example.com/billing", idempotency_key="wf-14:link"
    )
    req = only(api, "POST", r"^/api/v2/hosted_pages/manage_payment_sources$")
    assert_write(req, api, "wf-14:link")
    assert req.form == {"customer[id]": CUSTOMER, "redirect_url": "https://app.example.com/billing"}
    assert url == api.hosted_pages[0]["url"] and url.startswith("http")


def test_card_update_link_on_the_older_hosted_pages(api: FakeChargebeeAPI) -> None:
    seed_failed_invoice(api)
    client = ChargebeePlatformClient(api.site, api.api_key, api.url, card_page="update_payment_method")
    url = client.card_update_link(CUSTOMER, return_url=None, idempotency_key="wf-15:link")
    req = only(api, "POST", r"^/api/v2/hosted_pages/update_payment_method$")
    assert_write(req, api, "wf-15:link")
    assert req.form == {"customer[id]": CUSTOMER}
    assert url == api.hosted_pages[0]["url"]


def test_pause_subscription(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    seed_failed_invoice(api)
    resume = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    client.pause_subscription(SUBSCRIPTION, resume_at=resume, idempotency_key="wf-16:pause")
    req = only(api, "POST", rf"^/api/v2/subscriptions/{SUBSCRIPTION}/pause$")
    assert_write(req, api, "wf-16:pause")
    assert req.form == {"pause_option": "immediately", "resume_date": str(int(resume.timestamp()))}
    stored = api.get("subscriptions", SUBSCRIPTION)
    assert stored is not None and stored["status"] == "paused"

    # Pausing again (a replay under a new key): already paused, nothing to do.
    client.pause_subscription(SUBSCRIPTION, resume_at=None, idempotency_key="wf-16:pause-again")
    with pytest.raises(InputError, match="timezone"):
        client.pause_subscription(SUBSCRIPTION, resume_at=datetime(2030, 1, 1), idempotency_key="k")


def test_apply_credit(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    seed_failed_invoice(api)
    client.apply_credit(
        CUSTOMER,
        Money(amount=500, currency="eur"),
        reason="Sorry for the trouble",
        idempotency_key="wf-17:credit",
    )
    req = only(api, "POST", r"^/api/v2/promotional_credits/add$")
    assert_write(req, api, "wf-17:credit")
    assert req.form == {
        "customer_id": CUSTOMER,
        "amount": "500",
        "currency_code": "EUR",
        "description": "Sorry for the trouble",
        "credit_type": "general",
    }
    stored = api.get("customers", CUSTOMER)
    assert stored is not None and stored["promotional_credits"] == 500
    with pytest.raises(InputError, match="positive"):
        client.apply_credit(CUSTOMER, Money(amount=0, currency="eur"), reason="x", idempotency_key="k")


def test_apply_coupon_to_the_subscription(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    seed_failed_invoice(api)
    api.add_coupon("WINBACK20", discount_type="percentage", discount_percentage=20.0)
    client.apply_coupon(CUSTOMER, "WINBACK20", subscription_id=SUBSCRIPTION, idempotency_key="wf-18:coupon")
    req = only(api, "POST", rf"^/api/v2/subscriptions/{SUBSCRIPTION}/update_for_items$")
    assert_write(req, api, "wf-18:coupon")
    assert req.form == {"coupon_ids[0]": "WINBACK20"}
    stored = api.get("subscriptions", SUBSCRIPTION)
    assert stored is not None and [c["coupon_id"] for c in stored["coupons"]] == ["WINBACK20"]

    # Already on the subscription: no second write.
    client.apply_coupon(CUSTOMER, "WINBACK20", subscription_id=SUBSCRIPTION, idempotency_key="wf-18:again")
    assert len(api.writes()) == 1
    with pytest.raises(InputError, match="subscription"):
        client.apply_coupon(CUSTOMER, "WINBACK20", subscription_id=None, idempotency_key="k")
    with pytest.raises(InputError, match="belongs to customer"):
        client.apply_coupon("someone-else", "WINBACK20", subscription_id=SUBSCRIPTION, idempotency_key="k")
    with pytest.raises(PlatformError) as err:
        client.apply_coupon(CUSTOMER, "NO-SUCH", subscription_id=SUBSCRIPTION, idempotency_key="wf-18:x")
    assert err.value.code == "not_found"


def test_apply_coupon_on_a_product_catalog_1_subscription(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    seed_failed_invoice(api)
    sub = api.get("subscriptions", SUBSCRIPTION)
    assert sub is not None
    sub.pop("subscription_items")
    api.add_subscription({**sub, "plan_id": "growth-monthly", "plan_unit_price": 4900, "plan_quantity": 1})
    api.add_coupon("WINBACK20")
    client.apply_coupon(CUSTOMER, "WINBACK20", subscription_id=SUBSCRIPTION, idempotency_key="wf-19:coupon")
    req = only(api, "POST", rf"^/api/v2/subscriptions/{SUBSCRIPTION}$")
    assert_write(req, api, "wf-19:coupon")
    assert req.form == {"coupon_ids[0]": "WINBACK20"}


def test_every_write_needs_an_idempotency_key(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    seed_failed_invoice(api)
    api.clear_requests()
    writes = [
        lambda k: client.pay_invoice(INVOICE, idempotency_key=k),
        lambda k: client.set_native_retries(INVOICE, False, idempotency_key=k),
        lambda k: client.write_note(INVOICE, {"a": "b"}, idempotency_key=k),
        lambda k: client.card_update_link(CUSTOMER, return_url=None, idempotency_key=k),
        lambda k: client.pause_subscription(SUBSCRIPTION, resume_at=None, idempotency_key=k),
        lambda k: client.apply_credit(
            CUSTOMER, Money(amount=1, currency="eur"), reason="r", idempotency_key=k
        ),
        lambda k: client.apply_coupon(CUSTOMER, "C", subscription_id=SUBSCRIPTION, idempotency_key=k),
    ]
    for write in writes:
        for key in ("", "   "):
            with pytest.raises(InputError, match="idempotency key"):
                write(key)
    assert api.requests == []


def test_a_key_longer_than_chargebee_allows_is_sent_as_a_stable_digest(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    seed_failed_invoice(api)
    long_key = "wf-" + "x" * 200 + ":note"
    client.write_note(INVOICE, {"a": "b"}, idempotency_key=long_key)
    client.write_note(INVOICE, {"a": "b"}, idempotency_key=long_key)
    sent = [r.header("chargebee-idempotency-key") for r in api.find("POST", r"/comments$")]
    assert sent[0] == sent[1] and sent[0] is not None
    assert len(sent[0]) <= IDEMPOTENCY_KEY_MAX and sent[0].startswith("billops-")
    assert len(api.comments) == 1


# ------------------------------------------------------------------------------------ events


def test_retrieve_event(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    envelope = load_fixture("payment_failed_insufficient_funds")
    api.seed_event(envelope)
    event = client.retrieve_event(envelope["id"])
    assert event == envelope
    assert {"id", "occurred_at", "source", "object", "api_version", "event_type", "content"} <= set(event)
    only(api, "GET", rf"^/api/v2/events/{envelope['id']}$")

    with pytest.raises(PlatformError) as err:
        client.retrieve_event("ev_missing")
    assert (err.value.code, err.value.retryable) == ("not_found", False)


# ------------------------------------------------------------------------------------ backfill


def test_backfill_pages_with_next_offset(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    base = load_fixture("payment_failed_insufficient_funds")["content"]["customer"]
    for i in range(5):
        api.add_customer(
            {**base, "id": f"cust_{i}", "email": f"c{i}@example.com", "created_at": 1761955200 + i}
        )

    seen: list[str] = []
    cursor: str | None = None
    cursors: list[str | None] = []
    for _ in range(5):
        page = client.backfill_page("customers", cursor, 2)
        seen += [c.id for c in page.items]
        cursors.append(cursor)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"cust_{i}" for i in range(5)]
    assert len(cursors) == 3
    lists = api.find("GET", r"^/api/v2/customers$")
    assert [r.params.get("offset") for r in lists] == cursors
    assert all(r.params["limit"] == "2" and r.params["sort_by[asc]"] == "created_at" for r in lists)


def test_backfill_every_resource(api: FakeChargebeeAPI, client: ChargebeePlatformClient) -> None:
    seed_failed_invoice(api)
    api.seed_event(load_fixture("payment_failed_mastercard_mac03"))
    refund = {
        **stored(api, "transactions", OLD_TXN),
        "id": "txn_refund",
        "type": "refund",
        "status": "success",
    }
    api.add_transaction(refund)

    subs = client.backfill_page("subscriptions", None, 100)
    assert [s.id for s in subs.items] == [SUBSCRIPTION] and subs.next_cursor is None

    invoices = client.backfill_page("invoices", None, 100)
    assert {i.id for i in invoices.items} == {INVOICE, "INV-2026-0342"}

    attempts = client.backfill_page("payment_attempts", None, 100)
    assert {a.id for a in attempts.items} == {OLD_TXN, "txn_AzZlGJVAb3fT02"}  # the refund is left out
    txn_list = only(api, "GET", r"^/api/v2/transactions$")
    assert txn_list.params == {"limit": "100", "type[is]": "payment", "sort_by[asc]": "date"}

    methods = client.backfill_page("payment_methods", None, 1)
    assert len(methods.items) == 1 and methods.next_cursor is not None
    rest = client.backfill_page("payment_methods", methods.next_cursor, 100)
    by_id = {pm.id: pm for pm in [*methods.items, *rest.items] if isinstance(pm, PaymentMethod)}
    assert set(by_id) == {VISA, MASTERCARD, "pm_AzZlGJVAb3mC01"}
    assert by_id[VISA].is_default and not by_id[MASTERCARD].is_default
    lookups = api.find("GET", r"^/api/v2/customers$")
    assert lookups and all("id[in]" in r.params for r in lookups)

    with pytest.raises(InputError):
        client.backfill_page("credit_notes", None, 10)
    with pytest.raises(InputError):
        client.backfill_page("customers", None, 101)


# ------------------------------------------------------------------------------------ errors


def test_a_wrong_api_key_is_a_clear_non_retryable_error(api: FakeChargebeeAPI) -> None:
    client = ChargebeePlatformClient(api.site, "wrong_key", api_url=api.url)
    with pytest.raises(PlatformError) as err:
        client.get_invoice(INVOICE)
    assert err.value.code == "authentication_failed" and err.value.retryable is False
    assert "API key was rejected" in err.value.message and "BILLOPS_CHARGEBEE_API_KEY" in err.value.message
    assert api.requests[0].basic_user == "wrong_key" and api.requests[0].status == 401


def test_a_key_without_the_permission_is_a_clear_non_retryable_error(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    seed_failed_invoice(api)
    api.deny(r"/stop_dunning$", method="POST")
    with pytest.raises(PlatformError) as err:
        client.set_native_retries(INVOICE, False, idempotency_key="wf-20:stop")
    assert err.value.code == "permission_denied" and err.value.retryable is False
    assert "not allowed" in err.value.message and "full-access" in err.value.message


def test_rate_limit_and_server_errors_are_retryable(
    api: FakeChargebeeAPI, client: ChargebeePlatformClient
) -> None:
    seed_failed_invoice(api)
    api.fail_next(429, method="GET")
    with pytest.raises(PlatformError) as err:
        client.get_invoice(INVOICE)
    assert (err.value.retryable, err.value.code) == (True, "api_request_limit_exceeded")
    api.fail_next(500, method="POST", path_pattern=r"/comments$")
    with pytest.raises(PlatformError) as err:
        client.write_note(INVOICE, {"a": "b"}, idempotency_key="wf-21:note")
    assert err.value.retryable is True
    assert len(api.find("POST", r"/comments$")) == 1  # no SDK retry behind our back
    api.fail_next(400, api_error_code="param_wrong_value", message="bad", method="POST")
    with pytest.raises(PlatformError) as err:
        client.write_note(INVOICE, {"a": "b"}, idempotency_key="wf-21:note-2")
    assert (err.value.retryable, err.value.code) == (False, "param_wrong_value")


def test_an_unreachable_server_is_a_retryable_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ChargebeePlatformClient("acme", "key", api_url=f"http://127.0.0.1:{port}")
    with pytest.raises(PlatformError) as err:
        client.get_customer(CUSTOMER)
    assert (err.value.retryable, err.value.code) == (True, "connection_error")
