"""The audit chain: intact after real work, and any edit, deletion or cut tail is detected."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from billops.cli import app
from billops.governance import audit
from billops.store.db import Database
from billops.store.models import AuditHead, AuditRecord


@pytest.fixture
def db(database_url: str) -> Any:
    d = Database(database_url)
    d.migrate()
    with d.session() as s:
        for i in range(6):
            audit.record(
                s,
                action="test.step",
                actor_type="human" if i % 2 else "system",
                actor=f"a{i}",
                workflow_id=f"wf:{i}",
                inputs={"i": i},
                outcome={"n": i, "ok": True},
                versions={"policy": "p1"},
            )
    yield d
    d.dispose()


def check(d: Database) -> audit.VerifyResult:
    with d.reader() as s:
        return audit.verify(s)


def test_intact_chain_verifies(db: Database) -> None:
    res = check(db)
    assert res.ok and res.records == 6 and res.problems == []
    with db.reader() as s:
        recs = list(s.scalars(sa.select(AuditRecord).order_by(AuditRecord.seq)))
    assert recs[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(recs))
    assert recs[1].input_digest == audit.digest({"i": 1})


def test_edited_record_is_detected(db: Database) -> None:
    with db.session() as s:
        s.execute(sa.update(AuditRecord).where(AuditRecord.seq == 3).values(outcome={"n": 3, "ok": False}))
    res = check(db)
    assert not res.ok and any("record 3" in p and "edited" in p for p in res.problems)


def test_deleted_record_is_detected(db: Database) -> None:
    with db.session() as s:
        s.execute(sa.delete(AuditRecord).where(AuditRecord.seq == 2))
    res = check(db)
    assert not res.ok and any("missing" in p for p in res.problems)


def test_cut_tail_is_detected(db: Database) -> None:
    with db.session() as s:
        s.execute(sa.delete(AuditRecord).where(AuditRecord.seq >= 5))
    res = check(db)
    assert not res.ok and any("removed" in p for p in res.problems)


def test_rewritten_chain_without_head_is_detected(db: Database) -> None:
    with db.session() as s:
        s.execute(sa.delete(AuditHead))
    assert not check(db).ok


def test_cli_verify_and_export(db: Database, tmp_path: Any) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["--database-url", db.url, "audit", "verify"])
    assert ok.exit_code == 0 and "intact" in ok.output
    out = tmp_path / "audit.jsonl"
    exp = runner.invoke(app, ["--database-url", db.url, "audit", "export", "--out", str(out)])
    assert exp.exit_code == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 6 and '"hash"' in lines[0]
    with db.session() as s:
        s.execute(sa.update(AuditRecord).where(AuditRecord.seq == 4).values(actor="mallory"))
    bad = runner.invoke(app, ["--database-url", db.url, "audit", "verify"])
    assert bad.exit_code == 1
