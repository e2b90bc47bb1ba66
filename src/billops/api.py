"""The HTTP API under /api: status, decisions, approvals.

Access: with `BILLOPS_API_TOKEN` set, every /api route needs `Authorization: Bearer <token>`;
without one, the API answers loopback clients only (a laptop install) and refuses everyone else.
Roles and per-user tokens come with the governance work; the webhook routes never use this.
"""

from __future__ import annotations

import hmac
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from billops.runtime import get_runtime
from billops.store.models import Decision, InboxEvent

LOOPBACK = {"127.0.0.1", "::1", "localhost", "testclient"}


def require_access(request: Request) -> None:
    token = get_runtime().settings.api_token
    if token is None:
        host = request.client.host if request.client else ""
        if host not in LOOPBACK:
            raise HTTPException(403, "the API answers loopback clients only unless BILLOPS_API_TOKEN is set")
        return
    auth = request.headers.get("authorization", "")
    given = auth[7:] if auth.lower().startswith("bearer ") else ""
    if not given or not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/api", tags=["api"], dependencies=[Depends(require_access)])


@router.get("/status", summary="Events, decisions and workflow counts")
def status() -> dict[str, Any]:
    rt = get_runtime()
    with rt.db.reader() as s:
        events = s.scalar(sa.select(sa.func.count()).select_from(InboxEvent)) or 0
        decisions = s.scalar(sa.select(sa.func.count()).select_from(Decision)) or 0
    counts = {"pending": 0, "enqueued": 0, "success": 0, "error": 0, "other": 0}
    with rt.db.engine.connect() as c:
        schema = "" if rt.db.is_sqlite else "dbos."
        for st, n in c.execute(
            sa.text(f"SELECT status, count(*) FROM {schema}workflow_status GROUP BY status")
        ):
            key = str(st).lower()
            counts[key if key in counts else "other"] += n
    return {"events": events, "decisions": decisions, "workflows": counts}


def decision_view(d: Decision) -> dict[str, Any]:
    return {
        "workflow_id": d.workflow_id,
        "platform": d.platform,
        "invoice_id": d.invoice_id,
        "customer_id": d.customer_id,
        "event_id": d.event_id,
        "amount": d.amount,
        "currency": d.currency,
        "route": d.route,
        "score": d.score,
        "mode": d.mode,
        "status": d.status,
        "decline_code": d.decline_code,
        "decline_category": d.decline_category,
        "plan": d.plan,
        "versions": d.versions,
        "outcome": d.outcome,
        "trace_id": d.trace_id,
        "created_at": d.created_at.isoformat(),
        "updated_at": d.updated_at.isoformat(),
    }


@router.get("/decisions", summary="Recent decisions, newest first")
def decisions(
    route: str | None = None, status: str | None = None, limit: int = Query(100, ge=1, le=5000)
) -> list[dict[str, Any]]:
    with get_runtime().db.reader() as s:
        q = sa.select(Decision).order_by(Decision.created_at.desc()).limit(limit)
        if route:
            q = q.where(Decision.route == route)
        if status:
            q = q.where(Decision.status == status)
        return [decision_view(d) for d in s.scalars(q)]


@router.get("/decisions/{workflow_id}", summary="One decision")
def decision(workflow_id: str) -> dict[str, Any]:
    with get_runtime().db.reader() as s:
        d = s.get(Decision, workflow_id)
        if d is None:
            raise HTTPException(404, f"no decision {workflow_id!r}")
        return decision_view(d)
