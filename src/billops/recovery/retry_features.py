"""The retry model's features: P(a retry at time t succeeds) is asked of these columns, computed from
what was known before the attempt. The customer's history is taken as of the invoice's first failure,
never after it (`CustomerHistory.as_of`, strictly before), and the candidate time enters only through
its own calendar position in the customer's local time. The same code builds training rows and
planning candidates (`static_features` once per failure, `assemble` per candidate time and attempt
number), so the two cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

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
    "mean_recovery_days",  # days from first failure to payment, over this customer's earlier recoveries
    "recovery_lag_gap_days",  # hours since the first failure / 24 minus that mean
    "last_success_dom_distance",  # days of month between the candidate and the last successful payment
    "dom_retry_success_rate",  # success share of the customer's retries within 2 days of month of it
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
    "mean_recovery_days": "days this customer's earlier failed invoices took to get paid",
    "recovery_lag_gap_days": "days past this customer's usual recovery time",
    "last_success_dom_distance": "days of month from this customer's last successful payment",
    "dom_retry_success_rate": "share of this customer's retries near this day of month that succeeded",
}
WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def local_fields(at: np.ndarray, codes: np.ndarray, zones: list[str]) -> dict[str, np.ndarray]:
    """Hour, weekday (Mon 0), day of month, days in the month and in the previous month, of UTC times
    `at` (naive datetime64) in each row's zone (`zones[codes[r]]`, "" or unknown = UTC)."""
    at = np.asarray(at).astype("datetime64[s]")
    local = at.copy()
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(zones) + 1))
    secs = at.astype(np.int64)
    for z, zone in enumerate(zones):
        pos = order[bounds[z] : bounds[z + 1]]
        if not len(pos) or not zone or zone == "UTC":
            continue
        # A zone's UTC offset changes only on whole quarter hours: convert each distinct quarter hour
        # once (a planner's candidates share a few thousand), then add the offset back to every time.
        quarter, inverse = np.unique(secs[pos] // 900, return_inverse=True)
        try:
            idx = pd.DatetimeIndex((quarter * 900).astype("datetime64[s]").astype("datetime64[ns]"))
            idx = idx.tz_localize("UTC").tz_convert(zone).tz_localize(None)
        except Exception:  # an unknown zone (validated on input; the mirror may still hold one): UTC
            continue
        offset = idx.to_numpy().astype("datetime64[s]").astype(np.int64) - quarter * 900
        local[pos] = (secs[pos] + offset[inverse]).astype("datetime64[s]")
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

    totals: pd.DataFrame  # customer_id, t, past_successes, past_failures, last_success_dom (at t)
    retry_wins: pd.DataFrame  # customer_id, t, past_retry_successes, lag_days_sum, dom_mask, wd0..wd6
    retry_days: pd.DataFrame  # customer_id, t, slot: every retry, slot = local day − 1 (+ 31 if lost)

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
        # The local day of month of each successful payment, carried forward per customer.
        all_parts = local_parts(
            a["attempted_at"].reset_index(drop=True), a["customer_timezone"].reset_index(drop=True)
        )
        dom = pd.Series(np.where(succ, all_parts["day"].to_numpy(), np.nan))
        last_dom = dom.groupby(g["customer_id"].to_numpy(), sort=False).ffill()
        totals = pd.DataFrame(
            {
                "customer_id": g["customer_id"],
                "t": g["t"],
                "past_successes": cum["s"],
                "past_failures": cum["f"],
                "last_success_dom": last_dom.to_numpy(),
            }
        )
        first_at = a.groupby("invoice_id", sort=False)["attempted_at"].transform("first")
        lag_days = ((a["attempted_at"] - first_at).dt.total_seconds() / 86400.0).to_numpy()
        wins = a[succ & is_retry]
        wins_lag = lag_days[succ & is_retry]
        parts = local_parts(
            wins["attempted_at"].reset_index(drop=True), wins["customer_timezone"].reset_index(drop=True)
        )
        w = pd.DataFrame(
            {"customer_id": wins["customer_id"].to_numpy(), "t": wins["attempted_at"].to_numpy()}
        )
        w["one"] = 1
        w["lag"] = wins_lag
        for b in range(31):
            w[f"d{b}"] = (parts["day"].to_numpy() == b + 1).astype(np.int64)
        for d in range(7):
            w[f"wd{d}"] = (parts["weekday"].to_numpy() == d).astype(np.int64)
        cols = ["one", "lag", *[f"d{b}" for b in range(31)], *[f"wd{d}" for d in range(7)]]
        c = w.groupby("customer_id", sort=False)[cols].cumsum() if len(w) else w[cols]
        mask = np.zeros(len(w), dtype=np.int64)
        for b in range(31):
            mask |= (c[f"d{b}"].to_numpy() > 0).astype(np.int64) << b
        retry_wins = pd.DataFrame(
            {
                "customer_id": w["customer_id"],
                "t": w["t"],
                "past_retry_successes": c["one"],
                "lag_days_sum": c["lag"].to_numpy(dtype=np.float64),
                "dom_mask": mask,
            }
        )
        for d in range(7):
            retry_wins[f"wd{d}"] = c[f"wd{d}"].to_numpy()
        # Every retry (won or lost) with its local day of month: `as_of` counts a customer's earlier
        # ones per day (31 slots won, 31 lost) at query time, so nothing per day is stored per row.
        rwin = succ[is_retry]
        rday = np.clip(all_parts["day"].to_numpy()[is_retry], 1, 31)
        retry_days = pd.DataFrame(
            {"t": a["attempted_at"].to_numpy()[is_retry], "slot": rday - 1 + np.where(rwin, 0, 31)}
        )
        retry_days.insert(0, "customer_id", pd.Series(a["customer_id"].to_numpy()[is_retry], dtype=object))
        # Sorted by time and keyed by object-dtype ids once, so that every `as_of` merges directly.
        totals = totals.assign(customer_id=totals["customer_id"].astype(object)).sort_values(
            "t", kind="stable"
        )
        retry_wins = retry_wins.assign(customer_id=retry_wins["customer_id"].astype(object)).sort_values(
            "t", kind="stable"
        )
        return cls(
            totals=totals.reset_index(drop=True),
            retry_wins=retry_wins.reset_index(drop=True),
            retry_days=retry_days,
        )

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
        # The customer's retries strictly before each query time, counted per (won/lost, local day).
        pairs = q[["customer_id", "t", "_row"]].merge(self.retry_days, on="customer_id", suffixes=("", "_r"))
        pairs = pairs[pairs["t_r"].to_numpy() < pairs["t"].to_numpy()]
        flat = np.bincount(
            pairs["_row"].to_numpy(dtype=np.int64) * 62 + pairs["slot"].to_numpy(dtype=np.int64),
            minlength=len(out) * 62,
        )
        doms = pd.DataFrame(flat.reshape(len(out), 62), columns=_RD, index=out.index)
        out = pd.concat([out, doms], axis=1)
        out["lag_days_sum"] = out["lag_days_sum"].fillna(0.0).astype(np.float64)
        out["last_success_dom"] = out["last_success_dom"].astype(np.float64)
        return out.drop(columns=["t", "_row", "customer_id"])


_WD = [f"wd{d}" for d in range(7)]
_RS, _RF = [f"rs{b}" for b in range(31)], [f"rf{b}" for b in range(31)]
_RD = [*_RS, *_RF]  # the columns of `retry_dom_counts`


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
    last_dom: np.ndarray  # local day of month of the customer's last successful payment (NaN: none)
    dom_rate: np.ndarray  # (n, 31): success share of the customer's retries within 2 days of each day


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
    wins = rows["past_retry_successes"].to_numpy(dtype=np.float64)
    lag_sum = rows["lag_days_sum"].to_numpy(dtype=np.float64)
    x[:, col["mean_recovery_days"]] = np.where(wins > 0, lag_sum / np.maximum(wins, 1), np.nan)
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
        last_dom=rows["last_success_dom"].to_numpy(dtype=np.float64),
        dom_rate=_dom_rate(rows[_RS].to_numpy(np.float64), rows[_RF].to_numpy(np.float64)),
    )


def _dom_rate(won: np.ndarray, lost: np.ndarray, half_width: int = 2) -> np.ndarray:
    """Per row and day of month: successes / retries over the days within `half_width` (circular)."""
    ws = sum(np.roll(won, k, axis=1) for k in range(-half_width, half_width + 1))
    wf = sum(np.roll(lost, k, axis=1) for k in range(-half_width, half_width + 1))
    n = ws + wf
    return np.where(n > 0, ws / np.maximum(n, 1), np.nan)


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
    x[:, _COL["recovery_lag_gap_days"]] = (
        x[:, _COL["hours_since_first_failure"]] / 24.0 - x[:, _COL["mean_recovery_days"]]
    )
    x[:, _COL["dom_retry_success_rate"]] = st.dom_rate[fi, np.clip(day - 1, 0, 30)]
    gap = np.abs(day - st.last_dom[fi])
    x[:, _COL["last_success_dom_distance"]] = np.minimum(gap, 31 - gap)  # NaN stays NaN
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
