"""The Stripe implementation of `PlatformClient`, on the official SDK (`stripe.StripeClient`, v1 services).

Reads return canonical objects (built by `normalize.py` from `StripeObject.to_dict()`); every write
sends the caller's idempotency key (`options={"idempotency_key": …}`, header `Idempotency-Key`),
so Stripe answers a replay within 24 h with the first response instead of writing twice.

`pay_invoice` is also safe where the server keeps no idempotency keys (e.g. localstripe): it
re-reads the invoice first and does not call pay when the invoice is already paid, void or
uncollectible. A card decline is an outcome (`PayResult("failed")` with the classified attempt),
never an exception; other Stripe errors become `PlatformError` with `retryable` set for
connection problems, rate limits, lock conflicts and 5xx, and once the pay request went out nothing
raises any more (a raise there would make the workflow retry a payment that was already tried).

Both API generations are read: the old one has `invoice.charge`/`invoice.payment_intent`; the
current one (2025-03-31 and later) links payments through `/v1/invoice_payments`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import stripe

from billops.domain import (
    Customer,
    Invoice,
    InvoiceStatus,
    Money,
    PaymentAttempt,
    PaymentMethod,
    Subscription,
)
from billops.errors import BillopsError, InputError, PlatformError
from billops.platforms.base import RESOURCES, SETTLED, BackfillPage, Capabilities, PayResult, link_attempt
from billops.platforms.stripe.normalize import (
    stripe_charge_attempt,
    stripe_customer,
    stripe_invoice,
    stripe_payment_intent_attempt,
    stripe_payment_method,
    stripe_subscription,
)

T = TypeVar("T")

NOTE_PREFIX = "billops_"
MAX_PAGE = 100  # Stripe's largest list page
# Stripe metadata limits: 50 keys, key ≤ 40 characters (no square brackets), value ≤ 500 characters.
META_KEY_MAX, META_VALUE_MAX = 40, 500


def _dict(obj: Any) -> dict[str, Any]:
    """A StripeObject (or an already plain dict) as a plain, recursive dict."""
    if isinstance(obj, stripe.StripeObject):
        return obj.to_dict()
    if isinstance(obj, dict):
        return obj
    raise PlatformError(
        f"Stripe returned {type(obj).__name__} where an object was expected", code="bad_response"
    )


def platform_error(what: str, exc: stripe.StripeError, *, api_base: str = "") -> PlatformError:
    """Map an SDK error to `PlatformError`, saying what failed and whether a retry can help."""
    status = exc.http_status
    body_error = exc.error
    code = exc.code or (body_error.code if body_error is not None else None)
    detail = exc.user_message or type(exc).__name__
    retryable = False
    if isinstance(exc, stripe.APIConnectionError):
        retryable, code = True, code or "connection_error"
    elif isinstance(exc, stripe.RateLimitError):
        retryable, code = True, code or "rate_limit"
    elif isinstance(exc, stripe.IdempotencyError):
        code = code or "idempotency_error"
    elif isinstance(exc, stripe.AuthenticationError):
        code = code or "authentication_error"
    elif isinstance(exc, stripe.PermissionError):
        code = code or "permission_error"
    elif status is None or status >= 500 or status == 409:
        retryable = True
    if code is None and body_error is not None and body_error.type:
        code = body_error.type
    if status == 404 and exc.error is None:
        # Not a Stripe error body: the server does not have this endpoint at all.
        code = "endpoint_not_found"
        detail = f"the server at {api_base or 'the API base'} has no such endpoint (HTTP 404)"
    elif status is not None:
        detail = f"{detail} (HTTP {status})"
    return PlatformError(
        f"Stripe {what} failed: {detail}", retryable=retryable, code=code or f"http_{status}"
    )


class StripePlatformClient:
    """PlatformClient for Stripe Billing. `api_base` points the SDK elsewhere (tests: localstripe)."""

    platform = "stripe"
    capabilities = Capabilities(
        retry_invoice=True,
        disable_native_retries=True,
        write_note=True,
        card_update_link=True,
        pay_with_other_method=True,
        idempotency_keys=True,
        backfill=True,
        pause_subscription=True,
        credit=True,
        coupon=True,
    )

    def __init__(self, api_key: str, api_base: str | None = None, *, max_network_retries: int = 2) -> None:
        if not api_key:
            raise InputError("a Stripe API key is required (BILLOPS_STRIPE_API_KEY)")
        self.api_base = (api_base or stripe.DEFAULT_API_BASE).rstrip("/")
        self._sdk = stripe.StripeClient(
            api_key,
            base_addresses={"api": self.api_base},
            max_network_retries=max_network_retries,
        )
        self._v1 = self._sdk.v1

    # ------------------------------------------------------------------ plumbing

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except stripe.StripeError as exc:
            raise platform_error(what, exc, api_base=self.api_base) from exc

    def _norm(self, what: str, build: Callable[[dict[str, Any]], T], raw: dict[str, Any]) -> T:
        try:
            return build(raw)
        except PlatformError:
            raise
        except BillopsError as exc:
            raise PlatformError(
                f"Stripe returned a {what} billops cannot read: {exc.message}", code="unreadable_response"
            ) from exc

    @staticmethod
    def _opts(idempotency_key: str) -> Any:
        if not idempotency_key:
            raise InputError("every Stripe write needs an idempotency key")
        return {"idempotency_key": idempotency_key}

    def _raw_invoice(self, invoice_id: str) -> dict[str, Any]:
        return _dict(
            self._call(f"invoices.retrieve({invoice_id})", lambda: self._v1.invoices.retrieve(invoice_id))
        )

    # ------------------------------------------------------------------ reads

    def get_invoice(self, invoice_id: str) -> Invoice:
        return self._norm("invoice", stripe_invoice, self._raw_invoice(invoice_id))

    def get_customer(self, customer_id: str) -> Customer:
        raw = self._call(
            f"customers.retrieve({customer_id})", lambda: self._v1.customers.retrieve(customer_id)
        )
        return self._norm("customer", stripe_customer, _dict(raw))

    def latest_attempt(self, invoice: Invoice) -> PaymentAttempt | None:
        """The newest payment attempt on an invoice, or None when Stripe shows none.

        Through the invoice's PaymentIntent when known (its latest charge plus its own
        `last_payment_error.decline_code`), else the old API's `invoice.charge`, else (current API)
        the PaymentIntent of the newest `/v1/invoice_payments` entry."""
        attempt: PaymentAttempt | None = None
        if invoice.payment_intent_id:
            attempt = self._payment_intent_latest_attempt(invoice.payment_intent_id)
        if attempt is None and invoice.latest_attempt_id:
            attempt = self._charge_attempt(invoice.latest_attempt_id)
        if attempt is None and not invoice.payment_intent_id and not invoice.latest_attempt_id:
            pi_id = self._latest_payment_intent_id(invoice.id)
            if pi_id:
                attempt = self._payment_intent_latest_attempt(pi_id)
        return link_attempt(attempt, invoice) if attempt is not None else None

    def _charge_attempt(self, charge: str | dict[str, Any]) -> PaymentAttempt:
        if isinstance(charge, str):
            charge_id = charge
            charge = _dict(
                self._call(f"charges.retrieve({charge_id})", lambda: self._v1.charges.retrieve(charge_id))
            )
        return self._norm("charge", stripe_charge_attempt, charge)

    def _payment_intent_latest_attempt(self, pi_id: str) -> PaymentAttempt | None:
        """The PaymentIntent's latest try: its (expanded) latest charge, with the PaymentIntent's own
        `last_payment_error.decline_code`; None when nothing was tried yet."""
        pi = _dict(
            self._call(
                f"payment_intents.retrieve({pi_id})",
                lambda: self._v1.payment_intents.retrieve(pi_id, {"expand": ["latest_charge"]}),
            )
        )
        if not pi.get("latest_charge") and not pi.get("last_payment_error"):
            return None
        return self._norm("payment intent", stripe_payment_intent_attempt, pi)

    def _latest_payment_intent_id(self, invoice_id: str) -> str | None:
        """Current API: the PaymentIntent of the invoice's newest InvoicePayment (None if the server
        has no /v1/invoice_payments, like localstripe, or the invoice has no payment yet)."""
        try:
            page = self._v1.invoice_payments.list({"invoice": invoice_id, "limit": 10})
        except stripe.StripeError as exc:
            if exc.http_status == 404:
                return None
            raise platform_error(f"invoice_payments.list({invoice_id})", exc, api_base=self.api_base) from exc
        best: tuple[int, str] | None = None
        for ip in page.data:
            d = _dict(ip)
            payment = d.get("payment") or {}
            ref = payment.get("payment_intent")
            pi_id = ref.get("id") if isinstance(ref, dict) else ref
            if isinstance(pi_id, str) and pi_id and (best is None or int(d.get("created") or 0) >= best[0]):
                best = (int(d.get("created") or 0), pi_id)
        return best[1] if best else None

    def list_payment_methods(self, customer_id: str) -> list[PaymentMethod]:
        """The customer's cards, the default (invoice_settings.default_payment_method) flagged."""
        customer = self.get_customer(customer_id)
        return self._payment_methods_of(customer_id, customer.default_payment_method_id)

    def _payment_methods_of(self, customer_id: str, default_id: str | None) -> list[PaymentMethod]:
        what = f"payment_methods.list(customer={customer_id})"

        def fetch() -> list[dict[str, Any]]:
            page = self._v1.payment_methods.list({"customer": customer_id, "type": "card", "limit": MAX_PAGE})
            return [_dict(pm) for pm in page.auto_paging_iter()]

        methods = [
            self._norm("payment method", stripe_payment_method, raw) for raw in self._call(what, fetch)
        ]
        if default_id and all(pm.id != default_id for pm in methods):
            # The default may be a non-card method or a legacy source: list it too.
            try:
                raw = _dict(self._v1.payment_methods.retrieve(default_id))
            except stripe.StripeError as exc:
                if exc.http_status != 404:
                    raise platform_error(
                        f"payment_methods.retrieve({default_id})", exc, api_base=self.api_base
                    ) from exc
            else:
                methods.append(self._norm("payment method", stripe_payment_method, raw))
        out = []
        for pm in methods:
            update: dict[str, Any] = {"is_default": pm.id == default_id}
            if pm.customer_id is None:
                update["customer_id"] = customer_id
            out.append(pm.model_copy(update=update))
        return out

    # ------------------------------------------------------------------ writes

    def pay_invoice(
        self,
        invoice_id: str,
        *,
        idempotency_key: str,
        payment_method_id: str | None = None,
        replay: bool = False,
    ) -> PayResult:
        """Pay an open invoice. `replay`: this key may have been sent before (a step re-run after a
        crash), so skip the "already settled" pre-check and let Stripe answer the key: its stored
        result if the first request got through, a fresh pay (or "already paid") if it did not."""
        options = self._opts(idempotency_key)
        before = self.get_invoice(invoice_id)
        if before.status in SETTLED and not replay:
            return PayResult("already_settled", before, message=f"invoice is already {before.status.value}")
        params: dict[str, Any] = {}
        if payment_method_id:
            params["payment_method"] = payment_method_id
        try:
            paid = self._v1.invoices.pay(invoice_id, cast(Any, params or None), options)
        except stripe.CardError as exc:
            return self._declined(invoice_id, exc, before)
        except stripe.InvalidRequestError as exc:
            # Settled between our read and the pay call (e.g. "Invoice is already paid")?
            after = self._safe(lambda: self.get_invoice(invoice_id))
            if after is not None and after.status in SETTLED:
                return PayResult("already_settled", after, message=f"invoice is already {after.status.value}")
            raise platform_error(f"invoices.pay({invoice_id})", exc, api_base=self.api_base) from exc
        except stripe.StripeError as exc:
            raise platform_error(f"invoices.pay({invoice_id})", exc, api_base=self.api_base) from exc

        # The pay request went through: from here on report, never raise.
        try:
            invoice = self._norm("invoice", stripe_invoice, _dict(paid))
        except PlatformError as exc:
            return PayResult("failed", before, message=f"pay answered, but the invoice is unreadable: {exc}")
        attempt = self._safe(lambda: self.latest_attempt(invoice))
        if attempt is not None:
            attempt = link_attempt(attempt, invoice, ours=attempt.id != before.latest_attempt_id)
        if invoice.status == InvoiceStatus.paid:
            return PayResult("succeeded", invoice, attempt, message="paid")
        if invoice.status in SETTLED:
            return PayResult(
                "already_settled", invoice, attempt, message=f"invoice is {invoice.status.value}"
            )
        # Still open without a card error: a decline reported in the body (localstripe), or a payment
        # that is still processing (attempt outcome "pending").
        if attempt is not None and attempt.outcome == "pending":
            message = "payment is processing; the invoice is not settled yet"
        elif attempt is not None and attempt.decline is not None:
            message = attempt.decline.message or f"declined: {attempt.decline.code}"
        else:
            message = "the invoice is still open after the payment attempt"
        return PayResult("failed", invoice, attempt, message=message)

    def _declined(self, invoice_id: str, exc: stripe.CardError, before: Invoice) -> PayResult:
        """A card decline on pay: re-read the invoice, build the attempt from the error's PaymentIntent
        (or its charge, or the error itself), classified by the decline taxonomy."""
        invoice = self._safe(lambda: self.get_invoice(invoice_id)) or before
        body = exc.json_body if isinstance(exc.json_body, dict) else {}
        err: dict[str, Any] = body.get("error") if isinstance(body.get("error"), dict) else {}  # type: ignore[assignment]
        attempt: PaymentAttempt | None = None
        pi = err.get("payment_intent")
        pi_id = pi.get("id") if isinstance(pi, dict) else pi
        if isinstance(pi_id, str) and pi_id:
            attempt = self._safe(lambda: self._payment_intent_latest_attempt(pi_id))
        if attempt is None and isinstance(pi, dict):
            attempt = self._safe(lambda: self._norm("payment intent", stripe_payment_intent_attempt, pi))
        charge = err.get("charge")
        if attempt is None and isinstance(charge, str | dict) and charge:
            attempt = self._safe(lambda: self._charge_attempt(cast(Any, charge)))
        if attempt is None:
            attempt = self._safe(lambda: self._attempt_from_error(err, invoice, exc))
        if attempt is not None:
            attempt = link_attempt(attempt, invoice, ours=True)
        message = exc.user_message or "the card was declined"
        return PayResult("failed", invoice, attempt, message=message)

    def _attempt_from_error(
        self, err: dict[str, Any], invoice: Invoice, exc: stripe.CardError
    ) -> PaymentAttempt:
        """No charge to read: describe the decline as a failed charge so the normalizer classifies it."""
        pm = err.get("payment_method")
        synthetic = {
            "id": err.get("charge") or f"declined_{exc.request_id or invoice.id}",
            "object": "charge",
            "amount": invoice.amount_remaining or invoice.amount_due,
            "currency": invoice.currency,
            "created": int(datetime.now(UTC).timestamp()),
            "customer": invoice.customer_id,
            "invoice": invoice.id,
            "status": "failed",
            "paid": False,
            "failure_code": err.get("code") or exc.code or "card_declined",
            "failure_message": err.get("message") or exc.user_message,
            "payment_method": pm.get("id") if isinstance(pm, dict) else pm,
            "outcome": {
                "type": "issuer_declined",
                "reason": err.get("decline_code"),
                "advice_code": err.get("advice_code"),
                "network_advice_code": err.get("network_advice_code"),
                "network_decline_code": err.get("network_decline_code"),
            },
        }
        return self._norm("card error", stripe_charge_attempt, synthetic)

    @staticmethod
    def _safe(fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except PlatformError:
            return None

    def set_native_retries(self, invoice_id: str, enabled: bool, *, idempotency_key: str) -> None:
        """Turn Stripe's own collection (Smart Retries, dunning) of this invoice on or off: auto_advance."""
        options = self._opts(idempotency_key)
        self._call(
            f"invoices.update({invoice_id}, auto_advance={enabled})",
            lambda: self._v1.invoices.update(invoice_id, {"auto_advance": enabled}, options),
        )

    def write_note(self, invoice_id: str, note: dict[str, str], *, idempotency_key: str) -> None:
        """Merge `note` into the invoice's metadata, every key prefixed `billops_` (other keys are kept)."""
        options = self._opts(idempotency_key)
        metadata = note_metadata(note)
        if not metadata:
            return
        self._call(
            f"invoices.update({invoice_id}, metadata)",
            lambda: self._v1.invoices.update(invoice_id, {"metadata": metadata}, options),
        )

    def card_update_link(self, customer_id: str, *, return_url: str | None, idempotency_key: str) -> str:
        """A Stripe customer-portal session opened on the 'update payment method' flow; returns its URL."""
        options = self._opts(idempotency_key)
        params: dict[str, Any] = {"customer": customer_id, "flow_data": {"type": "payment_method_update"}}
        if return_url:
            params["return_url"] = return_url
        try:
            session = self._v1.billing_portal.sessions.create(cast(Any, params), options)
        except stripe.StripeError as exc:
            err = platform_error(
                f"billing_portal.sessions.create(customer={customer_id})", exc, api_base=self.api_base
            )
            if err.code == "endpoint_not_found":
                raise PlatformError(
                    f"Stripe billing portal is not available at {self.api_base} (HTTP 404): "
                    "this server offers no /v1/billing_portal (localstripe does not); "
                    "card-update links need the real Stripe API with the customer portal configured",
                    retryable=False,
                    code="billing_portal_unavailable",
                ) from exc
            raise err from exc
        url = getattr(session, "url", None)
        if not isinstance(url, str) or not url:
            raise PlatformError("Stripe created a billing portal session without a URL", code="bad_response")
        return url

    def pause_subscription(
        self, subscription_id: str, *, resume_at: datetime | None, idempotency_key: str
    ) -> None:
        """Pause collection (`pause_collection`, behaviour `keep_as_draft`: invoices are still created
        but not charged, and can be collected later), until `resume_at` when given."""
        options = self._opts(idempotency_key)
        pause: dict[str, Any] = {"behavior": "keep_as_draft"}
        if resume_at is not None:
            pause["resumes_at"] = int(resume_at.timestamp())
        self._call(
            f"subscriptions.update({subscription_id}, pause_collection)",
            lambda: self._v1.subscriptions.update(
                subscription_id, cast(Any, {"pause_collection": pause}), options
            ),
        )

    def apply_credit(self, customer_id: str, amount: Money, *, reason: str, idempotency_key: str) -> None:
        """A credit on the customer's balance (a negative balance transaction), used by the next invoices."""
        if amount.amount <= 0:
            raise InputError(f"a credit must be positive, got {amount.amount}")
        options = self._opts(idempotency_key)
        params = {"amount": -amount.amount, "currency": amount.currency, "description": reason[:350]}
        self._call(
            f"customers.balance_transactions.create({customer_id})",
            lambda: self._v1.customers.balance_transactions.create(customer_id, cast(Any, params), options),
        )

    def apply_coupon(
        self, customer_id: str, coupon: str, *, subscription_id: str | None, idempotency_key: str
    ) -> None:
        """Add an existing coupon to the subscription's discounts."""
        if not subscription_id:
            raise InputError("Stripe coupons are applied to a subscription: subscription_id is required")
        options = self._opts(idempotency_key)
        self._call(
            f"subscriptions.update({subscription_id}, discounts)",
            lambda: self._v1.subscriptions.update(
                subscription_id, cast(Any, {"discounts": [{"coupon": coupon}]}), options
            ),
        )

    # ------------------------------------------------------------------ backfill

    def backfill_resources(self) -> list[str]:
        return list(RESOURCES)

    def backfill_page(self, resource: str, cursor: str | None, page_size: int) -> BackfillPage:
        """One page of `resource`, after the object id `cursor`. `payment_methods` pages over customers
        (the cursor is a customer id) and returns every card of each customer on the page."""
        if resource not in RESOURCES:
            raise InputError(f"unknown Stripe backfill resource {resource!r}; known: {', '.join(RESOURCES)}")
        if not 1 <= page_size <= MAX_PAGE:
            raise InputError(f"page size must be between 1 and {MAX_PAGE}, got {page_size}")
        params: dict[str, Any] = {"limit": page_size}
        if cursor:
            params["starting_after"] = cursor
        what = f"{resource} list" + (f" after {cursor}" if cursor else "")
        if resource == "customers":
            raw, more = self._list(what, lambda: self._v1.customers.list(cast(Any, params)))
            return self._page(raw, more, [self._norm("customer", stripe_customer, d) for d in raw])
        if resource == "subscriptions":
            params["status"] = "all"  # include canceled ones
            raw, more = self._list(what, lambda: self._v1.subscriptions.list(cast(Any, params)))
            return self._page(raw, more, [self._norm("subscription", stripe_subscription, d) for d in raw])
        if resource == "invoices":
            raw, more = self._list(what, lambda: self._v1.invoices.list(cast(Any, params)))
            return self._page(raw, more, [self._norm("invoice", stripe_invoice, d) for d in raw])
        if resource == "payment_attempts":
            params["expand"] = ["data.payment_intent"]
            raw, more = self._list(what, lambda: self._v1.charges.list(cast(Any, params)))
            return self._page(raw, more, [self._charge_attempt(_collapse_payment_intent(d)) for d in raw])
        # payment_methods: per customer
        raw, more = self._list(what, lambda: self._v1.customers.list(cast(Any, params)))
        items: list[Customer | Subscription | Invoice | PaymentAttempt | PaymentMethod] = []
        for d in raw:
            customer = self._norm("customer", stripe_customer, d)
            items.extend(self._payment_methods_of(customer.id, customer.default_payment_method_id))
        return self._page(raw, more, items)

    def _list(self, what: str, fn: Callable[[], Any]) -> tuple[list[dict[str, Any]], bool]:
        page = self._call(what, fn)
        return [_dict(o) for o in page.data], bool(page.has_more)

    @staticmethod
    def _page(
        raw: list[dict[str, Any]],
        has_more: bool,
        items: Iterable[Customer | Subscription | Invoice | PaymentAttempt | PaymentMethod],
    ) -> BackfillPage:
        last = raw[-1].get("id") if raw else None
        return BackfillPage(items=list(items), next_cursor=str(last) if has_more and last else None)


def _collapse_payment_intent(charge: dict[str, Any]) -> dict[str, Any]:
    """Charges listed with `expand=data.payment_intent`: take the invoice from the PaymentIntent when the
    charge has none (old API with PaymentIntents; localstripe), then put the id back in its place."""
    pi = charge.get("payment_intent")
    if not isinstance(pi, dict):
        return charge
    out = dict(charge)
    if not out.get("invoice") and isinstance(pi.get("invoice"), str | dict):
        inv = pi["invoice"]
        out["invoice"] = inv.get("id") if isinstance(inv, dict) else inv
    out["payment_intent"] = pi.get("id")
    return out


def note_metadata(note: dict[str, str]) -> dict[str, str]:
    """Invoice metadata for a note: keys prefixed `billops_`, within Stripe's metadata limits."""
    out: dict[str, str] = {}
    for key, value in note.items():
        k = key if key.startswith(NOTE_PREFIX) else f"{NOTE_PREFIX}{key}"
        if len(k) > META_KEY_MAX or "[" in k or "]" in k or not key:
            raise InputError(
                f"note key {key!r}: Stripe metadata keys are at most {META_KEY_MAX} characters "
                f"(with the {NOTE_PREFIX!r} prefix) and contain no square brackets"
            )
        out[k] = str(value)[:META_VALUE_MAX]
    return out
