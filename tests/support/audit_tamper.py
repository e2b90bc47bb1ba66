"""A database writer who tampers with the audit log behind BillOps' back: its own connection, plain SQL
deletes and inserts, the chain recomputed with the published algorithm (audit.fields/compute_hash) and
whatever key it has (none, a guess, or the real one if it stole it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from billops.governance import audit
from billops.store.db import make_engine
from billops.store.models import JSON, AuditRecord, UTCDateTime

Rows = list[dict[str, Any]]
COLUMNS = (
    "seq",
    "at",
    "actor_type",
    "actor",
    "action",
    "workflow_id",
    "trace_id",
    "subject",
    "versions",
    "input_digest",
    "outcome",
    "prev_hash",
    "hash",
    "key_id",
)

# Core table (no ORM, no BillOps code path): what any SQL client can do to the table.
_meta = sa.MetaData()
LOG = sa.Table(
    "audit_log",
    _meta,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", UTCDateTime),
    *(
        sa.Column(c, sa.String)
        for c in ("actor_type", "actor", "action", "workflow_id", "trace_id", "subject")
    ),
    sa.Column("versions", JSON),
    sa.Column("input_digest", sa.String),
    sa.Column("outcome", JSON),
    sa.Column("prev_hash", sa.String),
    sa.Column("hash", sa.String),
    sa.Column("key_id", sa.String),
)
HEAD = sa.Table(
    "audit_head",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("seq", sa.Integer),
    sa.Column("hash", sa.String),
)


class Writer:
    def __init__(self, url: str) -> None:
        self.url = url

    def _engine(self) -> sa.Engine:
        return make_engine(self.url, pool_size=1)

    def sql(self, statement: str, **params: Any) -> None:
        e = self._engine()
        try:
            with e.begin() as c:
                c.execute(sa.text(statement), params)
        finally:
            e.dispose()

    def rows(self) -> Rows:
        e = self._engine()
        try:
            with e.connect() as c:
                return [dict(r._mapping) for r in c.execute(sa.select(LOG).order_by(LOG.c.seq))]
        finally:
            e.dispose()

    def rewrite(
        self,
        transform: Callable[[Rows], Rows],
        *,
        key: bytes | None,
        upto: int | None = None,
        start: int = 1,
        renumber: bool = False,
        head: bool = True,
    ) -> None:
        """Replace the log by transform(rows), recomputing every hash (up to `upto`) with `key` (None: as
        the unkeyed legacy sha256 chain) from record `start` on, renumbering seq if asked, and setting the
        head to match."""
        rows = transform(self.rows())
        prev = audit.GENESIS
        out: Rows = []
        for i, r in enumerate(rows, 1):
            r = dict(r)
            if renumber:
                r["seq"] = i
            if r["seq"] >= start and (upto is None or r["seq"] <= upto):
                r["prev_hash"] = prev
                r["key_id"] = r["key_id"] if key is not None else None
                rec = AuditRecord(**{c: r[c] for c in COLUMNS})
                r["hash"] = audit.compute_hash(prev, audit.fields(rec), key)
            out.append(r)
            prev = r["hash"]
        e = self._engine()
        try:
            with e.begin() as c:
                c.execute(sa.delete(HEAD))
                c.execute(sa.delete(LOG))
                if out:
                    c.execute(sa.insert(LOG), out)
                    if head:
                        c.execute(sa.insert(HEAD).values(id=1, seq=out[-1]["seq"], hash=out[-1]["hash"]))
        finally:
            e.dispose()
