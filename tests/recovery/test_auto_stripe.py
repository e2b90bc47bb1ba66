"""The payment-recovery workflow in AUTO mode against a real localstripe, through the official Stripe
SDK (via a recording proxy that proves what was sent): a retry that recovers the invoice, a retry that
fails, and a server killed (SIGKILL) while waiting for its retry that resumes after a restart and pays
exactly once, with the same idempotency key."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import stripe
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.governance.audit import verify
from support.auth import bearer, token_for
from support.helpers import SECRET, sign, wait_for
from support.localstripe import (
    API_KEY,
    CARD_DECLINED_ON_CHARGE,
    CARD_OK,
    add_card,
    create_customer_with_card,
    create_plan,
    create_subscription,
    run_localstripe,
    sdk_client,
)
from support.recording_proxy import RecordingProxy
from support.service import Service as BaseService
from support.service import own

# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def localstripe_url() -> Iterator[str]:
    with run_localstripe() as url:
        yield url


@pytest.fixture
def sdk(localstripe_url: str) -> stripe.StripeClient:
    """The plain SDK straight to localstripe: seeding and checking (never recorded by the proxy)."""
    return sdk_client(localstripe_url)


@pytest.fixture
def proxy(localstripe_url: str) -> Iterator[RecordingProxy]:
    with RecordingProxy(localstripe_url) as p:
        yield p


def auto_policy(make_policy: Callable[..., Path], retry_hours: float) -> Path:
    return make_policy(
        modes={"recovery": "auto"},
        recovery={
            "thresholds": {"auto_retry_above": 0, "notify_from": 0},
            "retry_schedule_hours": {
                "auto_retry": [retry_hours],
                "retry_and_notify": [retry_hours],
                "human_review": [],
            },
            "context_wait_seconds": 2,
        },
    )


@dataclass
class Seeded:
    customer_id: str
    invoice_id: str
    invoice: dict[str, Any]


def seed_failed_invoice(sdk: stripe.StripeClient) -> Seeded:
    """A customer whose card declines every charge, on a subscription: its first invoice stays open
    with a failed charge."""
    cus = create_customer_with_card(sdk, card=CARD_DECLINED_ON_CHARGE, email=f"{uuid.uuid4().hex[:8]}@x.com")
    _, invoice_id = create_subscription(sdk, cus.customer_id, create_plan(sdk))
    inv = sdk.v1.invoices.retrieve(invoice_id).to_dict()
    assert inv["status"] == "open" and inv["charge"]["status"] == "failed"
    return Seeded(cus.customer_id, invoice_id, inv)


def envelope(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "api_version": "2017-08-15",
        "livemode": False,
        "data": {"object": obj},
    }


def failure_events(seeded: Seeded) -> list[dict[str, Any]]:
    """charge.failed (localstripe puts the whole charge in invoice.charge), then invoice.payment_failed."""
    return [
        envelope("charge.failed", seeded.invoice["charge"]),
        envelope("invoice.payment_failed", seeded.invoice),
    ]


def pay_requests(proxy: RecordingProxy, invoice_id: str) -> list[Any]:
    return proxy.find("POST", rf"^/v1/invoices/{invoice_id}/pay$")


class Service(BaseService):
    def fail(self, seeded: Seeded) -> str:  # type: ignore[override]
        charge, invoice = failure_events(seeded)
        wf = super().fail([charge, invoice])
        assert wf == f"stripe:{invoice['id']}"
        return wf


@pytest.fixture
def service(
    database_url: str,
    settings_factory: Any,
    runtime_factory: Any,
    make_policy: Callable[..., Path],
    proxy: RecordingProxy,
) -> Service:
    # Retry ~7 s after the failure: room to switch cards once the decision is recorded.
    policy_file = auto_policy(make_policy, 0.002)
    settings = settings_factory(
        database_url, stripe_api_key=API_KEY, stripe_api_base=proxy.url, policy_file=policy_file
    )
    rt = runtime_factory(settings)
    return Service(TestClient(create_app(settings, manage_runtime=False)), rt)


# ---------------------------------------------------------------- in-process: recovered / exhausted


def test_auto_retry_recovers_after_the_card_is_updated(
    service: Service, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    seeded = seed_failed_invoice(sdk)
    wf = service.fail(seeded)
    d = service.decision(wf, status="approved")
    assert d.mode == "auto" and d.route in ("auto_retry", "retry_and_notify")
    assert len(d.plan["retries"]) == 1
    assert not pay_requests(proxy, seeded.invoice_id), "no payment before the retry time"
    add_card(sdk, seeded.customer_id, card=CARD_OK, make_default=True)

    done = service.decision(wf, status="recovered", timeout=45)
    [pay] = pay_requests(proxy, seeded.invoice_id)
    assert pay.header("Idempotency-Key") == f"{wf}:pay:1"
    assert sdk.v1.invoices.retrieve(seeded.invoice_id).status == "paid"

    notes = [
        r
        for r in proxy.find("POST", rf"^/v1/invoices/{seeded.invoice_id}$")
        if "metadata[billops_workflow]" in r.form
    ]
    assert notes and notes[0].form["metadata[billops_workflow]"] == wf
    note = next(v for k, v in done.outcome.items() if k.endswith(":write_note"))
    assert note["status"] == "done" and note["note"]["billops_workflow"] == wf
    assert done.outcome["pay:1"]["status"] == "succeeded"
    assert done.outcome["final"] == {"status": "recovered", "retry": 1}

    actions = service.audit_actions(wf)
    assert actions[0] == "recovery.decided" and own(actions)[-1] == "recovery.finished"
    assert "action.retry_payment" in actions and "action.write_note" in actions
    with service.rt.db.reader() as s:
        assert verify(s).ok


def test_auto_retry_with_the_declining_card_is_exhausted(
    service: Service, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    seeded = seed_failed_invoice(sdk)
    wf = service.fail(seeded)
    done = service.decision(wf, status="exhausted", timeout=45)
    [pay] = pay_requests(proxy, seeded.invoice_id)
    assert pay.header("Idempotency-Key") == f"{wf}:pay:1"
    assert done.outcome["pay:1"]["status"] == "failed"
    assert done.outcome["final"] == {"status": "exhausted", "retries": 1}
    assert sdk.v1.invoices.retrieve(seeded.invoice_id).status == "open"
    assert "action.retry_payment" in service.audit_actions(wf)
    with service.rt.db.reader() as s:
        assert verify(s).ok


# ---------------------------------------------------------------- replay after the retry time


def operations(rt: Any, workflow_id: str) -> list[tuple[int, str]]:
    """DBOS's recorded operations of a workflow: (function id, name), in order."""
    schema = "" if rt.db.is_sqlite else "dbos."
    with rt.db.engine.connect() as c:
        rows = c.execute(
            sa.text(
                f"SELECT function_id, function_name FROM {schema}operation_outputs "
                "WHERE workflow_uuid = :w ORDER BY function_id"
            ),
            {"w": workflow_id},
        )
        return [(int(r[0]), str(r[1])) for r in rows]


def replay(rt: Any, workflow_id: str) -> Any:
    """Run a finished workflow again from its recorded operations, the way DBOS recovers a workflow
    whose process died: back to PENDING, then recovered on this executor. Returns its new result
    (raises if the replay diverged from the record and the workflow ended in ERROR)."""
    from dbos import DBOS

    schema = "" if rt.db.is_sqlite else "dbos."
    with rt.db.dbos_engine().begin() as c:
        c.execute(
            sa.text(f"UPDATE {schema}workflow_status SET status = 'PENDING' WHERE workflow_uuid = :w"),
            {"w": workflow_id},
        )
    DBOS._recover_pending_workflows([rt.settings.executor_id])
    return DBOS.retrieve_workflow(workflow_id).get_result()


def test_a_recovery_replayed_after_its_retry_time_makes_the_same_steps(
    service: Service, sdk: stripe.StripeClient, proxy: RecordingProxy
) -> None:
    """The retry's wait was recorded while its time was ahead; a replay after that time must make the
    same calls (the wait included) and return the same result, paying nothing again."""
    from dbos import DBOS

    from billops.recovery.workflow import followup_id

    seeded = seed_failed_invoice(sdk)
    wf = service.fail(seeded)
    service.decision(wf, status="approved")
    add_card(sdk, seeded.customer_id, card=CARD_OK, make_default=True)
    service.decision(wf, status="recovered", timeout=45)
    fu = followup_id(wf)
    first: dict[str, Any] = DBOS.retrieve_workflow(fu).get_result()
    ops, audit = operations(service.rt, fu), service.audit_actions(wf)
    assert ("DBOS.recv" in {name for _, name in ops}) and first["status"] == "recovered"
    retry_at = datetime.fromisoformat(service.decision(wf).plan["retries"][0])
    assert retry_at < datetime.now(UTC), "the replay runs after the retry time"

    assert replay(service.rt, fu) == first
    assert replay(service.rt, wf) == DBOS.retrieve_workflow(wf).get_result()
    assert operations(service.rt, fu) == ops
    assert service.audit_actions(wf) == audit
    assert len(pay_requests(proxy, seeded.invoice_id)) == 1
    assert service.decision(wf).status == "recovered"


# ---------------------------------------------------------------- crash and restart


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`python -m billops serve` as a subprocess, stderr to a file."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env, self.cwd, self.log = env, cwd, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""  # a viewer's API token in the server's database, for GET /api/…

    def start(self) -> Server:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "billops", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )

        def healthy() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "server exited"
            try:
                return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=60, interval=0.2)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def post(self, payload: dict[str, Any]) -> dict[str, Any]:
        body, header = sign(payload)
        r = httpx.post(
            f"{self.url}/webhooks/stripe/default",
            content=body,
            headers={"stripe-signature": header, "content-type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        return r.json()

    def decision(self, wf: str) -> dict[str, Any] | None:
        try:
            r = httpx.get(f"{self.url}/api/decisions/{wf}", headers=bearer(self.token), timeout=5)
        except httpx.HTTPError:
            return None
        assert r.status_code in (200, 404), r.text  # a refused token fails loudly, not as "not yet"
        return r.json() if r.status_code == 200 else None


@pytest.mark.slow
def test_killed_while_waiting_for_the_retry_resumes_and_pays_once(
    tmp_path: Path,
    make_policy: Callable[..., Path],
    sdk: stripe.StripeClient,
    proxy: RecordingProxy,
) -> None:
    # Retry ~14 s after the failure: the server is killed well before, restarted after the card update.
    policy_file = auto_policy(make_policy, 0.004)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "BILLOPS_DATA_DIR": str(tmp_path / "data"),
        "BILLOPS_POLICY_FILE": str(policy_file),
        "BILLOPS_STRIPE_API_KEY": API_KEY,
        "BILLOPS_STRIPE_API_BASE": proxy.url,
        "BILLOPS_STRIPE_WEBHOOK_SECRETS": json.dumps({"default": [SECRET]}),
        "BILLOPS_EXECUTOR_ID": "crash-test",
    }
    env.pop("BILLOPS_DATABASE_URL", None)
    log = tmp_path / "server.log"
    servers: list[Server] = []
    try:
        first = Server(env, tmp_path, log)
        servers.append(first)
        first.start()
        # The API needs a token: a viewer service user in the server's own database (schema made by it).
        first.token = token_for(f"sqlite:///{tmp_path / 'data' / 'billops.db'}", "viewer")
        seeded = seed_failed_invoice(sdk)
        charge, invoice = failure_events(seeded)
        first.post(charge)
        wf = str(first.post(invoice)["workflow_id"])
        d = wait_for(lambda: (x := first.decision(wf)) is not None and x["status"] == "approved" and x, 30)
        assert d["mode"] == "auto" and len(d["plan"]["retries"]) == 1
        # The followup workflow is now in its durable timer before the retry.
        first.kill()
        assert not pay_requests(proxy, seeded.invoice_id), "killed before the retry time"

        add_card(sdk, seeded.customer_id, card=CARD_OK, make_default=True)
        second = Server(env, tmp_path, log)
        second.token = first.token  # same database: the same token
        servers.append(second)
        second.start()
        done = wait_for(
            lambda: (x := second.decision(wf)) is not None and x["status"] == "recovered" and x, timeout=60
        )
        [pay] = pay_requests(proxy, seeded.invoice_id)
        assert pay.header("Idempotency-Key") == f"{wf}:pay:1"
        assert sdk.v1.invoices.retrieve(seeded.invoice_id).status == "paid"
        assert done["outcome"]["pay:1"]["status"] == "succeeded"
    except BaseException:
        if log.exists():
            print("---- server log (tail) ----\n" + log.read_text(errors="replace")[-4000:])
        raise
    finally:
        for srv in servers:
            srv.kill()
