"""Training the recovery model on an attempts history, with a time split: the oldest 70 % of failed
invoices (by first failure) train LightGBM, the next 15 % stop the boosting early and fit the isotonic
calibration, the newest 15 % measure it (AUC, Brier score, log loss). No invoice straddles two slices."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from billops.errors import InputError
from billops.recovery.model import (
    CATEGORICAL,
    FEATURES,
    MAX_ROUNDS,
    MIN_EXAMPLES,
    PARAMS,
    CustomerHistory,
    RecoveryModel,
    build_vocab,
    feature_matrix,
    library_versions,
    prepare,
    save_model,
    training_examples,
)

SPLITS = (0.70, 0.85)


def _iso(t: Any) -> str | None:
    if t is None or pd.isna(t):
        return None
    return pd.Timestamp(t).tz_convert(UTC).isoformat().replace("+00:00", "Z")


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    out: dict[str, Any] = {"rows": len(y), "base_rate": float(y.mean()) if len(y) else None}
    if len(y) and 0 < y.sum() < len(y):
        out["auc"] = float(roc_auc_score(y, p))
        out["log_loss"] = float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6)))
    else:
        out["auc"] = None
        out["log_loss"] = None
    out["brier"] = float(brier_score_loss(y, p)) if len(y) else None
    return out


def split_by_invoice_time(ex: pd.DataFrame) -> np.ndarray:
    """0 train, 1 calibration, 2 test, by the invoice's first failure (no invoice in two slices)."""
    firsts = ex.groupby("invoice_id", sort=False)["first_failed_at"].first().sort_values(kind="stable")
    n = len(firsts)
    cut1, cut2 = int(n * SPLITS[0]), int(n * SPLITS[1])
    part = pd.Series(np.zeros(n, dtype=np.int64), index=firsts.index)
    part.iloc[cut1:cut2] = 1
    part.iloc[cut2:] = 2
    return part.reindex(ex["invoice_id"]).to_numpy()


def train(attempts: pd.DataFrame, *, out: Path, source: str) -> tuple[RecoveryModel, dict[str, Any]]:
    """Train, calibrate, measure and save a model. Returns the loaded artifact and a timing report."""
    import lightgbm
    from sklearn.isotonic import IsotonicRegression

    started = time.perf_counter()
    ex = training_examples(attempts)
    excluded = int(ex.attrs.get("new_card_retries_excluded", 0))
    n_pos = int(ex["label"].sum()) if len(ex) else 0
    if len(ex) < MIN_EXAMPLES or n_pos == 0 or n_pos == len(ex):
        raise InputError(
            f"the history holds {len(ex)} blind retries of failed invoices ({n_pos} succeeded); training "
            f"needs at least {MIN_EXAMPLES} with both outcomes. Import more history (billops history "
            "import) or keep the rules scorer (it decides whenever no model is registered)."
        )
    history = CustomerHistory.build(attempts)
    ex = prepare(ex, history)
    part = split_by_invoice_time(ex)
    train_rows = ex[part == 0]
    vocab = build_vocab(train_rows)
    x = feature_matrix(ex, vocab)
    y = ex["label"].to_numpy()
    prep_s = time.perf_counter() - started

    t0 = time.perf_counter()
    cats = [FEATURES.index(c) for c in CATEGORICAL]
    dtrain = lightgbm.Dataset(x[part == 0], y[part == 0], feature_name=FEATURES, categorical_feature=cats)
    dcal = lightgbm.Dataset(x[part == 1], y[part == 1], reference=dtrain)
    booster = lightgbm.train(
        PARAMS,
        dtrain,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[dcal],
        callbacks=[lightgbm.early_stopping(30, verbose=False)],
    )
    booster.free_dataset()
    fit_s = time.perf_counter() - t0

    raw = np.asarray(booster.predict(x, num_iteration=booster.best_iteration), dtype=np.float64)
    if booster.best_iteration and booster.best_iteration < booster.current_iteration():
        booster = lightgbm.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(raw[part == 1], y[part == 1])
    knots = (np.asarray(iso.X_thresholds_, dtype=np.float64), np.asarray(iso.y_thresholds_, dtype=np.float64))
    cal = np.interp(raw, knots[0], knots[1])

    # Plan-level calibration: successive retries of one invoice are not independent (a customer with no
    # funds stays without funds), so 1 − Π(1 − p) overstates a plan's chance. Map it onto what happened
    # to the calibration slice's invoices under their own (historical) retries.
    def per_invoice(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = pd.DataFrame({"inv": ex.loc[mask, "invoice_id"].to_numpy(), "q": 1 - cal[mask], "y": y[mask]})
        agg = g.groupby("inv", sort=False).agg(q=("q", "prod"), y=("y", "max"))
        return 1 - agg["q"].to_numpy(), agg["y"].to_numpy()

    plan_raw, plan_y = per_invoice(part == 1)
    plan_iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(plan_raw, plan_y)
    plan_knots = (
        np.asarray(plan_iso.X_thresholds_, dtype=np.float64),
        np.asarray(plan_iso.y_thresholds_, dtype=np.float64),
    )
    test_raw, test_y = per_invoice(part == 2)
    plan_test = metrics(test_y, np.interp(test_raw, plan_knots[0], plan_knots[1]))

    def window(mask: np.ndarray) -> dict[str, Any]:
        sub = ex.loc[mask, "first_failed_at"]
        return {
            "examples": int(mask.sum()),
            "invoices": int(ex.loc[mask, "invoice_id"].nunique()),
            "first_failure_from": _iso(sub.min()) if len(sub) else None,
            "first_failure_to": _iso(sub.max()) if len(sub) else None,
        }

    manifest: dict[str, Any] = {
        "kind": "recovery-retry-success",
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "source": source,
        "features": FEATURES,
        "categorical": CATEGORICAL,
        "vocab": vocab,
        "params": {**PARAMS, "best_iteration": int(booster.current_iteration())},
        "calibration": "isotonic on the calibration slice",
        "training": {
            "attempts": len(attempts),
            "attempts_from": _iso(attempts["attempted_at"].min()),
            "attempts_to": _iso(attempts["attempted_at"].max()),
            "examples": len(ex),
            "new_card_retries_excluded": excluded,
            "splits": {
                "train": window(part == 0),
                "calibration": window(part == 1),
                "test": window(part == 2),
            },
        },
        "metrics": {
            "test": metrics(y[part == 2], cal[part == 2]),
            "test_uncalibrated": metrics(y[part == 2], raw[part == 2]),
            "calibration": metrics(y[part == 1], cal[part == 1]),
            "plan_test": plan_test,
        },
        "library_versions": library_versions(),
    }
    model = save_model(out, booster, knots, manifest, plan_knots=plan_knots)
    report = {"prepare_seconds": prep_s, "fit_seconds": fit_s, "total_seconds": time.perf_counter() - started}
    return model, report
