"""The console's Workflows page through the real app (TestClient): failed and stuck workflows listed,
the resume button only for operators and admins, CSRF on the form, the workflow's own page."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from fastapi.testclient import TestClient

from billops.governance.users import create_user

from .conftest import CALLS, Ops, wait_status

PASSWORD = "correct-horse-battery"


def logged_in(ops: Ops, username: str) -> tuple[TestClient, str]:
    client = TestClient(ops.api.app, follow_redirects=False)
    page = client.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    r = client.post(
        "/console/login",
        data={"username": username, "password": PASSWORD, "csrf": token.group(1), "next": "/console"},
    )
    assert r.status_code == 303, r.text
    home = client.get("/console/workflows")
    csrf = re.search(r'name="csrf" value="([^"]+)"', home.text)
    assert csrf
    return client, csrf.group(1)


def test_workflows_page_lists_failures_and_resumes_with_csrf_and_role(ops: Ops) -> None:
    with ops.rt.db.session() as s:
        for name, role in (("otto", "operator"), ("vera", "viewer")):
            create_user(s, name, role, PASSWORD, by="test")
    wid = ops.fail("stripe:evt_console_1:followup", "in_console")
    form = f"/console/workflows/{quote(wid, safe='')}/resume"

    assert ops.api.get("/console/workflows", follow_redirects=False).status_code == 303  # log in first

    vera, vera_csrf = logged_in(ops, "vera")
    page = vera.get("/console/workflows")
    assert page.status_code == 200
    assert wid in page.text and "platform stand-in answered 500" in page.text
    assert 'href="/console/workflows"' in page.text  # the nav link
    assert "Resume</button>" not in page.text and "needs the operator or admin role" in page.text
    r = vera.post(form, data={"csrf": vera_csrf})
    assert r.status_code == 403 and "this needs operator or higher" in r.text

    detail = vera.get(f"/console/workflows/{quote(wid, safe='')}")
    assert detail.status_code == 200
    assert "ops_test_prepare" in detail.text and "ops_test_charge" in detail.text
    assert "DBOSMaxStepRetriesExceeded" in detail.text
    assert vera.get("/console/workflows/stripe:evt_nope").status_code == 404

    otto, otto_csrf = logged_in(ops, "otto")
    assert "Resume</button>" in otto.get("/console/workflows").text
    r = otto.post(form, data={})
    assert r.status_code == 403 and "CSRF check failed" in r.text
    r = otto.post(form, data={"csrf": "forged"})
    assert r.status_code == 403
    assert CALLS["charge"] == 3  # nothing resumed yet

    ops.platform.status = 200
    r = otto.post(form, data={"csrf": otto_csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/console/workflows?done=")
    wait_status(wid, "SUCCESS")
    after = otto.get(r.headers["location"]).text
    assert "was sent back to the workers" in after and "No workflow in ERROR." in after
    # Resuming again: the page says why not, nothing happens.
    again = otto.post(form, data={"csrf": otto_csrf})
    assert again.status_code == 409 and "nothing to resume" in again.text
    assert CALLS == {"prepare": 1, "charge": 4}


def test_stuck_section(ops_factory: Any) -> None:
    from dbos import DBOS, SetWorkflowID

    from .conftest import hanging

    ops: Ops = ops_factory(workflow_stuck_seconds=1)
    with ops.rt.db.session() as s:
        create_user(s, "vera", "viewer", PASSWORD, by="test")
    with SetWorkflowID("ops-test:console-hanging"):
        DBOS.start_workflow(hanging)
    import time

    from billops.ops.workflows import stuck_ids

    deadline = time.monotonic() + 20
    while "ops-test:console-hanging" not in stuck_ids(ops.rt) and time.monotonic() < deadline:
        time.sleep(0.2)
    vera, _ = logged_in(ops, "vera")
    page = vera.get("/console/workflows").text
    stuck = page.split("<h2>Stuck", 1)[1]
    assert "ops-test:console-hanging" in stuck and "PENDING" in stuck
