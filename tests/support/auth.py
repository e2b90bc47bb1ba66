"""Users and API tokens for tests: a real user with a real argon2-hashed token in the test's database,
made through billops.governance.users exactly as `billops users add` / `billops users token` do."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from billops.governance import users
from billops.store.db import Database

PASSWORD = "a-long-test-password"  # 12+ characters: what console tests log in with


@contextlib.contextmanager
def database(target: Any) -> Iterator[Database]:
    """A Runtime (`.db`), a Database, or a database URL (a server running in another process: the
    connection is opened for the call and closed after it)."""
    if isinstance(target, str):
        db = Database(target)
        try:
            db.migrate()  # a no-op when the server already created the schema
            yield db
        finally:
            db.dispose()
        return
    yield target if isinstance(target, Database) else target.db


def make_user(target: Any, role: str, *, username: str | None = None, password: str | None = None) -> str:
    """A new active user with `role`; returns the username (`<role>-<random>` unless given)."""
    name = username or f"{role}-{uuid.uuid4().hex[:8]}"
    with database(target) as db, db.session() as s:
        users.create_user(s, name, role, password, by="test")
    return name


def token_for(target: Any, role: str, *, username: str | None = None, days: float = 1) -> str:
    """A plain API token (`bo_<id>_<secret>`) of a new user with `role`, or of the existing `username`."""
    with database(target) as db:
        if username is None:
            username = make_user(db, role)
        with db.session() as s:
            _, plain = users.issue_token(s, username, "test", days=days, max_days=3650, by="test")
    return plain


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auth_headers(target: Any, role: str) -> dict[str, str]:
    """`Authorization: Bearer …` headers for a new user with `role`."""
    return bearer(token_for(target, role))
