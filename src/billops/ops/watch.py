"""The watcher: a DBOS scheduled workflow (every `settings.workflow_watch_seconds`) that finds
workflows which ended in ERROR and tells the team once, as the event `workflow.failed`, through the
same path as every other notification (`notify_team`: outbound webhooks and Slack, durable steps,
one `deliveries` row and one audit record per receiver).

Exactly once per failed workflow: the alert is the workflow `<failed id>:notify:workflow.failed:-`;
a failure whose alert workflow exists is not looked at again, and a second watcher run (another
worker, a replay) that starts the same id only joins the first. The schedule's runs have
deterministic ids too (`sched-billops-workflow-watch-<time>`), so one tick runs once across all
workers. A workflow that is resumed and fails again is not alerted a second time.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from dbos import DBOS

from billops.config import Settings
from billops.observability import log
from billops.ops.workflows import ALERT_SUFFIX, FAILED, _error_text, _iso, _tables, related_decision
from billops.recovery.workflow import notify_team_async
from billops.runtime import get_runtime

SCHEDULE = "billops-workflow-watch"
EVENT = "workflow.failed"
BATCH = 100
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
PHONE = re.compile(r"\+\d[\d ()-]{6,}\d")  # E.164-looking (a leading +)


def cron_for(seconds: int) -> str:
    """A 6-field cron (seconds first) for an interval validated by Settings.workflow_watch_seconds."""
    if seconds < 60:
        return f"*/{seconds} * * * * *"
    if seconds == 60:
        return "0 * * * * *"
    minutes = seconds // 60
    return "0 0 * * * *" if minutes == 60 else f"0 */{minutes} * * * *"


def schedule(settings: Settings) -> None:
    """Create or replace the watcher's schedule (called once DBOS is launched; an idempotent upsert, so
    workers starting together agree); remove it when the watcher is off. A failure here is logged and
    does not stop the worker: payments matter more than the alert."""
    try:
        if settings.workflow_watch_seconds == 0:
            DBOS.delete_schedule(SCHEDULE)
            return
        DBOS.apply_schedules(
            [
                {
                    "schedule_name": SCHEDULE,
                    "workflow_fn": watch_failed_workflows,
                    "schedule": cron_for(settings.workflow_watch_seconds),
                }
            ]
        )
    except Exception as exc:  # DBOS raises its own types
        log.error("workflow_watch_not_scheduled", error=str(exc))


@DBOS.step(name="find_unalerted_failures")
def find_unalerted_failures() -> list[dict[str, Any]]:
    """Failed workflows (recent, oldest first) that have no alert workflow yet, as `workflow.failed`
    data. A step, so a replay of the watcher alerts on the same list."""
    rt = get_runtime()
    ws, _ = _tables(rt)
    alert = ws.alias("alert")
    since = (time.time() - rt.settings.workflow_alert_lookback_hours * 3600) * 1000
    q = (
        sa.select(ws.c.workflow_uuid)
        .select_from(ws.outerjoin(alert, alert.c.workflow_uuid == ws.c.workflow_uuid.concat(ALERT_SUFFIX)))
        .where(
            ws.c.status.in_(FAILED),
            ws.c.updated_at >= since,
            alert.c.workflow_uuid.is_(None),
            ~ws.c.workflow_uuid.endswith(ALERT_SUFFIX),  # an alert that failed is not alerted on
        )
        .order_by(ws.c.updated_at)
        .limit(BATCH)
    )
    with rt.db.engine.connect() as c:
        ids = [r[0] for r in c.execute(q)]
    if not ids:
        return []
    base = rt.settings.public_url
    out = []
    for st in rt.dbos_client().list_workflows(workflow_ids=ids, load_input=False, load_output=True):
        decision = related_decision(rt, st.workflow_id)
        error = _error_text(st.error) or "(no error recorded)"
        out.append(
            {
                "workflow_id": st.workflow_id,
                "function": st.name or "",
                "status": st.status,
                "error": scrub(error)[:500],
                "created_at": _iso(st.created_at),
                "failed_at": _iso(st.updated_at),
                "decision_workflow_id": decision["workflow_id"] if decision else None,
                "platform": decision["platform"] if decision else None,
                "console_url": f"{base.rstrip('/')}/console/workflows/{st.workflow_id}" if base else None,
            }
        )
    return sorted(out, key=lambda d: d["failed_at"] or "")


def scrub(text: str) -> str:
    """Errors are free text: mask what looks like an email address or a phone number."""
    return PHONE.sub("<phone>", EMAIL.sub("<email>", text))


def _someone_listens() -> bool:
    settings = get_runtime().settings
    return settings.slack_webhook_url is not None or any(
        EVENT in e.events for e in settings.outbound_webhooks
    )


@DBOS.workflow(name="watch_failed_workflows")
def watch_failed_workflows(scheduled_at: datetime, context: Any) -> None:
    if not _someone_listens():  # nothing would be sent: do not even look
        return
    for data in find_unalerted_failures():
        notify_team_async(data["workflow_id"], EVENT, None, data)
