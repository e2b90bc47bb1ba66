"""The optimizer's curse, measured out of fold.

The planner picks the retry times the model likes best, so the chosen plan's 1 − Π(1 − p_k) is a
maximum over candidates: where the model's error happens to be positive, it is chosen. Its mean is too
high, by an amount that depends on how noisy the model is, hence on the data. Training measures it:

1. the training slice's invoices are split in two halves (by a hash of the invoice id); a model with
   the main model's parameters and number of rounds is fitted on each half, and each is calibrated
   (isotonic, per retry) on the calibration slice like the main model; each half also gets its own
   sequence model (training.py) and the main model's spacing curves (spacing.py);
2. up to `MAX_FAILURES` failures of the calibration slice (invoices none of the three models trained
   on) are planned by each half-model (the chooser) exactly as the service plans (spacing, network
   caps, the chooser's own sequence judgement of its plan), and the chosen times are judged by the
   other half-model's retry and sequence models (`judge.sequence_chances`; its errors are independent
   of the choice). Chooser and judge thus compute the same quantity the main model reports;
3. a Platt-style line is fitted over both directions, logit(judge) ≈ a + b · logit(chooser): how far
   the chooser's maximum overstates what an independent model sees at the same times.

The half-models are noisier than the main model (half the data each), and the curse grows with the
noise, roughly as its standard error, 1/√n: the main model's correction is the half-models' scaled by
`SCALE` = 1/√2. The corrected line is stored as knots on a grid of probabilities and applied to the
main model's plan probability (`RecoveryModel.plan_probability`). A line, not an isotonic step
function: the judge's own noise would otherwise flatten the middle of the range into a few steps.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from billops.recovery.model import (
    CATEGORICAL,
    FEATURES,
    PARAMS,
    CustomerHistory,
    RecoveryModel,
    _thresholds,
    categories,
    static_features,
)

MAX_FAILURES = 4000  # calibration-slice failures planned per direction (bounded training time)
MIN_PLANS = 100  # fewer plans with retries than this: no correction (identity)
WINDOW_DAYS = 21  # the deadline of the planned failures (the policy's default recovery window)
PLAN_RETRIES = 8  # the planner's default budget (`billops recovery plan --max-retries`)
SCALE = 2**-0.5  # the main model trains on twice the half-models' data: its curse is ~1/√2 of theirs
GRID = np.concatenate([[0.0], np.linspace(0.005, 0.995, 199), [1.0]])

IDENTITY = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))


def _half(invoice_ids: pd.Series) -> np.ndarray:
    """0 or 1 per row, from a stable hash of the invoice id (the same split on every run)."""
    uniq, codes = np.unique(invoice_ids.astype(str).to_numpy(), return_inverse=True)
    bits = np.array([hashlib.sha256(u.encode()).digest()[0] & 1 for u in uniq], dtype=np.int64)
    return bits[codes]


def _failures(attempts: pd.DataFrame, invoice_ids: np.ndarray) -> pd.DataFrame:
    """FAILURES rows (docs/history.md) for the first attempt of each given invoice."""
    a = attempts[attempts["invoice_id"].isin(set(invoice_ids.tolist()))]
    a = a.sort_values(["invoice_id", "attempted_at"], kind="stable")
    f = a.groupby("invoice_id", sort=False).head(1).reset_index(drop=True)
    f = f.rename(columns={"attempted_at": "failed_at"})
    f["deadline"] = f["failed_at"] + timedelta(days=WINDOW_DAYS)
    return f.sort_values("failed_at", kind="stable").reset_index(drop=True)


def half_models(
    ex: pd.DataFrame,
    x: np.ndarray,
    y: np.ndarray,
    part: np.ndarray,
    vocab: dict[str, list[str]],
    *,
    rounds: int,
) -> tuple[list[RecoveryModel] | None, np.ndarray]:
    """Two retry models fitted on the two halves of the training slice (by invoice), each calibrated on
    the calibration slice; None when a half is too small. Also returns each row's half (0/1)."""
    import lightgbm
    from sklearn.isotonic import IsotonicRegression

    half = _half(ex["invoice_id"])
    train = part == 0
    cats = [FEATURES.index(c) for c in CATEGORICAL]
    models: list[RecoveryModel] = []
    for h in (0, 1):
        sel = train & (half == h)
        if sel.sum() < 100 or len(np.unique(y[sel])) < 2:
            return None, half
        d = lightgbm.Dataset(x[sel], y[sel], feature_name=FEATURES, categorical_feature=cats)
        booster = lightgbm.train(PARAMS, d, num_boost_round=max(1, rounds))
        raw = np.asarray(booster.predict(x[part == 1]), dtype=np.float64)
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y[part == 1])
        models.append(
            RecoveryModel(
                path=None,  # type: ignore[arg-type]  # in memory only
                manifest={"vocab": vocab, "version": f"half-{h}"},
                booster=booster,
                knots_x=np.asarray(iso.X_thresholds_, float),
                knots_y=np.asarray(iso.y_thresholds_, float),
                plan_x=IDENTITY[0],
                plan_y=IDENTITY[1],
                attempt_thresholds=np.asarray(_thresholds(booster, FEATURES.index("attempt_number")), float),
            )
        )
    return models, half


def curse_map(
    attempts: pd.DataFrame,
    ex: pd.DataFrame,
    part: np.ndarray,
    history: CustomerHistory,
    vocab: dict[str, list[str]],
    models: list[RecoveryModel] | None,
) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """The correction knots (chooser → judge, scaled to the main model), and what was measured."""
    from billops.recovery.judge import sequence_chances
    from billops.recovery.planner import load_network_rules
    from billops.recovery.timing import CardIndex, plan_timing

    if models is None:
        return IDENTITY, {"applied": False, "why": "too few training retries to split in two"}
    cal_invoices = ex.loc[part == 1, "invoice_id"].drop_duplicates().to_numpy()
    if len(cal_invoices) > MAX_FAILURES:
        keep = np.sort(np.argsort(_hash_order(cal_invoices))[:MAX_FAILURES])
        cal_invoices = cal_invoices[keep]
    fails = _failures(attempts, cal_invoices)
    agg = history.as_of(fails["customer_id"], fails["failed_at"])
    for col in agg.columns:
        fails[col] = agg[col].to_numpy()
    fails["first_failed_at"] = fails["failed_at"]
    fails["decline_code"] = fails["decline_code"].fillna("").replace("", "generic_decline")
    fails["network_advice_code"] = fails["network_advice_code"].fillna("")
    fails["decline_category"] = categories(
        fails["decline_code"], fails["network_advice_code"], fails["card_brand"].fillna("")
    )["decline_category"].to_numpy()
    st = static_features(fails, vocab)
    rules = load_network_rules()
    cards = CardIndex.build(attempts)
    fails["attempts_so_far"] = 1
    chosen: list[float] = []
    judged: list[float] = []
    for c, j in ((0, 1), (1, 0)):
        # The chooser plans as the service does (spacing, network caps, its own sequence judgement);
        # the judge sees the same times through its own retry and sequence models.
        plans = plan_timing(
            models[c], fails, history, cards, max_retries=PLAN_RETRIES, rules=rules, explain=False
        )
        idx = np.array([i for i, p in enumerate(plans) if p.retries], dtype=np.int64)
        if not len(idx):
            continue
        q = sequence_chances(models[j], st, fails, idx, [plans[i].retries for i in idx])
        lengths = np.array([len(plans[i].retries) for i in idx])
        log_miss = np.add.reduceat(np.log1p(-np.clip(q, 0.0, 1 - 1e-9)), np.cumsum(lengths) - lengths)
        for i, lm in zip(idx, log_miss, strict=True):
            chosen.append(1.0 - float(np.prod([1.0 - v for v in plans[i].probabilities])))
            judged.append(1.0 - float(np.exp(lm)))
    if len(chosen) < MIN_PLANS:
        return IDENTITY, {"applied": False, "why": f"only {len(chosen)} plans with retries to measure"}
    cx, jy = np.asarray(chosen), np.asarray(judged)
    lc, lj = _logit(cx), _logit(jy)
    b, a = np.polyfit(lc, lj, 1)
    b = float(np.clip(b, 0.2, 1.5))  # a steep or inverted line is noise, not a correction
    a = float(np.mean(lj) - b * np.mean(lc))
    lg = _logit(GRID)
    corrected = 1.0 / (1.0 + np.exp(-(lg + SCALE * (a + b * lg - lg))))
    corrected[0], corrected[-1] = 0.0, min(1.0, float(corrected[-1]))
    corrected = np.maximum.accumulate(corrected)  # monotone: a better plan never scores lower
    knots = (GRID.copy(), corrected)
    return knots, {
        "applied": True,
        "plans": len(cx),
        "line": {"a": round(a, 4), "b": round(b, 4), "scale": round(SCALE, 4)},
        "mean_chosen": round(float(cx.mean()), 4),
        "mean_judged": round(float(jy.mean()), 4),
        "mean_corrected": round(float(np.interp(cx, knots[0], knots[1]).mean()), 4),
    }


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.log(q / (1 - q))


def _hash_order(ids: np.ndarray) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "big") for i in ids])
