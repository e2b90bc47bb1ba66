"""Scheduled audit checkpoints: a DBOS scheduled workflow that writes a checkpoint every
`settings.audit_checkpoint_minutes` to `settings.audit_checkpoint_to` (governance/audit_checkpoint.py).

One checkpoint per scheduled time: the schedule's runs have deterministic workflow ids
(`sched-billops-audit-checkpoint-<time>`), so one tick runs once across all workers, and the store
refuses a second checkpoint for the same `scheduled_for` (a re-run after a crash writes nothing new).
A log that does not verify is not signed: the run ends in ERROR with the problems, where
`billops workflows list --status error` and the failed-workflow alert see it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, cast

from dbos import DBOS

from billops.config import Settings

SCHEDULE = "billops-audit-checkpoint"
log = logging.getLogger(__name__)


class CheckpointFailed(RuntimeError):
    pass


def cron_for(minutes: int) -> str:
    """A 6-field cron (seconds first) for an interval validated by Settings.audit_checkpoint_minutes."""
    if minutes < 60:
        return f"0 */{minutes} * * * *"
    if minutes == 60:
        return "0 0 * * * *"
    return f"0 0 */{minutes // 60} * * *"


def schedule(settings: Settings) -> None:
    """Create or replace the checkpoint schedule (called once DBOS is launched); remove it when off."""
    if not settings.audit_checkpoint_minutes or not settings.audit_checkpoint_to:
        DBOS.delete_schedule(SCHEDULE)
        return
    DBOS.apply_schedules(
        [
            {
                "schedule_name": SCHEDULE,
                "workflow_fn": cast(Any, scheduled_checkpoint),  # its output (seq, hash) is kept by DBOS
                "schedule": cron_for(settings.audit_checkpoint_minutes),
            }
        ]
    )


@DBOS.step(name="audit_checkpoint", retries_allowed=True, max_attempts=3, interval_seconds=5)
def write_checkpoint(scheduled_for: str) -> dict[str, Any]:
    """Take the checkpoint for one scheduled time. Store errors are retried; a log that does not
    verify is not (it is returned as `refused`)."""
    from billops.governance import audit_checkpoint
    from billops.governance.audit_keys import keyring
    from billops.runtime import get_runtime

    rt = get_runtime()
    target = rt.settings.audit_checkpoint_to
    if not target:
        return {"skipped": "BILLOPS_AUDIT_CHECKPOINT_TO is not set"}
    store = audit_checkpoint.open_store(target, rt.settings)
    try:
        with rt.db.reader() as s:
            cp, written = audit_checkpoint.take(
                s,
                store,
                keyring(rt.settings),
                scheduled_for=datetime.fromisoformat(scheduled_for),
                legacy_until=rt.settings.audit_legacy_until,
            )
    except audit_checkpoint.CheckpointRefused as exc:
        log.error("audit checkpoint refused: %s", exc.message)
        return {"refused": exc.message}
    return {"seq": cp.seq, "hash": cp.hash, "written": written, "store": store.where}


@DBOS.workflow(name="billops.audit.scheduled_checkpoint")
def scheduled_checkpoint(scheduled_at: datetime, context: Any) -> dict[str, Any]:
    result = write_checkpoint(scheduled_at.isoformat())
    if "refused" in result:
        raise CheckpointFailed(result["refused"])
    return result
