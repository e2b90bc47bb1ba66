"""Alembic environment: runs on the connection BillOps hands it (see Database.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from billops.store.models import Base

config = context.config
target_metadata = Base.metadata
# Only our tables: DBOS keeps its own tables in the same database and migrates them itself.
OURS = set(Base.metadata.tables)


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    if type_ == "table":
        return name in OURS or name == "alembic_version"
    return True


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = engine_from_config(
            config.get_section(config.config_ini_section) or {}, poolclass=pool.NullPool
        )
        with engine.connect() as conn:
            _migrate(conn)
    else:
        _migrate(connection)


def _migrate(conn) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        include_object=include_object,
        render_as_batch=conn.dialect.name == "sqlite",
        version_table="billops_alembic_version",
    )
    with context.begin_transaction():
        context.run_migrations()


run()
