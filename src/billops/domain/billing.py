"""Canonical billing objects. Money is integer minor units plus a lowercase ISO 4217 currency;
every datetime is timezone-aware UTC. Ids are the platform's own ids, scoped by `platform`."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Currencies whose minor unit is the major unit (Stripe's list of zero-decimal currencies).
ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


def _utc(v: datetime | None) -> datetime | None:
    if v is None:
        return None
    if v.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return v.astimezone(UTC)


class Money(_Model):
    amount: int = Field(description="Integer minor units (cents), never a float.")
    currency: str = Field(min_length=3, max_length=3)

    @field_validator("currency")
    @classmethod
    def _lower(cls, v: str) -> str:
        if not v.isalpha():
            raise ValueError("currency must be a 3-letter ISO 4217 code")
        return v.lower()

    def format(self) -> str:
        if self.currency in ZERO_DECIMAL:
            return f"{self.amount:,} {self.currency.upper()}"
        sign = "-" if self.amount < 0 else ""
        major, minor = divmod(abs(self.amount), 100)
        return f"{sign}{major:,}.{minor:02d} {self.currency.upper()}"


class DeclineCategory(StrEnum):
    hard = "hard"  # never retry
    soft = "soft"  # retrying may succeed
    needs_new_card = "needs_new_card"  # retry only after new card data
    try_later = "try_later"  # issuer/network asks to wait


class Decline(_Model):
    code: str = Field(description="Canonical decline code (Stripe decline_code vocabulary).")
    category: DeclineCategory
    raw_code: str | None = Field(default=None, description="The platform's own code, as received.")
    message: str | None = None
    advice_code: str | None = Field(default=None, description="Stripe advice_code, when present.")
    network_advice_code: str | None = Field(
        default=None, description="Mastercard MAC or Visa advice, 2 chars."
    )
    network_decline_code: str | None = None
    network: str | None = Field(default=None, description="visa, mastercard, amex, …")
    retry_after_hours: float | None = Field(default=None, description="Network-mandated wait before a retry.")
    never_retry: bool = False
    reason: str = Field(default="", description="Why this category: which rule of the taxonomy matched.")
    taxonomy_version: str = ""


class CardInfo(_Model):
    brand: str | None = None
    funding: str | None = None  # credit, debit, prepaid, unknown
    country: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None
    last4: str | None = None
    fingerprint: str | None = None

    def months_to_expiry(self, at: datetime) -> int | None:
        if not self.exp_month or not self.exp_year:
            return None
        return (self.exp_year - at.year) * 12 + (self.exp_month - at.month)


class Customer(_Model):
    platform: str
    id: str
    source_version: int | None = Field(
        default=None,
        description="The platform's own version of this object (Chargebee resource_version); the mirror "
        "keeps the highest.",
    )
    email: str | None = None
    phone: str | None = Field(default=None, description="E.164 where the platform has it (SMS).")
    name: str | None = None
    created_at: datetime | None = None
    timezone: str | None = None
    country: str | None = None
    default_payment_method_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    _v = field_validator("created_at")(_utc)


class Subscription(_Model):
    platform: str
    id: str
    source_version: int | None = Field(
        default=None,
        description="The platform's own version of this object (Chargebee resource_version); the mirror "
        "keeps the highest.",
    )
    customer_id: str | None = None
    status: str
    plan_id: str | None = None
    plan_name: str | None = None
    amount: int | None = None
    currency: str | None = None
    interval: str | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False
    paused: bool = False
    created_at: datetime | None = None

    _v = field_validator("current_period_end", "created_at")(_utc)


class InvoiceStatus(StrEnum):
    draft = "draft"
    open = "open"
    paid = "paid"
    void = "void"
    uncollectible = "uncollectible"


class Invoice(_Model):
    platform: str
    id: str
    source_version: int | None = Field(
        default=None,
        description="The platform's own version of this object (Chargebee resource_version); the mirror "
        "keeps the highest.",
    )
    customer_id: str | None = None
    subscription_id: str | None = None
    number: str | None = None
    status: InvoiceStatus
    currency: str
    amount_due: int
    amount_paid: int = 0
    amount_remaining: int = 0
    attempt_count: int = 0
    next_payment_attempt: datetime | None = Field(
        default=None, description="When the platform itself will retry; None: it will not."
    )
    auto_advance: bool | None = None
    created_at: datetime | None = None
    due_date: datetime | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    hosted_invoice_url: str | None = None
    billing_reason: str | None = None
    plan_name: str | None = None
    latest_attempt_id: str | None = Field(default=None, description="Charge id of the last try, when known.")
    payment_intent_id: str | None = Field(
        default=None,
        description="The PaymentIntent paying this invoice (old: payment_intent; new: invoice.payments).",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    _v = field_validator("next_payment_attempt", "created_at", "due_date", "period_start", "period_end")(_utc)

    @property
    def money_due(self) -> Money:
        return Money(amount=self.amount_remaining or self.amount_due, currency=self.currency)


class PaymentAttempt(_Model):
    platform: str
    id: str
    source_version: int | None = Field(
        default=None,
        description="The platform's own version of this object (Chargebee resource_version); the mirror "
        "keeps the highest.",
    )
    invoice_id: str | None = None
    customer_id: str | None = None
    payment_intent_id: str | None = None
    amount: int
    currency: str
    attempted_at: datetime
    outcome: str = Field(pattern="^(succeeded|failed|pending)$")
    decline: Decline | None = None
    card: CardInfo | None = None
    payment_method_id: str | None = None
    gateway: str | None = None
    initiated_by: str = Field(default="platform", description="platform | billops | customer")

    _v = field_validator("attempted_at")(_utc)


class PaymentMethod(_Model):
    platform: str
    id: str
    source_version: int | None = Field(
        default=None,
        description="The platform's own version of this object (Chargebee resource_version); the mirror "
        "keeps the highest.",
    )
    customer_id: str | None = None
    type: str = "card"
    card: CardInfo | None = None
    is_default: bool = False
    created_at: datetime | None = None

    _v = field_validator("created_at")(_utc)

    def usable_at(self, at: datetime) -> bool:
        if self.card is None:
            return self.type != "card"
        m = self.card.months_to_expiry(at)
        return m is None or m >= 0


def utcnow() -> datetime:
    return datetime.now(UTC)
