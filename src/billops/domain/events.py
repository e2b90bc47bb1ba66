"""The canonical event: what happened, on which platform, to which billing objects."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from billops.domain.billing import Customer, Invoice, PaymentAttempt, PaymentMethod, Subscription, _utc


class EventKind(StrEnum):
    payment_failed = "payment_failed"  # an attempt to pay an invoice (or a charge) failed
    payment_succeeded = "payment_succeeded"
    payment_action_required = "payment_action_required"  # e.g. 3-D Secure
    invoice_created = "invoice_created"
    invoice_finalized = "invoice_finalized"
    invoice_paid = "invoice_paid"
    invoice_upcoming = "invoice_upcoming"
    invoice_uncollectible = "invoice_uncollectible"
    invoice_voided = "invoice_voided"
    subscription_created = "subscription_created"
    subscription_updated = "subscription_updated"
    subscription_canceled = "subscription_canceled"
    subscription_paused = "subscription_paused"
    subscription_resumed = "subscription_resumed"
    trial_will_end = "trial_will_end"
    payment_method_updated = "payment_method_updated"
    card_expiring = "card_expiring"
    customer_updated = "customer_updated"
    other = "other"  # stored and mirrored where possible, starts no decision


class CanonicalEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: str
    event_id: str
    event_type: str = Field(description="The platform's own type string, e.g. invoice.payment_failed.")
    kind: EventKind
    occurred_at: datetime
    livemode: bool = False
    api_version: str | None = None
    customer: Customer | None = None
    subscription: Subscription | None = None
    invoice: Invoice | None = None
    attempt: PaymentAttempt | None = None
    payment_method: PaymentMethod | None = None
    previous: dict[str, Any] = Field(default_factory=dict, description="Changed fields' old values, if sent.")

    _v = field_validator("occurred_at")(_utc)

    @property
    def starts_recovery(self) -> bool:
        """A failed payment on an invoice that is still open starts (or joins) a recovery."""
        return (
            self.kind == EventKind.payment_failed
            and self.invoice is not None
            and self.invoice.status.value == "open"
        )

    @property
    def customer_id(self) -> str | None:
        for obj in (self.customer, self.invoice, self.attempt, self.subscription, self.payment_method):
            if obj is None:
                continue
            cid = obj.id if isinstance(obj, Customer) else obj.customer_id
            if cid:
                return cid
        return None
