"""Console sessions and CSRF.

- The session cookie `billops_session` carries the session id signed with itsdangerous (max age =
  settings.session_hours); only the sha256 of the id is stored (table console_sessions). HttpOnly,
  SameSite=Lax, Secure when settings.secure_cookies.
- The signing key is settings.session_secret, else a random key kept in <data_dir>/console.key (0600).
- Every console POST carries the session's CSRF token, as the form field `csrf` or the header
  X-CSRF-Token (htmx sends it from hx-headers on <body>). The login form, before any session exists, is
  protected by a signed double-submit cookie `billops_login_csrf`.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from billops.config import Settings
from billops.governance.users import Principal, Role, session_principal
from billops.runtime import get_runtime

SESSION_COOKIE = "billops_session"
LOGIN_CSRF_COOKIE = "billops_login_csrf"
LOGIN_CSRF_MAX_AGE = 2 * 3600
_keys: dict[Path, bytes] = {}
_keys_lock = threading.Lock()


class NeedLogin(Exception):
    """No valid console session: GET pages redirect to the login form, POSTs answer 401."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


class ConsoleDenied(Exception):
    """A console request that is refused (403 CSRF / role), rendered as a page saying why."""

    def __init__(self, message: str, status: int = 403) -> None:
        self.message, self.status = message, status


@dataclass(frozen=True)
class Viewer:
    """The logged-in console user of a request."""

    principal: Principal
    csrf: str
    session_id: str

    @property
    def username(self) -> str:
        return self.principal.username

    def can(self, role: Role) -> bool:
        return self.principal.can(role)


def console_key(settings: Settings) -> bytes:
    """The cookie-signing key: the configured secret, else <data_dir>/console.key, made once (0600)."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    path = (settings.data_dir / "console.key").resolve()
    with _keys_lock:
        if path in _keys:
            return _keys[path]
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes().strip()
        else:
            key = secrets.token_urlsafe(48).encode()
            with os.fdopen(fd, "wb") as f:
                f.write(key)
        if len(key) < 32:
            raise RuntimeError(f"{path}: the console key is too short; delete the file to make a new one")
        _keys[path] = key
        return key


def _serializer(settings: Settings, salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(console_key(settings), salt=salt)


def _cookie(response: Response, settings: Settings, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )


def set_session_cookie(response: Response, settings: Settings, session_id: str) -> None:
    value = _serializer(settings, "billops-session").dumps(session_id)
    _cookie(response, settings, SESSION_COOKIE, value, int(settings.session_hours * 3600))


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/console")


def read_session_id(request: Request, settings: Settings) -> str | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        sid = _serializer(settings, "billops-session").loads(raw, max_age=int(settings.session_hours * 3600))
    except BadSignature:  # tampered, signed with another key, or too old
        return None
    return sid if isinstance(sid, str) else None


def current_viewer(request: Request) -> Viewer | None:
    rt = get_runtime()
    sid = read_session_id(request, rt.settings)
    if sid is None:
        return None
    with rt.db.reader() as s:
        found = session_principal(s, sid)
    if found is None:
        return None
    principal, csrf = found
    return Viewer(principal=principal, csrf=csrf, session_id=sid)


def safe_next(value: str | None) -> str:
    """Only a relative console path: no scheme, no host, no `//` or backslash tricks."""
    if not value or not value.startswith("/console") or value.startswith("//") or "\\" in value:
        return "/console"
    if any(c in value for c in "\r\n") or value.startswith("/console/login"):
        return "/console"
    return value


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/console/login?next={quote(target, safe='')}"


def page_viewer(request: Request) -> Viewer:
    """Dependency for console GET pages: the logged-in user, else a redirect to the login form."""
    viewer = current_viewer(request)
    if viewer is None:
        raise NeedLogin(login_url(request))
    request.state.viewer = viewer
    return viewer


async def post_viewer(request: Request) -> Viewer:
    """Dependency for console POSTs: a live session AND its CSRF token (form field or header)."""
    viewer = current_viewer(request)
    if viewer is None:
        raise ConsoleDenied("your console session is missing or has expired: log in again", 401)
    given = request.headers.get("x-csrf-token")
    if not given:
        form = await request.form()
        field = form.get("csrf")
        given = field if isinstance(field, str) else None
    if not given or not hmac.compare_digest(given.encode(), viewer.csrf.encode()):
        raise ConsoleDenied(
            "CSRF check failed: this form did not carry your session's token (reload the page and try "
            "again). Nothing was changed."
        )
    request.state.viewer = viewer
    return viewer


def require(viewer: Viewer, role: Role) -> None:
    if not viewer.can(role):
        raise ConsoleDenied(
            f"{viewer.username} has role {viewer.principal.role}; this needs {role} or higher"
        )


# ---------------------------------------------------------------- login CSRF (double-submit, signed)


def new_login_csrf(settings: Settings) -> tuple[str, str]:
    """(token for the form field, signed value for the cookie)."""
    token = secrets.token_urlsafe(24)
    return token, _serializer(settings, "billops-login-csrf").dumps(token)


def set_login_csrf_cookie(response: Response, settings: Settings, signed: str) -> None:
    _cookie(response, settings, LOGIN_CSRF_COOKIE, signed, LOGIN_CSRF_MAX_AGE)


def check_login_csrf(request: Request, settings: Settings, given: str | None) -> bool:
    raw = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not raw or not given:
        return False
    try:
        token = _serializer(settings, "billops-login-csrf").loads(raw, max_age=LOGIN_CSRF_MAX_AGE)
    except BadSignature:
        return False
    return isinstance(token, str) and hmac.compare_digest(token.encode(), given.encode())
