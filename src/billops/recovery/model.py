"""The learned recovery model: P(a retry at time t succeeds | the failure, the card, the history, t).

One LightGBM binary classifier over *retry* attempts, calibrated with isotonic regression on a later,
held-out slice of time, evaluated on the latest slice. Features are computed only from what was known
before the attempt (see `FEATURES`): the customer's history is taken as of the invoice's first failure,
never after it, and the candidate time enters only through its own calendar position in the customer's
local time. The same feature code serves training rows and planning candidates, so the two cannot drift.

Training examples are the retries of invoices whose first attempt failed, up to and including the first
success. A "retry" that used different card data (another brand, expiry, funding or country than the
attempt that failed) is not a blind retry but new card data: it is left out, because a planner can
never choose it.

The artifact is a directory: `model.txt` (LightGBM), `calibration.json` (isotonic knots) and
`manifest.json` (format, version, features and category vocabularies, training window, metrics,
library versions, file digests). The version is `recovery-lgbm-<12 hex>` of the content hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from billops.domain.declines import load_taxonomy
from billops.errors import ConfigError, InputError

FORMAT = "billops-recovery-model/1"
MIN_EXAMPLES = 200  # fewer retries than this in the history: no model (the rules scorer stays in charge)

CATEGORICAL = [
    "decline_code",
    "decline_category",
    "network_advice_code",
    "card_brand",
    "card_funding",
    "card_country",
    "currency",
]
NUMERIC = [
    "attempt_number",  # 2 = the first retry
    "hours_since_first_failure",
    "amount",
    "months_to_expiry",
    "tenure_days",
    "past_successes",  # the customer's payments before this invoice failed
    "past_failures",
    "past_retry_successes",
    "local_hour",  # the candidate time in the customer's time zone (UTC when unknown)
    "local_weekday",
    "local_day_of_month",
    "days_to_month_end",
    "days_since_likely_payday",  # 1st, 15th or last weekday of the month
    "payday_dom_distance",  # to the nearest day of month on which this customer's retries used to succeed
    "days_since_customer_payday",  # since the last such day of month
    "success_weekday_share",  # share of the customer's retry successes on this weekday
]
FEATURES = CATEGORICAL + NUMERIC

LABELS = {
    "decline_code": "decline code",
    "decline_category": "decline category",
    "network_advice_code": "network advice code",
    "card_brand": "card brand",
    "card_funding": "card funding",
    "card_country": "card country",
    "currency": "currency",
    "attempt_number": "attempt number",
    "hours_since_first_failure": "hours since the first failure",
    "amount": "amount",
    "months_to_expiry": "months to card expiry",
    "tenure_days": "customer tenure (days)",
    "past_successes": "earlier successful payments",
    "past_failures": "earlier failed payments",
    "past_retry_successes": "earlier retries that succeeded",
    "local_hour": "local hour",
    "local_weekday": "local weekday",
    "local_day_of_month": "local day of month",
    "days_to_month_end": "days to month end",
    "days_since_likely_payday": "days since a likely payday",
    "payday_dom_distance": "days from this customer's usual paying day",
    "days_since_customer_payday": "days since this customer's usual paying day",
    "success_weekday_share": "share of this customer's recoveries on this weekday",
}
WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.15,  # 0.08 gave AUC +0.002 for 2.3× the trees (and the planning time)
    "num_leaves": 15,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_cat_to_onehot": 8,
    "cat_smooth": 10,
    "verbose": -1,
    "seed": 17,
    "deterministic": True,
    "force_row_wise": True,
}
MAX_ROUNDS = 200


# ---------------------------------------------------------------------------------------------- history


@lru_cache(maxsize=4096)
def _classify(code: str, mac: str, brand: str) -> tuple[str, bool, float]:
    d = load_taxonomy().classify(
        code or "generic_decline", network_advice_code=mac or None, network=brand or None
    )
    never = d.never_retry or d.category.value == "hard"
    return d.category.value, never, float(d.retry_after_hours or 0.0)


def categories(codes: pd.Series, macs: pd.Series, brands: pd.Series) -> pd.DataFrame:
    """Taxonomy category, never-retry flag and network wait (hours) for each (code, MAC, brand)."""
    keys = pd.DataFrame({"c": codes.to_numpy(), "m": macs.to_numpy(), "b": brands.to_numpy()})
    uniq = keys.drop_duplicates()
    rows = [_classify(str(c), str(m), str(b)) for c, m, b in uniq.itertuples(index=False)]
    table = uniq.assign(
        decline_category=[r[0] for r in rows],
        never_retry=[r[1] for r in rows],
        wait_hours=[r[2] for r in rows],
    )
    out = keys.merge(table, on=["c", "m", "b"], how="left")
    out.index = codes.index
    return out[["decline_category", "never_retry", "wait_hours"]]


def local_fields(at: np.ndarray, codes: np.ndarray, zones: list[str]) -> dict[str, np.ndarray]:
    """Hour, weekday (Mon 0), day of month, days in the month and in the previous month, of UTC times
    `at` (naive datetime64) in each row's zone (`zones[codes[r]]`, "" or unknown = UTC)."""
    at = np.asarray(at).astype("datetime64[s]")
    local = at.copy()
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(zones) + 1))
    for z, zone in enumerate(zones):
        pos = order[bounds[z] : bounds[z + 1]]
        if not len(pos) or not zone or zone == "UTC":
            continue
        try:
            idx = pd.DatetimeIndex(at[pos].astype("datetime64[ns]")).tz_localize("UTC").tz_convert(zone)
        except Exception:  # an unknown zone (validated on input; the mirror may still hold one): UTC
            continue
        local[pos] = idx.tz_localize(None).to_numpy().astype("datetime64[s]")
    days = local.astype("datetime64[D]")
    month = days.astype("datetime64[M]")
    first = month.astype("datetime64[D]")
    return {
        "hour": ((local - days).astype(np.int64) // 3600),
        "weekday": (days.astype(np.int64) + 3) % 7,
        "day": (days - first).astype(np.int64) + 1,
        "dim": ((month + 1).astype("datetime64[D]") - first).astype(np.int64),
        "pdim": (first - (month - 1).astype("datetime64[D]")).astype(np.int64),
    }


def local_parts(at: pd.Series, tz: pd.Series) -> pd.DataFrame:
    """`local_fields` for a Series of times and a Series of zone names."""
    codes, zones = pd.factorize(pd.Series(tz).fillna("").astype(str).to_numpy())
    return pd.DataFrame(local_fields(_naive_utc(at).to_numpy(), codes, [str(z) for z in zones]))


@dataclass
class CustomerHistory:
    """Per-customer running aggregates of an attempts table, queryable as of any time (strictly before)."""

    totals: pd.DataFrame  # customer_id, t, past_successes, past_failures (inclusive cumulative at t)
    retry_wins: pd.DataFrame  # customer_id, t, past_retry_successes, dom_mask, wd0..wd6

    @classmethod
    def build(cls, attempts: pd.DataFrame) -> CustomerHistory:
        a = attempts[["customer_id", "invoice_id", "attempted_at", "outcome", "customer_timezone"]]
        a = a.assign(attempted_at=_naive_utc(a["attempted_at"])).sort_values(["attempted_at"], kind="stable")
        succ = (a["outcome"] == "succeeded").to_numpy()
        is_retry = a.groupby("invoice_id", sort=False).cumcount().to_numpy() > 0
        g = pd.DataFrame(
            {
                "customer_id": a["customer_id"].to_numpy(),
                "t": a["attempted_at"].to_numpy(),
                "s": succ.astype(np.int64),
                "f": (~succ).astype(np.int64),
            }
        )
        cum = g.groupby("customer_id", sort=False)[["s", "f"]].cumsum()
        totals = pd.DataFrame(
            {
                "customer_id": g["customer_id"],
                "t": g["t"],
                "past_successes": cum["s"],
                "past_failures": cum["f"],
            }
        )
        wins = a[succ & is_retry]
        parts = local_parts(
            wins["attempted_at"].reset_index(drop=True), wins["customer_timezone"].reset_index(drop=True)
        )
        w = pd.DataFrame(
            {"customer_id": wins["customer_id"].to_numpy(), "t": wins["attempted_at"].to_numpy()}
        )
        w["one"] = 1
        for b in range(31):
            w[f"d{b}"] = (parts["day"].to_numpy() == b + 1).astype(np.int64)
        for d in range(7):
            w[f"wd{d}"] = (parts["weekday"].to_numpy() == d).astype(np.int64)
        cols = ["one", *[f"d{b}" for b in range(31)], *[f"wd{d}" for d in range(7)]]
        c = w.groupby("customer_id", sort=False)[cols].cumsum() if len(w) else w[cols]
        mask = np.zeros(len(w), dtype=np.int64)
        for b in range(31):
            mask |= (c[f"d{b}"].to_numpy() > 0).astype(np.int64) << b
        retry_wins = pd.DataFrame(
            {"customer_id": w["customer_id"], "t": w["t"], "past_retry_successes": c["one"], "dom_mask": mask}
        )
        for d in range(7):
            retry_wins[f"wd{d}"] = c[f"wd{d}"].to_numpy()
        # Sorted by time and keyed by object-dtype ids once, so that every `as_of` merges directly.
        totals = totals.assign(customer_id=totals["customer_id"].astype(object)).sort_values(
            "t", kind="stable"
        )
        retry_wins = retry_wins.assign(customer_id=retry_wins["customer_id"].astype(object)).sort_values(
            "t", kind="stable"
        )
        return cls(totals=totals.reset_index(drop=True), retry_wins=retry_wins.reset_index(drop=True))

    def as_of(self, customer_ids: pd.Series, times: pd.Series) -> pd.DataFrame:
        """Aggregates over each customer's attempts strictly before the given time, row-aligned."""
        q = pd.DataFrame(
            {"customer_id": customer_ids.astype(str).to_numpy(), "t": _naive_utc(times).to_numpy()}
        )
        q["_row"] = np.arange(len(q))
        q = q.sort_values("t", kind="stable")
        # One key type on all sides (pandas may infer its string dtype on one side and object on another).
        q["customer_id"] = q["customer_id"].astype(object)
        out = pd.merge_asof(
            q,
            self.totals,
            on="t",
            by="customer_id",
            allow_exact_matches=False,
        )
        out = pd.merge_asof(
            out,
            self.retry_wins,
            on="t",
            by="customer_id",
            allow_exact_matches=False,
        )
        out = out.sort_values("_row").reset_index(drop=True)
        for col in ["past_successes", "past_failures", "past_retry_successes", "dom_mask", *_WD]:
            out[col] = out[col].fillna(0).astype(np.int64)
        return out.drop(columns=["t", "_row", "customer_id"])


_WD = [f"wd{d}" for d in range(7)]


def _naive_utc(values: Any) -> pd.Series:
    """Any times (aware, naive = UTC, strings, datetimes) as naive UTC datetime64[ns]."""
    t = pd.to_datetime(pd.Series(values), utc=True, format="ISO8601")  # keeps a Series' index
    return t.dt.tz_localize(None).astype("datetime64[ns]")


# ---------------------------------------------------------------------------------------------- features


@dataclass
class StaticFeatures:
    """The parts of the features fixed per failure, computed once; times and attempt numbers vary."""

    x: np.ndarray  # (n, len(FEATURES)); time-dependent columns are filled by `assemble`
    tz_codes: np.ndarray  # index into `zones` per failure
    zones: list[str]  # IANA zone names ("" = UTC)
    first: np.ndarray  # first failure, epoch seconds
    exp_m: np.ndarray
    exp_y: np.ndarray
    created: np.ndarray  # customer created, epoch seconds (NaN unknown)
    mask: np.ndarray  # day-of-month bitmask of the customer's retry successes
    wd: np.ndarray  # (n, 7) weekday counts of the customer's retry successes


def _epoch(values: Any) -> np.ndarray:
    t = pd.to_datetime(pd.Series(values).reset_index(drop=True), utc=True)
    out = (t.dt.tz_localize(None).to_numpy().astype("datetime64[s]").astype(np.int64)).astype(np.float64)
    out[t.isna().to_numpy()] = np.nan
    return out


def static_features(rows: pd.DataFrame, vocab: dict[str, list[str]]) -> StaticFeatures:
    """`rows` carries the failure's decline_code / network_advice_code / decline_category, card_brand,
    card_funding, card_country, card_exp_month, card_exp_year, currency, amount, customer_timezone,
    customer_created_at, first_failed_at and the history aggregates of `CustomerHistory.as_of`."""
    n = len(rows)
    x = np.full((n, len(FEATURES)), np.nan, dtype=np.float64)
    for i, name in enumerate(CATEGORICAL):
        x[:, i] = encode(rows[name], vocab[name])
    col = {name: len(CATEGORICAL) + j for j, name in enumerate(NUMERIC)}
    tz_codes, zones = pd.factorize(rows["customer_timezone"].fillna("").astype(str).to_numpy())
    x[:, col["amount"]] = rows["amount"].to_numpy(dtype=np.float64)
    for name in ("past_successes", "past_failures", "past_retry_successes"):
        x[:, col[name]] = rows[name].to_numpy(dtype=np.float64)
    return StaticFeatures(
        x=x,
        tz_codes=tz_codes,
        zones=[str(z) for z in zones],
        first=_epoch(rows["first_failed_at"]),
        exp_m=pd.to_numeric(rows["card_exp_month"], errors="coerce").to_numpy(dtype=np.float64),
        exp_y=pd.to_numeric(rows["card_exp_year"], errors="coerce").to_numpy(dtype=np.float64),
        created=_epoch(rows["customer_created_at"]),
        mask=rows["dom_mask"].to_numpy(dtype=np.int64),
        wd=rows[_WD].to_numpy(dtype=np.float64),
    )


_COL = {name: len(CATEGORICAL) + j for j, name in enumerate(NUMERIC)}


def assemble(st: StaticFeatures, fi: np.ndarray, at: np.ndarray, attempt: np.ndarray) -> np.ndarray:
    """Feature rows for failure `fi[r]` retried at `at[r]` (datetime64, UTC) as attempt `attempt[r]`."""
    n = len(fi)
    x = st.x[fi]  # fancy indexing: already a copy
    at64 = np.asarray(at).astype("datetime64[s]")
    sec = at64.astype(np.int64).astype(np.float64)
    parts = local_fields(at64, st.tz_codes[fi], st.zones)
    hour, weekday, day, dim, pdim = (parts[c] for c in ("hour", "weekday", "day", "dim", "pdim"))
    ym = at64.astype("datetime64[M]").astype(np.int64)
    at_y, at_m = ym // 12 + 1970, ym % 12 + 1
    x[:, _COL["attempt_number"]] = attempt
    x[:, _COL["hours_since_first_failure"]] = (sec - st.first[fi]) / 3600.0
    x[:, _COL["months_to_expiry"]] = (st.exp_y[fi] - at_y) * 12 + (st.exp_m[fi] - at_m)
    x[:, _COL["tenure_days"]] = (sec - st.created[fi]) / 86400.0
    x[:, _COL["local_hour"]] = hour
    x[:, _COL["local_weekday"]] = weekday
    x[:, _COL["local_day_of_month"]] = day
    x[:, _COL["days_to_month_end"]] = dim - day
    x[:, _COL["days_since_likely_payday"]] = _days_since_likely_payday(day, weekday, dim)
    mask_all = st.mask[fi]
    dist = np.full(n, np.nan)
    since = np.full(n, np.nan)
    rows = np.nonzero(mask_all != 0)[0]  # only customers whose retries succeeded before
    if len(rows):
        mask, d_r, pd_r = mask_all[rows], day[rows], pdim[rows]
        best = np.full(len(rows), 99, dtype=np.int64)
        for b in range(31):
            on = ((mask >> b) & 1).astype(bool)
            d = np.abs(d_r - (b + 1))
            best = np.where(on, np.minimum(best, np.minimum(d, 31 - d)), best)
        dist[rows] = best
        back = np.full(len(rows), 99, dtype=np.int64)
        for k in range(30, -1, -1):
            dom = np.clip(np.where(d_r - k >= 1, d_r - k, d_r - k + pd_r), 1, 31)
            back = np.where(((mask >> (dom - 1)) & 1).astype(bool), k, back)
        since[rows] = np.where(back < 99, back, np.nan)
    x[:, _COL["payday_dom_distance"]] = dist
    x[:, _COL["days_since_customer_payday"]] = since
    wd = st.wd[fi]
    total = wd.sum(axis=1)
    share = np.take_along_axis(wd, weekday.reshape(-1, 1), axis=1)[:, 0]
    x[:, _COL["success_weekday_share"]] = np.where(total > 0, share / np.maximum(total, 1), np.nan)
    return x


def feature_matrix(rows: pd.DataFrame, vocab: dict[str, list[str]]) -> np.ndarray:
    """The model's input for rows that each carry their own time `at` and `attempt_number`."""
    st = static_features(rows, vocab)
    at = pd.to_datetime(rows["at"], utc=True).dt.tz_localize(None).to_numpy()
    return assemble(st, np.arange(len(rows)), at, rows["attempt_number"].to_numpy(dtype=np.float64))


def _days_since_likely_payday(day: np.ndarray, weekday: np.ndarray, dim: np.ndarray) -> np.ndarray:
    """Days since the latest 1st, 15th or last weekday of a month, at or before the local date."""
    since_first = day - 1
    since_15 = np.where(day >= 15, day - 15, 10_000)
    # Last weekday of this month.
    wd_last = (weekday + (dim - day)) % 7
    back = np.where(wd_last == 5, 1, np.where(wd_last == 6, 2, 0))
    lwd = dim - back
    since_lwd = np.where(day >= lwd, day - lwd, 10_000)
    # Last weekday of the previous month: the day before the 1st is `day` days ago.
    wd_prev_last = (weekday - day) % 7
    back_prev = np.where(wd_prev_last == 5, 1, np.where(wd_prev_last == 6, 2, 0))
    since_prev = day + back_prev
    return np.minimum.reduce([since_first, since_15, since_lwd, since_prev])


def encode(values: pd.Series, vocab: list[str]) -> np.ndarray:
    """Category codes by the artifact's vocabulary; values it never saw share the code of "other"."""
    index = {v: i for i, v in enumerate(vocab)}
    other = index.get("other", len(vocab))
    codes, uniq = pd.factorize(pd.Series(values).fillna("").astype(str), sort=False)
    table = np.array([index.get(u, other) for u in uniq], dtype=np.float64)
    return table[codes] if len(uniq) else np.zeros(len(codes))


def build_vocab(rows: pd.DataFrame, min_count: int = 20) -> dict[str, list[str]]:
    vocab = {}
    for name in CATEGORICAL:
        counts = rows[name].fillna("").astype(str).value_counts()
        keep = sorted(v for v, c in counts.items() if c >= min_count and v != "other")
        vocab[name] = [*keep, "other"]
    return vocab


# ---------------------------------------------------------------------------------------------- examples


def training_examples(attempts: pd.DataFrame) -> pd.DataFrame:
    """One row per retry of an invoice whose first attempt failed, with its label and its context.
    `attrs["new_card_retries_excluded"]` counts the payments left out because they used new card data."""
    a = attempts.sort_values(["invoice_id", "attempted_at"], kind="stable").reset_index(drop=True)
    grp = a.groupby("invoice_id", sort=False)
    idx = grp.cumcount()
    succ = (a["outcome"] == "succeeded").astype(np.int64)
    wins_before = succ.groupby(a["invoice_id"]).cumsum() - succ
    first_failed = grp["outcome"].transform("first") == "failed"
    first_at = grp["attempted_at"].transform("first")
    card_cols = ["card_brand", "card_funding", "card_country", "card_exp_month", "card_exp_year"]
    card_key = a["card_brand"].astype(str)
    for c in card_cols[1:]:
        v = a[c]
        if c.startswith("card_exp"):
            v = pd.to_numeric(v, errors="coerce").astype("Int64")
        card_key = card_key + "|" + v.astype(str)
    a = a.assign(_card=card_key)
    grp = a.groupby("invoice_id", sort=False)
    prev = grp[["decline_code", "network_advice_code", "_card"]].shift(1)
    same_card = (a["_card"] == prev["_card"]).to_numpy()
    retry = (idx > 0) & first_failed & (wins_before == 0)
    keep = retry & same_card
    ex = a[keep].copy()
    ex["first_failed_at"] = first_at[keep]
    ex["at"] = ex["attempted_at"]
    ex["attempt_number"] = idx[keep] + 1
    ex["decline_code"] = prev.loc[keep, "decline_code"].fillna("").replace("", "generic_decline")
    ex["network_advice_code"] = prev.loc[keep, "network_advice_code"].fillna("")
    ex["label"] = (ex["outcome"] == "succeeded").astype(np.int64)
    ex = ex.reset_index(drop=True)
    ex.attrs["new_card_retries_excluded"] = int((retry & ~same_card).sum())
    return ex


def prepare(rows: pd.DataFrame, history: CustomerHistory) -> pd.DataFrame:
    """Add the decline category and the customer's history as of the first failure."""
    cats = categories(rows["decline_code"], rows["network_advice_code"], rows["card_brand"])
    rows = rows.assign(decline_category=cats["decline_category"].to_numpy())
    agg = history.as_of(rows["customer_id"], rows["first_failed_at"])
    for col in agg.columns:
        rows[col] = agg[col].to_numpy()
    return rows


# ---------------------------------------------------------------------------------------------- artifact


@dataclass
class RecoveryModel:
    path: Path
    manifest: dict[str, Any]
    booster: Any  # lightgbm.Booster
    knots_x: np.ndarray
    knots_y: np.ndarray
    plan_x: np.ndarray
    plan_y: np.ndarray
    attempt_thresholds: np.ndarray  # the model's split points on attempt_number

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def vocab(self) -> dict[str, list[str]]:
        return dict(self.manifest["vocab"])

    threads: int = 0  # LightGBM threads per prediction (0: all cores); 1 when callers run in parallel

    def raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, num_threads=self.threads), dtype=np.float64)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.knots_x, self.knots_y)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of success, one per row of `x`."""
        if len(x) == 0:
            return np.zeros(0)
        return self.calibrate(self.raw(x))

    def plan_probability(self, retry_probabilities: list[float]) -> float:
        """P(the plan recovers the invoice): 1 − Π(1 − p_k), calibrated at the invoice level."""
        if not retry_probabilities:
            return 0.0
        raw = 1.0 - float(np.prod([1.0 - q for q in retry_probabilities]))
        return float(np.interp(raw, self.plan_x, self.plan_y))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """SHAP contributions (log-odds) per feature; the last column is the bias."""
        return np.asarray(
            self.booster.predict(x, pred_contrib=True, num_threads=self.threads), dtype=np.float64
        )

    def attempt_number_classes(self, values: np.ndarray) -> np.ndarray:
        """Map attempt numbers onto the smallest equal-prediction representative (the model's own
        split thresholds on the feature), so the planner predicts each distinct case once."""
        th = self.attempt_thresholds
        low = values.min() if len(values) else 0.0
        bins = np.searchsorted(th, values, side="left")
        return np.concatenate([[low], np.floor(th) + 1])[bins]


def _thresholds(booster: Any, feature: int) -> list[float]:
    found: set[float] = set()

    def walk(node: dict[str, Any]) -> None:
        if "split_feature" in node:
            if node["split_feature"] == feature:
                found.add(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return sorted(found)


def library_versions() -> dict[str, str]:
    import lightgbm
    import sklearn

    from billops import __version__

    return {
        "lightgbm": lightgbm.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": _platform.python_version(),
        "billops": __version__,
    }


def load_model(path: Path) -> RecoveryModel:
    import lightgbm

    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no manifest.json: not a BillOps recovery model directory") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path / 'manifest.json'}: not valid JSON ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{path}: model format {manifest.get('format')!r}, this BillOps reads {FORMAT!r}")
    for name, digest in manifest.get("files", {}).items():
        f = path / name
        if not f.exists() or _sha256(f) != digest:
            raise ConfigError(
                f"{f}: missing or changed since training (digest mismatch): retrain or restore it"
            )
    if manifest.get("features") != FEATURES:
        raise ConfigError(f"{path}: trained on other features than this BillOps computes: retrain it")
    booster = lightgbm.Booster(model_file=str(path / "model.txt"))
    cal = json.loads((path / "calibration.json").read_text(encoding="utf-8"))
    return RecoveryModel(
        path,
        manifest,
        booster,
        np.asarray(cal["x"], float),
        np.asarray(cal["y"], float),
        np.asarray(cal.get("plan_x", [0.0, 1.0]), float),
        np.asarray(cal.get("plan_y", [0.0, 1.0]), float),
        np.asarray(_thresholds(booster, FEATURES.index("attempt_number")), float),
    )


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def save_model(
    out: Path,
    booster: Any,
    knots: tuple[np.ndarray, np.ndarray],
    manifest: dict[str, Any],
    plan_knots: tuple[np.ndarray, np.ndarray] | None = None,
) -> RecoveryModel:
    """Write the artifact atomically: a temporary sibling directory renamed into place."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        booster.save_model(str(tmp / "model.txt"))
        (tmp / "calibration.json").write_text(
            json.dumps(
                {
                    "method": "isotonic",
                    "x": knots[0].tolist(),
                    "y": knots[1].tolist(),
                    "plan_x": (plan_knots[0] if plan_knots else np.array([0.0, 1.0])).tolist(),
                    "plan_y": (plan_knots[1] if plan_knots else np.array([0.0, 1.0])).tolist(),
                }
            ),
            encoding="utf-8",
        )
        files = {n: _sha256(tmp / n) for n in ("model.txt", "calibration.json")}
        h = hashlib.sha256()
        for n in sorted(files):
            h.update(f"{n}:{files[n]}\n".encode())
        h.update(json.dumps([FEATURES, manifest["vocab"]], sort_keys=True).encode())
        digest = h.hexdigest()
        manifest = {**manifest, "format": FORMAT, "files": files, "hash": digest}
        manifest["version"] = f"recovery-lgbm-{digest[:12]}"
        (tmp / "manifest.json").write_text(
            json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8"
        )
        if out.exists():
            if not (out / "manifest.json").exists() and any(out.iterdir()):
                raise InputError(f"{out}: exists and is not a model directory; refusing to replace it")
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_model(out)


# ---------------------------------------------------------------------------------------------- registry


def registry_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models" / "recovery"


def register(model: RecoveryModel, data_dir: Path) -> Path:
    """Copy an artifact into the registry the service reads (idempotent: same version, same place)."""
    target = registry_dir(data_dir) / model.version
    if target.resolve() == model.path.resolve() or (target / "manifest.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model.version}.", dir=target.parent))
    try:
        for name in ("model.txt", "calibration.json", "manifest.json"):
            shutil.copy2(model.path / name, tmp / name)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def list_models(data_dir: Path) -> list[dict[str, Any]]:
    """Registered models, newest first, each with its manifest (or the error that makes it unusable)."""
    root = registry_dir(data_dir)
    found = []
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith(".") or not d.is_dir():
                continue
            try:
                m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
                found.append({"path": d, "manifest": m, "error": None})
            except (OSError, json.JSONDecodeError) as exc:
                found.append({"path": d, "manifest": {"version": d.name}, "error": str(exc)})
    found.sort(key=lambda r: str(r["manifest"].get("created_at", "")), reverse=True)
    return found


_MODELS: dict[tuple[str, float], RecoveryModel] = {}
_LATEST: dict[str, tuple[float, Path | None]] = {}


def cached_model(path: Path) -> RecoveryModel:
    """`load_model`, once per artifact version on disk (keyed by path and manifest mtime)."""
    path = Path(path).resolve()
    key = (str(path), (path / "manifest.json").stat().st_mtime)
    if key not in _MODELS:
        _MODELS[key] = load_model(path)
    return _MODELS[key]


def latest_model(data_dir: Path) -> RecoveryModel | None:
    """The newest valid registered model, or None (the rules scorer decides then). The registry is
    re-read only when its directory changes (registering renames a directory into it)."""
    root = registry_dir(data_dir)
    try:
        stamp = root.stat().st_mtime
    except FileNotFoundError:
        return None
    cached = _LATEST.get(str(root))
    if cached is None or cached[0] != stamp:
        newest = None
        for entry in list_models(data_dir):
            if entry["error"]:
                continue
            try:
                cached_model(entry["path"])
            except ConfigError:
                continue
            newest = entry["path"]
            break
        cached = (stamp, newest)
        _LATEST[str(root)] = cached
    return cached_model(cached[1]) if cached[1] is not None else None
