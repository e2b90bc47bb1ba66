"""From a failed payment's context to a Decision: route, score, reasons, retry times, actions, drafts.

Routes (thresholds from the policy file):
  auto_retry        score > auto_retry_above: retry in ~24 h, reassuring email
  retry_and_notify  notify_from ≤ score ≤ auto_retry_above, or the card needs new data: urgent email +
                    SMS + card-update link, try another stored payment method first when there is one
  human_review      score < notify_from, or repeated failures on a high-value invoice: a case summary
                    for a human; nothing automatic
  no_retry          a hard decline (or Mastercard MAC 03/21, Visa category 1): never retried; the customer
                    is asked for a new payment method and the platform's own retries are turned off
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from billops.domain import DeclineCategory
from billops.drafting.facts import build_facts
from billops.drafting.service import template_draft
from billops.drafting.templates import load_template_set
from billops.policy import Policy
from billops.recovery.features import RecoveryContext, RecoveryFeatures, build_features
from billops.recovery.model import RecoveryModel
from billops.recovery.planner import NetworkRules, RetryPlan, plan_retries
from billops.recovery.scoring import Score, Scorer

Route = Literal["auto_retry", "retry_and_notify", "human_review", "no_retry"]


class Action(BaseModel):
    type: Literal[
        "retry_payment",
        "disable_platform_retries",
        "write_note",
        "card_update_link",
        "send_email",
        "send_sms",
        "human_review",
        # retention offers (policy recovery.offers): always a human's decision (guardrail risky_action)
        "pause_subscription",
        "apply_credit",
        "apply_coupon",
    ]
    at: datetime | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Message(BaseModel):
    kind: str
    channel: str
    subject: str | None
    body: str
    template: str
    output: dict[str, Any] = Field(default_factory=dict, description="The typed draft (drafting/schema.py).")
    record: dict[str, Any] = Field(
        default_factory=dict,
        description="How it was drafted: backend, model, prompt version, tokens, latency, fallback.",
    )


class DecisionPlan(BaseModel):
    route: Route
    score: int
    scorer: str
    reasons: list[str]
    retries: list[datetime]
    retry_payment_method: str | None = None
    retry_notes: list[str] = Field(default_factory=list)
    retry_blocked: str | None = None
    actions: list[Action]
    messages: list[Message]
    features: dict[str, Any]
    context_notes: list[str] = Field(default_factory=list)
    versions: dict[str, str]
    exploration: dict[str, Any] | None = Field(
        default=None,
        description="Learned plans: explored (first retry moved at random), share, propensity of these "
        "retry times under the mixed policy, greedy_retries (the planner's own), options "
        "(recovery/explore.py).",
    )
    drafting: dict[str, Any] = Field(
        default_factory=dict,
        description="The drafting backend and, per message, the allow-listed facts and local-only data an "
        "LLM redraft starts from (drafting/facts.py).",
    )


def choose_route(f: RecoveryFeatures, score: int, policy: Policy) -> tuple[Route, str]:
    th = policy.recovery.thresholds
    if f.never_retry:
        return "no_retry", "hard decline: never retried"
    if f.high_value and f.attempt_number >= 2:
        return "human_review", "repeated failure on a high-value invoice: escalate"
    if score > th.auto_retry_above:
        if f.decline_category == DeclineCategory.needs_new_card.value:
            return "retry_and_notify", "the card needs new data, so the customer must act"
        return "auto_retry", f"score {score} > {th.auto_retry_above}"
    if score >= th.notify_from:
        return "retry_and_notify", f"score {score} within {th.notify_from}–{th.auto_retry_above}"
    return "human_review", f"score {score} < {th.notify_from}"


def decide(
    ctx: RecoveryContext,
    *,
    policy: Policy,
    scorer: Scorer,
    rules: NetworkRules,
    now: datetime,
    model: RecoveryModel | None = None,
) -> DecisionPlan:
    """Decide with the learned model when one is given (retry times from `timing.plan_timing`, score =
    100 × P(the plan recovers), reasons from SHAP contributions), else with `scorer` (rules-v1) and the
    policy's fixed schedule under the network rules."""
    f = build_features(ctx, high_value_minor=policy.recovery.high_value_minor)
    model_versions: dict[str, str] = {}
    exploration: dict[str, Any] | None = None
    if model is not None:
        from billops.recovery.explore import exploration_record
        from billops.recovery.timing import plan_for_context, route_for

        tp, so_far, first_failed = plan_for_context(model, ctx, policy=policy.recovery, rules=rules, now=now)
        route, why = route_for(tp, amount=f.amount, attempts_so_far=so_far, policy=policy.recovery)
        score = Score(
            value=tp.score, scorer=model.version, reasons=tp.reasons, contributions=tp.contributions
        )
        plan = RetryPlan(times=tp.retries, notes=list(tp.notes), blocked=tp.blocked)
        model_versions = {"model": model.version}
        f_extra = {
            "retry_probabilities": [round(p, 4) for p in tp.probabilities],
            "recovery_probability": round(tp.recovery_probability, 4),
            "first_failed_at": first_failed.isoformat(),
            "attempts_so_far": so_far,
        }
        exploration = exploration_record(tp)
    else:
        score = scorer.score(f)
        route, why = choose_route(f, score.value, policy)
        plan = plan_retries(
            route=route,
            decline=ctx.decline,
            card_brand=f.card_brand,
            failed_at=ctx.failed_at,
            now=now,
            card_attempts=ctx.card_attempts,
            policy=policy.recovery,
            rules=rules,
        )
        f_extra = {}
    caps = set(ctx.capabilities) if ctx.capabilities is not None else None
    platform_notes: list[str] = []
    other_pm = None
    if caps is not None and "pay_with_other_method" not in caps and f.other_usable_methods:
        platform_notes.append(
            f"{ctx.platform} cannot pay an invoice with a chosen stored method: not offered"
        )
    elif route == "retry_and_notify" and f.other_usable_methods:
        failing = ctx.attempt.payment_method_id if ctx.attempt else None
        candidates = [pm for pm in ctx.payment_methods if pm.id != failing and pm.usable_at(ctx.failed_at)]
        candidates.sort(key=lambda pm: (not pm.is_default, pm.id))
        other_pm = candidates[0].id if candidates else None
    if other_pm and ctx.decline.category in (DeclineCategory.needs_new_card,) and not plan.times:
        # A different card is not "blind": it is new card data.
        plan.times = [max(now, ctx.failed_at)]
        plan.blocked = None
        plan.notes.append(f"first retry uses another stored payment method ({other_pm})")

    templates = load_template_set(policy.templates)
    actions: list[Action] = []
    messages: list[Message] = []
    inputs: dict[str, Any] = {}
    steps = _next_steps(f, ctx) if route == "human_review" else []

    def draft(kind: str) -> None:
        facts, local = build_facts(
            ctx,
            kind=kind,
            route=route,
            score=score.value,
            scorer=score.scorer,
            reasons=score.reasons,
            retries=plan.times,
            retry_blocked=plan.blocked,
            other_pm=bool(other_pm),
            next_steps=steps,
            company=policy.contact.company_name,
            features=f,
        )
        d = template_draft(kind, facts, local, policy.templates)
        inputs[kind] = {"facts": facts.model_dump(mode="json"), "local": local.model_dump(mode="json")}
        messages.append(
            Message(
                kind=d.kind,
                channel=d.channel,
                subject=d.subject,
                body=d.body,
                template=d.record.template or f"{policy.templates}/{kind}",
                output=d.output,
                record=d.record.model_dump(mode="json"),
            )
        )

    if route == "auto_retry":
        draft("reassuring_email")
        actions.append(Action(type="send_email", detail={"message": "reassuring_email"}))
    elif route == "retry_and_notify":
        actions.append(Action(type="card_update_link"))
        draft("urgent_email")
        draft("sms")
        actions.append(Action(type="send_email", detail={"message": "urgent_email"}))
        actions.append(Action(type="send_sms", detail={"message": "sms"}))
    elif route == "no_retry":
        actions.append(Action(type="disable_platform_retries", detail={"why": "hard decline: never retry"}))
        actions.append(Action(type="card_update_link"))
        draft("card_update_email")
        actions.append(Action(type="send_email", detail={"message": "card_update_email"}))
    if route == "human_review":
        draft("case_summary")
        draft("internal_note")
        actions.append(Action(type="human_review", detail={"why": why, "message": "case_summary"}))
    if plan.times and route != "no_retry":
        if route != "human_review":
            actions.insert(0, Action(type="write_note"))
            if policy.recovery.manage_platform_retries:
                actions.insert(
                    0,
                    Action(
                        type="disable_platform_retries",
                        detail={"why": "BillOps manages this invoice's retries"},
                    ),
                )
        for i, t in enumerate(plan.times):
            actions.append(
                Action(
                    type="retry_payment",
                    at=t,
                    detail={"n": i + 1, "payment_method": other_pm if i == 0 else None},
                )
            )
    actions += _offers(policy, route, ctx, now)
    if caps is not None:
        actions = _fit_to_platform(actions, caps, ctx.platform, platform_notes)
    return DecisionPlan(
        route=route,
        score=score.value,
        scorer=score.scorer,
        reasons=[why, *score.reasons],
        retries=plan.times,
        retry_payment_method=other_pm,
        retry_notes=plan.notes,
        retry_blocked=plan.blocked,
        actions=actions,
        messages=messages,
        features={**f.as_dict(), **f_extra},
        context_notes=[*ctx.notes, *platform_notes],
        exploration=exploration,
        drafting={"backend": policy.drafting.backend_for("recovery"), "inputs": inputs},
        versions={
            "scorer": score.scorer,
            "policy": policy.full_version,
            "templates": templates.version,
            "network_rules": rules.version,
            "declines": ctx.decline.taxonomy_version,
            **model_versions,
        },
    )


# What each platform action needs from the client, and what the decision says when it is missing.
_NEEDS = {
    "card_update_link": (
        "card_update_link",
        "{p} offers no card-update link: the messages ask the customer to update the card in their account",
    ),
    "disable_platform_retries": (
        "disable_native_retries",
        "{p} cannot stop its own dunning for one invoice: its retries continue beside BillOps's unless "
        "dunning is handed to BillOps in {p}'s settings (docs/platforms/{p}.md)",
    ),
    "write_note": ("write_note", "{p} offers no invoice note: none written"),
    "retry_payment": ("retry_invoice", "{p} cannot retry a payment through BillOps: retries are advice only"),
    "pause_subscription": ("pause_subscription", "{p} cannot pause a subscription: no pause offered"),
    "apply_credit": ("credit", "{p} cannot add account credit here: no credit offered"),
    "apply_coupon": ("coupon", "{p} cannot apply a coupon: no coupon offered"),
}


def _offers(policy: Policy, route: str, ctx: RecoveryContext, now: datetime) -> list[Action]:
    """The retention offers the policy proposes on this route. They never run without a human."""
    o, inv, out = policy.recovery.offers, ctx.invoice, []
    if route in o.pause_subscription.routes and inv.subscription_id:
        resume = now + timedelta(days=o.pause_subscription.resume_after_days)
        out.append(
            Action(
                type="pause_subscription",
                detail={
                    "subscription_id": inv.subscription_id,
                    "resume_at": resume.replace(microsecond=0).isoformat(),
                    "why": "retention offer: a pause instead of losing the customer",
                },
            )
        )
    if route in o.apply_credit.routes:
        out.append(
            Action(
                type="apply_credit",
                detail={
                    "amount_minor": o.apply_credit.amount_minor,
                    "currency": inv.currency,
                    "reason": f"goodwill credit with invoice {inv.number or inv.id}",
                },
            )
        )
    if route in o.apply_coupon.routes and o.apply_coupon.coupon:
        out.append(
            Action(
                type="apply_coupon",
                detail={"coupon": o.apply_coupon.coupon, "subscription_id": inv.subscription_id},
            )
        )
    return out


def _fit_to_platform(actions: list[Action], caps: set[str], platform: str, notes: list[str]) -> list[Action]:
    """Drop the actions the platform's client cannot do (capability flags), saying why once each.
    Planned retries stay (they are the advice a human can act on) but are noted as not executable."""
    kept = []
    for a in actions:
        need = _NEEDS.get(a.type)
        if need is not None and need[0] not in caps:
            note = need[1].format(p=platform)
            if note not in notes:
                notes.append(note)
            if a.type != "retry_payment":
                continue
        kept.append(a)
    return kept


def _next_steps(f: RecoveryFeatures, ctx: RecoveryContext) -> list[str]:
    steps = []
    if f.decline_category in ("hard", "needs_new_card"):
        steps.append("ask the customer for a new payment method (card-update link)")
    if f.other_usable_methods:
        steps.append("try the other stored payment method before contacting the customer")
    if f.high_value:
        steps.append("call the account owner; offer to split the amount or move to invoice/bank transfer")
    if f.past_successes >= 3:
        steps.append("long paying history: a short grace period or payment plan is likely to work")
    else:
        steps.append("little paying history: confirm the billing contact before extending credit")
    if f.decline_code == "insufficient_funds":
        steps.append("offer a retry date after the customer's usual payday")
    return steps
