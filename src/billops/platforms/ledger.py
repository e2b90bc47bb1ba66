"""At-most-once writes to a platform that keeps no idempotency keys (Recurly).

A workflow step that writes to a platform may run again after a crash or a lost response. Where the
platform deduplicates by idempotency key (Stripe, Chargebee, Zuora) the key is enough. Where it does
not, every write goes through `WriteLedger.run_once`:

1. Before the request goes out, a `pending` row keyed by the step's idempotency key is committed.
2. The request is sent. On success the row becomes `done` with the result (a JSON dict).
3. If the client knows the request never reached the platform (it raises
   `PlatformError(code="not_sent")`, e.g. connection refused), the row is removed: sending it again
   is safe.
4. Any other failure (timeout, 5xx, a crash of this process) leaves the row `pending`: the request
   may or may not have been applied.

The next call with the same key returns the stored result of a `done` row without any request. For
a `pending` row it asks the client's `reconcile(started_at)` to look at the platform's state: a dict
means the write happened (stored as done and returned), None means it certainly did not (it is sent
again), and a `PlatformError` (e.g. `code="uncertain"`) means nobody can tell, which stops the step
for a human rather than risk a second charge. So a write is sent a second time only when the
platform shows it was not applied: at most once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from billops.errors import InputError, PlatformError
from billops.store import Database
from billops.store.models import PlatformWrite

Send = Callable[[], dict[str, Any]]
Reconcile = Callable[[datetime], dict[str, Any] | None]


class WriteLedger:
    def __init__(self, db: Database) -> None:
        self.db = db

    def run_once(self, key: str, operation: str, send: Send, reconcile: Reconcile) -> dict[str, Any]:
        if not key:
            raise InputError("an at-most-once platform write needs a key")
        try:
            state, started, stored = self._claim(key, operation)
        except IntegrityError as exc:  # another worker inserted the same key a moment ago
            raise PlatformError(
                f"write {key!r} is being sent by another worker", retryable=True, code="in_flight"
            ) from exc
        if state == "done":
            return stored
        if state == "pending":
            seen = reconcile(started)  # raises when the platform's state cannot tell
            if seen is not None:
                self._finish(key, seen)
                return seen
            with self.db.session() as s:  # certainly not applied: send again
                s.execute(
                    sa.update(PlatformWrite)
                    .where(PlatformWrite.key == key)
                    .values(started_at=datetime.now(UTC), attempts=PlatformWrite.attempts + 1)
                )
        try:
            result = send()
        except PlatformError as exc:
            if exc.code == "not_sent":
                with self.db.session() as s:
                    s.execute(
                        sa.delete(PlatformWrite).where(
                            PlatformWrite.key == key, PlatformWrite.status == "pending"
                        )
                    )
            raise
        self._finish(key, result)
        return result

    def _claim(self, key: str, operation: str) -> tuple[str, datetime, dict[str, Any]]:
        """("new", now, {}) after committing a pending row, or the existing row's state."""
        with self.db.session() as s:
            row = s.get(PlatformWrite, key)
            if row is None:
                s.add(PlatformWrite(key=key, operation=operation, status="pending"))
                return "new", datetime.now(UTC), {}
            if row.operation != operation:
                raise InputError(f"write key {key!r} was used for {row.operation!r}, not {operation!r}")
            return row.status, row.started_at, dict(row.result or {})

    def _finish(self, key: str, result: dict[str, Any]) -> None:
        with self.db.session() as s:
            s.execute(
                sa.update(PlatformWrite)
                .where(PlatformWrite.key == key)
                .values(status="done", result=result, finished_at=datetime.now(UTC))
            )

    def status(self, key: str) -> str | None:
        """`pending`, `done` or None (never sent, or known not sent)."""
        with self.db.reader() as s:
            row = s.get(PlatformWrite, key)
            return row.status if row is not None else None
