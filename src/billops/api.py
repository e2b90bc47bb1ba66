"""The HTTP API under /api: status, decisions, and who am I. The approval queue, policy and controls are in
governance/routes.py, users and tokens in governance/users_api.py.

Access (docs/access.md): every route states its least role with `require_role(...)`; a caller sends a
per-user API token, `Authorization: Bearer bo_<id>_<secret>`. The webhook routes never use this.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query

from billops.errors import NotFound, error_responses
from billops.governance.access import ApiRoute, require_role
from billops.governance.control import controls
from billops.governance.users import Principal
from billops.runtime import get_runtime
from billops.store.models import Decision, InboxEvent

router = APIRouter(prefix="/api", tags=["api"], route_class=ApiRoute)
viewer = require_role("viewer")


@router.get("/me", summary="Who am I: the token's user, role and token id")
def me(who: Principal = Depends(viewer)) -> dict[str, Any]:
    return {"username": who.username, "role": who.role, "via": who.via}


@router.get("/status", summary="Events, decisions and workflow counts", dependencies=[Depends(viewer)])
def status() -> dict[str, Any]:
    rt = get_runtime()
    with rt.db.reader() as s:
        events = s.scalar(sa.select(sa.func.count()).select_from(InboxEvent)) or 0
        decisions = s.scalar(sa.select(sa.func.count()).select_from(Decision)) or 0
        switches = controls(s).as_dict()
    counts = {"pending": 0, "enqueued": 0, "success": 0, "error": 0, "other": 0}
    with rt.db.engine.connect() as c:
        schema = "" if rt.db.is_sqlite else "dbos."
        for st, n in c.execute(
            sa.text(f"SELECT status, count(*) FROM {schema}workflow_status GROUP BY status")
        ):
            key = str(st).lower()
            counts[key if key in counts else "other"] += n
    return {"events": events, "decisions": decisions, "workflows": counts, "controls": switches}


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


@router.get("/decisions", summary="Recent decisions, newest first", dependencies=[Depends(viewer)])
def decisions(
    route: str | None = Query(None, max_length=40, description="Only this route, e.g. `retry`."),
    status: str | None = Query(None, max_length=40, description="Only this status, e.g. `approved`."),
    limit: int = Query(100, ge=1, le=5000),
) -> list[dict[str, Any]]:
    with get_runtime().db.reader() as s:
        q = sa.select(Decision).order_by(Decision.created_at.desc()).limit(limit)
        if route:
            q = q.where(Decision.route == route)
        if status:
            q = q.where(Decision.status == status)
        return [decision_view(d) for d in s.scalars(q)]


@router.get(
    "/decisions/{workflow_id}",
    summary="One decision",
    dependencies=[Depends(viewer)],
    responses=error_responses(404),
)
def decision(
    workflow_id: str = Path(max_length=300, description="`platform:event_id`, e.g. `stripe:evt_1`."),
) -> dict[str, Any]:
    with get_runtime().db.reader() as s:
        d = s.get(Decision, workflow_id)
        if d is None:
            raise NotFound(f"no decision {workflow_id!r}")
        return decision_view(d)
