"""Console pages for the daily work: the overview (KPIs), the approval queue and its items, decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from billops.api import decision_view
from billops.errors import BillopsError, NotFound
from billops.governance.approvals import (
    ApprovalEdits,
    MessageEdit,
    decide_approval,
    get_approval,
    list_approvals,
)
from billops.governance.kpis import compute_kpis, parse_range, range_bounds
from billops.runtime import get_runtime
from billops.store.models import Approval, AuditRecord, Decision
from billops.web.render import render
from billops.web.security import ConsoleDenied, Viewer, page_viewer, post_viewer, require

router = APIRouter(prefix="/console", include_in_schema=False)
STATUSES = ("pending", "approved", "rejected", "expired", "all")


@router.get("", response_class=HTMLResponse)
def overview(
    request: Request, since: str | None = None, until: str | None = None, v: Viewer = Depends(page_viewer)
) -> Response:
    error, status = None, 200
    try:
        start, end = parse_range(since or None, until or None)
    except ValueError as exc:
        error, status = str(exc), 422
        start, end = parse_range(None, None)
    with get_runtime().db.reader() as s:
        k = compute_kpis(s, *range_bounds(start, end))
    return render(
        request,
        "overview.html",
        status=status,
        k=k,
        since=start.isoformat(),
        until=end.isoformat(),
        error=error,
    )


@router.get("/approvals", response_class=HTMLResponse)
def approvals(request: Request, status: str = "pending", v: Viewer = Depends(page_viewer)) -> Response:
    if status not in STATUSES:
        return render(
            request,
            "approvals.html",
            status=422,
            items=[],
            selected=status,
            statuses=STATUSES,
            error=f"unknown status {status!r}: use one of {', '.join(STATUSES)}",
        )
    items = list_approvals(get_runtime(), status=None if status == "all" else status, limit=500)
    return render(request, "approvals.html", items=items, selected=status, statuses=STATUSES, error=None)


def _detail(
    request: Request,
    ref: str,
    *,
    error: str | None = None,
    status: int = 200,
    form: dict[str, Any] | None = None,
) -> Response:
    try:
        item = get_approval(get_runtime(), ref)
    except NotFound as exc:
        raise ConsoleDenied(exc.message, 404) from None
    retries = [r[:16] for r in item.get("retries") or []]
    return render(
        request,
        "approval.html",
        status=status,
        a=item,
        error=error,
        form=form or {},
        retry_inputs=[*retries, ""],
        done=request.query_params.get("done"),
    )


@router.get("/approvals/{ref}", response_class=HTMLResponse)
def approval(request: Request, ref: str, v: Viewer = Depends(page_viewer)) -> Response:
    return _detail(request, ref)


def _decide(
    request: Request, ref: str, v: Viewer, *, approve: bool, note: str | None, edits: ApprovalEdits | None
) -> Response:
    try:
        out = decide_approval(get_runtime(), ref, approve=approve, by=v.username, note=note, edits=edits)
    except BillopsError as exc:
        return _detail(request, ref, error=exc.message, status=exc.status, form={"why": note or ""})
    return RedirectResponse(f"/console/approvals/{out['id']}?done={out['status']}", status_code=303)


@router.post("/approvals/{ref}/approve")
async def approve(request: Request, ref: str, v: Viewer = Depends(post_viewer)) -> Response:
    require(v, "operator")
    form = await request.form()
    why = str(form.get("why") or "").strip()[:2000] or None
    return _decide(request, ref, v, approve=True, note=why, edits=None)


@router.post("/approvals/{ref}/reject")
async def reject(request: Request, ref: str, v: Viewer = Depends(post_viewer)) -> Response:
    require(v, "operator")
    form = await request.form()
    why = str(form.get("why") or "").strip()[:2000]
    if not why:
        return _detail(
            request, ref, error="A rejection needs a why (it goes into the audit log).", status=422
        )
    return _decide(request, ref, v, approve=False, note=why, edits=None)


def parse_utc_local(value: str) -> datetime:
    """A datetime-local input ('2026-11-23T09:00'), read as UTC."""
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BillopsError(
            f"retry time {value!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC)", 422
        ) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def edits_from_form(form: Any, item: dict[str, Any]) -> ApprovalEdits:
    """Only what differs from the plan becomes an edit."""
    planned = [parse_utc_local(r[:16]) for r in item.get("retries") or []]
    given = sorted(parse_utc_local(x) for x in form.getlist("retry") if str(x).strip())
    retries = given if given != planned else None
    messages: dict[str, MessageEdit] = {}
    for m in item.get("messages") or []:
        kind = m["kind"]
        body = form.get(f"body_{kind}")
        subject = form.get(f"subject_{kind}")
        if body is None:
            continue
        body = str(body).replace("\r\n", "\n")
        subject = str(subject) if subject is not None and m.get("subject") is not None else None
        if body != (m.get("body") or "") or (subject is not None and subject != m.get("subject")):
            messages[kind] = MessageEdit(subject=subject, body=body)
    drop = [str(x) for x in form.getlist("drop")]
    return ApprovalEdits(retries=retries, messages=messages, drop_actions=drop)


@router.post("/approvals/{ref}/edit")
async def edit_then_approve(request: Request, ref: str, v: Viewer = Depends(post_viewer)) -> Response:
    require(v, "operator")
    form = await request.form()
    why = str(form.get("why") or "").strip()[:2000] or None
    try:
        item = get_approval(get_runtime(), ref)
        edits = edits_from_form(form, item)
    except NotFound as exc:
        raise ConsoleDenied(exc.message, 404) from None
    except BillopsError as exc:
        return _detail(request, ref, error=exc.message, status=exc.status, form={"why": why or ""})
    except ValidationError as exc:
        msg = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        return _detail(request, ref, error=msg, status=422, form={"why": why or ""})
    if edits.is_empty():
        return _detail(
            request,
            ref,
            status=422,
            form={"why": why or ""},
            error="Nothing was edited: change a retry time or a message, or drop an action (or use Approve).",
        )
    return _decide(request, ref, v, approve=True, note=why, edits=edits)


def summarize(outcome: dict[str, Any], limit: int = 160) -> str:
    parts = []
    for key, value in outcome.items():
        if value in (None, "", [], {}):
            continue
        if isinstance(value, dict):
            inner = (
                value.get("status")
                or value.get("why")
                or ", ".join(f"{k}={v}" for k, v in list(value.items())[:3])
            )
            parts.append(f"{key}: {inner}")
        elif isinstance(value, list):
            parts.append(f"{key}: {', '.join(str(x) for x in value[:4])}")
        else:
            parts.append(f"{key}: {value}")
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@router.get("/decisions/{workflow_id:path}", response_class=HTMLResponse)
def decision(request: Request, workflow_id: str, v: Viewer = Depends(page_viewer)) -> Response:
    with get_runtime().db.reader() as s:
        d = s.get(Decision, workflow_id)
        if d is None:
            raise ConsoleDenied(f"no decision {workflow_id!r}", 404)
        appr = s.scalar(sa.select(Approval).where(Approval.workflow_id == workflow_id))
        steps = [
            {
                "seq": r.seq,
                "at": r.at,
                "actor": r.actor,
                "actor_type": r.actor_type,
                "action": r.action,
                "summary": summarize(r.outcome or {}),
            }
            for r in s.scalars(
                sa.select(AuditRecord).where(AuditRecord.workflow_id == workflow_id).order_by(AuditRecord.seq)
            )
        ]
        view: dict[str, Any] = {
            **decision_view(d),  # the same fields as GET /api/decisions/{id}, with datetimes for the page
            "created_at": d.created_at,
            "updated_at": d.updated_at,
            "approval": {"id": appr.id, "status": appr.status} if appr else None,
        }
    return render(
        request,
        "decision.html",
        d=view,
        steps=steps,
        final=(view["outcome"] or {}).get("final"),
    )
