"""Bounded exploration of retry times (recovery/explore.py): deterministic from its key, inside the
network rules, with the propensities its labels and importance weights rest on."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import yaml

from billops.config import DEFAULT_POLICY_FILE
from billops.errors import ConfigError
from billops.policy import parse_policy
from billops.recovery.explore import draws, exploration_key, explore, feasible_hours
from billops.recovery.labels import example_weights, ips_value, retry_label
from billops.recovery.planner import _cap_violation, load_network_rules
from billops.recovery.timing_plan import TimingPlan

RULES = load_network_rules()
FAILED = datetime(2026, 12, 1, 10, tzinfo=UTC)
H = timedelta(hours=1)


def plan(*hours: int, category: str = "soft", blocked: str | None = None) -> TimingPlan:
    times = [FAILED + h * H for h in hours]
    return TimingPlan("in_1", times, [0.3] * len(times), 0.5, category, blocked=blocked, reasons=["r"])


def run(p: TimingPlan, share: float, key: str = "k", **kw: object) -> TimingPlan:
    args: dict = {"earliest": FAILED + 4 * H, "deadline": FAILED + timedelta(days=21), "rules": RULES}
    return explore(p, share=share, key=key, **{**args, **kw})


def test_same_key_same_plan_and_the_input_is_untouched() -> None:
    p = plan(24, 96)
    a, b = run(p, 1.0, "x"), run(p, 1.0, "x")
    assert a.retries == b.retries and a.propensity == b.propensity
    assert p.retries == [FAILED + 24 * H, FAILED + 96 * H] and not p.explored
    assert {run(p, 1.0, f"k{i}").retries[0] for i in range(20)} != {a.retries[0]}, "keys differ, draws differ"


def test_draws_are_the_same_in_another_process() -> None:
    key = exploration_key("stripe", "in_abc", 2)
    code = f"from billops.recovery.explore import draws; print(repr(draws({key!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == repr(draws(key))
    assert key != exploration_key("stripe", "in_abc", 3), "a re-plan draws again"


def test_share_zero_changes_nothing() -> None:
    p = plan(24, 96)
    for i in range(50):
        q = run(p, 0.0, f"k{i}")
        assert q.retries == p.retries and not q.explored
        assert q.propensity == 1.0 and q.greedy_retries == p.retries and q.share == 0.0
        assert q.reasons == p.reasons


def test_share_one_always_explores_inside_the_rules() -> None:
    p = plan(24, 96, 200)
    deadline = FAILED + timedelta(days=21)
    for i in range(200):
        q = run(p, 1.0, f"k{i}")
        assert q.explored and q.retries[0] != p.retries[0]
        assert q.retries[1:] == p.retries[1:] and q.greedy_retries == p.retries
        first = q.retries[0]
        assert first.minute == 0 and first.second == 0, "a whole hour"
        assert first >= FAILED + timedelta(hours=RULES.min_spacing_hours)
        assert q.retries[1] - first >= timedelta(hours=RULES.min_spacing_hours)
        assert first <= deadline
        assert any("exploratory" in r for r in q.reasons)


def test_never_retry_and_empty_plans_are_not_explored() -> None:
    hard = run(plan(category="hard", blocked="never retried: stolen_card is hard"), 1.0)
    assert not hard.explored and hard.retries == [] and hard.propensity == 1.0
    blocked = run(plan(24, category="hard"), 1.0)
    assert not blocked.explored and blocked.retries == [FAILED + 24 * H]


def test_explored_times_keep_the_card_caps() -> None:
    # A Mastercard card with 9 attempts 10 h before the failure, and the failure: 10 in 24 h, the most
    # Mastercard allows. No retry fits before the first of them is 24 h old (+14 h after the failure).
    busy = [FAILED - 10 * H + i * timedelta(minutes=10) for i in range(9)]
    p = plan(30, 60)
    network, limits = RULES.for_brand("mastercard")
    for i in range(100):
        q = run(p, 1.0, f"k{i}", card_brand="mastercard", card_attempts=busy, failed_at=FAILED)
        assert q.explored
        known = [*busy, FAILED]
        for t in q.retries:
            assert _cap_violation(network, limits, known, t, timedelta(days=30)) is None
            known.append(t)
    hours = feasible_hours(
        p.retries, earliest=FAILED + 4 * H, deadline=FAILED + timedelta(days=21), rules=RULES,
        card_brand="mastercard", card_attempts=[*busy, FAILED],
    )  # fmt: skip
    assert min(hours) == FAILED + 14 * H, "the 24 h cap pushes the first feasible hour later"
    free = feasible_hours(
        p.retries, earliest=FAILED + 4 * H, deadline=FAILED + timedelta(days=21), rules=RULES
    )
    assert min(free) == FAILED + 4 * H


def test_propensity_on_a_hand_example() -> None:
    # earliest 14:00 on day 0, second retry at +30 h (16:00 next day) minus 4 h spacing: 14:00..12:00,
    # 23 whole hours; the greedy one (+24 h = 10:00) among them leaves N = 22 others.
    p = plan(24, 30)
    hours = feasible_hours(
        p.retries, earliest=FAILED + 4 * H, deadline=FAILED + timedelta(days=21), rules=RULES
    )
    assert len(hours) == 23 and p.retries[0] in hours
    explored = run(p, 0.2, "k-explored-0")
    share = 0.2
    for i in range(100):  # find one key of each kind
        q = run(p, share, f"k{i}")
        assert q.exploration_options == 22
        if q.explored:
            assert q.propensity == pytest.approx(share / 22)
        else:
            assert q.propensity == pytest.approx(1 - share) and q.retries == p.retries
    # Σ over every time the mixed policy can choose: (1 − share) + 22 · share / 22 = 1
    assert (1 - share) + 22 * (share / 22) == pytest.approx(1.0)
    assert explored.exploration_options == 22
    # No other allowed hour: nothing to explore, the greedy time is certain.
    tight = run(plan(4, 8), 1.0)
    assert not tight.explored and tight.exploration_options == 0 and tight.propensity == 1.0


def test_realized_share_is_close_to_the_configured_one() -> None:
    p = plan(24, 96)
    explored = sum(run(p, 0.05, f"inv-{i}").explored for i in range(4000))
    assert 0.04 < explored / 4000 < 0.06


def test_policy_bounds_the_exploration_share() -> None:
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    assert parse_policy(DEFAULT_POLICY_FILE.read_text(), "default").recovery.exploration_share == 0.05
    for bad in (0.5, -0.01):
        raw["recovery"]["exploration_share"] = bad
        with pytest.raises(ConfigError) as err:
            parse_policy(yaml.safe_dump(raw), "p.yaml")
        assert "recovery.exploration_share" in err.value.message and "0-0.2" in err.value.message
    raw["recovery"]["exploration_share"] = 0
    assert parse_policy(yaml.safe_dump(raw), "p.yaml").recovery.exploration_share == 0


def test_example_weights_on_a_known_frame() -> None:
    frame = pd.DataFrame({"propensity": [0.95, 0.95, 0.001, np.nan, 0.5]})
    w = example_weights(frame)
    assert w is not None
    raw = np.array([1 / 0.95, 1 / 0.95, 10.0, 1 / 0.5])  # 1/0.001 clipped at 10
    has = [0, 1, 2, 4]
    np.testing.assert_allclose(w[has], raw / raw.mean())
    assert w[3] == 1.0 and w[has].mean() == pytest.approx(1.0)
    assert example_weights(pd.DataFrame({"x": [1]})) is None
    assert example_weights(pd.DataFrame({"propensity": [np.nan, np.nan]})) is None


def test_ips_recovers_the_greedy_rate_from_a_mixed_log() -> None:
    rng = np.random.default_rng(3)
    n, share = 20_000, 0.2
    explored = rng.random(n) < share
    # the planner's times succeed 40 %, explored ones 20 %
    y = np.where(explored, rng.random(n) < 0.2, rng.random(n) < 0.4).astype(float)
    p = np.where(explored, share / 50, 1 - share)
    est = ips_value(y, p, (~explored).astype(float), n_boot=200)
    assert est.value is not None and est.low is not None and est.high is not None
    assert est.low < 0.4 < est.high and abs(est.value - 0.4) < 0.02
    assert est.n == n and est.effective_n == pytest.approx((~explored).sum())
    mixed = ips_value(y, p, p, n_boot=50)
    assert mixed.value == pytest.approx(y.mean())
    assert ips_value([], [], []).value is None


def test_retry_labels_follow_the_plan_in_force() -> None:
    ex = {"explored": True, "share": 0.05, "propensity": 0.001, "greedy_retries": [], "options": 50}
    again = {**ex, "explored": False, "propensity": 0.95}
    stored = {
        "retries": ["2026-12-02T10:00:00Z", "2026-12-05T10:00:00Z"],
        "exploration": ex,
        "replans": [{"after_retry": 1, "retries": ["2026-12-06T10:00:00Z"], "exploration": again}],
    }
    first = retry_label(stored, 1)
    assert first["retry_source"] == "billops_explore" and first["propensity"] == 0.001 and first["first"]
    second = retry_label(stored, 2)
    assert second["retry_source"] == "billops" and second["propensity"] == 0.95
    # no re-plan (assist): the plan's later retries are the planner's own, propensity 1
    assert retry_label({**stored, "replans": []}, 2)["propensity"] == 1.0
    # an approver moved the first retry: a human label, no propensity
    edited = {**stored, "retries": ["2026-12-03T09:00:00+00:00"], "original": stored, "replans": []}
    assert retry_label(edited, 1)["retry_source"] == "human" and retry_label(edited, 1)["propensity"] is None
    kept = {**stored, "original": stored, "replans": []}
    assert retry_label(kept, 1)["retry_source"] == "billops_explore"
    # rules-v1 and the retry made on new card data: BillOps's, propensity unknown
    assert retry_label({"retries": ["2026-12-02T10:00:00Z"]}, 1)["propensity"] is None
    assert retry_label({"retries": [], "exploration": ex}, 1)["retry_source"] == "billops"
