"""Storage: the SQLAlchemy engine and session, the tables, and Alembic migrations."""

from billops.store.db import Database

__all__ = ["Database"]
