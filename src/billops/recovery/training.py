"""Training the recovery model on an attempts history, with a time split: the oldest 70 % of failed
invoices (by first failure) train LightGBM, the next 15 % stop the boosting early and fit the isotonic
calibration, the newest 15 % measure it (AUC, Brier score, log loss). No invoice straddles two slices.

Beside the retry model: a sequence model (the same features, the earlier retries' summed out-of-fold
probabilities and the hours since the previous attempt; judge.py), and the spacing curves (how a
retry's chance moves with the time since the failed attempt before it; spacing.py), both from
out-of-fold probabilities of two half-models fitted on disjoint halves of the training slice.

The chosen plan's probability is a maximum over candidate times, so it is biased upwards by the model's
own errors (the optimizer's curse). Training measures that bias out of fold (`curse.py`): the two
half-models plan the calibration slice's failures, each judging the other's chosen times; a line from
the chooser's plan probability to the judge's, scaled to the main model, is kept with the artifact."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from billops.errors import InputError
from billops.recovery.curse import curse_map, half_models
from billops.recovery.labels import example_weights
from billops.recovery.model import (
    CATEGORICAL,
    FEATURES,
    FEATURES_SEQUENCE,
    GAP_FEATURE,
    MAX_ROUNDS,
    MIN_EXAMPLES,
    PARAMS,
    SEQUENCE_FEATURE,
    CustomerHistory,
    RecoveryModel,
    build_vocab,
    feature_matrix,
    library_versions,
    prepare,
    save_model,
    training_examples,
)
from billops.recovery.spacing import fit_spacing

SPLITS = (0.70, 0.85)


def sequence_evidence(invoice_ids: pd.Series, p: np.ndarray) -> np.ndarray:
    """Per row (rows of one invoice in time order): the sum of `p` over the invoice's earlier rows."""
    s = pd.Series(p, index=invoice_ids.index)
    return (s.groupby(invoice_ids.to_numpy(), sort=False).cumsum() - s).to_numpy(dtype=np.float64)


def out_of_fold(
    x: np.ndarray, part: np.ndarray, cal: np.ndarray, halves: list[Any], half: np.ndarray
) -> np.ndarray:
    """Retry probabilities no row's own label shaped: training rows from the half-model that did not
    see them, the later slices from the retry model (which did not see them either)."""
    p = cal.copy()
    train = part == 0
    for h in (0, 1):
        sel = train & (half == h)
        p[sel] = halves[1 - h].predict(x[sel])
    return p


def _fit_sequence(
    x2: np.ndarray, y: np.ndarray, fit: np.ndarray, cal: np.ndarray
) -> tuple[Any, tuple[np.ndarray, np.ndarray]]:
    """A sequence booster on rows `fit`, stopped early and calibrated (isotonic) on rows `cal`."""
    import lightgbm
    from sklearn.isotonic import IsotonicRegression

    cats = [FEATURES_SEQUENCE.index(c) for c in CATEGORICAL]
    d = lightgbm.Dataset(x2[fit], y[fit], feature_name=FEATURES_SEQUENCE, categorical_feature=cats)
    dcal = lightgbm.Dataset(x2[cal], y[cal], reference=d)
    # More chance spent on failed retries never raises the next one's: a monotone (decreasing) effect of
    # the evidence. Plans put their retries where the model likes them, so their evidence sits at the
    # top of what the history shows; unconstrained, the trees' ups and downs there made the plans'
    # probabilities 0.04-0.15 too high on some declines and their calibration depend on the seed.
    mono = [-1 if name == SEQUENCE_FEATURE else 0 for name in FEATURES_SEQUENCE]
    booster = lightgbm.train(
        {**PARAMS, "monotone_constraints": mono, "monotone_constraints_method": "basic"},
        d,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[dcal],
        callbacks=[lightgbm.early_stopping(30, verbose=False)],
    )
    if booster.best_iteration and booster.best_iteration < booster.current_iteration():
        booster = lightgbm.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
    raw = np.asarray(booster.predict(x2[cal]), dtype=np.float64)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y[cal])
    return booster, (np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float))


def _sequence_models(
    ex: pd.DataFrame,
    x: np.ndarray,
    y: np.ndarray,
    part: np.ndarray,
    p: np.ndarray | None,
    halves: list[RecoveryModel] | None,
    half: np.ndarray,
) -> tuple[tuple[Any, tuple[np.ndarray, np.ndarray]] | None, dict[str, Any]]:
    """The sequence model: the retry model's features plus the earlier retries' summed out-of-fold
    probabilities and the hours since the previous attempt. Each half-model gets its own, fitted on
    its half with the same evidence and calibrated with its own retry model's evidence, so that the
    optimizer's-curse measurement (curse.py) plans and judges exactly as the service does."""
    if p is None or halves is None:
        return None, {}
    train, calib = part == 0, part == 1
    gap = ex["gap_hours"].to_numpy(dtype=np.float64)
    x2 = np.column_stack([x, sequence_evidence(ex["invoice_id"], p), gap])
    booster, knots = _fit_sequence(x2, y, train, calib)
    raw = np.asarray(booster.predict(x2[part == 2]), dtype=np.float64)
    report = {"test_sequence": metrics(y[part == 2], np.interp(raw, knots[0], knots[1]))}
    for h, model in enumerate(halves):
        # Calibration rows: the evidence this half's own retry model gives them (as in service).
        ph = p.copy()
        ph[calib] = model.predict(x[calib])
        x2h = np.column_stack([x, sequence_evidence(ex["invoice_id"], ph), gap])
        model.sequence_booster, (model.seq_x, model.seq_y) = _fit_sequence(x2h, y, train & (half == h), calib)
    return (booster, knots), report


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
    refreshed = int(ex.attrs.get("refreshed_card_retries", 0))
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
    # Retries BillOps explored or chose carry their propensity: importance weights (labels.py), so the
    # model learns the history's times as if chosen at random, not its own policy's favourites.
    weights = example_weights(ex[part == 0])
    dtrain = lightgbm.Dataset(
        x[part == 0], y[part == 0], weight=weights, feature_name=FEATURES, categorical_feature=cats
    )
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

    # Plan level: the model's hazards are conditional on the earlier retries having failed (examples
    # stop at an invoice's first success and carry the attempt number), so a plan's chance is
    # 1 − Π(1 − p_k). On the historical retries of the test slice that is measured as it stands; for a
    # chosen plan it is corrected for the optimizer's curse (curse.py). (An isotonic map fitted on the
    # history's own retry sequences was tried and dropped: on the simulator's held-out failures it
    # was coarser and less calibrated than the product itself, ECE 0.12 against 0.07.)
    def per_invoice(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = pd.DataFrame({"inv": ex.loc[mask, "invoice_id"].to_numpy(), "q": 1 - cal[mask], "y": y[mask]})
        agg = g.groupby("inv", sort=False).agg(q=("q", "prod"), y=("y", "max"))
        return 1 - agg["q"].to_numpy(), agg["y"].to_numpy()

    test_raw, test_y = per_invoice(part == 2)
    plan_test = metrics(test_y, test_raw)

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
        "calibration": "isotonic per retry on the calibration slice; plans: 1 − Π(1 − p) corrected "
        "for the optimizer's curse out of fold",
        "training": {
            "attempts": len(attempts),
            "attempts_from": _iso(attempts["attempted_at"].min()),
            "attempts_to": _iso(attempts["attempted_at"].max()),
            "examples": len(ex),
            "new_card_retries_excluded": excluded,
            "refreshed_card_retries": refreshed,
            # Retries per failure decline code: a needs-new-card code with too few is not planned blind.
            "decline_support": {
                str(k): int(v) for k, v in ex.loc[part == 0, "decline_code"].value_counts().items()
            },
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
        "importance_weighted_examples": 0 if weights is None else int((weights != 1.0).sum()),
    }
    t0 = time.perf_counter()
    halves, half = half_models(ex, x, y, part, vocab, rounds=int(booster.current_iteration()))
    p_oof = None if halves is None else out_of_fold(x, part, cal, halves, half)
    sequence, seq_metrics = _sequence_models(ex, x, y, part, p_oof, halves, half)
    manifest["metrics"].update(seq_metrics)
    manifest["spacing"] = (
        fit_spacing(
            ex["decline_category"].to_numpy(),
            ex["attempt_number"].to_numpy(dtype=np.float64),
            ex["gap_hours"].to_numpy(dtype=np.float64),
            y,
            p_oof,
        )
        if p_oof is not None
        else {"rows": 0, "curves": {}, "why": "too few training retries to split in two"}
    )
    manifest["sequence_model"] = {
        "features": [SEQUENCE_FEATURE, GAP_FEATURE],
        "fitted": sequence is not None,
    }
    for hm in halves or []:  # the half-models plan as the main model will (curse.py)
        hm.manifest.update(
            spacing=manifest["spacing"],
            training={"decline_support": manifest["training"]["decline_support"]},
        )
    curse_knots, curse_report = curse_map(attempts, ex, part, history, vocab, halves)
    manifest["curse_correction"] = {**curse_report, "seconds": round(time.perf_counter() - t0, 2)}
    model = save_model(
        out, booster, knots, manifest, curse_knots=curse_knots, history=attempts, sequence=sequence
    )
    report = {"prepare_seconds": prep_s, "fit_seconds": fit_s, "total_seconds": time.perf_counter() - started}
    return model, report
