"""The audit trail: append-only, hash-chained and keyed, written in the same transaction as the change
it records.

Each record's hash is HMAC-SHA256, under the key named by the record's `key_id` (keys live outside the
database: governance/audit_keys.py), of the previous record's hash and the canonical JSON of its own
fields (the key id included). Records written before keying (migration 0006) have no key id and a plain
sha256: they verify as the legacy chain, and the first keyed record's HMAC covers the last legacy hash.

`verify` recomputes the chain, so an edited record, a deleted record (a gap in `seq` or a broken
`prev_hash` link), a cut tail (the `audit_head` row points past the end) and a chain recomputed without
the key are all detected. Against a writer who also cuts or wipes consistently, or who holds the key,
only a checkpoint kept outside the database helps: `verify(checkpoints=…)` checks that every
checkpointed (seq, hash) is still in the chain (governance/audit_checkpoint.py). Appends are
serialized: SQLite by its write lock (BEGIN IMMEDIATE), PostgreSQL by a transaction-scoped advisory
lock; the unique `prev_hash` makes a forked chain impossible either way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billops.governance import audit_keys
from billops.governance.audit_keys import Keyring
from billops.store.models import AuditHead, AuditRecord

if TYPE_CHECKING:
    from billops.governance.audit_checkpoint import Checkpoint

GENESIS = "0" * 64
ActorType = Literal["system", "model", "human"]
_PG_LOCK_KEY = 0x4B1770A5  # arbitrary, constant: "billops audit"


def digest(value: Any) -> str:
    """A stable sha256 of any JSON-able value (the inputs a decision was made from)."""
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def fields(r: AuditRecord) -> dict[str, Any]:
    """What a record's hash covers (its key id too, for keyed records; legacy records stay as they were)."""
    f = {
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
    if r.key_id is not None:
        f["key_id"] = r.key_id
    return f


def compute_hash(prev_hash: str, fields: dict[str, Any], key: bytes | None = None) -> str:
    """HMAC-SHA256 under `key`; a plain sha256 (the legacy, unkeyed chain) when key is None."""
    message = (prev_hash + _canonical(fields)).encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


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
    """Append one record inside the caller's transaction. The caller commits (or rolls back) both.
    Signed with the active audit key (from settings or the key file; see audit_keys)."""
    ring = audit_keys.keyring()
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
        key_id=ring.active_id,
    )
    rec.hash = compute_hash(prev_hash, fields(rec), ring.active_key)
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
    legacy: int = 0  # unkeyed records (before migration 0006): sha256 only, no key
    key_ids: dict[str, int] = field(default_factory=dict)  # records per key id
    checkpoints: int = 0  # checkpoints confirmed (their (seq, hash) is in the chain)
    checkpoint_seq: int = 0  # the newest confirmed checkpoint's seq: nothing up to it was changed
    last_seq: int = 0


def snapshot(session: Session) -> None:
    """Read the chain and its head as of one moment, while appends go on: on PostgreSQL a REPEATABLE
    READ transaction (SQLite's deferred read transaction in WAL mode is a snapshot already). Only
    possible before the session's transaction has run a statement; afterwards this does nothing."""
    if session.get_bind().dialect.name == "postgresql" and not session.in_transaction():
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def verify(
    session: Session,
    *,
    keys: Keyring | None = None,
    checkpoints: list[Checkpoint] | None = None,
    after: tuple[int, str] | None = None,
    legacy_until: int | None = None,
    max_problems: int = 50,
) -> VerifyResult:
    """Recompute the chain (from `after` = (seq, hash) of a trusted record, else from the start) and
    check each checkpoint's (seq, hash) against it. `legacy_until`: only records up to that seq may be
    unkeyed (None: any prefix; 0: none). Problems say what was found."""
    snapshot(session)
    ring = keys or audit_keys.keyring()
    problems: list[str] = []
    wanted: dict[int, list[Checkpoint]] = {}
    for cp in checkpoints or []:
        wanted.setdefault(cp.seq, []).append(cp)
    confirmed: list[Checkpoint] = []
    prev_hash, expected_seq = (after[1], after[0] + 1) if after else (GENESIS, 1)
    count = legacy = 0
    first_keyed: int | None = None
    key_ids: dict[str, int] = {}
    complete = True
    q = sa.select(AuditRecord).order_by(AuditRecord.seq)
    if after:
        q = q.where(AuditRecord.seq > after[0])
    for rec in session.scalars(q).yield_per(1000):
        count += 1
        if rec.seq != expected_seq:
            problems.append(f"records {expected_seq}..{rec.seq - 1} are missing (deleted?)")
        if rec.prev_hash != prev_hash:
            problems.append(f"record {rec.seq}: does not link to the record before it")
        key: bytes | None = None
        checkable = True
        if rec.key_id is None:
            legacy += 1
            if legacy_until is not None and rec.seq > legacy_until:
                problems.append(
                    f"record {rec.seq}: has no key id, but only records up to {legacy_until} may be "
                    "unkeyed (BILLOPS_AUDIT_LEGACY_UNTIL): rewritten without the key?"
                )
            elif first_keyed is not None:
                problems.append(
                    f"record {rec.seq}: has no key id though records are keyed from {first_keyed} on "
                    "(rewritten without the key?)"
                )
        else:
            first_keyed = first_keyed or rec.seq
            key_ids[rec.key_id] = key_ids.get(rec.key_id, 0) + 1
            key = ring.get(rec.key_id)
            if key is None:
                checkable = False
                problems.append(
                    f"record {rec.seq}: signed with audit key {rec.key_id!r}, which is not among this "
                    f"process's keys ({ring.source}): cannot check it"
                )
        if checkable and compute_hash(rec.prev_hash, fields(rec), key) != rec.hash:
            what = "hash (edited?)" if key is None else "HMAC (edited, or rehashed without the key?)"
            problems.append(f"record {rec.seq}: content does not match its {what}")
        for cp in wanted.pop(rec.seq, []):
            if cp.hash == rec.hash:
                confirmed.append(cp)
            else:
                problems.append(
                    f"record {rec.seq} differs from the checkpoint of {cp.at}: the log up to record "
                    f"{rec.seq} was rewritten"
                )
        prev_hash, expected_seq = rec.hash, rec.seq + 1
        if len(problems) >= max_problems:
            complete = False
            break
    last = expected_seq - 1
    head = session.get(AuditHead, 1)
    if complete:
        if head is not None:
            if head.seq != last or head.hash != prev_hash:
                problems.append(
                    f"the chain ends at record {last} but its head says {head.seq}: "
                    "records at the end were removed"
                    if head.seq != last
                    else "the newest record's hash differs from the recorded head"
                )
        elif count or after:
            problems.append("the chain head is missing")
        for seq in sorted(wanted):
            for cp in wanted[seq]:
                if seq == 0 and cp.hash == GENESIS:
                    confirmed.append(cp)  # a checkpoint of the empty log proves nothing: fine
                elif seq <= last:
                    problems.append(f"record {seq} of the checkpoint of {cp.at} is missing (deleted?)")
                elif count == 0 and not after:
                    problems.append(
                        f"the log is empty (0 records{'' if head else ', no head'}) but the checkpoint of "
                        f"{cp.at} recorded {seq} records: the log was wiped"
                    )
                else:
                    problems.append(
                        f"the log ends at record {last} but the checkpoint of {cp.at} recorded record "
                        f"{seq}: records were cut from the end (truncated)"
                    )
    return VerifyResult(
        ok=not problems,
        records=count,
        head_hash=prev_hash,
        problems=problems,
        legacy=legacy,
        key_ids=key_ids,
        checkpoints=len(confirmed),
        checkpoint_seq=max((cp.seq for cp in confirmed), default=0),
        last_seq=last,
    )


def export(
    session: Session, *, since: datetime | None = None, workflow_id: str | None = None
) -> Iterator[dict[str, Any]]:
    q = sa.select(AuditRecord).order_by(AuditRecord.seq)
    if since is not None:
        q = q.where(AuditRecord.at >= since)
    if workflow_id is not None:
        q = q.where(AuditRecord.workflow_id == workflow_id)
    for rec in session.scalars(q).yield_per(1000):
        yield {**fields(rec), "key_id": rec.key_id, "prev_hash": rec.prev_hash, "hash": rec.hash}
