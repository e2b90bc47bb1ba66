"""Workflows that fail, hang or wait for real, registered for the tests of billops.ops; a loopback
platform stand-in that answers 500 until told otherwise; a runtime with an API client."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from dbos import DBOS, SetWorkflowID
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.runtime import Runtime, get_runtime
from support.channels import Reply, ScriptedServer
from support.loopback import RecordedRequest

CALLS: Counter[str] = Counter()
HANG = threading.Event()


@DBOS.step(name="ops_test_prepare")
def prepare(invoice: str) -> dict[str, Any]:
    CALLS["prepare"] += 1
    return {"invoice": invoice, "prepared": True}


@DBOS.step(
    name="ops_test_charge", retries_allowed=True, max_attempts=3, interval_seconds=0.05, backoff_rate=1
)
def charge(url: str, invoice: str) -> dict[str, Any]:
    CALLS["charge"] += 1
    r = httpx.post(url, json={"invoice": invoice}, timeout=5)
    if r.status_code >= 500:
        raise RuntimeError(f"platform stand-in answered {r.status_code} for {invoice}")
    return {"paid": invoice}


@DBOS.workflow(name="ops_test_flaky")
def flaky(url: str, invoice: str) -> dict[str, Any]:
    """Step 1 prepares, step 2 calls the platform (3 attempts); 500s until retries run out → ERROR."""
    prepare(invoice)
    return charge(url, invoice)


@DBOS.step(name="ops_test_hang")
def hang() -> str:
    HANG.wait(60)
    return "released"


@DBOS.workflow(name="ops_test_hanging")
def hanging() -> str:
    """A step that never returns (until the test releases it): stuck."""
    return hang()


@DBOS.workflow(name="ops_test_waiting")
def waiting() -> Any:
    """A long durable wait (like a recovery's retry time an hour away): not stuck."""
    return DBOS.recv("never", timeout_seconds=3600)


class Platform:
    """The loopback stand-in: answers `status` to every POST."""

    def __init__(self) -> None:
        self.status = 500
        self.server = ScriptedServer(self._answer).start()

    def _answer(self, req: RecordedRequest) -> Reply:
        return self.status, '{"ok": %s}' % ("true" if self.status < 400 else "false"), "application/json"

    @property
    def url(self) -> str:
        return self.server.url + "/v1/charge"


@dataclass
class Ops:
    rt: Runtime
    api: TestClient
    platform: Platform

    def fail(self, workflow_id: str, invoice: str = "in_ops_1") -> str:
        """Start the flaky workflow and wait until it is in ERROR."""
        with SetWorkflowID(workflow_id):
            DBOS.start_workflow(flaky, self.platform.url, invoice)
        wait_status(workflow_id, "ERROR")
        return workflow_id


def wait_status(workflow_id: str, want: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        # Through the client: DBOS.list_workflows refuses to run beside an event loop (Playwright's).
        client = get_runtime().dbos_client()
        found = client.list_workflows(workflow_ids=[workflow_id], load_input=False, load_output=False)
        status = found[0].status if found else None
        if status == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{workflow_id} is {status}, not {want}, after {timeout} s")


@pytest.fixture
def ops_factory(
    database_url: str, settings_factory: Any, runtime_factory: Any
) -> Iterator[Callable[..., Ops]]:
    platforms: list[Platform] = []
    CALLS.clear()
    HANG.clear()

    def start(**settings_kw: Any) -> Ops:
        settings_kw.setdefault("workflow_watch_seconds", 0)
        settings = settings_factory(database_url, **settings_kw)
        rt = runtime_factory(settings)
        platform = Platform()
        platforms.append(platform)
        return Ops(rt=rt, api=TestClient(create_app(settings, manage_runtime=False)), platform=platform)

    yield start
    HANG.set()  # a hanging step returns before the runtime goes down
    for p in platforms:
        p.server.stop()


@pytest.fixture
def ops(ops_factory: Callable[..., Ops]) -> Ops:
    return ops_factory()


SHAPE = {"wait_first": True, "fail_last": True}


@DBOS.step(name="ops_test_look")
def look() -> str:
    return "looked"


@DBOS.step(name="ops_test_finish")
def finish() -> str:
    if SHAPE["fail_last"]:
        raise RuntimeError("finish failed")
    return "finished"


@DBOS.workflow(name="ops_test_changing")
def changing() -> str:
    """Its step sequence depends on SHAPE, like a recovery whose wait was skipped on replay."""
    look()
    if SHAPE["wait_first"]:
        DBOS.sleep(0.01)
    else:
        look()
    return finish()
