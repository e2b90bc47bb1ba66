"""The alert: a workflow that ends in ERROR is announced once as `workflow.failed` to a real loopback
receiver (Standard Webhooks signature verified, body valid against the committed JSON schema), by the
scheduled watcher, even when the watcher runs again and again."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import sqlalchemy as sa
from dbos import DBOS
from pydantic import SecretStr
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from billops.actions.settings import OutboundWebhook
from billops.actions.webhooks import new_secret
from billops.ops.watch import SCHEDULE, cron_for, watch_failed_workflows
from billops.store.models import AuditRecord, Delivery
from support.channels import Reply, ScriptedServer
from support.loopback import RecordedRequest

from .conftest import Ops, wait_status

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "webhook-events" / "workflow.failed.schema.json"
SECRET = new_secret()


class Receiver:
    def __init__(self) -> None:
        self.webhook = Webhook(SECRET)
        self.verified: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.rejected: list[str] = []

    def __call__(self, req: RecordedRequest) -> Reply:
        try:
            payload = self.webhook.verify(req.body, req.headers)
        except WebhookVerificationError as exc:
            self.rejected.append(str(exc))
            return 400, "bad signature", "text/plain"
        self.verified.append(payload)
        self.ids.append(req.headers["webhook-id"])
        return 204, "", "text/plain"


def test_a_failed_workflow_is_alerted_once(ops_factory: Any) -> None:
    receiver = Receiver()
    hooks = ScriptedServer(receiver).start()
    slack = ScriptedServer(lambda req: (200, "ok", "text/plain")).start()
    try:
        endpoint = OutboundWebhook(
            name="oncall", url=hooks.url + "/billops", secret=SecretStr(SECRET), events=["workflow.failed"]
        )
        ops: Ops = ops_factory(
            outbound_webhooks=[endpoint],
            slack_webhook_url=slack.url + "/services/T0/B0/x",
            workflow_watch_seconds=1,
            public_url="https://billops.example",
        )
        assert DBOS.get_schedule(SCHEDULE) is not None
        wid = ops.fail("stripe:evt_watch_1:followup", "in_watch")
        alert = f"{wid}:notify:workflow.failed:-"
        wait_status(alert, "SUCCESS")  # started by the schedule, within a tick or two

        # The watcher again (by hand, twice) and a few more scheduled ticks: no second alert.
        watch_failed_workflows(datetime.now(UTC), None)
        watch_failed_workflows(datetime.now(UTC), None)
        time.sleep(2.5)

        assert receiver.rejected == []
        assert len(receiver.verified) == 1, receiver.verified
        body = receiver.verified[0]
        jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(body)
        assert body["type"] == "workflow.failed"
        data = body["data"]
        assert (
            data["workflow_id"] == wid and data["function"] == "ops_test_flaky" and data["status"] == "ERROR"
        )
        assert "platform stand-in answered 500 for in_watch" in data["error"]
        assert data["console_url"] == f"https://billops.example/console/workflows/{wid}"
        with ops.rt.db.reader() as s:
            rows = list(s.scalars(sa.select(Delivery).where(Delivery.workflow_id == wid)))
            sent = list(
                s.scalars(
                    sa.select(AuditRecord).where(
                        AuditRecord.workflow_id == wid, AuditRecord.action == "notification.sent"
                    )
                )
            )
        assert sorted((r.channel, r.status) for r in rows) == [("slack", "sent"), ("webhook", "sent")]
        assert len(sent) == 2 and {r.outcome["event"] for r in sent} == {"workflow.failed"}
        assert len(slack.requests) == 1
        text = slack.requests[0].json["text"]
        assert f"Workflow {wid} (ops_test_flaky) failed" in text
        assert f"billops workflows resume {wid}" in text
    finally:
        hooks.stop()
        slack.stop()


def test_no_listener_no_alert_workflow(ops: Ops) -> None:
    wid = ops.fail("stripe:evt_watch_2:followup")
    watch_failed_workflows(datetime.now(UTC), None)
    assert DBOS.list_workflows(workflow_ids=[f"{wid}:notify:workflow.failed:-"]) == []
    assert DBOS.get_schedule(SCHEDULE) is None  # workflow_watch_seconds=0: no schedule


def test_watch_interval_is_a_cron() -> None:
    assert [cron_for(s) for s in (1, 15, 60, 300, 3600)] == [
        "*/1 * * * * *",
        "*/15 * * * * *",
        "0 * * * * *",
        "0 */5 * * * *",
        "0 0 * * * *",
    ]


def test_watch_interval_setting_is_validated(tmp_path: Path) -> None:
    import pytest
    from pydantic import ValidationError

    from billops.config import Settings

    with pytest.raises(ValidationError, match="a divisor of 60"):
        Settings(_env_file=None, data_dir=tmp_path, workflow_watch_seconds=7)  # type: ignore[call-arg]
    ok = Settings(_env_file=None, data_dir=tmp_path, workflow_watch_seconds=300)  # type: ignore[call-arg]
    assert ok.workflow_watch_seconds == 300


def test_alert_errors_carry_no_address_or_phone() -> None:
    from billops.ops.watch import scrub

    text = "SMTP 550 for jane.doe+x@customer.example; SMS to +1 (415) 555-0100 failed; in_123 on 2025-03-01"
    assert scrub(text) == "SMTP 550 for <email>; SMS to <phone> failed; in_123 on 2025-03-01"
