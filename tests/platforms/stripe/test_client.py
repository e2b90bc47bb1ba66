"""StripePlatformClient against a real localstripe process, through a recording proxy that shows what
the official SDK actually sent (localstripe itself ignores idempotency keys)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import stripe

from billops.domain import DeclineCategory, InvoiceStatus
from billops.errors import InputError, PlatformError
from billops.platforms.base import PlatformClient
from billops.platforms.stripe.client import StripePlatformClient, note_metadata
from support.localstripe import (
    API_KEY,
    CARD_OK,
    add_card,
    create_customer_with_card,
    create_open_invoice,
    create_plan,
    create_subscription,
)
from support.recording_proxy import RecordingProxy

pytestmark = pytest.mark.slow


def failing_invoice(sdk: stripe.StripeClient) -> tuple[str, str, str]:
    """(customer, payment method, invoice): card 4000000000000341, first invoice declined and open."""
    seeded = create_customer_with_card(sdk)
    _, invoice_id = create_subscription(sdk, seeded.customer_id, create_plan(sdk))
    return seeded.customer_id, seeded.payment_method_id, invoice_id


def test_implements_the_protocol_with_every_capability(client: StripePlatformClient) -> None:
    assert isinstance(client, PlatformClient)
    caps = client.capabilities
    assert all(
        [
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
    )
    assert client.backfill_resources() == [
        "customers",
        "subscriptions",
        "invoices",
        "payment_attempts",
        "payment_methods",
    ]


def test_reads_invoice_customer_attempt_and_payment_methods(
    client: StripePlatformClient, sdk: stripe.StripeClient
) -> None:
    customer_id, pm_id, invoice_id = failing_invoice(sdk)
    second_pm = add_card(sdk, customer_id, card=CARD_OK)

    invoice = client.get_invoice(invoice_id)
    assert invoice.platform == "stripe"
    assert invoice.status == InvoiceStatus.open
    assert invoice.customer_id == customer_id
    assert invoice.amount_due == 2900 and invoice.currency == "usd"

    customer = client.get_customer(customer_id)
    assert customer.email == "ada@example.com"
    assert customer.default_payment_method_id == pm_id

    attempt = client.latest_attempt(invoice)
    assert attempt is not None
    assert attempt.outcome == "failed"
    assert attempt.invoice_id == invoice_id
    assert attempt.customer_id == customer_id
    assert attempt.decline is not None

    methods = {pm.id: pm for pm in client.list_payment_methods(customer_id)}
    assert set(methods) == {pm_id, second_pm}
    assert methods[pm_id].is_default and not methods[second_pm].is_default
    assert methods[pm_id].card is not None and methods[pm_id].card.last4 == "0341"
    assert all(pm.customer_id == customer_id for pm in methods.values())


def test_latest_attempt_with_the_current_api_goes_through_invoice_payments(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    """Since API 2025-03-31 an invoice names no charge nor PaymentIntent: /v1/invoice_payments does."""
    _, _, invoice_id = failing_invoice(sdk)
    pi_id = sdk.v1.invoices.retrieve(invoice_id).to_dict()["payment_intent"]
    current = client.get_invoice(invoice_id).model_copy(
        update={"payment_intent_id": None, "latest_attempt_id": None}
    )

    # localstripe has no /v1/invoice_payments: no attempt known, no error.
    assert client.latest_attempt(current) is None

    payments = {
        "object": "list",
        "url": "/v1/invoice_payments",
        "has_more": False,
        "data": [
            {
                "id": "inpay_old",
                "object": "invoice_payment",
                "created": 1,
                "payment": {"type": "payment_intent", "payment_intent": "pi_old"},
            },
            {
                "id": "inpay_new",
                "object": "invoice_payment",
                "created": 2,
                "payment": {"type": "payment_intent", "payment_intent": pi_id},
            },
        ],
    }
    proxy.answer_next(200, payments, method="GET", path_pattern=r"^/v1/invoice_payments$")
    attempt = client.latest_attempt(current)
    assert attempt is not None and attempt.payment_intent_id == pi_id
    assert attempt.outcome == "failed" and attempt.invoice_id == invoice_id
    [listed] = proxy.find("GET", r"^/v1/invoice_payments$")[-1:]
    assert listed.query["invoice"] == [invoice_id]


def test_pay_declined_is_a_failed_result_with_a_classified_decline_and_our_key(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    customer_id, pm_id, invoice_id = failing_invoice(sdk)
    proxy.clear()

    result = client.pay_invoice(invoice_id, idempotency_key="recovery:in_1:retry-1")

    assert result.outcome == "failed"
    assert result.invoice.id == invoice_id and result.invoice.status == InvoiceStatus.open
    attempt = result.attempt
    assert attempt is not None
    assert attempt.outcome == "failed"
    assert attempt.invoice_id == invoice_id and attempt.customer_id == customer_id
    assert attempt.payment_method_id == pm_id
    assert attempt.initiated_by == "billops"
    assert attempt.decline is not None
    assert attempt.decline.code in {"card_declined", "generic_decline"}
    assert attempt.decline.category in set(DeclineCategory)
    assert attempt.decline.taxonomy_version
    assert result.message

    [pay] = proxy.find("POST", rf"^/v1/invoices/{invoice_id}/pay$")
    assert pay.header("Idempotency-Key") == "recovery:in_1:retry-1"
    # The invoice was re-read before paying.
    methods_paths = [(r.method, r.path) for r in proxy.requests]
    assert methods_paths.index(("GET", f"/v1/invoices/{invoice_id}")) < methods_paths.index(
        ("POST", f"/v1/invoices/{invoice_id}/pay")
    )


CARD_ERROR = {"type": "card_error", "code": "card_declined"}


def test_card_error_on_pay_uses_the_payment_intent_and_charge_it_names(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    """Real Stripe answers a declined invoices.pay with 402 naming the charge and PaymentIntent."""
    _, _, invoice_id = failing_invoice(sdk)
    raw = sdk.v1.invoices.retrieve(invoice_id).to_dict()
    pi_id, charge_id = raw["payment_intent"], raw["charge"]["id"]
    error = {**CARD_ERROR, "decline_code": "insufficient_funds", "message": "Insufficient funds."}
    proxy.fail_next(
        402,
        method="POST",
        path_pattern=r"/pay$",
        error={**error, "charge": charge_id, "payment_intent": {"id": pi_id}},
    )
    result = client.pay_invoice(invoice_id, idempotency_key="wf-8:pay")

    assert result.outcome == "failed"
    assert result.message == "Insufficient funds."
    assert result.invoice.status == InvoiceStatus.open
    assert result.attempt is not None
    assert result.attempt.id == charge_id and result.attempt.payment_intent_id == pi_id
    assert result.attempt.initiated_by == "billops" and result.attempt.invoice_id == invoice_id
    assert proxy.find("GET", rf"^/v1/payment_intents/{pi_id}$")


def test_card_error_with_only_an_inline_payment_intent(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    customer_id, _, invoice_id = failing_invoice(sdk)
    lpe = {**CARD_ERROR, "decline_code": "stolen_card", "message": "Your card was declined."}
    pi = {
        "id": "pi_unknown_to_server",
        "object": "payment_intent",
        "amount": 2900,
        "currency": "usd",
        "created": 1_790_000_000,
        "customer": customer_id,
        "status": "requires_payment_method",
        "latest_charge": None,
        "last_payment_error": lpe,
    }
    proxy.fail_next(402, method="POST", path_pattern=r"/pay$", error={**lpe, "payment_intent": pi})
    result = client.pay_invoice(invoice_id, idempotency_key="wf-9:pay")

    assert result.outcome == "failed"
    assert result.attempt is not None and result.attempt.decline is not None
    assert result.attempt.decline.code == "stolen_card"
    assert result.attempt.decline.category == DeclineCategory.hard and result.attempt.decline.never_retry
    assert result.attempt.invoice_id == invoice_id


def test_card_error_without_charge_or_payment_intent_is_still_classified(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    _, _, invoice_id = failing_invoice(sdk)
    error = {**CARD_ERROR, "decline_code": "expired_card", "message": "Your card has expired."}
    proxy.fail_next(402, method="POST", path_pattern=r"/pay$", error=error)
    result = client.pay_invoice(invoice_id, idempotency_key="wf-10:pay")

    assert result.outcome == "failed"
    attempt = result.attempt
    assert attempt is not None and attempt.decline is not None
    assert attempt.decline.code == "expired_card"
    assert attempt.decline.category == DeclineCategory.needs_new_card
    assert attempt.outcome == "failed" and attempt.amount == 2900 and attempt.currency == "usd"
    assert attempt.invoice_id == invoice_id and attempt.initiated_by == "billops"


def test_pay_succeeds_after_card_update_and_a_replay_does_not_pay_again(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    customer_id, _, invoice_id = failing_invoice(sdk)
    good = add_card(sdk, customer_id, card=CARD_OK, make_default=True)

    result = client.pay_invoice(invoice_id, idempotency_key="wf-2:pay")
    assert result.outcome == "succeeded"
    assert result.invoice.status == InvoiceStatus.paid
    assert result.attempt is not None and result.attempt.outcome == "succeeded"
    assert result.attempt.payment_method_id == good

    proxy.clear()
    replay = client.pay_invoice(invoice_id, idempotency_key="wf-2:pay")
    assert replay.outcome == "already_settled"
    assert replay.invoice.status == InvoiceStatus.paid
    assert proxy.find("POST", r"/pay$") == []


def test_pay_with_another_method_sends_it(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    customer_id, _, invoice_id = failing_invoice(sdk)
    other = add_card(sdk, customer_id, card=CARD_OK)
    proxy.clear()
    # localstripe's /pay takes no parameters at all (HTTP 500): the request is what we check here.
    with pytest.raises(PlatformError) as info:
        client.pay_invoice(invoice_id, idempotency_key="wf-3:pay", payment_method_id=other)
    assert info.value.retryable  # a 5xx
    [pay] = proxy.find("POST", r"/pay$")
    assert pay.form == {"payment_method": other}
    assert pay.header("Idempotency-Key") == "wf-3:pay"


def test_sdk_retries_reuse_our_idempotency_key(sdk: stripe.StripeClient, proxy: RecordingProxy) -> None:
    _, _, invoice_id = failing_invoice(sdk)
    good = StripePlatformClient(API_KEY, proxy.url, max_network_retries=2)
    proxy.fail_next(503, method="POST", path_pattern=r"/pay$")

    result = good.pay_invoice(invoice_id, idempotency_key="wf-4:pay")

    assert result.outcome == "failed"  # still declined, once localstripe got the request
    pays = proxy.find("POST", r"/pay$")
    assert [p.status for p in pays] == [503, 200]
    assert {p.header("Idempotency-Key") for p in pays} == {"wf-4:pay"}


@pytest.mark.parametrize(
    ("status", "error", "retryable", "code"),
    [
        (
            429,
            {"type": "invalid_request_error", "code": "rate_limit", "message": "slow down"},
            True,
            "rate_limit",
        ),
        (503, {"type": "api_error", "message": "unavailable"}, True, None),
        (
            409,
            {"type": "invalid_request_error", "code": "lock_timeout", "message": "busy"},
            True,
            "lock_timeout",
        ),
        (401, {"type": "invalid_request_error", "message": "Invalid API Key"}, False, None),
        (
            400,
            {"type": "invalid_request_error", "code": "parameter_missing", "message": "no"},
            False,
            "parameter_missing",
        ),
    ],
)
def test_errors_map_to_platform_error(
    client: StripePlatformClient,
    proxy: RecordingProxy,
    status: int,
    error: dict[str, object],
    retryable: bool,
    code: str | None,
) -> None:
    proxy.fail_next(status, error=error)
    with pytest.raises(PlatformError) as info:
        client.get_invoice("in_whatever")
    assert info.value.retryable is retryable
    if code:
        assert info.value.code == code
    assert f"HTTP {status}" in info.value.message
    assert "invoices.retrieve(in_whatever)" in info.value.message


def test_missing_object_is_not_retryable(client: StripePlatformClient) -> None:
    with pytest.raises(PlatformError) as info:
        client.get_invoice("in_doesnotexist")
    assert not info.value.retryable
    assert "HTTP 404" in info.value.message


def test_connection_error_is_retryable() -> None:
    client = StripePlatformClient(API_KEY, "http://127.0.0.1:9", max_network_retries=0)
    with pytest.raises(PlatformError) as info:
        client.get_customer("cus_x")
    assert info.value.retryable and info.value.code == "connection_error"


def test_set_native_retries_sends_auto_advance_false(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    _, _, invoice_id = failing_invoice(sdk)
    proxy.clear()
    # localstripe's invoices have no auto_advance and refuse the update with 400: a clear, final error.
    with pytest.raises(PlatformError) as info:
        client.set_native_retries(invoice_id, False, idempotency_key="wf-5:native-off")
    assert not info.value.retryable
    assert "HTTP 400" in info.value.message
    [update] = proxy.find("POST", rf"^/v1/invoices/{invoice_id}$")
    assert update.form == {"auto_advance": "false"}
    assert update.header("Idempotency-Key") == "wf-5:native-off"


def test_write_note_merges_prefixed_metadata(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    _, _, invoice_id = failing_invoice(sdk)
    sdk.v1.invoices.update(invoice_id, {"metadata": {"owner": "finance"}})
    proxy.clear()

    client.write_note(
        invoice_id, {"reason": "soft decline", "billops_step": "retry-1"}, idempotency_key="wf-6:n1"
    )
    client.write_note(invoice_id, {"step": "retry-2"}, idempotency_key="wf-6:n2")

    metadata = sdk.v1.invoices.retrieve(invoice_id).to_dict()["metadata"]
    assert metadata == {"owner": "finance", "billops_reason": "soft decline", "billops_step": "retry-2"}
    assert client.get_invoice(invoice_id).metadata == metadata
    keys = [r.header("Idempotency-Key") for r in proxy.find("POST", rf"^/v1/invoices/{invoice_id}$")]
    assert keys == ["wf-6:n1", "wf-6:n2"]


def test_write_note_refuses_keys_stripe_would_refuse(
    client: StripePlatformClient, proxy: RecordingProxy
) -> None:
    with pytest.raises(InputError, match="at most 40"):
        client.write_note("in_x", {"k" * 40: "v"}, idempotency_key="k")
    with pytest.raises(InputError, match="square brackets"):
        client.write_note("in_x", {"a[b]": "v"}, idempotency_key="k")
    assert proxy.requests == []
    assert note_metadata({"why": "x" * 600}) == {"billops_why": "x" * 500}


def test_card_update_link_is_a_clear_error_without_a_billing_portal(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    customer_id, _, _ = failing_invoice(sdk)
    proxy.clear()
    with pytest.raises(PlatformError) as info:
        client.card_update_link(
            customer_id, return_url="https://billops.example/back", idempotency_key="wf-7:link"
        )
    assert info.value.code == "billing_portal_unavailable"
    assert not info.value.retryable
    assert "billing portal is not available" in info.value.message
    [req] = proxy.find("POST", r"^/v1/billing_portal/sessions$")
    assert req.form == {
        "customer": customer_id,
        "flow_data[type]": "payment_method_update",
        "return_url": "https://billops.example/back",
    }
    assert req.header("Idempotency-Key") == "wf-7:link"


def test_writes_require_an_idempotency_key(client: StripePlatformClient, proxy: RecordingProxy) -> None:
    with pytest.raises(InputError):
        client.pay_invoice("in_x", idempotency_key="")
    assert proxy.requests == []


def test_backfill_pages_attempts_with_their_invoice(
    client: StripePlatformClient, sdk: stripe.StripeClient
) -> None:
    customer_id, _, first_invoice = failing_invoice(sdk)
    second_invoice = create_open_invoice(sdk, customer_id)
    mine = {first_invoice, second_invoice}

    attempts, cursor, pages = [], None, 0
    while True:
        page = client.backfill_page("payment_attempts", cursor, 1)
        pages += 1
        assert len(page.items) <= 1
        attempts.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == len(attempts)
    ours = [a for a in attempts if a.customer_id == customer_id]  # type: ignore[union-attr]
    assert {a.invoice_id for a in ours} == mine  # type: ignore[union-attr]
    with pytest.raises(InputError):
        client.backfill_page("refunds", None, 10)
    with pytest.raises(InputError):
        client.backfill_page("customers", None, 101)


def test_billops_never_imports_localstripe() -> None:
    src = Path(__file__).resolve().parents[3] / "src" / "billops"
    offenders = [
        str(p)
        for p in src.rglob("*.py")
        if re.search(r"^\s*(import|from)\s+localstripe\b", p.read_text(), re.M)
    ]
    assert offenders == []


def test_pause_credit_and_coupon_send_the_documented_calls(
    client: StripePlatformClient, proxy: RecordingProxy
) -> None:
    """localstripe has no pause_collection, balance transactions or discounts: the proxy answers these
    like Stripe does, and the test checks exactly what the SDK sent."""
    from datetime import UTC, datetime

    from billops.domain import Money

    sub = {"id": "sub_1", "object": "subscription", "status": "active"}
    proxy.answer_next(200, sub, method="POST", path_pattern=r"^/v1/subscriptions/sub_1$", times=2)
    proxy.answer_next(
        200,
        {"id": "cbtxn_1", "object": "customer_balance_transaction", "amount": -1500, "currency": "eur"},
        method="POST",
        path_pattern=r"^/v1/customers/cus_1/balance_transactions$",
    )
    resume = datetime(2026, 12, 1, tzinfo=UTC)
    client.pause_subscription("sub_1", resume_at=resume, idempotency_key="wf-9:pause")
    client.apply_credit(
        "cus_1", Money(amount=1500, currency="EUR"), reason="goodwill", idempotency_key="wf-9:cr"
    )
    client.apply_coupon("cus_1", "WINBACK20", subscription_id="sub_1", idempotency_key="wf-9:coupon")

    pause, coupon = proxy.find("POST", r"^/v1/subscriptions/sub_1$")
    assert pause.form == {
        "pause_collection[behavior]": "keep_as_draft",
        "pause_collection[resumes_at]": str(int(resume.timestamp())),
    }
    assert pause.header("Idempotency-Key") == "wf-9:pause"
    assert coupon.form == {"discounts[0][coupon]": "WINBACK20"}
    assert coupon.header("Idempotency-Key") == "wf-9:coupon"
    [credit] = proxy.find("POST", r"^/v1/customers/cus_1/balance_transactions$")
    assert credit.form == {"amount": "-1500", "currency": "eur", "description": "goodwill"}
    assert credit.header("Idempotency-Key") == "wf-9:cr"

    with pytest.raises(InputError):
        client.apply_credit("cus_1", Money(amount=0, currency="eur"), reason="x", idempotency_key="k")
    with pytest.raises(InputError):
        client.apply_coupon("cus_1", "X", subscription_id=None, idempotency_key="k")
