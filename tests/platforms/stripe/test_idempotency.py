"""Idempotency keys as Stripe documents them, on the test stand-in (the recording proxy in front of
localstripe, which itself ignores the header), and every write the recovery makes replayed with the same
key, as a DBOS replay of the step would: the side effect happens once, the second call gets the stored
answer (`Idempotent-Replayed: true`)."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime

import pytest
import stripe

from billops.domain import InvoiceStatus, Money
from billops.errors import PlatformError
from billops.platforms.stripe.client import StripePlatformClient
from support.idempotency import STRIPE_TTL, ManualClock
from support.localstripe import (
    create_customer_with_card,
    create_plan,
    create_subscription,
    sdk_client,
)
from support.loopback import RecordedRequest
from support.recording_proxy import RecordingProxy

pytestmark = pytest.mark.slow

WF = "stripe:evt_replay_1"  # a workflow id; keys are `<workflow id>:<step>` (recovery/steps.py)


def failing_invoice(sdk: stripe.StripeClient) -> tuple[str, str]:
    """(customer, invoice): card 4000000000000341, the first invoice declined and open."""
    seeded = create_customer_with_card(sdk)
    _, invoice_id = create_subscription(sdk, seeded.customer_id, create_plan(sdk))
    return seeded.customer_id, invoice_id


def charges_of(sdk: stripe.StripeClient, customer_id: str) -> list[str]:
    return [c.id for c in sdk.v1.charges.list({"customer": customer_id, "limit": 100}).data]


class Counter:
    """A stubbed Stripe endpoint that creates one object per execution (what localstripe lacks)."""

    def __init__(self, prefix: str, make: dict[str, object]) -> None:
        self.prefix, self.make, self.calls = prefix, make, 0
        self._ids = itertools.count(1)

    def __call__(self, rec: RecordedRequest) -> tuple[int, dict[str, object]]:
        self.calls += 1
        oid = f"{self.prefix}_{next(self._ids)}"
        return 200, {
            "id": oid,
            **{k: (v.format(id=oid) if isinstance(v, str) else v) for k, v in self.make.items()},
        }


# ---------------------------------------------------------------- the stand-in itself


def test_same_key_same_parameters_replays_the_stored_answer_without_reaching_localstripe(
    localstripe_url: str, proxy: RecordingProxy
) -> None:
    sdk = sdk_client(proxy.url)
    first = sdk.v1.customers.create({"email": "a@example.com"}, {"idempotency_key": "k-cus-1"})
    again = sdk.v1.customers.create({"email": "a@example.com"}, {"idempotency_key": "k-cus-1"})

    assert again.id == first.id
    assert again.last_response is not None and first.last_response is not None
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    assert len(proxy.executed_on("POST", r"^/v1/customers$")) == 1
    assert [r.replayed for r in proxy.find("POST", r"^/v1/customers$")] == [False, True]
    # localstripe holds one customer with that email, not two
    emails = [c.email for c in sdk_client(localstripe_url).v1.customers.list({"limit": 100}).data]
    assert emails.count("a@example.com") == 1


def test_same_key_other_parameters_is_an_idempotency_error(proxy: RecordingProxy) -> None:
    sdk = sdk_client(proxy.url)
    sdk.v1.customers.create({"email": "b@example.com"}, {"idempotency_key": "k-cus-2"})
    with pytest.raises(stripe.IdempotencyError) as info:
        sdk.v1.customers.create({"email": "other@example.com"}, {"idempotency_key": "k-cus-2"})
    assert info.value.http_status == 400
    assert "same parameters" in (info.value.user_message or "")
    with pytest.raises(stripe.IdempotencyError) as other:
        sdk.v1.plans.create(
            {"amount": 100, "currency": "usd", "interval": "month", "product": {"name": "x"}},
            {"idempotency_key": "k-cus-2"},
        )
    assert "same endpoint" in (other.value.user_message or "")
    assert len(proxy.executed_on("POST", r"^/v1/(customers|plans)$")) == 1


def test_keys_are_scoped_per_api_key_and_kept_24_hours(localstripe_url: str) -> None:
    clock = ManualClock()
    sessions = Counter("bps", {"object": "billing_portal.session", "url": "https://portal.test/{id}"})
    with RecordingProxy(localstripe_url, clock=clock) as proxy:
        proxy.stub("POST", r"^/v1/billing_portal/sessions$", sessions)
        a, b = sdk_client(proxy.url, "sk_test_account_a"), sdk_client(proxy.url, "sk_test_account_b")
        params = {"customer": "cus_1"}
        url_a = a.v1.billing_portal.sessions.create(params, {"idempotency_key": "k-1"}).url  # type: ignore[arg-type]
        assert a.v1.billing_portal.sessions.create(params, {"idempotency_key": "k-1"}).url == url_a  # type: ignore[arg-type]
        url_b = b.v1.billing_portal.sessions.create(params, {"idempotency_key": "k-1"}).url  # type: ignore[arg-type]
        assert url_b != url_a and sessions.calls == 2  # another account: its own key space

        clock.advance(STRIPE_TTL - 1)
        assert a.v1.billing_portal.sessions.create(params, {"idempotency_key": "k-1"}).url == url_a  # type: ignore[arg-type]
        clock.advance(2)  # pruned after 24 h: the same key is a new request
        assert a.v1.billing_portal.sessions.create(params, {"idempotency_key": "k-1"}).url != url_a  # type: ignore[arg-type]
        assert sessions.calls == 3


def test_a_key_in_use_by_a_running_request_answers_409(localstripe_url: str) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(rec: RecordedRequest) -> tuple[int, dict[str, object]]:
        started.set()
        release.wait(10)
        return 200, {"id": "bps_1", "object": "billing_portal.session", "url": "https://portal.test/1"}

    with RecordingProxy(localstripe_url) as proxy:
        proxy.stub("POST", r"^/v1/billing_portal/sessions$", slow)
        sdk = sdk_client(proxy.url)
        first: list[object] = []
        t = threading.Thread(
            target=lambda: first.append(
                sdk.v1.billing_portal.sessions.create({"customer": "cus_1"}, {"idempotency_key": "k-busy"})
            )
        )
        t.start()
        try:
            assert started.wait(10)
            with pytest.raises(stripe.APIError) as info:  # the SDK's class for a 409 (it retries those)
                sdk.v1.billing_portal.sessions.create({"customer": "cus_1"}, {"idempotency_key": "k-busy"})
            assert info.value.http_status == 409
            assert info.value.error is not None and info.value.error.code == "idempotency_key_in_use"
        finally:
            release.set()
            t.join(10)
        assert first and not t.is_alive()


def test_nothing_is_saved_when_the_endpoint_never_ran(proxy: RecordingProxy) -> None:
    """An injected 503 (trouble in front of the API) is not saved: the retry with the same key runs."""
    sdk = sdk_client(proxy.url)
    proxy.fail_next(503, method="POST", path_pattern=r"^/v1/customers$")
    with pytest.raises(stripe.APIError):
        sdk.v1.customers.create({"email": "c@example.com"}, {"idempotency_key": "k-cus-3"})
    created = sdk.v1.customers.create({"email": "c@example.com"}, {"idempotency_key": "k-cus-3"})
    assert created.id.startswith("cus_")
    assert len(proxy.executed_on("POST", r"^/v1/customers$")) == 1


def test_get_requests_ignore_the_header(proxy: RecordingProxy, sdk: stripe.StripeClient) -> None:
    customer_id, _ = failing_invoice(sdk)
    raw = sdk_client(proxy.url)
    for _ in range(2):
        raw.v1.customers.retrieve(customer_id, options={"idempotency_key": "k-get"})
    assert [r.replayed for r in proxy.find("GET", rf"^/v1/customers/{customer_id}$")] == [False, False]
    assert proxy.idempotency.keys() == []


# ---------------------------------------------------------------- every recovery write, replayed


def test_a_replayed_declined_pay_charges_once_and_gets_the_stored_answer(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    customer_id, invoice_id = failing_invoice(sdk)
    before = charges_of(sdk, customer_id)
    key = f"{WF}:pay:1"

    first = client.pay_invoice(invoice_id, idempotency_key=key)
    replay = client.pay_invoice(invoice_id, idempotency_key=key)  # the invoice is still open: pay is sent

    assert first.outcome == replay.outcome == "failed"
    assert first.attempt is not None and replay.attempt is not None
    assert replay.attempt.id == first.attempt.id  # the same (one) payment attempt
    pays = proxy.find("POST", rf"^/v1/invoices/{invoice_id}/pay$")
    assert [p.replayed for p in pays] == [False, True]
    assert {p.header("Idempotency-Key") for p in pays} == {key}
    assert len(proxy.executed_on("POST", r"/pay$")) == 1
    assert len(charges_of(sdk, customer_id)) == len(before) + 1  # one new charge, not two


def test_a_pay_whose_answer_was_lost_is_replayed_not_charged_again(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    """The worker's pay reached Stripe but the answer never came back (timeout, kill): the step is run
    again with the same key and Stripe answers with what it did the first time."""
    customer_id, invoice_id = failing_invoice(sdk)
    before = charges_of(sdk, customer_id)
    proxy.lose_answer_next(method="POST", path_pattern=r"/pay$")
    with pytest.raises(PlatformError) as info:
        client.pay_invoice(invoice_id, idempotency_key=f"{WF}:pay:2")
    assert info.value.retryable  # the step retries

    again = client.pay_invoice(invoice_id, idempotency_key=f"{WF}:pay:2")
    assert again.outcome == "failed"
    assert [p.replayed for p in proxy.find("POST", r"/pay$")] == [False, True]
    assert len(charges_of(sdk, customer_id)) == len(before) + 1


def test_a_replayed_successful_pay_is_stopped_by_the_read_before_write(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    from support.localstripe import CARD_OK, add_card

    customer_id, invoice_id = failing_invoice(sdk)
    add_card(sdk, customer_id, card=CARD_OK, make_default=True)
    assert client.pay_invoice(invoice_id, idempotency_key=f"{WF}:pay:3").outcome == "succeeded"
    replay = client.pay_invoice(invoice_id, idempotency_key=f"{WF}:pay:3")
    assert replay.outcome == "already_settled" and replay.invoice.status == InvoiceStatus.paid
    assert len(proxy.find("POST", r"/pay$")) == 1


def test_every_other_recovery_write_happens_once_when_replayed(
    client: StripePlatformClient, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    """disable_platform_retries, write_note, card_update_link (also `<step>:link` for messages),
    pause_subscription, apply_credit, apply_coupon: each twice with the same key."""
    customer_id, invoice_id = failing_invoice(sdk)
    # localstripe refuses auto_advance and lacks portals, pause_collection, balance transactions and
    # discounts: stubs stand in for them behind the idempotency layer (each call counted).
    flags = Counter("in", {"object": "invoice", "auto_advance": False})
    proxy.stub(
        "POST",
        rf"^/v1/invoices/{invoice_id}$",
        lambda rec: flags(rec) if "auto_advance" in rec.form else None,
    )
    portal = Counter("bps", {"object": "billing_portal.session", "url": "https://portal.test/{id}"})
    proxy.stub("POST", r"^/v1/billing_portal/sessions$", portal)
    subs = Counter("sub", {"object": "subscription", "status": "active"})
    proxy.stub("POST", r"^/v1/subscriptions/sub_r1$", subs)
    credits = Counter("cbtxn", {"object": "customer_balance_transaction", "amount": -1500})
    proxy.stub("POST", rf"^/v1/customers/{customer_id}/balance_transactions$", credits)
    resume = datetime(2027, 1, 1, tzinfo=UTC)

    def writes(step: str) -> list[object]:
        key = f"{WF}:{step}"
        return [
            client.set_native_retries(invoice_id, False, idempotency_key=f"{key}:native"),
            client.write_note(invoice_id, {"route": "retry"}, idempotency_key=f"{key}:note"),
            client.card_update_link(customer_id, return_url=None, idempotency_key=f"{key}:link"),
            client.pause_subscription("sub_r1", resume_at=resume, idempotency_key=f"{key}:pause"),
            client.apply_credit(
                customer_id,
                Money(amount=1500, currency="usd"),
                reason="goodwill",
                idempotency_key=f"{key}:credit",
            ),
            client.apply_coupon(
                customer_id, "WINBACK20", subscription_id="sub_r1", idempotency_key=f"{key}:coupon"
            ),
        ]

    proxy.clear()
    first = writes("act:1")
    again = writes("act:1")

    assert first == again  # the same link, the same (None) results
    assert (flags.calls, portal.calls, subs.calls, credits.calls) == (1, 1, 2, 1)  # pause + coupon: 2 keys
    posts = [r for r in proxy.requests if r.method == "POST"]
    assert len(posts) == 12 and all(r.header("Idempotency-Key") for r in posts)
    assert [r.replayed for r in posts] == [False] * 6 + [True] * 6
    assert len(proxy.executed) == 6  # (the note went to localstripe, the others to stubs)
    note = sdk.v1.invoices.retrieve(invoice_id).to_dict().get("metadata") or {}
    assert note.get("billops_route") == "retry"


def test_the_sdks_own_retry_after_a_lost_answer_gets_the_replay(
    sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    """In production the client lets the SDK retry connection errors (same key): the lost answer of a
    pay comes back as Stripe's replay, and the step never sees an error."""
    from support.localstripe import API_KEY

    customer_id, invoice_id = failing_invoice(sdk)
    before = charges_of(sdk, customer_id)
    retrying = StripePlatformClient(API_KEY, proxy.url, max_network_retries=2)
    proxy.lose_answer_next(method="POST", path_pattern=r"/pay$")

    result = retrying.pay_invoice(invoice_id, idempotency_key=f"{WF}:pay:4")

    assert result.outcome == "failed"  # the decline localstripe answered the first time
    assert [(p.status, p.replayed) for p in proxy.find("POST", r"/pay$")] == [(0, False), (200, True)]
    assert len(charges_of(sdk, customer_id)) == len(before) + 1
