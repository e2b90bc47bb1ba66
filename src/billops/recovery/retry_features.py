"""The retry model's features: P(a retry at time t succeeds) is asked of these columns, computed from
what was known before the attempt. The customer's history is taken as of the invoice's first failure,
never after it (`CustomerHistory.as_of`, strictly before), and the candidate time enters only through
its own calendar position in the customer's local time. The same code builds training rows and
planning candidates (`static_features` once per failure, `assemble` per candidate time and attempt
number), so the two cannot drift.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

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


@functools.lru_cache(maxsize=1024)
def zone_info(name: str) -> ZoneInfo:
    """The zone, kept: zoneinfo's own cache holds only 8 strongly, and a history has hundreds."""
    return ZoneInfo(name)


def local_fields(at: np.ndarray, codes: np.ndarray, zones: list[str]) -> dict[str, np.ndarray]:
    """Hour, weekday (Mon 0), day of month, days in the month and in the previous month, of UTC times
    `at` (naive datetime64) in each row's zone (`zones[codes[r]]`, "" or unknown = UTC)."""
    at = np.asarray(at).astype("datetime64[s]")
    secs = at.astype(np.int64)
    local = secs.copy()
    small = np.asarray(codes).astype(np.int16 if len(zones) < 2**15 else np.int64)
    order = np.argsort(small, kind="stable")  # a radix sort for 16-bit codes
    bounds = np.searchsorted(small[order], np.arange(len(zones) + 1))
    for z, zone in enumerate(zones):
        pos = order[bounds[z] : bounds[z + 1]]
        if not len(pos) or not zone or zone == "UTC":
            continue
        # A zone's UTC offset changes only on whole quarter hours: convert each quarter hour of the
        # times' span once (or each distinct one, when the span is long), then add the offset back.
        q = secs[pos] // 900
        q_lo, q_hi = int(q.min()), int(q.max())
        if q_hi - q_lo < 4 * len(pos) + 10_000:
            quarter, inverse = np.arange(q_lo, q_hi + 1, dtype=np.int64), q - q_lo
        else:
            quarter, inverse = np.unique(q, return_inverse=True)
        try:
            idx = pd.DatetimeIndex((quarter * 900).astype("datetime64[s]").astype("datetime64[ns]"))
            idx = idx.tz_localize("UTC").tz_convert(zone_info(zone)).tz_localize(None)
        except Exception:  # an unknown zone (validated on input; the mirror may still hold one): UTC
            continue
        offset = idx.to_numpy().astype("datetime64[s]").astype(np.int64) - quarter * 900
        local[pos] += offset[inverse]
    local = local.astype("datetime64[s]")
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
    """Per-customer running aggregates of an attempts table, queryable as of any time (strictly before).
    Customers are integer codes (their position in `customers`), factorized once per history."""

    customers: pd.Index  # customer ids; a frame's `cust` column is the position here
    totals: pd.DataFrame  # cust, t, past_successes, past_failures, last_success_dom (at t)
    retry_wins: pd.DataFrame  # cust, t, past_retry_successes, lag_days_sum, dom_mask, wd0..wd6
    retry_days: pd.DataFrame  # cust, t, slot: every retry, slot = local day − 1 (+ 31 if lost)

    @classmethod
    def build(cls, attempts: pd.DataFrame) -> CustomerHistory:
        a = attempts[["customer_id", "invoice_id", "attempted_at", "outcome", "customer_timezone"]]
        a = a.assign(attempted_at=_naive_utc(a["attempted_at"])).sort_values(["attempted_at"], kind="stable")
        cust, customers = pd.factorize(a["customer_id"].fillna("").astype(str).to_numpy())
        inv, _ = pd.factorize(a["invoice_id"].fillna("").astype(str).to_numpy())
        cust = cust.astype(np.int64)
        succ = (a["outcome"] == "succeeded").to_numpy()
        is_retry = pd.Series(inv).groupby(inv, sort=False).cumcount().to_numpy() > 0
        g = pd.DataFrame(
            {"s": succ.astype(np.int64), "f": (~succ).astype(np.int64)}, index=pd.RangeIndex(len(a))
        )
        cum = g.groupby(cust, sort=False)[["s", "f"]].cumsum()
        times = a["attempted_at"].to_numpy()
        # The local day of month of each successful payment, carried forward per customer.
        all_parts = local_parts(
            a["attempted_at"].reset_index(drop=True), a["customer_timezone"].reset_index(drop=True)
        )
        dom = pd.Series(np.where(succ, all_parts["day"].to_numpy(), np.nan))
        last_dom = dom.groupby(cust, sort=False).ffill()
        totals = pd.DataFrame(
            {
                "cust": cust,
                "t": times,
                "past_successes": cum["s"].to_numpy(),
                "past_failures": cum["f"].to_numpy(),
                "last_success_dom": last_dom.to_numpy(),
            }
        )
        first_at = pd.Series(times).groupby(inv, sort=False).transform("first").to_numpy()
        lag_days = ((times - first_at) / np.timedelta64(1, "s")) / 86400.0
        won = succ & is_retry
        parts = all_parts[won].reset_index(drop=True)
        w = pd.DataFrame({"one": np.ones(int(won.sum()), dtype=np.int64), "lag": lag_days[won]})
        for b in range(31):
            w[f"d{b}"] = (parts["day"].to_numpy() == b + 1).astype(np.int64)
        for d in range(7):
            w[f"wd{d}"] = (parts["weekday"].to_numpy() == d).astype(np.int64)
        cols = ["one", "lag", *[f"d{b}" for b in range(31)], *[f"wd{d}" for d in range(7)]]
        c = w.groupby(cust[won], sort=False)[cols].cumsum() if len(w) else w[cols]
        mask = np.zeros(len(w), dtype=np.int64)
        for b in range(31):
            mask |= (c[f"d{b}"].to_numpy() > 0).astype(np.int64) << b
        retry_wins = pd.DataFrame(
            {
                "cust": cust[won],
                "t": times[won],
                "past_retry_successes": c["one"].to_numpy(),
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
            {"cust": cust[is_retry], "t": times[is_retry], "slot": rday - 1 + np.where(rwin, 0, 31)}
        )
        # Already sorted by time (the attempts were), so every `as_of` merges directly.
        return cls(customers=pd.Index(customers), totals=totals, retry_wins=retry_wins, retry_days=retry_days)

    def as_of(self, customer_ids: pd.Series, times: pd.Series) -> pd.DataFrame:
        """Aggregates over each customer's attempts strictly before the given time, row-aligned."""
        codes = self.customers.get_indexer(pd.Series(customer_ids).fillna("").astype(str).to_numpy())
        q = pd.DataFrame({"cust": codes.astype(np.int64), "t": _naive_utc(times).to_numpy()})
        q["_row"] = np.arange(len(q))
        q = q.sort_values("t", kind="stable")
        out = pd.merge_asof(q, self.totals, on="t", by="cust", allow_exact_matches=False)
        out = pd.merge_asof(out, self.retry_wins, on="t", by="cust", allow_exact_matches=False)
        out = out.sort_values("_row").reset_index(drop=True)
        for col in ["past_successes", "past_failures", "past_retry_successes", "dom_mask", *_WD]:
            out[col] = out[col].fillna(0).astype(np.int64)
        # The customer's retries strictly before each query time, counted per (won/lost, local day).
        pairs = q[["cust", "t", "_row"]].merge(self.retry_days, on="cust", suffixes=("", "_r"))
        pairs = pairs[pairs["t_r"].to_numpy() < pairs["t"].to_numpy()]
        flat = np.bincount(
            pairs["_row"].to_numpy(dtype=np.int64) * 62 + pairs["slot"].to_numpy(dtype=np.int64),
            minlength=len(out) * 62,
        )
        doms = pd.DataFrame(flat.reshape(len(out), 62), columns=_RD, index=out.index)
        out = pd.concat([out, doms], axis=1)
        out["lag_days_sum"] = out["lag_days_sum"].fillna(0.0).astype(np.float64)
        out["last_success_dom"] = out["last_success_dom"].astype(np.float64)
        return out.drop(columns=["t", "_row", "cust"])


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
    mask_idx: np.ndarray  # per failure: its row in the two tables below (one per distinct day mask)
    dist_tab: np.ndarray  # (masks, 31): payday_dom_distance per local day (NaN: no retry success yet)
    since_tab: np.ndarray  # (masks, 31, 4): days_since_customer_payday per day and previous month's length
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
    masks, mask_idx = np.unique(rows["dom_mask"].to_numpy(dtype=np.int64), return_inverse=True)
    dist_tab, since_tab = _payday_tables(masks)
    return StaticFeatures(
        x=x,
        tz_codes=tz_codes,
        zones=[str(z) for z in zones],
        first=_epoch(rows["first_failed_at"]),
        exp_m=pd.to_numeric(rows["card_exp_month"], errors="coerce").to_numpy(dtype=np.float64),
        exp_y=pd.to_numeric(rows["card_exp_year"], errors="coerce").to_numpy(dtype=np.float64),
        created=_epoch(rows["customer_created_at"]),
        mask_idx=mask_idx,
        dist_tab=dist_tab,
        since_tab=since_tab,
        wd=rows[_WD].to_numpy(dtype=np.float64),
        last_dom=rows["last_success_dom"].to_numpy(dtype=np.float64),
        dom_rate=_dom_rate(rows[_RS].to_numpy(np.float64), rows[_RF].to_numpy(np.float64)),
    )


def _payday_tables(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each day-of-month bitmask of a customer's retry successes (bit b = day b + 1): per local day
    1–31, the circular distance to the nearest such day, and (per previous month's length 28–31) the
    days since the latest such day at or before it (within 30 days); NaN for an empty mask or none."""
    u = len(masks)
    d = np.arange(1, 32)[None, :]  # (1, 31)
    bits = ((masks[:, None] >> np.arange(31)[None, :]) & 1).astype(bool)  # (u, 31)
    gap = np.abs(d[:, :, None] - np.arange(1, 32)[None, None, :])  # (1, day, bit)
    circ = np.minimum(gap, 31 - gap)
    dist = np.where(bits[:, None, :], circ, 99).min(axis=2).astype(np.float64)  # (u, 31)
    dist[masks == 0] = np.nan
    since = np.full((u, 31, 4), 99, dtype=np.int64)
    for p, pdim in enumerate(range(28, 32)):
        back = np.full((u, 31), 99, dtype=np.int64)
        for k in range(30, -1, -1):
            dom = np.clip(np.where(d - k >= 1, d - k, d - k + pdim), 1, 31)  # (1, 31)
            back = np.where(bits[:, dom[0] - 1], k, back)
        since[:, :, p] = back
    since_f = np.where(since < 99, since, np.nan).astype(np.float64)
    since_f[masks == 0] = np.nan
    return dist, since_f


def _dom_rate(won: np.ndarray, lost: np.ndarray, half_width: int = 2) -> np.ndarray:
    """Per row and day of month: successes / retries over the days within `half_width` (circular)."""
    ws = sum(np.roll(won, k, axis=1) for k in range(-half_width, half_width + 1))
    wf = sum(np.roll(lost, k, axis=1) for k in range(-half_width, half_width + 1))
    n = ws + wf
    return np.where(n > 0, ws / np.maximum(n, 1), np.nan)


_COL = {name: len(CATEGORICAL) + j for j, name in enumerate(NUMERIC)}


def assemble(st: StaticFeatures, fi: np.ndarray, at: np.ndarray, attempt: np.ndarray) -> np.ndarray:
    """Feature rows for failure `fi[r]` retried at `at[r]` (datetime64, UTC) as attempt `attempt[r]`."""
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
    u = st.mask_idx[fi]
    dist = st.dist_tab[u, day - 1]
    since = st.since_tab[u, day - 1, np.clip(pdim, 28, 31) - 28]
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
