"""The platform-independent model: billing objects, canonical events, money and the decline taxonomy."""

from billops.domain.billing import (
    CardInfo,
    Customer,
    Decline,
    DeclineCategory,
    Invoice,
    InvoiceStatus,
    Money,
    PaymentAttempt,
    PaymentMethod,
    Subscription,
)
from billops.domain.events import CanonicalEvent, EventKind

__all__ = [
    "CanonicalEvent",
    "CardInfo",
    "Customer",
    "Decline",
    "DeclineCategory",
    "EventKind",
    "Invoice",
    "InvoiceStatus",
    "Money",
    "PaymentAttempt",
    "PaymentMethod",
    "Subscription",
]
