"""One decision per invoice episode (docs/recovery.md, "One decision per invoice episode").

An episode runs from an invoice's first failed payment until the invoice is paid, voided or marked
uncollectible (the decision ends `recovered`, `settled_elsewhere` or `settled_before_decision`) or the
recovery window (policy `recovery.window_days`, counted from the decision) ends. Within it, every later
failure of the invoice (the platform's own retries in shadow/assist mode, a failed retry in auto mode)
is recorded on the episode's decision; a failure after it closed opens the next episode
(`<platform>:<invoice id>:<n + 1>`). Plain functions on a session: the DBOS steps live in steps.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billops.governance import audit
from billops.store.models import Decision

CLOSED = {"recovered", "settled_elsewhere", "settled_before_decision"}


def episode_key(platform: str, invoice_id: str, n: int) -> str:
    return f"{platform}:{invoice_id}:{n}"


def latest_decision(s: Session, platform: str, invoice_id: str) -> Decision | None:
    q = (
        sa.select(Decision)
        .where(Decision.platform == platform, Decision.invoice_id == invoice_id)
        .order_by(Decision.created_at.desc(), Decision.workflow_id.desc())
        .limit(1)
    )
    return s.scalars(q).first()


def is_open(dec: Decision, *, window_days: int, now: datetime) -> bool:
    if dec.status in CLOSED:
        return False
    started = dec.created_at if dec.created_at.tzinfo else dec.created_at.replace(tzinfo=UTC)
    return now < started + timedelta(days=window_days)


def open_episode(
    s: Session, platform: str, invoice_id: str, *, window_days: int, now: datetime
) -> Decision | None:
    """The invoice's decision whose episode is still open, if any."""
    dec = latest_decision(s, platform, invoice_id)
    return dec if dec is not None and is_open(dec, window_days=window_days, now=now) else None


def next_key(s: Session, platform: str, invoice_id: str) -> str:
    """The key of the invoice's next episode: one past the number of keyed decisions it has."""
    n = s.scalar(
        sa.select(sa.func.count())
        .select_from(Decision)
        .where(
            Decision.platform == platform,
            Decision.invoice_id == invoice_id,
            Decision.episode_key.is_not(None),
        )
    )
    return episode_key(platform, invoice_id, int(n or 0) + 1)


def first_failure(event_id: str, decline_code: str | None, at: str | None) -> dict[str, Any]:
    """The `outcome.episode` a new decision starts with: one attempt, its own failure."""
    return {"attempts": 1, "failures": [{"event_id": event_id, "decline_code": decline_code, "at": at}]}


def record_failure(s: Session, dec: Decision, event: dict[str, Any], by_workflow: str) -> dict[str, Any]:
    """Record one more failed attempt on the episode's decision (idempotent per event): attempt count,
    latest decline, audit `recovery.failure_recorded`. `dec` must be read FOR UPDATE."""
    episode = dict(dec.outcome.get("episode") or first_failure(dec.event_id, dec.decline_code, None))
    failures = list(episode.get("failures") or [])
    event_id = str(event.get("event_id"))
    if event_id == dec.event_id or any(f.get("event_id") == event_id for f in failures):
        return {"recorded": False, "attempts": int(episode.get("attempts", len(failures))), "duplicate": True}
    attempt = event.get("attempt") or {}
    decline = attempt.get("decline") or {}
    code = decline.get("code")
    at = attempt.get("attempted_at") or event.get("occurred_at")
    failures.append({"event_id": event_id, "decline_code": code, "at": at})
    episode = {**episode, "failures": failures[-50:], "attempts": int(episode.get("attempts", 1)) + 1}
    if code:
        episode["latest_decline"] = code
    dec.outcome = {**dec.outcome, "episode": episode}
    audit.record(
        s,
        action="recovery.failure_recorded",
        workflow_id=dec.workflow_id,
        trace_id=dec.trace_id,
        subject=f"{dec.platform}:invoice:{dec.invoice_id}",
        outcome={
            "event_id": event_id,
            "attempts": episode["attempts"],
            "decline_code": code,
            "by_workflow": by_workflow,
        },
    )
    return {"recorded": True, "attempts": episode["attempts"], "decision": dec.workflow_id}
