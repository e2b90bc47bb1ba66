"""What keying the audit chain costs per `audit.record`, against the unkeyed sha256 chain it replaced.

    python benchmarks/audit.py [--records 3000] [--rounds 5] [--per-tx 1] [--database-url postgresql://…]

Two fresh databases (two temporary SQLite files by default, or two new databases on the given
PostgreSQL server): one appended to with today's `audit.record` (key file lookup + HMAC-SHA256 +
key id), the other with the pre-0006 append (sha256, no key), in alternating rounds so both see the
same machine. `--per-tx` records per transaction (1: each append commits on its own, as a webhook or
an approval does; larger: the CPU cost of the append itself dominates). Prints one JSON line per
variant (wall and CPU µs per record, median over rounds), the keyed/legacy ratios, the cost of the
hash alone, then verify throughput.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session


def legacy_record(
    session: Session, *, action: str, actor: str, workflow_id: str, outcome: dict[str, Any]
) -> None:
    """The append as it was before keying (governance/audit.py before migration 0006)."""
    from billops.governance import audit
    from billops.store.models import AuditHead, AuditRecord

    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": audit._PG_LOCK_KEY})
    head = session.get(AuditHead, 1)
    prev_seq, prev_hash = (head.seq, head.hash) if head else (0, audit.GENESIS)
    rec = AuditRecord(
        seq=prev_seq + 1,
        at=datetime.now(UTC),
        actor_type="system",
        actor=actor,
        action=action,
        workflow_id=workflow_id,
        trace_id=None,
        subject=None,
        versions=json.loads(audit._canonical({})),
        input_digest=None,
        outcome=json.loads(audit._canonical(outcome)),
        prev_hash=prev_hash,
    )
    rec.hash = audit.compute_hash(prev_hash, audit.fields(rec))
    session.add(rec)
    if head is None:
        session.add(AuditHead(id=1, seq=rec.seq, hash=rec.hash))
    else:
        head.seq, head.hash = rec.seq, rec.hash
    session.flush()


def keyed_record(
    session: Session, *, action: str, actor: str, workflow_id: str, outcome: dict[str, Any]
) -> None:
    from billops.governance import audit

    audit.record(session, action=action, actor=actor, workflow_id=workflow_id, outcome=outcome)


def _admin(url: sa.engine.URL) -> str:
    host, port, user = url.host or "127.0.0.1", url.port or 5432, url.username or "postgres"
    return f"host={host} port={port} user={user} dbname=postgres"


def _databases(base: str | None, tmp: Path) -> tuple[list[str], list[str]]:
    if not base:
        return [f"sqlite:///{tmp / 'legacy.db'}", f"sqlite:///{tmp / 'keyed.db'}"], []
    import psycopg

    url = sa.engine.make_url(base.replace("postgresql://", "postgresql+psycopg://", 1))
    names = [f"billops_bench_audit_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    admin = _admin(url)
    with psycopg.connect(admin, autocommit=True) as c:
        for n in names:
            c.execute(f'CREATE DATABASE "{n}"')
    return [url.set(database=n).render_as_string(hide_password=False) for n in names], names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=3000, help="records per variant per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-tx", type=int, default=1, help="records per transaction")
    ap.add_argument("--database-url", help="a PostgreSQL server (two databases are created and dropped)")
    args = ap.parse_args()

    from billops.config import Settings
    from billops.governance import audit, audit_keys
    from billops.store.db import Database

    tmp = Path(tempfile.mkdtemp(prefix="billops-audit-bench-"))
    audit_keys.configure(Settings(data_dir=tmp / "data"))  # the key file, as a default install has it
    urls, created = _databases(args.database_url, tmp)
    dbs = {"legacy_sha256": Database(urls[0]), "keyed_hmac": Database(urls[1])}
    fns = {"legacy_sha256": legacy_record, "keyed_hmac": keyed_record}
    for d in dbs.values():
        d.migrate()
    wall: dict[str, list[float]] = {k: [] for k in dbs}
    cpu: dict[str, list[float]] = {k: [] for k in dbs}
    n = 0
    try:
        for _round in range(args.rounds):
            for name, d in dbs.items():  # alternate, so both variants share the machine's noise
                fn = fns[name]
                t0, c0 = time.perf_counter(), time.process_time()
                done = 0
                while done < args.records:
                    with d.session() as s:
                        for _ in range(min(args.per_tx, args.records - done)):
                            fn(s, action="bench.step", actor="bench", workflow_id=f"wf:{n}", outcome={"n": n})
                            n += 1
                            done += 1
                wall[name].append((time.perf_counter() - t0) / args.records * 1e6)
                cpu[name].append((time.process_time() - c0) / args.records * 1e6)
        engine = "postgresql" if args.database_url else "sqlite"
        for k in dbs:
            print(
                json.dumps(
                    {
                        "measure": "audit.record",
                        "variant": k,
                        "engine": engine,
                        "per_tx": args.per_tx,
                        "wall_us_per_record": round(statistics.median(wall[k]), 1),
                        "cpu_us_per_record": round(statistics.median(cpu[k]), 1),
                    }
                )
            )
        print(
            json.dumps(
                {
                    "measure": "audit.record keyed / legacy",
                    "engine": engine,
                    "per_tx": args.per_tx,
                    "wall_ratio": round(
                        statistics.median(wall["keyed_hmac"]) / statistics.median(wall["legacy_sha256"]), 3
                    ),
                    "cpu_ratio": round(
                        statistics.median(cpu["keyed_hmac"]) / statistics.median(cpu["legacy_sha256"]), 3
                    ),
                }
            )
        )
        # the part keying adds, alone: key lookup (a stat of the key file) + HMAC instead of sha256
        rec = next(iter(audit.export(dbs["keyed_hmac"].reader())))
        f = {k: v for k, v in rec.items() if k not in ("prev_hash", "hash")}
        reps = 20000
        t0 = time.perf_counter()
        for _ in range(reps):
            audit.compute_hash(rec["prev_hash"], f)
        sha = (time.perf_counter() - t0) / reps * 1e6
        t0 = time.perf_counter()
        for _ in range(reps):
            ring = audit_keys.keyring()
            audit.compute_hash(rec["prev_hash"], f, ring.active_key)
        keyed = (time.perf_counter() - t0) / reps * 1e6
        print(
            json.dumps(
                {"measure": "hash only", "sha256_us": round(sha, 2), "keyring_plus_hmac_us": round(keyed, 2)}
            )
        )
        with dbs["keyed_hmac"].reader() as s:
            t0 = time.perf_counter()
            res = audit.verify(s)
            dt = time.perf_counter() - t0
        print(
            json.dumps(
                {
                    "measure": "audit.verify keyed",
                    "engine": engine,
                    "records": res.records,
                    "ok": res.ok,
                    "records_per_s": round(res.records / dt),
                }
            )
        )
        if not res.ok:
            sys.exit(1)
    finally:
        for d in dbs.values():
            d.dispose()
        if created:
            import psycopg

            url = sa.engine.make_url(urls[0])
            admin = _admin(url)
            with psycopg.connect(admin, autocommit=True) as c:
                for name in created:
                    c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
