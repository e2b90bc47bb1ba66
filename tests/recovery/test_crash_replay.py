"""Durability at start-up and across crashes.

- Start-up: the runtime is registered before DBOS launches (launching recovers pending workflows and
  consumes the events queue at once), events already waiting in the queue when a worker starts are
  processed, and `/readyz` answers 200 only once everything is up.
- Crash harness (slow): a real `billops serve` worker killed with SIGKILL at step boundaries of a
  recovery (detected from outside, on DBOS's recorded operations or on the platform's requests),
  restarted with the same executor id; the outcome equals an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import stripe
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.config import Settings
from billops.ingest.inbox import accept
from billops.platforms.stripe.normalize import normalize_event
from billops.runtime import Runtime, current_runtime, open_runtime, start_runtime, stop_runtime
from billops.store.models import Decision
from support.helpers import wait_for, workflow_status
from support.scenario import Failure

# ---------------------------------------------------------------- start-up order and readiness


def test_events_queued_before_start_up_are_processed(
    database_url: str,
    settings_factory: Callable[..., Settings],
    runtime_factory: Callable[[Settings], Runtime],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events accepted while no worker ran sit in the queue; the worker that starts takes them at once.
    Each must find the runtime (it used to fail with "BillOps runtime not started" in that window)."""
    from dbos import DBOS

    settings = settings_factory(database_url)
    start_runtime(settings)  # creates DBOS's tables, then goes away
    stop_runtime()
    offline = open_runtime(settings)  # a database-only runtime, like the CLI's
    workflows = []
    try:
        for _ in range(4):
            for payload in Failure().events():
                ev = normalize_event(payload)
                raw = json.dumps(payload).encode()
                got = accept(offline, event=ev, raw=raw, endpoint="default", trace_id=uuid.uuid4().hex)
                workflows.append(got.workflow_id)
    finally:
        offline.dbos_client().destroy()
        offline.db.dispose()

    seen: dict[str, Any] = {}
    launch = DBOS.launch

    def watched_launch() -> None:  # what the workflows DBOS starts during launch will see
        rt = current_runtime()
        seen["registered"], seen["ready"] = rt is not None and rt.db is not None, rt.ready if rt else None
        launch()

    monkeypatch.setattr(DBOS, "launch", staticmethod(watched_launch))
    rt = runtime_factory(settings)
    assert seen == {"registered": True, "ready": False} and rt.ready

    def finished() -> bool:
        states = [workflow_status(rt, wf) for wf in workflows]
        assert "ERROR" not in states, states
        return all(s == "SUCCESS" for s in states)

    wait_for(finished, timeout=60)
    with rt.db.reader() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Decision)) == 4


def test_readyz_answers_ready_only_once_the_runtime_is_up(
    database_url: str,
    settings_factory: Callable[..., Settings],
    runtime_factory: Callable[[Settings], Runtime],
) -> None:
    settings = settings_factory(database_url)
    client = TestClient(create_app(settings, manage_runtime=False))
    down = client.get("/readyz")
    assert down.status_code == 503 and down.json() == {"ready": False, "why": "runtime not started"}
    assert client.get("/healthz").status_code == 503

    rt = runtime_factory(settings)
    up = client.get("/readyz")
    assert up.status_code == 200, up.text
    assert up.json()["ready"] is True and up.json()["executor_id"] == settings.executor_id
    assert client.get("/healthz").json()["ready"] is True

    rt.ready = False  # as while DBOS launches (or the runtime shuts down)
    starting = client.get("/readyz")
    assert starting.status_code == 503 and "starting" in starting.json()["why"]
    assert client.get("/healthz").json() | {"version": None} == {
        "status": "ok",
        "version": None,
        "workflows": True,
        "ready": False,
    }
    rt.ready = True


# ---------------------------------------------------------------- crash harness: a real worker, SIGKILL

RETRY_HOURS = 0.005  # the retry is due 18 s after the failure: room to approve, kill and restart
FINAL = {"recovered", "settled_elsewhere", "exhausted", "stopped", "not_executed", "rejected", "expired"}


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    """`python -m billops serve` as a subprocess on its own SQLite database, stderr to a log file.
    Restarted with the same environment, so with the same executor id."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.env, self.cwd, self.log = env, cwd, log
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "billops", "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
            )  # fmt: skip

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "worker exited"
            try:
                return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=150, interval=0.1)  # generous: a loaded CI machine starts slowly
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: no shutdown code runs
            self.proc.wait(timeout=10)

    def post(self, payload: dict[str, Any]) -> str:
        from support.helpers import sign

        body, header = sign(payload)
        r = httpx.post(
            f"{self.url}/webhooks/stripe/default",
            content=body,
            headers={"stripe-signature": header, "content-type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        return str(r.json()["workflow_id"])

    def approve(self, wf: str, token: str) -> None:
        r = httpx.post(
            f"{self.url}/api/approvals/{wf}/approve",
            json={"why": "crash harness"},
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text


class Run:
    """One recovery through a worker: assist mode (a human approves), then a retry that pays."""

    def __init__(self, tmp: Path, policy_file: Path, proxy_url: str, db_url: str | None = None) -> None:
        from support.helpers import SECRET
        from support.localstripe import API_KEY

        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.db_path = tmp / "data" / "billops.db"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "BILLOPS_DATA_DIR": str(tmp / "data"),
            "BILLOPS_POLICY_FILE": str(policy_file),
            "BILLOPS_STRIPE_API_KEY": API_KEY,
            "BILLOPS_STRIPE_API_BASE": proxy_url,
            "BILLOPS_STRIPE_WEBHOOK_SECRETS": json.dumps({"default": [SECRET]}),
            "BILLOPS_EXECUTOR_ID": f"crash-{uuid.uuid4().hex[:6]}",
        }
        env.pop("BILLOPS_DATABASE_URL", None)
        if db_url is not None:  # PostgreSQL; SQLite otherwise, in the data directory
            env["BILLOPS_DATABASE_URL"] = db_url
        self.worker = Worker(env, tmp, tmp / "worker.log")
        self.db_url = db_url or f"sqlite:///{self.db_path}"
        self.schema = "" if db_url is None else "dbos."  # where DBOS keeps its tables
        self.engine = sa.create_engine(self.db_url, poolclass=sa.pool.NullPool)
        self.token = ""

    def ops(self, workflow_id: str) -> list[str]:
        """DBOS's recorded operations of a workflow, by function id: what a step boundary looks like
        from outside."""
        try:
            with self.engine.connect() as c:
                rows = c.execute(
                    sa.text(
                        f"SELECT function_name FROM {self.schema}operation_outputs WHERE workflow_uuid = :w "
                        "ORDER BY function_id"
                    ),
                    {"w": workflow_id},
                )
                return [str(r[0]) for r in rows]
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # not created yet
            return []

    def decision(self, wf: str) -> Decision | None:
        from sqlalchemy.orm import Session

        with Session(self.engine) as s:
            return s.get(Decision, wf)

    def statuses(self, wf: str) -> dict[str, str]:
        """Every workflow of this recovery (the event's, the follow-up, its messages), by id suffix."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.text(
                    f"SELECT workflow_uuid, status FROM {self.schema}workflow_status "
                    "WHERE workflow_uuid LIKE :p"
                ),
                {"p": f"{wf}%"},
            )
            return {str(r[0])[len(wf) :] or "(event)": str(r[1]) for r in rows}

    def outcome(self, wf: str, proxy: Any, sdk: stripe.StripeClient, invoice_id: str) -> dict[str, Any]:
        d = self.decision(wf)
        assert d is not None
        with self.engine.connect() as c:
            audit = [r[0] for r in c.execute(
                sa.text("SELECT action FROM audit_log WHERE workflow_id = :w"), {"w": wf}
            )]  # fmt: skip
            deliveries = [tuple(r) for r in c.execute(
                sa.text("SELECT step, status FROM deliveries WHERE workflow_id = :w"), {"w": wf}
            )]  # fmt: skip
            governed = [tuple(r) for r in c.execute(
                sa.text("SELECT step, status FROM governed_actions WHERE workflow_id = :w"), {"w": wf}
            )]  # fmt: skip
        return {
            "status": d.status,
            "final": d.outcome.get("final"),
            "steps": {k: v.get("status") for k, v in d.outcome.items() if k != "final"},
            "audit": sorted(audit),
            "deliveries": sorted(deliveries),
            "governed": sorted(governed),
            "workflows": self.statuses(wf),
            "pays_executed": len(proxy.executed_on("POST", rf"^/v1/invoices/{invoice_id}/pay$")),
            "invoice": sdk.v1.invoices.retrieve(invoice_id).status,
        }


@dataclass(frozen=True)
class KillPoint:
    """Where the worker is killed: `at` is a predicate on the follow-up workflow's recorded operations
    and the number of pay requests the platform saw; `restart_after_retry_time` keeps the worker down
    until the retry is due; `approve_after_restart` leaves the approval to the restarted worker."""

    name: str
    at: Callable[[list[str], int], bool]
    restart_after_retry_time: bool = False
    approve_after_restart: bool = False


def _waiting_for_retry(ops: list[str], pays: int) -> bool:
    # The approval's recv is consumed; the retry's recv has recorded its deadline and waits.
    return ops.count("DBOS.sleep") == 2 and ops.count("DBOS.recv") == 1


KILL_POINTS = [
    KillPoint(
        "waiting_for_approval",
        lambda ops, pays: "DBOS.sleep" in ops and "DBOS.recv" not in ops,
        approve_after_restart=True,
    ),
    KillPoint("after_approval", lambda ops, pays: "load_decision" in ops),
    KillPoint("waiting_for_retry", _waiting_for_retry),
    KillPoint("waiting_restart_after_retry_time", _waiting_for_retry, restart_after_retry_time=True),
    KillPoint("mid_pay", lambda ops, pays: pays > 0),  # the pay request reached the platform
    KillPoint("after_pay", lambda ops, pays: "retry_payment" in ops),
]


def _recover_once(
    tmp: Path,
    policy_file: Path,
    proxy: Any,
    sdk: stripe.StripeClient,
    point: KillPoint | None,
    db_url: str | None = None,
) -> dict[str, Any]:
    from test_auto_stripe import failure_events, seed_failed_invoice

    from billops.recovery.workflow import followup_id
    from support.auth import token_for
    from support.localstripe import CARD_OK, add_card

    run = Run(tmp, policy_file, proxy.url, db_url)
    w = run.worker
    try:
        w.start()
        run.token = token_for(run.db_url, "operator")
        seeded = seed_failed_invoice(sdk)
        charge, invoice = failure_events(seeded)
        w.post(charge)
        wf = w.post(invoice)
        fu = followup_id(wf)
        d = wait_for(lambda: (x := run.decision(wf)) and x.status == "awaiting_approval" and x, 40)
        retry_at = datetime.fromisoformat(d.plan["retries"][0]).timestamp()
        add_card(sdk, seeded.customer_id, card=CARD_OK, make_default=True)  # the customer fixed the card
        pay_path = rf"^/v1/invoices/{seeded.invoice_id}/pay$"
        approve_later = point is not None and point.approve_after_restart
        if not approve_later:
            wait_for(lambda: "DBOS.sleep" in run.ops(fu), 30, interval=0.02)  # the approval wait began
            w.approve(wf, run.token)
        if point is not None:
            at = point.at
            wait_for(lambda: at(run.ops(fu), len(proxy.find("POST", pay_path))), 60, interval=0.01)
            w.kill()
            if point.restart_after_retry_time:
                time.sleep(max(0.0, retry_at - time.time()) + 1.0)
            w.start()
            if approve_later:
                w.approve(wf, run.token)

        def finished() -> bool:
            x = run.decision(wf)
            states = run.statuses(wf)
            assert "ERROR" not in states.values(), states
            return x is not None and x.status in FINAL and all(s == "SUCCESS" for s in states.values())

        wait_for(finished, timeout=90, interval=0.2)
        return run.outcome(wf, proxy, sdk, seeded.invoice_id)
    except BaseException:
        log = tmp / "worker.log"
        if log.exists():
            print("---- worker log (tail) ----\n" + log.read_text(errors="replace")[-4000:])
        raise
    finally:
        w.kill()
        run.engine.dispose()


@pytest.fixture(scope="module")
def localstripe_url() -> Iterator[str]:
    from support.localstripe import run_localstripe

    with run_localstripe() as url:
        yield url


_BASELINE: dict[str, Any] = {}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("point", [None, *KILL_POINTS], ids=["uninterrupted", *[p.name for p in KILL_POINTS]])
def test_a_worker_killed_at_a_step_boundary_ends_as_if_never_killed(
    point: KillPoint | None,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    make_policy: Callable[..., Path],
    localstripe_url: str,
) -> None:
    from support.localstripe import sdk_client
    from support.recording_proxy import RecordingProxy

    policy_file = _harness_policy(make_policy)
    sdk = sdk_client(localstripe_url)
    if "outcome" not in _BASELINE:
        with RecordingProxy(localstripe_url) as proxy:
            base = tmp_path_factory.mktemp("baseline")
            _BASELINE["outcome"] = _recover_once(base, policy_file, proxy, sdk, None)
    expected = _BASELINE["outcome"]
    assert expected["status"] == "recovered" and expected["pays_executed"] == 1, expected
    if point is None:
        return
    with RecordingProxy(localstripe_url) as proxy:
        got = _recover_once(tmp_path, policy_file, proxy, sdk, point)
    assert got == expected


def _harness_policy(make_policy: Callable[..., Path]) -> Path:
    return make_policy(
        modes={"recovery": "assist"},
        recovery={
            "thresholds": {"auto_retry_above": 0, "notify_from": 0},
            "retry_schedule_hours": {
                "auto_retry": [RETRY_HOURS],
                "retry_and_notify": [RETRY_HOURS],
                "human_review": [],
            },
            "context_wait_seconds": 2,
        },
    )


PG_POINTS = [p for p in KILL_POINTS if p.name in ("waiting_restart_after_retry_time", "mid_pay")]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(600)
@pytest.mark.parametrize("point", PG_POINTS, ids=[p.name for p in PG_POINTS])
def test_on_postgres_a_killed_worker_ends_as_if_never_killed(
    point: KillPoint,
    backend: str,
    database_url: str,
    tmp_path: Path,
    make_policy: Callable[..., Path],
    localstripe_url: str,
) -> None:
    """The same harness on PostgreSQL (one shared pool per worker), for the two kill points that
    broke there: restarted after the retry time, and killed with the pay request in flight. The
    uninterrupted run is made on the same database first."""
    from support.localstripe import sdk_client
    from support.recording_proxy import RecordingProxy

    if backend != "postgresql":
        pytest.skip("the SQLite runs are test_a_worker_killed_at_a_step_boundary_ends_as_if_never_killed")
    policy_file = _harness_policy(make_policy)
    sdk = sdk_client(localstripe_url)
    with RecordingProxy(localstripe_url) as proxy:
        expected = _recover_once(tmp_path / "base", policy_file, proxy, sdk, None, database_url)
    assert expected["status"] == "recovered" and expected["pays_executed"] == 1, expected
    with RecordingProxy(localstripe_url) as proxy:
        got = _recover_once(tmp_path / "killed", policy_file, proxy, sdk, point, database_url)
    # Same database: the workflows of both runs are told apart by their ids, everything else compared.
    assert got == expected
