"""One decision per invoice episode: later failures of the same invoice (the platform's own retries) are
recorded on the episode's decision in shadow, assist and auto mode; racing events open one decision; the
KPIs count the invoice once (docs/recovery.md, "One decision per invoice episode")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.governance.kpis import compute_kpis
from billops.store.models import AuditRecord, Decision
from support.helpers import wait_for, workflow_status
from support.scenario import Failure
from support.service import Service


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
        return Service(TestClient(create_app(settings, manage_runtime=False)), rt)

    return _start


def _done(svc: Service, wf: str) -> None:
    wait_for(lambda: workflow_status(svc.rt, wf) == "SUCCESS")


def _decisions(svc: Service) -> list[Decision]:
    with svc.rt.db.reader() as s:
        return list(s.scalars(sa.select(Decision)))


def _check_once(svc: Service, f: Failure, attempts: int) -> Decision:
    decs = _decisions(svc)
    assert len(decs) == 1, [d.workflow_id for d in decs]
    d = decs[0]
    assert d.episode_key == f"stripe:{f.invoice}:1"
    assert d.outcome["episode"]["attempts"] == attempts
    with svc.rt.db.reader() as s:
        recorded = s.scalars(
            sa.select(AuditRecord).where(AuditRecord.action == "recovery.failure_recorded")
        ).all()
        assert len(recorded) == attempts - 1
        now = datetime.now(UTC)
        k = compute_kpis(s, now - timedelta(days=1), now + timedelta(days=1))
    usd = k["currencies"]["usd"]
    assert usd["decisions"] == 1 and usd["failed_amount"] == f.amount  # counted once, not ×attempts
    return d


@pytest.mark.parametrize("mode", ["shadow", "assist", "auto"])
def test_three_failures_of_one_invoice_make_one_decision(service: Callable[..., Service], mode: str) -> None:
    svc = service(mode)
    f = Failure(amount=21900)
    wf = svc.fail(f.events())
    svc.decision(wf)
    for _ in range(2):  # the platform's own retries fail again: new events, same invoice
        again = svc.post(f.invoice_failed())
        _done(svc, str(again["workflow_id"]))
    d = _check_once(svc, f, 3)
    assert d.workflow_id == wf


def test_racing_failures_of_one_invoice_open_one_decision(service: Callable[..., Service]) -> None:
    svc = service("shadow")
    f = Failure()
    first = svc.post(f.charge_failed())
    a = svc.post(f.invoice_failed())
    b = svc.post(f.invoice_failed())  # before the first recovery has decided
    for r in (first, a, b):
        _done(svc, str(r["workflow_id"]))
    decs = _decisions(svc)
    assert len(decs) == 1
    assert decs[0].outcome["episode"]["attempts"] == 2  # the second waited for the first's decision


def test_a_failure_after_the_window_opens_the_next_episode(service: Callable[..., Service]) -> None:
    svc = service("shadow")
    f = Failure()
    wf = svc.fail(f.events())
    svc.decision(wf, status="recorded")
    with svc.rt.db.session() as s:  # the first episode's window is over
        s.execute(sa.update(Decision).values(created_at=datetime.now(UTC) - timedelta(days=90)))
    again = svc.post(f.invoice_failed())
    _done(svc, str(again["workflow_id"]))
    keys = sorted(str(d.episode_key) for d in _decisions(svc))
    assert keys == [f"stripe:{f.invoice}:1", f"stripe:{f.invoice}:2"]


def test_duplicate_episode_key_is_refused_by_the_database(service: Callable[..., Service]) -> None:
    svc = service("shadow")
    f = Failure()
    wf = svc.fail(f.events())
    d = svc.decision(wf, status="recorded")
    with pytest.raises(sa.exc.IntegrityError), svc.rt.db.session() as s:
        s.execute(
            sa.insert(Decision).values(
                workflow_id="other",
                platform="stripe",
                invoice_id=f.invoice,
                event_id="e",
                amount=1,
                currency="usd",
                route="auto_retry",
                score=1,
                mode="shadow",
                status="recorded",
                plan={},
                versions={},
                trace_id="t",
                outcome={},
                episode_key=d.episode_key,
                created_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
            )
        )
