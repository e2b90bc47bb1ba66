"""The durable workflows as an operator sees them: which failed, which are stuck, what each did, and a
way back (resume). Reads go to DBOS's own tables (`workflow_status`, `operation_outputs`; schema `dbos`
on PostgreSQL); changes go through a DBOSClient, so no command here needs DBOS launched.

Stuck: PENDING, ENQUEUED or DELAYED, and nothing has happened for longer than
`settings.workflow_stuck_seconds` — no step recorded, no status change — counting a durable timer's
wake time (a recovery's retry time, an approval's timeout, a DBOS.sleep/recv deadline) or a delayed
queue entry's time as activity. A recovery waiting three days for its retry time is therefore not
stuck; one whose wake time passed an hour ago and that has not moved since is.

Resume: a workflow in ERROR is rewound (DBOS `rewind_workflow`) to the step that failed — the
steps recorded before it are kept and not run again — or to `from_step`; CANCELLED, MAX_RECOVERY_…
and stuck workflows are resumed where they stand (DBOS `resume_workflow`). A SUCCESS or a workflow
that is running or waiting normally is refused. Every resume is audited (`workflow.resumed`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from billops.errors import Conflict, InputError, NotFound
from billops.governance import audit
from billops.runtime import Runtime
from billops.store.models import Decision

ACTIVE = ("PENDING", "ENQUEUED", "DELAYED")
FAILED = ("ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
FILTERS = ("error", "pending", "enqueued", "delayed", "cancelled", "success", "stuck")
ALERT_SUFFIX = ":notify:workflow.failed:-"  # the alert's workflow id: <failed id> + this (ops/watch.py)
SHORT = 200


def _tables(rt: Runtime) -> tuple[sa.TableClause, sa.TableClause]:
    schema = None if rt.db.is_sqlite else "dbos"
    ws = sa.table(
        "workflow_status",
        *(sa.column(c) for c in ("workflow_uuid", "status", "name", "created_at", "updated_at")),
        sa.column("delay_until_epoch_ms"),
        schema=schema,
    )
    oo = sa.table(
        "operation_outputs",
        *(sa.column(c) for c in ("workflow_uuid", "function_id", "function_name", "output")),
        *(sa.column(c) for c in ("serialization", "started_at_epoch_ms", "completed_at_epoch_ms")),
        schema=schema,
    )
    return ws, oo


_known: set[str] = set()


def has_workflows(rt: Runtime) -> bool:
    """Whether DBOS has created its tables in this database (a server ran once)."""
    if rt.db.url in _known:
        return True
    found = sa.inspect(rt.db.engine).has_table("workflow_status", schema=None if rt.db.is_sqlite else "dbos")
    if found:
        _known.add(rt.db.url)
    return found


def _iso(ms: int | float | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _error_text(err: Any) -> str | None:
    """`Type: message`; for a step that ran out of retries, the last attempt's error too."""
    if err is None:
        return None
    if not isinstance(err, BaseException):
        return str(err)
    text = f"{type(err).__name__}: {err}"
    attempts = getattr(err, "errors", None)
    if isinstance(attempts, list) and attempts:
        text += f" (last error: {_error_text(attempts[-1])})"
    return text


def short(value: Any, limit: int = SHORT) -> str:
    """A value for a table cell: JSON when it is JSON, else repr; cut with an ellipsis."""
    if value is None:
        return ""
    if isinstance(value, BaseException):
        text = _error_text(value) or ""
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------ stuck


def stuck_ids(rt: Runtime, *, now_ms: float | None = None) -> dict[str, dict[str, Any]]:
    """The stuck workflows: id → {last_activity, waiting_until}. One query (the newest step of each
    candidate joined in), so a metrics scrape can afford it."""
    if not has_workflows(rt):
        return {}
    ws, oo = _tables(rt)
    now = now_ms if now_ms is not None else time.time() * 1000
    threshold = rt.settings.workflow_stuck_seconds * 1000
    steps = oo.alias("steps")
    newest = (
        sa.select(sa.func.max(steps.c.function_id))
        .where(steps.c.workflow_uuid == ws.c.workflow_uuid)
        .correlate(ws)
        .scalar_subquery()
    )
    q = (
        sa.select(
            ws.c.workflow_uuid,
            ws.c.created_at,
            ws.c.updated_at,
            ws.c.delay_until_epoch_ms,
            oo.c.function_name,
            oo.c.output,
            oo.c.serialization,
            oo.c.started_at_epoch_ms,
            oo.c.completed_at_epoch_ms,
        )
        .select_from(
            ws.outerjoin(oo, sa.and_(oo.c.workflow_uuid == ws.c.workflow_uuid, oo.c.function_id == newest))
        )
        # The status row changes on every transition, so a row updated recently cannot be stuck.
        .where(ws.c.status.in_(ACTIVE), ws.c.updated_at < now - threshold)
    )
    out: dict[str, dict[str, Any]] = {}
    with rt.db.engine.connect() as c:
        for row in c.execute(q):
            waiting = row.delay_until_epoch_ms
            if row.function_name == "DBOS.sleep" and row.output is not None:
                # A durable timer (DBOS.sleep, or the timeout of DBOS.recv): its output is the wake time.
                with contextlib.suppress(TypeError, ValueError):
                    waiting = max(waiting or 0, float(json.loads(row.output)) * 1000)
            seen = [row.created_at, row.updated_at, row.started_at_epoch_ms, row.completed_at_epoch_ms]
            last = max(float(x) for x in seen if x is not None)
            if now - max(last, waiting or 0) > threshold:
                out[row.workflow_uuid] = {"last_activity": _iso(last), "waiting_until": _iso(waiting)}
    return out


# ------------------------------------------------------------------ list, counts


def _summary(st: Any, stuck: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "workflow_id": st.workflow_id,
        "status": st.status,
        "stuck": stuck is not None,
        "name": st.name,
        "created_at": _iso(st.created_at),
        "updated_at": _iso(st.updated_at),
        "queue": st.queue_name,
        "executor": st.executor_id,
        "error": short(st.error, 300) if st.error is not None else None,
        "last_activity": (stuck or {}).get("last_activity"),
        "waiting_until": (stuck or {}).get("waiting_until"),
    }


def list_workflows(
    rt: Runtime, *, status: str | None = None, name: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Workflows, newest first. `status`: one of FILTERS (error also covers
    MAX_RECOVERY_ATTEMPTS_EXCEEDED), or None for all."""
    if status is not None and status not in FILTERS:
        raise InputError(f"unknown status {status!r}: use one of {', '.join(FILTERS)}")
    if not 1 <= limit <= 1000:
        raise InputError(f"limit {limit}: use 1 to 1000")
    if not has_workflows(rt):
        return []
    client = rt.dbos_client()
    if status == "stuck":
        stuck = stuck_ids(rt)
        if not stuck:
            return []
        rows = client.list_workflows(
            workflow_ids=list(stuck), name=name, sort_desc=True, limit=limit, load_input=False
        )
        return [_summary(st, stuck.get(st.workflow_id)) for st in rows]
    wanted: list[str] | None = None
    if status == "error":
        wanted = list(FAILED)
    elif status is not None:
        wanted = [status.upper()]
    rows = client.list_workflows(status=wanted, name=name, sort_desc=True, limit=limit, load_input=False)
    stuck = stuck_ids(rt) if any(st.status in ACTIVE for st in rows) else {}
    return [_summary(st, stuck.get(st.workflow_id)) for st in rows]


def status_counts(rt: Runtime) -> dict[str, int]:
    """How many workflows per status (lower case), plus `stuck` (a subset of the active ones)."""
    ws, _ = _tables(rt)
    counts = {s.lower(): 0 for s in (*ACTIVE, "SUCCESS", *FAILED, "CANCELLED")}
    if not has_workflows(rt):
        return {**counts, "stuck": 0}
    with rt.db.engine.connect() as c:
        for st, n in c.execute(sa.select(ws.c.status, sa.func.count()).group_by(ws.c.status)):
            counts[str(st).lower()] = int(n)
    counts["stuck"] = len(stuck_ids(rt))
    return counts


_cache_lock = threading.Lock()
_cache: dict[str, tuple[float, dict[str, int]]] = {}
CACHE_SECONDS = 15.0


def cached_counts() -> dict[str, int] | None:
    """`status_counts` of this process's runtime, at most CACHE_SECONDS old (for /metrics); None when
    no runtime runs in this process or the database does not answer."""
    from billops.runtime import get_runtime

    try:
        rt = get_runtime()
    except RuntimeError:
        return None
    key = rt.db.url
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
        try:
            counts = status_counts(rt)
        except sa.exc.SQLAlchemyError:
            return hit[1] if hit else None
        _cache.clear()
        _cache[key] = (time.monotonic(), counts)
        return counts


def _register_metrics() -> None:
    from billops.observability import WORKFLOW_COUNTS

    WORKFLOW_COUNTS.source = cached_counts


_register_metrics()


# ------------------------------------------------------------------ show


def _status(rt: Runtime, workflow_id: str) -> Any:
    rows = (
        rt.dbos_client().list_workflows(workflow_ids=[workflow_id], load_input=False)
        if has_workflows(rt)
        else []
    )
    if not rows:
        raise NotFound(f"no workflow {workflow_id!r} (list them with `billops workflows list`)")
    return rows[0]


def related_decision(rt: Runtime, workflow_id: str) -> dict[str, Any] | None:
    """The decision a workflow belongs to: its own id (an event's workflow) or the id it extends
    (`<decision>:followup`, `<decision>:<step>`, `<decision>:notify:…`)."""
    parts = workflow_id.split(":")
    candidates = [":".join(parts[:i]) for i in range(len(parts), 1, -1)]
    with rt.db.reader() as s:
        rows = list(s.scalars(sa.select(Decision).where(Decision.workflow_id.in_(candidates))))
    if not rows:
        return None
    d = max(rows, key=lambda r: len(r.workflow_id))
    return {
        "workflow_id": d.workflow_id,
        "platform": d.platform,
        "invoice_id": d.invoice_id,
        "route": d.route,
        "mode": d.mode,
        "status": d.status,
        "amount": d.amount,
        "currency": d.currency,
    }


def show_workflow(rt: Runtime, workflow_id: str) -> dict[str, Any]:
    """One workflow: status, the error in full, every recorded step (outputs and errors shortened),
    the related decision and whether (and how) it can be resumed."""
    st = _status(rt, workflow_id)
    stuck = stuck_ids(rt).get(workflow_id) if st.status in ACTIVE else None
    steps = [
        {
            "step": s["function_id"],
            "function": s["function_name"],
            "started_at": _iso(s["started_at_epoch_ms"]),
            "completed_at": _iso(s["completed_at_epoch_ms"]),
            "output": short(s["output"]) if s["error"] is None else None,
            "error": short(s["error"], 500) if s["error"] is not None else None,
            "child_workflow_id": s["child_workflow_id"],
        }
        for s in rt.dbos_client().list_workflow_steps(workflow_id)
    ]
    view = _summary(st, stuck)
    view.update(
        error=_error_text(st.error),
        output=short(st.output, 500) if st.output is not None else None,
        app_version=st.app_version,
        parent_workflow_id=st.parent_workflow_id,
        steps=steps,
        decision=related_decision(rt, workflow_id),
    )
    view["resume"] = _resume_plan(st, steps, stuck is not None)
    return view


def _diverged_at(err: Any) -> int | None:
    """The step number of a replay that diverged from its record (DBOSUnexpectedStepError: "function
    DBOS.recv was recorded when guard was expected"): rewinding there drops the stale record."""
    inputs = getattr(err, "inputs", None)
    if type(err).__name__ == "DBOSUnexpectedStepError" and isinstance(inputs, tuple) and len(inputs) == 4:
        return int(inputs[1]) if isinstance(inputs[1], int) and inputs[1] >= 1 else None
    return None


def _resume_plan(st: Any, steps: list[dict[str, Any]], stuck: bool) -> dict[str, Any]:
    """What `resume` would do: {"possible", "how", "from_step", "why"}."""
    if st.status == "SUCCESS":
        return {"possible": False, "why": "it finished successfully"}
    if st.status == "ERROR":
        last = steps[-1] if steps else None
        # The step that raised is re-run; a failure after the last step re-runs from the next one.
        start = 1 if last is None else (last["step"] if last["error"] is not None else last["step"] + 1)
        diverged = _diverged_at(st.error)
        if diverged is not None:  # the code asked for another step than the one recorded there
            start = diverged
        return {"possible": True, "how": "rewind", "from_step": start}
    if st.status in ACTIVE and not stuck:
        return {"possible": False, "why": f"it is {st.status.lower()} and not stuck (running or waiting)"}
    return {"possible": True, "how": "resume", "from_step": None}


# ------------------------------------------------------------------ resume


def resume_workflow(
    rt: Runtime, workflow_id: str, *, actor: str, from_step: int | None = None
) -> dict[str, Any]:
    """Send a failed, cancelled or stuck workflow back to the workers (audited). Raises NotFound for an
    unknown id and Conflict when there is nothing to resume."""
    client = rt.dbos_client()
    st = _status(rt, workflow_id)
    steps = [{"step": s["function_id"], "error": s["error"]} for s in client.list_workflow_steps(workflow_id)]
    stuck = st.status in ACTIVE and workflow_id in stuck_ids(rt)
    plan = _resume_plan(st, steps, stuck)
    if not plan["possible"]:
        raise Conflict(f"workflow {workflow_id!r} is {st.status}: {plan['why']}; there is nothing to resume")
    if from_step is not None:
        if plan["how"] != "rewind":
            raise InputError(
                f"--from-step applies only to a workflow in ERROR; {workflow_id!r} is {st.status}"
            )
        top = (steps[-1]["step"] + 1) if steps else 1
        if not 1 <= from_step <= top:
            raise InputError(f"from step {from_step}: this workflow's steps are 1 to {top - 1}")
        plan["from_step"] = from_step
    if plan["how"] == "rewind":
        client.rewind_workflow(
            workflow_id,
            start_step=plan["from_step"],
            queue_name=st.queue_name,
            application_version=st.app_version,  # the version the workers that own it run
        )
    else:
        client.resume_workflow(workflow_id)
    outcome = {"from_status": st.status, "how": plan["how"], "from_step": plan["from_step"]}
    with rt.db.session() as s:
        audit.record(
            s,
            action="workflow.resumed",
            actor_type="human",
            actor=actor,
            workflow_id=workflow_id,
            subject=f"workflow:{st.name}",
            inputs={"workflow_id": workflow_id, "from_step": from_step},
            outcome=outcome,
        )
    return {"workflow_id": workflow_id, "name": st.name, **outcome, "by": actor}
