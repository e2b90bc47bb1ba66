"""Spacing: how much a retry's chance depends on the time since the invoice's previous failed attempt.

The retry model knows the hours since the *first* failure and the attempt number, not when the attempt
just before failed. Its probability for a later retry is an average over the history's own gaps. Yet a
retry an hour after a failed one meets the same empty account, the same issuer block, the same stale
card; a retry days later may meet a payday, a cleared limit or a refreshed card. Measured on the
development world's held-out retries, later retries within 6 hours of a failed one succeeded at 0.6-0.9
times the model's average, those 4-7 days later at 1.4 times.

Training learns that as a factor per decline category, `g(gap hours)`: out-of-fold retry probabilities
`p` (the half-models', so the rows' own labels never shaped them) against the labels of the retries that
follow a failed retry, in quantile bins of the gap, Σy / Σp with a few pseudo-counts of shrinkage to
1, made non-decreasing in the gap (isotonic, weighted by Σp) and clipped to [`LOW`, `HIGH`]. A category
with fewer than `MIN_ROWS` such retries uses the pooled curve; with fewer than that overall, none (g = 1).

The planner multiplies a later retry's probability by `g(its time − the previous pick's time)` inside
its dynamic programme (recovery/plan_dp.py), so it spreads retries where clustering them would waste
them, and keeps them close where the data says closeness costs nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MIN_ROWS = 300  # retries after a failed retry needed to learn a category's own curve
BINS = 10  # quantile bins of the gap
PSEUDO = 5.0  # pseudo-successes (and as much expected) added per bin: shrinks small bins to 1
LOW, HIGH = 0.2, 3.0
POOLED = "*"


def _curve(gap: np.ndarray, y: np.ndarray, p: np.ndarray) -> tuple[list[float], list[float]]:
    from sklearn.isotonic import IsotonicRegression

    edges = np.unique(np.quantile(gap, np.linspace(0.0, 1.0, BINS + 1)))
    if len(edges) < 2:
        return [0.0], [1.0]
    b = np.clip(np.searchsorted(edges, gap, side="right") - 1, 0, len(edges) - 2)
    sy = np.bincount(b, weights=y, minlength=len(edges) - 1)
    sp = np.bincount(b, weights=p, minlength=len(edges) - 1)
    mid = np.array([np.median(gap[b == i]) if (b == i).any() else np.nan for i in range(len(edges) - 1)])
    ok = np.isfinite(mid) & (sp > 0)
    ratio = (sy[ok] + PSEUDO) / (sp[ok] + PSEUDO)
    iso = IsotonicRegression(increasing=True, y_min=LOW, y_max=HIGH, out_of_bounds="clip")
    fitted = iso.fit_transform(mid[ok], ratio, sample_weight=sp[ok] + PSEUDO)
    return [round(float(v), 3) for v in mid[ok]], [round(float(v), 4) for v in fitted]


def fit_spacing(
    categories: np.ndarray, attempt: np.ndarray, gap_hours: np.ndarray, y: np.ndarray, p: np.ndarray
) -> dict[str, Any]:
    """Knots per decline category (and pooled, key "*") from out-of-fold probabilities `p`. Only
    retries that follow a failed retry (attempt number ≥ 3) count: the first retry's gap is the time
    since the first failure, which the retry model already knows."""
    sel = (attempt >= 3) & np.isfinite(gap_hours) & np.isfinite(p) & (p > 0)
    out: dict[str, Any] = {"rows": int(sel.sum()), "curves": {}}
    if sel.sum() < MIN_ROWS:
        out["why"] = f"only {int(sel.sum())} retries after a failed retry (needs {MIN_ROWS})"
        return out
    cats, gap, yy, pp = categories[sel].astype(str), gap_hours[sel], y[sel].astype(float), p[sel]
    out["curves"][POOLED] = _curve(gap, yy, pp)
    for c in sorted(set(cats.tolist())):
        m = cats == c
        if m.sum() >= MIN_ROWS:
            out["curves"][c] = _curve(gap[m], yy[m], pp[m])
    return out


def spacing_factor(
    spacing: dict[str, Any] | None, categories: np.ndarray, gap_hours: np.ndarray
) -> np.ndarray:
    """g per row: `gap_hours` (any shape, rows along the first axis) for each row's decline category;
    1 where the artifact has no spacing curves."""
    gap = np.asarray(gap_hours, dtype=np.float64)
    curves = (spacing or {}).get("curves") or {}
    if not curves:
        return np.ones_like(gap)
    out = np.ones_like(gap)
    cats = pd.Series(np.asarray(categories).astype(str))
    for c, idx in cats.groupby(cats, sort=False).groups.items():
        x, g = curves.get(str(c)) or curves.get(POOLED) or ([0.0], [1.0])
        rows = np.asarray(idx)
        out[rows] = np.interp(gap[rows], np.asarray(x, float), np.asarray(g, float))
    return out
