"""Console login and logout.

Logins are throttled per (account, client), per client and per account (governance/login_throttle.py);
the client is the address the app sees (`request.client.host`: behind a reverse proxy, run uvicorn
with `--forwarded-allow-ips` so that it is the caller's, not the proxy's). A successful login leaves a
signed device cookie `billops_device` (username + random nonce, 180 days, path /console/login): the
browser that carries it counts per (account, device) and is not slowed by the account's other clients.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from billops.config import Settings
from billops.governance import users
from billops.governance.login_throttle import LoginLimits, client_of
from billops.runtime import get_runtime
from billops.web.render import render
from billops.web.security import (
    LOGIN_CSRF_COOKIE,
    Viewer,
    check_login_csrf,
    clear_session_cookie,
    console_key,
    current_viewer,
    new_login_csrf,
    post_viewer,
    safe_next,
    set_login_csrf_cookie,
    set_session_cookie,
)

router = APIRouter(prefix="/console", include_in_schema=False)
DEVICE_COOKIE = "billops_device"
DEVICE_MAX_AGE = int(timedelta(days=180).total_seconds())


def _devices(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(console_key(settings), salt="billops-device")


def device_nonce(request: Request, settings: Settings, username: str) -> str | None:
    """The nonce of this browser's device cookie if it was issued for `username`, else None."""
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return None
    try:
        value = _devices(settings).loads(raw, max_age=DEVICE_MAX_AGE)
    except BadSignature:
        return None
    if isinstance(value, list) and len(value) == 2 and value[0] == username and isinstance(value[1], str):
        return value[1]
    return None


def set_device_cookie(response: Response, settings: Settings, username: str, nonce: str | None) -> None:
    value = _devices(settings).dumps([username, nonce or secrets.token_urlsafe(16)])
    response.set_cookie(
        DEVICE_COOKIE,
        value,
        max_age=DEVICE_MAX_AGE,
        path="/console/login",
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )


def _login_page(
    request: Request,
    *,
    next_url: str,
    error: str | None = None,
    status: int = 200,
    retry_after: int | None = None,
) -> HTMLResponse:
    settings = get_runtime().settings
    token, signed = new_login_csrf(settings)
    page = render(request, "login.html", status=status, next_url=next_url, error=error, csrf=token)
    set_login_csrf_cookie(page, settings, signed)
    if retry_after is not None:
        page.headers["Retry-After"] = str(retry_after)
    return page


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    if current_viewer(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, next_url=safe_next(next))


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    username: str = Form("", max_length=200),
    password: str = Form("", max_length=1000),
    csrf: str = Form(""),
    next: str = Form("/console"),
) -> Response:
    rt = get_runtime()
    next_url = safe_next(next)
    if not check_login_csrf(request, rt.settings, csrf):
        return _login_page(
            request,
            next_url=next_url,
            error="The login form expired or was not sent from this page (CSRF check). Please try again.",
            status=403,
        )
    if not username or not password:
        return _login_page(request, next_url=next_url, error="Enter a username and a password.", status=422)
    st = rt.settings
    device = device_nonce(request, st, username)
    with rt.db.session() as s:
        result = users.login(
            s,
            username,
            password,
            client=client_of(request.client.host if request.client else None),
            device=device,
            limits=LoginLimits.from_settings(st),
        )
        if isinstance(result, users.AuthError):
            error: users.AuthError | None = result
            sid = ""
        else:
            error = None
            sid, _csrf = users.create_session(s, result, hours=st.session_hours)
    # The failure counts and their audit sample are committed above, before this answer.
    if error is not None:
        return _login_page(
            request,
            next_url=next_url,
            error=error.message,
            status=error.status,
            retry_after=error.retry_after,
        )
    resp = RedirectResponse(next_url, status_code=303)
    set_session_cookie(resp, st, sid)
    set_device_cookie(resp, st, username, device)
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
    return resp


@router.post("/logout")
def logout(viewer: Viewer = Depends(post_viewer)) -> Response:
    rt = get_runtime()
    with rt.db.session() as s:
        users.end_session(s, viewer.session_id)
    resp = RedirectResponse("/console/login", status_code=303)
    clear_session_cookie(resp)
    return resp
