"""One connection pool per process on PostgreSQL, shared by the app and DBOS, within the bound
docs/operations.md documents: db_pool_size + db_max_overflow + 1 (DBOS's LISTEN connection)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.config import Settings
from billops.runtime import Runtime
from support.helpers import SECRET, sign, wait_for, workflow_status
from support.scenario import Failure

pytestmark = pytest.mark.postgres


ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _connections(dbname: str, conn: Any = None) -> int:
    import psycopg

    if conn is None:
        with psycopg.connect(ADMIN, autocommit=True) as c:
            return _connections(dbname, c)
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,)).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def peak_connections(dbname: str) -> Iterator[dict[str, int]]:
    """Sample pg_stat_activity for `dbname` every 20 ms (on one connection of its own, to the
    `postgres` database) while the block runs; `peak` is the most seen."""
    import psycopg

    seen = {"peak": 0}
    stop = threading.Event()
    conn = psycopg.connect(ADMIN, autocommit=True)

    def sample() -> None:
        while not stop.is_set():
            seen["peak"] = max(seen["peak"], _connections(dbname, conn))
            stop.wait(0.02)

    t = threading.Thread(target=sample, name="pg-sampler", daemon=True)
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join(timeout=5)
        conn.close()


@pytest.fixture
def pg_url(backend: str, database_url: str) -> str:
    if backend != "postgresql":
        pytest.skip("connection counting is about PostgreSQL")
    return database_url


def _post_concurrently(post: Callable[[dict[str, Any]], Any], payloads: list[dict[str, Any]]) -> None:
    errors: list[BaseException] = []

    def one(p: dict[str, Any]) -> None:
        try:
            post(p)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


@pytest.mark.parametrize("size,overflow", [(10, 10), (3, 2)], ids=["defaults", "small-pool"])
def test_one_runtime_uses_one_pool_within_its_bound(
    pg_url: str,
    settings_factory: Callable[..., Settings],
    runtime_factory: Callable[[Settings], Runtime],
    size: int,
    overflow: int,
) -> None:
    settings = settings_factory(pg_url, db_pool_size=size, db_max_overflow=overflow, worker_concurrency=8)
    rt = runtime_factory(settings)
    assert rt.db.dbos_engine() is rt.db.engine, "DBOS shares the app's pool"
    assert rt.dbos_client()._sys_db.engine.pool is rt.db.engine.pool, "so does the DBOS client"
    client = TestClient(create_app(settings, manage_runtime=False))
    dbname = pg_url.rsplit("/", 1)[1]
    bound = size + overflow + 1  # + DBOS's LISTEN connection, detached from the pool

    def post(payload: dict[str, Any]) -> str:
        body, header = sign(payload)
        r = client.post("/webhooks/stripe/default", content=body, headers={"stripe-signature": header})
        assert r.status_code == 200, r.text
        return str(r.json()["workflow_id"])

    failures = [Failure() for _ in range(12)]
    with peak_connections(dbname) as seen:
        _post_concurrently(post, [e for f in failures for e in f.events()])
        wfs = [f"stripe:{f.invoice_failed()['id']}" for f in failures]
        ids = [wf for wf in _workflow_ids(rt) if wf.startswith("stripe:")]

        def done() -> bool:
            states = [workflow_status(rt, wf) for wf in ids]
            assert "ERROR" not in states
            return all(s == "SUCCESS" for s in states)

        wait_for(done, timeout=90)
    assert len(ids) == 24 and wfs  # every event started its workflow and all finished
    assert 2 <= seen["peak"] <= bound, seen
    print(f"one runtime, pool {size}+{overflow}: peak {seen['peak']} connections (bound {bound})")
    assert _connections(dbname) <= bound


def _workflow_ids(rt: Runtime) -> list[str]:
    with rt.db.engine.connect() as c:
        return [str(r[0]) for r in c.execute(sa.text("SELECT workflow_uuid FROM dbos.workflow_status"))]


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_three_workers_fit_in_postgres_default_100_with_room_to_spare(
    pg_url: str, tmp_path: Path, make_policy: Callable[..., Path]
) -> None:
    """Three `billops serve` workers on one database, all taking events at once, together stay within
    3 x (pool + overflow + 1): 63 with the default pool, far below PostgreSQL's default 100. On a shared
    server with less room (other test runs), the same is shown with a pool of 5 + 5 (3 x 11)."""
    import psycopg

    dbname = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN, autocommit=True) as c:
        limit = int(c.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
        others = int(c.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0])  # type: ignore[index]
    free = limit - 3 - others
    size, overflow = (10, 10) if free >= 3 * 21 + 2 else (5, 5)
    bound = size + overflow + 1
    if free < 3 * bound + 2:  # the server is shared (other test runs): do not starve them
        pytest.skip(f"only {free} connections free on the shared server")
    policy = make_policy(recovery={"context_wait_seconds": 1})
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for i in range(3):
            port = _free_port()
            env = {
                **os.environ,
                "BILLOPS_DATABASE_URL": pg_url,
                "BILLOPS_DATA_DIR": str(tmp_path / f"w{i}"),
                "BILLOPS_POLICY_FILE": str(policy),
                "BILLOPS_STRIPE_WEBHOOK_SECRETS": json.dumps({"default": [SECRET]}),
                "BILLOPS_EXECUTOR_ID": f"pool-worker-{i}",
                "BILLOPS_DB_POOL_SIZE": str(size),
                "BILLOPS_DB_MAX_OVERFLOW": str(overflow),
            }
            log = (tmp_path / f"w{i}.log").open("ab")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "billops", "serve", "--host", "127.0.0.1", "--port", str(port)],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
            # One at a time: the first creates the schemas, the others find them.
            wait_for(lambda u=urls[-1]: _ready(u), timeout=90, interval=0.2)

        def post(payload: dict[str, Any], url: str) -> None:
            body, header = sign(payload)
            r = httpx.post(
                f"{url}/webhooks/stripe/default",
                content=body,
                headers={"stripe-signature": header, "content-type": "application/json"},
                timeout=30,
            )
            assert r.status_code == 200, r.text

        events = [e for _ in range(15) for e in Failure().events()]
        with peak_connections(dbname) as seen:
            _post_concurrently(lambda p: post(p, urls[hash(p["id"]) % 3]), events)
            engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
            try:

                def done() -> bool:
                    with engine.connect() as c:
                        rows = c.execute(sa.text("SELECT status FROM dbos.workflow_status")).scalars().all()
                    assert "ERROR" not in rows
                    return len(rows) >= len(events) and all(s == "SUCCESS" for s in rows)

                wait_for(done, timeout=120, interval=0.5)
            finally:
                engine.dispose()
        assert seen["peak"] <= 3 * bound, seen
        print(f"three workers, pool {size}+{overflow}: peak {seen['peak']} connections (bound {3 * bound})")
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
