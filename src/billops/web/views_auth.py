"""Console login and logout."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from billops.governance import users
from billops.runtime import get_runtime
from billops.web.render import render
from billops.web.security import (
    LOGIN_CSRF_COOKIE,
    Viewer,
    check_login_csrf,
    clear_session_cookie,
    current_viewer,
    new_login_csrf,
    post_viewer,
    safe_next,
    set_login_csrf_cookie,
    set_session_cookie,
)

router = APIRouter(prefix="/console", include_in_schema=False)


def _login_page(
    request: Request, *, next_url: str, error: str | None = None, status: int = 200
) -> HTMLResponse:
    settings = get_runtime().settings
    token, signed = new_login_csrf(settings)
    page = render(request, "login.html", status=status, next_url=next_url, error=error, csrf=token)
    set_login_csrf_cookie(page, settings, signed)
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
    with rt.db.session() as s:
        result = users.login(
            s,
            username,
            password,
            max_failures=st.login_max_failures,
            lockout=timedelta(minutes=st.login_lockout_minutes),
        )
        if isinstance(result, users.AuthError):
            error: users.AuthError | None = result
            sid = ""
        else:
            error = None
            sid, _csrf = users.create_session(s, result, hours=st.session_hours)
    # The failure count and its audit record are committed above, before this answer.
    if error is not None:
        return _login_page(request, next_url=next_url, error=error.message, status=error.status)
    resp = RedirectResponse(next_url, status_code=303)
    set_session_cookie(resp, st, sid)
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
