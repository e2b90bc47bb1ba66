"""The at-most-once ledger: a write is sent again only when the platform shows it was not applied."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from billops.errors import InputError, PlatformError
from billops.platforms.ledger import WriteLedger
from billops.store import Database


@pytest.fixture
def ledger(tmp_path: Any) -> WriteLedger:
    db = Database(f"sqlite:///{tmp_path}/ledger.db")
    db.migrate()
    return WriteLedger(db)


class Platform:
    """A platform that applies writes and may lose the response or refuse the connection."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.sends = 0
        self.fail: str | None = None  # "lost" (applied, response lost) | "refused" (never arrived)
        self.reconciled: list[datetime] = []

    def send(self, what: str) -> dict[str, Any]:
        self.sends += 1
        if self.fail == "refused":
            raise PlatformError("connection refused", retryable=True, code="not_sent")
        self.applied.append(what)
        if self.fail == "lost":
            raise PlatformError("read timeout", retryable=True, code="timeout")
        return {"id": f"w{len(self.applied)}"}

    def reconcile(self, what: str, since: datetime) -> dict[str, Any] | None:
        self.reconciled.append(since)
        return (
            {"id": f"w{self.applied.index(what) + 1}", "reconciled": True} if what in self.applied else None
        )


def test_first_send_and_replay_returns_the_stored_result(ledger: WriteLedger) -> None:
    p = Platform()
    first = ledger.run_once("wf:pay:1", "collect", lambda: p.send("a"), lambda t: p.reconcile("a", t))
    again = ledger.run_once("wf:pay:1", "collect", lambda: p.send("a"), lambda t: p.reconcile("a", t))
    assert first == again == {"id": "w1"}
    assert p.sends == 1 and p.reconciled == []
    assert ledger.status("wf:pay:1") == "done"


def test_lost_response_is_reconciled_not_resent(ledger: WriteLedger) -> None:
    p = Platform()
    p.fail = "lost"
    with pytest.raises(PlatformError, match="timeout"):
        ledger.run_once("k", "collect", lambda: p.send("a"), lambda t: p.reconcile("a", t))
    assert ledger.status("k") == "pending"
    p.fail = None
    result = ledger.run_once("k", "collect", lambda: p.send("a"), lambda t: p.reconcile("a", t))
    assert result == {"id": "w1", "reconciled": True}
    assert p.applied == ["a"] and p.sends == 1
    assert ledger.status("k") == "done"


def test_not_applied_pending_write_is_sent_again(ledger: WriteLedger) -> None:
    """A crash before the request left: pending, but the platform shows nothing, so it is sent."""
    p = Platform()

    def crash() -> dict[str, Any]:
        raise RuntimeError("process died before the request went out")

    with pytest.raises(RuntimeError):
        ledger.run_once("k", "note", crash, lambda t: p.reconcile("a", t))
    assert ledger.status("k") == "pending"
    assert ledger.run_once("k", "note", lambda: p.send("a"), lambda t: p.reconcile("a", t)) == {"id": "w1"}
    assert len(p.reconciled) == 1 and p.sends == 1


def test_known_not_sent_is_forgotten(ledger: WriteLedger) -> None:
    p = Platform()
    p.fail = "refused"
    with pytest.raises(PlatformError):
        ledger.run_once("k", "collect", lambda: p.send("a"), lambda t: p.reconcile("a", t))
    assert ledger.status("k") is None
    p.fail = None
    assert ledger.run_once("k", "collect", lambda: p.send("a"), lambda t: p.reconcile("a", t)) == {"id": "w1"}
    assert p.reconciled == []  # nothing was pending: no need to look


def test_uncertain_reconcile_stops_without_sending(ledger: WriteLedger) -> None:
    p = Platform()
    p.fail = "lost"
    with pytest.raises(PlatformError):
        ledger.run_once("k", "collect", lambda: p.send("a"), lambda t: p.reconcile("a", t))

    def cannot_tell(_: datetime) -> dict[str, Any] | None:
        raise PlatformError("cannot tell whether the payment was collected", code="uncertain")

    with pytest.raises(PlatformError, match="cannot tell"):
        ledger.run_once("k", "collect", lambda: p.send("a"), cannot_tell)
    assert p.sends == 1 and ledger.status("k") == "pending"


def test_a_key_belongs_to_one_operation(ledger: WriteLedger) -> None:
    ledger.run_once("k", "collect", lambda: {"ok": True}, lambda t: None)
    with pytest.raises(InputError, match="collect"):
        ledger.run_once("k", "note", lambda: {"ok": True}, lambda t: None)
    with pytest.raises(InputError):
        ledger.run_once("", "note", lambda: {}, lambda t: None)
