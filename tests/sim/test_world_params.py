"""WorldParams, presets, the account updater's in-place refreshes and luck replicates."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from billops.sim.payers import World
from billops.sim.world_params import (
    DEVELOPMENT_WORLD,
    HELD_OUT_WORLDS,
    LEGACY,
    WORLDS,
    WorldParams,
    resolve_worlds,
)

START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2025, 9, 1, tzinfo=UTC)


def _digest(df: pd.DataFrame) -> str:
    """The digest of the columns the simulator wrote before WorldParams (later columns are extra)."""
    cols = [c for c in df.columns if c != "card_fingerprint"]
    return hashlib.sha256(df[cols].to_csv(index=False).encode()).hexdigest()[:16]


def test_legacy_params_reproduce_the_world_before_params() -> None:
    # Digests taken from the simulator before WorldParams existed (commit 7596cf3), same arguments.
    w = World(seed=11, customers=300, start=START, end=END, params=LEGACY)
    h, f = w.history(), w.failures(START, END)
    assert (len(h), len(f)) == (2507, 181)
    assert _digest(h) == "96db622c59279eeb"
    assert _digest(f) == "7314f1b6c7bc7f0f"
    ps = [round(w.success_probability(i, datetime(2025, 8, 10, tzinfo=UTC), 1), 6) for i in f["invoice_id"]]
    assert hashlib.sha256(repr(ps).encode()).hexdigest()[:16] == "46091ca68d535de9"


def test_defaults_are_the_development_world_and_only_the_updater_changes() -> None:
    assert World(seed=3, customers=5, start=START, end=END).params == WorldParams() == WORLDS["default"]
    changed = {
        f.name
        for f in dataclasses.fields(WorldParams)
        if getattr(LEGACY, f.name) != getattr(WorldParams(), f.name)
    }
    assert changed == {"updater_rate", "updater_rate_insolvent", "hist_retry_needs_new_card"}


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=5, customers=1500, start=START, end=END, params=WORLDS["updater_rich"])


def test_updater_refresh_shows_a_new_expiry_and_the_oracle_agrees(world: World) -> None:
    h = world.history()
    failures = world.failures(START, END - timedelta(days=21))
    seen = paid_after_refresh = 0
    for inv in failures["invoice_id"]:
        refresh = world.card_refresh(inv)
        if refresh is None:
            continue
        at, card = refresh
        assert world.category(inv) == "needs_new_card"
        rows = h[h["invoice_id"] == inv]
        first = rows.iloc[0]
        assert (card["brand"], card["funding"], card["country"]) == (
            first["card_brand"],
            first["card_funding"],
            first["card_country"],
        )
        assert (card["exp_year"], card["exp_month"]) > (first["card_exp_year"], first["card_exp_month"])
        update = world.card_update(inv)
        blind = rows.iloc[1:]
        if update is not None:
            blind = blind[blind["attempted_at"] != pd.Timestamp(update)]
        for k, (_, r) in enumerate(blind.iterrows()):
            t = r["attempted_at"].to_pydatetime()
            assert (r["outcome"] == "succeeded") == world.attempt(inv, t, k)
            if t >= at:
                seen += 1
                assert (r["card_exp_month"], r["card_exp_year"]) == (card["exp_month"], card["exp_year"])
                paid_after_refresh += r["outcome"] == "succeeded"
            else:
                assert r["outcome"] == "failed"
                assert (r["card_exp_month"], r["card_exp_year"]) == (
                    first["card_exp_month"],
                    first["card_exp_year"],
                )
        # Before the refresh a blind retry never pays; after it, a solvent customer's retry can.
        assert world.success_probability(inv, at - timedelta(minutes=1), 0) == 0.0
        if world.latents(inv)["solvent"]:
            assert world.success_probability(inv, at + timedelta(minutes=1), 0) > 0.5
    assert seen > 20 and paid_after_refresh > 10


def test_history_retries_needs_new_card_but_not_never_codes(world: World) -> None:
    h = world.history()
    f = world.failures(START, END)
    retried = h.groupby("invoice_id").size()
    nnc = [i for i in f["invoice_id"] if world.category(i) == "needs_new_card"]
    never = [i for i in f["invoice_id"] if world.latents(i)["never_retry"] or world.category(i) == "hard"]
    assert sum(retried.get(i, 1) > 1 for i in nnc) > len(nnc) / 3
    for i in never:
        update = world.card_update(i)
        rows = h[h["invoice_id"] == i].iloc[1:]
        if update is not None:
            rows = rows[rows["attempted_at"] != pd.Timestamp(update)]
        assert rows.empty, i


def test_presets_differ_and_resolve() -> None:
    assert DEVELOPMENT_WORLD == "default" and DEVELOPMENT_WORLD not in HELD_OUT_WORLDS
    assert len(HELD_OUT_WORLDS) >= 5
    for name in HELD_OUT_WORLDS:
        assert WORLDS[name] != WORLDS["default"], name
    assert len({repr(WORLDS[n].as_dict()) for n in WORLDS}) == len(WORLDS)
    assert resolve_worlds("all") == list(HELD_OUT_WORLDS)
    assert resolve_worlds("every")[0] == "default"
    assert resolve_worlds("low_signal, payday_heavy") == ["low_signal", "payday_heavy"]
    with pytest.raises(ValueError, match=r"unknown world.*nope"):
        resolve_worlds("low_signal,nope")


def test_presets_change_the_data() -> None:
    def share(name: str, col: str, value: str) -> float:
        w = World(seed=2, customers=800, start=START, end=END, params=WORLDS[name])
        f = w.failures(START, END)
        return float((f[col] == value).mean())

    assert (
        share("mastercard_heavy", "card_brand", "mastercard")
        > share("default", "card_brand", "mastercard") + 0.2
    )
    generic = share("generic_heavy", "decline_code", "do_not_honor")
    assert generic > share("default", "decline_code", "do_not_honor") + 0.08


def test_luck_replicates_change_the_draws_not_the_odds(world: World) -> None:
    f = world.failures(START, END)
    ids = f["invoice_id"].tolist()[:200]
    t = [x.to_pydatetime() + timedelta(days=2) for x in f["failed_at"].tolist()[:200]]
    base = [world.attempt(i, x, 0) for i, x in zip(ids, t, strict=True)]
    assert base == [world.attempt(i, x, 0, luck=0) for i, x in zip(ids, t, strict=True)]
    other = [world.attempt(i, x, 0, luck=3) for i, x in zip(ids, t, strict=True)]
    assert other != base
    assert other == [world.attempt(i, x, 0, luck=3) for i, x in zip(ids, t, strict=True)]
    assert world.first_success(ids[0], [t[0]], luck=3) == (0 if other[0] else None)
