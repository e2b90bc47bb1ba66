"""The recovery's own write steps (recovery/steps.py), each run twice with the same workflow id and step,
as DBOS runs a step again when a worker died after the step's side effect but before its result was
recorded; the second run happens in a fresh process. The keys the client sends are `<workflow id>:<step>`
(no time, no process state in them), so the Stripe stand-in sees the same key, replays its first answer,
and nothing is charged or written twice."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import stripe

from billops.config import Settings
from billops.runtime import Runtime
from billops.store.models import AuditRecord, Decision
from support.localstripe import API_KEY, create_customer_with_card, create_plan, create_subscription
from support.loopback import RecordedRequest
from support.recording_proxy import RecordingProxy

pytestmark = pytest.mark.slow

WF = "stripe:evt_steps_1"
ACTIONS = ("disable_platform_retries", "write_note", "card_update_link")

# Run in a separate process, as a restarted worker would: the same steps, the same database.
_REPLAY = """
import json, sys
from billops.config import Settings
from billops.runtime import start_runtime, stop_runtime
from billops.recovery import steps
settings = Settings(**json.loads(sys.argv[1]))
start_runtime(settings)
try:
    out = [steps.retry_payment(sys.argv[2], 1, None)]
    for i, kind in enumerate(json.loads(sys.argv[3])):
        out.append(steps.platform_action(sys.argv[2], f"{i}:{kind}", {"type": kind}))
    print(json.dumps(out))
finally:
    stop_runtime()
"""


def seed_decision(rt: Runtime, customer_id: str, invoice_id: str) -> None:
    with rt.db.session() as s:
        s.add(
            Decision(
                workflow_id=WF,
                platform="stripe",
                invoice_id=invoice_id,
                customer_id=customer_id,
                event_id="evt_steps_1",
                amount=2900,
                currency="usd",
                route="retry",
                score=70,
                mode="auto",
                status="acting",
                versions={},
                trace_id="t" * 32,
                plan={
                    "route": "retry",
                    "retries": ["2026-12-08T10:00:00+00:00"],
                    "actions": [],
                    "messages": [],
                    "reasons": [],
                },
            )
        )


def stubs(proxy: RecordingProxy, invoice_id: str) -> dict[str, int]:
    """localstripe refuses auto_advance and has no billing portal: counted stand-ins, behind the
    idempotency layer."""
    calls = {"auto_advance": 0, "portal": 0}

    def flag(rec: RecordedRequest) -> tuple[int, dict[str, object]] | None:
        if "auto_advance" not in rec.form:
            return None
        calls["auto_advance"] += 1
        return 200, {"id": invoice_id, "object": "invoice", "auto_advance": False}

    def portal(rec: RecordedRequest) -> tuple[int, dict[str, object]]:
        calls["portal"] += 1
        return 200, {
            "id": f"bps_{calls['portal']}",
            "object": "billing_portal.session",
            "url": f"https://portal.test/bps_{calls['portal']}",
        }

    proxy.stub("POST", rf"^/v1/invoices/{invoice_id}$", flag)
    proxy.stub("POST", r"^/v1/billing_portal/sessions$", portal)
    return calls


def test_write_steps_replayed_in_another_process_write_once(
    database_url: str,
    settings_factory: Callable[..., Settings],
    runtime_factory: Callable[[Settings], Runtime],
    proxy: RecordingProxy,
    sdk: stripe.StripeClient,
    tmp_path: Path,
) -> None:
    from billops.recovery import steps

    seeded = create_customer_with_card(sdk)  # card 4000000000000341: every charge is declined
    _, invoice_id = create_subscription(sdk, seeded.customer_id, create_plan(sdk))
    charges_before = len(sdk.v1.charges.list({"customer": seeded.customer_id}).data)
    settings = settings_factory(database_url, stripe_api_key=API_KEY, stripe_api_base=proxy.url)
    rt = runtime_factory(settings)
    seed_decision(rt, seeded.customer_id, invoice_id)
    calls = stubs(proxy, invoice_id)
    proxy.clear()

    first: list[dict[str, Any]] = [steps.retry_payment(WF, 1, None)]
    first += [steps.platform_action(WF, f"{i}:{kind}", {"type": kind}) for i, kind in enumerate(ACTIONS)]
    assert first[0]["status"] == "failed" and [r["status"] for r in first[1:]] == ["done"] * 3

    env = {
        k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v)
        for k, v in {
            "database_url": database_url,
            "stripe_api_key": settings.stripe_api_key,
            "stripe_api_base": proxy.url,
            "policy_file": str(settings.policy_file),
            "data_dir": str(tmp_path / "replay"),
            "executor_id": "replay-process",
            "stripe_webhook_secrets": {},
        }.items()
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_REPLAY), json.dumps(env), WF, json.dumps(ACTIONS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    second = json.loads(done.stdout.strip().splitlines()[-1])

    assert second == first  # the same outcome, the same card-update link
    posts = [r for r in proxy.requests if r.method == "POST"]
    keys = [f"{WF}:pay:1"] + [f"{WF}:{i}:{kind}" for i, kind in enumerate(ACTIONS)]
    # The same keys in both processes; the pay's answer was recorded by the first run, so the re-run
    # returns it without asking Stripe again (the other writes are answered from Stripe's key cache).
    assert [r.header("Idempotency-Key") for r in posts] == keys + keys[1:]
    assert [r.replayed for r in posts] == [False] * 4 + [True] * 3
    assert calls == {"auto_advance": 1, "portal": 1}
    assert len(sdk.v1.charges.list({"customer": seeded.customer_id}).data) == charges_before + 1
    with rt.db.reader() as s:
        audited = list(s.scalars(sa.select(AuditRecord.action).where(AuditRecord.workflow_id == WF)))
    # each step is audited once, although it ran twice
    assert sorted(audited) == sorted(["action.retry_payment"] + [f"action.{k}" for k in ACTIONS])
