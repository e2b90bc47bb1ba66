"""KPIs from decisions and approvals inserted by hand, on SQLite and PostgreSQL: exact sums per currency,
per route and mode, per day, and the API's date-range handling and role check."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.governance import users
from billops.governance.kpis import compute_kpis, parse_range, range_bounds
from billops.runtime import Runtime, start_runtime, stop_runtime
from billops.store.models import Approval, Decision

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def _decision(
    n: int, at: datetime, amount: int, currency: str, route: str, mode: str, status: str
) -> Decision:
    return Decision(
        workflow_id=f"stripe:evt_{n}",
        platform="stripe",
        invoice_id=f"in_{n}",
        customer_id=f"cus_{n}",
        event_id=f"evt_{n}",
        amount=amount,
        currency=currency,
        route=route,
        score=50,
        mode=mode,
        status=status,
        plan={},
        versions={},
        trace_id="t",
        created_at=at,
        updated_at=at,
    )


ROWS = [
    # n, at, amount, currency, route, mode, status
    (1, T0, 4900, "usd", "auto_retry", "auto", "recovered"),
    (2, T0 + timedelta(hours=3), 1000, "usd", "retry_and_notify", "assist", "awaiting_approval"),
    (3, T0 + timedelta(days=1), 2500, "usd", "retry_and_notify", "auto", "recovered"),
    (4, T0 + timedelta(days=1, hours=1), 7000, "eur", "no_retry", "shadow", "recorded"),
    (5, T0 + timedelta(days=2), 300, "eur", "auto_retry", "auto", "recovered"),
    (6, T0 - timedelta(days=5), 99999, "usd", "auto_retry", "auto", "recovered"),  # outside the range
    (7, T0 + timedelta(days=3, hours=11, minutes=59), 100, "jpy", "human_review", "assist", "rejected"),
]


@pytest.fixture
def rt(database_url: str, settings_factory: Any) -> Iterator[Runtime]:
    runtime = start_runtime(settings_factory(database_url), launch_dbos=False)
    with runtime.db.session() as s:
        for row in ROWS:
            s.add(_decision(*row))
        s.add(
            Approval(
                workflow_id="stripe:evt_2",
                status="pending",
                reason_for_review="assist mode",
                requested_at=T0 + timedelta(hours=3),
                expires_at=T0 + timedelta(days=3),
            )
        )
        s.add(
            Approval(
                workflow_id="stripe:evt_7",
                status="rejected",
                reason_for_review="assist mode",
                requested_at=T0,
                expires_at=T0 + timedelta(days=3),
            )
        )
        s.add(
            Approval(
                workflow_id="stripe:evt_x",
                status="pending",
                reason_for_review="assist mode",
                requested_at=T0 + timedelta(hours=9),
                expires_at=T0 + timedelta(days=3),
            )
        )
    yield runtime
    stop_runtime()


def test_kpis_exact_sums(rt: Runtime) -> None:
    since, until = range_bounds(date(2026, 11, 10), date(2026, 11, 13))
    now = T0 + timedelta(hours=12)
    with rt.db.reader() as s:
        k = compute_kpis(s, since, until, now=now)
    assert k["decisions"] == 6
    assert k["currencies"]["usd"] == {
        "decisions": 3,
        "failed_amount": 4900 + 1000 + 2500,
        "recovered_amount": 4900 + 2500,
        "recovered_count": 2,
        "recovery_rate": round(7400 / 8400, 4),
    }
    assert k["currencies"]["eur"] == {
        "decisions": 2,
        "failed_amount": 7300,
        "recovered_amount": 300,
        "recovered_count": 1,
        "recovery_rate": round(300 / 7300, 4),
    }
    assert k["currencies"]["jpy"]["recovery_rate"] == 0.0
    assert k["by_route"] == {"auto_retry": 2, "human_review": 1, "no_retry": 1, "retry_and_notify": 2}
    assert k["by_mode"] == {"assist": 2, "auto": 3, "shadow": 1}
    assert k["by_route_mode"]["retry_and_notify"] == {"assist": 1, "auto": 1}
    assert k["by_status"]["recovered"] == 3
    # Approvals waiting: the two pending ones, aged 9 h and 3 h at `now`.
    assert k["approvals"] == {"waiting": 2, "oldest_age_seconds": 9 * 3600, "median_age_seconds": 6 * 3600}
    days = {d["day"]: d for d in k["daily"]}
    assert list(days) == ["2026-11-10", "2026-11-11", "2026-11-12", "2026-11-13"]
    assert days["2026-11-10"] == {
        "day": "2026-11-10",
        "decisions": 2,
        "failed": {"usd": 5900},
        "recovered": {"usd": 4900},
    }
    assert days["2026-11-11"]["failed"] == {"usd": 2500, "eur": 7000}
    assert days["2026-11-11"]["recovered"] == {"usd": 2500, "eur": 0}
    assert days["2026-11-12"]["recovered"] == {"eur": 300}
    assert days["2026-11-13"]["failed"] == {"jpy": 100}  # 23:59 UTC still counts on its own day
    assert sum(d["decisions"] for d in k["daily"]) == k["decisions"]


def test_kpis_empty_range(rt: Runtime) -> None:
    with rt.db.reader() as s:
        k = compute_kpis(s, *range_bounds(date(2025, 1, 1), date(2025, 1, 2)))
    assert k["decisions"] == 0 and k["currencies"] == {} and len(k["daily"]) == 2
    assert all(d["decisions"] == 0 for d in k["daily"])


def test_parse_range() -> None:
    today = date(2026, 11, 22)
    assert parse_range(None, None, today=today) == (date(2026, 10, 24), today)
    assert parse_range("2026-11-01", "2026-11-01", today=today) == (date(2026, 11, 1), date(2026, 11, 1))
    with pytest.raises(ValueError, match="is not a date"):
        parse_range("11/01/2026", None, today=today)
    with pytest.raises(ValueError, match="after until"):
        parse_range("2026-11-05", "2026-11-01", today=today)
    with pytest.raises(ValueError, match="at most 366 days"):
        parse_range("2024-01-01", "2026-01-01", today=today)


def test_kpis_api(rt: Runtime) -> None:
    with rt.db.session() as s:
        users.create_user(s, "vera", "viewer", None, by="test")
        _, token = users.issue_token(s, "vera", "t", days=1, max_days=30, by="test")
    client = TestClient(create_app(rt.settings, manage_runtime=False))
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/kpis").status_code == 401
    r = client.get("/api/kpis?since=2026-11-10&until=2026-11-13", headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["currencies"]["usd"]["failed_amount"] == 8400 and body["decisions"] == 6
    assert body["since"].startswith("2026-11-10T00:00") and body["until"].startswith("2026-11-14T00:00")
    bad = client.get("/api/kpis?since=yesterday", headers=auth)
    assert bad.status_code == 422 and "since='yesterday' is not a date" in bad.json()["detail"]
    rev = client.get("/api/kpis?since=2026-11-13&until=2026-11-10", headers=auth)
    assert rev.status_code == 422 and "is after until" in rev.json()["detail"]
    default = client.get("/api/kpis", headers=auth).json()
    assert len(default["daily"]) == 30
