"""Recovery features: computed only from what was known when the payment failed (no leakage)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from billops.domain import Customer, Decline, DeclineCategory, Invoice, PaymentAttempt, PaymentMethod


@dataclass(frozen=True)
class RecoveryContext:
    """Everything the decision sees. Built by the workflow's context step from the mirror and the API."""

    platform: str
    invoice: Invoice
    failed_at: datetime
    decline: Decline
    attempt: PaymentAttempt | None
    customer: Customer | None
    history: list[PaymentAttempt] = field(default_factory=list)  # the customer's earlier attempts
    card_attempts: list[PaymentAttempt] = field(default_factory=list)  # this card's attempts, last 30 days
    payment_methods: list[PaymentMethod] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "fresh read skipped: no API key"
    # The platform client's capability flags that are on; None when no client is configured (every
    # platform action is then skipped at execution, saying so).
    capabilities: list[str] | None = None


@dataclass(frozen=True)
class RecoveryFeatures:
    decline_code: str
    decline_category: str
    network_advice_code: str | None
    never_retry: bool
    attempt_number: int
    amount: int
    currency: str
    card_brand: str | None
    card_funding: str | None
    months_to_expiry: int | None
    tenure_days: int | None
    past_successes: int
    past_failures: int
    other_usable_methods: int
    high_value: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_features(ctx: RecoveryContext, *, high_value_minor: int) -> RecoveryFeatures:
    at = ctx.failed_at
    card = ctx.attempt.card if ctx.attempt and ctx.attempt.card else None
    earlier = [
        a for a in ctx.history if a.attempted_at < at and a.id != (ctx.attempt.id if ctx.attempt else None)
    ]
    failing_pm = ctx.attempt.payment_method_id if ctx.attempt else None
    others = [
        pm
        for pm in ctx.payment_methods
        if pm.id != failing_pm
        and pm.usable_at(at)
        and not (card and pm.card and card.fingerprint and pm.card.fingerprint == card.fingerprint)
    ]
    tenure = None
    if ctx.customer and ctx.customer.created_at:
        tenure = max(0, (at - ctx.customer.created_at).days)
    amount = ctx.invoice.amount_remaining or ctx.invoice.amount_due
    return RecoveryFeatures(
        decline_code=ctx.decline.code,
        decline_category=ctx.decline.category.value,
        network_advice_code=ctx.decline.network_advice_code,
        never_retry=ctx.decline.never_retry or ctx.decline.category == DeclineCategory.hard,
        attempt_number=max(1, ctx.invoice.attempt_count),
        amount=amount,
        currency=ctx.invoice.currency,
        card_brand=(card.brand or "").lower() or None if card else None,
        card_funding=card.funding if card else None,
        months_to_expiry=card.months_to_expiry(at) if card else None,
        tenure_days=tenure,
        past_successes=sum(1 for a in earlier if a.outcome == "succeeded"),
        past_failures=sum(1 for a in earlier if a.outcome == "failed"),
        other_usable_methods=len(others),
        high_value=amount >= high_value_minor,
    )
