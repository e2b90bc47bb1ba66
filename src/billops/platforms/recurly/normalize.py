"""Recurly: thin JSON webhook envelopes, API v2021-02-25 objects, and the enrichment between them.

Recurly's JSON webhooks are *thin*: ``{id, object_type, site_id, event_type, event_time}`` plus one of
``uuid`` (payments, subscriptions), ``invoice_number`` (invoices, dunning events) or ``account_code``
(billing info). `thin_event` validates that envelope (only `WebhookRejected` 422 naming the field
escapes) into a `ThinEvent`; `enrich` then fetches what it names through the API and builds the full
`CanonicalEvent` (with the fewest calls; a `PlatformError` from the API propagates to the caller).

The object functions (`recurly_invoice`, `recurly_account`, `recurly_transaction_attempt`,
`recurly_subscription`, `recurly_billing_info`) take one API object as JSON (a dict) and raise the same
422 errors, the path prefixed with the object's name (``invoice.total: …``). Amounts are decimals in
major units (``10.99``): they become integer minor units exactly (Decimal arithmetic; zero-decimal
currencies such as JPY are not multiplied); an amount with more decimals than its currency has is
rejected rather than rounded. Times are ISO 8601 strings with a UTC offset.

Canonical ids are Recurly's own object ids (``id``), not codes or uuids: an account's `code` is kept in
`Customer.metadata["account_code"]`, an invoice's number in `Invoice.number`.

Invoice states -> canonical status:

| Recurly `state` | canonical | note |
|---|---|---|
| pending | open | created, collection not finished (or a manual invoice awaiting payment) |
| processing | open | an ACH / bank payment is in flight |
| past_due | open | the first collection failed; Recurly's dunning is retrying |
| open | open | legacy and credit invoices |
| paid | paid | |
| failed | uncollectible | dunning ended without payment |
| voided | void | |
| closed | paid or uncollectible | legacy: paid when nothing is left to collect, else uncollectible |

Declines: the canonical code is the TransactionError ``decline_code`` when the taxonomy knows it
(gateways such as Stripe send Stripe codes), else the first specific match of ``decline_code``,
``status_code``, the error ``code``, ``status_message``, ``gateway_response_code`` or the error
``category`` (as ``category_<name>``) in the ``recurly`` section of ``data/platform_declines.yaml``,
else the raw decline code, else that section's default; the taxonomy (``data/declines.yaml``) then
classifies it, with a Mastercard Merchant Advice Code when the gateway passed one on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from billops.domain.billing import (
    ZERO_DECIMAL,
    CardInfo,
    Customer,
    Decline,
    Invoice,
    InvoiceStatus,
    PaymentAttempt,
    PaymentMethod,
    Subscription,
)
from billops.domain.declines import load_taxonomy
from billops.domain.events import CanonicalEvent, EventKind
from billops.platforms import declines as _declines
from billops.platforms.declines import PlatformDeclines, choose_code
from billops.platforms.reader import (
    Reader,
    build,
    envelope,
    envelope_str,
    json_type,
    maybe_code,
    maybe_str,
    reject,
)

if TYPE_CHECKING:
    from billops.platforms.recurly.client import RecurlyPlatformClient

__all__ = [
    "API_VERSION",
    "EVENT_KINDS",
    "PLATFORM",
    "ThinEvent",
    "enrich",
    "load_platform_declines",
    "recurly_account",
    "recurly_billing_info",
    "recurly_invoice",
    "recurly_subscription",
    "recurly_transaction_attempt",
    "thin_event",
]

PLATFORM = "recurly"
API_VERSION = "v2021-02-25"
_MAX_MINOR = 2**63 - 1


def load_platform_declines(path: str = "builtin") -> PlatformDeclines:
    """The Recurly section of the platform decline mapping."""
    return _declines.load_platform_declines(path, PLATFORM)


# ---------------------------------------------------------------------------------------------
# small readers


def parse_time(value: Any, path: str) -> datetime | None:
    """An ISO 8601 time with a UTC offset (``2026-11-03T09:15:00Z``) as an aware UTC datetime."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise reject(path, f"expected an ISO 8601 time (string), got {json_type(value)}")
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise reject(path, f"{value[:40]!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise reject(path, f"{value[:40]!r} has no UTC offset")
    try:
        return t.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        raise reject(path, f"{value[:40]!r} is out of range") from None


def _time(r: Reader, key: str) -> datetime | None:
    return parse_time(r.d.get(key), r.at(key))


def to_minor(value: Any, currency: str, path: str) -> int:
    """A decimal amount in major units (``10.99``) -> integer minor units (``1099``), exactly."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise reject(path, f"expected a number, got {json_type(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise reject(path, "must be a finite number")
    try:
        # repr of a float is the shortest decimal that reads back to it: the number as the JSON wrote it
        amount = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
        minor = amount if currency in ZERO_DECIMAL else amount * 100
    except (InvalidOperation, ValueError):
        raise reject(path, f"{value!r} is not a decimal amount") from None
    if minor != minor.to_integral_value():
        unit = "whole units" if currency in ZERO_DECIMAL else "cents"
        raise reject(path, f"{value!r} {currency.upper()} is not a whole number of {unit}")
    out = int(minor)
    if abs(out) > _MAX_MINOR:
        raise reject(path, "amount is out of range")
    return out


def _money(r: Reader, key: str, currency: str) -> int | None:
    v = r.d.get(key)
    return None if v is None else to_minor(v, currency, r.at(key))


def _ref_id(r: Reader, key: str) -> str | None:
    """The `id` of an embedded mini object (``account: {id, code, …}``)."""
    mini = r.obj(key)
    return mini.opt_str("id") or None if mini is not None else None


# ---------------------------------------------------------------------------------------------
# cards and billing info

_BRANDS = {"american express": "amex", "american_express": "amex", "americanexpress": "amex",
           "master": "mastercard", "master card": "mastercard", "master_card": "mastercard",
           "diners club": "diners", "diners_club": "diners", "dinersclub": "diners",
           "unknown": None, "": None}  # fmt: skip
_WALLETS = {"apple_pay", "apple_pay_merchant_token", "google_pay", "google_pay_device_pan", "credit_card"}


def _brand(value: str | None) -> str | None:
    if value is None:
        return None
    b = value.strip().lower()
    return _BRANDS[b] if b in _BRANDS else b.replace(" ", "_")


def card_info(pm: Reader) -> CardInfo:
    """A Recurly `PaymentMethod` object (card fields: card_type, last_four, exp_month, …)."""
    last4 = pm.opt_str("last_four")
    funding = pm.lower_str("funding_source")
    return build(
        CardInfo,
        pm.path,
        brand=_brand(pm.opt_str("card_type")),
        funding=funding if funding in (None, "credit", "debit", "prepaid") else "unknown",
        country=pm.opt_str("cc_bin_country"),
        exp_month=pm.opt_int("exp_month"),
        exp_year=pm.opt_int("exp_year"),
        last4=last4 if last4 and len(last4) == 4 and last4.isdigit() else None,
    )


def _method_type(pm: Reader | None) -> str:
    kind = (maybe_str(pm, "object") or "credit_card").strip().lower()
    return "card" if kind in _WALLETS else kind


def billing_info(r: Reader, *, account_id: str | None = None) -> PaymentMethod:
    """A `BillingInfo` (one stored payment method of an account)."""
    pm = r.obj("payment_method")
    kind = _method_type(pm)
    primary = r.opt_bool("primary_payment_method")
    return build(
        PaymentMethod,
        r.path,
        platform=PLATFORM,
        id=r.req_str("id"),
        customer_id=r.opt_str("account_id") or account_id,
        type=kind,
        card=card_info(pm) if pm is not None and kind == "card" else None,
        is_default=True if primary is None else primary,  # without Wallet the one billing info is the default
        created_at=_time(r, "created_at"),
    )


# ---------------------------------------------------------------------------------------------
# declines and transactions

_TXN_OUTCOMES = {
    "success": "succeeded",
    "declined": "failed",
    "error": "failed",
    "void": "failed",
    "chargeback": "failed",
    "pending": "pending",
    "processing": "pending",
    "scheduled": "pending",
}
_PAYMENT_TYPES = frozenset({"purchase", "capture"})


def _advice(txn: Reader, error: Reader | None) -> str | None:
    """A Mastercard Merchant Advice Code passed on by the gateway, when there is one."""
    values = [maybe_code(error, "merchant_advice_code")]
    extra = txn.d.get("gateway_response_values")
    if isinstance(extra, dict):
        for k in ("merchant_advice_code", "network_advice_code", "mac"):
            v = extra.get(k)
            values.append(str(v) if isinstance(v, str | int) and not isinstance(v, bool) else None)
    for v in values:
        if v and v.strip().isdigit() and len(v.strip()) <= 2:
            return v.strip().zfill(2)
    return None


def decline(txn: Reader, error: Reader | None = None, *, network: str | None = None) -> Decline:
    """Classify a failed transaction (and, on a collect call, the TransactionError that came with it)."""
    taxonomy = load_taxonomy()
    mapping = load_platform_declines()
    decline_code = maybe_code(error, "decline_code")
    status_code = maybe_code(txn, "status_code")
    error_code = maybe_code(error, "code")
    status_message = txn.opt_str("status_message")
    gateway_code = maybe_code(txn, "gateway_response_code")
    category = maybe_code(error, "category")

    values = (decline_code, status_code, error_code, status_message, gateway_code)
    category_value = f"category_{category}" if category else None
    code = choose_code(mapping, taxonomy.codes, decline_code=decline_code, values=(*values, category_value))

    mac = _advice(txn, error) if network in (None, "mastercard") else None
    ndc = gateway_code if network == "visa" and gateway_code and len(gateway_code) <= 2 else None
    return taxonomy.classify(
        code,
        raw_code=decline_code or status_code or error_code or gateway_code or code,
        message=status_message or maybe_str(error, "message") or txn.opt_str("customer_message"),
        network_advice_code=mac,
        network_decline_code=ndc,
        network=network,
    )


def transaction_attempt(
    r: Reader, error: Reader | None = None, *, invoice_id: str | None = None
) -> PaymentAttempt:
    """One try to pay: a Recurly `Transaction` (purchase or capture)."""
    status = r.lower_str("status")
    outcome = _TXN_OUTCOMES.get(status) if status is not None else None
    if outcome is None:
        success = r.opt_bool("success")
        if success is None:
            known = ", ".join(sorted(_TXN_OUTCOMES))
            raise reject(r.at("status"), f"expected one of {known}, got {status!r}")
        outcome = "succeeded" if success else "failed"
    currency = r.currency("currency")
    assert currency is not None
    pm = r.obj("payment_method")
    card = card_info(pm) if pm is not None and _method_type(pm) == "card" else None
    gateway = r.obj("payment_gateway")
    origin = r.lower_str("origin")
    attempted_at = r.need("created_at", _time(r, "created_at"))
    failed = outcome == "failed" and status not in ("void", "chargeback")
    return build(
        PaymentAttempt,
        r.path,
        platform=PLATFORM,
        id=r.req_str("id"),
        invoice_id=_ref_id(r, "invoice") or invoice_id,
        customer_id=_ref_id(r, "account"),
        amount=r.need("amount", _money(r, "amount", currency)),
        currency=currency,
        attempted_at=attempted_at,
        outcome=outcome,
        decline=decline(r, error, network=card.brand if card else None) if failed else None,
        card=card,
        gateway=maybe_str(gateway, "type") or maybe_str(gateway, "name"),
        initiated_by="customer" if origin in ("hpp", "recurlyjs", "transparent") else "platform",
    )


def latest_payment(transactions: list[Reader]) -> Reader | None:
    """The newest purchase/capture of an invoice's transactions (refunds and verifications are not tries)."""
    payments = [t for t in transactions if (t.lower_str("type") or "purchase") in _PAYMENT_TYPES]
    if not payments:
        return None
    return max(payments, key=lambda t: _time(t, "created_at") or datetime.min.replace(tzinfo=UTC))


# ---------------------------------------------------------------------------------------------
# invoices

_INVOICE_STATES = {
    "pending": InvoiceStatus.open,
    "processing": InvoiceStatus.open,
    "past_due": InvoiceStatus.open,
    "open": InvoiceStatus.open,
    "paid": InvoiceStatus.paid,
    "collected": InvoiceStatus.paid,
    "failed": InvoiceStatus.uncollectible,
    "voided": InvoiceStatus.void,
    "closed": InvoiceStatus.paid,  # refined below by the balance
}
_REASONS = {"renewal": "subscription_cycle", "immediate_change": "subscription_update",
            "termination": "subscription_update"}  # fmt: skip


def invoice(r: Reader) -> Invoice:
    raw_state = r.lower_str("state")
    state = r.need("state", raw_state)
    status = _INVOICE_STATES.get(state)
    if status is None:
        raise reject(r.at("state"), f"expected one of {', '.join(sorted(_INVOICE_STATES))}, got {state!r}")
    currency = r.currency("currency")
    assert currency is not None
    total = r.need("total", _money(r, "total", currency))
    paid = _money(r, "paid", currency) or 0
    balance = _money(r, "balance", currency)
    if state == "closed" and (balance if balance is not None else total - paid) > 0:
        status = InvoiceStatus.uncollectible
    if balance is None:
        balance = max(total - paid, 0) if status == InvoiceStatus.open else 0

    txns = r.objs("transactions")
    latest = latest_payment(txns)
    payments = [t for t in txns if (t.lower_str("type") or "purchase") in _PAYMENT_TYPES]
    lines = r.objs("line_items")
    plan_line = next((li for li in lines if li.opt_str("plan_code") or li.opt_str("plan_id")), None)
    period_line = plan_line or (lines[0] if lines else None)
    subs = r.d.get("subscription_ids")
    if subs is not None and (not isinstance(subs, list) or not all(isinstance(s, str) for s in subs)):
        raise reject(r.at("subscription_ids"), "expected a list of subscription ids")
    origin = r.lower_str("origin")
    reason = _REASONS.get(origin or "", origin)
    if origin == "purchase" and subs:
        reason = "subscription_create"
    collection = r.lower_str("collection_method")
    number = maybe_code(r, "number")
    metadata: dict[str, Any] = {"state": state}
    for key in ("type", "origin", "collection_method", "dunning_campaign_id"):
        if r.opt_str(key):
            metadata[key] = r.opt_str(key)
    if r.opt_int("dunning_events_sent") is not None:
        metadata["dunning_events_sent"] = r.opt_int("dunning_events_sent")
    return build(
        Invoice,
        r.path,
        platform=PLATFORM,
        id=r.req_str("id"),
        customer_id=_ref_id(r, "account"),
        subscription_id=subs[0] if subs else None,
        number=number,
        status=status,
        currency=currency,
        amount_due=total,
        amount_paid=paid,
        amount_remaining=balance,
        attempt_count=len(payments),
        next_payment_attempt=None,  # Recurly does not publish its next dunning retry time
        auto_advance=None if collection is None else collection == "automatic",
        created_at=_time(r, "created_at"),
        due_date=_time(r, "due_at"),
        period_start=_time(period_line, "start_date") if period_line is not None else None,
        period_end=_time(period_line, "end_date") if period_line is not None else None,
        billing_reason=reason,
        plan_name=plan_line.opt_str("description") if plan_line is not None else None,
        latest_attempt_id=latest.opt_str("id") if latest is not None else None,
        metadata=metadata,
    )


# ---------------------------------------------------------------------------------------------
# subscriptions and accounts


def subscription(r: Reader) -> Subscription:
    state = r.need("state", r.lower_str("state"))
    currency = r.currency("currency", required=False)
    amount: int | None = None
    if currency is not None:
        amount = _money(r, "subtotal", currency)
        unit = _money(r, "unit_amount", currency)
        if amount is None and unit is not None:
            qty = r.opt_int("quantity")
            amount = unit * (1 if qty is None else qty) + (_money(r, "add_ons_total", currency) or 0)
    period_end = _time(r, "current_period_ends_at")
    trial_end = _time(r, "trial_ends_at")
    status = {"canceled": "active", "expired": "canceled"}.get(state, state)
    if state == "active" and trial_end is not None and period_end is not None and trial_end >= period_end:
        status = "trialing"
    plan = r.obj("plan")
    return build(
        Subscription,
        r.path,
        platform=PLATFORM,
        id=r.req_str("id"),
        customer_id=_ref_id(r, "account"),
        status=status,
        plan_id=maybe_str(plan, "code") or maybe_str(plan, "id"),
        plan_name=maybe_str(plan, "name"),
        amount=amount,
        currency=currency,
        interval=None,  # the plan's interval is on the Plan, not on the subscription
        current_period_end=period_end,
        cancel_at_period_end=state == "canceled",
        paused=state == "paused",
        created_at=_time(r, "created_at"),
    )


def account(r: Reader) -> tuple[Customer, PaymentMethod | None]:
    """An `Account`, and its (primary) billing info when the account embeds one."""
    account_id = r.req_str("id")
    bi = r.obj("billing_info")
    method = billing_info(bi, account_id=account_id) if bi is not None else None
    names = [n.strip() for n in (r.opt_str("first_name"), r.opt_str("last_name")) if n and n.strip()]
    address = r.obj("address")
    metadata: dict[str, Any] = {}
    if r.opt_str("code"):
        metadata["account_code"] = r.opt_str("code")
    if r.opt_str("state"):
        metadata["state"] = r.opt_str("state")
    customer = build(
        Customer,
        r.path,
        platform=PLATFORM,
        id=account_id,
        email=r.opt_str("email"),
        phone=maybe_str(address, "phone"),
        name=" ".join(names) or r.opt_str("company"),
        created_at=_time(r, "created_at"),
        timezone=r.opt_str("preferred_time_zone"),
        country=maybe_str(address, "country")
        or (maybe_str(bi.obj("address"), "country") if bi is not None else None),
        default_payment_method_id=method.id if method is not None else None,
        metadata=metadata,
    )
    return customer, method


# ---------------------------------------------------------------------------------------------
# object functions (one API object as Recurly sends it)


def recurly_invoice(obj: Any) -> Invoice:
    return invoice(Reader.of(obj, "invoice"))


def recurly_account(obj: Any) -> Customer:
    return account(Reader.of(obj, "account"))[0]


def recurly_account_billing_info(obj: Any) -> PaymentMethod | None:
    """The billing info an `Account` embeds (None when it has none)."""
    return account(Reader.of(obj, "account"))[1]


def recurly_subscription(obj: Any) -> Subscription:
    return subscription(Reader.of(obj, "subscription"))


def recurly_billing_info(obj: Any) -> PaymentMethod:
    return billing_info(Reader.of(obj, "billing_info"))


def recurly_transaction_attempt(obj: Any, error: Any = None) -> PaymentAttempt:
    """A `Transaction` as a payment attempt; `error` is the `TransactionError` a collect call answered
    with (``{category, code, decline_code, merchant_advice, message, transaction_id}``), if any."""
    err = Reader.of(error, "transaction_error") if error is not None else None
    return transaction_attempt(Reader.of(obj, "transaction"), err)


def recurly_invoice_latest_attempt(obj: Any) -> PaymentAttempt | None:
    """The newest purchase/capture among the transactions an `Invoice` embeds."""
    r = Reader.of(obj, "invoice")
    latest = latest_payment(r.objs("transactions"))
    return transaction_attempt(latest, invoice_id=r.opt_str("id")) if latest is not None else None


# ---------------------------------------------------------------------------------------------
# thin webhook envelopes

# "<object_type>.<event_type>" -> (canonical kind, the reference the envelope must carry)
EVENT_KINDS: dict[str, tuple[EventKind, str]] = {
    "payment.failed": (EventKind.payment_failed, "uuid"),
    "payment.succeeded": (EventKind.payment_succeeded, "uuid"),
    "charge_invoice.created": (EventKind.invoice_created, "invoice_number"),
    "charge_invoice.past_due": (EventKind.invoice_finalized, "invoice_number"),
    "charge_invoice.paid": (EventKind.invoice_paid, "invoice_number"),
    "charge_invoice.failed": (EventKind.invoice_uncollectible, "invoice_number"),
    "invoice.created": (EventKind.invoice_created, "invoice_number"),
    "invoice.past_due": (EventKind.invoice_finalized, "invoice_number"),
    "invoice.closed": (EventKind.invoice_paid, "invoice_number"),  # refined by the invoice's state
    "subscription.updated": (EventKind.subscription_updated, "uuid"),
    "subscription.renewed": (EventKind.subscription_updated, "uuid"),
    "subscription.canceled": (EventKind.subscription_canceled, "uuid"),
    "subscription.expired": (EventKind.subscription_canceled, "uuid"),
    "subscription.paused": (EventKind.subscription_paused, "uuid"),
    "subscription.resumed": (EventKind.subscription_resumed, "uuid"),
    "subscription.renewal.cc_will_expire": (EventKind.card_expiring, "uuid"),
    "billing_info.updated": (EventKind.payment_method_updated, "account_code"),
    "dunning_event.created": (EventKind.invoice_finalized, "invoice_number"),
}
_REFS = ("uuid", "invoice_number", "account_code")


@dataclass(frozen=True)
class ThinEvent:
    event_id: str
    object_type: str
    event_type: str
    occurred_at: datetime
    site_id: str
    kind: EventKind
    uuid: str | None = None
    invoice_number: str | None = None
    account_code: str | None = None

    @property
    def type(self) -> str:
        """The full type, ``payment.failed``: the canonical event's `event_type`."""
        return f"{self.object_type}.{self.event_type}"


def _ref(env: Reader, key: str) -> str | None:
    v = env.d.get(key)
    if v is None:
        return None
    if key == "invoice_number" and isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            raise reject(key, f"expected a positive invoice number, got {v}")
        return str(v)
    if not isinstance(v, str):
        expected = "an invoice number" if key == "invoice_number" else "a string"
        raise reject(key, f"expected {expected}, got {json_type(v)}")
    if not v.strip():
        raise reject(key, "must not be blank")
    return v.strip()


def thin_event(payload: Any) -> ThinEvent:
    """A parsed Recurly JSON webhook -> ThinEvent. Raises only `WebhookRejected` (422)."""
    env = envelope(payload, "notification")  # fields named bare: `event_type`, `uuid`
    event_id = envelope_str(env, "id")
    object_type = envelope_str(env, "object_type").strip()
    event_type = envelope_str(env, "event_type").strip()
    occurred_at = env.need("event_time", parse_time(env.d.get("event_time"), "event_time"))
    site_id = envelope_str(env, "site_id")
    refs = {key: _ref(env, key) for key in _REFS}
    mapped = EVENT_KINDS.get(f"{object_type}.{event_type}")
    kind = EventKind.other
    if mapped is not None:
        kind, required = mapped
        env.need(required, refs[required])
    return ThinEvent(
        event_id=event_id,
        object_type=object_type,
        event_type=event_type,
        occurred_at=occurred_at,
        site_id=site_id,
        kind=kind,
        uuid=refs["uuid"],
        invoice_number=refs["invoice_number"],
        account_code=refs["account_code"],
    )


# ---------------------------------------------------------------------------------------------
# enrichment

_CLOSED_KINDS = {
    InvoiceStatus.paid: EventKind.invoice_paid,
    InvoiceStatus.uncollectible: EventKind.invoice_uncollectible,
    InvoiceStatus.void: EventKind.invoice_voided,
}
_INVOICE_OBJECTS = frozenset({"invoice", "charge_invoice", "dunning_event"})


def invoice_ref(number: str) -> str:
    """The API path id of an invoice by number: ``number-1042``."""
    return f"number-{number}"


def enrich(thin: ThinEvent, client: RecurlyPlatformClient) -> CanonicalEvent:
    """Fetch what a thin event names and build the full canonical event, with the fewest API calls:

    - payment.*: the transaction by uuid, its invoice, its account (3 calls);
    - invoice.*, charge_invoice.*, dunning_event.created: the invoice by number (its transactions are
      embedded: the latest attempt costs no call), its account (2 calls);
    - subscription.* (cc_will_expire too): the subscription by uuid, its account (2 calls);
    - billing_info.updated: the account by code (1 call; 2 when the account does not embed its
      billing info);
    - any other event: nothing is fetched.

    The account answers with its primary billing info, which becomes the event's payment method. A
    `PlatformError` propagates (the route answers 503 so Recurly retries; `code="not_found"` → 422)."""
    customer: Customer | None = None
    sub: Subscription | None = None
    inv: Invoice | None = None
    attempt: PaymentAttempt | None = None
    method: PaymentMethod | None = None
    kind = thin.kind

    def load_account(account_id: str | None) -> None:
        nonlocal customer, method
        if account_id:
            view = client.get_account(account_id)
            customer, method = view.customer, view.billing_info

    if kind != EventKind.other:
        if thin.object_type == "payment" and thin.uuid:
            attempt = client.get_transaction(thin.uuid)
            if attempt.invoice_id:
                inv = client.get_invoice(attempt.invoice_id)
            load_account(attempt.customer_id or (inv.customer_id if inv is not None else None))
        elif thin.object_type in _INVOICE_OBJECTS and thin.invoice_number:
            inv, attempt = client.get_invoice_and_attempt(invoice_ref(thin.invoice_number))
            load_account(inv.customer_id)
            if thin.type == "invoice.closed":
                kind = _CLOSED_KINDS.get(inv.status, kind)
        elif thin.object_type == "subscription" and thin.uuid:
            sub = client.get_subscription(thin.uuid)
            load_account(sub.customer_id)
        elif thin.object_type == "billing_info" and thin.account_code:
            view = client.get_account(f"code-{thin.account_code}")
            customer, method = view.customer, view.billing_info
            if method is None and not view.billing_info_included:
                method = client.get_billing_info(customer.id)

    if inv is not None and attempt is not None and inv.latest_attempt_id is None:
        inv.latest_attempt_id = attempt.id
    if attempt is not None and attempt.customer_id is None and customer is not None:
        attempt.customer_id = customer.id
    return build(
        CanonicalEvent,
        "notification",
        platform=PLATFORM,
        event_id=thin.event_id,
        event_type=thin.type,
        kind=kind,
        occurred_at=thin.occurred_at,
        livemode=False,
        api_version=API_VERSION,
        customer=customer,
        subscription=sub,
        invoice=inv,
        attempt=attempt,
        payment_method=method,
    )
