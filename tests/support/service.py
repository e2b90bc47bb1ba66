"""A running BillOps test service: the app's TestClient plus the runtime, with waits on decisions."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from billops.store.models import Approval, AuditRecord, Decision
from support.helpers import sign, wait_for


class Service:
    def __init__(self, client: TestClient, rt: Any) -> None:
        self.client, self.rt = client, rt

    def post(self, payload: dict[str, Any]) -> dict[str, Any]:
        body, header = sign(payload)
        r = self.client.post("/webhooks/stripe/default", content=body, headers={"stripe-signature": header})
        assert r.status_code == 200, r.text
        return r.json()

    def fail(self, events: list[dict[str, Any]]) -> str:
        """Post a failure's events in order; returns the last one's workflow id (the invoice event)."""
        return str([self.post(e) for e in events][-1]["workflow_id"])

    def decision(self, wf: str, status: str | None = None, timeout: float = 30) -> Decision:
        def ready() -> Decision | None:
            with self.rt.db.reader() as s:
                d = s.get(Decision, wf)
                return d if d is not None and (status is None or d.status == status) else None

        return wait_for(ready, timeout=timeout)  # type: ignore[no-any-return]

    def awaiting(self, wf: str) -> Decision:
        """The decision waits for a human and its approval item is open (the waiting workflow opens it)."""
        d = self.decision(wf, status="awaiting_approval")

        def opened() -> bool:
            with self.rt.db.reader() as s:
                return s.scalar(sa.select(Approval.id).where(Approval.workflow_id == wf)) is not None

        wait_for(opened)
        return d

    def audit_actions(self, wf: str) -> list[str]:
        with self.rt.db.reader() as s:
            return list(
                s.scalars(
                    sa.select(AuditRecord.action)
                    .where(AuditRecord.workflow_id == wf)
                    .order_by(AuditRecord.seq)
                )
            )


MESSAGE_RECORDS = ("action.send_email", "action.send_sms")


def own(actions: list[str]) -> list[str]:
    """A recovery's audit actions without its messages: each message is delivered by its own workflow
    (it may wait for quiet hours), so it can be recorded after the recovery finished."""
    return [a for a in actions if a not in MESSAGE_RECORDS]
