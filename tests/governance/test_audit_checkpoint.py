"""Checkpoints anchor the audit chain outside the database: `billops audit verify --checkpoint` fails on
edit+rehash, delete+renumber+rehash, truncate and wipe, even by a writer who stole the audit key (so the
HMAC alone cannot tell), and passes on an untouched log that grew since. File and S3 (moto's server on
loopback) stores; the DBOS schedule writes one checkpoint per scheduled time."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from billops.cli import app
from billops.config import Settings
from billops.governance import audit, audit_checkpoint, audit_keys
from billops.store.db import Database
from billops.store.models import AuditRecord
from support.audit_tamper import Rows, Writer


@pytest.fixture
def keys(tmp_path: Path, database_url: str) -> Iterator[Settings]:
    s = Settings(data_dir=tmp_path / "data", database_url=database_url)
    audit_keys.configure(s)
    audit_keys.forget()
    yield s
    audit_keys.configure(None)
    audit_keys.forget()


def append(d: Database, n: int, start: int = 0) -> None:
    with d.session() as s:
        for i in range(start, start + n):
            audit.record(s, action="test.step", actor=f"a{i}", workflow_id=f"wf:{i}", outcome={"n": i})


@pytest.fixture
def db(database_url: str, keys: Settings) -> Iterator[Database]:
    d = Database(database_url)
    d.migrate()
    append(d, 6)
    yield d
    d.dispose()


def cli(d: Database, keys: Settings, *args: str) -> Any:
    return CliRunner().invoke(app, ["--database-url", d.url, "--data-dir", str(keys.data_dir), *args])


def stolen_key(keys: Settings) -> bytes:
    """The attacker has read the key file too: the HMAC alone no longer tells; the checkpoint must."""
    return audit_keys.keyring(keys).active_key


def edit(rows: Rows) -> Rows:
    return [dict(r, outcome={"n": 99}) if r["seq"] == 3 else r for r in rows]


def drop_second(rows: Rows) -> Rows:
    return [r for r in rows if r["seq"] != 2]


TAMPER = {
    "edit+rehash": (lambda w, k: w.rewrite(edit, key=k), "record 6 differs from the checkpoint"),
    "delete+renumber+rehash": (
        lambda w, k: w.rewrite(drop_second, key=k, renumber=True),
        "record 6 differs from the checkpoint",
    ),
    "truncate": (lambda w, k: w.rewrite(lambda rows: rows[:4], key=k), "truncated"),
    "wipe": (lambda w, k: w.rewrite(lambda rows: [], key=k), "the log was wiped"),
}


@pytest.mark.parametrize("tamper", list(TAMPER))
def test_verify_with_checkpoint_fails_on_tampering(
    db: Database, keys: Settings, tmp_path: Path, tamper: str
) -> None:
    cps = tmp_path / "anchor" / "checkpoints.jsonl"
    r = cli(db, keys, "audit", "checkpoint", "--to", str(cps))
    assert r.exit_code == 0 and "record 6" in r.output, r.output
    append(db, 2, start=6)  # the log goes on growing after the checkpoint
    do, expected = TAMPER[tamper]
    do(Writer(db.url), stolen_key(keys))
    plain = cli(db, keys, "audit", "verify")
    assert plain.exit_code == 0, plain.output  # consistent, keyed: without the anchor it looks fine
    if tamper == "wipe":
        assert "0 records" in plain.output
    r = cli(db, keys, "audit", "verify", "--checkpoint", str(cps))
    assert r.exit_code == 1 and "TAMPERED" in r.output, r.output
    assert expected in r.output, r.output
    if "rehash" in tamper:
        assert "was rewritten" in r.output
    # a new checkpoint is refused: the tampered log is never signed
    again = cli(db, keys, "audit", "checkpoint", "--to", str(cps))
    assert again.exit_code != 0 and "no checkpoint written" in str(again.exception)
    assert len(cps.read_text().splitlines()) == 1


def test_untouched_log_that_grew_passes(db: Database, keys: Settings, tmp_path: Path) -> None:
    cps = tmp_path / "checkpoints.jsonl"
    assert cli(db, keys, "audit", "checkpoint", "--to", str(cps)).exit_code == 0
    append(db, 2, start=6)
    assert cli(db, keys, "audit", "checkpoint", "--to", str(cps)).exit_code == 0
    append(db, 4, start=8)
    r = cli(db, keys, "audit", "verify", "--checkpoint", str(cps))
    assert r.exit_code == 0, r.output
    assert "2 checkpoint(s) confirmed: records 1..8 unchanged" in r.output and "4 record(s) added" in r.output
    lines = [json.loads(x) for x in cps.read_text().splitlines()]
    assert [x["seq"] for x in lines] == [6, 8]
    assert set(lines[0]) == {"v", "seq", "hash", "record_at", "at", "scheduled_for", "key_id", "sig"}
    with db.reader() as s:
        assert lines[1]["hash"] == s.get(AuditRecord, 8).hash  # type: ignore[union-attr]


def test_forged_or_rolled_back_checkpoint_store_is_reported(
    db: Database, keys: Settings, tmp_path: Path
) -> None:
    cps = tmp_path / "checkpoints.jsonl"
    assert cli(db, keys, "audit", "checkpoint", "--to", str(cps)).exit_code == 0
    append(db, 2, start=6)
    assert cli(db, keys, "audit", "checkpoint", "--to", str(cps)).exit_code == 0
    first, second = cps.read_text().splitlines()
    # someone without the key lowers the newest checkpoint's seq to hide a cut tail: the signature fails
    forged = json.loads(second) | {"seq": 7}
    cps.write_text(first + "\n" + json.dumps(forged) + "\n")
    r = cli(db, keys, "audit", "verify", "--checkpoint", str(cps))
    assert r.exit_code == 1 and "signature does not match" in r.output
    # the database rolled back (restored from a backup) under a later checkpoint: a checkpoint taken
    # after another one but at a lower seq is reported, whatever order the store lists them in
    older = json.loads(first)
    later = audit_checkpoint.signed(
        audit_keys.keyring(keys), seq=older["seq"], hash=older["hash"], record_at=older["record_at"],
        at=datetime.now(UTC),
    )
    for lines in ([first, second, later.to_json()], [later.to_json(), first, second]):
        cps.write_text("\n".join(lines) + "\n")
        r = cli(db, keys, "audit", "verify", "--checkpoint", str(cps))
        assert r.exit_code == 1 and "rolled back" in r.output, r.output
    # lines out of order but consistent in time and seq hide nothing: still intact
    cps.write_text(second + "\n" + first + "\n")
    assert cli(db, keys, "audit", "verify", "--checkpoint", str(cps)).exit_code == 0
    # an empty or missing store proves nothing and says so
    r = cli(db, keys, "audit", "verify", "--checkpoint", str(tmp_path / "none.jsonl"))
    assert r.exit_code == 1 and "no checkpoint found" in r.output


def test_checkpoint_refuses_a_log_rewritten_since_the_last_one(
    db: Database, keys: Settings, tmp_path: Path
) -> None:
    """Checkpointing verifies only what is new since the newest checkpoint (cheap on a long log), and the
    newest checkpoint against the chain: a rewrite with the stolen key behind it is not blessed."""
    store = audit_checkpoint.open_store(tmp_path / "c.jsonl")
    ring = audit_keys.keyring(keys)
    with db.reader() as s:
        cp, written = audit_checkpoint.take(s, store, ring)
    assert written and cp.seq == 6
    Writer(db.url).rewrite(edit, key=stolen_key(keys))
    with db.reader() as s, pytest.raises(audit_checkpoint.CheckpointRefused, match="record 6 differs"):
        audit_checkpoint.take(s, store, ring)


def test_scheduled_checkpoint_is_written_once_per_time(db: Database, keys: Settings, tmp_path: Path) -> None:
    store = audit_checkpoint.open_store(tmp_path / "c.jsonl")
    ring = audit_keys.keyring(keys)
    t = datetime(2026, 12, 7, 3, 15, tzinfo=UTC)
    with db.reader() as s:
        assert audit_checkpoint.take(s, store, ring, scheduled_for=t)[1] is True
    append(db, 1, start=6)
    with db.reader() as s:
        assert audit_checkpoint.take(s, store, ring, scheduled_for=t)[1] is False  # a re-run: nothing new
        assert audit_checkpoint.take(s, store, ring, scheduled_for=t.replace(minute=30))[1] is True
    assert [json.loads(x)["seq"] for x in (tmp_path / "c.jsonl").read_text().splitlines()] == [6, 7]


# ---------------------------------------------------------------- S3 (moto's server on loopback)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        for k, v in {
            "AWS_ACCESS_KEY_ID": "test-key",
            "AWS_SECRET_ACCESS_KEY": "test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "BILLOPS_AUDIT_S3_ENDPOINT_URL": url,
        }.items():
            monkeypatch.setenv(k, v)
        bucket = f"audit-anchor-{uuid.uuid4().hex[:8]}"  # moto keeps one in-memory backend per process
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=bucket)
        yield f"s3://{bucket}/billops/prod", url
    finally:
        server.stop()


def test_s3_checkpoints(db: Database, keys: Settings, s3: tuple[str, str]) -> None:
    target, endpoint = s3
    assert cli(db, keys, "audit", "checkpoint", "--to", target).exit_code == 0
    append(db, 2, start=6)
    r = cli(db, keys, "audit", "checkpoint", "--to", target)
    assert r.exit_code == 0 and target in r.output
    settings = Settings(audit_s3_endpoint_url=endpoint)
    store = audit_checkpoint.open_store(target, settings)
    objects = [where for where, _ in store.read()]
    assert len(objects) == 2 and all(o.startswith(target + "/") for o in objects)
    r = cli(db, keys, "audit", "verify", "--checkpoint", target)
    assert r.exit_code == 0 and "records 1..8 unchanged" in r.output, r.output
    # idempotent per scheduled time on S3 as well
    t = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)  # this hour's slot (before now)
    with db.reader() as s:
        ring = audit_keys.keyring(keys)
        assert audit_checkpoint.take(s, store, ring, scheduled_for=t)[1] is True
        assert audit_checkpoint.take(s, store, ring, scheduled_for=t)[1] is False
    Writer(db.url).rewrite(lambda rows: [], key=None)
    r = cli(db, keys, "audit", "verify", "--checkpoint", target)
    assert r.exit_code == 1 and "the log was wiped" in r.output


# ---------------------------------------------------------------- the DBOS schedule


def test_schedule_writes_checkpoints(
    database_url: str, settings_factory: Any, runtime_factory: Any, tmp_path: Path
) -> None:
    from dbos import DBOS

    from billops.governance import audit_schedule

    cps = tmp_path / "scheduled.jsonl"
    settings = settings_factory(database_url, audit_checkpoint_minutes=5, audit_checkpoint_to=str(cps))
    rt = runtime_factory(settings)
    append(rt.db, 3)  # signed with the runtime's keys (its data dir)
    sched = DBOS.get_schedule(audit_schedule.SCHEDULE)
    assert sched is not None and sched["schedule"] == "0 */5 * * * *"
    result = DBOS.trigger_schedule(audit_schedule.SCHEDULE).get_result()
    assert result["written"] and result["seq"] == 3
    t = datetime(2026, 12, 7, 3, 5, tzinfo=UTC)
    assert audit_schedule.scheduled_checkpoint(t, None)["written"] is True
    assert audit_schedule.scheduled_checkpoint(t, None)["written"] is False  # same scheduled time
    lines = [json.loads(x) for x in cps.read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["scheduled_for"] == t.isoformat()
    r = CliRunner().invoke(
        app, ["--database-url", settings.db_url, "audit", "verify", "--checkpoint", str(cps)]
    )
    assert r.exit_code == 0 and "records 1..3 unchanged" in r.output, r.output
    # a log tampered with since the newest checkpoint is not signed: the run fails (ERROR, where the
    # failed-workflow alert sees it)
    append(rt.db, 1, start=3)
    with rt.db.session() as s:
        s.execute(sa.update(AuditRecord).where(AuditRecord.seq == 4).values(actor="mallory"))
    with pytest.raises(audit_schedule.CheckpointFailed, match="record 4"):
        audit_schedule.scheduled_checkpoint(t.replace(minute=10), None)
    assert len(cps.read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("minutes", "cron"), [(1, "0 */1 * * * *"), (60, "0 0 * * * *"), (360, "0 0 */6 * * *")]
)
def test_cron_for(minutes: int, cron: str) -> None:
    from billops.governance.audit_schedule import cron_for

    assert cron_for(minutes) == cron
