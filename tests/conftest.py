"""Shared fixtures: a fresh BillOps runtime (database + DBOS) per test, on SQLite and, when a
PostgreSQL server answers on 127.0.0.1:5432, on PostgreSQL too (`backend` parametrization)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from billops.config import DEFAULT_POLICY_FILE, Settings
from billops.runtime import Runtime, start_runtime, stop_runtime
from support.helpers import OLD_SECRET, SECRET

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", connect_timeout=2):
            return True
    except Exception:
        return False


PG = _pg_available()


@pytest.fixture
def make_policy(tmp_path: Path) -> Callable[..., Path]:
    """Write a policy file: the packaged defaults with the given top-level sections replaced/merged."""

    def _make(**changes: Any) -> Path:
        raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
        # Quiet hours depend on the wall clock: off unless a test sets them (tests/governance does).
        raw.setdefault("guardrails", {})["quiet_hours"] = None
        # The SMS night cannot be switched off; park it in a one-minute window no time zone is in now
        # (7 h 17 min ahead of UTC: no zone has a :17 offset), so SMS tests do not depend on the clock.
        park = datetime.now(UTC) + timedelta(hours=7, minutes=17)
        night = {"start": f"{park:%H:%M}", "end": f"{park + timedelta(minutes=1):%H:%M}"}
        raw.setdefault("contact", {})["sms_night"] = night
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return _make


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'billops.db'}"
        return
    if not PG:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    import psycopg

    name = f"billops_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings_factory(tmp_path: Path, make_policy: Callable[..., Path]) -> Callable[..., Settings]:
    def _make(database_url: str | None = None, **kw: Any) -> Settings:
        base: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "stripe_webhook_secrets": {"default": [SECRET, OLD_SECRET]},
            "executor_id": f"test-{uuid.uuid4().hex[:6]}",
        }
        base.update(kw)
        if "policy_file" not in base:
            base["policy_file"] = make_policy(recovery={"context_wait_seconds": 1})
        return Settings(**base)

    return _make


@pytest.fixture
def runtime_factory() -> Iterator[Callable[[Settings], Runtime]]:
    started: list[bool] = []

    def _start(settings: Settings) -> Runtime:
        started.append(True)
        return start_runtime(settings)

    yield _start
    if started:
        _release_waiting_workflows()
        stop_runtime()
        _fresh_event_loop()


def _fresh_event_loop() -> None:
    """Test-harness cleanup: a DBOS workflow run on this thread makes DBOS's thread pool the default
    executor of the thread's event loop (pydantic-ai's run_sync reuses that loop). DBOS.destroy() shuts
    the pool down, so a later test's model call on this thread would fail with "cannot schedule new
    futures after shutdown". A real process launches DBOS once and never meets this."""
    import asyncio
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            old = asyncio.get_event_loop()
        except RuntimeError:
            old = None
    if old is not None and not old.is_running():
        old.close()
    asyncio.set_event_loop(asyncio.new_event_loop())


def _release_waiting_workflows() -> None:
    """Test-harness cleanup: DBOS.destroy() does not end workflow threads blocked in recv/sleep (in a
    real shutdown the process exits). Cancel what is still pending, then wake the waiters, so no thread
    outlives its test and polls a database that has been dropped."""
    from dbos import DBOS
    from dbos._dbos import _get_dbos_instance

    try:
        for wf in DBOS.list_workflows(status=["PENDING", "ENQUEUED"]):
            DBOS.cancel_workflow(wf.workflow_id)
        for _key, _components, signal in _get_dbos_instance()._sys_db.notifications_map.snapshot():
            signal.set()
    except Exception:  # best effort: the runtime may already be half down
        pass


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """DBOS system-database threads of a destroyed instance can keep retrying a dropped test database
    with backoff, which would keep the interpreter alive after the summary. End the process once
    pytest has reported, with pytest's own exit status."""
    import os
    import sys

    status = getattr(config, "_billops_exitstatus", None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(status))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._billops_exitstatus = exitstatus  # type: ignore[attr-defined]
