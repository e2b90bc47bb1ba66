"""The recovery workflow's steps. Each is a DBOS step: its result is recorded once it returns, so a
replay after a crash skips it. Steps that write to our database are also idempotent on their own
(a step that committed but crashed before DBOS recorded it finds its own rows and returns them).
Platform writes carry the idempotency key `<workflow id>:<step>`; every decision and action is
audited in the same transaction as the row it changes. A decision row is read FOR UPDATE before it is
changed: a recovery's messages are delivered by their own workflows, so two steps may update its
outcome at once (on PostgreSQL a plain read-modify-write would lose one of the updates).

A step that counts or appends (a governed action, an audit record) writes a `StepEffect` row keyed by
the decision's workflow id and the step attempt in the same transaction, and returns that row's result
when it finds it: re-run after a crash between its commit and DBOS recording its output, it neither
counts nor audits twice."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dbos import DBOS
from pydantic import TypeAdapter
from sqlalchemy.exc import IntegrityError

from billops.domain import CanonicalEvent, Customer, Invoice, PaymentAttempt
from billops.domain.declines import load_taxonomy
from billops.errors import ConfigError, PlatformError
from billops.governance import audit, control, guardrails
from billops.governance.rollout import Subject, resolve_mode
from billops.mirror import Mirror
from billops.platforms.registry import missing_client_reason
from billops.recovery import episodes
from billops.recovery.acting import (  # noqa: F401  (the workflow finds every step here)
    SLACK_EVENTS,
    _effect,
    _record_action,
    _retryable,
    _store_effect,
    can_retry,
    guard,
    platform_action,
    record_failure,
    retry_payment,
    team_listens,
)
from billops.recovery.decision import DecisionPlan, decide
from billops.recovery.features import RecoveryContext
from billops.recovery.model import RecoveryModel, cached_model, latest_model, registry_dir
from billops.recovery.planner import load_network_rules
from billops.recovery.scoring import RulesScorer
from billops.runtime import get_runtime
from billops.store.models import (
    ActiveRecovery,
    Approval,
    Decision,
    FeedbackLabel,
    InboxEvent,
)

CTX = TypeAdapter(RecoveryContext)
SETTLED = {"paid", "void", "uncollectible"}


# ------------------------------------------------------------------ event → mirror


@DBOS.step(name="apply_event")
def apply_event(inbox_id: int) -> dict[str, Any]:
    rt = get_runtime()
    with rt.db.session() as s:
        row = s.get(InboxEvent, inbox_id)
        if row is None:
            raise RuntimeError(f"inbox event {inbox_id} not found")
        event = CanonicalEvent.model_validate(row.canonical)
        changed = Mirror(s).apply_event(event)
        return {"event": event.model_dump(mode="json"), "trace_id": row.trace_id, "changed": changed}


@DBOS.step(name="find_recoveries_to_notify")
def find_recoveries_to_notify(platform: str, invoice_id: str | None, customer_id: str | None) -> list[str]:
    rt = get_runtime()
    with rt.db.session() as s:
        q = sa.select(ActiveRecovery.workflow_id).where(ActiveRecovery.platform == platform)
        if invoice_id:
            q = q.where(ActiveRecovery.invoice_id == invoice_id)
        elif customer_id:
            q = q.join(Decision, Decision.workflow_id == ActiveRecovery.workflow_id).where(
                Decision.customer_id == customer_id
            )
        else:
            return []
        return list(s.scalars(q))


# ------------------------------------------------------------------ claim, context


@DBOS.step(name="claim_invoice")
def claim_invoice(platform: str, invoice_id: str, workflow_id: str) -> str:
    """Make this workflow the one recovery of the invoice; returns the owner's workflow id: the running
    recovery's, or the decision's whose episode is still open (episodes.py), or this workflow's."""
    rt = get_runtime()
    window = rt.policy().recovery.window_days
    for _ in range(3):
        try:
            with rt.db.session() as s:
                row = s.get(ActiveRecovery, (platform, invoice_id))
                if row is not None:
                    return row.workflow_id
                dec = episodes.open_episode(
                    s, platform, invoice_id, window_days=window, now=datetime.now(UTC)
                )
                if dec is not None and dec.workflow_id != workflow_id:
                    return dec.workflow_id
                s.add(ActiveRecovery(platform=platform, invoice_id=invoice_id, workflow_id=workflow_id))
            return workflow_id
        except IntegrityError:
            continue
    raise RuntimeError(f"could not claim invoice {invoice_id}")


@DBOS.step(name="record_episode_failure")
def record_episode_failure(owner: str, event: dict[str, Any], workflow_id: str) -> dict[str, Any]:
    """A later failure of an invoice whose episode already has a decision (`owner`): recorded on that
    decision (attempt count, latest decline, audit), never a second decision. Idempotent per event."""
    rt = get_runtime()
    deadline = time.monotonic() + rt.policy().recovery.context_wait_seconds + 30
    while True:  # the owner may still be deciding: its decision row appears within its context wait
        with rt.db.session() as s:
            dec = s.get(Decision, owner, with_for_update=True)
            if dec is not None:
                return episodes.record_failure(s, dec, event, workflow_id)
        if time.monotonic() >= deadline:
            return {"recorded": False, "why": "the owning recovery had not decided in time"}
        time.sleep(0.5)


@DBOS.step(
    name="gather_context", retries_allowed=True, max_attempts=4, interval_seconds=2, should_retry=_retryable
)
def gather_context(event: dict[str, Any], fresh_read: bool) -> dict[str, Any]:
    """Mirror plus a fresh read of the invoice (and the failed charge, payment methods) from the API."""
    rt = get_runtime()
    ev = CanonicalEvent.model_validate(event)
    assert ev.invoice is not None
    platform, notes = ev.platform, []
    configured = rt.platform_client(platform)
    capabilities = [k for k, on in asdict(configured.capabilities).items() if on] if configured else None
    client = configured if fresh_read else None
    fresh: dict[str, Any] = {}
    if fresh_read and client is None:
        notes.append(f"fresh read skipped: {missing_client_reason(platform)} (mirror only)")
    elif client is not None:
        try:
            inv = client.get_invoice(ev.invoice.id)
            fresh["invoice"] = inv
            att = client.latest_attempt(inv)
            if att is not None:
                fresh["attempt"] = att
            if inv.customer_id:
                fresh["methods"] = client.list_payment_methods(inv.customer_id)
            notes.append("fresh read of the invoice from the API")
        except PlatformError as exc:
            if exc.retryable:
                raise
            notes.append(f"fresh read failed ({exc.message}); mirror only")
    with rt.db.session() as s:
        m = Mirror(s)
        now = datetime.now(UTC)
        for obj in [fresh.get("invoice"), fresh.get("attempt"), *fresh.get("methods", [])]:
            if obj is not None:
                m.upsert(obj, source_time=now, source="api")
        invoice = m.get(Invoice, platform, ev.invoice.id) or ev.invoice
        attempts = m.attempts_for_invoice(platform, invoice.id, invoice.payment_intent_id)
        failed = [a for a in attempts if a.outcome == "failed"]
        attempt = failed[-1] if failed else ev.attempt
        customer = m.get(Customer, platform, invoice.customer_id) if invoice.customer_id else None
        failed_at = attempt.attempted_at if attempt else ev.occurred_at
        history = (
            m.attempts_for_customer(platform, invoice.customer_id, before=failed_at)
            if invoice.customer_id
            else []
        )
        card_attempts: list[PaymentAttempt] = []
        if attempt and attempt.card and attempt.card.fingerprint:
            card_attempts = m.attempts_for_card(
                platform, attempt.card.fingerprint, failed_at - timedelta(days=30)
            )
        methods = m.payment_methods(platform, invoice.customer_id) if invoice.customer_id else []
    ready = attempt is not None and attempt.decline is not None
    policy = rt.policy()
    if ready:
        assert attempt is not None and attempt.decline is not None
        decline = attempt.decline
    else:
        decline = load_taxonomy(policy.declines).classify(None, message="decline details unavailable")
        notes.append("no decline details found for this failure: treated as generic_decline")
    ctx = RecoveryContext(
        platform=platform,
        invoice=invoice,
        failed_at=failed_at,
        decline=decline,
        attempt=attempt,
        customer=customer,
        history=history,
        card_attempts=card_attempts,
        payment_methods=methods,
        notes=notes,
        capabilities=capabilities,
    )
    return {
        "ready": ready,
        "settled": invoice.status.value in SETTLED,
        "context": CTX.dump_python(ctx, mode="json"),
        # The workflow's wait for decline details is bounded by this recorded value, not by a policy
        # read in workflow code (the policy file may change between a crash and the replay).
        "wait_seconds": float(policy.recovery.context_wait_seconds),
    }


# ------------------------------------------------------------------ decide


@DBOS.step(name="decide_and_record")
def decide_and_record(
    workflow_id: str, event_id: str, context: dict[str, Any], trace_id: str
) -> dict[str, Any]:
    rt = get_runtime()
    with rt.db.session() as s:
        existing = s.get(Decision, workflow_id, with_for_update=True)
        if existing is not None:
            return _decision_dict(existing)
        policy = rt.policy()
        ctx = CTX.validate_python(context)
        other = episodes.open_episode(
            s, ctx.platform, ctx.invoice.id, window_days=policy.recovery.window_days, now=datetime.now(UTC)
        )
        if other is not None:  # another worker decided this episode meanwhile: attach to it
            return _attached(s, other, context, event_id, workflow_id)
        rules = load_network_rules(policy.network_rules)
        now = datetime.now(UTC)
        plan = decide_with_fallback(ctx, policy=policy, rules=rules, now=now)
        sub = subject_of(ctx, policy)
        choice = resolve_mode(policy, sub, forced_shadow=control.controls(s).shadow_reason)
        mode = choice.mode
        plan_json = plan.model_dump(mode="json")
        findings = guardrails.review_plan(
            s, policy, wf=workflow_id, sub=sub, actions=plan_json["actions"], now=now
        )
        to_human = [f for f in findings if f.effect == "approval"]
        awaiting = mode == "assist" or (mode == "auto" and (plan.route == "human_review" or bool(to_human)))
        status = "recorded" if mode == "shadow" else "awaiting_approval" if awaiting else "approved"
        plan_json["governance"] = {
            **choice.as_dict(),
            "subject": sub.as_dict(),
            "guardrails": [f.as_dict() for f in findings],
        }
        inv = ctx.invoice
        row = Decision(
            workflow_id=workflow_id,
            workflow="recovery",
            platform=ctx.platform,
            invoice_id=inv.id,
            customer_id=inv.customer_id,
            event_id=event_id,
            amount=inv.amount_remaining or inv.amount_due,
            currency=inv.currency,
            route=plan.route,
            score=plan.score,
            decline_code=ctx.decline.code,
            decline_category=ctx.decline.category.value,
            mode=mode,
            status=status,
            plan=plan_json,
            versions=plan.versions,
            trace_id=trace_id,
            outcome={
                "episode": episodes.first_failure(event_id, ctx.decline.code, ctx.failed_at.isoformat())
            },
            episode_key=episodes.next_key(s, ctx.platform, inv.id),
        )
        try:
            with s.begin_nested():  # the episode key is unique: a racing worker's decision wins
                s.add(row)
                s.flush()
        except IntegrityError:
            winner = s.scalars(sa.select(Decision).where(Decision.episode_key == row.episode_key)).one()
            return _attached(s, winner, context, event_id, workflow_id)
        audit.record(
            s,
            action="recovery.decided",
            actor_type="model",
            actor=plan.scorer,
            workflow_id=workflow_id,
            trace_id=trace_id,
            subject=f"{ctx.platform}:invoice:{inv.id}",
            versions=plan.versions,
            inputs=context,
            outcome={
                "route": plan.route,
                "score": plan.score,
                "mode": mode,
                "status": status,
                "retries": [t.isoformat() for t in plan.retries],
                "reasons": plan.reasons[:5],
                "segment": choice.segment,
                "mode_reasons": choice.reasons,
                "guardrails": [f.as_dict() for f in findings],
                "exploration": plan.exploration,
            },
        )
        for f in findings:
            audit.record(
                s,
                action=f"guardrail.{f.rule}",
                workflow_id=workflow_id,
                trace_id=trace_id,
                subject=f"{ctx.platform}:invoice:{inv.id}",
                versions={"policy": policy.full_version},
                outcome={**f.as_dict(), "mode": mode, "status": status},
            )
        s.flush()
        guardrails.breaker_check(s, policy, now=now)
        return _decision_dict(row)


def _attached(s: Any, dec: Decision, context: dict[str, Any], event_id: str, wf: str) -> dict[str, Any]:
    """This failure belongs to `dec`'s episode: record it there; the workflow stops (status attached)."""
    s.refresh(dec, with_for_update=True)
    ctx = context.get("attempt") or {}
    event = {"event_id": event_id, "attempt": ctx, "occurred_at": context.get("failed_at")}
    rec = episodes.record_failure(s, dec, event, wf)
    return {**_decision_dict(dec), "status": "attached", "owner": dec.workflow_id, "episode": rec}


def subject_of(ctx: RecoveryContext, policy: Any) -> Subject:
    """What the policy's segments and guardrails see of this failed payment."""
    inv, cust = ctx.invoice, ctx.customer
    tier = None
    if cust is not None:
        raw = cust.metadata.get(policy.segmentation.tier_key)
        tier = str(raw) if raw is not None else None
    plans = tuple(p for p in (inv.plan_name,) if p)
    return Subject(
        workflow="recovery",
        platform=ctx.platform,
        customer_id=inv.customer_id,
        currency=inv.currency,
        amount_minor=inv.amount_remaining or inv.amount_due,
        plans=plans,
        tier=tier,
        timezone=cust.timezone if cust is not None else None,
    )


def resolve_model(policy: Any) -> RecoveryModel | None:
    """The model the policy names: the newest registered one ('latest'), none ('rules'), or a version in
    the registry / a directory. A named model that cannot be loaded is a configuration error."""
    choice = policy.recovery.model
    if choice == "rules":
        return None
    data_dir = Path(get_runtime().settings.data_dir)
    if choice == "latest":
        return latest_model(data_dir)
    for candidate in (registry_dir(data_dir) / choice, Path(choice)):
        if (candidate / "manifest.json").exists():
            return cached_model(candidate)
    raise ConfigError(f"policy recovery.model {choice!r}: no such model version in the registry or directory")


def decide_with_fallback(ctx: RecoveryContext, *, policy: Any, rules: Any, now: datetime) -> DecisionPlan:
    """The learned model decides when one is configured; rules-v1 otherwise, or when the model fails on
    this input (recorded in the decision's context notes, so the fallback is never silent)."""
    try:
        model = resolve_model(policy)
    except ConfigError as exc:  # the policy names a model that cannot be used: rules-v1, loudly
        DBOS.logger.error("recovery model cannot be used (%s): rules-v1 decides", exc.message)
        note = f"the policy's recovery model cannot be used ({exc.message}); rules-v1 decided instead"
        return decide(
            replace(ctx, notes=[*ctx.notes, note]), policy=policy, scorer=RulesScorer(), rules=rules, now=now
        )
    if model is not None:
        try:
            return decide(ctx, policy=policy, scorer=RulesScorer(), rules=rules, now=now, model=model)
        except Exception as exc:  # a bad model must not stop recoveries: rules-v1 decides, loudly
            DBOS.logger.error("recovery model %s failed (%r): rules-v1 decides", model.version, exc)
            note = f"model {model.version} failed ({type(exc).__name__}: {exc}); rules-v1 decided instead"
            ctx = replace(ctx, notes=[*ctx.notes, note])
    else:
        ctx = replace(
            ctx, notes=[*ctx.notes, "no recovery model registered (or policy says rules): rules-v1 decided"]
        )
    return decide(ctx, policy=policy, scorer=RulesScorer(), rules=rules, now=now)


@DBOS.step(name="replan")
def replan(workflow_id: str, n: int, context: dict[str, Any]) -> dict[str, Any]:
    """After failed retry `n`: plan the remaining retries again with the new decline and attempt count.
    Only decisions the learned model made are re-planned (rules-v1 keeps its schedule). Stored on the
    decision (`plan.replans`) and audited; returns the new retry times (ISO) or a reason for none."""
    rt = get_runtime()
    with rt.db.session() as s:
        dec = s.get(Decision, workflow_id, with_for_update=True)
        assert dec is not None
        done = [r for r in dec.plan.get("replans", []) if r.get("after_retry") == n]
        if done:
            return done[0]
        policy = rt.policy()
        ctx = CTX.validate_python(context)
        model = resolve_model(policy)
        if model is None or not str(dec.versions.get("scorer", "")).startswith("recovery-lgbm"):
            result: dict[str, Any] = {
                "after_retry": n,
                "retries": None,
                "why": "rules-v1 plan: schedule kept",
            }
        else:
            rules = load_network_rules(policy.network_rules)
            plan = decide(
                ctx, policy=policy, scorer=RulesScorer(), rules=rules, now=datetime.now(UTC), model=model
            )
            result = {
                "after_retry": n,
                "retries": [t.isoformat() for t in plan.retries],
                "score": plan.score,
                "route": plan.route,
                "decline_code": ctx.decline.code,
                "model": model.version,
                "reasons": plan.reasons[:4],
                "why": plan.retry_blocked,
                "exploration": plan.exploration,
            }
        dec.plan = {**dec.plan, "replans": [*dec.plan.get("replans", []), result]}
        audit.record(
            s,
            action="recovery.replanned",
            actor_type="model",
            actor=str(result.get("model") or dec.versions.get("scorer")),
            workflow_id=workflow_id,
            trace_id=dec.trace_id,
            subject=f"{dec.platform}:invoice:{dec.invoice_id}",
            inputs=context,
            outcome=result,
        )
    return result


def _decision_dict(row: Decision) -> dict[str, Any]:
    return {
        "workflow_id": row.workflow_id,
        "platform": row.platform,
        "invoice_id": row.invoice_id,
        "customer_id": row.customer_id,
        "mode": row.mode,
        "status": row.status,
        "route": row.route,
        "plan": row.plan,
        "trace_id": row.trace_id,
    }


@DBOS.step(name="request_approval")
def request_approval(workflow_id: str) -> None:
    """Open the approval item. Runs inside the waiting workflow, so a human can only ever answer a
    workflow that already exists to receive the answer."""
    rt = get_runtime()
    with rt.db.session() as s:
        if s.scalar(sa.select(Approval.id).where(Approval.workflow_id == workflow_id)) is not None:
            return
        dec = s.get(Decision, workflow_id, with_for_update=True)
        assert dec is not None
        policy = rt.policy()
        hours = policy.approvals.timeout_hours
        sent = [g for g in dec.plan.get("governance", {}).get("guardrails", []) if g["effect"] == "approval"]
        whys = []
        if dec.mode == "assist":
            whys.append("assist mode: every decision waits for a human")
        elif dec.route == "human_review":
            whys.append(dec.plan["reasons"][0])
        whys += [f"guardrail {g['rule']}: {g['reason']}" for g in sent]
        why = "; ".join(whys) or dec.plan["reasons"][0]
        s.add(
            Approval(
                workflow_id=workflow_id,
                status="pending",
                reason_for_review=why,
                expires_at=datetime.now(UTC) + timedelta(hours=hours),
                guardrails=[{"rule": g["rule"], "reason": g["reason"]} for g in sent],
            )
        )
        audit.record(
            s,
            action="approval.requested",
            workflow_id=workflow_id,
            trace_id=dec.trace_id,
            subject=f"{dec.platform}:invoice:{dec.invoice_id}",
            versions={"policy": policy.full_version},
            outcome={"why": why, "timeout_hours": hours, "timeout_outcome": policy.approvals.timeout_outcome},
        )


@DBOS.step(name="expire_approval")
def expire_approval(workflow_id: str) -> dict[str, Any]:
    """The approval timed out. If a human decided in the meantime, their decision stands."""
    rt = get_runtime()
    with rt.db.session() as s:
        dec = s.get(Decision, workflow_id, with_for_update=True)
        appr = s.scalar(sa.select(Approval).where(Approval.workflow_id == workflow_id))
        assert appr is not None and dec is not None
        if (done := _effect(s, workflow_id, "expire_approval")) is not None:
            return done  # re-run after a crash: the verdict this step already committed
        if appr.status != "pending":
            return {"approved": appr.status == "approved", "by": appr.decided_by, "status": appr.status}
        outcome = rt.policy().approvals.timeout_outcome
        appr.status = "expired"
        appr.decided_at = datetime.now(UTC)
        appr.decided_by = "timeout"
        dec.status = "approved" if outcome == "approve" else "expired"
        s.add(
            FeedbackLabel(
                workflow_id=workflow_id, label="expired", by="timeout", why=f"default outcome: {outcome}"
            )
        )
        audit.record(
            s,
            action="approval.expired",
            workflow_id=workflow_id,
            trace_id=dec.trace_id,
            subject=f"{dec.platform}:invoice:{dec.invoice_id}",
            outcome={"default_outcome": outcome},
        )
        verdict = {"approved": outcome == "approve", "by": "timeout", "status": "expired"}
        _store_effect(s, workflow_id, "expire_approval", verdict)
        return verdict


# ------------------------------------------------------------------ act


@DBOS.step(name="load_decision")
def load_decision(workflow_id: str) -> dict[str, Any]:
    """The decision as stored now: after an approval it holds the plan the human approved (edits
    included), which is what gets executed."""
    with get_runtime().db.reader() as s:
        dec = s.get(Decision, workflow_id)
        assert dec is not None
        return _decision_dict(dec)


@DBOS.step(name="finish")
def finish(workflow_id: str, platform: str, invoice_id: str, status: str, detail: dict[str, Any]) -> None:
    rt = get_runtime()
    with rt.db.session() as s:
        dec = s.get(Decision, workflow_id, with_for_update=True)
        done_before = dec is not None and dec.outcome.get("final", {}).get("status") == status
        if dec is not None and status != "recorded" and not done_before:
            dec.status = status
            dec.outcome = {**dec.outcome, "final": {"status": status, **detail}}
            audit.record(
                s,
                action="recovery.finished",
                workflow_id=workflow_id,
                trace_id=dec.trace_id,
                subject=f"{platform}:invoice:{invoice_id}",
                outcome={"status": status, **detail},
            )
        claim = s.get(ActiveRecovery, (platform, invoice_id))
        if claim is not None and claim.workflow_id == workflow_id:
            s.delete(claim)


def plan_of(decision: dict[str, Any]) -> DecisionPlan:
    return DecisionPlan.model_validate(decision["plan"])
