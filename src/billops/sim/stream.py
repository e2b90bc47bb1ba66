"""Render a simulated business as the Stripe webhook events it would produce, in the current API shape.

The shapes follow the stripe-python 16 SDK (API `stripe.api_version`): an Invoice has no `charge` or
`payment_intent` but a `payments` list of InvoicePayment objects, its subscription sits at
`parent.subscription_details.subscription`, a subscription's current period lives on its items, and a
Charge carries `outcome`, `failure_code` and `payment_method_details.card`. Event ids are derived from the
seed and what the event is about, so the same business always yields the same ids.

`sign()` produces a `Stripe-Signature` header with the official SDK.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import stripe

from billops.sim.business import (
    Business,
    Card,
    Customer,
    DeclineSpec,
    Happening,
    Invoice,
    Subscription,
    generate_business,
    make_id,
)

API_VERSION: str = stripe.api_version
ACCOUNT_ID = "acct_1BillopsSimDemo0"
ACCOUNT_NAME = "Acme Cloud"
STATEMENT_DESCRIPTOR = "ACME CLOUD"

MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again in a little bit.",
    "card_velocity_exceeded": "Your card was declined for making repeated attempts too frequently or "
    "exceeding its amount limit.",
    "authentication_required": "Your card was declined. This transaction requires authentication.",
}


def ts(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp())


# Fields that are always null in this simulation, per object (kept apart so the builders stay readable).
_NULL_CUSTOMER = "default_source description discount phone shipping test_clock"
_NULL_SUBSCRIPTION = (
    "application cancel_at canceled_at days_until_due description ended_at pause_collection "
    "trial_end trial_start"
)
_NULL_INVOICE = (
    "account_tax_ids application custom_fields customer_phone customer_shipping "
    "default_payment_method default_source description due_date footer from_invoice "
    "last_finalization_error latest_revision on_behalf_of receipt_number rendering shipping_cost "
    "shipping_details statement_descriptor test_clock"
)
_NULL_CHARGE = (
    "application application_fee application_fee_amount failure_balance_transaction on_behalf_of "
    "receipt_email receipt_number review shipping source source_transfer statement_descriptor "
    "statement_descriptor_suffix transfer_data transfer_group"
)
_NULL_PAYMENT_INTENT = (
    "application application_fee_amount automatic_payment_methods canceled_at cancellation_reason "
    "client_secret next_action on_behalf_of payment_method_configuration_details processing "
    "receipt_email review shipping source statement_descriptor statement_descriptor_suffix "
    "transfer_data transfer_group"
)


def _nulls(keys: str) -> dict[str, None]:
    return dict.fromkeys(keys.split())


def _list(data: list[dict[str, Any]], url: str) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": False, "total_count": len(data), "url": url}


def _address(country: str) -> dict[str, Any]:
    keys = ("city", "line1", "line2", "postal_code", "state")
    return {"country": country, **dict.fromkeys(keys)}


def customer_obj(c: Customer, default_pm: str | None, next_seq: int = 1) -> dict[str, Any]:
    return {
        "id": c.id,
        "object": "customer",
        "address": _address(c.country),
        "balance": 0,
        "created": ts(c.created),
        "currency": c.currency,
        "delinquent": False,
        "email": c.email,
        "invoice_prefix": c.invoice_prefix,
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": default_pm,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {"timezone": c.timezone},
        "name": c.name,
        "next_invoice_sequence": next_seq,
        "preferred_locales": ["en"],
        "tax_exempt": "none",
        **_nulls(_NULL_CUSTOMER),
    }


def card_details(card: Card) -> dict[str, Any]:
    """The `card` hash shared by PaymentMethod and Charge.payment_method_details."""
    keys = ("brand", "country", "exp_month", "exp_year", "fingerprint", "funding", "last4")
    return {k: getattr(card, k) for k in keys}


def payment_method_obj(card: Card, c: Customer) -> dict[str, Any]:
    return {
        "id": card.id,
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {"address": _address(c.country), "email": c.email, "name": c.name, "phone": None},
        "card": {
            **card_details(card),
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
            "display_brand": card.brand,
            "generated_from": None,
            "networks": {"available": [card.brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        },
        "created": ts(card.created),
        "customer": c.id,
        "livemode": False,
        "metadata": {},
        "type": "card",
    }


def subscription_obj(
    sub: Subscription, at: datetime, status: str, default_pm: str | None, latest_invoice: str | None
) -> dict[str, Any]:
    k = 0
    while sub.renewal(k + 1) <= at:
        k += 1
    plan = sub.plan
    price = {
        "id": plan.price_id,
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": ts(sub.start),
        "currency": plan.currency,
        "livemode": False,
        "lookup_key": f"{plan.name.lower()}_{plan.interval}ly_{plan.currency}",
        "metadata": {},
        "nickname": f"{plan.name} ({plan.interval}ly)",
        "product": plan.product_id,
        "recurring": {
            "interval": plan.interval,
            "interval_count": 1,
            "usage_type": "licensed",
            "meter": None,
        },
        "tax_behavior": "unspecified",
        "type": "recurring",
        "unit_amount": plan.amount,
        "unit_amount_decimal": str(plan.amount),
    }
    item = {
        "id": sub.item_id,
        "object": "subscription_item",
        "created": ts(sub.start),
        "current_period_end": ts(sub.renewal(k + 1)),
        "current_period_start": ts(sub.renewal(k)),
        "discounts": [],
        "metadata": {},
        "price": price,
        "quantity": 1,
        "subscription": sub.id,
        "tax_rates": [],
    }
    return {
        "id": sub.id,
        "object": "subscription",
        "automatic_tax": {"enabled": False, "liability": None},
        "billing_cycle_anchor": ts(sub.start),
        "billing_mode": {"type": "flexible"},
        "cancel_at_period_end": False,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": ts(sub.start),
        "currency": plan.currency,
        "customer": sub.customer.id,
        "default_payment_method": default_pm,
        "discounts": [],
        "items": _list([item], f"/v1/subscription_items?subscription={sub.id}"),
        "latest_invoice": latest_invoice,
        "livemode": False,
        "metadata": {},
        "start_date": ts(sub.start),
        "status": status,
        **_nulls(_NULL_SUBSCRIPTION),
    }


def invoice_obj(inv: Invoice, state: str, index: int = -1) -> dict[str, Any]:
    """The invoice as `draft`, `open` (finalized, not yet tried) or after attempt `index` (`attempted`)."""
    sub, c, amount = inv.subscription, inv.customer, inv.amount
    paid = state == "attempted" and inv.attempts[index].succeeded
    status = "draft" if state == "draft" else "paid" if paid else "open"
    if state == "draft":
        next_try: datetime | None = inv.finalized
    elif state == "open":
        next_try = inv.attempts[0].at if inv.attempts else None
    else:
        next_try = None if paid else inv.next_attempts[index]
    paid_at = ts(inv.attempts[index].at) if paid else None
    payments = []
    if state != "draft":
        payments.append(
            {
                "id": inv.invoice_payment_id,
                "object": "invoice_payment",
                "amount_paid": amount if paid else None,
                "amount_requested": amount,
                "created": ts(inv.finalized),
                "currency": inv.currency,
                "invoice": inv.id,
                "is_default": True,
                "livemode": False,
                "payment": {"type": "payment_intent", "payment_intent": inv.payment_intent_id},
                "status": "paid" if paid else "open",
                "status_transitions": {"canceled_at": None, "paid_at": paid_at},
            }
        )
    plan = sub.plan
    major = f"{plan.amount // 100:,}.{plan.amount % 100:02d}"
    line = {
        "id": make_id("il", inv.id, "line"),
        "object": "line_item",
        "amount": amount,
        "currency": inv.currency,
        "description": f"1 × {plan.name} (at {major} {plan.currency.upper()} / {plan.interval})",
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": inv.id,
        "livemode": False,
        "metadata": {},
        "parent": {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": sub.id,
                "subscription_item": sub.item_id,
            },
        },
        "period": {"start": ts(inv.period[0]), "end": ts(inv.period[1])},
        "pretax_credit_amounts": [],
        "pricing": {
            "type": "price_details",
            "price_details": {"price": plan.price_id, "product": plan.product_id},
            "unit_amount_decimal": str(plan.amount),
        },
        "quantity": 1,
        "subtotal": amount,
        "taxes": [],
    }
    # A renewal invoice's own period is the period just ended; a signup invoice's is the signup instant.
    prev_start = (
        inv.period[0] if inv.billing_reason == "subscription_create" else _previous(sub, inv.period[0])
    )
    token = make_id("test", inv.id, "hosted", length=40)[5:]
    return {
        "id": inv.id,
        "object": "invoice",
        "account_country": "US",
        "account_name": ACCOUNT_NAME,
        "amount_due": amount,
        "amount_overpaid": 0,
        "amount_paid": amount if paid else 0,
        "amount_remaining": 0 if paid else amount,
        "amount_shipping": 0,
        "attempt_count": index + 1 if state == "attempted" else 0,
        "attempted": state == "attempted",
        "auto_advance": not paid,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "automatically_finalizes_at": ts(inv.finalized) if state == "draft" else None,
        "billing_reason": inv.billing_reason,
        "collection_method": "charge_automatically",
        "created": ts(inv.created),
        "currency": inv.currency,
        "customer": c.id,
        "customer_address": _address(c.country),
        "customer_email": c.email,
        "customer_name": c.name,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_tax_rates": [],
        "discounts": [],
        "effective_at": None if state == "draft" else ts(inv.finalized),
        "ending_balance": None if state == "draft" else 0,
        "hosted_invoice_url": None
        if state == "draft"
        else f"https://invoice.stripe.com/i/{ACCOUNT_ID}/{token}",
        "invoice_pdf": None
        if state == "draft"
        else f"https://pay.stripe.com/invoice/{ACCOUNT_ID}/{token}/pdf",
        "issuer": {"type": "self"},
        "lines": _list([line], f"/v1/invoices/{inv.id}/lines"),
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": ts(next_try),
        "number": None if state == "draft" else inv.number,
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": sub.id},
        },
        "payment_settings": {
            **_nulls("default_mandate payment_method_options payment_method_types"),
        },
        "payments": _list(payments, f"/v1/invoice_payments?invoice={inv.id}"),
        "period_end": ts(inv.period[0]),
        "period_start": ts(prev_start),
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "starting_balance": 0,
        "status": status,
        "status_transitions": {
            "finalized_at": None if state == "draft" else ts(inv.finalized),
            "marked_uncollectible_at": None,
            "paid_at": paid_at,
            "voided_at": None,
        },
        "subtotal": amount,
        "subtotal_excluding_tax": amount,
        "total": amount,
        "total_discount_amounts": [],
        "total_excluding_tax": amount,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": None if state == "draft" else ts(inv.created),
        **_nulls(_NULL_INVOICE),
    }


def _previous(sub: Subscription, renewal: datetime) -> datetime:
    k = 0
    while sub.renewal(k + 1) < renewal:
        k += 1
    return sub.renewal(k)


def _description(inv: Invoice) -> str:
    return "Subscription creation" if inv.billing_reason == "subscription_create" else "Subscription update"


def _outcome(d: DeclineSpec | None, risk_score: int) -> dict[str, Any]:
    if d is None:
        return {
            **_nulls("advice_code network_advice_code network_decline_code"),
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "risk_score": risk_score,
            "seller_message": "Payment complete.",
            "type": "authorized",
        }
    seller = (
        "The bank did not return any further details with this decline."
        if d.code == "generic_decline"
        else f"The bank returned the decline code `{d.code}`."
    )
    return {
        "advice_code": d.advice_code,
        "network_advice_code": d.network_advice_code,
        "network_decline_code": d.network_decline_code,
        "network_status": "declined_by_network",
        "reason": d.code,
        "risk_level": d.risk_level,
        "risk_score": risk_score + (40 if d.risk_level == "elevated" else 0),
        "seller_message": seller,
        "type": "issuer_declined",
    }


def charge_obj(inv: Invoice, index: int) -> dict[str, Any]:
    a, c, amount = inv.attempts[index], inv.customer, inv.amount
    d, ok = a.decline, a.succeeded
    risk_score = int(a.at.timestamp()) % 30 + 5
    return {
        "id": a.id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount if ok else 0,
        "amount_refunded": 0,
        "authorization_code": f"{int(a.at.timestamp()) % 1_000_000:06d}" if ok else None,
        "balance_transaction": make_id("txn", a.id) if ok else None,
        "billing_details": {"address": _address(c.country), "email": c.email, "name": c.name, "phone": None},
        "calculated_statement_descriptor": STATEMENT_DESCRIPTOR,
        "captured": ok,
        "created": ts(a.at),
        "currency": inv.currency,
        "customer": c.id,
        "description": _description(inv),
        "disputed": False,
        "failure_code": None if d is None else d.failure_code,
        "failure_message": None if d is None else MESSAGES.get(d.code, "Your card was declined."),
        "fraud_details": {},
        "livemode": False,
        "metadata": {},
        "outcome": _outcome(d, risk_score),
        "paid": ok,
        "payment_intent": inv.payment_intent_id,
        "payment_method": a.card.id,
        "payment_method_details": {
            "type": "card",
            "card": {
                **card_details(a.card),
                "amount_authorized": amount if ok else None,
                "checks": {
                    "address_line1_check": None,
                    "address_postal_code_check": None,
                    "cvc_check": "fail" if d is not None and d.code == "incorrect_cvc" else "pass",
                },
                "network": a.card.brand,
                "network_transaction_id": make_id("", a.id, "ntid", length=15)[1:] if ok else None,
                "three_d_secure": None,
                "wallet": None,
            },
        },
        "radar_options": {},
        "receipt_url": f"https://pay.stripe.com/receipts/invoices/{make_id('r', a.id, length=32)[2:]}",
        "refunded": False,
        "status": "succeeded" if ok else "failed",
        **_nulls(_NULL_CHARGE),
    }


def payment_intent_obj(inv: Invoice, index: int) -> dict[str, Any]:
    a, c = inv.attempts[index], inv.customer
    d = a.decline
    error = None
    if d is not None:
        error = {
            "advice_code": d.advice_code,
            "charge": a.id,
            "code": d.failure_code,
            "decline_code": d.code,
            "doc_url": f"https://docs.stripe.com/error-codes/{d.failure_code.replace('_', '-')}",
            "message": MESSAGES.get(d.code, "Your card was declined."),
            "network_advice_code": d.network_advice_code,
            "network_decline_code": d.network_decline_code,
            "param": None,
            "payment_method": payment_method_obj(a.card, c),
            "type": "card_error",
        }
    return {
        "id": inv.payment_intent_id,
        "object": "payment_intent",
        "amount": inv.amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": inv.amount if d is None else 0,
        "capture_method": "automatic",
        "confirmation_method": "automatic",
        "created": ts(inv.finalized),
        "currency": inv.currency,
        "customer": c.id,
        "description": _description(inv),
        "last_payment_error": error,
        "latest_charge": a.id,
        "livemode": False,
        "metadata": {},
        "payment_method": a.card.id if d is None else None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "setup_future_usage": "off_session",
        "status": "succeeded" if d is None else "requires_payment_method",
        **_nulls(_NULL_PAYMENT_INTENT),
    }


class _Renderer:
    """Walks the happenings in order, keeping what Stripe would know (default card, latest invoice)."""

    def __init__(self, business: Business) -> None:
        self.b = business
        self.events: list[dict[str, Any]] = []
        self.default_card: dict[str, Card] = {}
        self.latest_invoice: dict[str, str] = {}
        self.status: dict[str, str] = {}

    def emit(
        self, type_: str, obj: dict[str, Any], at: datetime, key: object, prev: dict | None = None
    ) -> None:
        data: dict[str, Any] = {"object": obj}
        if prev is not None:
            data["previous_attributes"] = prev
        self.events.append(
            {
                "id": make_id("evt", self.b.seed, type_, obj["id"], key),
                "object": "event",
                "api_version": API_VERSION,
                "created": ts(at),
                "data": data,
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
                "type": type_,
            }
        )

    def sub(self, s: Subscription, at: datetime) -> dict[str, Any]:
        card = self.default_card.get(s.customer.id)
        return subscription_obj(
            s, at, self.status.get(s.id, "active"), card.id if card else None, self.latest_invoice.get(s.id)
        )

    def render(self, h: Happening) -> None:
        c, s, inv, at = h.customer, h.subscription, h.invoice, h.at
        if h.kind == "signup":
            assert h.card is not None
            self.default_card[c.id] = h.card
            self.emit("customer.created", customer_obj(c, None), at, "created")
            self.emit("payment_method.attached", payment_method_obj(h.card, c), at, "signup")
            self.status[s.id] = "active"
            self.emit("customer.subscription.created", self.sub(s, s.start), s.start, "created")
        elif h.kind == "invoice_created":
            assert inv is not None
            self.latest_invoice[s.id] = inv.id
            self.emit("invoice.created", invoice_obj(inv, "draft"), at, "created")
        elif h.kind == "invoice_finalized":
            assert inv is not None
            self.emit("invoice.finalized", invoice_obj(inv, "open"), at, "finalized")
        elif h.kind == "attempt":
            assert inv is not None
            ok = inv.attempts[h.index].succeeded
            self.emit("charge.succeeded" if ok else "charge.failed", charge_obj(inv, h.index), at, h.index)
            pi_type = "payment_intent.succeeded" if ok else "payment_intent.payment_failed"
            self.emit(pi_type, payment_intent_obj(inv, h.index), at, h.index)
            inv_type = "invoice.paid" if ok else "invoice.payment_failed"
            self.emit(inv_type, invoice_obj(inv, "attempted", h.index), at, h.index)
        elif h.kind == "card_update":
            assert h.card is not None and h.old_card is not None
            old, new = h.old_card, h.card
            self.default_card[c.id] = new
            pm = payment_method_obj(new, c)
            if h.how == "attached":
                self.emit("payment_method.attached", pm, at, ts(at))
                prev = {"invoice_settings": {"default_payment_method": old.id}}
                self.emit("customer.updated", customer_obj(c, new.id), at, ts(at), prev)
            else:
                changed = {
                    k: getattr(old, k)
                    for k in ("exp_month", "exp_year", "last4")
                    if getattr(old, k) != getattr(new, k)
                }
                self.emit(f"payment_method.{h.how}", pm, at, ts(at), {"card": changed})
        elif h.kind == "subscription_status":
            self.status[s.id] = h.status
            prev = {"status": h.previous_status}
            self.emit("customer.subscription.updated", self.sub(s, at), at, f"{h.status}:{ts(at)}", prev)


def build_events(business: Business) -> list[dict[str, Any]]:
    """All webhook events of the business, oldest first (ties keep their causal order)."""
    r = _Renderer(business)
    for h in business.happenings:
        r.render(h)
    return sorted(r.events, key=lambda e: e["created"])  # stable: same-second events keep their order


def generate_events(
    customers: int = 300, days: int = 30, seed: int = 7, now: datetime | None = None
) -> list[dict[str, Any]]:
    return build_events(generate_business(customers=customers, days=days, seed=seed, now=now))


def encode(event: dict[str, Any]) -> bytes:
    """The request body, formatted the way Stripe sends it."""
    return json.dumps(event, indent=2).encode("utf-8")


def sign(payload_bytes: bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header for the body, made by the official SDK (timestamp default: now)."""
    return stripe.WebhookSignature.generate_signature_header(
        payload_bytes.decode("utf-8"), secret, timestamp=timestamp
    )
