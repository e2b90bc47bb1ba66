"""Helpers for the live-console tests: a free port, the users' password, and webhooks to a live server."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa

from billops.runtime import Runtime
from billops.store.models import Approval, Decision
from support.helpers import sign, wait_for

PASSWORD = "correct-horse-battery"
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    url: str
    rt: Runtime

    def post(self, payload: dict[str, Any]) -> str:
        body, header = sign(payload)
        r = httpx.post(
            f"{self.url}/webhooks/stripe/default",
            content=body,
            headers={"stripe-signature": header},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        return str(r.json()["workflow_id"])

    def fail(self, events: list[dict[str, Any]]) -> str:
        return [self.post(e) for e in events][-1]

    def approval_id(self, wf: str, timeout: float = 30) -> int:
        def opened() -> int | None:
            with self.rt.db.reader() as s:
                return s.scalar(sa.select(Approval.id).where(Approval.workflow_id == wf))

        return int(wait_for(opened, timeout=timeout))

    def decision(self, wf: str) -> Decision | None:
        with self.rt.db.reader() as s:
            return s.get(Decision, wf)
