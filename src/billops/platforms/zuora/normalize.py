"""Zuora callout bodies and API objects -> canonical events and billing objects.

Zuora sends no fixed webhook payload: a callout's body is a template of merge fields the tenant writes.
BillOps documents the templates it expects (docs/platforms/zuora.md) for Payment Declined, Payment
Processed, Invoice Posted and Invoice Due. Their objects use the same camelCase field names as Zuora's
Object Query API (`GET /object-query/...`), so one set of functions reads both::

    {"eventType": "PaymentDeclined", "timestamp": "2026-11-03T09:15:02-08:00",
     "account": {"id", "accountNumber", "name", "currency", "defaultPaymentMethodId", "billTo": {...}},
     "payment": {"id", "paymentNumber", "status", "amount", "currency", "effectiveDate", "createdDate",
                 "updatedDate", "gateway", "gatewayResponse", "gatewayResponseCode", "gatewayState",
                 "paymentMethodId"},
     "paymentMethod": {"id", "type", "creditCardType", "creditCardMaskNumber",
                       "creditCardExpirationMonth", "creditCardExpirationYear"},
     "invoice": {"id", "invoiceNumber", "status", "amount", "balance", "currency", "dueDate", ...}}

Merge fields render as text, so numbers, booleans and dates are read from strings too, and an empty
string (a merge field with no value) counts as absent. Amounts are Zuora decimals, turned into integer
minor units exactly (`Decimal`; zero- and three-decimal currencies); a value with more decimals than
the currency has is rejected, never rounded. Dates are ISO 8601 (a bare date is midnight UTC, a time
without offset is read as UTC) or Unix seconds / milliseconds.

Zuora has no notification id merge field, so an event's id is the body's `eventId` when the template
sets one, else ``<EventType>:<object id>`` (a payment is one try and an invoice is posted once, so
Zuora's callout retries deduplicate), ``InvoiceDue:<invoice id>:<due date>`` for Invoice Due.

Whatever JSON it is given, `normalize_event` returns a `CanonicalEvent` or raises `WebhookRejected`
(422, naming the bad field: ``payment.amount: expected a decimal amount, got object``).

Declines: from Payment `gatewayResponseCode` and `gatewayResponse` (whole, a Stripe gateway's
``[card_error/card_declined/<decline_code>]`` part, and each sentence of it) through the `zuora`
section of ``data/platform_declines.yaml``, then the decline taxonomy (``data/declines.yaml``). The most
specific match wins; a two-character response code on a Visa card is also the Visa decline code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

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
from billops.errors import WebhookRejected
from billops.platforms import declines as _declines
from billops.platforms.declines import PlatformDeclines
from billops.platforms.declines import decline_key as _key
from billops.platforms.reader import Reader, build, envelope, envelope_str, json_type, reject

PLATFORM = "zuora"
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
_MAX_MINOR = 2**63 - 1
_MAX_TS = 253_402_300_799  # 9999-12-31


def load_platform_declines(path: str = "builtin") -> PlatformDeclines:
    """The Zuora section of the platform decline mapping."""
    return _declines.load_platform_declines(path, PLATFORM)


# ---------------------------------------------------------------------------------------------
# values as merge fields render them (text) or as the API sends them (JSON numbers, booleans)


def _text(r: Reader | None, key: str) -> str | None:
    """A string field; numbers become their text; "" (an empty merge field) is absent."""
    if r is None:
        return None
    v = r.d.get(key)
    if v is None:
        return None
    if isinstance(v, str):
        return v.strip() or None
    if isinstance(v, int | float | Decimal) and not isinstance(v, bool):
        return str(v)
    raise reject(r.at(key), f"expected a string, got {json_type(v)}")


def _req_text(r: Reader, key: str) -> str:
    value = _text(r, key)
    if value is None:
        raise reject(r.at(key), "required field is missing" if r.d.get(key) is None else "must not be empty")
    return value


def to_decimal(value: Any, path: str) -> Decimal | None:
    """A Zuora amount: a JSON number or its text ("49.99"); None when absent or ""."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise reject(path, "expected a decimal amount, got boolean")
    try:
        if isinstance(value, Decimal):
            d = value
        elif isinstance(value, int):
            d = Decimal(value)
        elif isinstance(value, float):
            d = Decimal(repr(value))
        elif isinstance(value, str):
            d = Decimal(value.strip().replace(",", ""))
        else:
            raise reject(path, f"expected a decimal amount, got {json_type(value)}")
    except (InvalidOperation, ValueError):
        raise reject(path, f"expected a decimal amount, got {value!r}") from None
    if not d.is_finite():
        raise reject(path, f"expected a finite amount, got {value!r}")
    return d


def minor_units(amount: Decimal, currency: str, path: str) -> int:
    """Zuora decimal -> integer minor units, exactly (no rounding)."""
    exponent = 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2
    try:
        scaled = amount.scaleb(exponent)
        if scaled != scaled.to_integral_value():
            raise reject(path, f"{amount} has more decimals than {currency.upper()} allows")
        minor = int(scaled)
    except ArithmeticError:
        raise reject(path, f"amount {amount} is out of range") from None
    if not -_MAX_MINOR <= minor <= _MAX_MINOR:
        raise reject(path, f"amount {amount} is out of range")
    return minor


def _money(r: Reader | None, key: str, currency: str) -> int | None:
    if r is None:
        return None
    d = to_decimal(r.d.get(key), r.at(key))
    return None if d is None else minor_units(d, currency, r.at(key))


def _int(r: Reader | None, key: str) -> int | None:
    if r is None:
        return None
    d = to_decimal(r.d.get(key), r.at(key))
    if d is None:
        return None
    if d != d.to_integral_value() or abs(d) > _MAX_MINOR:
        raise reject(r.at(key), f"expected a whole number, got {r.d.get(key)!r}")
    return int(d)


def _bool(r: Reader | None, key: str) -> bool | None:
    if r is None:
        return None
    v = r.d.get(key)
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str):
        s = v.strip().lower()
        if not s:
            return None
        if s in ("true", "false"):
            return s == "true"
        raise reject(r.at(key), f"expected a boolean, got {v!r}")
    raise reject(r.at(key), f"expected a boolean, got {json_type(v)}")


def parse_time(value: Any, path: str) -> datetime | None:
    """ISO 8601 (date, or date and time; no offset = UTC), or Unix seconds / milliseconds."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise reject(path, "expected a date or time, got boolean")
    number: Decimal | None = None
    if isinstance(value, int | float | Decimal):
        number = to_decimal(value, path)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            number = to_decimal(text, path)
        else:
            return _iso(text, path)
    else:
        raise reject(path, f"expected a date or time, got {json_type(value)}")
    assert number is not None
    seconds = number / 1000 if abs(number) >= 100_000_000_000 else number
    if not 0 <= seconds <= _MAX_TS:
        raise reject(path, f"timestamp {value} is out of range")
    return datetime.fromtimestamp(float(seconds), UTC)


def _iso(text: str, path: str) -> datetime:
    t = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        parsed = datetime.fromisoformat(t)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise reject(path, f"expected an ISO 8601 date or time, got {text!r}") from None


def _ts(r: Reader | None, key: str) -> datetime | None:
    return parse_time(r.d.get(key), r.at(key)) if r is not None else None


def _currency(r: Reader | None, key: str = "currency") -> str | None:
    value = _text(r, key)
    if value is None or r is None:
        return None
    if len(value) != 3 or not value.isascii() or not value.isalpha():
        raise reject(r.at(key), f"expected a 3-letter ISO 4217 currency code, got {value!r}")
    return value.lower()


def _need_currency(r: Reader, fallback: str | None) -> str:
    cur = _currency(r) or fallback
    if cur is None:
        raise reject(r.at("currency"), "required field is missing (and the account has no currency)")
    return cur


def _word(value: str) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower())


# ---------------------------------------------------------------------------------------------
# payment methods

_BRANDS = {"americanexpress": "amex", "amex": "amex", "mastercard": "mastercard", "visa": "visa",
           "discover": "discover", "jcb": "jcb", "diners": "diners", "dinersclub": "diners",
           "unionpay": "unionpay", "chinaunionpay": "unionpay", "maestro": "maestro"}  # fmt: skip
_PM_TYPES = {"creditcard": "card", "debitcard": "card", "creditcardreferencetransaction": "card",
             "ach": "us_bank_account", "banktransfer": "bank_transfer", "paypal": "paypal",
             "applepay": "apple_pay", "googlepay": "google_pay"}  # fmt: skip


def _brand(value: str | None) -> str | None:
    if value is None:
        return None
    w = _word(value)
    return _BRANDS.get(w, w or None)


def _last4(masked: str | None) -> str | None:
    digits = re.sub(r"\D", "", masked or "")
    return digits[-4:] if len(digits) >= 4 else None


def _card(r: Reader) -> CardInfo | None:
    brand = _brand(_text(r, "creditCardType") or _text(r, "cardBrand"))
    last4 = _last4(_text(r, "creditCardMaskNumber"))
    month, year = _int(r, "creditCardExpirationMonth"), _int(r, "creditCardExpirationYear")
    if brand is None and last4 is None and month is None and year is None:
        return None
    funding = (_text(r, "cardClass") or "").lower()
    return build(
        CardInfo,
        r.path,
        brand=brand,
        funding=funding if funding in ("credit", "debit", "prepaid") else None,
        country=_text(r, "cardIssuingCountry"),
        exp_month=month,
        exp_year=year,
        last4=last4,
    )


def payment_method(
    r: Reader, *, default_id: str | None = None, account_id: str | None = None
) -> PaymentMethod:
    pm_id = _req_text(r, "id")
    raw_type = _text(r, "type")
    pm_type = _PM_TYPES.get(_word(raw_type), _word(raw_type)) if raw_type else "card"
    return build(
        PaymentMethod,
        r.path,
        platform=PLATFORM,
        id=pm_id,
        customer_id=_text(r, "accountId") or account_id,
        type=pm_type or "card",
        card=_card(r) if pm_type == "card" else None,
        is_default=default_id is not None and pm_id == default_id,
        created_at=_ts(r, "createdDate"),
    )


# ---------------------------------------------------------------------------------------------
# payments (attempts) and declines

_PAYMENT_OUTCOMES = {"processed": "succeeded", "posted": "succeeded", "error": "failed",
                     "canceled": "failed", "cancelled": "failed", "voided": "failed",
                     "processing": "pending", "draft": "pending"}  # fmt: skip
_GENERIC = frozenset({"generic_decline", "card_declined"})
_STRIPE_TRIPLE = re.compile(r"\[\s*([a-z_]+)\s*/\s*([a-z_]+)\s*(?:/\s*([a-z_]+)\s*)?\]")


def decline(payment: Reader, *, network: str | None) -> Decline:
    """Classify a failed Zuora payment from what its gateway answered."""
    taxonomy = load_taxonomy()
    mapping = load_platform_declines()
    code = _text(payment, "gatewayResponseCode")
    text = _text(payment, "gatewayResponse")

    found: list[str] = []
    if text:
        m = _STRIPE_TRIPLE.search(text)  # "[card_error/card_declined/insufficient_funds]" (Stripe)
        if m:
            found += [c for c in (m.group(3), m.group(2)) if c and _key(c) in taxonomy.codes]
    if code:
        found += [_key(code)] if _key(code) in taxonomy.codes else []
        found += [c for c in [mapping.lookup(code)] if c]
    if text:
        found += [c for c in [mapping.lookup(text)] if c]
        for part in re.split(r"[.;|\[\]]|\s-\s", text):
            hit = mapping.lookup(part) if part.strip() else None
            if hit:
                found.append(hit)
    specific = [c for c in found if c not in _GENERIC and c != mapping.default]
    chosen = specific[0] if specific else found[0] if found else mapping.default
    visa_code = code.upper() if code and network == "visa" and len(code) == 2 and code.isalnum() else None
    return taxonomy.classify(
        chosen,
        raw_code=code or chosen,
        message=text,
        network_decline_code=visa_code,
        network=network,
    )


def payment_attempt(
    r: Reader,
    *,
    currency: str | None = None,
    card: CardInfo | None = None,
    invoice_id: str | None = None,
    customer_id: str | None = None,
    outcome: str | None = None,
) -> PaymentAttempt:
    """One Zuora payment = one try to collect. `outcome` forces the outcome an event implies."""
    pay_id = _req_text(r, "id")
    status = _text(r, "status")
    found = _PAYMENT_OUTCOMES.get(_word(status)) if status else None
    if status and found is None:
        raise reject(
            r.at("status"), f"expected one of Processed, Error, Processing, Canceled, got {status!r}"
        )
    if outcome is not None and found is not None and found != outcome:
        raise reject(r.at("status"), f"a payment that {outcome} cannot have status {status!r}")
    result = outcome or found
    if result is None:
        raise reject(r.at("status"), "required field is missing")
    cur = _need_currency(r, currency)
    amount = r.need("amount", _money(r, "amount", cur))
    attempted = _ts(r, "createdDate") or _ts(r, "updatedDate") or _ts(r, "effectiveDate")
    if attempted is None:
        raise reject(
            r.at("createdDate"), "required field is missing (no createdDate, updatedDate or effectiveDate)"
        )
    applications = r.objs("paymentApplications")
    applied = next((a for a in (_text(p, "invoiceId") for p in applications) if a), None)
    method = r.obj("paymentMethod") if isinstance(r.d.get("paymentMethod"), dict) else None
    if card is None and method is not None:
        card = _card(method)
    network = card.brand if card is not None else None
    return build(
        PaymentAttempt,
        r.path,
        platform=PLATFORM,
        id=pay_id,
        invoice_id=invoice_id or applied,
        customer_id=_text(r, "accountId") or customer_id,
        amount=amount,
        currency=cur,
        attempted_at=attempted,
        outcome=result,
        decline=decline(r, network=network) if result == "failed" else None,
        card=card,
        payment_method_id=_text(r, "paymentMethodId"),
        gateway=_text(r, "gateway"),
    )


# ---------------------------------------------------------------------------------------------
# invoices

_INVOICE_STATUSES = {"draft": InvoiceStatus.draft, "posted": InvoiceStatus.open,
                     "canceled": InvoiceStatus.void, "cancelled": InvoiceStatus.void,
                     "reversed": InvoiceStatus.void, "error": InvoiceStatus.draft,
                     "generating": InvoiceStatus.draft, "pendingfortax": InvoiceStatus.draft,
                     "postinprogress": InvoiceStatus.draft, "cancelinprogress": InvoiceStatus.open,
                     "reversalinprogress": InvoiceStatus.open}  # fmt: skip


def invoice(r: Reader, *, currency: str | None = None, account_id: str | None = None) -> Invoice:
    inv_id = _req_text(r, "id")
    raw_status = _req_text(r, "status")
    status = _INVOICE_STATUSES.get(_word(raw_status))
    if status is None:
        raise reject(r.at("status"), f"expected one of Draft, Posted, Canceled, got {raw_status!r}")
    cur = _need_currency(r, currency)
    total = _money(r, "amount", cur)
    balance = _money(r, "balance", cur)
    if total is None and balance is None:
        raise reject(r.at("amount"), "required field is missing (and there is no balance)")
    if status == InvoiceStatus.open and balance is not None and balance <= 0:
        status = InvoiceStatus.paid  # posted and nothing left to collect
    if total is None:
        total = balance or 0
    remaining = max(balance, 0) if balance is not None else (total if status == InvoiceStatus.open else 0)
    if status in (InvoiceStatus.void, InvoiceStatus.paid):
        remaining = 0
    paid = _money(r, "paymentAmount", cur)
    if paid is None:
        paid = max(total - remaining, 0) if status != InvoiceStatus.void else 0
    items = r.objs("invoiceItems")
    sub_item = next((i for i in items if _text(i, "subscriptionId")), items[0] if items else None)
    recurring = _bool(r, "includesRecurring")
    return build(
        Invoice,
        r.path,
        platform=PLATFORM,
        id=inv_id,
        customer_id=_text(r, "accountId") or account_id,
        subscription_id=_text(sub_item, "subscriptionId") if sub_item else None,
        number=_text(r, "invoiceNumber") or _text(r, "number"),
        status=status,
        currency=cur,
        amount_due=total,
        amount_paid=paid,
        amount_remaining=remaining,
        auto_advance=_bool(r, "autoPay"),
        created_at=_ts(r, "postedDate") or _ts(r, "invoiceDate") or _ts(r, "createdDate"),
        due_date=_ts(r, "dueDate"),
        period_start=_ts(sub_item, "serviceStartDate") if sub_item else None,
        period_end=_ts(sub_item, "serviceEndDate") if sub_item else None,
        hosted_invoice_url=_text(r, "paymentLink"),
        billing_reason="subscription_cycle" if recurring else None,
        plan_name=_text(sub_item, "chargeName") if sub_item else None,
    )


# ---------------------------------------------------------------------------------------------
# accounts and subscriptions


def account(r: Reader) -> Customer:
    bill_to = r.obj("billTo")
    names = [n for n in (_text(bill_to, "firstName"), _text(bill_to, "lastName")) if n]
    metadata = {k: v for k, v in (("account_number", _text(r, "accountNumber")),
                                  ("crm_id", _text(r, "crmId"))) if v}  # fmt: skip
    return build(
        Customer,
        r.path,
        platform=PLATFORM,
        id=_req_text(r, "id"),
        email=_text(bill_to, "workEmail") or _text(bill_to, "personalEmail"),
        phone=_text(bill_to, "mobilePhone") or _text(bill_to, "workPhone"),
        name=_text(r, "name") or " ".join(names) or None,
        created_at=_ts(r, "createdDate"),
        country=_text(bill_to, "country"),
        default_payment_method_id=_text(r, "defaultPaymentMethodId"),
        metadata=metadata,
    )


_SUB_STATUSES = {"active": "active", "cancelled": "canceled", "canceled": "canceled", "suspended": "paused",
                 "expired": "canceled", "draft": "incomplete", "pendingactivation": "incomplete",
                 "pendingacceptance": "incomplete"}  # fmt: skip


def subscription(r: Reader, *, currency: str | None = None) -> Subscription:
    raw = _req_text(r, "status")
    status = _SUB_STATUSES.get(_word(raw), _word(raw))
    cur = _currency(r) or currency
    mrr = _money(r, "cMRR", cur) if cur else None
    auto_renew = _bool(r, "autoRenew")
    termed = (_text(r, "termType") or "").upper() == "TERMED"
    return build(
        Subscription,
        r.path,
        platform=PLATFORM,
        id=_req_text(r, "id"),
        customer_id=_text(r, "accountId"),
        status=status,
        plan_name=_text(r, "name") or _text(r, "subscriptionNumber"),
        amount=mrr,
        currency=cur,
        interval="month" if mrr is not None else None,
        current_period_end=_ts(r, "termEndDate"),
        cancel_at_period_end=status == "active" and termed and auto_renew is False,
        paused=status == "paused",
        created_at=_ts(r, "createdDate"),
    )


# ---------------------------------------------------------------------------------------------
# object functions (one API object, as the Object Query API returns it)


def zuora_invoice(obj: dict[str, Any], *, currency: str | None = None) -> Invoice:
    return invoice(Reader.of(obj, "invoice"), currency=currency)


def zuora_account(obj: dict[str, Any]) -> Customer:
    return account(Reader.of(obj, "account"))


def zuora_payment_attempt(
    obj: dict[str, Any], *, invoice_id: str | None = None, currency: str | None = None
) -> PaymentAttempt:
    """A payment (Object Query, expandable `paymentApplications` / `paymentMethod`, or the create-payment
    answer) as a payment attempt."""
    return payment_attempt(Reader.of(obj, "payment"), invoice_id=invoice_id, currency=currency)


def zuora_payment_method(obj: dict[str, Any], *, default_id: str | None = None) -> PaymentMethod:
    return payment_method(Reader.of(obj, "paymentMethod"), default_id=default_id)


def zuora_subscription(obj: dict[str, Any], *, currency: str | None = None) -> Subscription:
    return subscription(Reader.of(obj, "subscription"), currency=currency)


# ---------------------------------------------------------------------------------------------
# callout events


@dataclass(frozen=True)
class EventType:
    name: str  # the canonical spelling, used in derived event ids
    kind: EventKind
    requires: str  # "payment" | "invoice"


EVENT_TYPES: dict[str, EventType] = {
    "paymentdeclined": EventType("PaymentDeclined", EventKind.payment_failed, "payment"),
    "paymentprocessed": EventType("PaymentProcessed", EventKind.payment_succeeded, "payment"),
    "invoiceposted": EventType("InvoicePosted", EventKind.invoice_finalized, "invoice"),
    "invoicedue": EventType("InvoiceDue", EventKind.invoice_upcoming, "invoice"),
}


def known_event_type(event_type: str) -> bool:
    """Whether BillOps acts on callouts of this event type (any spelling of the names above)."""
    return _word(event_type) in EVENT_TYPES


def _present(r: Reader | None) -> Reader | None:
    """An object whose id merge field rendered empty (e.g. no payment method) is absent."""
    return r if r is not None and _text(r, "id") is not None else None


def _part(env: Reader, key: str, make: Any, strict: bool) -> Any:
    try:
        r = _present(env.obj(key))
        return make(r) if r is not None else None
    except WebhookRejected:
        if strict:
            raise
        return None


def normalize_event(payload: Any) -> CanonicalEvent:
    """A parsed callout body (BillOps' template) -> CanonicalEvent. Raises only `WebhookRejected` (422)."""
    env = envelope(payload, "body")
    event_type = envelope_str(env, "eventType")
    occurred_at = env.need("timestamp", _ts(env, "timestamp"))
    known = EVENT_TYPES.get(_word(event_type))
    strict = known is not None

    customer = _part(env, "account", account, strict)
    if strict and customer is None:
        raise reject("account.id", "required field is missing")
    currency: str | None = _part(env, "account", _currency, strict)
    default_pm = customer.default_payment_method_id if customer is not None else None
    cust_id = customer.id if customer is not None else None

    pm = _part(
        env, "paymentMethod", lambda r: payment_method(r, default_id=default_pm, account_id=cust_id), strict
    )
    inv = _part(env, "invoice", lambda r: invoice(r, currency=currency, account_id=cust_id), strict)

    def make_attempt(r: Reader) -> PaymentAttempt:
        same_card = pm is not None and _text(r, "paymentMethodId") in (None, pm.id)
        forced = None
        if known is not None and known.requires == "payment":
            forced = "failed" if known.kind == EventKind.payment_failed else "succeeded"
        return payment_attempt(
            r,
            currency=currency,
            card=pm.card if same_card and pm is not None else None,
            invoice_id=inv.id if inv is not None else None,
            customer_id=cust_id,
            outcome=forced,
        )

    attempt = _part(env, "payment", make_attempt, strict)
    kind = EventKind.other
    if known is not None:
        required = attempt if known.requires == "payment" else inv
        if required is None:
            raise reject(f"{known.requires}.id", "required field is missing")
        kind = known.kind
        due = inv.due_date if known.name == "InvoiceDue" and inv is not None else None
        if due is not None and (occurred_at.date() > due.date() or inv.status != InvoiceStatus.open):
            kind = EventKind.other  # past due or nothing to collect: stored, starts nothing
    if (
        inv is not None
        and attempt is not None
        and attempt.outcome == "failed"
        and inv.latest_attempt_id is None
    ):
        inv.latest_attempt_id = attempt.id

    event_id = _text(env, "eventId") or _derived_id(known, event_type, attempt, inv, customer, occurred_at)
    return build(
        CanonicalEvent,
        "body",
        platform=PLATFORM,
        event_id=event_id,
        event_type=event_type,
        kind=kind,
        occurred_at=occurred_at,
        livemode=False,
        customer=customer,
        invoice=inv,
        attempt=attempt,
        payment_method=pm,
    )


def _derived_id(
    known: EventType | None,
    event_type: str,
    attempt: PaymentAttempt | None,
    inv: Invoice | None,
    customer: Customer | None,
    occurred_at: datetime,
) -> str:
    if known is not None and known.requires == "payment" and attempt is not None:
        return f"{known.name}:{attempt.id}"
    if known is not None and known.name == "InvoiceDue" and inv is not None:
        due = inv.due_date.date().isoformat() if inv.due_date is not None else "nodue"
        return f"InvoiceDue:{inv.id}:{due}"
    if known is not None and inv is not None:
        return f"{known.name}:{inv.id}"
    obj = next((o.id for o in (attempt, inv, customer) if o is not None), "none")
    return f"{event_type.strip()}:{obj}:{occurred_at.isoformat()}"
