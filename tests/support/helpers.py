"""Helpers shared by the tests (import them from here, never from a conftest)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import stripe

SECRET = "whsec_test_primary"
OLD_SECRET = "whsec_test_rotated_out"


def sign(
    payload: dict[str, Any] | str | bytes, secret: str = SECRET, timestamp: int | None = None
) -> tuple[bytes, str]:
    body = (
        payload
        if isinstance(payload, bytes)
        else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
    )
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=timestamp)
    return body, header


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def workflow_status(rt: Any, workflow_id: str) -> str | None:
    """DBOS's status for a workflow, read on a fresh connection (no stale snapshot across polls)."""
    schema = "" if rt.db.is_sqlite else "dbos."
    with rt.db.engine.connect() as c:
        return c.execute(
            sa.text(f"SELECT status FROM {schema}workflow_status WHERE workflow_uuid = :w"),
            {"w": workflow_id},
        ).scalar()


def workflow_ids(rt: Any) -> list[str]:
    schema = "" if rt.db.is_sqlite else "dbos."
    with rt.db.engine.connect() as c:
        return [r[0] for r in c.execute(sa.text(f"SELECT workflow_uuid FROM {schema}workflow_status"))]
