"""The process runtime: settings, database and DBOS, started once per process.

Workflow steps reach the database and settings through `get_runtime()`. DBOS is launched on the same
database as the BillOps tables (its own tables beside ours on SQLite; schema `dbos` on PostgreSQL),
with a pinned application version and a per-process executor id (see DESIGN.md, DBOS notes).

Start-up order: the runtime (settings, policy, migrated database, one connection pool) is complete and
registered *before* DBOS is launched, because launching recovers this executor's pending workflows and
starts consuming the events queue at once, and their steps call `get_runtime()`. `Runtime.ready`
turns true only after DBOS is launched, the events queue registered and the DBOS client connected;
`/readyz` answers 200 only then.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from billops.config import Settings
from billops.errors import ConfigError
from billops.policy import Policy, load_policy
from billops.store.db import Database

EVENTS_QUEUE = "billops-events"
_lock = threading.RLock()
_runtime: Runtime | None = None


@dataclass
class Runtime:
    settings: Settings
    db: Database
    dbos_launched: bool = False
    ready: bool = False
    _client: Any = field(default=None, repr=False)
    _platform_clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def policy(self) -> Policy:
        return load_policy(self.settings.policy_file)

    def dbos_client(self) -> Any:
        """A DBOSClient for enqueue/send inside a BillOps transaction (`*_in_transaction(conn, …)`).

        It uses the process's DBOS engine (the shared pool on PostgreSQL), so it opens no pool of its
        own. Created outside any transaction: its constructor checks its connection, which on SQLite
        would wait for the write lock our open transaction holds."""
        if self._client is None:
            from dbos import DBOSClient

            with _lock:
                if self._client is None:
                    self._client = DBOSClient(system_database_engine=self.db.dbos_engine())
        return self._client

    def platform_client(self, platform: str) -> Any | None:
        """The configured API client for a platform, or None when no credentials are configured."""
        if platform not in self._platform_clients:
            from billops.platforms.registry import build_client

            self._platform_clients[platform] = build_client(platform, self.settings, self.db)
        return self._platform_clients[platform]


def get_runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("BillOps runtime not started (call start_runtime first)")
    return _runtime


def current_runtime() -> Runtime | None:
    """The registered runtime, or None (health checks: never raises)."""
    return _runtime


def _database(settings: Settings) -> Database:
    return Database(settings.db_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow)


def start_runtime(settings: Settings, *, launch_dbos: bool = True) -> Runtime:
    """Create the database schema and, for server/worker processes, launch DBOS."""
    global _runtime
    with _lock:
        if _runtime is not None:
            return _runtime
        load_policy(settings.policy_file)  # invalid policy stops start-up here, naming the field
        db = _database(settings)
        db.migrate()
        rt = Runtime(settings=settings, db=db)
        # Registered before DBOS launches: a workflow recovered or dequeued during launch finds it.
        _runtime = rt
        try:
            if launch_dbos:
                _launch_dbos(rt)
                rt.dbos_client()
        except BaseException:
            _runtime = None
            _shutdown(rt)
            raise
        rt.ready = True
        return rt


def open_runtime(settings: Settings) -> Runtime:
    """For CLI commands: the running runtime if this process has one, else a database-only runtime
    that is not registered globally (no DBOS launch; messages go through a DBOS client)."""
    if _runtime is not None:
        return _runtime
    load_policy(settings.policy_file)
    db = _database(settings)
    db.migrate()
    return Runtime(settings=settings, db=db)


def _launch_dbos(rt: Runtime) -> None:
    from dbos import DBOS, DBOSConfig

    import billops.drafting.service
    import billops.governance.audit_schedule  # audit checkpoints on a schedule (scheduled below)
    import billops.ops.watch  # the failed-workflow watcher (scheduled after launch, below)
    import billops.recovery.workflow  # (registers the workflows before launch)

    s = rt.settings
    config: DBOSConfig = {
        "name": "billops",
        "system_database_url": s.db_url,
        "system_database_engine": rt.db.dbos_engine(),
        "application_version": s.workflow_version,
        "executor_id": s.executor_id,
        "log_level": "WARNING",
        "notification_listener_polling_interval_sec": 0.2,
    }
    try:
        DBOS(config=config)
        DBOS.launch()
        rt.dbos_launched = True
        DBOS.register_queue(EVENTS_QUEUE, worker_concurrency=s.worker_concurrency, polling_interval_sec=0.2)
        billops.ops.watch.schedule(s)
        billops.governance.audit_schedule.schedule(s)
    except Exception as exc:  # DBOS raises its own types; say what failed
        raise ConfigError(f"could not start durable workflows on {rt.db.safe_url}: {exc}") from exc
    logging.getLogger("dbos").setLevel(logging.WARNING)


def _shutdown(rt: Runtime) -> None:
    rt.ready = False
    if rt._client is not None:
        rt._client.destroy()
    if rt.dbos_launched:
        from dbos import DBOS

        DBOS.destroy(workflow_completion_timeout_sec=0)
    rt.db.dispose()


def stop_runtime() -> None:
    """Shut DBOS down and forget the runtime (tests start several in one process)."""
    global _runtime
    with _lock:
        rt = _runtime
        if rt is None:
            return
        # Not ready first (the load balancer stops sending), and still registered while DBOS stops:
        # a step that is running meanwhile must not fail with "runtime not started".
        rt.ready = False
    try:
        _shutdown(rt)
    finally:
        with _lock:
            if _runtime is rt:
                _runtime = None
