"""Human overrides as training labels: every approval, edit, rejection and expiry is a FeedbackLabel;
`billops feedback export` writes them with the decision's features, its route and score, what the human
changed, and how the recovery ended, so the next training can learn from them (docs/governance.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billops.store.models import Decision, FeedbackLabel


def feedback_rows(s: Session, *, limit: int | None = None, since: Any = None) -> Iterator[dict[str, Any]]:
    q = (
        sa.select(FeedbackLabel, Decision)
        .join(Decision, Decision.workflow_id == FeedbackLabel.workflow_id)
        .order_by(FeedbackLabel.id)
    )
    if since is not None:
        q = q.where(FeedbackLabel.at >= since)
    if limit is not None:
        q = q.limit(limit)
    for label, d in s.execute(q):
        plan = d.plan.get("original") or d.plan
        yield {
            "workflow_id": d.workflow_id,
            "label": label.label,
            "by": label.by,
            "at": label.at.isoformat(),
            "why": label.why,
            "edits": label.edits,
            "platform": d.platform,
            "invoice_id": d.invoice_id,
            "customer_id": d.customer_id,
            "amount": d.amount,
            "currency": d.currency,
            "decline_code": d.decline_code,
            "decline_category": d.decline_category,
            "model_route": plan.get("route"),
            "model_score": plan.get("score"),
            "model_retries": plan.get("retries", []),
            "scorer": d.versions.get("scorer"),
            "model": d.versions.get("model"),
            "policy": d.versions.get("policy"),
            "final_status": d.status,
            "outcome": d.outcome.get("final", {}).get("status"),
            "features": plan.get("features", {}),
        }
