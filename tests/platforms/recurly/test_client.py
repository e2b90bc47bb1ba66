"""RecurlyPlatformClient over real HTTP, through the official SDK, against the local fake Recurly API
(tests/support/recurly_api.py), which records every request: method, path, query, Basic auth, Accept
header and JSON body are asserted from what the SDK actually sent. The at-most-once ledger runs on a real
SQLite database: a write whose answer is lost is reconciled, never sent twice; one that never reached the
server is sent."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from billops.domain import DeclineCategory, InvoiceStatus, Money
from billops.errors import InputError, PlatformError
from billops.platforms.base import PlatformClient
from billops.platforms.ledger import WriteLedger
from billops.platforms.recurly.client import (
    RESOURCES,
    RecurlyPlatformClient,
    TrackingHTTPSConnection,
    make_connection,
    pause_cycles,
)
from billops.store import Database
from support.loopback import RecordedRequest
from support.recurly_api import API_VERSION, FakeRecurlyAPI, load_fixture

pytestmark = pytest.mark.slow

ADA, GRACE, KENJI = "a1ada7k2m9qx", "a2grace4r8tb", "a3kenji6w2vc"
PAST_DUE = "i1001adapast"  # Ada's open invoice, 49.00 USD, one declined try (t1ada0decl01)
COLLECT = rf"^/invoices/{PAST_DUE}/collect$"


@pytest.fixture
def api() -> Iterator[FakeRecurlyAPI]:
    with FakeRecurlyAPI() as server:
        server.seed_fixtures()
        yield server


@pytest.fixture
def ledger(tmp_path: Path) -> WriteLedger:
    db = Database(f"sqlite:///{tmp_path}/l.db")
    db.migrate()
    return WriteLedger(db)


def make_client(api: FakeRecurlyAPI, ledger: WriteLedger, **kw: object) -> RecurlyPlatformClient:
    return RecurlyPlatformClient(api.api_key, api_url=api.url, ledger=ledger, timeout=5, **kw)  # type: ignore[arg-type]


@pytest.fixture
def client(api: FakeRecurlyAPI, ledger: WriteLedger) -> RecurlyPlatformClient:
    return make_client(api, ledger)


def dead_url() -> str:
    """An address where nothing listens: the connection is refused before any byte is sent."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def assert_sdk_request(req: RecordedRequest, api: FakeRecurlyAPI) -> None:
    assert req.header("authorization") == "Basic " + base64.b64encode(f"{api.api_key}:".encode()).decode()
    assert req.basic_credentials == (api.api_key, "")
    assert req.header("accept") == f"application/vnd.recurly.{API_VERSION}"
    assert (req.header("user-agent") or "").startswith("Recurly/")


# ------------------------------------------------------------------------------------------------------
# construction and transport


def test_is_a_platform_client_with_honest_capabilities(client: RecurlyPlatformClient) -> None:
    assert isinstance(client, PlatformClient)
    caps = client.capabilities
    assert client.platform == "recurly"
    assert caps.retry_invoice and caps.write_note and caps.card_update_link and caps.backfill
    assert caps.pause_subscription and caps.coupon and caps.credit and caps.pay_with_other_method
    assert not caps.disable_native_retries and not caps.idempotency_keys
    assert client.backfill_resources() == list(RESOURCES)


def test_default_transport_is_https_to_the_region(ledger: WriteLedger) -> None:
    for region, host in (("us", "v3.recurly.com"), ("eu", "v3.eu.recurly.com")):
        conn = make_connection(region, None, 5)
        assert isinstance(conn, TrackingHTTPSConnection)
        assert (conn.host, conn.port, conn.base_path) == (host, 443, "")
    assert make_connection("us", "http://127.0.0.1:9/base/", 5).base_path == "/base"
    with pytest.raises(InputError, match="region"):
        RecurlyPlatformClient("k", region="apac", ledger=ledger)
    with pytest.raises(InputError, match="api_url"):
        RecurlyPlatformClient("k", api_url="ftp://x", ledger=ledger)
    with pytest.raises(InputError, match="API key"):
        RecurlyPlatformClient("", ledger=ledger)


def test_every_request_carries_basic_auth_and_the_api_version(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient
) -> None:
    client.get_invoice("number-1001")
    client.get_customer(ADA)
    client.pay_invoice(PAST_DUE, idempotency_key="wf-auth:pay")
    assert len(api.requests) >= 3
    for req in api.requests:
        assert_sdk_request(req, api)
        assert req.status in (200, 201)


def test_wrong_api_key_is_a_permanent_error(api: FakeRecurlyAPI, ledger: WriteLedger) -> None:
    bad = RecurlyPlatformClient("wrong-key", api_url=api.url, ledger=ledger)
    with pytest.raises(PlatformError) as err:
        bad.get_invoice(PAST_DUE)
    assert (err.value.code, err.value.retryable) == ("unauthorized", False)
    assert api.requests[-1].status == 401


def test_concurrent_reads_share_the_sdk_connection_safely(client: RecurlyPlatformClient) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(5):
                results.append(client.get_invoice(PAST_DUE).id)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [PAST_DUE] * 30


# ------------------------------------------------------------------------------------------------------
# reads


def test_get_invoice_by_number_and_latest_attempt(api: FakeRecurlyAPI, client: RecurlyPlatformClient) -> None:
    invoice = client.get_invoice("number-1001")
    assert [(r.method, r.path) for r in api.requests] == [("GET", "/invoices/number-1001")]
    assert (invoice.id, invoice.status, invoice.amount_remaining, invoice.latest_attempt_id) == (
        PAST_DUE, InvoiceStatus.open, 4900, "t1ada0decl01",
    )  # fmt: skip
    api.clear_requests()
    attempt = client.latest_attempt(invoice)
    assert [r.path for r in api.requests] == [f"/invoices/{PAST_DUE}"]  # embedded transactions: one call
    assert attempt is not None and attempt.id == "t1ada0decl01" and attempt.customer_id == ADA
    assert attempt.decline is not None and attempt.decline.code == "insufficient_funds"
    assert client.latest_attempt(client.get_invoice("i1003kenjijp")) is None


def test_latest_attempt_without_embedded_transactions_lists_the_account(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient
) -> None:
    api.embed_transactions = False
    invoice = client.get_invoice("i1002gracepd")
    api.clear_requests()
    attempt = client.latest_attempt(invoice)
    assert attempt is not None and attempt.id == "t3grace0ok01" and attempt.outcome == "succeeded"
    _, listing = api.requests
    assert listing.path == f"/accounts/{GRACE}/transactions"
    assert listing.params == {"type": "payment", "sort": "created_at", "order": "desc", "limit": "200"}


def test_customer_and_payment_methods(api: FakeRecurlyAPI, client: RecurlyPlatformClient) -> None:
    customer = client.get_customer("code-cust-grace")
    assert (customer.id, customer.name, customer.default_payment_method_id) == (
        GRACE, "Grace Hopper", "bi2grace0mc1",
    )  # fmt: skip
    api.clear_requests()
    methods = client.list_payment_methods(GRACE)
    assert [r.path for r in api.requests] == [f"/accounts/{GRACE}", f"/accounts/{GRACE}/billing_infos"]
    assert {(m.id, m.is_default, m.card.brand if m.card else None) for m in methods} == {
        ("bi2grace0mc1", True, "mastercard"),
        ("bi2grace0amx", False, "amex"),
    }
    assert client.list_payment_methods(KENJI) == []
    assert client.get_billing_info(KENJI) is None  # 404 on /billing_info: no billing info


def test_not_found_is_not_retryable(client: RecurlyPlatformClient) -> None:
    with pytest.raises(PlatformError) as err:
        client.get_invoice("number-999999")
    assert (err.value.code, err.value.retryable) == ("not_found", False)
    assert "number-999999" in err.value.message


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (429, {"error": {"type": "rate_limited", "message": "Slow down"}}, "rate_limited", True),
        (500, "<html>oops</html>", "http_500", True),
        (503, {"error": {"type": "service_unavailable", "message": "Down"}}, "service_unavailable", True),
        (200, "not json at all", "unreadable_response", False),
        (200, {"object": 5}, "unreadable_response", False),
        (200, [1, 2, 3], "unreadable_response", False),
        (422, {"no_error_key": True}, "unreadable_response", False),
    ],
)
def test_error_mapping(
    api: FakeRecurlyAPI,
    client: RecurlyPlatformClient,
    status: int,
    body: object,
    code: str,
    retryable: bool,
) -> None:
    api.fail_next(status, body if isinstance(body, dict | str) else str(body), path=r"^/invoices/")
    with pytest.raises(PlatformError) as err:
        client.get_invoice(PAST_DUE)
    assert (err.value.code, err.value.retryable) == (code, retryable)
    assert client.get_invoice(PAST_DUE).id == PAST_DUE  # the connection is usable again


def test_a_read_whose_connection_drops_is_tried_once_more(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient
) -> None:
    api.fail_next(mode="drop", method="GET", path=rf"^/invoices/{PAST_DUE}$")
    assert client.get_invoice(PAST_DUE).id == PAST_DUE
    assert [r.status for r in api.find("GET", rf"^/invoices/{PAST_DUE}$")] == [0, 200]
    api.fail_next(mode="drop", method="GET", path=rf"^/invoices/{PAST_DUE}$", times=2)
    with pytest.raises(PlatformError) as err:
        client.get_invoice(PAST_DUE)
    assert (err.value.code, err.value.retryable) == ("connection_error", True)


def test_read_against_a_dead_server_is_a_retryable_connection_error(ledger: WriteLedger) -> None:
    dead = RecurlyPlatformClient("k", api_url=dead_url(), ledger=ledger, timeout=2)
    with pytest.raises(PlatformError) as err:
        dead.get_invoice(PAST_DUE)
    assert (err.value.code, err.value.retryable) == ("connection_error", True)


# ------------------------------------------------------------------------------------------------------
# pay


def test_pay_collects_once_and_a_replay_returns_the_stored_result(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient, ledger: WriteLedger
) -> None:
    result = client.pay_invoice(PAST_DUE, idempotency_key="wf-1:pay")
    [collect] = api.find("PUT", COLLECT)
    assert_sdk_request(collect, api)
    assert collect.body == b""  # no body: the account's primary billing info pays
    assert result.outcome == "succeeded"
    assert result.invoice.status == InvoiceStatus.paid and result.invoice.amount_remaining == 0
    assert result.attempt is not None and result.attempt.outcome == "succeeded"
    assert result.attempt.initiated_by == "billops" and result.attempt.id != "t1ada0decl01"
    assert result.attempt.amount == 4900 and result.attempt.invoice_id == PAST_DUE
    assert ledger.status("wf-1:pay") == "done"

    again = client.pay_invoice(PAST_DUE, idempotency_key="wf-1:pay")
    assert len(api.find("PUT", COLLECT)) == 1
    assert (again.outcome, again.invoice, again.attempt) == (result.outcome, result.invoice, result.attempt)


def test_pay_with_another_stored_method_sends_its_billing_info_id(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient
) -> None:
    backup = load_fixture("api/billing_infos")[2] | {"id": "bi1ada0amx02", "account_id": ADA}
    api.seed("billing_infos", backup)
    result = client.pay_invoice(PAST_DUE, idempotency_key="wf-2:pay", payment_method_id="bi1ada0amx02")
    [collect] = api.find("PUT", COLLECT)
    assert collect.json == {"billing_info_id": "bi1ada0amx02"}
    assert collect.header("content-type") == "application/json"
    assert result.outcome == "succeeded"
    assert result.attempt is not None and result.attempt.card is not None
    assert result.attempt.card.brand == "amex"


def test_paying_a_settled_invoice_sends_nothing(api: FakeRecurlyAPI, client: RecurlyPlatformClient) -> None:
    result = client.pay_invoice("i1002gracepd", idempotency_key="wf-3:pay")
    assert result.outcome == "already_settled"
    assert result.invoice.status == InvoiceStatus.paid
    assert api.writes() == []


def test_a_decline_is_an_outcome_with_the_classified_transaction(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient, ledger: WriteLedger
) -> None:
    api.decline_next_collect(
        code="declined", message="Do not honor", decline_code="do_not_honor",
        gateway_response_code="05", gateway_response_values={"merchant_advice_code": "03"},
    )  # fmt: skip
    result = client.pay_invoice(PAST_DUE, idempotency_key="wf-4:pay")
    assert result.outcome == "failed"
    assert result.invoice.status == InvoiceStatus.open
    attempt = result.attempt
    assert attempt is not None and attempt.outcome == "failed" and attempt.initiated_by == "billops"
    assert attempt.id != "t1ada0decl01" and attempt.invoice_id == PAST_DUE
    assert attempt.decline is not None
    # Visa card: the MAC is Mastercard-only and is not applied; do_not_honor is soft
    assert (attempt.decline.code, attempt.decline.category) == ("do_not_honor", DeclineCategory.soft)
    assert result.message == "Do not honor"
    assert len(api.find("PUT", COLLECT)) == 1
    assert ledger.status("wf-4:pay") == "done"
    assert client.pay_invoice(PAST_DUE, idempotency_key="wf-4:pay").outcome == "failed"
    assert len(api.find("PUT", COLLECT)) == 1


def test_a_decline_without_a_recorded_transaction_is_described_from_the_error(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient
) -> None:
    api.decline_next_collect(
        code="fraud_stolen_card", message="Stolen card", category="fraud", record_transaction=False
    )
    result = client.pay_invoice(PAST_DUE, idempotency_key="wf-5:pay")
    assert result.outcome == "failed"
    assert result.attempt is not None and result.attempt.decline is not None
    assert (result.attempt.decline.code, result.attempt.decline.category) == (
        "stolen_card",
        DeclineCategory.hard,
    )
    assert result.attempt.amount == 4900


@pytest.mark.parametrize("mode", ["apply_then_respond", "apply_then_drop"])
def test_a_collect_whose_answer_is_lost_is_reconciled_not_sent_twice(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient, ledger: WriteLedger, mode: str
) -> None:
    api.fail_next(503, mode=mode, method="PUT", path=COLLECT)  # type: ignore[arg-type]
    with pytest.raises(PlatformError) as err:
        client.pay_invoice(PAST_DUE, idempotency_key="wf-6:pay")
    assert err.value.code != "not_sent"
    assert ledger.status("wf-6:pay") == "pending"
    assert api.get("invoices", PAST_DUE)["state"] == "paid"  # Recurly did apply it

    result = client.pay_invoice(PAST_DUE, idempotency_key="wf-6:pay")
    assert len(api.find("PUT", COLLECT)) == 1  # reconciled from Recurly's state, not sent again
    assert result.outcome == "succeeded"
    assert result.attempt is not None and result.attempt.initiated_by == "billops"
    assert ledger.status("wf-6:pay") == "done"


def test_a_lost_decline_is_reconciled_as_the_declined_attempt(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient
) -> None:
    api.decline_next_collect(code="insufficient_funds")
    api.fail_next(502, mode="apply_then_respond", method="PUT", path=COLLECT)
    with pytest.raises(PlatformError):
        client.pay_invoice(PAST_DUE, idempotency_key="wf-7:pay")
    result = client.pay_invoice(PAST_DUE, idempotency_key="wf-7:pay")
    assert len(api.find("PUT", COLLECT)) == 1
    assert result.outcome == "failed"
    assert result.attempt is not None and result.attempt.decline is not None
    assert result.attempt.decline.code == "insufficient_funds"


def test_a_write_that_never_reached_recurly_is_sent_on_the_retry(
    api: FakeRecurlyAPI, ledger: WriteLedger
) -> None:
    dead = RecurlyPlatformClient(api.api_key, api_url=dead_url(), ledger=ledger, timeout=2)
    with pytest.raises(PlatformError) as err:
        dead.apply_credit(
            ADA, Money(amount=700, currency="usd"), reason="outage", idempotency_key="wf-8:credit"
        )
    assert (err.value.code, err.value.retryable) == ("not_sent", True)
    assert ledger.status("wf-8:credit") is None  # known not sent: nothing pending

    live = make_client(api, ledger)
    live.apply_credit(ADA, Money(amount=700, currency="usd"), reason="outage", idempotency_key="wf-8:credit")
    assert len(api.find("POST", r"/line_items$")) == 1
    assert api.find("GET", r"/line_items$") == []  # nothing was pending: no reconcile needed
    assert ledger.status("wf-8:credit") == "done"


def test_a_pay_whose_read_fails_leaves_nothing_pending(api: FakeRecurlyAPI, ledger: WriteLedger) -> None:
    dead = RecurlyPlatformClient(api.api_key, api_url=dead_url(), ledger=ledger, timeout=2)
    with pytest.raises(PlatformError) as err:
        dead.pay_invoice(PAST_DUE, idempotency_key="wf-8:pay")
    assert err.value.retryable
    assert ledger.status("wf-8:pay") is None
    result = make_client(api, ledger).pay_invoice(PAST_DUE, idempotency_key="wf-8:pay")
    assert len(api.find("PUT", COLLECT)) == 1
    assert result.outcome == "succeeded"


def test_an_unanswered_collect_is_uncertain_at_first_then_resent_once_nothing_shows(
    api: FakeRecurlyAPI, ledger: WriteLedger
) -> None:
    api.fail_next(503, mode="respond", method="PUT", path=COLLECT)  # 503 without applying
    client = make_client(api, ledger)
    with pytest.raises(PlatformError) as first:
        client.pay_invoice(PAST_DUE, idempotency_key="wf-9:pay")
    assert (first.value.code, first.value.retryable) == ("internal_server_error", True)
    with pytest.raises(PlatformError) as soon:
        client.pay_invoice(PAST_DUE, idempotency_key="wf-9:pay")
    assert (soon.value.code, soon.value.retryable) == ("uncertain", True)
    assert len(api.find("PUT", COLLECT)) == 1  # not resent while it might still be running

    later = make_client(api, ledger, reconcile_grace_seconds=0)  # the grace period is over
    result = later.pay_invoice(PAST_DUE, idempotency_key="wf-9:pay")
    assert len(api.find("PUT", COLLECT)) == 2  # the first one certainly did not apply
    assert result.outcome == "succeeded"
    paid = [t for t in api.store["transactions"].values() if t["invoice"]["id"] == PAST_DUE and t["success"]]
    assert len(paid) == 1


def test_native_retries_cannot_be_stopped_per_invoice(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient
) -> None:
    client.set_native_retries(PAST_DUE, True, idempotency_key="wf:on")  # already the case: no call
    with pytest.raises(PlatformError) as err:
        client.set_native_retries(PAST_DUE, False, idempotency_key="wf:off")
    assert err.value.code == "unsupported"
    assert "dunning" in err.value.message
    assert api.requests == []


def test_writes_need_an_idempotency_key(client: RecurlyPlatformClient) -> None:
    with pytest.raises(InputError):
        client.pay_invoice(PAST_DUE, idempotency_key="")
    with pytest.raises(InputError):
        client.write_note(PAST_DUE, {"a": "b"}, idempotency_key="")
    with pytest.raises(InputError):
        client.apply_credit(ADA, Money(amount=100, currency="usd"), reason="x", idempotency_key="")


# ------------------------------------------------------------------------------------------------------
# other writes


def test_write_note_goes_to_the_invoice_account_with_a_reconcilable_marker(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient
) -> None:
    client.write_note(
        "number-1001", {"decision": "retry on Friday", "score": "0.71"}, idempotency_key="wf-n1"
    )
    [post] = api.find("POST", rf"^/accounts/{ADA}/notes$")
    assert_sdk_request(post, api)
    message = post.json["message"]
    assert message.splitlines() == [
        "BillOps, invoice 1001:",
        "decision: retry on Friday",
        "score: 0.71",
        "[billops-ref wf-n1]",
    ]
    client.write_note("number-1001", {"decision": "retry on Friday"}, idempotency_key="wf-n1")
    assert len(api.find("POST", r"/notes$")) == 1
    client.write_note(PAST_DUE, {}, idempotency_key="wf-n2")  # nothing to write
    assert len(api.writes()) == 1


def test_a_note_whose_answer_is_lost_is_found_not_written_twice(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient, ledger: WriteLedger
) -> None:
    api.fail_next(mode="apply_then_drop", method="POST", path=r"/notes$")
    with pytest.raises(PlatformError):
        client.write_note(PAST_DUE, {"k": "v"}, idempotency_key="wf-n3")
    client.write_note(PAST_DUE, {"k": "v"}, idempotency_key="wf-n3")
    assert len(api.find("POST", r"/notes$")) == 1
    assert len(api.notes) == 1
    assert api.find("GET", rf"^/accounts/{ADA}/notes$")  # reconcile read the notes
    assert ledger.status("wf-n3") == "done"


def test_card_update_link_uses_the_hosted_login_token(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient
) -> None:
    url = client.card_update_link(ADA, return_url="https://example.com/back", idempotency_key="wf-c")
    assert (
        url
        == "https://billops-demo.recurly.com/account/billing_info/edit?ht=3f9a0c1d2e4b5a6978c0d1e2f3a4b5c6"
    )
    client.card_update_link("code-cust-grace", return_url=None, idempotency_key="wf-c2")
    assert [r.path for r in api.requests] == [f"/accounts/{ADA}", "/sites", "/accounts/code-cust-grace"]
    assert api.writes() == []
    fixed = make_client(api, client._ledger, subdomain="acme")
    assert fixed.card_update_link(ADA, return_url=None, idempotency_key="x").startswith(
        "https://acme.recurly.com/"
    )


def test_pause_for_enough_whole_cycles(
    api: FakeRecurlyAPI, client: RecurlyPlatformClient, ledger: WriteLedger
) -> None:
    # period 2026-11-01 .. 12-01 (30 days); pausing from 12-01, 2027-02-15 is 76 days on: 3 cycles
    client.pause_subscription(
        "s1adapro0001", resume_at=datetime(2027, 2, 15, tzinfo=UTC), idempotency_key="p1"
    )
    [put] = api.find("PUT", r"^/subscriptions/s1adapro0001/pause$")
    assert_sdk_request(put, api)
    assert put.json == {"remaining_pause_cycles": 3}
    assert api.get("subscriptions", "s1adapro0001")["remaining_pause_cycles"] == 3
    client.pause_subscription("s1adapro0001", resume_at=None, idempotency_key="p1")
    assert len(api.find("PUT", r"/pause$")) == 1  # replay: stored result
    assert ledger.status("p1") == "done"


def test_pause_cycles() -> None:
    sub = load_fixture("api/subscriptions")[0]
    assert pause_cycles(sub, None) == 1
    assert pause_cycles(sub, datetime(2026, 11, 20, tzinfo=UTC)) == 1  # before the next renewal: 1
    assert pause_cycles(sub, datetime(2026, 12, 31, 9, tzinfo=UTC)) == 1
    assert pause_cycles(sub, datetime(2026, 12, 31, 9, 1, tzinfo=UTC)) == 2
    assert pause_cycles(sub | {"current_period_started_at": None}, datetime(2028, 1, 1, tzinfo=UTC)) == 1


def test_a_lost_pause_is_reconciled(api: FakeRecurlyAPI, client: RecurlyPlatformClient) -> None:
    api.fail_next(500, mode="apply_then_respond", method="PUT", path=r"/pause$")
    with pytest.raises(PlatformError):
        client.pause_subscription("s1adapro0001", resume_at=None, idempotency_key="p2")
    client.pause_subscription("s1adapro0001", resume_at=None, idempotency_key="p2")
    assert len(api.find("PUT", r"/pause$")) == 1


def test_apply_coupon_by_code(api: FakeRecurlyAPI, client: RecurlyPlatformClient) -> None:
    client.apply_coupon(ADA, "winback-20", subscription_id="s1adapro0001", idempotency_key="cp1")
    [get, post] = api.requests
    assert (get.method, get.path) == ("GET", "/coupons/code-winback-20")
    assert (post.method, post.path) == ("POST", f"/accounts/{ADA}/coupon_redemptions/active")
    assert post.json == {"coupon_id": "c1winback020", "subscription_id": "s1adapro0001"}
    assert_sdk_request(post, api)
    with pytest.raises(PlatformError) as err:
        client.apply_coupon(ADA, "no-such-coupon", subscription_id=None, idempotency_key="cp2")
    assert err.value.code == "not_found"


def test_a_lost_coupon_redemption_is_reconciled(api: FakeRecurlyAPI, client: RecurlyPlatformClient) -> None:
    api.fail_next(mode="apply_then_drop", method="POST", path=r"/coupon_redemptions/active$")
    with pytest.raises(PlatformError):
        client.apply_coupon(GRACE, "winback-20", subscription_id=None, idempotency_key="cp3")
    client.apply_coupon(GRACE, "winback-20", subscription_id=None, idempotency_key="cp3")
    assert len(api.find("POST", r"/coupon_redemptions/active$")) == 1
    assert len(api.redemptions) == 1


def test_apply_credit_is_a_credit_line_item(api: FakeRecurlyAPI, client: RecurlyPlatformClient) -> None:
    client.apply_credit(ADA, Money(amount=1250, currency="usd"), reason="goodwill", idempotency_key="cr1")
    client.apply_credit(KENJI, Money(amount=500, currency="jpy"), reason="", idempotency_key="cr2")
    usd, jpy = api.find("POST", r"/line_items$")
    assert usd.path == f"/accounts/{ADA}/line_items"
    assert usd.json == {
        "currency": "USD",
        "unit_amount": 12.5,
        "type": "credit",
        "description": "Account credit: goodwill",
    }
    assert jpy.json == {
        "currency": "JPY",
        "unit_amount": 500.0,
        "type": "credit",
        "description": "Account credit",
    }
    with pytest.raises(InputError, match="positive"):
        client.apply_credit(ADA, Money(amount=0, currency="usd"), reason="x", idempotency_key="cr3")


def test_a_lost_credit_is_reconciled(api: FakeRecurlyAPI, client: RecurlyPlatformClient) -> None:
    api.fail_next(504, mode="apply_then_respond", method="POST", path=r"/line_items$")
    with pytest.raises(PlatformError) as err:
        client.apply_credit(ADA, Money(amount=999, currency="usd"), reason="sorry", idempotency_key="cr4")
    assert err.value.retryable
    client.apply_credit(ADA, Money(amount=999, currency="usd"), reason="sorry", idempotency_key="cr4")
    assert len(api.find("POST", r"/line_items$")) == 1
    [listing] = api.find("GET", rf"^/accounts/{ADA}/line_items$")
    assert listing.params["type"] == "credit" and listing.params["sort"] == "created_at"
    assert "begin_time" in listing.params


# ------------------------------------------------------------------------------------------------------
# backfill


@pytest.mark.parametrize(
    ("resource", "path", "extra", "expected"),
    [
        ("customers", "/accounts", {}, {ADA, GRACE, KENJI}),
        ("subscriptions", "/subscriptions", {}, {"s1adapro0001", "s2gracepaus1", "s3adaseats01",
                                                  "s4kenjibas01", "s5gracetri01"}),
        ("invoices", "/invoices", {"type": "charge"}, {PAST_DUE, "i1002gracepd", "i1003kenjijp",
                                                       "i1004adafail"}),
        ("payment_attempts", "/transactions", {"type": "payment"}, {"t1ada0decl01", "t2grace0dcl1",
                                                                  "t3grace0ok01", "t4ada0expd01"}),
        ("payment_methods", "/accounts", {}, {"bi1ada0visa1", "bi2grace0mc1"}),  # the embedded primary ones
    ],
)  # fmt: skip
def test_backfill_pages_through_every_resource(
    api: FakeRecurlyAPI,
    client: RecurlyPlatformClient,
    resource: str,
    path: str,
    extra: dict[str, str],
    expected: set[str],
) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = client.backfill_page(resource, cursor, 2)
        seen += [item.id for item in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
        assert pages < 10
    assert set(seen) == expected and len(seen) == len(expected)
    reqs = api.find("GET", rf"^{path}$")
    assert len(reqs) == pages
    assert reqs[0].params == {"limit": "2", "sort": "updated_at", "order": "asc", **extra}
    assert all(r.params.get("cursor") for r in reqs[1:])


def test_backfill_rejects_bad_arguments(client: RecurlyPlatformClient) -> None:
    with pytest.raises(InputError, match="unknown Recurly backfill resource"):
        client.backfill_page("plans", None, 10)
    with pytest.raises(InputError, match="page size"):
        client.backfill_page("customers", None, 201)
