"""Approve or reject a decision waiting for a human. The CLI, the API (and later the console) all call
`decide_approval`, which records the choice, audits it and sends it to the waiting workflow in ONE
transaction (the DBOS message row lives in the same database), so a choice is never half-made."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from billops.errors import Conflict, NotFound
from billops.governance import audit
from billops.runtime import Runtime
from billops.store.models import Approval, Decision


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
        "platform": d.platform,
        "invoice_id": d.invoice_id,
        "customer_id": d.customer_id,
        "amount": d.amount,
        "currency": d.currency,
        "route": d.route,
        "score": d.score,
        "reasons": plan.get("reasons", []),
        "retries": plan.get("retries", []),
        "actions": [x["type"] for x in plan.get("actions", [])],
        "messages": plan.get("messages", []),
    }


def decide_approval(
    rt: Runtime, ref: str, *, approve: bool, by: str, note: str | None = None
) -> dict[str, Any]:
    """`ref` is the approval id or the decision's workflow id."""
    from billops.recovery.workflow import APPROVAL_TOPIC, followup_id

    with rt.db.session() as s:
        q = sa.select(Approval)
        q = q.where(Approval.id == int(ref)) if ref.isdigit() else q.where(Approval.workflow_id == ref)
        appr = s.scalar(q)
        if appr is None:
            raise NotFound(f"no approval {ref!r}")
        if appr.status != "pending":
            who = f" by {appr.decided_by}" if appr.decided_by else ""
            raise Conflict(f"approval {appr.id} is already {appr.status}{who}")
        dec = s.get(Decision, appr.workflow_id)
        assert dec is not None
        now = datetime.now(UTC)
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
            subject=f"{dec.platform}:invoice:{dec.invoice_id}",
            outcome={"note": note} if note else {},
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
