"""The payment-recovery workflow end to end through the real webhook endpoint and DBOS, per mode:
shadow records only, assist waits for a human (approve, reject, timeout), and settled invoices stop it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from billops.app import create_app
from billops.governance.audit import verify
from billops.store.models import Approval, AuditRecord, Decision
from support.auth import auth_headers, bearer, make_user, token_for
from support.helpers import wait_for, workflow_status
from support.scenario import Failure
from support.service import Service, own


@pytest.fixture
def service(
    database_url: str, settings_factory: Any, runtime_factory: Any, make_policy: Callable[..., Any]
) -> Callable[..., Service]:
    def _start(mode: str = "shadow", **policy: Any) -> Service:
        policy_file = make_policy(
            modes={"recovery": mode}, **{"recovery": {"context_wait_seconds": 3}, **policy}
        )
        settings = settings_factory(database_url, policy_file=policy_file)
        rt = runtime_factory(settings)
        client = TestClient(create_app(settings, manage_runtime=False))
        return Service(client, rt)

    return _start


def test_shadow_decides_records_and_changes_nothing(service: Callable[..., Service]) -> None:
    svc = service("shadow")
    f = Failure(decline_code="insufficient_funds", brand="visa")
    wf = svc.fail(f.events())
    d = svc.decision(wf, status="recorded")
    assert d.mode == "shadow"
    assert d.decline_code == "insufficient_funds" and d.decline_category == "soft"
    assert d.route == "retry_and_notify"  # a customer with no history scores 73: notify and retry
    assert d.versions["scorer"] == "rules-v1"
    assert d.versions["policy"] == svc.rt.policy().full_version  # the policy file's version + digest
    assert d.plan["retries"], "a soft decline gets retry times"
    assert {m["kind"] for m in d.plan["messages"]} == {"urgent_email", "sms"}
    assert d.outcome.get("0:card_update_link") is None  # shadow executes nothing
    assert svc.audit_actions(wf) == ["recovery.decided"]  # shadow: the decision is the whole record
    with svc.rt.db.reader() as s:
        assert verify(s).ok


def test_charge_after_invoice_event_is_waited_for(service: Callable[..., Service]) -> None:
    """Stripe does not order events: the decline details may arrive after invoice.payment_failed."""
    svc = service("shadow")
    f = Failure(decline_code="lost_card", failure_code="lost_card")
    wf = str(svc.post(f.invoice_failed())["workflow_id"])
    svc.post(f.charge_failed())
    d = svc.decision(wf, status="recorded")
    assert d.decline_code == "lost_card" and d.route == "no_retry" and d.plan["retries"] == []


def test_one_recovery_per_invoice(service: Callable[..., Service]) -> None:
    svc = service("assist")
    f = Failure()
    wf = svc.fail(f.events())
    svc.awaiting(wf)
    again = svc.post(f.invoice_failed())  # Stripe's own retry failed again: new event, same invoice
    wait_for(lambda: workflow_status(svc.rt, again["workflow_id"]) == "SUCCESS")
    with svc.rt.db.reader() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Decision)) == 1


def test_assist_waits_then_approval_resumes_the_workflow(service: Callable[..., Service]) -> None:
    svc = service("assist")
    wf = svc.fail(Failure().events())
    d = svc.awaiting(wf)
    ops = bearer(
        token_for(svc.rt, "operator", username=make_user(svc.rt, "operator", username="ops@example.com"))
    )
    queue = svc.client.get("/api/approvals", headers=ops).json()
    assert [a["workflow_id"] for a in queue] == [wf]
    item = queue[0]
    assert item["messages"] and item["reasons"] and item["route"] == d.route
    r = svc.client.post(f"/api/approvals/{item['id']}/approve", json={"why": "ok"}, headers=ops)
    assert r.status_code == 200, r.text
    # The workflow continues; without Stripe credentials each platform action is recorded as skipped.
    done = svc.decision(wf, status="not_executed")
    assert done.outcome["0:disable_platform_retries"]["status"] == "skipped"
    actions = svc.audit_actions(wf)
    assert actions[:3] == ["recovery.decided", "approval.requested", "approval.approved"]
    assert "action.retry_payment" not in actions and own(actions)[-1] == "recovery.finished"
    assert done.outcome["final"]["why"] == (
        "no stripe API credentials configured (BILLOPS_STRIPE_API_KEY): no payment can be retried"
    )
    with svc.rt.db.reader() as s:
        rec = s.scalar(sa.select(AuditRecord).where(AuditRecord.action == "approval.approved"))
        assert rec.actor_type == "human" and rec.actor == "ops@example.com"
    # A second choice on the same item is refused clearly.
    r2 = svc.client.post(f"/api/approvals/{item['id']}/reject", json={"why": "changed my mind"}, headers=ops)
    assert r2.status_code == 409 and "already approved" in r2.json()["error"]


def test_reject_from_the_cli(service: Callable[..., Service]) -> None:
    from billops.cli import app

    svc = service("assist")
    wf = svc.fail(Failure().events())
    svc.awaiting(wf)
    res = CliRunner().invoke(
        app, ["approvals", "reject", wf, "--by", "cli-tester", "--note", "customer called"]
    )
    assert res.exit_code == 0, res.output
    svc.decision(wf, status="rejected")
    d = wait_for(lambda: (x := svc.decision(wf)) is not None and "final" in x.outcome and x)
    assert "action.retry_payment" not in svc.audit_actions(wf)
    assert d.outcome["final"]["by"] == "cli-tester"
    with svc.rt.db.reader() as s:
        assert s.scalar(sa.select(Approval.note)) == "customer called"


def test_approval_timeout_takes_the_documented_default(service: Callable[..., Service]) -> None:
    svc = service("assist", approvals={"timeout_hours": 0.0006, "timeout_outcome": "reject"})  # ~2 s
    wf = svc.fail(Failure().events())
    d = svc.decision(wf, status="expired", timeout=40)
    assert "approval.expired" in svc.audit_actions(wf)
    assert not any(a.startswith("action.") for a in svc.audit_actions(wf))
    with svc.rt.db.reader() as s:
        appr = s.scalar(sa.select(Approval).where(Approval.workflow_id == d.workflow_id))
        assert appr.status == "expired" and appr.decided_by == "timeout"


def test_invoice_paid_before_the_decision_stops_it(service: Callable[..., Service]) -> None:
    svc = service("shadow")
    f = Failure()
    paid = svc.post(f.invoice_paid())  # newer state arrives (and is applied) first
    wait_for(lambda: workflow_status(svc.rt, paid["workflow_id"]) == "SUCCESS")
    wf = svc.fail(f.events())  # older failure events are applied after it and do not regress the invoice
    wait_for(lambda: workflow_status(svc.rt, wf) in ("SUCCESS", "ERROR"), timeout=30)
    assert workflow_status(svc.rt, wf) == "SUCCESS"
    with svc.rt.db.reader() as s:
        assert s.get(Decision, wf) is None


def test_status_and_decisions_api(service: Callable[..., Service]) -> None:
    svc = service("shadow")
    wf = svc.fail(Failure(decline_code="stolen_card", failure_code="stolen_card").events())
    svc.decision(wf, status="recorded")
    viewer = auth_headers(svc.rt, "viewer")
    st = svc.client.get("/api/status", headers=viewer).json()
    assert st["events"] == 2 and st["decisions"] == 1
    items = svc.client.get("/api/decisions", headers=viewer).json()
    assert items[0]["workflow_id"] == wf and items[0]["route"] == "no_retry"
    one = svc.client.get(f"/api/decisions/{wf}", headers=viewer).json()
    assert one["plan"]["retry_blocked"].startswith("never retried")
    assert svc.client.get("/api/decisions").status_code == 401  # no token, no data


def test_invoice_paid_while_a_recovery_is_still_deciding(service: Callable[..., Service]) -> None:
    """A recovery that holds the invoice but has no follow-up workflow yet (still deciding, or shadow)
    is not waiting for news: the paid event must not fail on it."""
    from billops.store.models import ActiveRecovery

    svc = service("shadow")
    f = Failure()
    with svc.rt.db.session() as s:
        s.add(
            ActiveRecovery(platform="stripe", invoice_id=f.invoice, workflow_id="stripe:evt_still_deciding")
        )
    paid = svc.post(f.invoice_paid())
    wait_for(lambda: workflow_status(svc.rt, paid["workflow_id"]) in ("SUCCESS", "ERROR"), timeout=30)
    assert workflow_status(svc.rt, paid["workflow_id"]) == "SUCCESS"


# ---------------------------------------------------------------- steps re-run after a crash


def _count(svc: Service, model: Any, **where: Any) -> int:
    with svc.rt.db.reader() as s:
        q = sa.select(sa.func.count()).select_from(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return int(s.scalar(q) or 0)


def test_a_guard_step_run_twice_counts_and_audits_once(service: Callable[..., Service]) -> None:
    """A step re-run after a crash between its commit and DBOS recording its output (simulated by
    running the step function twice for the same workflow, step and attempt) counts its governed
    action once and audits its block once, and returns the verdict it stored the first time."""
    from billops.recovery import steps
    from billops.store.models import GovernedAction

    svc = service("assist")
    wf = svc.fail(Failure().events())
    svc.awaiting(wf)
    note = {"type": "write_note", "detail": {}}
    first = steps.guard(wf, "7:write_note", note, 0)
    again = steps.guard(wf, "7:write_note", note, 0)
    assert first["effect"] == "allow" and again == first
    assert _count(svc, GovernedAction, workflow_id=wf, step="7:write_note") == 1

    credit = {"type": "apply_credit", "detail": {"amount_minor": 500, "currency": "usd"}}
    blocked = steps.guard(wf, "8:apply_credit", credit, 0)
    assert blocked["effect"] == "block" and blocked["findings"][0]["rule"] == "risky_action"
    assert steps.guard(wf, "8:apply_credit", credit, 0) == blocked
    assert svc.audit_actions(wf).count("guardrail.risky_action") == 1
    # Another attempt of the same step (a deferral asks again) is a new ask, recorded on its own.
    steps.guard(wf, "8:apply_credit", credit, 1)
    assert svc.audit_actions(wf).count("guardrail.risky_action") == 2
    assert _count(svc, GovernedAction, workflow_id=wf, step="8:apply_credit") == 0
    with svc.rt.db.reader() as s:
        assert verify(s).ok


def test_an_action_recorded_twice_is_audited_once(service: Callable[..., Service]) -> None:
    from billops.recovery import steps

    svc = service("assist")
    wf = svc.fail(Failure().events())
    svc.awaiting(wf)
    before = len(svc.audit_actions(wf))
    for _ in range(2):
        steps._record_action(
            wf, "pay:1", "action.retry_payment", {"key": f"{wf}:pay:1"}, {"status": "failed"}
        )
        steps.record_failure(wf, "0:write_note", "write_note", "boom")
    actions = svc.audit_actions(wf)
    assert len(actions) == before + 2
    assert actions.count("action.retry_payment") == 1 and actions.count("action.write_note") == 1
    d = svc.decision(wf)
    assert d.outcome["pay:1"] == {"status": "failed"} and d.outcome["0:write_note"]["status"] == "error"


def test_an_expiry_step_run_twice_keeps_its_verdict(service: Callable[..., Service]) -> None:
    """The timeout's default outcome 'approve' stays 'approved' when the expiry step runs again (it used
    to answer 'not approved' the second time, from the approval's status 'expired')."""
    from billops.recovery import steps

    svc = service("assist", approvals={"timeout_hours": 1, "timeout_outcome": "approve"})
    wf = svc.fail(Failure().events())
    svc.awaiting(wf)
    first = steps.expire_approval(wf)
    assert first == {"approved": True, "by": "timeout", "status": "expired"}
    assert steps.expire_approval(wf) == first
    assert svc.audit_actions(wf).count("approval.expired") == 1
