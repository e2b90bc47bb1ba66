"""/api routes for users and API tokens (admin only). Every change is audited with the calling admin's
username; a new token's plain text is in the answer of the request that issued it and nowhere else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from billops.governance import users
from billops.governance.access import require_role
from billops.governance.users import Principal
from billops.runtime import get_runtime
from billops.store.models import ApiToken, User

router = APIRouter(prefix="/api", tags=["users"])
admin = require_role("admin")


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
    username: str = Field(min_length=1, max_length=100)
    role: users.Role
    password: str | None = Field(
        default=None, max_length=1000, description="Console password (12+ characters); none: API tokens only."
    )


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="What the token is for, e.g. `ci`.")
    days: float = Field(gt=0, description="Lifetime in days (at most BILLOPS_TOKEN_MAX_DAYS).")


@router.get("/users", summary="Users and their roles (admin)", dependencies=[Depends(admin)])
def list_users() -> list[dict[str, Any]]:
    with get_runtime().db.reader() as s:
        active: dict[int, int] = {}
        now = datetime.now(UTC)
        for t, _u in users.list_tokens(s):
            if t.revoked_at is None and t.expires_at > now:
                active[t.user_id] = active.get(t.user_id, 0) + 1
        return [user_view(u, active.get(u.id, 0)) for u in users.list_users(s)]


@router.post("/users", status_code=201, summary="Add a user (admin)")
def add_user(body: NewUser, who: Principal = Depends(admin)) -> dict[str, Any]:
    with get_runtime().db.session() as s:
        u = users.create_user(s, body.username, body.role, body.password, by=who.username)
        return user_view(u, 0)


@router.post("/users/{username}/revoke", summary="Revoke a user: tokens and sessions end at once (admin)")
def revoke_user(username: str, who: Principal = Depends(admin)) -> dict[str, Any]:
    with get_runtime().db.session() as s:
        return user_view(users.revoke_user(s, username, by=who.username), 0)


@router.post(
    "/users/{username}/tokens",
    status_code=201,
    summary="Issue an API token (admin): the plain token is in this answer only",
)
def issue_token(username: str, body: NewToken, who: Principal = Depends(admin)) -> dict[str, Any]:
    rt = get_runtime()
    with rt.db.session() as s:
        tok, plain = users.issue_token(
            s, username, body.name, days=body.days, max_days=rt.settings.token_max_days, by=who.username
        )
        return {**token_view(tok, users.get_user(s, username)), "token": plain}


@router.get("/tokens", summary="API tokens, never their secrets (admin)", dependencies=[Depends(admin)])
def list_tokens(username: str | None = None) -> list[dict[str, Any]]:
    with get_runtime().db.reader() as s:
        return [token_view(t, u) for t, u in users.list_tokens(s, username)]


@router.post("/tokens/{token_id}/revoke", summary="Revoke an API token: it stops at once (admin)")
def revoke_token(token_id: int, who: Principal = Depends(admin)) -> dict[str, Any]:
    with get_runtime().db.session() as s:
        tok = users.revoke_token(s, token_id, by=who.username)
        user = s.get(User, tok.user_id)
        assert user is not None
        return token_view(tok, user)
