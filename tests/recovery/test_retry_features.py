"""The retry model's time features against their definitions, computed the slow and obvious way: local
calendar fields per row with zoneinfo, the customer's paying-day distances by walking the calendar,
the history as of a time, and the plan probability of many plans at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from billops.recovery.retry_features import CustomerHistory, _payday_tables, local_fields

ZONES = ["", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu", "Not/AZone"]


def _expected(t: datetime, zone: str) -> tuple[int, int, int, int, int]:
    try:
        local = t.replace(tzinfo=UTC).astimezone(ZoneInfo(zone)) if zone else t
    except Exception:  # unknown zone: UTC
        local = t
    first = local.replace(day=1)
    nxt = (first + timedelta(days=32)).replace(day=1)
    prev = (first - timedelta(days=1)).replace(day=1)
    return local.hour, local.weekday(), local.day, (nxt - first).days, (first - prev).days


@pytest.mark.parametrize("span_days", [20, 3000], ids=["a planning window", "years of history"])
def test_local_fields_match_zoneinfo_row_by_row_across_dst(span_days: int) -> None:
    rng = np.random.default_rng(span_days)
    n = 3000
    base = np.datetime64("2026-03-01T00:00:00")  # DST starts and ends inside the shorter span too
    secs = rng.integers(0, span_days * 86400, n)
    at = base + secs.astype("timedelta64[s]")
    codes = rng.integers(0, len(ZONES), n)
    got = local_fields(at, codes, ZONES)
    for r in range(0, n, 7):
        t = datetime.fromisoformat(str(at[r]))
        want = _expected(t, ZONES[codes[r]])
        have = tuple(int(got[k][r]) for k in ("hour", "weekday", "day", "dim", "pdim"))
        assert have == want, (str(at[r]), ZONES[codes[r]])


def _brute_payday(mask: int, day: int, pdim: int) -> tuple[float, float]:
    days = [b + 1 for b in range(31) if mask >> b & 1]
    if not days:
        return np.nan, np.nan
    dist = min(min(abs(day - d), 31 - abs(day - d)) for d in days)
    since = np.nan
    for k in range(31):  # walk back from the day, into the previous month of `pdim` days
        dom = day - k if day - k >= 1 else day - k + pdim
        if 1 <= dom <= 31 and dom in days:
            since = float(k)
            break
        if dom < 1 and 1 in days:  # the previous month is shorter than the walk: clipped to its 1st
            since = float(k)
            break
    return float(dist), since


def test_paying_day_tables_match_a_walk_over_the_calendar() -> None:
    rng = np.random.default_rng(3)
    masks = np.unique(
        np.concatenate(
            [[0, 1, 1 << 30, (1 << 31) - 1], rng.integers(0, 1 << 31, 60), 1 << rng.integers(0, 31, 20)]
        )
    )
    dist, since = _payday_tables(masks)
    for u, mask in enumerate(masks):
        for day in range(1, 32):
            for p, pdim in enumerate(range(28, 32)):
                want_d, want_s = _brute_payday(int(mask), day, pdim)
                np.testing.assert_equal(dist[u, day - 1], want_d)
                np.testing.assert_equal(since[u, day - 1, p], want_s)


def test_history_as_of_counts_strictly_before_and_knows_no_stranger() -> None:
    t0 = datetime(2026, 1, 5, 12, tzinfo=UTC)
    rows = []
    for j, outcome in enumerate(["failed", "succeeded", "succeeded"]):
        rows.append(
            {
                "customer_id": "cus_a",
                "invoice_id": "in_1" if j < 2 else "in_2",
                "attempted_at": t0 + timedelta(days=j),
                "outcome": outcome,
                "customer_timezone": "Europe/London",
            }
        )
    h = CustomerHistory.build(pd.DataFrame(rows))
    q = h.as_of(
        pd.Series(["cus_a", "cus_a", "cus_b"]),
        pd.Series([t0 + timedelta(days=1), t0 + timedelta(days=1, seconds=1), t0 + timedelta(days=9)]),
    )
    assert q["past_successes"].tolist() == [0, 1, 0]
    assert q["past_failures"].tolist() == [1, 1, 0]
    assert q["past_retry_successes"].tolist() == [0, 1, 0]  # the second attempt of in_1 was a retry
    assert q["dom_mask"].tolist() == [0, 1 << 5, 0]  # it succeeded on the 6th, local time
    assert q["rs5"].tolist() == [0, 1, 0] and q["rf5"].sum() == 0


def test_plan_probabilities_of_many_plans_equal_one_at_a_time() -> None:
    from billops.recovery.model import RecoveryModel

    model = RecoveryModel(
        path=None,  # type: ignore[arg-type]
        manifest={"version": "t"},
        booster=None,
        knots_x=np.array([0.0, 1.0]),
        knots_y=np.array([0.0, 1.0]),
        plan_x=np.array([0.0, 0.5, 1.0]),
        plan_y=np.array([0.0, 0.4, 0.9]),
        attempt_thresholds=np.array([]),
        curse_x=np.array([0.0, 1.0]),
        curse_y=np.array([0.0, 0.8]),
    )
    plans = [[0.5, 0.2], [], [0.9], [0.1, 0.1, 0.3, 0.05], [1.0]]
    many = model.plan_probabilities(plans)
    assert many[1] == 0.0
    for q, p in zip(plans, many, strict=True):
        assert p == pytest.approx(model.plan_probability(q), abs=1e-12)
        raw = 1.0 - float(np.prod([1.0 - v for v in q])) if q else 0.0
        want = (
            np.interp(np.interp(raw, model.curse_x, model.curse_y), model.plan_x, model.plan_y) if q else 0.0
        )
        assert p == pytest.approx(want, abs=1e-12)
