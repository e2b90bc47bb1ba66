"""Who may call what. Every /api route depends on `require_role(<least role>)`: a bearer API token
(`Authorization: Bearer bo_<id>_<secret>`) whose user has at least that role. The console uses
signed session cookies instead (web/); the webhook routes use only the platforms' own authentication.

viewer: read everything; operator: also approve, reject and edit approvals;
admin: also the policy, users and tokens, the kill switch and the circuit breaker.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException, Request

from billops.governance.users import AuthError, Principal, Role, authenticate_token, should_touch, touch_token
from billops.runtime import get_runtime

BEARER = {"WWW-Authenticate": 'Bearer realm="billops"'}
INVALID = {"WWW-Authenticate": 'Bearer realm="billops", error="invalid_token"'}


def require_role(role: Role) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the calling principal, who must hold `role` or a higher one."""

    def dependency(request: Request) -> Principal:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise HTTPException(401, "this route needs an API token: Authorization: Bearer bo_…", BEARER)
        db = get_runtime().db
        with db.reader() as s:
            try:
                principal = authenticate_token(s, auth[7:].strip())
            except AuthError as exc:
                raise HTTPException(401, exc.message, INVALID) from None
        if not principal.can(role):
            raise HTTPException(
                403,
                f"{principal.username} has role {principal.role}; this route needs {role} or higher",
                {"WWW-Authenticate": 'Bearer realm="billops", error="insufficient_scope"'},
            )
        token_id = int(principal.via.split(":")[1])
        if should_touch(token_id):
            with db.session() as s:
                touch_token(s, token_id)
        request.state.principal = principal
        return principal

    dependency.required_role = role  # type: ignore[attr-defined]  # read by tests/test_routes_roles.py
    return dependency
