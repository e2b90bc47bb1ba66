"""Users, API tokens and console sessions, with roles viewer < operator < admin.

Secrets are stored only as argon2 hashes (argon2-cffi). An API token reads `bo_<id>_<secret>`: the id
finds the row, the secret is verified against its hash. A verified token is remembered in memory (by
the sha256 of the whole token) so each request does not pay argon2 again, but revocation, expiry and the
user's role are read from the database on every request, so a revoked token stops at once.

Console logins lock the account after `login_max_failures` wrong passwords in a row, for
`login_lockout_minutes`. The answer never tells whether the username exists. Every change and every
failed or locked login is in the audit log.
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
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.orm import Session

from billops.errors import BillopsError, Conflict, NotFound
from billops.governance import audit
from billops.store.models import ApiToken, ConsoleSession, User

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
MIN_PASSWORD = 12

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not-a-real-password-" + secrets.token_hex(8))
_verified: dict[str, int] = {}  # sha256(token) -> token id, for tokens whose argon2 check passed
_verified_lock = threading.Lock()


class AuthError(BillopsError):
    """Authentication failed (401) or the role is not enough (403)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message, status)


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
        password_hash=_hasher.hash(password) if password is not None else None,
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
    user.password_hash = _hasher.hash(password)
    user.failed_logins, user.locked_until = 0, None
    s.execute(sa.delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
    audit.record(s, action="user.password_set", actor_type="human", actor=by, subject=f"user:{username}")


# ---------------------------------------------------------------- API tokens


def issue_token(
    s: Session, username: str, name: str, *, days: float, max_days: int, by: str
) -> tuple[ApiToken, str]:
    """A new token for the user; the plain token is returned once and never stored."""
    if not 0 < days <= max_days:
        raise BillopsError(f"a token lives between a moment and {max_days} days, not {days}", 422)
    if not name or len(name) > 100:
        raise BillopsError("a token needs a name of 1–100 characters", 422)
    user = get_user(s, username)
    if user.revoked_at is not None:
        raise Conflict(f"user {username!r} is revoked")
    secret = secrets.token_urlsafe(32)
    tok = ApiToken(
        user_id=user.id, name=name, token_hash=_hasher.hash(secret), expires_at=_now() + timedelta(days=days)
    )
    s.add(tok)
    s.flush()
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


def authenticate_token(s: Session, token: str, *, now: datetime | None = None) -> Principal:
    """Who a bearer token belongs to. Reads only (use a reader session); `touch_token` records use."""
    now = now or _now()
    m = re.fullmatch(r"bo_(\d{1,12})_([A-Za-z0-9_-]{20,100})", token)
    if m is None:
        raise AuthError("malformed API token (expected bo_<id>_<secret>)")
    tok = s.get(ApiToken, int(m.group(1)))
    if tok is None:
        raise AuthError("unknown API token")
    fingerprint = hashlib.sha256(token.encode()).hexdigest()
    with _verified_lock:
        known = _verified.get(fingerprint) == tok.id
    if not known:
        try:
            _hasher.verify(tok.token_hash, m.group(2))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            raise AuthError("wrong API token") from None
        with _verified_lock:
            if len(_verified) > 10_000:
                _verified.clear()
            _verified[fingerprint] = tok.id
    if tok.revoked_at is not None:
        raise AuthError(f"API token {tok.id} was revoked")
    if tok.expires_at <= now:
        raise AuthError(f"API token {tok.id} expired at {tok.expires_at.isoformat()}")
    user = s.get(User, tok.user_id)
    if user is None or user.revoked_at is not None:
        raise AuthError("the token's user is revoked")
    return Principal(
        user_id=user.id, username=user.username, role=check_role(user.role), via=f"token:{tok.id}"
    )


_touched: dict[int, datetime] = {}


def should_touch(token_id: int, *, now: datetime | None = None) -> bool:
    """True at most once a minute per token and process: when to record a token's use."""
    now = now or _now()
    last = _touched.get(token_id)
    if last is not None and now - last < timedelta(minutes=1):
        return False
    _touched[token_id] = now
    return True


def touch_token(s: Session, token_id: int, *, now: datetime | None = None) -> None:
    s.execute(sa.update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now or _now()))


# ---------------------------------------------------------------- console logins and sessions


def login(
    s: Session,
    username: str,
    password: str,
    *,
    max_failures: int,
    lockout: timedelta,
    now: datetime | None = None,
) -> User | AuthError:
    """Check a console login. A failure is RETURNED (not raised) so the caller commits the failure count
    and its audit record before answering; one message for every failure except a lockout."""
    now = now or _now()
    user = s.scalar(sa.select(User).where(User.username == username))
    if user is None or user.password_hash is None or user.revoked_at is not None:
        _verify(_DUMMY_HASH, password)  # same cost whether or not the user exists
        audit.record(
            s,
            action="auth.login_failed",
            actor=username[:200] or "?",
            subject=f"user:{username[:100]}",
            outcome={"why": "unknown, revoked or token-only user"},
        )
        return AuthError("wrong username or password")
    if user.locked_until is not None and user.locked_until > now:
        return AuthError(
            f"too many failed logins: the account is locked until {user.locked_until:%Y-%m-%d %H:%M} UTC", 429
        )
    if not _verify(user.password_hash, password):
        user.failed_logins += 1
        locked = user.failed_logins >= max_failures
        if locked:
            user.locked_until = now + lockout
            user.failed_logins = 0
        audit.record(
            s,
            action="auth.locked" if locked else "auth.login_failed",
            actor=username,
            subject=f"user:{username}",
            outcome={"locked_until": user.locked_until.isoformat()} if locked and user.locked_until else {},
        )
        return AuthError("wrong username or password")
    user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    audit.record(s, action="auth.login", actor_type="human", actor=username, subject=f"user:{username}")
    return user


def _verify(hash_: str, password: str) -> bool:
    try:
        return _hasher.verify(hash_, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


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
