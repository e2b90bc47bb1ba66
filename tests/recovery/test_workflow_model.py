"""The recovery workflow with a registered model: the model decides and is recorded as the decider,
the policy can force rules-v1, a model that cannot be used falls back loudly, and a failed retry is
re-planned with the new decline."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.governance.audit import verify
from billops.platforms.stripe.normalize import normalize_event
from billops.recovery import steps
from billops.recovery.model import register
from billops.store.models import AuditRecord
from support.scenario import Failure
from support.service import Service
from support.trained import Trained


@pytest.fixture
def start(
    trained: Trained,
    database_url: str,
    settings_factory: Any,
    runtime_factory: Any,
    make_policy: Callable[..., Any],
    tmp_path: Path,
) -> Callable[..., Service]:
    def _start(model: str = "latest", registered: bool = True) -> Service:
        data_dir = tmp_path / "data"
        if registered:
            register(trained.model, data_dir)
        policy_file = make_policy(recovery={"context_wait_seconds": 3, "model": model})
        settings = settings_factory(database_url, policy_file=policy_file, data_dir=data_dir)
        rt = runtime_factory(settings)
        return Service(TestClient(create_app(settings, manage_runtime=False)), rt)

    return _start


def test_the_latest_model_decides_and_is_recorded(start: Callable[..., Service], trained: Trained) -> None:
    svc = start()
    wf = svc.fail(Failure(decline_code="insufficient_funds", brand="visa").events())
    d = svc.decision(wf, status="recorded")
    version = trained.model.version
    assert d.versions["scorer"] == version and d.versions["model"] == version
    plan = d.plan
    assert plan["scorer"] == version
    assert plan["retries"], "a soft decline gets learned retry times"
    assert len(plan["retries"]) <= 4  # the policy's max_retries
    assert d.score == round(100 * plan["features"]["recovery_probability"])
    assert sum("log-odds" in r for r in plan["reasons"]) == 3
    with svc.rt.db.reader() as s:
        actor = s.scalar(sa.select(AuditRecord.actor).where(AuditRecord.workflow_id == wf))
        assert actor == version
        assert verify(s).ok


def test_policy_can_force_the_rules_scorer(start: Callable[..., Service]) -> None:
    svc = start(model="rules")
    wf = svc.fail(Failure(decline_code="insufficient_funds").events())
    d = svc.decision(wf, status="recorded")
    assert d.versions["scorer"] == "rules-v1" and "model" not in d.versions
    assert any("rules-v1 decided" in n for n in d.plan["context_notes"])


def test_no_registered_model_means_rules_recorded_as_such(start: Callable[..., Service]) -> None:
    svc = start(registered=False)
    wf = svc.fail(Failure(decline_code="do_not_honor").events())
    d = svc.decision(wf, status="recorded")
    assert d.versions["scorer"] == "rules-v1"
    assert any("no recovery model registered" in n for n in d.plan["context_notes"])


def test_a_model_that_cannot_be_loaded_falls_back_loudly(
    start: Callable[..., Service], trained: Trained, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(trained.path, broken)
    (broken / "model.txt").write_text("garbage")
    svc = start(model=str(broken), registered=False)
    wf = svc.fail(Failure(decline_code="insufficient_funds").events())
    d = svc.decision(wf, status="recorded")
    assert d.versions["scorer"] == "rules-v1"
    notes = " ".join(d.plan["context_notes"])
    assert "cannot be used" in notes and "digest mismatch" in notes


def test_a_failed_retry_is_replanned_with_the_new_decline(
    start: Callable[..., Service], trained: Trained
) -> None:
    svc = start()
    first = Failure(decline_code="insufficient_funds", brand="mastercard")
    wf = svc.fail(first.events())
    d = svc.decision(wf, status="recorded")
    # The first retry failed too, now with a transient decline (a second charge on the same invoice).
    again = Failure(
        decline_code="processing_error",
        failure_code="processing_error",
        brand="mastercard",
        customer=first.customer,
        invoice=first.invoice,
        attempt_count=2,
        fingerprint=first.fingerprint,
        at=first.at + 3600 * 26,
    )
    for e in again.events():
        svc.post(e)
    event = normalize_event(again.invoice_failed()).model_dump(mode="json")
    deadline = time.monotonic() + 20
    while True:
        gathered = steps.gather_context(event, False)
        if gathered["context"]["decline"]["code"] == "processing_error" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    result = steps.replan(wf, 1, gathered["context"])
    assert result["model"] == trained.model.version and result["decline_code"] == "processing_error"
    assert result["retries"] is not None and len(result["retries"]) <= 3  # 4 in all, one spent
    again_result = steps.replan(wf, 1, gathered["context"])
    assert again_result == result, "a replayed step returns what it stored"
    # The second failure joins the invoice's episode (recovery.failure_recorded, from its own event's
    # workflow, so in either order with the re-plan); the re-plan is recorded once.
    actions = svc.audit_actions(wf)
    assert actions[0] == "recovery.decided" and actions.count("recovery.replanned") == 1, actions
    assert set(actions) <= {"recovery.decided", "recovery.replanned", "recovery.failure_recorded"}, actions
    assert actions.count("recovery.failure_recorded") <= 1, actions
    with svc.rt.db.reader() as s:
        assert verify(s).ok
    assert d.plan["retries"] != result["retries"]
