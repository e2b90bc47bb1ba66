"""Governance end to end through the real app, DBOS and a Chargebee failure against FakeChargebeeAPI:
guardrails sending a plan to a human whatever the mode, edit-then-approve, the kill switch, the circuit
breaker, amount caps, and a policy edited on disk taking effect without a restart. Each ends with
`billops audit verify`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from billops.app import create_app
from billops.cli import app as cli
from billops.governance import control
from billops.store.models import Approval, FeedbackLabel, GovernedAction
from support.auth import auth_headers
from support.chargebee_harness import SUBSCRIPTION, ChargebeeHarness, running_harness
from support.helpers import wait_for
from support.service import Service


@pytest.fixture
def cb() -> Iterator[ChargebeeHarness]:
    with running_harness() as harness:
        yield harness


@pytest.fixture
def start(
    cb: ChargebeeHarness,
    database_url: str,
    settings_factory: Any,
    runtime_factory: Any,
    make_policy: Callable[..., Path],
) -> Callable[..., Service]:
    def _start(mode: str, guardrails: dict[str, Any] | None = None, **recovery: Any) -> Service:
        policy_file = make_policy(
            modes={"recovery": mode},
            recovery={
                "model": "rules",
                "retry_schedule_hours": {"auto_retry": [48], "retry_and_notify": [48], "human_review": []},
                "context_wait_seconds": 1,
                **recovery,
            },
            guardrails={"quiet_hours": None, **(guardrails or {})},
        )
        settings = settings_factory(database_url, policy_file=policy_file, **cb.settings())
        rt = runtime_factory(settings)
        return Service(TestClient(create_app(settings, manage_runtime=False)), rt)

    return _start


def _audit_ok(svc: Service) -> None:
    r = CliRunner().invoke(cli, ["--database-url", svc.rt.settings.db_url, "audit", "verify"])
    assert r.exit_code == 0, r.output
    assert "audit log intact" in r.output


def test_a_risky_offer_waits_for_a_human_in_auto_mode_then_edit_then_approve(
    cb: ChargebeeHarness, start: Callable[..., Service]
) -> None:
    svc = start(
        "auto",
        offers={
            "pause_subscription": {
                "routes": ["auto_retry", "retry_and_notify", "human_review"],
                "resume_after_days": 14,
            }
        },
    )
    wf = cb.post_failure(svc.client)
    d = svc.awaiting(wf)
    assert d.mode == "auto", "auto mode, yet a human decides: the guardrail, not the mode"
    assert any(a["type"] == "pause_subscription" for a in d.plan["actions"])
    assert cb.writes() == [], "nothing happens before the approval"
    fired = d.plan["governance"]["guardrails"]
    assert [g["rule"] for g in fired] == ["risky_action"]
    assert "guardrail.risky_action" in svc.audit_actions(wf)

    viewer, operator = auth_headers(svc.rt, "viewer"), auth_headers(svc.rt, "operator")
    [item] = [a for a in svc.client.get("/api/approvals", headers=viewer).json() if a["workflow_id"] == wf]
    assert item["guardrails"] == [
        {"rule": "risky_action", "reason": "pause subscription always needs a human's approval"}
    ]
    assert "guardrail risky_action" in item["why"]
    full = svc.client.get(f"/api/approvals/{item['id']}", headers=viewer).json()
    assert full["plan"]["features"] and full["score"] == d.score and full["reasons"]
    kinds = [m["kind"] for m in item["messages"]]
    assert kinds, "the drafted messages are shown for approval"

    # A viewer cannot decide.
    r = svc.client.post(f"/api/approvals/{item['id']}/approve", json={"why": "x"}, headers=viewer)
    assert r.status_code == 403
    # A bad edit is refused with the reason and changes nothing.
    past = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    r = svc.client.post(
        f"/api/approvals/{item['id']}/approve",
        headers=operator,
        json={"why": "x", "edits": {"retries": [past]}},
    )
    assert r.status_code == 422 and "in the past" in r.text
    hand_link = {kinds[0]: {"body": "Update your card at https://pay.example.com/update"}}
    r = svc.client.post(
        f"/api/approvals/{item['id']}/approve",
        headers=operator,
        json={"why": "x", "edits": {"messages": hand_link}},
    )
    assert r.status_code == 422 and "links are not written by hand" in r.text

    soon = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    drop = [t for t in ("send_sms",) if any(a["type"] == t for a in d.plan["actions"])]
    edits = {
        "retries": [soon.isoformat()],
        "drop_actions": drop,
        "messages": {kinds[0]: {"subject": "About your invoice", "body": "We will try again shortly."}},
    }
    r = svc.client.post(
        f"/api/approvals/{item['id']}/approve",
        headers=operator,
        json={"why": "customer called: retry now, offer the pause", "edits": edits},
    )
    assert r.status_code == 200, r.text
    assert r.json()["decided_by"].startswith("operator-")

    done = svc.decision(wf, status="recovered", timeout=60)
    assert done.plan["retries"] == [soon.isoformat()]
    assert done.plan["original"]["retries"] != done.plan["retries"], "the original plan is kept"
    assert (
        next(m for m in done.plan["messages"] if m["kind"] == kinds[0])["body"]
        == "We will try again shortly."
    )
    assert all(k.split(":", 1)[1] != "send_sms" for k in done.outcome if ":" in k)
    paused = [w for w in cb.writes() if w.endswith(f"/subscriptions/{SUBSCRIPTION}/pause")]
    assert paused, cb.writes()
    assert cb.pay_requests() and cb.invoice_paid()
    actions = svc.audit_actions(wf)
    assert (
        actions.index("approval.edited")
        < actions.index("approval.approved")
        < actions.index("action.pause_subscription")
    )
    with svc.rt.db.reader() as s:
        appr = s.scalar(sa.select(Approval).where(Approval.workflow_id == wf))
        assert appr.decided_by == r.json()["decided_by"] and appr.note.startswith("customer called")
        assert appr.edits["changes"][0].startswith("retries:")
        [label] = s.scalars(sa.select(FeedbackLabel).where(FeedbackLabel.workflow_id == wf)).all()
        assert label.label == "edited"

    # The human override is a training label, exported with the decision's features.
    out = CliRunner().invoke(cli, ["--database-url", svc.rt.settings.db_url, "feedback", "export"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    [row] = [x for x in rows if x["workflow_id"] == wf]
    assert row["label"] == "edited" and row["outcome"] == "recovered"
    assert row["features"]["decline_code"] == "insufficient_funds" and row["model_retries"]
    _audit_ok(svc)


def test_the_kill_switch_turns_new_decisions_to_shadow_and_stops_running_ones(
    cb: ChargebeeHarness, start: Callable[..., Service]
) -> None:
    svc = start("assist")
    admin, operator = auth_headers(svc.rt, "admin"), auth_headers(svc.rt, "operator")
    wf = cb.post_failure(svc.client)
    svc.awaiting(wf)

    # An operator cannot pull it; an admin can, and says why.
    assert svc.client.post("/api/controls/pause-all", json={"why": "x"}, headers=operator).status_code == 403
    r = svc.client.post("/api/controls/pause-all", json={"why": "gateway incident"}, headers=admin)
    assert r.status_code == 200 and r.json()["all_shadow"] is True
    assert svc.client.post("/api/controls/pause-all", json={"why": "again"}, headers=admin).status_code == 409

    # The waiting decision is approved, but nothing it planned runs while the switch is on.
    [item] = [a for a in svc.client.get("/api/approvals", headers=operator).json() if a["workflow_id"] == wf]
    assert (
        svc.client.post(f"/api/approvals/{item['id']}/approve", json={}, headers=operator).status_code == 200
    )

    def blocked() -> list[dict[str, Any]]:
        d = svc.decision(wf)
        return [v for v in d.outcome.values() if isinstance(v, dict) and v.get("status") == "blocked"]

    # Each action is stopped before it happens; the retry (48 h away) will be asked again at its time.
    wait_for(lambda: len(blocked()) >= 2, timeout=60)
    assert cb.writes() == []
    assert all("kill switch on" in b["why"] for b in blocked())
    assert "guardrail.kill_switch" in svc.audit_actions(wf)

    # A new failure while the switch is on: decided and recorded as shadow, with the reason.
    wf2 = cb.post_failure(svc.client)
    d2 = svc.decision(wf2, status="recorded")
    assert d2.mode == "shadow"
    assert "kill switch on" in d2.plan["governance"]["reasons"][-1]
    assert d2.plan["governance"]["forced_shadow"].startswith("kill switch on")

    r = svc.client.post("/api/controls/resume-all", json={"why": "incident over"}, headers=admin)
    assert r.status_code == 200 and r.json()["all_shadow"] is False
    wf3 = cb.post_failure(svc.client)
    assert svc.awaiting(wf3).mode == "assist"
    _audit_ok(svc)


def test_the_circuit_breaker_trips_to_shadow_loudly_and_an_admin_resets_it(
    cb: ChargebeeHarness, start: Callable[..., Service], caplog: pytest.LogCaptureFixture
) -> None:
    svc = start("auto", guardrails={"circuit_breaker": {"max_decisions_per_hour": 1}})
    first = cb.post_failure(svc.client)
    svc.decision(first)
    second = cb.post_failure(svc.client)  # two acting decisions in an hour: above the bound of 1

    def blocked() -> list[str]:
        d = svc.decision(second)
        return [
            str(v.get("why"))
            for v in d.outcome.values()
            if isinstance(v, dict) and v.get("status") == "blocked"
        ]

    wait_for(lambda: blocked(), timeout=60)
    assert all("circuit breaker tripped" in why for why in blocked())
    admin, viewer = auth_headers(svc.rt, "admin"), auth_headers(svc.rt, "viewer")
    state = svc.client.get("/api/controls", headers=viewer).json()
    assert state["circuit_breaker"]["why"] == "2 decisions in the last hour (bound 1)"
    assert any("CIRCUIT BREAKER TRIPPED" in r.getMessage() for r in caplog.records)
    with svc.rt.db.reader() as s:
        from billops.store.models import AuditRecord

        tripped = s.scalars(sa.select(AuditRecord).where(AuditRecord.action == "governance.breaker_tripped"))
        assert [t.outcome["decisions_last_hour"] for t in tripped] == [2]

    third = cb.post_failure(svc.client)
    assert svc.decision(third).mode == "shadow", "tripped: new decisions are shadow"
    assert (
        svc.client.post("/api/controls/breaker/reset", json={"why": "x"}, headers=viewer).status_code == 403
    )
    r = svc.client.post(
        "/api/controls/breaker/reset", json={"why": "looked at it: a test burst"}, headers=admin
    )
    assert r.status_code == 200 and r.json()["circuit_breaker"] is None
    _audit_ok(svc)


def test_an_amount_above_the_cap_waits_for_a_human_and_is_counted_when_done(
    cb: ChargebeeHarness, start: Callable[..., Service]
) -> None:
    svc = start("auto", guardrails={"amount_caps": {"per_action": {"*": 100}, "per_customer": {}}})
    wf = cb.post_failure(svc.client)
    d = svc.awaiting(wf)
    [g] = d.plan["governance"]["guardrails"]
    assert g["rule"] == "amount_cap_per_action"
    assert "above the per-action cap of" in g["reason"]
    assert "guardrail.amount_cap_per_action" in svc.audit_actions(wf)
    with svc.rt.db.reader() as s:
        appr = s.scalar(sa.select(Approval).where(Approval.workflow_id == wf))
        assert appr.guardrails[0]["rule"] == "amount_cap_per_action"
    _audit_ok(svc)


def test_a_policy_edited_on_disk_takes_effect_without_a_restart_and_is_recorded(
    cb: ChargebeeHarness, start: Callable[..., Service]
) -> None:
    svc = start("shadow")
    wf = cb.post_failure(svc.client)
    d1 = svc.decision(wf, status="recorded")
    path = svc.rt.settings.policy_file
    raw = yaml.safe_load(path.read_text())
    v1 = d1.versions["policy"]
    raw["version"] = "2026-11-22.99"
    raw["modes"] = {
        "recovery": {
            "default": "shadow",
            "segments": [
                {
                    "name": "all-chargebee",
                    "when": {"platforms": ["chargebee"], "rollout_percent": 100},
                    "mode": "assist",
                }
            ],
        }
    }
    path.write_text(yaml.safe_dump(raw))
    wf2 = cb.post_failure(svc.client)
    d2 = svc.awaiting(wf2)
    assert d2.versions["policy"].startswith("2026-11-22.99+") and d2.versions["policy"] != v1
    assert d2.plan["governance"]["segment"] == "all-chargebee"
    assert d2.plan["governance"]["reasons"][0].startswith("segment all-chargebee: platform chargebee")

    # A broken edit: decisions keep failing loudly? No: the API refuses it before it reaches the disk.
    admin = auth_headers(svc.rt, "admin")
    r = svc.client.put(
        "/api/policy", json={"text": "version: x\nmodes: {recovery: sometimes}\n"}, headers=admin
    )
    assert r.status_code == 422 and "modes.recovery" in r.text
    same = path.read_text()
    r = svc.client.put("/api/policy", json={"text": same.replace("shadow", "assist", 1)}, headers=admin)
    assert r.status_code == 422 and "bump `version`" in r.text
    r = svc.client.put(
        "/api/policy", json={"text": same.replace("2026-11-22.99", "2026-11-22.100")}, headers=admin
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "2026-11-22.100"
    assert wait_for(lambda: svc.rt.policy().version == "2026-11-22.100")
    with svc.rt.db.reader() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(GovernedAction)) == 0
    _audit_ok(svc)


def test_controls_from_the_cli(start: Callable[..., Service]) -> None:
    svc = start("shadow")
    url = svc.rt.settings.db_url
    runner = CliRunner()
    r = runner.invoke(cli, ["--database-url", url, "pause-all", "--why", "drill"])
    assert r.exit_code == 0, r.output
    with svc.rt.db.reader() as s:
        assert control.controls(s).kill_switch["why"] == "drill"
    r = runner.invoke(cli, ["--database-url", url, "pause-all", "--why", "again"])
    assert r.exit_code != 0 and "already on" in str(r.exception or r.output)
    r = runner.invoke(cli, ["--database-url", url, "resume-all", "--why", "drill over"])
    assert r.exit_code == 0, r.output
    with svc.rt.db.reader() as s:
        assert control.controls(s).shadow_reason is None
    _audit_ok(svc)


def _waiting_guardrails(svc: Service, wf: str, rule: str) -> list[dict[str, Any]]:
    from billops.store.models import AuditRecord

    def found() -> list[dict[str, Any]]:
        with svc.rt.db.reader() as s:
            recs = s.scalars(
                sa.select(AuditRecord).where(
                    AuditRecord.workflow_id == wf, AuditRecord.action == f"guardrail.{rule}"
                )
            )
            return [r.outcome for r in recs]

    return wait_for(found, timeout=60)  # type: ignore[no-any-return]


def test_quiet_hours_hold_a_message_in_its_own_workflow_and_say_until_when(
    cb: ChargebeeHarness, start: Callable[..., Service]
) -> None:
    now = datetime.now(UTC)
    quiet = {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=2)).strftime("%H:%M"),
        "channels": ["sms"],
        "default_timezone": "UTC",
    }
    svc = start("auto", guardrails={"quiet_hours": quiet})
    wf = cb.post_failure(svc.client)
    d = svc.decision(wf)
    assert any(a["type"] == "send_sms" for a in d.plan["actions"]), d.plan["actions"]
    [held] = _waiting_guardrails(svc, wf, "quiet_hours")
    assert held["action"] == "send_sms" and held["effect"] == "defer"
    assert f"inside quiet hours {quiet['start']}–{quiet['end']} for sms" in held["findings"][0]["reason"]
    assert held["not_before"].startswith((now + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"))
    # The email (not a quiet channel) and the platform actions went ahead meanwhile.
    wait_for(lambda: "1:write_note" in svc.decision(wf).outcome or "2:write_note" in svc.decision(wf).outcome)
    assert cb.writes(), "the rest of the plan did not wait for the SMS"
    _audit_ok(svc)


def test_a_rate_limit_defers_the_next_customer_facing_action(
    cb: ChargebeeHarness, start: Callable[..., Service]
) -> None:
    svc = start("auto", guardrails={"rate_limits": {"per_customer": {"max_actions": 1, "per_hours": 24}}})
    wf = cb.post_failure(svc.client)
    held = _waiting_guardrails(svc, wf, "rate_limit_customer")
    assert held[0]["effect"] == "defer"
    assert "1 actions for customer" in held[0]["findings"][0]["reason"]
    assert "(limit 1)" in held[0]["findings"][0]["reason"]
    _audit_ok(svc)


def test_edit_then_approve_from_the_cli(cb: ChargebeeHarness, start: Callable[..., Service]) -> None:
    svc = start("assist")
    wf = cb.post_failure(svc.client)
    svc.awaiting(wf)
    url = svc.rt.settings.db_url
    runner = CliRunner()
    shown = runner.invoke(cli, ["--database-url", url, "approvals", "show", wf])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["workflow_id"] == wf
    bad = runner.invoke(cli, ["--database-url", url, "approvals", "approve", wf, "--retry", "tomorrow"])
    assert bad.exit_code != 0 and "--retry" in str(bad.exception)
    soon = (datetime.now(UTC) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = runner.invoke(
        cli,
        [
            "--database-url",
            url,
            "approvals",
            "approve",
            wf,
            "--retry",
            soon,
            "--drop",
            "send_sms",
            "--why",
            "agreed on the phone",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "approved (edited)" in r.output
    done = svc.decision(wf, status="recovered", timeout=60)
    assert done.plan["retries"] == [soon.replace("Z", "+00:00")]
    assert "send_sms" not in {a["type"] for a in done.plan["actions"]}
    _audit_ok(svc)
