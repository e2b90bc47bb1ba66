"""The simulated payer world: deterministic, schema-stable, consistent with its own retry oracle, with
common random numbers, and with the timing effects a learned retry planner is meant to find."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from billops.sim.payers import ATTEMPT_COLUMNS, FAILURE_COLUMNS, FATIGUE, World, register

START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2026, 1, 1, tzinfo=UTC)
SPLIT = END - timedelta(days=30)


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=11, customers=2500, start=START, end=END)


@pytest.fixture(scope="module")
def history(world: World) -> pd.DataFrame:
    return world.history()


@pytest.fixture(scope="module")
def failures(world: World) -> pd.DataFrame:
    return world.failures(START, END)


def _by_behaviour(world: World, failures: pd.DataFrame, behaviour: str) -> list[str]:
    return [i for i in failures["invoice_id"] if world.latents(i)["behaviour"] == behaviour]


def test_same_arguments_same_world_and_another_seed_differs() -> None:
    a = World(seed=3, customers=300, start=START, end=END)
    b = World(seed=3, customers=300, start=START, end=END)
    c = World(seed=4, customers=300, start=START, end=END)
    pd.testing.assert_frame_equal(a.history(), b.history())
    pd.testing.assert_frame_equal(a.failures(START, END), b.failures(START, END))
    assert not a.history()["attempt_id"].equals(c.history()["attempt_id"])


def test_adding_customers_keeps_the_ones_already_drawn() -> None:
    small = World(seed=3, customers=100, start=START, end=END).history()
    big = World(seed=3, customers=200, start=START, end=END).history()
    same = big[big["customer_id"].isin(set(small["customer_id"]))].reset_index(drop=True)
    pd.testing.assert_frame_equal(small, same)


def test_history_schema_and_dtypes(history: pd.DataFrame) -> None:
    assert list(history.columns) == [*ATTEMPT_COLUMNS, "card_fingerprint"]
    assert str(history["attempted_at"].dtype) == "datetime64[ns, UTC]"
    assert str(history["customer_created_at"].dtype) == "datetime64[ns, UTC]"
    for col in ("amount", "card_exp_month", "card_exp_year"):
        assert history[col].dtype == np.int64, col
    others = set(ATTEMPT_COLUMNS) - {
        "attempted_at",
        "customer_created_at",
        "amount",
        "card_exp_month",
        "card_exp_year",
    }
    for col in others:
        assert pd.api.types.is_string_dtype(history[col]), col
        assert not history[col].isna().any(), col
    # A customer's card keeps its fingerprint through updater refreshes (new expiry); a card the customer
    # supplies has another one.
    assert history["card_fingerprint"].str.startswith("fp_").all()
    for _, g in history.groupby("invoice_id"):
        if g["card_fingerprint"].nunique() > 1:
            assert g["outcome"].iloc[-1] == "succeeded"  # the new card paid
    assert history["attempted_at"].is_monotonic_increasing
    assert history["attempt_id"].is_unique
    assert set(history["outcome"]) == {"succeeded", "failed"}
    ok = history["outcome"] == "succeeded"
    assert (history.loc[ok, "decline_code"] == "").all()
    assert (history.loc[ok, "network_advice_code"] == "").all()
    assert (history.loc[~ok, "decline_code"] != "").all()
    assert set(history["network_advice_code"]) <= {"", "01", "02", "03", "21", *map(str, range(24, 31))}
    assert (history["customer_created_at"] < START).all()
    assert ((history["attempted_at"] >= START) & (history["attempted_at"] < END)).all()
    assert history["customer_timezone"].str.contains("/").all()
    assert history["card_exp_month"].between(1, 12).all()


def test_failure_rates_and_decline_mix_are_plausible(history: pd.DataFrame, failures: pd.DataFrame) -> None:
    first = history.groupby("invoice_id").head(1)
    rate = (first["outcome"] == "failed").mean()
    assert 0.06 < rate < 0.12
    assert len(failures) == (first["outcome"] == "failed").sum()
    mix = failures["decline_code"].value_counts(normalize=True)
    assert 0.3 < mix["insufficient_funds"] < 0.5
    assert 0.04 < mix["expired_card"] < 0.15
    assert (history["outcome"] == "succeeded").mean() > 0.75  # mostly regular renewals that went through


def test_failures_columns_deadline_and_first_attempt(
    world: World, history: pd.DataFrame, failures: pd.DataFrame
) -> None:
    assert list(failures.columns) == FAILURE_COLUMNS
    for col in ("failed_at", "customer_created_at", "deadline"):
        assert str(failures[col].dtype) == "datetime64[ns, UTC]"
    assert failures["amount"].dtype == np.int64
    assert failures["invoice_id"].is_unique
    assert (failures["deadline"] - failures["failed_at"] == pd.Timedelta(days=21)).all()
    first = history.groupby("invoice_id").head(1).set_index("invoice_id")
    f = failures.set_index("invoice_id")
    joined = f.join(first.add_suffix("_h")).rename(
        columns={"attempted_at_h": "attempted_at", "outcome_h": "outcome"}
    )
    assert (joined["outcome"] == "failed").all()
    assert (joined["failed_at"] == joined["attempted_at"]).all()
    for col in ("decline_code", "network_advice_code", "card_brand", "card_exp_year", "customer_timezone"):
        assert (joined[col] == joined[f"{col}_h"]).all(), col
    # [since, until): a boundary failure belongs to the later window
    t = failures["failed_at"].iloc[len(failures) // 2].to_pydatetime()
    before, after = world.failures(START, t), world.failures(t, END)
    assert len(before) + len(after) == len(failures)
    assert (after["failed_at"] >= t).all() and (before["failed_at"] < t).all()
    assert (
        len(World(seed=11, customers=10, start=START, end=END, deadline_days=9).failures(START, START)) == 0
    )


def test_train_test_split_has_no_leakage(world: World, history: pd.DataFrame) -> None:
    train = world.history(until=SPLIT)
    assert len(train) > 0 and (train["attempted_at"] < SPLIT).all()
    pd.testing.assert_frame_equal(train, history[history["attempted_at"] < SPLIT].reset_index(drop=True))
    # failures after the split have all their (historical) attempts in the full history, none in train
    test_failures = world.failures(SPLIT, END)
    assert len(test_failures) > 0
    ids = set(test_failures["invoice_id"])
    assert not train["invoice_id"].isin(ids).any()
    assert history["invoice_id"].isin(ids).sum() >= len(ids)


def test_history_retries_are_the_oracles_answers(world: World, history: pd.DataFrame) -> None:
    failed_ids = set(world.failures(START, END)["invoice_id"])
    checked = 0
    for inv, rows in history[history["invoice_id"].isin(failed_ids)].groupby("invoice_id", sort=False):
        update = world.card_update(str(inv))
        refresh = world.card_refresh(str(inv))
        k = 0
        first_card = rows.iloc[0][["card_brand", "card_exp_month", "card_exp_year"]].tolist()
        for _, r in rows.iloc[1:].iterrows():
            at = r["attempted_at"].to_pydatetime()
            if update is not None and at == update:  # paid with the customer's new card
                assert r["outcome"] == "succeeded"
                continue
            card = first_card
            if refresh is not None and at >= refresh[0]:  # refreshed in place: same card, new expiry
                card = [first_card[0], refresh[1]["exp_month"], refresh[1]["exp_year"]]
            assert r[["card_brand", "card_exp_month", "card_exp_year"]].tolist() == card
            assert (r["outcome"] == "succeeded") == world.attempt(str(inv), at, k)
            k += 1
            checked += 1
        if k:
            times = [t.to_pydatetime() for t in rows["attempted_at"].iloc[1 : k + 1]]
            won = world.first_success(str(inv), times)
            assert won == (k - 1 if rows.iloc[k]["outcome"] == "succeeded" else None)
    assert checked > 1000


def test_historical_policy_rules(world: World, history: pd.DataFrame) -> None:
    failed = world.failures(START, END)
    rows = history[history["invoice_id"].isin(set(failed["invoice_id"]))]
    new_card_payments = 0
    for inv, g in rows.groupby("invoice_id", sort=False):
        update = world.card_update(str(inv))
        blind = g.iloc[1:]
        if update is not None:
            blind = blind[blind["attempted_at"] != pd.Timestamp(update)]
            new_card_payments += int((g["attempted_at"] == pd.Timestamp(update)).sum())
        assert len(blind) <= 6
        if world.category(str(inv)) == "hard" or world.latents(str(inv))["never_retry"]:
            assert blind.empty, inv
        t0 = g["attempted_at"].iloc[0]
        assert (g["attempted_at"] - t0 < pd.Timedelta(days=21)).all()
        assert (
            g["attempted_at"].diff().dropna() >= pd.Timedelta(hours=3) - pd.Timedelta(seconds=1)
        ).all() or (update is not None)
        ok = (g["outcome"] == "succeeded").to_numpy()
        assert ok.sum() <= 1 and (not ok.any() or ok[-1]), "stops at the first success"
    assert new_card_payments > 50


def test_hard_and_needs_new_card_never_succeed_on_a_blind_retry(world: World, failures: pd.DataFrame) -> None:
    """...unless the account updater refreshed a needs-new-card card in place (tests/sim/test_worlds.py)."""
    ids = [
        i
        for i in failures["invoice_id"]
        if world.category(i) in ("hard", "needs_new_card") and world.card_refresh(i) is None
    ]
    assert len(ids) > 50
    expired = [
        i
        for i, c in zip(failures["invoice_id"], failures["decline_code"], strict=True)
        if c == "expired_card"
    ]
    assert expired
    for inv in ids:
        if world.category(inv) == "needs_new_card":
            assert world.card_refresh(inv) is None
        t0 = failures.set_index("invoice_id").at[inv, "failed_at"].to_pydatetime()
        times = [t0 + timedelta(hours=h) for h in range(1, 21 * 24, 7)]
        assert all(world.success_probability(inv, t, 0) == 0.0 for t in times)
        assert world.first_success(inv, times) is None
        assert not world.attempt_many([inv] * len(times), times, 0).any()


def test_insufficient_funds_succeed_after_payday_not_a_week_later(
    world: World, failures: pd.DataFrame
) -> None:
    f = failures.set_index("invoice_id")
    soon, later = [], []
    for inv in _by_behaviour(world, failures, "funds"):
        if not world.latents(inv)["solvent"]:
            continue
        t0 = f.at[inv, "failed_at"].to_pydatetime()
        days = world.paydays(str(f.at[inv, "customer_id"]), t0 + timedelta(hours=1), t0 + timedelta(days=21))
        if not days:
            continue
        soon.append(world.success_probability(inv, days[0] + timedelta(hours=2), 0))
        later.append(world.success_probability(inv, days[0] + timedelta(days=7), 0))
        assert world.success_probability(inv, days[0] - timedelta(hours=1), 0) <= 0.1  # before funds land
    assert len(soon) > 100
    assert np.mean(soon) > 0.7 and np.mean(later) < 0.45, (np.mean(soon), np.mean(later))


def test_other_effects_exist(world: World, failures: pd.DataFrame) -> None:
    f = failures.set_index("invoice_id")
    # transient declines: low right after the failure, high a day later
    early, late = [], []
    for inv in _by_behaviour(world, failures, "transient"):
        if world.latents(inv)["solvent"]:
            t0 = f.at[inv, "failed_at"].to_pydatetime()
            early.append(world.success_probability(inv, t0 + timedelta(minutes=10), 0))
            late.append(world.success_probability(inv, t0 + timedelta(days=1), 0))
    assert np.mean(early) < 0.15 < 0.6 < np.mean(late)
    # generic declines: the local morning beats the local small hours
    morning, night = [], []
    for inv in _by_behaviour(world, failures, "generic"):
        lat = world.latents(inv)
        if lat["solvent"] and not lat["masked_funds"]:
            tz = f.at[inv, "customer_timezone"]
            day = (f.at[inv, "failed_at"] + pd.Timedelta(days=3)).tz_convert(tz).normalize()
            morning.append(world.success_probability(inv, (day + pd.Timedelta(hours=8)).to_pydatetime(), 0))
            night.append(world.success_probability(inv, (day + pd.Timedelta(hours=2)).to_pydatetime(), 0))
    assert np.mean(morning) > 2 * np.mean(night)
    # fatigue: every earlier retry costs ×0.85 (below the cap)
    day_after = {i: f.at[i, "failed_at"].to_pydatetime() + timedelta(days=1) for i in f.index}
    checked = 0
    for inv in _by_behaviour(world, failures, "transient"):
        p0, p3 = (world.success_probability(inv, day_after[inv], k) for k in (0, 3))
        if p0 > 0:
            assert p3 == pytest.approx(p0 * FATIGUE**3)
            checked += 1
    assert checked > 20
    # MAC 24-30: a retry before the advised wait fails
    waits = [i for i in failures["invoice_id"] if world.latents(i)["wait_until"] is not None]
    assert waits
    for inv in waits:
        wait = world.latents(inv)["wait_until"]
        assert world.success_probability(inv, wait - timedelta(minutes=1), 0) == 0.0


def test_common_random_numbers(world: World, failures: pd.DataFrame) -> None:
    rng = random.Random(5)
    ids = [i for i in failures["invoice_id"] if world.category(i) in ("soft", "try_later")][:300]
    f = failures.set_index("invoice_id")
    asks = [
        (inv, f.at[inv, "failed_at"].to_pydatetime() + timedelta(hours=rng.uniform(1, 500)), rng.randrange(4))
        for inv in ids
        for _ in range(5)
    ]
    forward = {a: world.attempt(*a) for a in asks}
    backward = {a: world.attempt(*a) for a in reversed(asks)}
    shuffled = asks[:]
    rng.shuffle(shuffled)
    fresh = World(seed=11, customers=2500, start=START, end=END)
    again = {a: fresh.attempt(*a) for a in shuffled}
    assert forward == backward == again
    many = world.attempt_many([a[0] for a in asks], [a[1] for a in asks], [a[2] for a in asks])
    assert many.tolist() == [forward[a] for a in asks]
    assert 0 < sum(forward.values()) < len(asks)
    # Two policies asking at different minutes of the same hour get the same draw: when p is the same,
    # so is the answer.
    for inv, t, k in asks:
        t2 = t.replace(minute=(t.minute + 17) % 60)
        if world.success_probability(inv, t, k) == world.success_probability(inv, t2, k):
            assert world.attempt(inv, t, k) == world.attempt(inv, t2, k)
    # A policy's verdict is the first of its own times that the oracle accepts, whatever else was asked.
    inv = ids[0]
    t0 = f.at[inv, "failed_at"].to_pydatetime()
    plan = [t0 + timedelta(days=d) for d in (2, 7, 14, 20)]
    expected = next((k for k, t in enumerate(plan) if world.attempt(inv, t, k)), None)
    world.first_success(inv, [t0 + timedelta(hours=h) for h in (3, 9, 30)])
    assert world.first_success(inv, plan) == expected


def test_oracle_is_cheap(world: World, failures: pd.DataFrame) -> None:
    import time

    ids = list(failures["invoice_id"][:200])
    f = failures.set_index("invoice_id")
    asks = [(i, f.at[i, "failed_at"].to_pydatetime() + timedelta(hours=h), 1) for i in ids for h in range(50)]
    t = time.perf_counter()
    for a in asks:
        world.attempt(*a)
    assert (time.perf_counter() - t) / len(asks) < 50e-6


def test_unknown_invoice_and_bad_arguments(world: World) -> None:
    with pytest.raises(KeyError):
        world.attempt("in_nope", START, 0)
    with pytest.raises(ValueError):
        World(seed=1, customers=0, start=START, end=END)
    with pytest.raises(ValueError):
        World(seed=1, customers=5, start=END, end=START)


def test_cli_writes_the_three_files(tmp_path: Path) -> None:
    app = typer.Typer()
    recovery = typer.Typer()
    app.add_typer(recovery, name="recovery")
    register(recovery)
    out = tmp_path / "sim"
    args = ["recovery", "simulate", "--customers", "400", "--months", "4", "--seed", "2"]
    args += ["--split-days", "30", "--end", "2025-06-01", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "failures" in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["attempts.csv", "failures.jsonl", "test_attempts.csv"]

    end = datetime(2025, 6, 1, tzinfo=UTC)
    split = end - timedelta(days=30)
    w = World(seed=2, customers=400, start=datetime(2025, 2, 1, tzinfo=UTC), end=end)
    train = pd.read_csv(out / "attempts.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(out / "test_attempts.csv", dtype=str, keep_default_na=False)
    assert list(train.columns) == [*ATTEMPT_COLUMNS, "card_fingerprint"]
    assert len(train) == len(w.history(until=split))
    assert len(train) + len(test) == len(w.history())
    assert train["attempted_at"].str.endswith("Z").all()
    assert (pd.to_datetime(train["attempted_at"], utc=True) < split).all()
    assert (pd.to_datetime(test["attempted_at"], utc=True) >= split).all()
    assert train["attempt_id"].tolist() == w.history(until=split)["attempt_id"].tolist()

    lines = (out / "failures.jsonl").read_text().splitlines()
    assert len(lines) == len(w.failures(split, end)) > 0
    rec = json.loads(lines[0])
    assert list(rec) == FAILURE_COLUMNS
    assert isinstance(rec["amount"], int)
    failed_at = datetime.fromisoformat(rec["failed_at"].replace("Z", "+00:00"))
    assert split <= failed_at < end
    assert datetime.fromisoformat(rec["deadline"].replace("Z", "+00:00")) == failed_at + timedelta(days=21)

    bad = CliRunner().invoke(
        app, [*args[:8], "--split-days", "400", "--end", "2025-06-01", "--out", str(out)]
    )
    assert bad.exit_code != 0
