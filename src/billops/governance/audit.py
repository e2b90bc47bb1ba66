"""The audit trail: append-only, hash-chained, written in the same transaction as the change it records.

Each record's hash is sha256 over the previous record's hash and the canonical JSON of its own fields.
`verify` recomputes the chain, so an edited record (its hash no longer matches), a deleted record (a gap
in `seq` or a broken `prev_hash` link) and a cut tail (the `audit_head` row points past the end) are all
detected. Appends are serialized: SQLite by its write lock (BEGIN IMMEDIATE), PostgreSQL by a
transaction-scoped advisory lock; the unique `prev_hash` makes a forked chain impossible either way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billops.store.models import AuditHead, AuditRecord

GENESIS = "0" * 64
ActorType = Literal["system", "model", "human"]
_PG_LOCK_KEY = 0x4B1770A5  # arbitrary, constant: "billops audit"


def digest(value: Any) -> str:
    """A stable sha256 of any JSON-able value (the inputs a decision was made from)."""
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def fields(r: AuditRecord) -> dict[str, Any]:
    return {
        "seq": r.seq,
        "at": r.at.astimezone(UTC).isoformat(),
        "actor_type": r.actor_type,
        "actor": r.actor,
        "action": r.action,
        "workflow_id": r.workflow_id,
        "trace_id": r.trace_id,
        "subject": r.subject,
        "versions": r.versions,
        "input_digest": r.input_digest,
        "outcome": r.outcome,
    }


def compute_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + _canonical(fields)).encode()).hexdigest()


def record(
    session: Session,
    *,
    action: str,
    actor_type: ActorType = "system",
    actor: str = "billops",
    workflow_id: str | None = None,
    trace_id: str | None = None,
    subject: str | None = None,
    versions: dict[str, Any] | None = None,
    inputs: Any = None,
    outcome: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditRecord:
    """Append one record inside the caller's transaction. The caller commits (or rolls back) both."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    head = session.get(AuditHead, 1)
    prev_seq, prev_hash = (head.seq, head.hash) if head else (0, GENESIS)
    rec = AuditRecord(
        seq=prev_seq + 1,
        at=(at or datetime.now(UTC)).astimezone(UTC),
        actor_type=actor_type,
        actor=actor,
        action=action,
        workflow_id=workflow_id,
        trace_id=trace_id,
        subject=subject,
        versions=json.loads(_canonical(versions or {})),
        input_digest=digest(inputs) if inputs is not None else None,
        outcome=json.loads(_canonical(outcome or {})),
        prev_hash=prev_hash,
    )
    rec.hash = compute_hash(prev_hash, fields(rec))
    session.add(rec)
    if head is None:
        session.add(AuditHead(id=1, seq=rec.seq, hash=rec.hash))
    else:
        head.seq, head.hash = rec.seq, rec.hash
    session.flush()
    return rec


@dataclass
class VerifyResult:
    ok: bool
    records: int
    head_hash: str
    problems: list[str]


def verify(session: Session, *, max_problems: int = 50) -> VerifyResult:
    problems: list[str] = []
    prev_hash, expected_seq, count = GENESIS, 1, 0
    for rec in session.scalars(sa.select(AuditRecord).order_by(AuditRecord.seq)).yield_per(1000):
        count += 1
        if rec.seq != expected_seq:
            problems.append(f"records {expected_seq}..{rec.seq - 1} are missing (deleted?)")
        if rec.prev_hash != prev_hash:
            problems.append(f"record {rec.seq}: does not link to the record before it")
        if compute_hash(rec.prev_hash, fields(rec)) != rec.hash:
            problems.append(f"record {rec.seq}: content does not match its hash (edited?)")
        prev_hash, expected_seq = rec.hash, rec.seq + 1
        if len(problems) >= max_problems:
            break
    head = session.get(AuditHead, 1)
    if head is not None and len(problems) < max_problems:
        if head.seq != expected_seq - 1 or head.hash != prev_hash:
            problems.append(
                f"the chain ends at record {expected_seq - 1} but its head says {head.seq}: "
                "records at the end were removed"
                if head.seq != expected_seq - 1
                else "the newest record's hash differs from the recorded head"
            )
    elif head is None and count:
        problems.append("the chain head is missing")
    return VerifyResult(ok=not problems, records=count, head_hash=prev_hash, problems=problems)


def export(
    session: Session, *, since: datetime | None = None, workflow_id: str | None = None
) -> Iterator[dict[str, Any]]:
    q = sa.select(AuditRecord).order_by(AuditRecord.seq)
    if since is not None:
        q = q.where(AuditRecord.at >= since)
    if workflow_id is not None:
        q = q.where(AuditRecord.workflow_id == workflow_id)
    for rec in session.scalars(q).yield_per(1000):
        yield {**fields(rec), "prev_hash": rec.prev_hash, "hash": rec.hash}
