"""The learned recovery model and its planner: artifact, no leakage, network rules, the backtest
against fixed schedules, and learning a pattern the simulator does not have."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from billops.errors import ConfigError, InputError
from billops.policy import load_policy
from billops.recovery.cli import plan_rows
from billops.recovery.evaluate import FIXED, backtest
from billops.recovery.model import (
    FEATURES,
    CustomerHistory,
    feature_matrix,
    load_model,
    prepare,
    training_examples,
)
from billops.recovery.planner import load_network_rules
from billops.recovery.training import train
from support.trained import CUSTOMERS, END, MONTHS, SEED, Trained

RULES = load_network_rules("builtin")
POLICY = load_policy(None)


def plans_for(trained: Trained, failures: pd.DataFrame, max_retries: int = 8) -> list[dict]:
    return plan_rows(
        trained.model, failures, trained.history, max_retries=max_retries, policy=POLICY, rules=RULES
    )


# ------------------------------------------------------------------ artifact


def test_artifact_is_versioned_and_measured(trained: Trained) -> None:
    m = trained.model.manifest
    assert trained.model.version == m["version"] and m["version"].startswith("recovery-lgbm-")
    assert m["version"][len("recovery-lgbm-") :] == m["hash"][:12]
    assert m["features"] == FEATURES
    tr = m["training"]
    assert pd.Timestamp(tr["attempts_to"]) < pd.Timestamp(END - timedelta(days=30))
    splits = tr["splits"]
    # Time split: train before calibration before test, no overlap.
    assert splits["train"]["first_failure_to"] <= splits["calibration"]["first_failure_from"]
    assert splits["calibration"]["first_failure_to"] <= splits["test"]["first_failure_from"]
    test = m["metrics"]["test"]
    assert test["auc"] > 0.65, test
    base = test["base_rate"]
    assert test["brier"] < base * (1 - base), "better than predicting the base rate"
    assert {"lightgbm", "scikit-learn", "numpy", "pandas", "python", "billops"} <= set(m["library_versions"])
    assert set(m["files"]) == {"model.txt", "calibration.json", "history.csv.gz", "sequence.txt"}
    assert m["curse_correction"]["applied"] and m["sequence_model"]["fitted"]
    assert m["metrics"]["test_sequence"]["auc"] > 0.65


def test_a_changed_artifact_is_refused(trained: Trained, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(trained.path, copy)
    assert load_model(copy).version == trained.model.version
    with (copy / "model.txt").open("a") as fh:
        fh.write("\n")
    with pytest.raises(ConfigError, match="digest mismatch"):
        load_model(copy)
    with pytest.raises(ConfigError, match="not a BillOps recovery model"):
        load_model(tmp_path)


def test_training_is_deterministic(trained: Trained, tmp_path: Path) -> None:
    again, _ = train(trained.history, out=tmp_path / "again", source="test world")
    assert again.version == trained.model.version


def test_too_little_history_is_a_clear_error(trained: Trained, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs at least 200"):
        train(trained.history.head(300), out=tmp_path / "tiny", source="tiny")
    assert not (tmp_path / "tiny").exists(), "nothing half-written"


# ------------------------------------------------------------------ no leakage


def test_features_use_only_what_was_known_before_the_attempt(trained: Trained) -> None:
    """Each retry's features are identical whether or not the history after its invoice's first
    failure exists."""
    h = trained.history
    ex = training_examples(h)
    full = feature_matrix(prepare(ex, CustomerHistory.build(h)), trained.model.vocab)
    rng = np.random.default_rng(3)
    for i in rng.choice(len(ex), size=25, replace=False):
        row = ex.iloc[[i]]
        cutoff = row["first_failed_at"].iloc[0]
        past = h[(h["attempted_at"] < cutoff) | (h["invoice_id"] == row["invoice_id"].iloc[0])]
        past = past[past["attempted_at"] <= row["attempted_at"].iloc[0]]
        alone = feature_matrix(
            prepare(row.reset_index(drop=True), CustomerHistory.build(past)), trained.model.vocab
        )
        np.testing.assert_array_equal(alone[0], full[i])


# ------------------------------------------------------------------ planner invariants and network rules


def test_plans_keep_the_contract_and_the_network_rules(trained: Trained) -> None:
    rows = plans_for(trained, trained.failures)
    assert len(rows) == len(trained.failures)
    by_id = trained.failures.set_index("invoice_id")
    routes = set()
    for r in rows:
        f = by_id.loc[r["invoice_id"]]
        assert 0 <= r["recovery_score"] <= 100 and r["reasons"]
        times = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in r["retries"]]
        assert times == sorted(times) and len(times) <= 8
        assert all(f["failed_at"] < t <= f["deadline"] for t in times)
        assert all(b - a >= timedelta(hours=RULES.min_spacing_hours) for a, b in pairwise(times))
        if r["decline_category"] == "hard" or f["network_advice_code"] in ("03", "21"):
            assert not times and r["route"] == "no_retry"
        if r["decline_category"] == "needs_new_card":  # the link goes out; the model decides the retries
            assert r["route"] == "retry_and_notify"
        routes.add(r["route"])
    assert {"no_retry", "retry_and_notify"} <= routes


def _failure(**kw: object) -> dict[str, object]:
    at = datetime(2026, 10, 10, 12, tzinfo=UTC)
    base: dict[str, object] = {
        "invoice_id": "in_x",
        "customer_id": "cus_x",
        "amount": 4900,
        "currency": "usd",
        "failed_at": at,
        "decline_code": "insufficient_funds",
        "network_advice_code": "",
        "card_brand": "mastercard",
        "card_funding": "debit",
        "card_country": "US",
        "card_exp_month": 5,
        "card_exp_year": 2030,
        "customer_timezone": "America/Chicago",
        "customer_created_at": at - timedelta(days=400),
        "deadline": at + timedelta(days=21),
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("mac", "blocked", "wait_hours"),
    [("03", True, 0), ("21", True, 0), ("25", False, 24), ("27", False, 96), ("30", False, 240)],
)
def test_mastercard_advice_codes(trained: Trained, mac: str, blocked: bool, wait_hours: int) -> None:
    f = pd.DataFrame([_failure(network_advice_code=mac)])
    [r] = plans_for(trained, f)
    times = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in r["retries"]]
    if blocked:
        assert not times and r["route"] == "no_retry"
    else:
        failed_at = f["failed_at"].iloc[0]
        assert times and times[0] >= failed_at + timedelta(hours=wait_hours)
        assert any("network asks to wait" in x for x in r["reasons"])


def test_per_card_caps_count_the_cards_earlier_attempts(trained: Trained) -> None:
    """A Visa card with 14 attempts in the last 30 days has one reattempt left (15 per 30 days)."""
    f = _failure(card_brand="visa", decline_code="do_not_honor")
    at: datetime = f["failed_at"]  # type: ignore[assignment]
    earlier = pd.DataFrame(
        [
            {
                **{k: v for k, v in f.items() if k not in ("failed_at", "deadline")},
                "attempt_id": f"ch_{i}",
                "invoice_id": f"in_old{i}",
                "attempted_at": at - timedelta(hours=6 * (1 + i)),  # all inside every retry's window
                "outcome": "failed",
            }
            for i in range(14)
        ]
    )
    history = pd.concat([trained.history, earlier], ignore_index=True)
    rows = plan_rows(trained.model, pd.DataFrame([f]), history, max_retries=8, policy=POLICY, rules=RULES)
    assert len(rows[0]["retries"]) <= 1
    assert any("allows at most 15 reattempts" in x for x in rows[0]["reasons"])


def test_expired_card_gets_a_card_update_request_beside_what_the_model_plans(trained: Trained) -> None:
    [r] = plans_for(trained, pd.DataFrame([_failure(decline_code="expired_card")]))
    assert r["route"] == "retry_and_notify"
    assert "card-update link" in " ".join(r["reasons"])
    [lost] = plans_for(trained, pd.DataFrame([_failure(decline_code="lost_card")]))
    assert lost["retries"] == [] and lost["route"] == "no_retry" and lost["recovery_score"] == 0


def test_reasons_name_the_top_contributing_features(trained: Trained) -> None:
    [r] = plans_for(trained, pd.DataFrame([_failure(card_brand="visa")]))
    assert r["retries"], r
    shap = [x for x in r["reasons"] if "log-odds" in x]
    assert len(shap) == 3
    assert r["model"] == trained.model.version
    assert r["recovery_score"] == round(100 * r["recovery_probability"])


# ------------------------------------------------------------------ the point of it all


def test_learned_plans_recover_more_than_fixed_schedules(trained: Trained) -> None:
    bt = backtest(
        trained.model,
        POLICY,
        customers=CUSTOMERS,
        months=MONTHS,
        seed=SEED,
        split_days=30,
        end=END.date().isoformat(),
        max_retries=8,
    )
    p = bt["policies"]
    best_fixed = max(p[name]["recovered_amount"] for name in FIXED)
    assert p["billops_learned_max8"]["recovered_amount"] > best_fixed, p
    # Same number of tries as Polar (4): still more revenue.
    assert p["billops_learned_max4"]["recovered_amount"] > p["polar_2_7_14_21d"]["recovered_amount"], p


def test_learns_a_pay_pattern_the_simulator_does_not_have(tmp_path: Path) -> None:
    """Retries succeed mostly on Tuesday mornings in the customer's zone: nothing in the planner
    knows that, so a model that puts retries there has learned it from the data."""
    rng = np.random.default_rng(5)
    zones = ["America/New_York", "Europe/Berlin", "Asia/Tokyo", "Australia/Sydney"]
    start = datetime(2025, 1, 6, tzinfo=UTC)
    rows: list[dict[str, object]] = []
    n = 0
    for c in range(1500):
        tz = zones[c % 4]
        for k in range(3):
            t0 = start + timedelta(days=int(rng.integers(0, 300)), hours=float(rng.uniform(0, 24)))
            inv = f"in_{c}_{k}"
            common = {
                "invoice_id": inv,
                "customer_id": f"cus_{c}",
                "amount": 2900,
                "currency": "usd",
                "network_advice_code": "",
                "card_brand": "visa",
                "card_funding": "debit",
                "card_country": "US",
                "card_exp_month": 12,
                "card_exp_year": 2031,
                "customer_timezone": tz,
                "customer_created_at": start - timedelta(days=200),
            }
            rows.append(
                {
                    **common,
                    "attempt_id": f"a{n}",
                    "attempted_at": t0,
                    "outcome": "failed",
                    "decline_code": "do_not_honor",
                }
            )
            n += 1
            t = t0
            for _ in range(5):
                t = t + timedelta(hours=float(rng.uniform(5, 60)))
                local = t.astimezone(ZoneInfo(tz))
                p = 0.6 if local.weekday() == 1 and 9 <= local.hour < 12 else 0.03
                ok = rng.random() < p
                rows.append(
                    {
                        **common,
                        "attempt_id": f"a{n}",
                        "attempted_at": t,
                        "outcome": "succeeded" if ok else "failed",
                        "decline_code": "" if ok else "do_not_honor",
                    }
                )
                n += 1
                if ok:
                    break
    h = pd.DataFrame(rows)
    h["attempted_at"] = pd.to_datetime(h["attempted_at"], utc=True)
    h["customer_created_at"] = pd.to_datetime(h["customer_created_at"], utc=True)
    h = h.sort_values("attempted_at").reset_index(drop=True)
    model, _ = train(h, out=tmp_path / "m", source="tuesday world")
    fails = pd.DataFrame(
        [
            _failure(
                invoice_id=f"in_new{i}",
                customer_id=f"cus_new{i}",
                card_brand="visa",
                decline_code="do_not_honor",
                customer_timezone=zones[i % 4],
                failed_at=datetime(2026, 3, 2, tzinfo=UTC) + timedelta(hours=13 * i),
                deadline=datetime(2026, 3, 2, tzinfo=UTC) + timedelta(hours=13 * i, days=14),
            )
            for i in range(40)
        ]
    )
    plans = plan_rows(model, fails, h.head(0), max_retries=3, policy=POLICY, rules=RULES)
    best_on_tuesday = []
    for r, z in zip(plans, fails["customer_timezone"], strict=True):
        assert r["retries"], r
        best = r["retries"][int(np.argmax(r["retry_probabilities"]))]
        t = datetime.fromisoformat(best.replace("Z", "+00:00")).astimezone(ZoneInfo(z))
        best_on_tuesday.append(t.weekday() == 1 and 8 <= t.hour < 13)
    assert sum(best_on_tuesday) / len(best_on_tuesday) > 0.9, best_on_tuesday


# ------------------------------------------------------------------ PLANS.jsonl written by the command


def test_plan_output_is_json_lines(trained: Trained, tmp_path: Path) -> None:
    from billops.recovery.data import write_jsonl

    rows = plans_for(trained, trained.failures.head(20), max_retries=2)
    out = tmp_path / "plans.jsonl"
    write_jsonl(out, rows)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["invoice_id"] for x in lines] == list(trained.failures.head(20)["invoice_id"])
    for x in lines:
        assert {"invoice_id", "recovery_score", "route", "retries", "reasons"} <= set(x)
        assert len(x["retries"]) <= 2


def test_the_screened_scan_finds_as_good_plans_as_the_full_scan(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan ranks candidate hours with the model's first trees; the plans must lose next to nothing
    against scanning every candidate with the whole model."""
    import billops.recovery.timing as timing

    failures = trained.failures.head(300)
    assert timing.screen_trees(trained.model.num_trees) > 0, "the test model must be large enough to screen"
    screened = plans_for(trained, failures)
    monkeypatch.setattr(timing, "SCREEN_FRACTION", 1.0)  # screen = every tree: no screening
    full = plans_for(trained, failures)
    assert [r["invoice_id"] for r in screened] == [r["invoice_id"] for r in full]
    assert [bool(r["retries"]) for r in screened] == [bool(r["retries"]) for r in full]
    p_screened = np.array([r["recovery_probability"] for r in screened])
    p_full = np.array([r["recovery_probability"] for r in full])
    assert p_screened.mean() >= 0.97 * p_full.mean(), (p_screened.mean(), p_full.mean())
    assert (p_screened != p_full).any(), "screening changed nothing: the test does not exercise it"
    # The screening scores never reach the output: each block's hour is scored by the whole model.
    assert abs(p_screened.mean() - p_full.mean()) < 0.03


def test_plans_are_the_same_whatever_the_chunks_and_threads(trained: Trained) -> None:
    """Chunks planned on two threads share one model: LightGBM allows that only while every call on a
    Booster uses the same number of trees (the scan's first trees are a Booster of their own)."""
    failures = trained.failures.head(400)
    kw = {"max_retries": 8, "policy": POLICY, "rules": RULES}
    one = plan_rows(trained.model, failures, trained.history, workers=1, **kw)
    for _ in range(3):
        assert plan_rows(trained.model, failures, trained.history, workers=2, chunk=50, **kw) == one
