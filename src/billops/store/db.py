"""One `Database` per process: the engine (SQLite in WAL mode, or PostgreSQL), sessions, migrations.

SQLite write transactions start with BEGIN IMMEDIATE so that concurrent writers queue on the
database lock instead of failing half-way on a snapshot upgrade; PostgreSQL uses its defaults.

Connections (docs/operations.md, "Database connections"): on PostgreSQL the process has ONE pool,
`pool_size` + `max_overflow` connections, shared by the app and DBOS (`dbos_engine()` returns the
same engine; DBOS views it through its own execution options). On SQLite DBOS gets one engine of its
own on the same file (its transactions need the pysqlite IMMEDIATE mode, ours a BEGIN per
transaction), created once and shared by DBOS and the DBOS client; SQLite connections are file
handles, not server slots.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from billops.errors import ConfigError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_POOL_SIZE = 10
DEFAULT_MAX_OVERFLOW = 10


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_dbos_connect(dbapi_conn: Any, record: Any) -> None:
    """What DBOS sets on the SQLite engines it makes itself (IMMEDIATE transactions serialize its
    writers), plus WAL and synchronous=NORMAL (DESIGN.md, DBOS notes)."""
    _sqlite_pragmas(dbapi_conn, record)
    dbapi_conn.isolation_level = "IMMEDIATE"


def make_engine(
    url: str,
    *,
    immediate: bool = True,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
) -> sa.Engine:
    """Create an engine with the settings BillOps relies on."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False, "isolation_level": None},
            pool_size=pool_size,
            max_overflow=max_overflow,
        )
        event.listen(engine, "connect", _sqlite_pragmas)

        @event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            # Writers take the lock up front (BEGIN IMMEDIATE) so they queue instead of failing on a
            # snapshot upgrade; readers use a plain deferred BEGIN and never block anyone in WAL mode.
            write = immediate and conn.get_execution_options().get("billops_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return sa.create_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True, pool_timeout=30
    )


class Database:
    def __init__(
        self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE, max_overflow: int = DEFAULT_MAX_OVERFLOW
    ) -> None:
        self.url = url
        self.pool_size, self.max_overflow = pool_size, max_overflow
        self.engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        self.is_sqlite = url.startswith("sqlite")
        self.write_engine = self.engine.execution_options(billops_write=True)
        self._sessions = sessionmaker(self.write_engine, expire_on_commit=False)
        self._readers = sessionmaker(self.engine, expire_on_commit=False)
        self._dbos_engine: sa.Engine | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back (nothing half-written) on error."""
        with self._sessions.begin() as s:
            yield s

    def reader(self) -> Session:
        """A session for reads (on SQLite a deferred transaction: it never takes the write lock)."""
        return self._readers()

    def dbos_engine(self) -> sa.Engine:
        """The engine DBOS and the DBOS client use: the app's own pool on PostgreSQL; on SQLite one
        engine (created on first use, then the same one) configured the way DBOS needs it."""
        if not self.is_sqlite:
            return self.engine
        with self._lock:
            if self._dbos_engine is None:
                engine = sa.create_engine(
                    self.url,
                    connect_args={"timeout": 30, "check_same_thread": False},
                    pool_size=self.pool_size,
                    max_overflow=self.max_overflow,
                )
                event.listen(engine, "connect", _sqlite_dbos_connect)
                self._dbos_engine = engine
            return self._dbos_engine

    @property
    def max_connections(self) -> int:
        """The most connections this process's pool can hold open (see docs/operations.md)."""
        return self.pool_size + self.max_overflow

    def migrate(self) -> None:
        """Bring the BillOps tables to the newest schema (Alembic upgrade head)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        cfg.attributes["connection"] = None
        try:
            with self.write_engine.connect() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                if conn.in_transaction():
                    conn.commit()
        except sa.exc.OperationalError as exc:
            raise ConfigError(f"database {self.safe_url}: cannot migrate: {exc.orig}") from exc

    @property
    def safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._dbos_engine is not None:
            self._dbos_engine.dispose()
