"""The audit chain: intact after real work, keyed (HMAC under a key outside the database, rotated by key
id), and any edit, deletion, cut tail or rehash without the key is detected; legacy sha256 records from
before keying still verify."""

from __future__ import annotations

import hashlib
import itertools
import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from typer.testing import CliRunner

from billops.cli import app
from billops.config import Settings
from billops.governance import audit, audit_keys
from billops.store.db import MIGRATIONS, Database
from billops.store.models import AuditHead, AuditRecord
from support.audit_tamper import Writer


@pytest.fixture
def keys(tmp_path: Path, database_url: str) -> Iterator[Settings]:
    """This process signs with the key file in a fresh data dir (made on first use), as the CLI does."""
    s = Settings(data_dir=tmp_path / "data", database_url=database_url)
    audit_keys.configure(s)
    audit_keys.forget()
    yield s
    audit_keys.configure(None)
    audit_keys.forget()


def append(d: Database, n: int, start: int = 0) -> None:
    with d.session() as s:
        for i in range(start, start + n):
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


@pytest.fixture
def db(database_url: str, keys: Settings) -> Iterator[Database]:
    d = Database(database_url)
    d.migrate()
    append(d, 6)
    yield d
    d.dispose()


def check(d: Database) -> audit.VerifyResult:
    with d.reader() as s:
        return audit.verify(s)


def cli(d: Database, keys: Settings, *args: str) -> Any:
    return CliRunner().invoke(app, ["--database-url", d.url, "--data-dir", str(keys.data_dir), *args])


def test_intact_chain_is_keyed_and_verifies(db: Database, keys: Settings) -> None:
    res = check(db)
    assert res.ok and res.records == 6 and res.problems == [] and res.legacy == 0
    with db.reader() as s:
        recs = list(s.scalars(sa.select(AuditRecord).order_by(AuditRecord.seq)))
    ring = audit_keys.keyring(keys)
    assert {r.key_id for r in recs} == {ring.active_id} and res.key_ids == {ring.active_id: 6}
    assert recs[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(recs))
    assert recs[1].input_digest == audit.digest({"i": 1})
    # the hash is the HMAC under the key, not a sha256 anyone can recompute
    assert recs[2].hash == audit.compute_hash(recs[2].prev_hash, audit.fields(recs[2]), ring.active_key)
    assert recs[2].hash != audit.compute_hash(recs[2].prev_hash, audit.fields(recs[2]))
    # the key file: in the data dir, owner-only, never in the database
    kf = keys.data_dir / "audit.keys"
    assert stat.S_IMODE(kf.stat().st_mode) == 0o600
    secret = json.loads(kf.read_text())["keys"][ring.active_id]
    with db.reader() as s:
        assert secret not in json.dumps([r for r in audit.export(s)], default=str)


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


def test_edit_and_rehash_without_the_key_is_detected(db: Database) -> None:
    """A DB writer who edits a record and recomputes the whole chain from there, with any key but ours
    (or as the old unkeyed sha256 chain): every recomputed record fails its HMAC / keying check."""
    w = Writer(db.url)
    w.rewrite(lambda rows: [dict(r, actor="mallory") if r["seq"] == 3 else r for r in rows], key=b"g" * 32)
    res = check(db)
    assert not res.ok
    assert any("record 3" in p and "HMAC" in p for p in res.problems)
    assert any("record 6" in p and "HMAC" in p for p in res.problems)  # its descendants too
    w.rewrite(
        lambda rows: [dict(r, actor="mallory") if r["seq"] == 3 else r for r in rows], key=None, start=3
    )
    res = check(db)  # rehashed as the legacy sha256 chain from record 3 on
    assert not res.ok and any("record 3" in p and "no key id" in p for p in res.problems)


def test_whole_log_rewritten_as_legacy_passes_plain_verify_but_says_so(db: Database, keys: Settings) -> None:
    """The honest limit: a writer who turns the WHOLE log into an unkeyed sha256 chain looks like a
    database from before keying. Plain verify passes but reports every record as unkeyed; only a
    checkpoint proves otherwise (test_audit_checkpoint.py)."""
    Writer(db.url).rewrite(lambda rows: [dict(r, actor="mallory") for r in rows], key=None)
    res = check(db)
    assert res.ok and res.legacy == 6 and res.key_ids == {}
    r = cli(db, keys, "audit", "verify")
    assert r.exit_code == 0 and "6 record(s) from before keying" in r.output and "checkpoint" in r.output
    # an install that pinned its legacy prefix outside the database (here: it never had one) sees it
    with db.reader() as s:
        res = audit.verify(s, legacy_until=0)
    assert not res.ok and len(res.problems) == 6 and "only records up to 0 may be unkeyed" in res.problems[0]
    r = CliRunner().invoke(
        app,
        ["--database-url", db.url, "--data-dir", str(keys.data_dir), "audit", "verify"],
        env={"BILLOPS_AUDIT_LEGACY_UNTIL": "0"},
    )
    assert r.exit_code == 1 and "BILLOPS_AUDIT_LEGACY_UNTIL" in r.output


def test_rotation_keeps_old_records_verifiable(db: Database, keys: Settings) -> None:
    old = audit_keys.keyring(keys).active_id
    r = cli(db, keys, "audit", "rotate-key")
    assert r.exit_code == 0, r.output
    new = audit_keys.keyring(keys).active_id
    assert new != old and f"signed with {new}" in r.output
    assert stat.S_IMODE((keys.data_dir / "audit.keys").stat().st_mode) == 0o600
    append(db, 3, start=6)
    res = check(db)
    assert res.ok and res.key_ids == {old: 6, new: 3}
    shown = cli(db, keys, "audit", "keys")
    assert shown.exit_code == 0 and f"{new}  (active)" in shown.output and old in shown.output
    # a verifier that lost the old key says which records it cannot check (it does not pass them)
    raw = json.loads((keys.data_dir / "audit.keys").read_text())
    del raw["keys"][old]
    (keys.data_dir / "audit.keys").write_text(json.dumps(raw))
    res = check(db)
    assert not res.ok and sum(f"audit key {old!r}" in p for p in res.problems) == 6


def test_keys_from_settings(database_url: str, tmp_path: Path) -> None:
    a, b = "a" * 40, "b" * 40
    d = Database(database_url)
    d.migrate()
    try:
        audit_keys.configure(Settings(data_dir=tmp_path, audit_keys={"k2026": a}))
        append(d, 2)
        audit_keys.configure(
            Settings(data_dir=tmp_path, audit_keys={"k2026": a, "k2027": b}, audit_key_id="k2027")
        )
        append(d, 2, start=2)
        res = check(d)
        assert res.ok and res.key_ids == {"k2026": 2, "k2027": 2}
        assert not (tmp_path / "audit.keys").exists()  # settings keys: no key file made
        audit_keys.configure(
            Settings(data_dir=tmp_path, audit_keys={"k2026": "c" * 40, "k2027": b}, audit_key_id="k2027")
        )
        res = check(d)  # a wrong secret under the same id
        assert not res.ok and [p.split(":")[0] for p in res.problems] == ["record 1", "record 2"]
    finally:
        audit_keys.configure(None)
        d.dispose()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"audit_keys": {"k1": "short"}}, "at least 32 characters"),
        ({"audit_keys": {"k 1": "x" * 40}}, "key id"),
        ({"audit_keys": {"k1": "x" * 40, "k2": "y" * 40}}, "audit_key_id must name"),
        ({"audit_keys": {"k1": "x" * 40}, "audit_key_id": "k9"}, "not a key id"),
        ({"audit_checkpoint_minutes": 7, "audit_checkpoint_to": "x.jsonl"}, "divisor of 60"),
        ({"audit_checkpoint_minutes": 5}, "needs audit_checkpoint_to"),
        ({"audit_checkpoint_to": "s3:///p"}, "needs a bucket"),
        ({"audit_checkpoint_to": "gs://bucket/p"}, "file path or an s3://"),
    ],
)
def test_audit_settings_are_validated(kw: dict[str, Any], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        Settings(**kw)


def _legacy_hash(prev: str, f: dict[str, Any]) -> str:
    """The pre-0006 algorithm, written out independently of billops' code."""
    return hashlib.sha256(
        (prev + json.dumps(f, sort_keys=True, separators=(",", ":"), ensure_ascii=False)).encode()
    ).hexdigest()


def test_legacy_records_verify_and_keying_seals_them(database_url: str, keys: Settings) -> None:
    """A database written before 0006 (unkeyed sha256 chain) migrates and verifies; new records are
    keyed, and the first keyed record's HMAC pins the legacy prefix."""
    d = Database(database_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", d.url.replace("%", "%%"))
    with d.write_engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
        conn.commit()
    from support.audit_tamper import HEAD, LOG

    prev, rows = audit.GENESIS, []
    for seq in (1, 2, 3):
        at = datetime(2026, 1, seq, tzinfo=UTC)
        f = {
            "seq": seq,
            "at": at.isoformat(),
            "actor_type": "system",
            "actor": "billops",
            "action": "old.step",
            "workflow_id": None,
            "trace_id": None,
            "subject": None,
            "versions": {},
            "input_digest": None,
            "outcome": {"i": seq},
        }
        h = _legacy_hash(prev, f)
        rows.append({**f, "at": at, "prev_hash": prev, "hash": h})
        prev = h
    legacy_log = sa.Table(
        "audit_log",
        sa.MetaData(),
        *(sa.Column(c.name, c.type, primary_key=c.primary_key) for c in LOG.c if c.name != "key_id"),
    )
    with d.write_engine.begin() as conn:  # as the pre-0006 code wrote them: no key_id column yet
        conn.execute(sa.insert(legacy_log), rows)
        conn.execute(sa.insert(HEAD).values(id=1, seq=3, hash=prev))
    d.migrate()  # 0006 and later
    try:
        res = check(d)
        assert res.ok and res.records == 3 and res.legacy == 3, res.problems
        append(d, 2)
        res = check(d)
        assert res.ok and res.records == 5 and res.legacy == 3 and sum(res.key_ids.values()) == 2
        with d.reader() as s:  # pinning the legacy prefix at 3 accepts exactly this log
            assert audit.verify(s, legacy_until=3).ok
        r = cli(d, keys, "audit", "verify")
        assert r.exit_code == 0 and "3 record(s) from before keying" in r.output
        # rewriting a legacy record as a consistent sha256 chain breaks the first keyed record
        w = Writer(d.url)
        w.rewrite(
            lambda rows: [dict(r, actor="mallory") if r["seq"] == 2 else r for r in rows], key=None, upto=3
        )
        res = check(d)
        assert not res.ok and any(p.startswith("record 4") for p in res.problems), res.problems
    finally:
        d.dispose()


def test_cli_verify_and_export(db: Database, keys: Settings, tmp_path: Path) -> None:
    ok = cli(db, keys, "audit", "verify")
    assert ok.exit_code == 0 and "intact" in ok.output and "(6 records)" in ok.output
    out = tmp_path / "audit.jsonl"
    exp = cli(db, keys, "audit", "export", "--out", str(out))
    assert exp.exit_code == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 6 and '"hash"' in lines[0] and json.loads(lines[0])["key_id"]
    with db.session() as s:
        s.execute(sa.update(AuditRecord).where(AuditRecord.seq == 4).values(actor="mallory"))
    bad = cli(db, keys, "audit", "verify")
    assert bad.exit_code == 1 and "record 4" in bad.output


def test_audit_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BILLOPS_AUDIT_KEYS", json.dumps({"k-old": "o" * 32, "k-new": "n" * 32}))
    monkeypatch.setenv("BILLOPS_AUDIT_KEY_ID", "k-new")
    ring = audit_keys.keyring(Settings(data_dir=tmp_path))
    assert ring.active_id == "k-new" and set(ring.keys) == {"k-old", "k-new"} and "settings" in ring.source
    assert "nnnn" not in repr(ring)  # secrets stay out of reprs and logs


def test_verify_reads_one_snapshot_while_appends_go_on(db: Database) -> None:
    """verify (and checkpoint) see the chain and its head as of one moment, so a record appended in the
    middle of a long verify is never taken for a cut tail (PostgreSQL: REPEATABLE READ)."""
    with db.reader() as s:
        audit.snapshot(s)
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditRecord)) == 6
        append(db, 2, start=6)  # another transaction commits meanwhile
        res = audit.verify(s)
        assert res.ok and res.records == 6, res.problems
    assert check(db).records == 8


def test_key_file_made_once_when_processes_race(tmp_path: Path) -> None:
    """Workers starting together on a fresh data dir all end up with the one key file that won."""
    import subprocess
    import sys

    code = (
        "import hashlib,sys;from billops.config import Settings;from billops.governance import audit_keys;"
        "r=audit_keys.keyring(Settings(data_dir=sys.argv[1]));"
        "print(r.active_id, hashlib.sha256(r.active_key).hexdigest())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "d")], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs) and len(outs) == 1
    assert [f.name for f in (tmp_path / "d").iterdir()] == ["audit.keys"]  # no temp files left
