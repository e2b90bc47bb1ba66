"""Stripe webhook events and API objects -> canonical events and billing objects.

`normalize_event` takes the parsed event envelope
``{id, object: "event", api_version, created, data: {object, previous_attributes?}, livemode, type}``
and returns a `CanonicalEvent`. Whatever JSON value it is given, it either returns or raises
`WebhookRejected`: status 422 with a message naming the bad field
(``data.object.amount_due: expected an integer, got string``) when the JSON is not a valid Stripe
event. The object functions (`stripe_invoice`, …) take a webhook's ``data.object`` or an SDK
object's ``to_dict()`` (same shape) and raise the same 422 errors, with the object type as the
path prefix (``invoice.amount_due: …``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billops.domain.billing import Customer, Invoice, PaymentAttempt, PaymentMethod, Subscription
from billops.domain.events import CanonicalEvent, EventKind
from billops.errors import WebhookRejected
from billops.platforms.reader import Reader, build, envelope, envelope_str, reject
from billops.platforms.stripe import objects as o
from billops.platforms.stripe.objects import PLATFORM

__all__ = [
    "EVENT_KINDS",
    "PLATFORM",
    "normalize_event",
    "stripe_charge_attempt",
    "stripe_customer",
    "stripe_invoice",
    "stripe_payment_intent_attempt",
    "stripe_payment_method",
    "stripe_subscription",
]


# ---------------------------------------------------------------------------------------------
# object functions (webhook data.object or SDK `obj.to_dict()`)


def stripe_customer(obj: dict[str, Any]) -> Customer:
    return o.customer(Reader.of(obj, "customer"))


def stripe_subscription(obj: dict[str, Any]) -> Subscription:
    return o.subscription(Reader.of(obj, "subscription"))


def stripe_invoice(obj: dict[str, Any], *, upcoming: bool = False) -> Invoice:
    """An invoice of either API generation. `upcoming=True` for a preview (no id of its own): it
    gets the synthetic id ``upcoming:{subscription or customer}`` and status draft."""
    return o.invoice_parts(Reader.of(obj, "invoice"), upcoming=upcoming)[0]


def stripe_charge_attempt(obj: dict[str, Any]) -> PaymentAttempt:
    """A Charge (succeeded, pending or failed) as one payment attempt, its decline classified."""
    return o.charge_attempt(Reader.of(obj, "charge"))


def stripe_payment_intent_attempt(obj: dict[str, Any]) -> PaymentAttempt:
    """A PaymentIntent's latest try (its `last_payment_error` when it failed) as a payment attempt."""
    return o.payment_intent_attempt(Reader.of(obj, "payment_intent"))


def stripe_payment_method(obj: dict[str, Any]) -> PaymentMethod:
    """A PaymentMethod, or a legacy card / source as sent in customer.source.* events."""
    return o.payment_method(Reader.of(obj, "payment_method"))


# ---------------------------------------------------------------------------------------------
# events


@dataclass
class _Objects:
    customer: Customer | None = None
    subscription: Subscription | None = None
    invoice: Invoice | None = None
    attempt: PaymentAttempt | None = None
    payment_method: PaymentMethod | None = None


def _invoice_objects(r: Reader, event_type: str, at: datetime) -> _Objects:
    invoice, attempt = o.invoice_parts(r, upcoming=event_type == "invoice.upcoming")
    if attempt is not None and invoice.latest_attempt_id is None:
        invoice.latest_attempt_id = attempt.id
    return _Objects(invoice=invoice, attempt=attempt)


def _charge_objects(r: Reader, event_type: str, at: datetime) -> _Objects:
    return _Objects(attempt=o.charge_attempt(r))


def _payment_intent_objects(r: Reader, event_type: str, at: datetime) -> _Objects:
    # Without the charge in the payload, the event time is when this try happened.
    return _Objects(attempt=o.payment_intent_attempt(r, at=at))


def _subscription_objects(r: Reader, event_type: str, at: datetime) -> _Objects:
    return _Objects(subscription=o.subscription(r))


def _customer_objects(r: Reader, event_type: str, at: datetime) -> _Objects:
    return _Objects(customer=o.customer(r))


def _payment_method_objects(r: Reader, event_type: str, at: datetime) -> _Objects:
    return _Objects(payment_method=o.payment_method(r))


_Extract = Callable[[Reader, str, datetime], _Objects]

# family -> (accepted `data.object.object` values, extractor)
_FAMILIES: dict[str, tuple[frozenset[str], _Extract]] = {
    "invoice": (frozenset({"invoice"}), _invoice_objects),
    "charge": (frozenset({"charge"}), _charge_objects),
    "payment_intent": (frozenset({"payment_intent"}), _payment_intent_objects),
    "subscription": (frozenset({"subscription"}), _subscription_objects),
    "customer": (frozenset({"customer"}), _customer_objects),
    "payment_method": (
        frozenset({"payment_method", "card", "source", "bank_account"}),
        _payment_method_objects,
    ),
}

# Stripe event type -> (canonical kind, object family)
EVENT_KINDS: dict[str, tuple[EventKind, str]] = {
    "invoice.payment_failed": (EventKind.payment_failed, "invoice"),
    "invoice.paid": (EventKind.invoice_paid, "invoice"),
    "invoice.payment_succeeded": (EventKind.invoice_paid, "invoice"),
    "invoice.created": (EventKind.invoice_created, "invoice"),
    "invoice.finalized": (EventKind.invoice_finalized, "invoice"),
    "invoice.payment_action_required": (EventKind.payment_action_required, "invoice"),
    "invoice.upcoming": (EventKind.invoice_upcoming, "invoice"),
    "invoice.marked_uncollectible": (EventKind.invoice_uncollectible, "invoice"),
    "invoice.voided": (EventKind.invoice_voided, "invoice"),
    "charge.failed": (EventKind.payment_failed, "charge"),
    "charge.succeeded": (EventKind.payment_succeeded, "charge"),
    "payment_intent.payment_failed": (EventKind.payment_failed, "payment_intent"),
    "payment_intent.succeeded": (EventKind.payment_succeeded, "payment_intent"),
    "customer.subscription.created": (EventKind.subscription_created, "subscription"),
    "customer.subscription.updated": (EventKind.subscription_updated, "subscription"),
    "customer.subscription.deleted": (EventKind.subscription_canceled, "subscription"),
    "customer.subscription.paused": (EventKind.subscription_paused, "subscription"),
    "customer.subscription.resumed": (EventKind.subscription_resumed, "subscription"),
    "customer.subscription.trial_will_end": (EventKind.trial_will_end, "subscription"),
    "payment_method.attached": (EventKind.payment_method_updated, "payment_method"),
    "payment_method.updated": (EventKind.payment_method_updated, "payment_method"),
    "payment_method.automatically_updated": (EventKind.payment_method_updated, "payment_method"),
    "payment_method.detached": (EventKind.payment_method_updated, "payment_method"),
    "customer.source.updated": (EventKind.payment_method_updated, "payment_method"),
    "customer.source.expiring": (EventKind.card_expiring, "payment_method"),
    "customer.created": (EventKind.customer_updated, "customer"),
    "customer.updated": (EventKind.customer_updated, "customer"),
}

# For event types outside EVENT_KINDS: what `data.object.object` can safely give (kind "other").
_OTHER_FAMILIES = {
    "invoice": "invoice",
    "charge": "charge",
    "subscription": "subscription",
    "customer": "customer",
    "payment_method": "payment_method",
    "card": "payment_method",
    "source": "payment_method",
}


def normalize_event(payload: Any) -> CanonicalEvent:
    """A parsed Stripe event -> CanonicalEvent. Raises only `WebhookRejected` (422: not a valid event)."""
    env = envelope(payload, "event", object_type="event")  # fields named bare: `id`, `data.object.amount_due`
    event_id = envelope_str(env, "id")
    event_type = envelope_str(env, "type")
    occurred_at = env.req_ts("created")
    livemode = env.opt_bool("livemode")
    api_version = env.opt_str("api_version")
    data = env.need("data", env.obj("data"))
    obj = data.need("object", data.obj("object"))
    previous = data.metadata("previous_attributes")
    object_type = obj.opt_str("object")

    objects = _Objects()
    mapped = EVENT_KINDS.get(event_type)
    if mapped is not None:
        kind, family = mapped
        accepted, extract = _FAMILIES[family]
        if object_type is not None and object_type not in accepted:
            raise reject(
                "data.object.object",
                f"a {event_type} event carries {' or '.join(sorted(accepted))}, got {object_type!r}",
            )
        objects = extract(obj, event_type, occurred_at)
    else:
        kind = EventKind.other
        other_family = _OTHER_FAMILIES.get(object_type or "")
        if other_family is not None:
            try:  # best effort: an event we do not act on is never rejected for its object
                objects = _FAMILIES[other_family][1](obj, event_type, occurred_at)
            except WebhookRejected:
                objects = _Objects()

    pm = objects.payment_method
    if pm is not None and pm.customer_id is None and event_type == "payment_method.detached":
        old_customer = previous.get("customer")  # detaching clears `customer`; the old one is here
        if isinstance(old_customer, str) and old_customer:
            pm.customer_id = old_customer

    return build(
        CanonicalEvent,
        "event",
        platform=PLATFORM,
        event_id=event_id,
        event_type=event_type,
        kind=kind,
        occurred_at=occurred_at,
        livemode=bool(livemode),
        api_version=api_version,
        customer=objects.customer,
        subscription=objects.subscription,
        invoice=objects.invoice,
        attempt=objects.attempt,
        payment_method=objects.payment_method,
        previous=previous,
    )
