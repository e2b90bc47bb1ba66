"""The sequence model and the curse correction (issue 15): a plan's probability knows that its earlier
retries failed, and the chosen times' optimism is measured out of fold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from billops.recovery.model import CustomerHistory, feature_matrix, prepare
from billops.recovery.training import train

START = datetime(2025, 1, 6, tzinfo=UTC)


def _history(flat: bool = False) -> pd.DataFrame:
    """Half the customers can pay (a retry at 10:00 New York succeeds 70 %, at 03:00 10 %), half never
    can. Two failed retries at 10:00 say much more about the customer than two at 03:00. `flat`: the
    hour makes no difference (40 % either way) and retries come at any hour: every hour the model
    prefers is noise."""
    rng = np.random.default_rng(8)
    rows: list[dict[str, object]] = []
    n = 0
    for c in range(2400):
        solvent = rng.random() < 0.5
        day0 = START + timedelta(days=int(rng.integers(0, 300)))
        common = {
            "invoice_id": f"in_{c}",
            "customer_id": f"cus_{c}",
            "amount": 4900,
            "currency": "usd",
            "network_advice_code": "",
            "card_brand": "visa",
            "card_funding": "debit",
            "card_country": "US",
            "card_exp_month": 12,
            "card_exp_year": 2031,
            "customer_timezone": "America/New_York",
            "customer_created_at": START - timedelta(days=300),
        }
        t0 = day0 + timedelta(hours=20)
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
        for k in range(5):
            good = rng.random() < 0.5
            t = day0 + timedelta(days=k + 1, hours=15 if good else 8)  # 10:00 or 03:00 in New York (UTC-5)
            ok = solvent and rng.random() < (0.7 if good else 0.1)
            if flat:
                t = day0 + timedelta(days=k + 1, hours=int(rng.integers(0, 24)))
                ok = solvent and rng.random() < 0.4
            outcome = {
                "outcome": "succeeded" if ok else "failed",
                "decline_code": "" if ok else "do_not_honor",
            }
            rows.append({**common, "attempt_id": f"a{n}", "attempted_at": t, **outcome})
            n += 1
            if ok:
                break
    h = pd.DataFrame(rows)
    for col in ("attempted_at", "customer_created_at"):
        h[col] = pd.to_datetime(h[col], utc=True)
    return h.sort_values("attempted_at", kind="stable").reset_index(drop=True)


def test_failed_retries_at_good_times_lower_the_later_chances(tmp_path: Path) -> None:
    h = _history()
    model, _ = train(h, out=tmp_path / "m", source="two kinds of customer")
    assert model.sequence_booster is not None and model.manifest["sequence_model"]["fitted"]
    at = datetime(2026, 3, 5, 15, tzinfo=UTC)  # a good hour, third retry
    row = {
        "invoice_id": "in_new",
        "customer_id": "cus_new",
        "amount": 4900,
        "currency": "usd",
        "decline_code": "do_not_honor",
        "network_advice_code": "",
        "card_brand": "visa",
        "card_funding": "debit",
        "card_country": "US",
        "card_exp_month": 12,
        "card_exp_year": 2031,
        "customer_timezone": "America/New_York",
        "customer_created_at": at - timedelta(days=400),
        "first_failed_at": at - timedelta(days=3),
        "at": at,
        "attempt_number": 4,
    }
    rows = prepare(pd.DataFrame([row]), CustomerHistory.build(h.head(0)))
    x = feature_matrix(rows, model.vocab)
    day = np.array([24.0])  # a day after the previous failed retry
    p_good_hours = model.predict_sequence(x, np.array([1.0]), day)  # the two failed retries were likely ones
    p_bad_hours = model.predict_sequence(x, np.array([0.2]), day)  # they were long shots
    assert p_good_hours[0] < p_bad_hours[0] - 0.1, (p_good_hours, p_bad_hours)


def test_the_curse_correction_lowers_a_chosen_plans_probability(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import billops.recovery.timing as timing

    h = _history(flat=True)
    screened, _ = train(h, out=tmp_path / "screened", source="the hour is noise")
    # Every candidate hour scored by the whole model: the plan is a maximum over the model's own noise.
    monkeypatch.setattr(timing, "SCREEN_FRACTION", 1.0)
    model, _ = train(h, out=tmp_path / "m", source="the hour is noise")
    c = model.manifest["curse_correction"]
    assert c["applied"] and c["plans"] >= 100
    # The chooser's favourite hours are its own noise: the judge sees less at the same times.
    assert c["mean_judged"] < c["mean_chosen"]
    assert c["mean_corrected"] < c["mean_chosen"]
    # Ranking the hours with the first trees only chooses less of that noise: a smaller curse.
    s = screened.manifest["curse_correction"]
    assert s["mean_chosen"] - s["mean_judged"] < c["mean_chosen"] - c["mean_judged"], (s, c)
    # Monotone, 0 stays 0: a better plan never scores lower, no plan scores nothing.
    assert np.all(np.diff(model.curse_y) >= 0) and model.curse_y[0] == 0.0
    assert model.plan_probability([]) == 0.0
    assert model.plan_probability([0.5, 0.5]) <= 0.75 + 1e-9


def test_an_artifact_whose_sequence_model_predates_the_gap_input_still_judges(tmp_path: Path) -> None:
    """Artifacts trained before `hours_since_previous_attempt` have a sequence booster with one extra
    input (the evidence): it gets exactly that, and no spacing curves means a factor of 1."""
    import dataclasses

    import lightgbm

    from billops.recovery.model import FEATURES
    from billops.recovery.spacing import spacing_factor

    model, _ = train(_history(), out=tmp_path / "m", source="two kinds of customer")
    rng = np.random.default_rng(0)
    x_old = rng.random((400, len(FEATURES) + 1))
    y_old = (x_old[:, -1] < 0.5).astype(float)
    old_booster = lightgbm.train(
        {"objective": "binary", "verbose": -1, "min_data_in_leaf": 5}, lightgbm.Dataset(x_old, y_old), 5
    )
    old = dataclasses.replace(
        model, sequence_booster=old_booster, seq_x=np.array([0.0, 1.0]), seq_y=np.array([0.0, 1.0])
    )
    old.manifest = {k: v for k, v in model.manifest.items() if k != "spacing"}
    x = rng.random((3, len(FEATURES)))
    p = old.predict_sequence(x, np.array([0.1, 0.9, 0.5]), np.array([5.0, 50.0, 500.0]))
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
    assert np.allclose(p, old_booster.predict(np.column_stack([x, [0.1, 0.9, 0.5]])))
    assert np.all(spacing_factor(old.manifest.get("spacing"), np.array(["soft"]), np.array([1.0])) == 1.0)
