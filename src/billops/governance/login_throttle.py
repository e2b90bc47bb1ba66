"""Console login throttling: exponential back-off instead of a lock an outsider could trigger.

Every failed login counts in up to three rows of `login_throttles`, keyed by the username as typed
(whether or not such a user exists, so nothing here tells the two apart) and the client:

| scope | key | backs off after | longest back-off |
|---|---|---|---|
| `pair` | (account, client) | `login_max_failures` (5) | `login_lockout_minutes` (15 min) |
| `client` | one client, every account | `login_client_max_failures` (20) | `login_lockout_minutes` |
| `account` | one account, every client | `login_account_max_failures` (100) | `…_max_delay_seconds` (30 s) |

The n-th failure past the threshold blocks for 1 s · 2ⁿ, up to the longest back-off. A blocked attempt
is refused with 429 before any password work and changes nothing (one read). Failures are forgotten
after `login_failure_window_minutes` (60) without one.

The client is the address the app sees (IPv6 by /64). A browser that has logged in to an account
carries a signed device cookie for it (web/views_auth.py); its attempts count per (account, device)
and skip the client and account rows, so the rightful user still logs in from a known browser while
the account is hammered from elsewhere, even from many addresses or from behind the same NAT.

Failed logins are sampled into the audit log: at most one `auth.login_failed` record per (account,
client) and window, carrying how many failures it stands for; the rest are only counted.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billops.config import Settings
from billops.governance import audit
from billops.store.models import LoginThrottle

T: sa.Table = LoginThrottle.__table__  # type: ignore[assignment]
BASE_DELAY = timedelta(seconds=1)
PRUNE_BATCH = 100


@dataclass(frozen=True)
class LoginLimits:
    pair_failures: int = 5
    client_failures: int = 20
    account_failures: int = 100
    longest: timedelta = timedelta(minutes=15)
    account_longest: timedelta = timedelta(seconds=30)
    window: timedelta = timedelta(minutes=60)

    @classmethod
    def from_settings(cls, st: Settings) -> LoginLimits:
        return cls(
            pair_failures=st.login_max_failures,
            client_failures=st.login_client_max_failures,
            account_failures=st.login_account_max_failures,
            longest=timedelta(minutes=st.login_lockout_minutes),
            account_longest=timedelta(seconds=st.login_account_max_delay_seconds),
            window=timedelta(minutes=st.login_failure_window_minutes),
        )


def client_of(host: str | None) -> str:
    """The client key of an address: IPv4 as is, IPv6 by its /64, anything else by name (64 chars)."""
    if not host:
        return "?"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True)
class Attempt:
    """One login attempt: the username as typed, the client, and the nonce of a device cookie that is
    valid for this username (None without one)."""

    account: str
    client: str
    device: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "account", self.account[:100])
        object.__setattr__(self, "client", self.client[:64])

    @property
    def pair_client(self) -> str:
        return f"device:{self.device}"[:64] if self.device else self.client

    def scopes(self, limits: LoginLimits) -> list[tuple[tuple[str, str, str], int, timedelta, bool]]:
        """(row key, free failures, longest back-off, checked before the attempt) per counted row."""
        rows = [(("pair", self.account, self.pair_client), limits.pair_failures, limits.longest, True)]
        if self.device is None:
            rows.append((("client", "", self.client), limits.client_failures, limits.longest, True))
        # Every failure counts for the account; only clients without a device cookie are slowed by it.
        rows.append(
            (
                ("account", self.account, ""),
                limits.account_failures,
                limits.account_longest,
                self.device is None,
            )
        )
        return rows


def backoff(failures: int, free: int, longest: timedelta) -> timedelta | None:
    """How long to refuse after the `failures`-th failure: none below `free`, then 1 s, 2 s, 4 s …"""
    if failures < free or longest <= timedelta(0):
        return None
    return min(longest, BASE_DELAY * 2 ** min(failures - free, 30))


def _where(key: tuple[str, str, str]) -> Any:
    return sa.and_(T.c.scope == key[0], T.c.account == key[1], T.c.client == key[2])


def blocked_until(s: Session, attempt: Attempt, limits: LoginLimits, now: datetime) -> datetime | None:
    """When the attempt may be made, if it may not be made now. Reads only."""
    keys = [key for key, _free, _longest, checked in attempt.scopes(limits) if checked]
    q = sa.select(T.c.blocked_until).where(sa.or_(*[_where(k) for k in keys]), T.c.blocked_until > now)
    found = [b for b in s.scalars(q) if b is not None]
    return max(found) if found else None


def retry_after_seconds(until: datetime, now: datetime) -> int:
    return max(1, math.ceil((until - now).total_seconds()))


def _upsert(s: Session, key: tuple[str, str, str], now: datetime, cutoff: datetime) -> Any:
    insert: Any
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stale = T.c.last_failure_at <= cutoff
    stmt = insert(T).values(
        scope=key[0],
        account=key[1],
        client=key[2],
        failures=1,
        first_failure_at=now,
        last_failure_at=now,
        unaudited=1,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[T.c.scope, T.c.account, T.c.client],
        set_={
            "failures": sa.case((stale, 1), else_=T.c.failures + 1),
            "unaudited": T.c.unaudited + 1,
            "last_failure_at": now,
        },
    ).returning(T.c.failures, T.c.unaudited, T.c.audited_at)
    return s.execute(stmt).one()


def record_failure(s: Session, attempt: Attempt, limits: LoginLimits, now: datetime) -> None:
    """Count a failed login in every scope (one statement per row, atomic across workers), set the
    back-offs, and sample it into the audit log. Runs in the caller's transaction."""
    cutoff = now - limits.window
    for key, free, longest, _checked in attempt.scopes(limits):
        failures, unaudited, audited_at = _upsert(s, key, now, cutoff)
        delay = backoff(failures, free, longest)
        values: dict[str, Any] = {"blocked_until": now + delay if delay else None}
        if failures == 1:
            values["first_failure_at"] = now
        if key[0] == "pair" and (audited_at is None or audited_at <= cutoff):
            _audit(s, attempt, count=unaudited, since=audited_at, failures=failures, delay=delay)
            values.update(unaudited=0, audited_at=now)
        s.execute(sa.update(T).where(_where(key)).values(**values))
    prune(s, limits, now)


def _audit(
    s: Session,
    attempt: Attempt,
    *,
    count: int,
    since: datetime | None,
    failures: int | None,
    delay: timedelta | None,
) -> None:
    outcome: dict[str, Any] = {
        "failures": count,  # failed logins this record stands for
        "since": since.isoformat() if since else None,
        "client": attempt.client,
        "device_cookie": attempt.device is not None,
    }
    if failures is not None:
        outcome["in_window"] = failures
        outcome["backoff_seconds"] = delay.total_seconds() if delay else 0
    audit.record(
        s,
        action="auth.login_failed",
        actor=attempt.account or "?",
        subject=f"user:{attempt.account}",
        outcome=outcome,
    )


def record_success(s: Session, attempt: Attempt) -> int:
    """A login succeeded: forget the (account, client) and account counts (not the client's: an
    attacker must not clear their own address by logging in to an account of theirs). Returns the
    failures of this pair not yet in the audit log, for the login's own record."""
    pair = attempt.scopes(LoginLimits())[0][0]
    left = s.scalar(sa.select(T.c.unaudited).where(_where(pair))) or 0
    s.execute(sa.delete(T).where(sa.or_(_where(pair), _where(("account", attempt.account, "")))))
    return int(left)


def forget_account(s: Session, account: str) -> None:
    """Drop every count of an account (a new password was set)."""
    s.execute(sa.delete(T).where(T.c.account == account[:100], T.c.scope.in_(("pair", "account"))))


def prune(s: Session, limits: LoginLimits, now: datetime) -> None:
    """Delete rows quiet for a whole window and no longer blocking, auditing their last failures first
    (bounded: at most PRUNE_BATCH rows per call)."""
    cutoff = now - limits.window
    quiet = sa.and_(
        T.c.last_failure_at <= cutoff, sa.or_(T.c.blocked_until.is_(None), T.c.blocked_until <= now)
    )
    rows = s.execute(sa.select(T).where(quiet).limit(PRUNE_BATCH)).all()
    for row in rows:
        if row.scope == "pair" and row.unaudited > 0:
            client, _, nonce = row.client.partition("device:")
            attempt = Attempt(account=row.account, client=client or "device", device=nonce or None)
            _audit(s, attempt, count=row.unaudited, since=row.audited_at, failures=None, delay=None)
        s.execute(sa.delete(T).where(_where((row.scope, row.account, row.client))))
