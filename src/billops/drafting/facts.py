"""From a recovery decision to the facts a draft may use (`DraftFacts`) and the local-only data
(`DraftLocal`). recovery/decision.py calls `build_facts` once per message kind."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from billops.domain import Money
from billops.drafting.schema import DECLINE_HINTS, DraftFacts, DraftLocal, Tone, channel_of

if TYPE_CHECKING:
    from billops.recovery.features import RecoveryContext, RecoveryFeatures

TONES: dict[str, Tone] = {
    "auto_retry": "reassuring",  # score > 85: it will very likely sort itself out
    "retry_and_notify": "urgent",  # 50–85, or the card needs new data: the customer should act
    "no_retry": "firm",  # hard decline: a new payment method is the only way
    "human_review": "firm",
}


def tone_for(route: str) -> Tone:
    return TONES.get(route, "urgent")


def long_date(t: datetime) -> str:
    return f"{t:%B} {t.day}, {t.year}"


def retry_stamp(t: datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M} UTC"


def build_facts(
    ctx: RecoveryContext,
    *,
    kind: str,
    route: str,
    score: int | None,
    scorer: str | None,
    reasons: Sequence[str],
    retries: Sequence[datetime],
    retry_blocked: str | None,
    other_pm: bool,
    next_steps: Sequence[str],
    company: str | None = None,
    tone: Tone | None = None,
    features: RecoveryFeatures | None = None,
) -> tuple[DraftFacts, DraftLocal]:
    """The allow-listed facts for one message of a decision, and what stays local.

    Nothing personal is copied into the facts: the customer's name goes to `DraftLocal.first_name`, the
    card's last digits and expiry to `DraftLocal.card_desc`, the customer id to `customer_ref`."""
    if features is None:
        from billops.recovery.features import build_features

        features = build_features(ctx, high_value_minor=2**62)
    inv = ctx.invoice
    card = ctx.attempt.card if ctx.attempt and ctx.attempt.card else None
    money = Money(amount=features.amount, currency=features.currency)
    hint = DECLINE_HINTS.get(ctx.decline.code)
    facts = DraftFacts(
        kind=kind,
        channel=channel_of(kind),
        tone=tone or tone_for(route),
        route=route,
        company=company,
        amount=money.format(),
        amount_minor=money.amount,
        currency=money.currency,
        invoice_number=inv.number or inv.id,
        plan_name=inv.plan_name,
        failed_date=long_date(ctx.failed_at),
        next_retry_date=long_date(retries[0]) if retries else None,
        decline_hint=hint,  # type: ignore[arg-type]  # values of DECLINE_HINTS are the DeclineHint literals
        other_method=other_pm,
        score=score,
        scorer=scorer,
        reasons=list(reasons),
        decline_code=ctx.decline.code,
        decline_category=ctx.decline.category.value,
        network_advice=ctx.decline.network_advice_code,
        past_successes=features.past_successes,
        past_failures=features.past_failures,
        attempt_number=features.attempt_number,
        card_brand=features.card_brand,
        card_funding=features.card_funding,
        other_methods=features.other_usable_methods,
        retries=[retry_stamp(t) for t in retries],
        retry_blocked=retry_blocked,
        next_steps=list(next_steps),
    )
    name = ctx.customer.name if ctx.customer and ctx.customer.name else None
    local = DraftLocal(
        first_name=name.split()[0] if name and name.split() else None,
        customer_ref=ctx.customer.id if ctx.customer else inv.customer_id,
        card_desc=(
            f"{card.brand or '?'} {card.funding or ''} ending {card.last4 or '????'}, "
            f"expires {card.exp_month or '?'}/{card.exp_year or '?'}"
            if card
            else "unknown"
        ),
    )
    return facts, local
