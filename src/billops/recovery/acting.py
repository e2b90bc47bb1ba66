"""The recovery workflow's action steps: the guardrails just before each action, platform writes
(keyed `<workflow id>:<step>`), the pay of each retry, and the record of each action's outcome.

Each step that counts or appends (a governed action, an audit record) writes a `StepEffect` row in the
same transaction as its effects and returns that row's result when it finds it, so a step re-run after
a crash between its commit and DBOS recording its output neither counts nor audits twice. Re-exported
by `billops.recovery.steps`, where the workflow finds every step."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from dbos import DBOS
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billops.domain import Money
from billops.errors import PlatformError
from billops.governance import audit, guardrails
from billops.governance.rollout import Subject
from billops.governance.schema import MONEY_ACTIONS
from billops.mirror import Mirror
from billops.platforms.registry import missing_client_reason
from billops.runtime import get_runtime
from billops.store.models import Approval, Decision, GovernedAction, StepEffect


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, PlatformError) and exc.retryable


def _effect(s: Session, workflow_id: str, key: str) -> dict[str, Any] | None:
    """The stored result of a step attempt's database effects, if they were committed already."""
    row = s.get(StepEffect, (workflow_id, key))
    return dict(row.result) if row is not None else None


def _store_effect(s: Session, workflow_id: str, key: str, result: dict[str, Any]) -> None:
    s.add(StepEffect(workflow_id=workflow_id, key=key, result=result))
    s.flush()


@DBOS.step(name="guard")
def guard(workflow_id: str, step: str, action: dict[str, Any], attempt: int = 0) -> dict[str, Any]:
    """The guardrails just before one action: allow (counted in governed_actions), block or defer
    (with the time to try again). Every block and deferral is audited with the rule and its reason.
    `attempt` numbers the asks for one step (a deferral asks again): the verdict of each attempt is
    stored with its effects, so a re-run returns it instead of counting or auditing a second time."""
    for _ in range(3):
        try:
            return _guard(workflow_id, step, action, attempt)
        except IntegrityError:  # a concurrent run of the same attempt committed first: use its verdict
            continue
    raise RuntimeError(f"guard {workflow_id} {step}: could not store the verdict")


def _guard(workflow_id: str, step: str, action: dict[str, Any], attempt: int) -> dict[str, Any]:
    rt = get_runtime()
    policy = rt.policy()
    now = datetime.now(UTC)
    key = f"guard:{step}:{attempt}"
    with rt.db.session() as s:
        dec = s.get(Decision, workflow_id, with_for_update=True)
        assert dec is not None
        if (done := _effect(s, workflow_id, key)) is not None:
            return done
        appr = s.scalar(sa.select(Approval).where(Approval.workflow_id == workflow_id))
        human = appr is not None and appr.status == "approved" and appr.decided_by not in (None, "timeout")
        raw = dec.plan.get("governance", {}).get("subject") or {}
        sub = Subject(
            workflow="recovery",
            platform=dec.platform,
            customer_id=dec.customer_id,
            currency=dec.currency,
            amount_minor=dec.amount,
            plans=tuple(raw.get("plans", [])),
            tier=raw.get("tier"),
            timezone=raw.get("timezone"),
        )
        verdict = guardrails.check_action(
            s, policy, wf=workflow_id, step=step, action=action, sub=sub, human_approved=human, now=now
        )
        if verdict.effect == "allow":
            amount = guardrails.amount_of(action, dec.amount) if action["type"] in MONEY_ACTIONS else 0
            s.add(
                GovernedAction(
                    at=now,
                    workflow_id=workflow_id,
                    step=step,
                    platform=dec.platform,
                    customer_id=dec.customer_id,
                    action=action["type"],
                    amount=amount,
                    currency=dec.currency.lower(),
                    status="allowed",
                )
            )
        else:
            audit.record(
                s,
                action=f"guardrail.{verdict.findings[0].rule}",
                workflow_id=workflow_id,
                trace_id=dec.trace_id,
                subject=f"{dec.platform}:invoice:{dec.invoice_id}",
                versions={"policy": policy.full_version},
                outcome={"step": step, "action": action["type"], **verdict.as_dict()},
            )
            if verdict.effect == "block":
                dec.outcome = {
                    **dec.outcome,
                    step: {"status": "blocked", "why": "; ".join(f.reason for f in verdict.findings)},
                }
        result = verdict.as_dict()
        _store_effect(s, workflow_id, key, result)
        return result


@DBOS.step(
    name="platform_action", retries_allowed=True, max_attempts=4, interval_seconds=2, should_retry=_retryable
)
def platform_action(workflow_id: str, step: str, action: dict[str, Any]) -> dict[str, Any]:
    """One platform write, keyed `<workflow id>:<step>`, audited with its outcome. (Messages go through
    recovery/delivery.py.)"""
    rt = get_runtime()
    with rt.db.session() as s:
        dec = s.get(Decision, workflow_id, with_for_update=True)
        assert dec is not None
        platform, invoice_id, customer_id = dec.platform, dec.invoice_id, dec.customer_id
    key = f"{workflow_id}:{step}"
    kind = action["type"]
    detail = action.get("detail") or {}
    client = rt.platform_client(platform)
    result: dict[str, Any]
    if client is None:
        result = {"status": "skipped", "why": missing_client_reason(platform)}
    else:
        caps = client.capabilities
        try:
            if kind == "disable_platform_retries" and caps.disable_native_retries:
                client.set_native_retries(invoice_id, False, idempotency_key=key)
                result = {"status": "done"}
            elif kind == "write_note" and caps.write_note:
                plan = dec.plan
                note = {
                    "billops_workflow": workflow_id,
                    "billops_route": plan["route"],
                    "billops_next_retry": (plan["retries"] or [""])[0],
                }
                client.write_note(invoice_id, note, idempotency_key=key)
                result = {"status": "done", "note": note}
            elif kind == "card_update_link" and caps.card_update_link and customer_id:
                url = client.card_update_link(customer_id, return_url=None, idempotency_key=key)
                result = {"status": "done", "url": url}
            elif kind == "pause_subscription" and caps.pause_subscription and detail.get("subscription_id"):
                resume = detail.get("resume_at")
                client.pause_subscription(
                    detail["subscription_id"],
                    resume_at=datetime.fromisoformat(resume) if resume else None,
                    idempotency_key=key,
                )
                result = {"status": "done", "subscription": detail["subscription_id"], "resume_at": resume}
            elif kind == "apply_credit" and caps.credit and customer_id:
                money = Money(amount=int(detail["amount_minor"]), currency=detail["currency"])
                client.apply_credit(customer_id, money, reason=detail.get("reason", ""), idempotency_key=key)
                result = {"status": "done", "amount": money.format()}
            elif kind == "apply_coupon" and caps.coupon and customer_id:
                client.apply_coupon(
                    customer_id,
                    detail["coupon"],
                    subscription_id=detail.get("subscription_id"),
                    idempotency_key=key,
                )
                result = {"status": "done", "coupon": detail["coupon"]}
            else:
                result = {"status": "skipped", "why": f"{platform} cannot {kind.replace('_', ' ')}"}
        except PlatformError as exc:
            if exc.retryable:
                raise
            result = {"status": "failed", "error": exc.message, "code": exc.code}
    _record_action(workflow_id, step, f"action.{kind}", {"key": key, "action": action}, result)
    return result


@DBOS.step(name="can_retry")
def can_retry(platform: str) -> bool:
    client = get_runtime().platform_client(platform)
    return client is not None and bool(client.capabilities.retry_invoice)


@DBOS.step(
    name="retry_payment", retries_allowed=True, max_attempts=4, interval_seconds=5, should_retry=_retryable
)
def retry_payment(workflow_id: str, n: int, payment_method_id: str | None) -> dict[str, Any]:
    """Pay the invoice now. Safe to replay: the key is stable and the client skips settled invoices.

    The first run notes that it is about to send (`pay_sent:<n>`) before it calls the platform. A run
    that finds the note is a re-run of a pay that may have reached the platform (the worker died
    mid-request): it then sends the same key again with `replay=True` (no "already settled" pre-check on
    Stripe and Chargebee; the ledger answers on Recurly and Zuora), so the platform's stored answer for
    the key says whether this pay is what settled the invoice."""
    rt = get_runtime()
    with rt.db.session() as s:
        dec = s.get(Decision, workflow_id, with_for_update=True)
        assert dec is not None
        platform, invoice_id = dec.platform, dec.invoice_id
        recorded = dec.outcome.get(f"pay:{n}")
        if recorded and _effect(s, workflow_id, f"record:pay:{n}:action.retry_payment") is not None:
            # The first run got its answer and recorded it, then the worker died before DBOS recorded
            # the step: the recorded answer is this pay's result (the platform is not asked again).
            return dict(recorded)
        rerun = _effect(s, workflow_id, f"pay_sent:{n}") is not None
        if not rerun:
            _store_effect(s, workflow_id, f"pay_sent:{n}", {"at": datetime.now(UTC).isoformat()})
    key = f"{workflow_id}:pay:{n}"
    client = rt.platform_client(platform)
    if client is None or not client.capabilities.retry_invoice:
        result: dict[str, Any] = {"status": "skipped", "why": missing_client_reason(platform)}
    else:
        try:
            pay = client.pay_invoice(
                invoice_id, idempotency_key=key, payment_method_id=payment_method_id, replay=rerun
            )
        except PlatformError as exc:
            if exc.retryable:
                raise
            pay = None
            result = {"status": "failed", "error": exc.message, "code": exc.code, "never_retry": False}
        if pay is not None:
            decline = pay.attempt.decline if pay.attempt else None
            result = {
                "status": pay.outcome,
                "invoice_status": pay.invoice.status.value,
                "message": pay.message,
                "decline_code": decline.code if decline else None,
                "never_retry": bool(decline and decline.never_retry),
                # links the mirror's attempt to this retry (its label: recovery/labels.py)
                "attempt_id": pay.attempt.id if pay.attempt else None,
            }
            with rt.db.session() as s:
                now = datetime.now(UTC)
                m = Mirror(s)
                m.upsert(pay.invoice, source_time=now, source="billops")
                if pay.attempt is not None:
                    m.upsert(
                        pay.attempt.model_copy(update={"initiated_by": "billops"}),
                        source_time=now,
                        source="billops",
                    )
    inputs = {"key": key, "payment_method": payment_method_id}
    _record_action(workflow_id, f"pay:{n}", "action.retry_payment", inputs, result)
    return result


def _record_action(
    workflow_id: str,
    step: str,
    action: str,
    inputs: dict[str, Any],
    result: dict[str, Any],
    also: Callable[[Session], None] | None = None,
    versions: dict[str, Any] | None = None,
) -> None:
    """Store an action's result on its decision and audit it, in one transaction (with `also`, e.g. the
    delivery row of a message); an error counts toward the circuit breaker. Once per workflow, step and
    action: a re-run (after a crash before DBOS recorded the step) records nothing again."""
    rt = get_runtime()
    key = f"record:{step}:{action}"
    with rt.db.reader() as r:
        if _effect(r, workflow_id, key) is not None:
            return
    try:
        _record_action_once(workflow_id, step, action, inputs, result, also, versions, key)
    except IntegrityError:
        with rt.db.reader() as r:
            if _effect(r, workflow_id, key) is None:
                raise
        # a concurrent run of the same step recorded it first: nothing more to do


def _record_action_once(
    workflow_id: str,
    step: str,
    action: str,
    inputs: dict[str, Any],
    result: dict[str, Any],
    also: Callable[[Session], None] | None,
    versions: dict[str, Any] | None,
    key: str,
) -> None:
    rt = get_runtime()
    with rt.db.session() as s:
        _store_effect(s, workflow_id, key, {"status": result.get("status")})
        if also is not None:
            also(s)
        dec = s.get(Decision, workflow_id, with_for_update=True)
        assert dec is not None
        dec.outcome = {**dec.outcome, step: result}
        errored = "error" in result or result.get("status") in ("error", "failed")
        s.execute(
            sa.update(GovernedAction)
            .where(GovernedAction.workflow_id == workflow_id, GovernedAction.step == step)
            .values(status="error" if errored else "done", detail={"status": result.get("status")})
        )
        if errored:
            guardrails.breaker_check(s, rt.policy(), now=datetime.now(UTC))
        audit.record(
            s,
            action=action,
            workflow_id=workflow_id,
            trace_id=dec.trace_id,
            subject=f"{dec.platform}:invoice:{dec.invoice_id}",
            versions=versions,
            inputs=inputs,
            outcome=result,
        )


SLACK_EVENTS = ("recovery.escalated", "message.failed", "workflow.failed")


@DBOS.step(name="team_listens")
def team_listens(event: str) -> bool:
    """Whether anyone listens for a team notification (an outbound webhook subscribed to the event, or
    Slack for escalations and failures). A step, so that a replay starts the same notification
    workflows even when the settings changed across the restart."""
    settings = get_runtime().settings
    return any(event in e.events for e in settings.outbound_webhooks) or (
        settings.slack_webhook_url is not None and event in SLACK_EVENTS
    )


@DBOS.step(name="record_failure")
def record_failure(workflow_id: str, step: str, kind: str, error: str) -> None:
    """An action whose retries ran out: recorded on the decision, audited, counted by the breaker."""
    _record_action(workflow_id, step, f"action.{kind}", {}, {"status": "error", "error": error[:500]})
