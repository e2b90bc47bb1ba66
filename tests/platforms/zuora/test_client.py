"""ZuoraPlatformClient over real HTTP (httpx) against the local fake Zuora API (tests/support/zuora_api.py),
which records every request: method, path, query, bearer / Basic auth, Idempotency-Key and JSON body
are asserted from what the client actually sent."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from billops.domain import DeclineCategory, InvoiceStatus, Money
from billops.errors import InputError, PlatformError
from billops.platforms.base import PlatformClient
from billops.platforms.zuora.client import RESOURCES, ZuoraPlatformClient, zuora_error
from support.loopback import RecordedRequest
from support.zuora_api import FakeZuoraAPI

ACCT, VISA, MC, INV, SUB = "A-ACCT-0001", "PM-VISA-0001", "PM-MC-0002", "INV-ID-0001", "SUB-0001"
NOW = datetime.now(UTC)


def seed(api: FakeZuoraAPI) -> None:
    api.add_account(ACCT, number="A00001042", name="Northwind Analytics", default_payment_method=VISA)
    api.add_payment_method(VISA, ACCT, card_type="Visa", mask="************4242", exp_month=8, exp_year=2030)
    api.add_payment_method(
        MC, ACCT, card_type="MasterCard", mask="************5454", exp_month=3, exp_year=2029
    )
    api.add_payment_method("PM-OLD-0003", ACCT, status="Closed")
    api.add_invoice(INV, ACCT, number="INV00029871", amount="49.99", subscription_id=SUB,
                    posted=NOW - timedelta(days=3))  # fmt: skip
    api.add_subscription(SUB, ACCT)


@pytest.fixture
def api() -> Iterator[FakeZuoraAPI]:
    with FakeZuoraAPI() as server:
        seed(server)
        yield server


@pytest.fixture
def client(api: FakeZuoraAPI) -> Iterator[ZuoraPlatformClient]:
    c = ZuoraPlatformClient(api.url, api.client_id, api.client_secret)
    yield c
    c.close()


@pytest.fixture
def cpr_client(api: FakeZuoraAPI) -> Iterator[ZuoraPlatformClient]:
    c = ZuoraPlatformClient(
        api.url, api.client_id, api.client_secret, retry_api_url=api.url,
        retry_api_credentials=(api.cpr_user, api.cpr_token), credit_charge_id="PRPC-CREDIT-01",
    )  # fmt: skip
    yield c
    c.close()


def api_calls(api: FakeZuoraAPI) -> list[RecordedRequest]:
    return [r for r in api.requests if r.path != "/oauth/token"]


def only(api: FakeZuoraAPI, method: str, path: str) -> RecordedRequest:
    found = api.find(method, path)
    assert len(found) == 1, [(r.method, r.path) for r in api.requests]
    return found[0]


# ---------------------------------------------------------------- OAuth


def test_token_is_fetched_once_and_reused(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    client.get_invoice(INV)
    client.get_customer(ACCT)
    [token_req] = api.find("POST", r"^/oauth/token$")
    assert token_req.form == {
        "client_id": api.client_id,
        "client_secret": api.client_secret,
        "grant_type": "client_credentials",
    }
    assert token_req.header("content-type") == "application/x-www-form-urlencoded"
    assert len(api.issued) == 1
    assert [r.header("authorization") for r in api_calls(api)] == [f"Bearer {api.issued[0]}"] * 2


def test_token_is_refreshed_once_after_a_401(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    client.get_invoice(INV)
    api.revoke_tokens()  # as if it expired early
    assert client.get_customer(ACCT).id == ACCT
    assert [(r.method, r.path, r.status) for r in api.requests[-3:]] == [
        ("GET", f"/object-query/accounts/{ACCT}", 401),
        ("POST", "/oauth/token", 200),
        ("GET", f"/object-query/accounts/{ACCT}", 200),
    ]
    assert api.requests[-1].header("authorization") == f"Bearer {api.issued[1]}"


def test_token_is_renewed_before_it_expires() -> None:
    with FakeZuoraAPI(token_lifetime=1) as api:
        seed(api)
        client = ZuoraPlatformClient(api.url, api.client_id, api.client_secret)
        client.get_invoice(INV)
        time.sleep(1.0)
        client.get_invoice(INV)
        assert len(api.issued) == 2
        assert all(r.status == 200 for r in api.requests)  # renewed in time, never a 401


def test_a_second_401_is_an_authentication_error(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    client.get_invoice(INV)
    api.fail_next(401, {"reasons": [{"code": 90000011, "message": "Authentication error"}]}, times=2,
                  path="/object-query/")  # fmt: skip
    with pytest.raises(PlatformError) as err:
        client.get_invoice(INV)
    assert err.value.code == "authentication_error" and not err.value.retryable
    assert len(api.find("GET", "/object-query/invoices")) == 3  # first read, then once more with a new token


def test_wrong_client_credentials(api: FakeZuoraAPI) -> None:
    client = ZuoraPlatformClient(api.url, api.client_id, "not-the-secret")
    with pytest.raises(PlatformError) as err:
        client.get_invoice(INV)
    assert err.value.code == "authentication_error" and not err.value.retryable
    assert "HTTP 401: Bad client credentials" in err.value.message
    assert not api_calls(api)


def test_constructor_validates_its_settings() -> None:
    with pytest.raises(InputError):
        ZuoraPlatformClient("rest.zuora.com", "id", "secret")
    with pytest.raises(InputError):
        ZuoraPlatformClient("https://rest.zuora.com", "", "secret")


# ---------------------------------------------------------------- reads


def test_get_invoice(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    inv = client.get_invoice(INV)
    req = only(api, "GET", rf"^/object-query/invoices/{INV}$")
    assert req.query == {"expand[]": ["invoiceitems"]}
    assert (inv.id, inv.number, inv.customer_id, inv.subscription_id) == (INV, "INV00029871", ACCT, SUB)
    assert (inv.status, inv.amount_due, inv.amount_remaining, inv.currency) == (
        InvoiceStatus.open,
        4999,
        4999,
        "usd",
    )
    assert inv.plan_name == "Pro Plan" and inv.auto_advance is True
    assert inv.period_start == datetime(2026, 11, 1, tzinfo=UTC)


def test_get_customer(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    cust = client.get_customer(ACCT)
    assert only(api, "GET", rf"^/object-query/accounts/{ACCT}$").query == {"expand[]": ["billto"]}
    assert (cust.name, cust.email, cust.country) == (
        "Northwind Analytics",
        "billing@example.com",
        "United States",
    )
    assert cust.default_payment_method_id == VISA and cust.metadata == {"account_number": "A00001042"}


def test_list_payment_methods(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    methods = {pm.id: pm for pm in client.list_payment_methods(ACCT)}
    req = only(api, "GET", r"^/object-query/payment-methods$")
    assert req.query == {"pageSize": ["99"], "filter[]": [f"accountid.EQ:{ACCT}"]}
    assert set(methods) == {VISA, MC}  # the closed one is left out
    assert methods[VISA].is_default and not methods[MC].is_default
    card = methods[MC].card
    assert card is not None and (card.brand, card.last4, card.exp_month, card.exp_year) == (
        "mastercard",
        "5454",
        3,
        2029,
    )


def test_latest_attempt_is_the_payment_applied_to_the_invoice(
    api: FakeZuoraAPI, client: ZuoraPlatformClient
) -> None:
    api.add_payment("PAY-OLD", ACCT, amount="49.99", status="Processed", created=NOW - timedelta(days=40),
                    invoice_id="INV-OTHER")  # fmt: skip
    api.add_payment("PAY-1", ACCT, amount="49.99", status="Processed", created=NOW - timedelta(hours=1),
                    invoice_id=INV)  # fmt: skip
    att = client.latest_attempt(client.get_invoice(INV))
    req = only(api, "GET", r"^/object-query/payments$")
    assert req.query == {
        "pageSize": ["20"],
        "filter[]": [f"accountid.EQ:{ACCT}"],
        "expand[]": ["paymentapplications", "paymentmethod"],
        "sort[]": ["createddate.DESC"],
    }
    assert att is not None and (att.id, att.outcome, att.invoice_id, att.amount) == (
        "PAY-1",
        "succeeded",
        INV,
        4999,
    )
    assert att.card is not None and att.card.brand == "visa"


def test_latest_attempt_finds_a_declined_payment_applied_to_nothing(
    api: FakeZuoraAPI, client: ZuoraPlatformClient
) -> None:
    api.add_payment("PAY-ERR", ACCT, amount="49.99", created=NOW - timedelta(hours=2), payment_method=VISA,
                    gateway_response="Insufficient Funds", gateway_code="51")  # fmt: skip
    api.add_payment("PAY-ERR-OTHER", ACCT, amount="12.00", created=NOW - timedelta(hours=1))
    att = client.latest_attempt(client.get_invoice(INV))
    assert att is not None and att.id == "PAY-ERR" and att.invoice_id == INV
    assert att.decline is not None and att.decline.code == "insufficient_funds"
    assert att.decline.network_decline_code == "51"


def test_latest_attempt_none(client: ZuoraPlatformClient) -> None:
    assert client.latest_attempt(client.get_invoice(INV)) is None


def test_invoice_for_payment(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    api.add_payment("PAY-ERR", ACCT, amount="49.99", created=NOW - timedelta(hours=2))
    api.add_invoice("INV-2", ACCT, amount="10.00")
    inv = client.invoice_for_payment("PAY-ERR")
    assert inv is not None and inv.id == INV
    assert only(api, "GET", r"^/object-query/payments/PAY-ERR$").query == {
        "expand[]": ["paymentapplications"]
    }
    api.add_invoice("INV-3", ACCT, amount="49.99")  # two candidates: ambiguous
    assert client.invoice_for_payment("PAY-ERR") is None


# ---------------------------------------------------------------- pay


def test_pay_invoice_with_the_default_payment_method(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    result = client.pay_invoice(INV, idempotency_key="wf-1:pay")
    req = only(api, "POST", r"^/v1/payments$")
    assert req.header("idempotency-key") == "wf-1:pay"
    assert req.header("authorization") == f"Bearer {api.issued[0]}"
    assert req.header("content-type") == "application/json"
    assert req.json == {
        "accountId": ACCT,
        "amount": 49.99,
        "currency": "USD",
        "effectiveDate": datetime.now(UTC).date().isoformat(),
        "type": "Electronic",
        "paymentMethodId": VISA,
        "invoices": [{"invoiceId": INV, "amount": 49.99}],
        "comment": "BillOps payment recovery",
    }
    assert result.outcome == "succeeded"
    assert result.invoice.status == InvoiceStatus.paid and result.invoice.amount_remaining == 0
    att = result.attempt
    assert att is not None and att.outcome == "succeeded" and att.initiated_by == "billops"
    assert (att.invoice_id, att.amount, att.currency, att.payment_method_id) == (INV, 4999, "usd", VISA)
    assert api.state.invoices[INV]["balance"] == 0


def test_pay_invoice_with_another_payment_method(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    result = client.pay_invoice(INV, idempotency_key="wf-2:pay", payment_method_id=MC)
    assert only(api, "POST", r"^/v1/payments$").json["paymentMethodId"] == MC
    assert result.outcome == "succeeded" and not api.find("GET", rf"/object-query/accounts/{ACCT}")


def test_pay_invoice_replay_is_deduplicated_by_zuora(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    first = client.pay_invoice(INV, idempotency_key="wf-3:pay")
    body = only(api, "POST", r"^/v1/payments$").json
    replay = client._call("POST", "/v1/payments", what="replay", body=body, idempotency_key="wf-3:pay")
    assert first.attempt is not None and replay["id"] == first.attempt.id
    assert len(api.state.payments) == 1


@pytest.mark.parametrize("mode", ["error_payment", "rejected"])
def test_pay_invoice_declined(api: FakeZuoraAPI, client: ZuoraPlatformClient, mode: str) -> None:
    api.decline(VISA, "51", "Insufficient Funds", mode=mode)
    result = client.pay_invoice(INV, idempotency_key=f"wf-4:{mode}")
    assert result.outcome == "failed"
    assert result.invoice.status == InvoiceStatus.open and result.invoice.amount_remaining == 4999
    att = result.attempt
    assert att is not None and att.outcome == "failed" and att.initiated_by == "billops"
    assert att.id in api.state.payments and att.invoice_id == INV
    d = att.decline
    assert d is not None and (d.code, d.category, d.raw_code) == (
        "insufficient_funds",
        DeclineCategory.soft,
        "51",
    )
    assert d.network == "visa" and d.network_decline_code == "51"
    assert result.message == "Insufficient Funds"


def test_pay_invoice_declined_without_a_payment_record(
    api: FakeZuoraAPI, client: ZuoraPlatformClient
) -> None:
    api.decline(VISA, "2004", "Expired Card", mode="rejected_no_record")
    result = client.pay_invoice(INV, idempotency_key="wf-5:pay")
    assert result.outcome == "failed"
    att = result.attempt
    assert att is not None and att.decline is not None
    assert att.decline.code == "expired_card" and att.decline.category == DeclineCategory.needs_new_card
    assert att.amount == 4999 and att.invoice_id == INV and att.initiated_by == "billops"
    assert "Transaction declined" in result.message


def test_pay_invoice_already_paid_sends_no_payment(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    api.state.invoices[INV]["balance"] = 0
    result = client.pay_invoice(INV, idempotency_key="wf-6:pay")
    assert result.outcome == "already_settled" and result.invoice.status == InvoiceStatus.paid
    assert not api.find("POST", "/v1/payments")


def test_pay_invoice_canceled_is_settled(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    api.state.invoices[INV]["status"] = "Canceled"
    assert client.pay_invoice(INV, idempotency_key="wf-7:pay").outcome == "already_settled"
    assert not api.find("POST", "/v1/payments")


def test_pay_invoice_refused_for_another_reason_raises(
    api: FakeZuoraAPI, client: ZuoraPlatformClient
) -> None:
    reasons = [{"code": 53100020, "message": "Invalid value for amount"}]
    api.fail_next(200, {"success": False, "reasons": reasons}, method="POST", path="/v1/payments")
    with pytest.raises(PlatformError) as err:
        client.pay_invoice(INV, idempotency_key="wf-8:pay")
    assert err.value.code == "zuora_53100020"
    assert not err.value.retryable and "Invalid value for amount" in err.value.message


def test_pay_invoice_5xx_after_the_payment_was_made_reports_it(
    api: FakeZuoraAPI, client: ZuoraPlatformClient
) -> None:
    api.fail_next(502, b"Bad Gateway", method="POST", path="/v1/payments", after=True)
    result = client.pay_invoice(INV, idempotency_key="wf-9:pay")
    assert result.outcome == "succeeded" and result.attempt is not None
    assert result.attempt.id in api.state.payments


def test_pay_invoice_5xx_with_nothing_made_is_not_retryable(
    api: FakeZuoraAPI, client: ZuoraPlatformClient
) -> None:
    api.fail_next(503, {"message": "Service Unavailable"}, method="POST", path="/v1/payments")
    with pytest.raises(PlatformError) as err:
        client.pay_invoice(INV, idempotency_key="wf-10:pay")
    assert err.value.code == "payment_outcome_unknown" and not err.value.retryable
    assert "same idempotency key" in err.value.message


def test_pay_invoice_429_is_retryable(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    api.fail_next(429, {"message": "Too many requests"}, method="POST", path="/v1/payments")
    with pytest.raises(PlatformError) as err:
        client.pay_invoice(INV, idempotency_key="wf-11:pay")
    assert err.value.retryable and err.value.code == "rate_limit"
    assert not api.state.payments


def test_pay_needs_an_idempotency_key(client: ZuoraPlatformClient) -> None:
    with pytest.raises(InputError):
        client.pay_invoice(INV, idempotency_key="")


def test_connection_refused_is_not_sent_and_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ZuoraPlatformClient(f"http://127.0.0.1:{port}", "id", "secret")
    with pytest.raises(PlatformError) as err:
        client.get_invoice(INV)
    assert err.value.retryable


# ---------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (503, {"message": "Service Unavailable"}, "http_503", True),
        (500, b"<html>oops</html>", "http_500", True),
        (429, {"message": "rate limited"}, "rate_limit", True),
        (404, {"reasons": [{"code": 50000040, "message": "not found"}]}, "not_found", False),
        (403, {"reasons": [{"code": 90000010, "message": "no permission"}]}, "permission_error", False),
        (
            200,
            {"success": False, "reasons": [{"code": 50000050, "message": "lock contention"}]},
            "lock_contention",
            True,
        ),
        (
            200,
            {"success": False, "reasons": [{"code": 50000020, "message": "invalid"}]},
            "zuora_50000020",
            False,
        ),
    ],
)
def test_read_errors(
    api: FakeZuoraAPI, client: ZuoraPlatformClient, status: int, body: object, code: str, retryable: bool
) -> None:
    api.fail_next(status, body, method="GET", path="/object-query/invoices")
    with pytest.raises(PlatformError) as err:
        client.get_invoice(INV)
    assert (err.value.code, err.value.retryable) == (code, retryable)
    assert f"HTTP {status}" in err.value.message


def test_zuora_error_reads_every_error_shape() -> None:
    e = zuora_error(
        "x", 400, {"success": False, "processId": "P1", "reasons": [{"code": 53100020, "message": "bad"}]}
    )
    assert (e.code, e.retryable, e.message) == (
        "http_400",
        False,
        "Zuora x failed: [53100020] bad (HTTP 400)",
    )
    assert zuora_error("x", 400, {"Errors": [{"Code": "INVALID_VALUE", "Message": "no"}]}).message.endswith(
        "no (HTTP 400)"
    )
    assert zuora_error("x", 200, "not an object").code == "zuora_error"


def test_unreadable_object_is_a_platform_error(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    api.state.invoices[INV]["amount"] = "a lot"
    with pytest.raises(PlatformError) as err:
        client.get_invoice(INV)
    assert err.value.code == "unreadable_response" and "invoice.amount" in err.value.message


# ---------------------------------------------------------------- other writes


def test_set_native_retries_without_cpr_is_the_auto_pay_flag(
    api: FakeZuoraAPI, client: ZuoraPlatformClient
) -> None:
    client.set_native_retries(INV, False, idempotency_key="wf-12:retries")
    req = only(api, "PUT", rf"^/v1/invoices/{INV}$")
    assert req.json == {"autoPay": False} and req.header("idempotency-key") is None  # Zuora: POST/PATCH only
    assert api.state.invoices[INV]["autoPay"] is False
    client.set_native_retries(INV, True, idempotency_key="wf-13:retries")
    assert api.state.invoices[INV]["autoPay"] is True
    assert not api.find("PUT", "/api/v1/") and not api.find("POST", "/api/v1/")


def test_set_native_retries_off_removes_the_invoice_from_the_retry_cycle(
    api: FakeZuoraAPI, cpr_client: ZuoraPlatformClient
) -> None:
    api.retry_cycle.add(INV)
    cpr_client.set_native_retries(INV, False, idempotency_key="wf-14:retries")
    req = only(api, "PUT", rf"^/api/v1/payments/remove_invoice_from_retry_cycle/{INV}$")
    basic = base64.b64encode(f"{api.cpr_user}:{api.cpr_token}".encode()).decode()
    assert req.header("authorization") == f"Basic {basic}" and req.header("idempotency-key") is None
    assert INV not in api.retry_cycle and api.state.invoices[INV]["autoPay"] is False


def test_set_native_retries_on_submits_the_failed_payment(
    api: FakeZuoraAPI, cpr_client: ZuoraPlatformClient
) -> None:
    api.add_payment("PAY-ERR", ACCT, amount="49.99", created=NOW - timedelta(hours=2), gateway_code="05")
    cpr_client.set_native_retries(INV, True, idempotency_key="wf-15:retries")
    req = only(api, "POST", r"^/api/v1/payments/submit_failed_payment$")
    assert req.json == {"payment_id": "PAY-ERR"} and req.header("idempotency-key") == "wf-15:retries"
    assert (req.header("authorization") or "").startswith("Basic ")
    assert api.submitted_payments == ["PAY-ERR"] and api.state.invoices[INV]["autoPay"] is True


def test_write_note_keeps_the_comment_and_replaces_its_own_segment(
    api: FakeZuoraAPI, client: ZuoraPlatformClient
) -> None:
    api.state.invoices[INV]["comments"] = "Thank you for your business!"
    client.write_note(INV, {"case": "rec-1", "action": "retry scheduled"}, idempotency_key="wf-16:note")
    req = only(api, "PUT", rf"^/v1/invoices/{INV}$")
    assert req.json == {
        "comments": "Thank you for your business! [billops] case=rec-1; action=retry scheduled"
    }
    client.write_note(INV, {"case": "rec-1", "action": "paid"}, idempotency_key="wf-17:note")
    assert (
        api.state.invoices[INV]["comments"]
        == "Thank you for your business! [billops] case=rec-1; action=paid"
    )
    client.write_note(INV, {"case": "rec-1", "action": "paid"}, idempotency_key="wf-18:note")
    assert len(api.find("PUT", rf"^/v1/invoices/{INV}$")) == 2  # unchanged: no third write


def test_write_note_fits_in_255_characters(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    api.state.invoices[INV]["comments"] = "x" * 250
    client.write_note(INV, {"case": "rec-1", "detail": "y" * 300}, idempotency_key="wf-19:note")
    comments = api.state.invoices[INV]["comments"]
    assert len(comments) == 255 and "[billops] case=rec-1" in comments and comments.startswith("x" * 100)
    with pytest.raises(InputError):
        client.write_note(INV, {"": "x"}, idempotency_key="wf-20:note")


def test_pause_subscription(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    resume = NOW + timedelta(days=30)
    client.pause_subscription(SUB, resume_at=resume, idempotency_key="wf-21:pause")
    req = only(api, "PUT", rf"^/v1/subscriptions/{SUB}/suspend$")
    assert req.json == {"suspendPolicy": "Today", "resume": True, "resumePolicy": "SpecificDate",
                        "resumeSpecificDate": resume.date().isoformat()}  # fmt: skip
    assert req.header("zuora-version") == "211.0" and req.header("idempotency-key") is None
    assert api.state.subscriptions[SUB]["status"] == "Suspended"
    client.pause_subscription(SUB, resume_at=None, idempotency_key="wf-22:pause")  # already paused: no-op
    assert len(api.find("PUT", "/suspend")) == 1


def test_pause_subscription_without_resume_and_bad_input(
    api: FakeZuoraAPI, client: ZuoraPlatformClient
) -> None:
    client.pause_subscription(SUB, resume_at=None, idempotency_key="wf-23:pause")
    assert only(api, "PUT", "/suspend").json == {"suspendPolicy": "Today", "resume": False}
    with pytest.raises(InputError):
        client.pause_subscription(SUB, resume_at=NOW - timedelta(days=1), idempotency_key="wf-24:pause")
    api.state.subscriptions[SUB]["status"] = "Cancelled"
    with pytest.raises(PlatformError) as err:
        client.pause_subscription(SUB, resume_at=None, idempotency_key="wf-25:pause")
    assert err.value.code == "subscription_not_active"


def test_apply_credit_creates_a_posted_credit_memo(
    api: FakeZuoraAPI, cpr_client: ZuoraPlatformClient
) -> None:
    assert cpr_client.capabilities.credit
    cpr_client.apply_credit(
        ACCT, Money(amount=1500, currency="usd"), reason="goodwill", idempotency_key="wf-26:c"
    )
    req = only(api, "POST", r"^/v1/creditmemos$")
    assert req.header("idempotency-key") == "wf-26:c"
    assert req.json == {
        "accountId": ACCT,
        "effectiveDate": datetime.now(UTC).date().isoformat(),
        "charges": [{"productRatePlanChargeId": "PRPC-CREDIT-01", "amount": 15.0, "comment": "goodwill"}],
        "comment": "goodwill",
        "autoPost": True,
    }
    assert len(api.state.credit_memos) == 1
    with pytest.raises(InputError):
        cpr_client.apply_credit(
            ACCT, Money(amount=100, currency="eur"), reason="x", idempotency_key="wf-27:c"
        )


def test_unsupported_writes(client: ZuoraPlatformClient) -> None:
    caps = client.capabilities
    assert not caps.card_update_link and not caps.coupon and not caps.credit
    assert caps.retry_invoice and caps.disable_native_retries and caps.idempotency_keys and caps.backfill
    for call in (
        lambda: client.card_update_link(ACCT, return_url=None, idempotency_key="k"),
        lambda: client.apply_coupon(ACCT, "SAVE10", subscription_id=None, idempotency_key="k"),
        lambda: client.apply_credit(ACCT, Money(amount=100, currency="usd"), reason="x", idempotency_key="k"),
    ):
        with pytest.raises(PlatformError) as err:
            call()
        assert err.value.code == "unsupported" and not err.value.retryable


def test_it_is_a_platform_client(client: ZuoraPlatformClient) -> None:
    assert isinstance(client, PlatformClient) and client.platform == "zuora"


# ---------------------------------------------------------------- backfill


def test_backfill_pages_follow_the_cursor(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    for i in range(4):
        api.add_invoice(f"INV-B{i}", ACCT, amount=f"{10 + i}.00")
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = client.backfill_page("invoices", cursor, 2)
        seen += [item.id for item in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3 and sorted(seen) == sorted([INV, *[f"INV-B{i}" for i in range(4)]])
    reqs = api.find("GET", r"^/object-query/invoices$")
    assert reqs[0].query.get("cursor") is None and all(r.query.get("cursor") for r in reqs[1:])
    assert all(r.query["pageSize"] == ["2"] and r.query["expand[]"] == ["invoiceitems"] for r in reqs)


def test_backfill_every_resource(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    api.add_payment("PAY-1", ACCT, amount="49.99", status="Processed", created=NOW, invoice_id=INV)
    assert client.backfill_resources() == list(RESOURCES)
    kinds = {r: client.backfill_page(r, None, 99).items for r in RESOURCES}
    assert [c.id for c in kinds["customers"]] == [ACCT]
    assert [s.status for s in kinds["subscriptions"]] == ["active"]
    assert [(p.id, p.invoice_id) for p in kinds["payment_attempts"]] == [("PAY-1", INV)]
    pms = {pm.id: pm.is_default for pm in kinds["payment_methods"]}
    assert pms[VISA] is True and pms[MC] is False
    assert only(api, "GET", r"^/object-query/payment-methods$").query["expand[]"] == ["account"]


def test_backfill_input_errors(client: ZuoraPlatformClient) -> None:
    with pytest.raises(InputError):
        client.backfill_page("coupons", None, 10)
    with pytest.raises(InputError):
        client.backfill_page("invoices", None, 0)


def test_backfill_page_size_above_99_asks_for_99(api: FakeZuoraAPI, client: ZuoraPlatformClient) -> None:
    client.backfill_page("invoices", None, 100)  # `billops sync` defaults to 100
    assert only(api, "GET", r"^/object-query/invoices$").query["pageSize"] == ["99"]
