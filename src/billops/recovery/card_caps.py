"""The per-card network caps for learned plans: each card's earlier attempts, indexed once per history,
and the retries that would break a cap in the versioned rules file (Visa reattempts per 30 days,
Mastercard 10 per 24 h and 35 per 30 days) dropped with a note, never moved silently."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from billops.recovery.model import RecoveryModel
from billops.recovery.planner import NetworkRules, _cap_violation

if TYPE_CHECKING:
    from billops.recovery.timing_plan import TimingPlan


_CARD_KEY = ["customer_id", "card_brand", "card_exp_month", "card_exp_year"]
_SAFE_ATTEMPTS = 10  # no cap in the rules file is tighter than 10 attempts (Mastercard, 24 h)


def _key_column(frame: pd.DataFrame, c: str) -> np.ndarray:
    v = frame[c]
    if c.startswith("card_exp"):
        return np.asarray(pd.to_numeric(v, errors="coerce").fillna(-1).astype(np.int64).to_numpy())
    return np.asarray(v.fillna("").astype(str).to_numpy(), dtype=object)


@dataclass
class CardIndex:
    """Earlier attempts per card (customer, brand, expiry), sorted, for the per-card network caps.
    Built once per history; each failure then costs two binary searches."""

    columns: list[pd.Index]  # the values seen, per key column
    cards: pd.Index  # combined column codes → dense card code (its position)
    composite: np.ndarray  # dense card code << 40 | epoch seconds, sorted

    @classmethod
    def build(cls, attempts: pd.DataFrame | None) -> CardIndex:
        if attempts is None or not len(attempts):
            return cls([pd.Index([]) for _ in _CARD_KEY], pd.Index([], dtype=np.int64), np.zeros(0, np.int64))
        columns, combined = [], np.zeros(len(attempts), dtype=np.int64)
        for c in _CARD_KEY:
            codes, uniq = pd.factorize(_key_column(attempts, c))
            columns.append(pd.Index(uniq))
            combined = combined * (len(uniq) + 1) + codes
        dense, cards = pd.factorize(combined)
        sec = pd.to_datetime(attempts["attempted_at"], utc=True).dt.tz_localize(None).to_numpy()
        sec = sec.astype("datetime64[s]").astype(np.int64)
        return cls(columns, pd.Index(cards), np.sort(dense.astype(np.int64) * (1 << 40) + sec))

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """The dense card code of each row (−1: a card with no earlier attempt)."""
        combined = np.zeros(len(frame), dtype=np.int64)
        missing = np.zeros(len(frame), dtype=bool)
        for c, uniq in zip(_CARD_KEY, self.columns, strict=True):
            idx = uniq.get_indexer(_key_column(frame, c))
            missing |= idx < 0
            combined = combined * (len(uniq) + 1) + np.maximum(idx, 0)
        out = self.cards.get_indexer(combined).astype(np.int64)
        out[missing] = -1
        return out


def apply_caps(
    model: RecoveryModel,
    f: pd.DataFrame,
    live: np.ndarray,
    plans: list[TimingPlan | None],
    cards: CardIndex,
    rules: NetworkRules,
) -> None:
    """Drop retries that would break a per-card cap, counting the card's attempts in the 30 days before
    the failure (the failure included). Cards far from every cap skip the exact check."""
    todo = [int(i) for i in live if plans[i] is not None and plans[i].retries]
    if not todo:
        return
    f_ids = cards.codes(f.loc[todo])
    fa = f.loc[todo, "failed_at"].dt.tz_localize(None).to_numpy().astype("datetime64[s]").astype(np.int64)
    known_card = f_ids >= 0
    lo = np.where(
        known_card, np.searchsorted(cards.composite, f_ids * (1 << 40) + fa - 30 * 86400, "left"), 0
    )
    hi = np.where(known_card, np.searchsorted(cards.composite, f_ids * (1 << 40) + fa, "right"), 0)
    brands = f["card_brand"].astype(str).to_numpy()
    for n, i in enumerate(todo):
        plan = plans[i]
        assert plan is not None
        if hi[n] - lo[n] + 1 + len(plan.retries) <= _SAFE_ATTEMPTS:
            continue
        failed_at = pd.Timestamp(int(fa[n]), unit="s", tz="UTC").to_pydatetime()
        known = [
            pd.Timestamp(int(v) - f_ids[n] * (1 << 40), unit="s", tz="UTC").to_pydatetime()
            for v in cards.composite[lo[n] : hi[n]]
        ]
        if failed_at not in known:
            known.append(failed_at)
        network, limits = rules.for_brand(str(brands[i]))
        net_window = timedelta(days=int(limits.get("window_days", 30)))
        kept_t: list[datetime] = []
        kept_p: list[float] = []
        for t, pk in zip(plan.retries, plan.probabilities, strict=True):
            why = _cap_violation(network, limits, known + kept_t, t, net_window)
            if why:
                plan.notes.append(f"retry at {t:%Y-%m-%d %H:%M} UTC dropped: {why}")
                continue
            kept_t.append(t)
            kept_p.append(pk)
        if len(kept_t) != len(plan.retries):
            plan.retries, plan.probabilities = kept_t, kept_p
            plan.recovery_probability = model.plan_probability(kept_p)
            if not kept_t:
                plan.blocked = "every retry would break a card-network attempt cap"
