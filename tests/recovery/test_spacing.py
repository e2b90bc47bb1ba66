"""Spacing and paydays from retries (issue 15): a retry soon after a failed one meets the same state,
and a customer's own retries, won and lost, show on which days of the month they can pay. Training
learns the spacing factor per decline category from out-of-fold probabilities; the planner's dynamic
programme spreads retries where the factor says clustering wastes them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from billops.recovery.plan_dp import choose_retries
from billops.recovery.spacing import LOW, MIN_ROWS, POOLED, fit_spacing, spacing_factor
from billops.recovery.training import train

# One customer's card and account, as every ATTEMPTS row of these tests carries them.
_PAYER = {
    "amount": 4900,
    "currency": "usd",
    "network_advice_code": "",
    "card_brand": "visa",
    "card_funding": "debit",
    "card_country": "US",
    "card_exp_month": 12,
    "card_exp_year": 2031,
    "customer_timezone": "UTC",
}


def _attempts(rows: list[dict[str, object]]) -> pd.DataFrame:
    h = pd.DataFrame(rows)
    h["attempted_at"] = pd.to_datetime(h["attempted_at"], utc=True)
    h["customer_created_at"] = pd.to_datetime(h["customer_created_at"], utc=True)
    return h


def test_the_factor_is_learned_per_category_and_rises_with_the_gap() -> None:
    rng = np.random.default_rng(3)
    n = 6000
    cats = np.where(rng.random(n) < 0.5, "soft", "try_later")
    gap = np.exp(rng.uniform(np.log(2), np.log(170), n))
    p = np.full(n, 0.2)
    # soft: a retry within a day of a failed one succeeds at a quarter of the model's average, later
    # ones at 1.5 times; try_later: no spacing effect at all.
    true = np.where(cats == "soft", np.where(gap < 24, 0.05, 0.3), 0.2)
    y = (rng.random(n) < true).astype(float)
    out = fit_spacing(cats, np.full(n, 4.0), gap, y, p)
    assert set(out["curves"]) == {POOLED, "soft", "try_later"}
    g = spacing_factor(
        out, np.array(["soft"] * 3 + ["try_later"] * 2), np.array([4.0, 12.0, 120.0, 4.0, 120.0])
    )
    assert g[0] < 0.45 and g[1] < 0.45 and g[2] > 1.3, g
    assert abs(g[3] - 1.0) < 0.2 and abs(g[4] - 1.0) < 0.2, g
    assert np.all(np.diff(out["curves"]["soft"][1]) >= 0)  # non-decreasing in the gap
    # A category training never saw uses the pooled curve.
    assert spacing_factor(out, np.array(["needs_new_card"]), np.array([4.0]))[0] < 1.0


def test_too_few_rows_or_first_retries_only_learn_nothing() -> None:
    n = MIN_ROWS - 1
    few = fit_spacing(np.array(["soft"] * n), np.full(n, 3.0), np.full(n, 5.0), np.zeros(n), np.full(n, 0.1))
    assert few["curves"] == {} and "only" in few["why"]
    firsts = fit_spacing(
        np.array(["soft"] * 5000), np.full(5000, 2.0), np.full(5000, 5.0), np.zeros(5000), np.full(5000, 0.1)
    )
    assert firsts["curves"] == {}
    assert np.all(spacing_factor(few, np.array(["soft", "soft"]), np.array([1.0, 500.0])) == 1.0)
    assert np.all(spacing_factor(None, np.array(["soft"]), np.array([1.0])) == 1.0)
    assert LOW > 0


def _dp(spacing: dict | None, replan: bool = False) -> list[int]:
    t = 16  # sixteen hourly blocks, each as good as the next
    prob = np.full((1, 4, t), 0.3)
    picks = choose_retries(
        prob,
        np.ones((1, t), dtype=bool),
        np.arange(t, dtype=float)[None, :],
        np.array([1.0]),
        amount=np.array([10000.0]),
        cost=np.array([30.0]),
        discount=np.clip(1.0 - 0.01 * np.arange(t)[None, :] / 24.0, 0.5, 1.0),
        gap=np.array([1]),
        min_p=0.0,
        spacing=spacing,
        categories=np.array(["soft"]),
        replan=np.array([replan]),
    )
    return [int(j[0]) for i, j, _q in zip(*picks, strict=True) if len(i)]


def test_the_programme_spreads_retries_only_where_the_factor_says_so() -> None:
    assert _dp(None) == [0, 1, 2, 3]  # no spacing effect: the earliest blocks (a slight time preference)
    close_costs = {"curves": {POOLED: [[1.0, 3.0, 4.0], [0.1, 0.1, 1.0]]}}  # under 4 h apart: a tenth
    picks = _dp(close_costs)
    assert len(picks) == 4 and picks[0] == 0, picks
    assert all(b - a >= 4 for a, b in itertools.pairwise(picks)), picks
    # A re-plan's first pick is spaced from the failed retry too (1 h before the window opens).
    assert _dp(close_costs, replan=True)[0] >= 3


def test_training_stores_spacing_curves_and_plans_use_them(tmp_path: Path) -> None:
    """Every retry within 6 hours of a failed one fails; the ones a few days later succeed often."""
    rng = np.random.default_rng(5)
    start = datetime(2025, 1, 6, tzinfo=UTC)
    rows: list[dict[str, object]] = []
    for c in range(1500):
        day0 = start + timedelta(days=int(rng.integers(0, 300)))
        common = {
            **_PAYER,
            "invoice_id": f"in_{c}",
            "customer_id": f"cus_{c}",
            "customer_created_at": start - timedelta(days=300),
        }
        t = day0
        rows.append(
            {
                **common,
                "attempt_id": f"a{c}_0",
                "attempted_at": t,
                "outcome": "failed",
                "decline_code": "do_not_honor",
            }
        )
        for k in range(5):
            gap_h = float(rng.choice([2.0, 4.0, 72.0, 96.0]))
            t = t + timedelta(hours=gap_h)
            ok = k > 0 and gap_h > 24 and rng.random() < 0.5
            rows.append(
                {
                    **common,
                    "attempt_id": f"a{c}_{k + 1}",
                    "attempted_at": t,
                    "outcome": "succeeded" if ok else "failed",
                    "decline_code": "" if ok else "do_not_honor",
                }
            )
            if ok:
                break
    model, _ = train(_attempts(rows), out=tmp_path / "m", source="spacing")
    sp = model.manifest["spacing"]
    assert sp["rows"] > MIN_ROWS and "soft" in sp["curves"]
    g = spacing_factor(sp, np.array(["soft", "soft"]), np.array([3.0, 80.0]))
    assert g[0] < 0.5 < 1.2 < g[1], g
    assert model.manifest["sequence_model"]["features"] == [
        "prior_expected_successes",
        "hours_since_previous_attempt",
    ]


def test_a_customers_paydays_show_in_their_retries_won_and_lost() -> None:
    """dom_retry_success_rate: this customer's earlier retries within 2 days of month of the candidate,
    the share that succeeded; failures count, and only what came before the failure."""
    from billops.recovery.model import FEATURES, CustomerHistory, build_vocab, feature_matrix, prepare

    base = {**_PAYER, "customer_id": "cus_1", "customer_created_at": datetime(2024, 1, 1, tzinfo=UTC)}
    rows = []
    for m in range(1, 7):  # each month: fails on the 3rd, retries fail on the 5th, succeed on the 25th
        inv = f"in_{m}"
        for day, ok in ((3, False), (5, False), (25, True)):
            rows.append(
                {
                    **base,
                    "invoice_id": inv,
                    "attempt_id": f"a{m}{day}",
                    "attempted_at": datetime(2025, m, day, 12, tzinfo=UTC),
                    "outcome": "succeeded" if ok else "failed",
                    "decline_code": "" if ok else "insufficient_funds",
                }
            )
    # A later retry on the 25th that failed, after the failure being planned: must not count.
    rows.append(
        {
            **base,
            "invoice_id": "in_9",
            "attempt_id": "late",
            "attempted_at": datetime(2025, 9, 25, tzinfo=UTC),
            "outcome": "failed",
            "decline_code": "insufficient_funds",
        }
    )
    h = _attempts(rows)
    first = datetime(2025, 8, 3, 12, tzinfo=UTC)
    cand = [datetime(2025, 8, d, 12, tzinfo=UTC) for d in (26, 6, 15)]
    q = pd.DataFrame(
        [
            {
                **base,
                "invoice_id": "in_new",
                "decline_code": "insufficient_funds",
                "first_failed_at": first,
                "at": t,
                "attempt_number": 2,
            }
            for t in cand
        ]
    )
    prepared = prepare(q, CustomerHistory.build(h))
    x = feature_matrix(prepared, build_vocab(prepared, min_count=1))
    col = FEATURES.index("dom_retry_success_rate")
    assert x[0, col] == 1.0  # the 26th: within 2 days of the 25th, where six retries succeeded
    assert x[1, col] == 0.0  # the 6th: near the 5th, where six retries failed
    assert np.isnan(x[2, col])  # the 15th: no retry within 2 days of month
