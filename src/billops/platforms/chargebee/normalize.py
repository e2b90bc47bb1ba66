"""Chargebee v2 webhook events and API objects -> canonical events and billing objects.

`normalize_event` takes the parsed event envelope
``{id: "ev_…", occurred_at, source, object: "event", api_version: "v2", event_type, content: {…}}``
and returns a `CanonicalEvent`. ``content`` may hold ``customer``, ``subscription``, ``invoice``,
``transaction``, ``card``, ``payment_source`` and ``credit_note``. Amounts are integer minor units,
times Unix seconds, currencies upper-case ``currency_code`` (lower-cased here).

Whatever JSON value it is given, it either returns or raises `WebhookRejected`: status 422 with a
message naming the bad field (``content.invoice.amount_due: expected an integer, got string``) when
the JSON is not a valid Chargebee event. The object functions (`chargebee_invoice`, …) take one
resource as Chargebee sends it and raise the same 422 errors with the resource name as the path
prefix (``invoice.status: …``).

Declines: the canonical code is ``error_detail.decline_code`` when the taxonomy knows it (gateways
such as Stripe send Stripe codes), else the first specific match of ``decline_code``, ``error_code``
or ``error_text`` in ``data/platform_declines.yaml``, else the raw decline code, else that file's
default; the decline taxonomy (``data/declines.yaml``) then classifies it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from billops.domain.billing import (
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
from billops.errors import WebhookRejected
from billops.platforms import declines as _declines
from billops.platforms.declines import PlatformDeclines, choose_code
from billops.platforms.reader import (
    Reader,
    build,
    envelope,
    envelope_str,
    maybe_code,
    maybe_obj,
    maybe_str,
    reject,
)

__all__ = [
    "EVENT_KINDS",
    "PLATFORM",
    "PlatformDeclines",
    "chargebee_card",
    "chargebee_customer",
    "chargebee_invoice",
    "chargebee_payment_source",
    "chargebee_subscription",
    "chargebee_transaction_attempt",
    "load_platform_declines",
    "normalize_event",
]

PLATFORM = "chargebee"


def load_platform_declines(path: str = "builtin") -> PlatformDeclines:
    """The Chargebee section of the platform decline mapping."""
    return _declines.load_platform_declines(path, PLATFORM)


def parse_platform_declines(raw: Any, source: str) -> PlatformDeclines:
    return _declines.parse_platform_declines(raw, source, PLATFORM)


# ---------------------------------------------------------------------------------------------
# small readers


_BRANDS = {"american_express": "amex", "american express": "amex", "diners_club": "diners",
           "master_card": "mastercard", "master card": "mastercard", "other": None,
           "not_applicable": None}  # fmt: skip
_FUNDING = {"not_known": "unknown", "not_applicable": "unknown"}


def _brand(value: str | None) -> str | None:
    if value is None:
        return None
    b = value.strip().lower()
    if b in _BRANDS:
        return _BRANDS[b]
    return b.replace(" ", "_") or None


def _last4(masked: str | None) -> str | None:
    if not masked:
        return None
    digits = masked.strip()[-4:]
    return digits if len(digits) == 4 and digits.isdigit() else None


# ---------------------------------------------------------------------------------------------
# cards and payment sources


def _card_info(r: Reader, *, brand_key: str) -> CardInfo:
    last4 = r.opt_str("last4") or _last4(r.opt_str("masked_number"))
    funding = r.lower_str("funding_type")
    return build(
        CardInfo,
        r.path,
        brand=_brand(r.opt_str(brand_key)),
        funding=_FUNDING.get(funding, funding) if funding is not None else None,
        country=r.opt_str("issuing_country"),
        exp_month=r.opt_int("expiry_month"),
        exp_year=r.opt_int("expiry_year"),
        last4=last4,
    )


def card_method(
    r: Reader, *, default_id: str | None = None, default_pm_id: str | None = None
) -> PaymentMethod:
    """A Chargebee `card` resource. It has no id of its own: its `payment_source_id`, else `default_id`
    (the customer's primary payment source), else ``card:{customer_id}``."""
    customer_id = r.opt_str("customer_id")
    pm_id = r.opt_str("payment_source_id") or default_id
    if not pm_id:
        if not customer_id:
            raise reject(r.path, "a card needs payment_source_id or customer_id")
        pm_id = f"card:{customer_id}"
    return build(
        PaymentMethod,
        r.path,
        platform=PLATFORM,
        id=pm_id,
        source_version=r.opt_int("resource_version"),
        customer_id=customer_id,
        type="card",
        card=_card_info(r, brand_key="card_type"),
        is_default=default_pm_id is not None and pm_id == default_pm_id,
        created_at=r.opt_ts("created_at"),
    )


def payment_source_method(r: Reader, *, default_pm_id: str | None = None) -> PaymentMethod:
    """A Chargebee `payment_source` (Payment Sources API): card details under ``card``."""
    pm_id = r.req_str("id")
    pm_type = r.lower_str("type") or "card"
    raw_card = r.obj("card") if pm_type == "card" else None
    return build(
        PaymentMethod,
        r.path,
        platform=PLATFORM,
        id=pm_id,
        source_version=r.opt_int("resource_version"),
        customer_id=r.opt_str("customer_id"),
        type=pm_type,
        card=_card_info(raw_card, brand_key="brand") if raw_card is not None else None,
        is_default=default_pm_id is not None and pm_id == default_pm_id,
        created_at=r.opt_ts("created_at"),
    )


# ---------------------------------------------------------------------------------------------
# declines and payment attempts

_TXN_OUTCOMES = {
    "success": "succeeded",
    "failure": "failed",
    "timeout": "failed",
    "voided": "failed",
    "in_progress": "pending",
    "needs_attention": "pending",
}


def decline(txn: Reader, *, network: str | None) -> Decline:
    """Classify a failed transaction from `error_detail`, `error_code` and `error_text`."""
    taxonomy = load_taxonomy()
    mapping = load_platform_declines()
    detail = txn.obj("error_detail")
    decline_code = maybe_code(detail, "decline_code")
    error_code = maybe_code(txn, "error_code")
    error_text = txn.opt_str("error_text")
    network_error = maybe_code(detail, "network_error_code")
    processor_advice = maybe_code(detail, "processor_advice_code")

    timed_out = not error_code and not error_text and txn.opt_str("status") == "timeout"
    code = choose_code(
        mapping,
        taxonomy.codes,
        decline_code=decline_code,
        values=(decline_code, error_code, error_text),
        fallback="issuer_not_available" if timed_out else None,  # the gateway did not answer
    )

    advice = processor_advice.lower() if processor_advice else None
    mac: str | None = None
    if network == "mastercard":
        for candidate in (processor_advice, network_error):
            if candidate and len(candidate) == 2 and candidate.isdigit():
                mac = candidate
                break
    return taxonomy.classify(
        code,
        raw_code=decline_code or error_code or code,
        message=error_text or txn.opt_str("error_message"),
        advice_code=advice if advice in taxonomy.advice_codes else None,
        network_advice_code=mac,
        network_decline_code=network_error if network == "visa" else None,
        network=network,
    )


def transaction_attempt(
    r: Reader, *, card: CardInfo | None = None, invoice_id: str | None = None
) -> PaymentAttempt:
    """One try to pay: a Chargebee `transaction` of type payment. `card` is the card it used when
    the event carries it (its brand decides which network rules apply)."""
    txn_id = r.req_str("id")
    status = r.req_str("status")
    outcome = _TXN_OUTCOMES.get(status)
    if outcome is None:
        raise reject(r.at("status"), f"expected one of {', '.join(sorted(_TXN_OUTCOMES))}, got {status!r}")
    linked = r.objs("linked_invoices")
    linked_invoice = linked[0].opt_str("invoice_id") if linked else None
    masked_last4 = _last4(r.opt_str("masked_card_number"))
    if card is None and masked_last4 is not None:
        card = CardInfo(last4=masked_last4)
    network = card.brand if card is not None else None
    return build(
        PaymentAttempt,
        r.path,
        platform=PLATFORM,
        id=txn_id,
        source_version=r.opt_int("resource_version"),
        invoice_id=linked_invoice or invoice_id,
        customer_id=r.opt_str("customer_id"),
        amount=r.req_int("amount"),
        currency=r.currency("currency_code"),
        attempted_at=r.req_ts("date"),
        outcome=outcome,
        decline=decline(r, network=network) if outcome == "failed" else None,
        card=card,
        payment_method_id=r.opt_str("payment_source_id"),
        gateway=r.opt_str("gateway"),
    )


# ---------------------------------------------------------------------------------------------
# invoices

_INVOICE_STATUSES = {
    "paid": InvoiceStatus.paid,
    "posted": InvoiceStatus.open,
    "payment_due": InvoiceStatus.open,
    "not_paid": InvoiceStatus.uncollectible,
    "voided": InvoiceStatus.void,
    "pending": InvoiceStatus.draft,
}


def invoice(r: Reader) -> Invoice:
    invoice_id = r.req_str("id")
    raw_status = r.req_str("status")
    status = _INVOICE_STATUSES.get(raw_status)
    if status is None:
        raise reject(
            r.at("status"), f"expected one of {', '.join(sorted(_INVOICE_STATUSES))}, got {raw_status!r}"
        )
    paid = r.opt_int("amount_paid") or 0
    due = r.opt_int("amount_due")  # what is still to be collected
    total = r.opt_int("total")
    if due is None and total is None:
        raise reject(r.at("amount_due"), "required field is missing (and there is no total)")
    if due is not None:
        amount_due, remaining = paid + due, due
    else:
        credits = (r.opt_int("credits_applied") or 0) + (r.opt_int("amount_adjusted") or 0)
        amount_due = max((total or 0) - credits, 0)
        remaining = 0 if status in (InvoiceStatus.paid, InvoiceStatus.void) else max(amount_due - paid, 0)

    payments = r.objs("linked_payments")
    latest = max(payments, key=lambda p: p.opt_int("txn_date") or 0) if payments else None
    attempts = r.objs("dunning_attempts")
    lines = r.objs("line_items")
    plan_line = next(
        (li for li in lines if (li.opt_str("entity_type") or "") in ("plan", "plan_item_price")),
        lines[0] if lines else None,
    )
    reason: str | None = None
    if r.opt_bool("first_invoice") and r.opt_str("subscription_id"):
        reason = "subscription_create"
    elif r.opt_bool("recurring"):
        reason = "subscription_cycle"
    return build(
        Invoice,
        r.path,
        platform=PLATFORM,
        id=invoice_id,
        source_version=r.opt_int("resource_version"),
        customer_id=r.opt_str("customer_id"),
        subscription_id=r.opt_str("subscription_id"),
        number=invoice_id,
        status=status,
        currency=r.currency("currency_code"),
        amount_due=amount_due,
        amount_paid=paid,
        amount_remaining=remaining,
        attempt_count=len(payments) or len(attempts),
        next_payment_attempt=r.opt_ts("next_retry_at"),
        created_at=r.opt_ts("date"),
        due_date=r.opt_ts("due_date"),
        period_start=plan_line.opt_ts("date_from") if plan_line is not None else None,
        period_end=plan_line.opt_ts("date_to") if plan_line is not None else None,
        billing_reason=reason,
        plan_name=plan_line.opt_str("description") if plan_line is not None else None,
        latest_attempt_id=latest.opt_str("txn_id") if latest is not None else None,
        metadata=r.metadata("meta_data"),
    )


# ---------------------------------------------------------------------------------------------
# subscriptions and customers

_SUBSCRIPTION_STATUSES = {"in_trial": "trialing", "cancelled": "canceled", "non_renewing": "active"}


def _line_amount(item: Reader, unit_key: str, qty_key: str, amount_key: str) -> int | None:
    amount = item.opt_int(amount_key)
    if amount is not None:
        return amount
    unit = item.opt_int(unit_key)
    if unit is None:
        return None
    qty = item.opt_int(qty_key)
    return unit * (1 if qty is None else qty)


def subscription(r: Reader) -> Subscription:
    status = r.req_str("status")
    items = r.objs("subscription_items")  # Product Catalog 2.0
    plan_id: str | None
    amount: int | None
    if items:
        plan = next((i for i in items if i.opt_str("item_type") == "plan"), items[0])
        plan_id = plan.opt_str("item_price_id")
        amount = 0
        for item in items:
            if item.opt_str("item_type") == "charge":
                continue  # one-off charges are not part of the recurring amount
            line = _line_amount(item, "unit_price", "quantity", "amount")
            amount = None if line is None or amount is None else amount + line
    else:  # Product Catalog 1.0
        plan_id = r.opt_str("plan_id")
        amount = _line_amount(r, "plan_unit_price", "plan_quantity", "plan_amount") if plan_id else None
        for addon in r.objs("addons"):
            line = _line_amount(addon, "unit_price", "quantity", "amount")
            amount = None if line is None or amount is None else amount + line
    period = r.opt_int("billing_period")
    unit = r.lower_str("billing_period_unit")
    interval = unit if unit is None or period in (None, 1) else f"{period} {unit}"
    return build(
        Subscription,
        r.path,
        platform=PLATFORM,
        id=r.req_str("id"),
        source_version=r.opt_int("resource_version"),
        customer_id=r.opt_str("customer_id"),
        status=_SUBSCRIPTION_STATUSES.get(status, status),
        plan_id=plan_id,
        amount=amount,
        currency=r.currency("currency_code", required=False),
        interval=interval,
        current_period_end=r.opt_ts("current_term_end"),
        cancel_at_period_end=status == "non_renewing",
        paused=status == "paused",
        created_at=r.opt_ts("created_at"),
    )


def customer(r: Reader) -> Customer:
    names = [n for n in (r.opt_str("first_name"), r.opt_str("last_name")) if n and n.strip()]
    address = r.obj("billing_address")
    return build(
        Customer,
        r.path,
        platform=PLATFORM,
        id=r.req_str("id"),
        source_version=r.opt_int("resource_version"),
        email=r.opt_str("email"),
        phone=r.opt_str("phone"),
        name=" ".join(n.strip() for n in names) or r.opt_str("company"),
        created_at=r.opt_ts("created_at"),
        country=maybe_str(address, "country"),
        default_payment_method_id=r.opt_str("primary_payment_source_id"),
        metadata=r.metadata("meta_data"),
    )


# ---------------------------------------------------------------------------------------------
# object functions (one resource as Chargebee sends it)


def chargebee_customer(obj: dict[str, Any]) -> Customer:
    return customer(Reader.of(obj, "customer"))


def chargebee_subscription(obj: dict[str, Any]) -> Subscription:
    return subscription(Reader.of(obj, "subscription"))


def chargebee_invoice(obj: dict[str, Any]) -> Invoice:
    return invoice(Reader.of(obj, "invoice"))


def chargebee_transaction_attempt(obj: dict[str, Any], card: dict[str, Any] | None = None) -> PaymentAttempt:
    """A transaction as a payment attempt; `card` (a Chargebee card resource) gives brand and network."""
    info = _card_info(Reader.of(card, "card"), brand_key="card_type") if card is not None else None
    return transaction_attempt(Reader.of(obj, "transaction"), card=info)


def chargebee_card(obj: dict[str, Any]) -> PaymentMethod:
    return card_method(Reader.of(obj, "card"))


def chargebee_payment_source(obj: dict[str, Any]) -> PaymentMethod:
    return payment_source_method(Reader.of(obj, "payment_source"))


# ---------------------------------------------------------------------------------------------
# events


@dataclass
class _Objects:
    customer: Customer | None = None
    subscription: Subscription | None = None
    invoice: Invoice | None = None
    attempt: PaymentAttempt | None = None
    payment_method: PaymentMethod | None = None


def _objects(content: Reader, *, strict: bool) -> _Objects:
    """Every resource in `content`. With `strict=False` (events BillOps does not act on) a resource
    that does not parse is left out instead of rejecting the event."""
    found = _Objects()

    def read(key: str, make: Callable[[Reader], Any]) -> Any:
        try:
            r = content.obj(key)
            return make(r) if r is not None else None
        except WebhookRejected:
            if strict:
                raise
            return None

    found.customer = read("customer", customer)
    primary = found.customer.default_payment_method_id if found.customer is not None else None
    found.subscription = read("subscription", subscription)
    found.invoice = read("invoice", invoice)
    source = read("payment_source", lambda r: payment_source_method(r, default_pm_id=primary))
    card = read(
        "card", lambda r: card_method(r, default_id=source.id if source else primary, default_pm_id=primary)
    )
    if source is not None and source.card is None and card is not None:
        source.card = card.card
    found.payment_method = source or card

    inv_id = found.invoice.id if found.invoice is not None else None

    def attempt(r: Reader) -> PaymentAttempt:
        pm = found.payment_method  # the card the transaction used, when the event carries it
        txn_pm = r.opt_str("payment_source_id")
        same = pm is not None and (txn_pm is None or txn_pm == pm.id or pm.id.startswith("card:"))
        return transaction_attempt(r, card=pm.card if same and pm is not None else None, invoice_id=inv_id)

    found.attempt = read("transaction", attempt)
    if found.invoice is not None and found.attempt is not None and found.invoice.latest_attempt_id is None:
        found.invoice.latest_attempt_id = found.attempt.id
    return found


def _customer_payment_method(content: Reader, objs: _Objects) -> PaymentMethod | None:
    """Card events of older sites carry only the customer: its primary payment source, no card."""
    cust = objs.customer
    if cust is None or cust.default_payment_method_id is None:
        return None
    raw = content.obj("customer")
    pm = maybe_obj(raw, "payment_method")
    return build(
        PaymentMethod,
        "content.customer",
        platform=PLATFORM,
        id=cust.default_payment_method_id,
        customer_id=cust.id,
        type=maybe_str(pm, "type") or "card",
        is_default=True,
    )


def _invoice_kind(objs: _Objects) -> EventKind:
    """invoice_updated: what changed is the invoice's status."""
    if objs.invoice is None:
        return EventKind.invoice_finalized
    return _INVOICE_KINDS.get(objs.invoice.status, EventKind.invoice_finalized)


_INVOICE_KINDS = {
    InvoiceStatus.paid: EventKind.invoice_paid,
    InvoiceStatus.void: EventKind.invoice_voided,
    InvoiceStatus.uncollectible: EventKind.invoice_uncollectible,
}


# Chargebee event type -> (canonical kind, the content resource it must carry)
EVENT_KINDS: dict[str, tuple[EventKind, str]] = {
    "payment_failed": (EventKind.payment_failed, "transaction"),
    "payment_succeeded": (EventKind.payment_succeeded, "transaction"),
    "invoice_generated": (EventKind.invoice_created, "invoice"),
    "invoice_updated": (EventKind.invoice_finalized, "invoice"),  # refined by the invoice's status
    "dunning_updated": (EventKind.invoice_finalized, "invoice"),  # refined by the invoice's status
    "payment_due_reminder": (EventKind.other, "invoice"),  # mirrored; starts nothing
    "transaction_updated": (EventKind.other, "transaction"),  # mirrored; payment_failed starts recovery
    "subscription_created": (EventKind.subscription_created, "subscription"),
    "subscription_started": (EventKind.subscription_created, "subscription"),
    "subscription_activated": (EventKind.subscription_updated, "subscription"),
    "subscription_changed": (EventKind.subscription_updated, "subscription"),
    "subscription_renewed": (EventKind.subscription_updated, "subscription"),
    "subscription_reactivated": (EventKind.subscription_updated, "subscription"),
    "subscription_cancellation_scheduled": (EventKind.subscription_updated, "subscription"),
    "subscription_scheduled_cancellation_removed": (EventKind.subscription_updated, "subscription"),
    "subscription_cancelled": (EventKind.subscription_canceled, "subscription"),
    "subscription_paused": (EventKind.subscription_paused, "subscription"),
    "subscription_resumed": (EventKind.subscription_resumed, "subscription"),
    "subscription_trial_end_reminder": (EventKind.trial_will_end, "subscription"),
    "card_added": (EventKind.payment_method_updated, "payment_method"),
    "card_updated": (EventKind.payment_method_updated, "payment_method"),
    "card_deleted": (EventKind.payment_method_updated, "payment_method"),
    "card_expired": (EventKind.payment_method_updated, "payment_method"),
    "card_expiry_reminder": (EventKind.card_expiring, "payment_method"),
    "payment_source_added": (EventKind.payment_method_updated, "payment_method"),
    "payment_source_updated": (EventKind.payment_method_updated, "payment_method"),
    "payment_source_deleted": (EventKind.payment_method_updated, "payment_method"),
    "payment_source_expired": (EventKind.payment_method_updated, "payment_method"),
    "payment_source_expiring": (EventKind.card_expiring, "payment_method"),
    "customer_created": (EventKind.customer_updated, "customer"),
    "customer_changed": (EventKind.customer_updated, "customer"),
}


def normalize_event(payload: Any) -> CanonicalEvent:
    """A parsed Chargebee v2 event -> CanonicalEvent. Raises only `WebhookRejected` (422)."""
    env = envelope(payload, "event", object_type="event")  # fields named bare: `id`, `content.invoice.total`
    event_id = envelope_str(env, "id")
    event_type = envelope_str(env, "event_type")
    occurred_at = env.req_ts("occurred_at")
    api_version = env.opt_str("api_version")
    env.opt_str("source")
    content = env.need("content", env.obj("content"))

    mapped = EVENT_KINDS.get(event_type)
    if mapped is None:
        objs = _objects(content, strict=False)  # best effort: never rejected for its content
        kind = EventKind.other
    else:
        kind, required = mapped
        objs = _objects(content, strict=True)
        if required == "payment_method":
            if objs.payment_method is None:
                objs.payment_method = _customer_payment_method(content, objs)
            if objs.payment_method is None:
                raise reject(
                    "content", f"a {event_type} event carries a card, a payment_source or a customer"
                )
        else:
            present = {
                "transaction": objs.attempt,
                "invoice": objs.invoice,
                "subscription": objs.subscription,
                "customer": objs.customer,
            }[required]
            if present is None:
                raise reject(f"content.{required}", "required field is missing")
        if event_type in ("invoice_updated", "dunning_updated"):
            kind = _invoice_kind(objs)

    return build(
        CanonicalEvent,
        "event",
        platform=PLATFORM,
        event_id=event_id,
        event_type=event_type,
        kind=kind,
        occurred_at=occurred_at,
        livemode=False,
        api_version=api_version,
        customer=objs.customer,
        subscription=objs.subscription,
        invoice=objs.invoice,
        attempt=objs.attempt,
        payment_method=objs.payment_method,
    )
