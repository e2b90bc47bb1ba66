"""Console pages: audit search and export, the policy with the kill switch, users and tokens (admin)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from billops.config import DEFAULT_POLICY_FILE
from billops.errors import BillopsError
from billops.governance import audit, control, users
from billops.runtime import get_runtime
from billops.store.models import AuditRecord
from billops.web.render import render
from billops.web.security import Viewer, page_viewer, post_viewer, require
from billops.web.views_ops import summarize

router = APIRouter(prefix="/console", include_in_schema=False)
PER_PAGE = 50
FILTERS = ("action", "workflow_id", "actor", "subject", "since", "until")


# ---------------------------------------------------------------- audit


def _audit_query(f: dict[str, str]) -> sa.Select[Any]:
    """The filter as SQL; raises BillopsError (422) naming a bad field."""
    q = sa.select(AuditRecord)
    if f.get("action"):
        q = q.where(AuditRecord.action.startswith(f["action"], autoescape=True))
    if f.get("workflow_id"):
        q = q.where(AuditRecord.workflow_id == f["workflow_id"])
    if f.get("actor"):
        q = q.where(AuditRecord.actor == f["actor"])
    if f.get("subject"):
        q = q.where(AuditRecord.subject.contains(f["subject"], autoescape=True))
    for key in ("since", "until"):
        if f.get(key):
            try:
                day = date.fromisoformat(f[key])
            except ValueError:
                raise BillopsError(f"{key}={f[key]!r} is not a date (use YYYY-MM-DD)", 422) from None
            start = datetime.combine(day if key == "since" else day + timedelta(days=1), time(), tzinfo=UTC)
            q = q.where(AuditRecord.at >= start) if key == "since" else q.where(AuditRecord.at < start)
    return q


def _filters(request: Request) -> dict[str, str]:
    return {k: request.query_params.get(k, "").strip()[:300] for k in FILTERS}


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, page: int = 1, v: Viewer = Depends(page_viewer)) -> Response:
    f = _filters(request)
    page = max(page, 1)
    error, rows, total = None, [], 0
    try:
        q = _audit_query(f)
    except BillopsError as exc:
        error = exc.message
    else:
        with get_runtime().db.reader() as s:
            total = int(s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0)
            recs = s.scalars(q.order_by(AuditRecord.seq.desc()).offset((page - 1) * PER_PAGE).limit(PER_PAGE))
            rows = [{**audit.fields(r), "summary": summarize(r.outcome or {})} for r in recs]
    query = urlencode({k: v2 for k, v2 in f.items() if v2})
    pages = max((total + PER_PAGE - 1) // PER_PAGE, 1)
    return render(
        request,
        "audit.html",
        status=422 if error else 200,
        rows=rows,
        f=f,
        error=error,
        page=page,
        pages=pages,
        total=total,
        query=query,
    )


@router.get("/audit/export")
def audit_export(request: Request, v: Viewer = Depends(page_viewer)) -> Response:
    """The current filter as JSONL, oldest first, in the same shape as `billops audit export`."""
    f = _filters(request)
    try:
        q = _audit_query(f).order_by(AuditRecord.seq)
    except BillopsError as exc:
        return render(request, "error.html", status=exc.status, message=exc.message)

    def lines() -> Iterator[str]:
        with get_runtime().db.reader() as s:
            for rec in s.scalars(q).yield_per(1000):
                row = {**audit.fields(rec), "prev_hash": rec.prev_hash, "hash": rec.hash}
                yield json.dumps(row, ensure_ascii=False) + "\n"

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="billops-audit-{stamp}.jsonl"'},
    )


# ---------------------------------------------------------------- policy and the kill switch


def _policy_page(
    request: Request, *, error: str | None = None, status: int = 200, done: str | None = None
) -> Response:
    rt = get_runtime()
    policy = rt.policy()
    path = rt.settings.policy_file or DEFAULT_POLICY_FILE
    with rt.db.reader() as s:
        ctl = control.controls(s)
    return render(
        request,
        "policy.html",
        status=status,
        policy=policy,
        policy_path=str(path),
        policy_text=path.read_text(encoding="utf-8"),
        ctl=ctl,
        error=error,
        done=done,
    )


@router.get("/policy", response_class=HTMLResponse)
def policy(request: Request, v: Viewer = Depends(page_viewer)) -> Response:
    return _policy_page(request, done=request.query_params.get("done"))


CONTROL_ACTIONS = {
    "pause": (control.pause_all, "kill switch on: every workflow runs as shadow"),
    "resume": (control.resume_all, "kill switch off"),
    "reset-breaker": (control.reset_breaker, "circuit breaker reset"),
}


@router.post("/controls/{what}")
async def controls_action(request: Request, what: str, v: Viewer = Depends(post_viewer)) -> Response:
    require(v, "admin")
    if what not in CONTROL_ACTIONS:
        return _policy_page(request, error=f"unknown control {what!r}", status=404)
    why = str((await request.form()).get("why") or "").strip()[:2000]
    if not why:
        return _policy_page(request, error="Say why (it goes into the audit log).", status=422)
    fn, done = CONTROL_ACTIONS[what]
    try:
        with get_runtime().db.session() as s:
            fn(s, by=v.username, why=why)
    except BillopsError as exc:
        return _policy_page(request, error=exc.message, status=exc.status)
    return RedirectResponse(f"/console/policy?{urlencode({'done': done})}", status_code=303)


# ---------------------------------------------------------------- users and tokens (admin)


def _user_state(revoked_at: datetime | None, locked_until: datetime | None) -> str:
    if revoked_at is not None:
        return f"revoked {revoked_at:%Y-%m-%d %H:%M} UTC"
    if locked_until is not None and locked_until > datetime.now(UTC):
        return f"locked until {locked_until:%Y-%m-%d %H:%M} UTC"
    return "active"


def _users_page(
    request: Request, *, error: str | None = None, status: int = 200, new_token: str | None = None
) -> Response:
    with get_runtime().db.reader() as s:
        people = [
            {
                "username": u.username,
                "role": u.role,
                "created_at": u.created_at,
                "created_by": u.created_by,
                "revoked_at": u.revoked_at,
                "locked_until": u.locked_until,
                "last_login_at": u.last_login_at,
                "console": u.password_hash is not None,
                "state": _user_state(u.revoked_at, u.locked_until),
            }
            for u in users.list_users(s)
        ]
        tokens = [
            {
                "id": t.id,
                "username": u.username,
                "name": t.name,
                "created_at": t.created_at,
                "expires_at": t.expires_at,
                "revoked_at": t.revoked_at,
                "last_used_at": t.last_used_at,
            }
            for t, u in users.list_tokens(s)
        ]
    return render(
        request,
        "users.html",
        status=status,
        people=people,
        tokens=tokens,
        error=error,
        new_token=new_token,
        done=request.query_params.get("done"),
        roles=users.ROLES,
        max_days=get_runtime().settings.token_max_days,
    )


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, v: Viewer = Depends(page_viewer)) -> Response:
    require(v, "admin")
    return _users_page(request)


async def _admin_form(request: Request, v: Viewer) -> dict[str, str]:
    require(v, "admin")
    form = await request.form()
    return {k: str(val).strip() for k, val in form.items() if isinstance(val, str)}


@router.post("/users/add")
async def users_add(request: Request, v: Viewer = Depends(post_viewer)) -> Response:
    f = await _admin_form(request, v)
    try:
        with get_runtime().db.session() as s:
            users.create_user(
                s, f.get("username", ""), f.get("role", ""), f.get("password") or None, by=v.username
            )
    except BillopsError as exc:
        return _users_page(request, error=exc.message, status=exc.status)
    return RedirectResponse(
        f"/console/users?{urlencode({'done': 'user ' + f['username'] + ' added'})}", status_code=303
    )


@router.post("/users/{username}/revoke")
async def users_revoke(request: Request, username: str, v: Viewer = Depends(post_viewer)) -> Response:
    await _admin_form(request, v)
    try:
        with get_runtime().db.session() as s:
            target = users.get_user(s, username)
            if target.role == "admin" and target.revoked_at is None and users.count_admins(s) <= 1:
                raise BillopsError("this is the last admin: add another admin before revoking this one", 409)
            users.revoke_user(s, username, by=v.username)
    except BillopsError as exc:
        return _users_page(request, error=exc.message, status=exc.status)
    return RedirectResponse(
        f"/console/users?{urlencode({'done': 'user ' + username + ' revoked'})}", status_code=303
    )


@router.post("/tokens/issue")
async def tokens_issue(request: Request, v: Viewer = Depends(post_viewer)) -> Response:
    f = await _admin_form(request, v)
    max_days = get_runtime().settings.token_max_days
    try:
        days = float(f.get("days") or 90)
    except ValueError:
        return _users_page(request, error=f"days={f.get('days')!r} is not a number", status=422)
    try:
        with get_runtime().db.session() as s:
            _, plain = users.issue_token(
                s, f.get("username", ""), f.get("name", ""), days=days, max_days=max_days, by=v.username
            )
    except BillopsError as exc:
        return _users_page(request, error=exc.message, status=exc.status)
    # Shown once, in this answer only (never stored in plain, never in a URL).
    return _users_page(request, new_token=plain)


@router.post("/tokens/{token_id}/revoke")
async def tokens_revoke(request: Request, token_id: int, v: Viewer = Depends(post_viewer)) -> Response:
    await _admin_form(request, v)
    try:
        with get_runtime().db.session() as s:
            users.revoke_token(s, token_id, by=v.username)
    except BillopsError as exc:
        return _users_page(request, error=exc.message, status=exc.status)
    return RedirectResponse(
        f"/console/users?{urlencode({'done': f'token {token_id} revoked'})}", status_code=303
    )
