"""The sequence model's judgement of a plan: retry k's chance given that the retries before it failed.

The retry model (and the planner's dynamic programme) treat a plan's retries one at a time. The sequence
model (training.py) also sees what the earlier retries of the plan had going for them, their summed
retry-model probabilities (`SEQUENCE_FEATURE`: failed retries at times the model liked are evidence that
the invoice will not be paid) and the hours since the previous attempt (`GAP_FEATURE`). The plan's
recovery probability is computed from these chances; the optimizer's-curse measurement (curse.py) uses
the same function with the other half-model as the judge.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from billops.recovery.model import RecoveryModel, StaticFeatures, assemble

if TYPE_CHECKING:
    from billops.recovery.timing_plan import TimingPlan


def sequence_chances(
    model: RecoveryModel,
    st: StaticFeatures,
    f: pd.DataFrame,
    idx: np.ndarray,
    retries: list[list[datetime]],
) -> np.ndarray:
    """The sequence model's chances of every retry of the plans `retries` (one list per row `idx[r]` of
    `f`, in time order), flattened in plan order. `f` carries failed_at (the last failure) and
    attempts_so_far (> 1: a re-plan after failed retries, whose own times are not in the frame; their
    evidence is the retry model's chance at the last one, times their number)."""
    lengths = np.array([len(r) for r in retries], dtype=np.int64)
    if not lengths.sum():
        return np.zeros(0)
    a0 = f["attempts_so_far"].to_numpy(dtype=np.int64)
    last = f["failed_at"].dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    prior = np.zeros(len(f))
    again = idx[a0[idx] > 1]
    if len(again):
        p_last = model.predict(assemble(st, again, last[again], a0[again].astype(np.float64)))
        prior[again] = (a0[again] - 1) * p_last
    fi = np.repeat(idx, lengths)
    heads = np.cumsum(lengths) - lengths
    k = np.arange(int(lengths.sum())) - np.repeat(heads, lengths)  # retry number within the plan
    at64 = pd.DatetimeIndex([t for r in retries for t in r]).tz_convert(None).to_numpy()
    at64 = at64.astype("datetime64[s]")
    att = (a0[fi] + 1 + k).astype(np.float64)
    x = assemble(st, fi, at64, att)
    p1 = model.predict(x)  # the retry model's own chances at these times: the evidence
    before = np.cumsum(p1) - p1
    ev = prior[fi] + before - np.repeat(before[heads], lengths)
    prev_at = np.where(k == 0, last[fi], np.roll(at64, 1))  # the previous attempt: failure or retry
    gap_h = (at64 - prev_at).astype(np.int64) / 3600.0
    return model.predict_sequence(x, ev, gap_h)


def judge_sequences(
    model: RecoveryModel,
    st: StaticFeatures,
    f: pd.DataFrame,
    live: np.ndarray,
    plans: list[TimingPlan | None],
    cost_minor: np.ndarray,
) -> None:
    """Re-judge each plan's retries in order with the sequence model. Trailing retries no longer worth
    their cost are dropped; the plan's probability is computed from these chances."""
    rows = [int(i) for i in live if plans[i] is not None and plans[i].retries]
    if not rows:
        return
    chosen = [p for p in (plans[i] for i in rows) if p is not None]
    p2 = sequence_chances(model, st, f, np.asarray(rows), [p.retries for p in chosen])
    amounts = f["amount"].to_numpy(dtype=np.float64)
    pos = 0
    kept: list[list[float]] = []
    for i, plan in zip(rows, chosen, strict=True):
        n = len(plan.retries)
        q = [float(v) for v in p2[pos : pos + n]]
        pos += n
        while q and q[-1] * amounts[i] <= cost_minor[i]:
            q.pop()
            dropped = plan.retries.pop()
            plan.notes.append(
                f"retry at {dropped:%Y-%m-%d %H:%M} UTC dropped: after the earlier retries failed it is "
                "no longer worth its cost"
            )
        plan.probabilities = q
        kept.append(q)
        if not plan.retries:
            plan.blocked = "no retry is worth its cost once the earlier ones have failed"
    for plan, p_plan in zip(chosen, model.plan_probabilities(kept), strict=True):
        plan.recovery_probability = float(p_plan)
