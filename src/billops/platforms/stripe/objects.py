"""Stripe objects -> canonical billing objects (read with `billops.platforms.reader`).

API objects fetched with the SDK (`obj.to_dict()`) have the same shape as a webhook's
`data.object`, so these builders serve both. Both API generations are read: the 2020-era shape
(`invoice.charge`, `invoice.payment_intent`, `invoice.subscription`, top-level
`subscription.current_period_end`) and the current one (API 2025-03-31.basil and later:
`invoice.payments`, `invoice.parent.subscription_details`, `lines.data[].pricing`,
`items.data[].current_period_end`, no `invoice` on Charge/PaymentIntent).

A wrong JSON type anywhere raises `WebhookRejected(status=422)` naming the dotted path of the
field; nothing else escapes.
"""

from __future__ import annotations

from datetime import datetime

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
from billops.platforms.reader import Reader, build, reject

PLATFORM = "stripe"


def _str(r: Reader | None, key: str) -> str | None:
    """`r.opt_str(key)` of an optional object."""
    return r.opt_str(key) if r is not None else None


def _ref(r: Reader | None, key: str) -> str | None:
    return r.ref(key) if r is not None else None


def _obj(r: Reader | None, key: str) -> Reader | None:
    return r.obj(key) if r is not None else None


def _expanded(r: Reader | None, key: str) -> Reader | None:
    return r.expanded(key) if r is not None else None


# ---------------------------------------------------------------------------------------------
# cards and declines

_BRANDS = {"american express": "amex", "american_express": "amex", "diners club": "diners",
           "diners_club": "diners", "master card": "mastercard", "union pay": "unionpay"}  # fmt: skip


def _brand(value: str | None) -> str | None:
    """Card brand in the lowercase payment-method vocabulary (legacy cards say "Visa", "MasterCard")."""
    if value is None:
        return None
    b = value.strip().lower()
    return _BRANDS.get(b, b.replace(" ", "_")) or None


def card_info(r: Reader) -> CardInfo:
    """A card: `payment_method.card`, `charge.payment_method_details.card`, a legacy card or source.card."""
    return build(
        CardInfo,
        r.path,
        brand=_brand(r.opt_str("brand")),
        funding=r.lower_str("funding"),
        country=r.opt_str("country"),
        exp_month=r.opt_int("exp_month"),
        exp_year=r.opt_int("exp_year"),
        last4=r.opt_str("last4"),
        fingerprint=r.opt_str("fingerprint"),
    )


def _charge_card(c: Reader) -> tuple[CardInfo | None, str | None]:
    """The card a charge used and the network it went through (for network rules)."""
    pmd = c.obj("payment_method_details")
    card = _obj(pmd, "card")
    if card is not None:
        info = card_info(card)
        return info, _brand(card.opt_str("network")) or info.brand
    for key in ("source", "card"):  # charges made with the legacy Sources/Cards API
        src = c.expanded(key)
        if src is not None and src.opt_str("object") == "source":
            src = src.obj("card")
        elif src is not None and src.opt_str("object") not in (None, "card"):
            continue
        if src is not None:
            info = card_info(src)
            return info, info.brand
    return None, None


def decline(*, charge: Reader | None, lpe: Reader | None, network: str | None) -> Decline:
    """Classify a failure from a charge and/or a PaymentIntent's `last_payment_error`.

    Code precedence: `last_payment_error.decline_code`, `outcome.reason` when it is a known decline
    code (not e.g. `highest_risk_level`), `charge.failure_code`, `last_payment_error.code`.
    Advice and network codes come from `charge.outcome`, else from `last_payment_error`.
    """
    taxonomy = load_taxonomy()
    outcome = _obj(charge, "outcome")
    reason = _str(outcome, "reason")
    candidates = (
        _str(lpe, "decline_code"),
        reason if reason and reason.strip().lower() in taxonomy.codes else None,
        _str(charge, "failure_code"),
        _str(lpe, "code"),
    )
    code = next((c for c in candidates if c and c.strip()), None)

    def signal(key: str) -> str | None:
        for src in (outcome, lpe):
            value = _str(src, key)
            if value and value.strip():
                return value.strip()
        return None

    message = _str(charge, "failure_message") or _str(lpe, "message")
    return taxonomy.classify(
        code,
        raw_code=code,
        message=message,
        advice_code=signal("advice_code"),
        network_advice_code=signal("network_advice_code"),
        network_decline_code=signal("network_decline_code"),
        network=network,
    )


# ---------------------------------------------------------------------------------------------
# payment attempts

_CHARGE_OUTCOMES = {"succeeded": "succeeded", "failed": "failed", "pending": "pending"}


def charge_attempt(c: Reader, *, pi: Reader | None = None, invoice_id: str | None = None) -> PaymentAttempt:
    """One try to pay, from a Charge; `pi` is its PaymentIntent when known (adds its decline_code)."""
    charge_id = c.req_str("id")
    status = c.req_str("status")
    outcome = _CHARGE_OUTCOMES.get(status)
    if outcome is None:
        raise reject(c.at("status"), f"expected succeeded, failed or pending, got {status!r}")
    card, network = _charge_card(c)
    lpe = _obj(pi, "last_payment_error")
    if lpe is not None and lpe.ref("charge") not in (None, charge_id):
        lpe = None  # that error belongs to another try of the same PaymentIntent
    return build(
        PaymentAttempt,
        c.path,
        platform=PLATFORM,
        id=charge_id,
        invoice_id=invoice_id or c.ref("invoice") or _ref(pi, "invoice"),
        customer_id=c.ref("customer") or _ref(pi, "customer"),
        payment_intent_id=c.ref("payment_intent") or _str(pi, "id"),
        amount=c.req_int("amount"),
        currency=c.currency(),
        attempted_at=c.req_ts("created"),
        outcome=outcome,
        decline=decline(charge=c, lpe=lpe, network=network) if outcome == "failed" else None,
        card=card,
        payment_method_id=c.ref("payment_method") or c.ref("source"),
        gateway=PLATFORM,
    )


def payment_intent_attempt(
    pi: Reader, *, at: datetime | None = None, invoice_id: str | None = None
) -> PaymentAttempt:
    """One try to pay, from a PaymentIntent (e.g. payment_intent.payment_failed).

    When the PaymentIntent carries the charge (expanded `latest_charge`, or `charges.data` before
    API 2022-11-15) the attempt is that charge's. Otherwise the id is `latest_charge` (or
    `last_payment_error.charge`), else the PaymentIntent's id, and `at` (the event time) dates it.
    """
    pi_id = pi.req_str("id")
    lpe = pi.obj("last_payment_error")
    lpe_charge = _ref(lpe, "charge")
    charge = pi.expanded("latest_charge")
    if charge is None:
        for candidate in pi.items("charges"):
            if lpe_charge is None or candidate.opt_str("id") == lpe_charge:
                charge = candidate
                break
    if charge is not None:
        return charge_attempt(charge, pi=pi, invoice_id=invoice_id)
    status = pi.opt_str("status")
    outcome = "succeeded" if status == "succeeded" else "failed" if lpe is not None else "pending"
    pm = _expanded(lpe, "payment_method")
    pm_card = _obj(pm, "card")
    card = card_info(pm_card) if pm_card is not None else None
    return build(
        PaymentAttempt,
        pi.path,
        platform=PLATFORM,
        id=pi.ref("latest_charge") or lpe_charge or pi_id,
        invoice_id=invoice_id or pi.ref("invoice"),
        customer_id=pi.ref("customer") or pi.opt_str("customer_account"),
        payment_intent_id=pi_id,
        amount=pi.req_int("amount"),
        currency=pi.currency(),
        attempted_at=at or pi.req_ts("created"),
        outcome=outcome,
        decline=(
            decline(charge=None, lpe=lpe, network=card.brand if card else None)
            if outcome == "failed"
            else None
        ),
        card=card,
        payment_method_id=_ref(lpe, "payment_method") or pi.ref("payment_method"),
        gateway=PLATFORM,
    )


# ---------------------------------------------------------------------------------------------
# invoices

_INVOICE_STATUSES = {s.value for s in InvoiceStatus}
_PAYMENT_RANK = {"paid": 2, "open": 1}


def _invoice_subscription(r: Reader) -> str | None:
    sid = r.ref("subscription")  # before basil
    parent = r.obj("parent")  # basil and later
    details = _obj(parent, "subscription_details")
    if not sid and details is not None:
        sid = details.ref("subscription")
    line = r.first("lines")
    if not sid and line is not None:
        line_parent = line.obj("parent")
        item = _obj(line_parent, "subscription_item_details")
        sid = _ref(item, "subscription") or line.ref("subscription")
    return sid


def _line_plan_name(line: Reader) -> str | None:
    pricing = line.obj("pricing")  # basil and later
    details = _obj(pricing, "price_details")
    prices = (
        _expanded(details, "price"),
        line.expanded("price"),
        line.expanded("plan"),
    )
    for price in prices:
        if price is None:
            continue
        product = price.expanded("product")
        name = price.opt_str("nickname") or _str(product, "name")
        if name:
            return name
    return line.opt_str("description")


def _current_payment(r: Reader) -> Reader | None:
    """The InvoicePayment that matters: the paid one, else the open one, newest first."""
    payments = r.items("payments")
    if not payments:
        return None
    return max(
        payments, key=lambda p: (_PAYMENT_RANK.get(p.opt_str("status") or "", 0), p.opt_int("created") or 0)
    )


def invoice_parts(r: Reader, *, upcoming: bool = False) -> tuple[Invoice, PaymentAttempt | None]:
    """The canonical invoice, plus the attempt when the payload carries the charge or PaymentIntent."""
    customer_id = r.ref("customer") or r.opt_str("customer_account")
    subscription_id = _invoice_subscription(r)
    if upcoming:  # a preview has no id of its own: never let it overwrite a real invoice
        owner = subscription_id or customer_id
        if owner is None:
            raise reject(r.path, "an upcoming invoice needs a subscription or a customer")
        invoice_id, status = f"upcoming:{owner}", InvoiceStatus.draft
    else:
        invoice_id = r.req_str("id")
        raw_status = r.req_str("status")
        if raw_status not in _INVOICE_STATUSES:
            raise reject(r.at("status"), f"expected one of {', '.join(sorted(_INVOICE_STATUSES))}")
        status = InvoiceStatus(raw_status)

    charge_id, charge = r.ref("charge"), r.expanded("charge")  # before basil
    pi_id, pi = r.ref("payment_intent"), r.expanded("payment_intent")
    payment = _current_payment(r)  # basil and later
    pay = _obj(payment, "payment")
    if pay is not None:
        pi_id, pi = pi_id or pay.ref("payment_intent"), pi or pay.expanded("payment_intent")
        charge_id, charge = charge_id or pay.ref("charge"), charge or pay.expanded("charge")
    if pi is not None:
        charge_id, charge = charge_id or pi.ref("latest_charge"), charge or pi.expanded("latest_charge")

    attempt: PaymentAttempt | None = None  # a preview has no payment
    if charge is not None and not upcoming:
        attempt = charge_attempt(charge, pi=pi, invoice_id=invoice_id)
    elif (
        pi is not None
        and not upcoming
        and (pi.has("last_payment_error") or pi.opt_str("status") == "succeeded")
    ):
        attempt = payment_intent_attempt(pi, invoice_id=invoice_id)
    if attempt is not None and attempt.id != pi_id:
        charge_id = charge_id or attempt.id

    amount_due = r.req_int("amount_due")
    amount_paid = r.opt_int("amount_paid") or 0
    remaining = r.opt_int("amount_remaining")
    line = r.first("lines")
    invoice = build(
        Invoice,
        r.path,
        platform=PLATFORM,
        id=invoice_id,
        customer_id=customer_id,
        subscription_id=subscription_id,
        number=r.opt_str("number"),
        status=status,
        currency=r.currency(),
        amount_due=amount_due,
        amount_paid=amount_paid,
        amount_remaining=max(amount_due - amount_paid, 0) if remaining is None else remaining,
        attempt_count=r.opt_int("attempt_count") or 0,
        next_payment_attempt=r.opt_ts("next_payment_attempt"),
        auto_advance=r.opt_bool("auto_advance"),
        created_at=r.opt_ts("created"),
        due_date=r.opt_ts("due_date"),
        period_start=r.opt_ts("period_start"),
        period_end=r.opt_ts("period_end"),
        hosted_invoice_url=r.opt_str("hosted_invoice_url"),
        billing_reason=r.opt_str("billing_reason"),
        plan_name=_line_plan_name(line) if line is not None else None,
        latest_attempt_id=charge_id,
        payment_intent_id=pi_id,
        metadata=r.metadata(),
    )
    return invoice, attempt


# ---------------------------------------------------------------------------------------------
# subscriptions, customers, payment methods


def _unit_amount(item: Reader) -> tuple[int | None, str | None]:
    """(unit amount, currency) of a subscription item; no amount when it is billed on usage."""
    price, plan = item.expanded("price"), item.expanded("plan")
    if price is not None:
        recurring = price.obj("recurring")
        metered = recurring is not None and recurring.opt_str("usage_type") == "metered"
        return (None if metered else price.opt_int("unit_amount")), price.currency(required=False)
    if plan is not None:
        metered = plan.opt_str("usage_type") == "metered"
        return (None if metered else plan.opt_int("amount")), plan.currency(required=False)
    return None, None


def subscription(r: Reader) -> Subscription:
    # Very old API versions have no items, only a top-level plan and quantity: read it as one item.
    items = r.items("items") or ([r] if r.has("plan") else [])
    first = items[0] if items else None
    price = _expanded(first, "price")
    plan = _expanded(first, "plan")
    named = price or plan
    recurring = _obj(price, "recurring")
    product = _expanded(named, "product")

    currency = r.currency(required=False)
    amount: int | None = 0 if items else None
    for item in items:
        unit, item_currency = _unit_amount(item)
        currency = currency or item_currency
        if item_currency not in (None, currency):
            continue  # Stripe bills one currency per subscription; never add another one in
        quantity = item.opt_int("quantity")
        if unit is None or amount is None:
            amount = None
        else:
            amount += unit * (1 if quantity is None else quantity)

    status = r.req_str("status")
    return build(
        Subscription,
        r.path,
        platform=PLATFORM,
        id=r.req_str("id"),
        customer_id=r.ref("customer") or r.opt_str("customer_account"),
        status=status,
        plan_id=_str(named, "id"),
        plan_name=_str(price, "nickname") or _str(plan, "nickname") or _str(product, "name"),
        amount=amount,
        currency=currency,
        interval=_str(recurring, "interval") or _str(plan, "interval"),
        current_period_end=r.opt_ts("current_period_end")  # before basil
        or (first.opt_ts("current_period_end") if first is not None else None),
        cancel_at_period_end=bool(r.opt_bool("cancel_at_period_end")),
        paused=r.obj("pause_collection") is not None or status == "paused",
        created_at=r.opt_ts("created"),
    )


def customer(r: Reader) -> Customer:
    address = r.obj("address")
    settings = r.obj("invoice_settings")
    default_pm = _ref(settings, "default_payment_method")
    return build(
        Customer,
        r.path,
        platform=PLATFORM,
        id=r.req_str("id"),
        email=r.opt_str("email"),
        phone=r.opt_str("phone"),
        name=r.opt_str("name"),
        created_at=r.opt_ts("created"),
        country=_str(address, "country"),
        default_payment_method_id=default_pm or r.ref("default_source"),
        metadata=r.metadata(),
    )


def payment_method(r: Reader) -> PaymentMethod:
    """A PaymentMethod, or a legacy Card / Source / BankAccount (customer.source.* events)."""
    kind = r.opt_str("object") or "payment_method"
    card: CardInfo | None = None
    if kind in ("payment_method", "source"):
        pm_type = r.req_str("type")
        raw_card = r.obj("card") if pm_type == "card" else None
        card = card_info(raw_card) if raw_card is not None else None
    elif kind == "card":
        pm_type, card = "card", card_info(r)
    elif kind == "bank_account":
        pm_type = "bank_account"
    else:
        raise reject(r.at("object"), f"expected a payment_method, card, source or bank_account, got {kind!r}")
    return build(
        PaymentMethod,
        r.path,
        platform=PLATFORM,
        id=r.req_str("id"),
        customer_id=r.ref("customer"),
        type=pm_type,
        card=card,
        created_at=r.opt_ts("created"),
    )
