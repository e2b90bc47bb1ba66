"""Users, API tokens and console sessions, with roles viewer < operator < admin.

Passwords are stored as argon2id hashes; API token secrets as a keyed HMAC-SHA256 whose key is kept
outside the database (governance/token_secrets.py). An API token reads `bo_<id>_<secret>`: the id finds
the row, the secret is checked against its hash (microseconds), and revocation, expiry and the user's
role are read from the database on every request, so a revoked token stops at once. Every way a token
can fail answers the same "invalid or expired token" at the same cost.

Console logins back off per (account, client), per client and per account instead of locking
(governance/login_throttle.py). Unknown users, wrong passwords, revoked and token-only users answer the
same 401 at the cost of one argon2 check; a throttled attempt answers 429 before any password work, the
same whether or not the user exists. Every change is in the audit log; failed logins are sampled.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billops.config import Settings
from billops.errors import BillopsError, Conflict, NotFound
from billops.governance import audit, login_throttle, token_secrets
from billops.governance.login_throttle import Attempt, LoginLimits
from billops.store.models import ApiToken, ConsoleSession, User

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
MIN_PASSWORD = 12
TOKEN = re.compile(r"bo_([1-9][0-9]{0,11})_([A-Za-z0-9_-]{20,100})")
TOKEN_ID_MAX = 2_147_483_647  # an integer column on PostgreSQL: a larger id cannot exist (nor be queried)
INVALID_TOKEN = "invalid or expired token"
WRONG_LOGIN = "wrong username or password"

# Pre-0005 tokens verified with argon2, waiting to be re-stored keyed: token id -> (old hash, new hash).
_rekey: dict[int, tuple[str, str]] = {}
_rekey_lock = threading.Lock()


class AuthError(BillopsError):
    """Authentication failed (401), the role is not enough (403) or logins are throttled (429, with
    `retry_after` seconds)."""

    def __init__(self, message: str, status: int = 401, *, retry_after: int | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user through an API token or a console session."""

    user_id: int
    username: str
    role: Role
    via: str  # "token:<id>" | "session"

    def can(self, role: Role) -> bool:
        return RANK[self.role] >= RANK[role]


def _now() -> datetime:
    return datetime.now(UTC)


def check_role(role: str) -> Role:
    if role not in RANK:
        raise BillopsError(f"unknown role {role!r}: use one of {', '.join(ROLES)}", 422)
    return role


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise BillopsError(f"a password needs at least {MIN_PASSWORD} characters", 422)


# ---------------------------------------------------------------- users


def create_user(s: Session, username: str, role: str, password: str | None, *, by: str) -> User:
    if not USERNAME.match(username):
        raise BillopsError(
            f"username {username!r}: letters, digits and . _ @ + - only, starting with a letter or digit",
            422,
        )
    role = check_role(role)
    if password is not None:
        check_password(password)
    if s.scalar(sa.select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(
        username=username,
        role=role,
        password_hash=token_secrets.hash_password(password) if password is not None else None,
        created_by=by,
    )
    s.add(user)
    s.flush()
    audit.record(
        s,
        action="user.created",
        actor_type="human",
        actor=by,
        subject=f"user:{username}",
        outcome={"role": role, "console_login": password is not None},
    )
    return user


def get_user(s: Session, username: str) -> User:
    user = s.scalar(sa.select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def list_users(s: Session) -> list[User]:
    return list(s.scalars(sa.select(User).order_by(User.username)))


def count_admins(s: Session) -> int:
    q = sa.select(sa.func.count()).select_from(User).where(User.role == "admin", User.revoked_at.is_(None))
    return int(s.scalar(q) or 0)


def _lock_active_admins(s: Session) -> list[int]:
    """The active admins' ids, their rows locked until the transaction ends (PostgreSQL; SQLite's write
    transaction is already exclusive), so two concurrent revokes cannot remove the last two admins."""
    q = sa.select(User.id).where(User.role == "admin", User.revoked_at.is_(None)).with_for_update()
    return list(s.scalars(q))


def revoke_user(s: Session, username: str, *, by: str) -> User:
    """Revoke a user: no more logins, every token revoked, every console session ended."""
    user = get_user(s, username)
    if user.revoked_at is not None:
        raise Conflict(f"user {username!r} is already revoked")
    if user.role == "admin" and len(_lock_active_admins(s)) <= 1:
        raise Conflict(f"{username!r} is the last active admin: add another admin before revoking this one")
    now = _now()
    user.revoked_at = now
    tokens = list(
        s.scalars(sa.select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None)))
    )
    for t in tokens:
        t.revoked_at = now
    s.execute(sa.delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
    audit.record(
        s,
        action="user.revoked",
        actor_type="human",
        actor=by,
        subject=f"user:{username}",
        outcome={"tokens_revoked": [t.id for t in tokens]},
    )
    return user


def set_password(s: Session, username: str, password: str, *, by: str) -> None:
    check_password(password)
    user = get_user(s, username)
    user.password_hash = token_secrets.hash_password(password)
    user.failed_logins, user.locked_until = 0, None
    login_throttle.forget_account(s, username)
    s.execute(sa.delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
    audit.record(s, action="user.password_set", actor_type="human", actor=by, subject=f"user:{username}")


# ---------------------------------------------------------------- API tokens


def _token_key(settings: Settings | None) -> token_secrets.TokenKey | None:
    """The token key of `settings`, else of the running server's settings, else None."""
    if settings is None:
        from billops.runtime import get_runtime

        try:
            settings = get_runtime().settings
        except RuntimeError:
            return None
    return token_secrets.token_key(settings)


def issue_token(
    s: Session,
    username: str,
    name: str,
    *,
    days: float,
    max_days: int,
    by: str,
    settings: Settings | None = None,
) -> tuple[ApiToken, str]:
    """A new token for the user; the plain token is returned once and never stored. Its secret is
    stored keyed with the token key of `settings` (default: the running server's). Without any settings
    it is stored argon2-hashed and re-stored keyed by the server at its first use."""
    if not 0 < days <= max_days:
        raise BillopsError(f"a token lives between a moment and {max_days} days, not {days}", 422)
    if not name or len(name) > 100:
        raise BillopsError("a token needs a name of 1–100 characters", 422)
    user = get_user(s, username)
    if user.revoked_at is not None:
        raise Conflict(f"user {username!r} is revoked")
    secret = secrets.token_urlsafe(32)
    tok = ApiToken(user_id=user.id, name=name, token_hash="-", expires_at=_now() + timedelta(days=days))
    s.add(tok)
    s.flush()  # the id is part of what the secret is hashed with
    key = _token_key(settings)
    tok.token_hash = (
        token_secrets.keyed_hash(key, tok.id, secret) if key else token_secrets.hash_password(secret)
    )
    audit.record(
        s,
        action="token.issued",
        actor_type="human",
        actor=by,
        subject=f"user:{username}",
        outcome={"token_id": tok.id, "name": name, "expires_at": tok.expires_at.isoformat()},
    )
    return tok, f"bo_{tok.id}_{secret}"


def revoke_token(s: Session, token_id: int, *, by: str) -> ApiToken:
    tok = s.get(ApiToken, token_id)
    if tok is None:
        raise NotFound(f"no token {token_id}")
    if tok.revoked_at is not None:
        raise Conflict(f"token {token_id} is already revoked")
    tok.revoked_at = _now()
    user = s.get(User, tok.user_id)
    audit.record(
        s,
        action="token.revoked",
        actor_type="human",
        actor=by,
        subject=f"user:{user.username if user else tok.user_id}",
        outcome={"token_id": token_id, "name": tok.name},
    )
    return tok


def list_tokens(s: Session, username: str | None = None) -> list[tuple[ApiToken, User]]:
    q = sa.select(ApiToken, User).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id)
    if username:
        q = q.where(User.username == username)
    return [(t, u) for t, u in s.execute(q).all()]


def authenticate_token(
    s: Session, token: str, *, now: datetime | None = None, settings: Settings | None = None
) -> Principal:
    """Who a bearer token belongs to. Reads only (use a reader session); `touch_token` records use.

    Malformed, unknown id, wrong secret, revoked, expired, user revoked: all raise the same
    AuthError("invalid or expired token") after the same keyed-hash work (no argon2), so an outsider
    learns nothing about which ids exist. Only a pre-0005 argon2 hash costs argon2 once; it is then
    queued to be re-stored keyed by the next `touch_token` (`should_touch` says so)."""
    now = now or _now()
    m = TOKEN.fullmatch(token)
    if m is None:
        raise AuthError(INVALID_TOKEN)
    token_id, secret = int(m.group(1)), m.group(2)
    key = _token_key(settings) or token_secrets.TokenKey()
    tok = s.get(ApiToken, token_id) if token_id <= TOKEN_ID_MAX else None
    user = s.get(User, tok.user_id if tok is not None else 0)  # the same reads for an unknown id
    live = (
        tok is not None
        and tok.revoked_at is None
        and tok.expires_at > now
        and user is not None
        and user.revoked_at is None
    )
    stored = tok.token_hash if tok is not None else None
    if stored is not None and token_secrets.is_legacy(stored) and not live:
        stored = None  # never spend argon2 on a token that could not pass anyway
    if not token_secrets.verify_token_secret(stored, key, token_id, secret) or not live:
        raise AuthError(INVALID_TOKEN)
    assert tok is not None and user is not None and stored is not None
    if token_secrets.is_legacy(stored) and key.secret:
        with _rekey_lock:
            _rekey[token_id] = (stored, token_secrets.keyed_hash(key, token_id, secret))
    return Principal(
        user_id=user.id, username=user.username, role=check_role(user.role), via=f"token:{tok.id}"
    )


_touched: dict[int, datetime] = {}


def should_touch(token_id: int, *, now: datetime | None = None) -> bool:
    """True at most once a minute per token and process (when to record a token's use), and whenever a
    verified legacy hash waits to be re-stored keyed."""
    now = now or _now()
    with _rekey_lock:
        if token_id in _rekey:
            return True
    last = _touched.get(token_id)
    if last is not None and now - last < timedelta(minutes=1):
        return False
    if len(_touched) > 100_000:
        _touched.clear()
    _touched[token_id] = now
    return True


def touch_token(s: Session, token_id: int, *, now: datetime | None = None) -> None:
    """Record the token's use; re-store a verified legacy argon2 hash keyed (only if unchanged)."""
    s.execute(sa.update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now or _now()))
    with _rekey_lock:
        pending = _rekey.pop(token_id, None)
    if pending is not None:
        old, new = pending
        s.execute(
            sa.update(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.token_hash == old)
            .values(token_hash=new)
        )


# ---------------------------------------------------------------- console logins and sessions


def login(
    s: Session,
    username: str,
    password: str,
    *,
    client: str,
    limits: LoginLimits,
    device: str | None = None,
    now: datetime | None = None,
) -> User | AuthError:
    """Check a console login from `client` (login_throttle.client_of the address); `device` is the
    nonce of a device cookie valid for this username. A failure is RETURNED (not raised) so the caller
    commits the counts and their audit sample before answering.

    Throttled: 429 "too many failed logins …" before any password work, the same for every username.
    Otherwise one argon2 check whatever the user (unknown, token-only and revoked users check a dummy
    or their own hash), and 401 "wrong username or password" for every failure."""
    now = now or _now()
    # What no username can hold (NUL, lone surrogates) is replaced, so the lookup, the counts and the
    # audit record store on PostgreSQL too; the replacement matches no real user.
    username = username.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    attempt = Attempt(account=username, client=client, device=device)
    until = login_throttle.blocked_until(s, attempt, limits, now)
    if until is not None:
        wait = login_throttle.retry_after_seconds(until, now)
        return AuthError(f"too many failed logins: try again in {wait} s", 429, retry_after=wait)
    user = s.scalar(sa.select(User).where(User.username == username))
    stored = user.password_hash if user is not None else None
    ok = token_secrets.verify_password(stored, password)
    if not ok or user is None or user.revoked_at is not None:
        login_throttle.record_failure(s, attempt, limits, now)
        return AuthError(WRONG_LOGIN)
    earlier = login_throttle.record_success(s, attempt)
    user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
    if user.password_hash is not None and token_secrets.needs_rehash(user.password_hash):
        user.password_hash = token_secrets.hash_password(password)
    audit.record(
        s,
        action="auth.login",
        actor_type="human",
        actor=username,
        subject=f"user:{username}",
        outcome={"client": attempt.client, **({"failures_not_audited": earlier} if earlier else {})},
    )
    return user


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def create_session(s: Session, user: User, *, hours: float) -> tuple[str, str]:
    """A new console session: returns (session id for the signed cookie, CSRF token)."""
    sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = _now()
    s.add(
        ConsoleSession(
            id_hash=session_hash(sid),
            user_id=user.id,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(hours=hours),
            last_seen_at=now,
        )
    )
    s.execute(sa.delete(ConsoleSession).where(ConsoleSession.expires_at < now))
    return sid, csrf


def session_principal(s: Session, session_id: str) -> tuple[Principal, str] | None:
    """The principal and CSRF token of a live session, or None (unknown, expired, user revoked).
    Reads only."""
    row = s.get(ConsoleSession, session_hash(session_id))
    now = _now()
    if row is None or row.expires_at <= now:
        return None
    user = s.get(User, row.user_id)
    if user is None or user.revoked_at is not None:
        return None
    return Principal(
        user_id=user.id, username=user.username, role=check_role(user.role), via="session"
    ), row.csrf_token


def end_session(s: Session, session_id: str) -> None:
    s.execute(sa.delete(ConsoleSession).where(ConsoleSession.id_hash == session_hash(session_id)))
