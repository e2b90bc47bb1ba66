"""`billops workflows list|show|resume` and /api/workflows on workflows that really failed (a platform
stand-in answering 500 until the step's retries ran out), really hang, or really wait; the metric."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from typer.testing import CliRunner

from billops.cli import app
from billops.ops.workflows import stuck_ids
from billops.store.models import AuditRecord
from support.auth import bearer, token_for

from .conftest import CALLS, Ops, hanging, wait_status, waiting

LONG_ID = "ops-test:" + "evt_" + "a1b2c3d4" * 8 + ":followup"  # 83 characters: never cut


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["workflows", *args])
    return res.exit_code, res.output


def test_failed_workflow_listed_shown_and_resumed_from_the_failed_step(ops: Ops) -> None:
    wid = ops.fail(LONG_ID)
    assert CALLS == {"prepare": 1, "charge": 3}  # three attempts, then ERROR

    code, out = cli("list", "--status", "error", "--json")
    assert code == 0, out
    items = json.loads(out)
    assert [w["workflow_id"] for w in items] == [wid]
    assert items[0]["status"] == "ERROR" and items[0]["name"] == "ops_test_flaky"
    assert "platform stand-in answered 500" in items[0]["error"]

    code, out = cli("list", "--status", "error")
    assert code == 0 and wid in out  # the table shows the whole id
    code, out = cli("list", "--status", "success", "--json")
    assert code == 0 and json.loads(out) == []

    code, out = cli("show", wid, "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert [s["function"] for s in shown["steps"]] == ["ops_test_prepare", "ops_test_charge"]
    assert shown["steps"][0]["error"] is None and '"prepared": true' in shown["steps"][0]["output"]
    assert "answered 500 for in_ops_1" in shown["steps"][1]["error"]
    assert "answered 500 for in_ops_1" in shown["error"]
    assert shown["resume"] == {"possible": True, "how": "rewind", "from_step": 2}
    code, out = cli("show", wid)
    assert code == 0 and "ops_test_charge" in out and "resume: possible (rewind to step 2)" in out

    # The metric sees it (database-wide, cached a few seconds).
    metrics = ops.api.get("/metrics").text
    assert 'billops_workflows{status="error"} 1.0' in metrics
    assert 'billops_workflows{status="stuck"} 0.0' in metrics

    # The platform is back: resume re-runs the failed step only.
    ops.platform.status = 200
    code, out = cli("resume", wid, "--yes", "--by", "otto")
    assert code == 0, out
    assert f"workflow {wid} (ERROR) sent back to the workers from step 2 by otto" in " ".join(out.split())
    wait_status(wid, "SUCCESS")
    assert CALLS == {"prepare": 1, "charge": 4}
    with ops.rt.db.reader() as s:
        rec = s.scalars(sa.select(AuditRecord).where(AuditRecord.action == "workflow.resumed")).one()
    assert (rec.workflow_id, rec.actor, rec.actor_type) == (wid, "otto", "human")
    assert rec.outcome == {"from_status": "ERROR", "how": "rewind", "from_step": 2}

    # Nothing to resume any more: a clear error and exit code 2.
    code, out = cli("resume", wid, "--yes")
    assert code == 2
    assert "is SUCCESS: it finished successfully; there is nothing to resume" in " ".join(out.split())


def test_unknown_ids_and_bad_filters_are_clear_errors(ops: Ops) -> None:
    for args in (("show", "stripe:evt_nope"), ("resume", "stripe:evt_nope", "--yes")):
        code, out = cli(*args)
        assert code == 2 and "no workflow 'stripe:evt_nope'" in out, out
    code, out = cli("list", "--status", "broken")
    assert code == 2 and "unknown status 'broken'" in out
    code, out = cli("list", "--limit", "0")
    assert code == 2 and "limit 0" in out


def test_api_lists_shows_and_resumes_with_roles(ops: Ops) -> None:
    wid = ops.fail("stripe:evt_api_fail:followup", "in_api")
    viewer, operator = bearer(token_for(ops.rt, "viewer")), bearer(token_for(ops.rt, "operator"))

    r = ops.api.get("/api/workflows", params={"status": "error"}, headers=viewer)
    assert r.status_code == 200 and [w["workflow_id"] for w in r.json()] == [wid]
    assert ops.api.get("/api/workflows", params={"status": "nope"}, headers=viewer).status_code == 422
    r = ops.api.get(f"/api/workflows/{wid}", headers=viewer)
    assert r.status_code == 200 and r.json()["resume"]["from_step"] == 2
    assert ops.api.get("/api/workflows/stripe:evt_nope", headers=viewer).status_code == 404

    assert ops.api.post(f"/api/workflows/{wid}/resume").status_code == 401
    assert ops.api.post(f"/api/workflows/{wid}/resume", headers=viewer).status_code == 403
    r = ops.api.post(f"/api/workflows/{wid}/resume", headers=operator, json={"from_step": 9})
    assert r.status_code == 400 and "steps are 1 to 2" in r.text
    ops.platform.status = 200
    r = ops.api.post(f"/api/workflows/{wid}/resume", headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["how"] == "rewind" and r.json()["by"].startswith("operator-")
    wait_status(wid, "SUCCESS")
    r = ops.api.post(f"/api/workflows/{wid}/resume", headers=operator)
    assert r.status_code == 409 and "nothing to resume" in r.text


def test_stuck_is_no_progress_not_a_long_wait(ops_factory: object) -> None:
    ops = ops_factory(workflow_stuck_seconds=1)  # type: ignore[operator]
    from dbos import DBOS, SetWorkflowID

    with SetWorkflowID("ops-test:hanging"):
        DBOS.start_workflow(hanging)
    with SetWorkflowID("ops-test:waiting"):
        DBOS.start_workflow(waiting)
    deadline = time.monotonic() + 20
    while "ops-test:hanging" not in stuck_ids(ops.rt) and time.monotonic() < deadline:
        time.sleep(0.2)

    code, out = cli("list", "--status", "stuck", "--json")
    assert code == 0, out
    stuck = json.loads(out)
    assert [w["workflow_id"] for w in stuck] == ["ops-test:hanging"]
    assert stuck[0]["status"] == "PENDING" and stuck[0]["stuck"] is True
    # The waiting one is pending too, with a timer an hour away: not stuck.
    code, out = cli("list", "--status", "pending", "--json")
    pending = {w["workflow_id"]: w for w in json.loads(out)}
    assert set(pending) == {"ops-test:hanging", "ops-test:waiting"}
    assert pending["ops-test:waiting"]["stuck"] is False
    code, out = cli("show", "ops-test:waiting", "--json")
    shown = json.loads(out)
    assert [s["function"] for s in shown["steps"]] == ["DBOS.sleep"]  # the recv's durable timeout
    assert shown["resume"]["possible"] is False
    code, out = cli("resume", "ops-test:waiting", "--yes")
    assert code == 2 and "not stuck (running or waiting)" in out
    counts = ops.api.get("/metrics").text
    assert 'billops_workflows{status="stuck"} 1.0' in counts
    assert 'billops_workflows{status="pending"} 2.0' in counts


def test_a_replay_that_diverged_is_rewound_to_where_it_diverged(ops: Ops) -> None:
    from dbos import DBOS, SetWorkflowID

    from .conftest import SHAPE, changing

    SHAPE.update(wait_first=True, fail_last=True)
    with SetWorkflowID("ops-test:changing"):
        DBOS.start_workflow(changing)
    wait_status("ops-test:changing", "ERROR")  # recorded: look, DBOS.sleep, finish (raised)
    # The code changes shape (no wait any more), and the step that failed now works.
    SHAPE.update(wait_first=False, fail_last=False)
    code, out = cli("resume", "ops-test:changing", "--yes")
    assert code == 0 and "from step 3" in out
    wait_status("ops-test:changing", "ERROR")  # the replay meets DBOS.sleep where it now calls look
    code, out = cli("show", "ops-test:changing", "--json")
    shown = json.loads(out)
    assert "DBOS.sleep was recorded when ops_test_look was expected" in shown["error"]
    assert shown["resume"]["from_step"] == 2
    code, out = cli("resume", "ops-test:changing", "--yes")
    assert code == 0 and "from step 2" in out
    wait_status("ops-test:changing", "SUCCESS")
    code, out = cli("show", "ops-test:changing", "--json")
    assert [s["function"] for s in json.loads(out)["steps"]] == ["ops_test_look"] * 2 + ["ops_test_finish"]
