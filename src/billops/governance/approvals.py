"""Approve, edit-then-approve or reject a decision waiting for a human. The CLI, the API and the console
all call `decide_approval`, which applies the edits to the stored plan, records the choice (who, when,
why) and a feedback label, audits it and sends it to the waiting workflow in ONE transaction (the DBOS
message row lives in the same database), so a choice is never half-made. The waiting workflow reads the
plan back from the database, so it executes exactly what the human approved."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field, field_validator

from billops.errors import BillopsError, Conflict, NotFound
from billops.governance import audit
from billops.runtime import Runtime
from billops.store.models import Approval, Decision, FeedbackLabel

# A hand-written link in an edited message (links come from the platform: {card_update_link}).
_LINK = re.compile(r"https?://|\bwww\.", re.IGNORECASE)


class MessageEdit(BaseModel):
    subject: str | None = Field(default=None, max_length=300)
    body: str = Field(min_length=1, max_length=20_000)


class ApprovalEdits(BaseModel):
    """What an approver may change before approving."""

    retries: list[datetime] | None = Field(
        default=None,
        description="New retry times (timezone-aware, ascending, in the future): replace the planned "
        "ones. An empty list means no retry.",
    )
    messages: dict[str, MessageEdit] = Field(
        default_factory=dict, description="New subject/body per drafted message kind (e.g. urgent_email)."
    )
    drop_actions: list[str] = Field(default_factory=list, description="Action types not to execute.")

    @field_validator("retries")
    @classmethod
    def _aware(cls, v: list[datetime] | None) -> list[datetime] | None:
        if v is None:
            return v
        if any(t.tzinfo is None for t in v):
            raise ValueError("retry times must carry a timezone (e.g. 2026-11-23T09:00:00Z)")
        out = [t.astimezone(UTC).replace(microsecond=0) for t in v]
        if out != sorted(out) or len(set(out)) != len(out):
            raise ValueError("retry times must be ascending and distinct")
        return out

    def is_empty(self) -> bool:
        return self.retries is None and not self.messages and not self.drop_actions


_ID_MAX = 2_147_483_647  # an integer column on PostgreSQL (access.DB_INT_MAX): no larger id exists
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # control characters, lone surrogates


def _find(s: Any, ref: str) -> Approval:
    q = sa.select(Approval)
    if ref.isascii() and ref.isdigit():  # str.isdigit alone also accepts "²", "٣", … which int() refuses
        # cannot exist; querying it would overflow the column on PostgreSQL (and int() refuses 4,300+ digits)
        if len(ref.lstrip("0")) > len(str(_ID_MAX)) or int(ref) > _ID_MAX:
            raise NotFound(f"no approval {ref!r}")
        q = q.where(Approval.id == int(ref))
    elif 0 < len(ref) <= 300 and not _UNSTORABLE.search(ref):  # a workflow id, `platform:event_id`
        q = q.where(Approval.workflow_id == ref)
    else:  # too long, or NUL / a lone surrogate from argv: no workflow id holds one (ingest/limits.py),
        raise NotFound(f"no approval {ref!r}")  # and PostgreSQL would refuse the query
    appr = s.scalar(q)
    if appr is None:
        raise NotFound(f"no approval {ref!r}")
    return appr


def get_approval(rt: Runtime, ref: str) -> dict[str, Any]:
    """One approval item in full: the summary plus the whole plan, features and context notes."""
    with rt.db.reader() as s:
        appr = _find(s, ref)
        dec = s.get(Decision, appr.workflow_id)
        assert dec is not None
        return {**approval_view(appr, dec), "plan": dec.plan, "versions": dec.versions, "mode": dec.mode}


def list_approvals(rt: Runtime, status: str | None = "pending", limit: int = 100) -> list[dict[str, Any]]:
    with rt.db.reader() as s:
        q = sa.select(Approval, Decision).join(Decision, Decision.workflow_id == Approval.workflow_id)
        if status:
            q = q.where(Approval.status == status)
        rows = s.execute(q.order_by(Approval.requested_at).limit(limit)).all()
        return [approval_view(a, d) for a, d in rows]


def approval_view(a: Approval, d: Decision) -> dict[str, Any]:
    plan = d.plan
    return {
        "id": a.id,
        "workflow_id": a.workflow_id,
        "status": a.status,
        "why": a.reason_for_review,
        "requested_at": a.requested_at.isoformat(),
        "expires_at": a.expires_at.isoformat(),
        "decided_by": a.decided_by,
        "decided_at": a.decided_at.isoformat() if a.decided_at else None,
        "note": a.note,
        "guardrails": a.guardrails,
        "edits": a.edits,
        "decline_code": d.decline_code,
        "decline_category": d.decline_category,
        "mode": d.mode,
        "decision_status": d.status,
        "platform": d.platform,
        "invoice_id": d.invoice_id,
        "customer_id": d.customer_id,
        "amount": d.amount,
        "currency": d.currency,
        "route": d.route,
        "score": d.score,
        "reasons": plan.get("reasons", []),
        "retries": plan.get("retries", []),
        "actions": [
            {"type": x["type"], "at": x.get("at"), "detail": x.get("detail", {})}
            for x in plan.get("actions", [])
        ],
        "messages": plan.get("messages", []),
    }


def decide_approval(
    rt: Runtime,
    ref: str,
    *,
    approve: bool,
    by: str,
    note: str | None = None,
    edits: ApprovalEdits | None = None,
) -> dict[str, Any]:
    """`ref` is the approval id or the decision's workflow id. Edits need `approve=True`."""
    from billops.recovery.workflow import APPROVAL_TOPIC, followup_id

    if edits is not None and edits.is_empty():
        edits = None
    if edits is not None and not approve:
        raise BillopsError("edits go with an approval: a rejection executes nothing", 422)
    with rt.db.session() as s:
        appr = _find(s, ref)
        if appr.status != "pending":
            who = f" by {appr.decided_by}" if appr.decided_by else ""
            raise Conflict(f"approval {appr.id} is already {appr.status}{who}")
        dec = s.get(Decision, appr.workflow_id, with_for_update=True)
        assert dec is not None
        now = datetime.now(UTC)
        subject = f"{dec.platform}:invoice:{dec.invoice_id}"
        if edits is not None:
            new_plan, changes = apply_edits(dec, edits, rt, now=now)
            dec.plan = new_plan
            appr.edits = {"changes": changes, **edits.model_dump(mode="json", exclude_defaults=True)}
            audit.record(
                s,
                action="approval.edited",
                actor_type="human",
                actor=by,
                workflow_id=appr.workflow_id,
                trace_id=dec.trace_id,
                subject=subject,
                outcome={"changes": changes},
            )
        appr.status = "approved" if approve else "rejected"
        appr.decided_by, appr.decided_at, appr.note = by, now, note
        dec.status = "approved" if approve else "rejected"
        audit.record(
            s,
            action=f"approval.{appr.status}",
            actor_type="human",
            actor=by,
            workflow_id=appr.workflow_id,
            trace_id=dec.trace_id,
            subject=subject,
            outcome={"why": note, "edited": edits is not None},
        )
        label = "edited" if edits is not None else appr.status
        s.add(
            FeedbackLabel(
                workflow_id=appr.workflow_id, label=label, by=by, at=now, why=note, edits=appr.edits
            )
        )
        message = {"approved": approve, "by": by, "note": note, "status": appr.status}
        rt.dbos_client().send_in_transaction(
            s.connection(),
            followup_id(appr.workflow_id),
            message,
            topic=APPROVAL_TOPIC,
            idempotency_key=f"approval:{appr.workflow_id}",
        )
        s.flush()
        return approval_view(appr, dec)


def apply_edits(
    dec: Decision, edits: ApprovalEdits, rt: Runtime, *, now: datetime
) -> tuple[dict[str, Any], list[str]]:
    """The plan with the approver's edits, checked against the policy and the network spacing rule; the
    original plan is kept under `plan.original`. Returns (new plan, human-readable changes)."""
    from billops.recovery.planner import load_network_rules

    plan = {k: v for k, v in dec.plan.items() if k != "original"}
    original = dec.plan.get("original") or copy.deepcopy(plan)
    changes: list[str] = []
    actions: list[dict[str, Any]] = list(plan.get("actions", []))
    policy = rt.policy()
    if edits.retries is not None:
        times = edits.retries
        if times and dec.decline_category == "hard":
            raise BillopsError("this decline is hard (never retry): no retry can be approved", 422)
        if len(times) > policy.recovery.max_retries:
            raise BillopsError(
                f"at most {policy.recovery.max_retries} retries (policy recovery.max_retries)", 422
            )
        if times and times[0] < now - timedelta(minutes=1):
            raise BillopsError(f"retry time {times[0].isoformat()} is in the past", 422)
        deadline = dec.created_at + timedelta(days=policy.recovery.window_days)
        if times and times[-1] > deadline:
            raise BillopsError(
                f"retry time {times[-1].isoformat()} falls after the {policy.recovery.window_days}-day "
                f"recovery window (ends {deadline.isoformat()})",
                422,
            )
        spacing = load_network_rules(policy.network_rules).min_spacing_hours
        for a, b in pairwise(times):
            if b - a < timedelta(hours=spacing):
                raise BillopsError(f"retries must be at least {spacing:g} h apart (network rules)", 422)
        old = [a for a in actions if a["type"] == "retry_payment"]
        first_pm = old[0].get("detail", {}).get("payment_method") if old else None
        actions = [a for a in actions if a["type"] != "retry_payment"]
        actions += [
            {
                "type": "retry_payment",
                "at": t.isoformat(),
                "detail": {"n": i + 1, "payment_method": first_pm if i == 0 else None},
            }
            for i, t in enumerate(times)
        ]
        changes.append(
            "retries: "
            + (", ".join(str(r)[:16] for r in plan.get("retries", [])) or "none")
            + " → "
            + (", ".join(t.isoformat()[:16] for t in times) or "none")
        )
        plan["retries"] = [t.isoformat() for t in times]
        if times:
            plan["retry_blocked"] = None
    if edits.messages:
        messages = [dict(m) for m in plan.get("messages", [])]
        kinds = {m["kind"] for m in messages}
        for kind, m in edits.messages.items():
            if kind not in kinds:
                raise BillopsError(
                    f"no drafted message {kind!r} (drafted: {', '.join(sorted(kinds)) or 'none'})", 422
                )
            if _LINK.search(f"{m.subject or ''} {m.body}"):
                raise BillopsError(
                    f"message {kind}: links are not written by hand; put {{card_update_link}} where the "
                    "customer should update the card (the platform's own link is filled in when it is sent)",
                    422,
                )
            for msg in messages:
                if msg["kind"] == kind:
                    if m.subject is not None:
                        msg["subject"] = m.subject
                    msg["body"] = m.body
                    msg["template"] = f"{msg['template']}+edited"
            changes.append(f"message {kind} rewritten")
        plan["messages"] = messages
    if edits.drop_actions:
        present = {a["type"] for a in actions}
        for kind in edits.drop_actions:
            if kind not in present:
                raise BillopsError(f"no planned action {kind!r} (planned: {', '.join(sorted(present))})", 422)
        actions = [a for a in actions if a["type"] not in edits.drop_actions]
        if "retry_payment" in edits.drop_actions:
            plan["retries"] = []
        changes.append("dropped: " + ", ".join(edits.drop_actions))
    plan["actions"] = actions
    plan["original"] = original
    return plan, changes
