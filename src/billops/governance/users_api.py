"""/api routes for users and API tokens (admin only). Every change is audited with the calling admin's
username; a new token's plain text is in the answer of the request that issued it and nowhere else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from billops.errors import error_responses
from billops.governance import users
from billops.governance.access import DB_INT_MAX, ApiRoute, require_role
from billops.governance.users import Principal
from billops.runtime import get_runtime
from billops.store.models import ApiToken, User

router = APIRouter(prefix="/api", tags=["users"], route_class=ApiRoute)
admin = require_role("admin")
Username = Annotated[str, Path(min_length=1, max_length=100, description="The user's name.")]


def user_view(u: User, active_tokens: int | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "username": u.username,
        "role": u.role,
        "console_login": u.password_hash is not None,
        "created_at": u.created_at.isoformat(),
        "created_by": u.created_by,
        "revoked_at": u.revoked_at.isoformat() if u.revoked_at else None,
        "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
        "locked_until": u.locked_until.isoformat() if u.locked_until else None,
    }
    if active_tokens is not None:
        view["active_tokens"] = active_tokens
    return view


def token_view(t: ApiToken, u: User) -> dict[str, Any]:
    return {
        "id": t.id,
        "username": u.username,
        "name": t.name,
        "created_at": t.created_at.isoformat(),
        "expires_at": t.expires_at.isoformat(),
        "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
        "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
    }


class NewUser(BaseModel):
    # The pattern and the password's length are checked by governance/users.py (its messages); the
    # schema states them so that clients and schema-driven tests know them.
    username: str = Field(
        min_length=1,
        max_length=100,
        description="Letters, digits and `. _ @ + -`, starting with a letter or digit.",
        json_schema_extra={"pattern": users.USERNAME.pattern},
    )
    role: users.Role
    password: str | None = Field(
        default=None,
        max_length=1000,
        description=f"Console password ({users.MIN_PASSWORD}+ characters); none: API tokens only.",
        json_schema_extra={"minLength": users.MIN_PASSWORD},
    )


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="What the token is for, e.g. `ci`.")
    days: float = Field(
        gt=0, allow_inf_nan=False, description="Lifetime in days (at most BILLOPS_TOKEN_MAX_DAYS)."
    )


@router.get("/users", summary="Users and their roles (admin)", dependencies=[Depends(admin)])
def list_users() -> list[dict[str, Any]]:
    with get_runtime().db.reader() as s:
        active: dict[int, int] = {}
        now = datetime.now(UTC)
        for t, _u in users.list_tokens(s):
            if t.revoked_at is None and t.expires_at > now:
                active[t.user_id] = active.get(t.user_id, 0) + 1
        return [user_view(u, active.get(u.id, 0)) for u in users.list_users(s)]


@router.post("/users", status_code=201, summary="Add a user (admin)", responses=error_responses(409))
def add_user(body: NewUser, who: Principal = Depends(admin)) -> dict[str, Any]:
    with get_runtime().db.session() as s:
        u = users.create_user(s, body.username, body.role, body.password, by=who.username)
        return user_view(u, 0)


@router.post(
    "/users/{username}/revoke",
    summary="Revoke a user: tokens and sessions end at once (admin)",
    responses=error_responses(404, 409),
)
def revoke_user(username: Username, who: Principal = Depends(admin)) -> dict[str, Any]:
    with get_runtime().db.session() as s:
        return user_view(users.revoke_user(s, username, by=who.username), 0)


@router.post(
    "/users/{username}/tokens",
    status_code=201,
    summary="Issue an API token (admin): the plain token is in this answer only",
    responses=error_responses(404, 409),
)
def issue_token(username: Username, body: NewToken, who: Principal = Depends(admin)) -> dict[str, Any]:
    rt = get_runtime()
    with rt.db.session() as s:
        tok, plain = users.issue_token(
            s, username, body.name, days=body.days, max_days=rt.settings.token_max_days, by=who.username
        )
        return {**token_view(tok, users.get_user(s, username)), "token": plain}


@router.get("/tokens", summary="API tokens, never their secrets (admin)", dependencies=[Depends(admin)])
def list_tokens(
    username: str | None = Query(None, max_length=100, description="Only this user's tokens."),
) -> list[dict[str, Any]]:
    with get_runtime().db.reader() as s:
        return [token_view(t, u) for t, u in users.list_tokens(s, username)]


@router.post(
    "/tokens/{token_id}/revoke",
    summary="Revoke an API token: it stops at once (admin)",
    responses=error_responses(404, 409),
)
def revoke_token(
    token_id: int = Path(ge=1, le=DB_INT_MAX, description="The token's id (the `<id>` of `bo_<id>_…`)."),
    who: Principal = Depends(admin),
) -> dict[str, Any]:
    with get_runtime().db.session() as s:
        tok = users.revoke_token(s, token_id, by=who.username)
        user = s.get(User, tok.user_id)
        assert user is not None
        return token_view(tok, user)
