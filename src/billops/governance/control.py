"""The kill switch and the circuit breaker: two switches shared by every worker (table governance_state).

While either is on, every workflow behaves as in shadow mode: new decisions are recorded as shadow, and
each action of a running workflow is stopped before it happens (guardrail `kill_switch` or
`circuit_breaker`, with the reason in the audit log). An admin turns the kill switch on and off
(`billops pause-all` / `resume-all`, the API, the console); the breaker trips by itself when action
failures or decisions per hour exceed the policy's bounds, and stays tripped until an admin resets it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import Gauge
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billops.errors import Conflict
from billops.governance import audit
from billops.store.models import GovernanceState

KILL = "kill_switch"
BREAKER = "circuit_breaker"
log = logging.getLogger("billops.governance")
SWITCH_GAUGE = Gauge("billops_governance_switch", "1 while a governance switch is on", ["switch"])


@dataclass(frozen=True)
class Controls:
    """The two switches. Each is None when off, else {by, at, why, …}."""

    kill_switch: dict[str, Any] | None
    circuit_breaker: dict[str, Any] | None

    @property
    def shadow_reason(self) -> str | None:
        """Why everything runs as shadow right now, or None."""
        if self.kill_switch:
            k = self.kill_switch
            return f"kill switch on since {k['at'][:16]} by {k['by']}: {k['why']}"
        if self.circuit_breaker:
            b = self.circuit_breaker
            return f"circuit breaker tripped at {b['at'][:16]}: {b['why']}"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kill_switch": self.kill_switch,
            "circuit_breaker": self.circuit_breaker,
            "all_shadow": self.shadow_reason is not None,
            "why": self.shadow_reason,
        }


def controls(s: Session) -> Controls:
    rows = {r.key: r.value for r in s.scalars(sa.select(GovernanceState))}
    kill = rows.get(KILL) or None
    breaker = rows.get(BREAKER) or None
    SWITCH_GAUGE.labels(KILL).set(1 if kill else 0)
    SWITCH_GAUGE.labels(BREAKER).set(1 if breaker else 0)
    return Controls(
        kill_switch=kill if kill and kill.get("on") else None,
        circuit_breaker=breaker if breaker and breaker.get("on") else None,
    )


def _set(s: Session, key: str, value: dict[str, Any]) -> None:
    row = s.get(GovernanceState, key, with_for_update=True)
    if row is None:
        try:
            with s.begin_nested():  # two workers may create the row at once: the second updates it
                s.add(GovernanceState(key=key, value=value))
            return
        except IntegrityError:
            row = s.get(GovernanceState, key, with_for_update=True, populate_existing=True)
            assert row is not None
    row.value = value
    s.flush()


def _flip(
    s: Session,
    key: str,
    *,
    on: bool,
    by: str,
    why: str,
    action: str,
    actor_type: audit.ActorType = "human",
    extra: dict[str, Any] | None = None,
) -> None:
    """Set one switch and audit who turned it which way and why, in the caller's transaction."""
    extra = extra or {}
    _set(s, key, {"on": on, "by": by, "at": datetime.now(UTC).isoformat(), "why": why, **extra})
    audit.record(
        s,
        action=action,
        actor_type=actor_type,
        actor=by,
        subject=f"governance:{key}",
        outcome={"why": why, **extra},
    )


def pause_all(s: Session, *, by: str, why: str) -> Controls:
    """Turn the kill switch on: every workflow to shadow at once."""
    if controls(s).kill_switch:
        raise Conflict("the kill switch is already on")
    _flip(s, KILL, on=True, by=by, why=why, action="governance.paused")
    log.error("KILL SWITCH ON by %s: %s. Every workflow runs as shadow until `billops resume-all`.", by, why)
    return controls(s)


def resume_all(s: Session, *, by: str, why: str) -> Controls:
    if not controls(s).kill_switch:
        raise Conflict("the kill switch is not on")
    _flip(s, KILL, on=False, by=by, why=why, action="governance.resumed")
    log.warning("kill switch off by %s: %s", by, why)
    return controls(s)


def trip_breaker(s: Session, *, why: str, counts: dict[str, Any]) -> bool:
    """Trip the circuit breaker (no-op if tripped already). Loud: an ERROR log, an audit record, a
    Prometheus gauge, and a banner on every console page. Returns True when this call tripped it."""
    if controls(s).circuit_breaker:
        return False
    _flip(
        s,
        BREAKER,
        on=True,
        by="circuit_breaker",
        why=why,
        action="governance.breaker_tripped",
        actor_type="system",
        extra=counts,
    )
    log.error(
        "CIRCUIT BREAKER TRIPPED: %s. Every workflow runs as shadow until an admin resets it "
        "(`billops breaker reset`).",
        why,
    )
    return True


def reset_breaker(s: Session, *, by: str, why: str) -> Controls:
    if not controls(s).circuit_breaker:
        raise Conflict("the circuit breaker is not tripped")
    _flip(s, BREAKER, on=False, by=by, why=why, action="governance.breaker_reset")
    log.warning("circuit breaker reset by %s: %s", by, why)
    return controls(s)
