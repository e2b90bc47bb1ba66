"""The recovery workflow with exploration on: an auto-mode decision whose key draws exploration records
the explored retry time, its propensity and the planner's own times on the stored plan and in the
`recovery.decided` audit record; a human (assist) would see it marked exploratory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.governance.audit import verify
from billops.recovery.explore import draws, exploration_key
from billops.recovery.model import register
from billops.store.models import AuditRecord
from support.scenario import Failure
from support.service import Service
from support.trained import Trained

SHARE = 0.2  # the policy's upper bound


def exploring_invoice() -> str:
    """An invoice id whose first plan draws exploration at SHARE (the draw is a pure function of it)."""
    for i in range(1000):
        invoice = f"in_texplore{i:04d}"
        if draws(exploration_key("stripe", invoice, 1))[0] < SHARE:
            return invoice
    raise AssertionError("no exploring key in 1000")  # pragma: no cover - P = 0.8^1000


def test_an_auto_decision_records_its_exploration(
    trained: Trained,
    database_url: str,
    settings_factory: Any,
    runtime_factory: Any,
    make_policy: Callable[..., Path],
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    register(trained.model, data_dir)
    policy_file = make_policy(
        modes={"recovery": "auto"},
        recovery={"context_wait_seconds": 3, "exploration_share": SHARE},
    )
    settings = settings_factory(database_url, policy_file=policy_file, data_dir=data_dir)
    svc = Service(TestClient(create_app(settings, manage_runtime=False)), runtime_factory(settings))

    wf = svc.fail(Failure(decline_code="insufficient_funds", invoice=exploring_invoice()).events())
    d = svc.decision(wf)
    assert d.mode == "auto" and d.versions["scorer"] == trained.model.version
    ex = d.plan["exploration"]
    assert ex["explored"] is True and ex["share"] == SHARE and ex["options"] > 0
    assert abs(ex["propensity"] - SHARE / ex["options"]) < 1e-12
    retries = [datetime.fromisoformat(t) for t in d.plan["retries"]]
    greedy = [datetime.fromisoformat(t) for t in ex["greedy_retries"]]
    assert retries[0] != greedy[0] and retries[1:] == greedy[1:]
    pays = [a for a in d.plan["actions"] if a["type"] == "retry_payment"]
    assert datetime.fromisoformat(pays[0]["at"]) == retries[0], "the explored time is the one executed"
    assert any(r.startswith("exploratory: first retry moved") for r in d.plan["reasons"])
    with svc.rt.db.reader() as s:
        decided = s.scalar(
            sa.select(AuditRecord.outcome).where(
                AuditRecord.workflow_id == wf, AuditRecord.action == "recovery.decided"
            )
        )
        assert decided is not None and decided["exploration"] == ex
        assert verify(s).ok
