"""Counter-based randomness, calendar helpers and the latent state of the payer world (`payers.py`)."""

from __future__ import annotations

import bisect
import calendar
import hashlib
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache, lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from billops.domain.declines import load_taxonomy
from billops.recovery.data import ATTEMPT_COLUMNS, FAILURE_COLUMNS

HOUR = 3600
DAY = 86400
_M64 = (1 << 64) - 1
_EPOCH_ORD = date(1970, 1, 1).toordinal()


# ------------------------------------------------------------------ counter-based randomness


def _mix64(z: int) -> int:
    """splitmix64's finalizer: a bijective 64-bit mix."""
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _unit(key: int, n: int) -> float:
    """A uniform in [0, 1) that depends only on (key, n)."""
    return (_mix64(key ^ _mix64(n & _M64)) >> 11) * (1.0 / (1 << 53))


def _key(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


# ------------------------------------------------------------------ calendar helpers


def _weekday(ordinal: int) -> int:
    return (ordinal + 6) % 7  # date.fromordinal(o).weekday()


def _business_day_back(ordinal: int) -> int:
    wd = _weekday(ordinal)
    return ordinal - (wd - 4) if wd >= 5 else ordinal


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@cache
def _local_midnight(tz: str, ordinal: int) -> int:
    """UTC epoch seconds of local midnight on the date `ordinal` (offset taken at local noon)."""
    d = date.fromordinal(ordinal)
    off = datetime(d.year, d.month, d.day, 12, tzinfo=_zone(tz)).utcoffset()
    return (ordinal - _EPOCH_ORD) * DAY - int(off.total_seconds() if off else 0)


@lru_cache(maxsize=1 << 19)
def _local_hour_weekday(tz: str, half_hour: int) -> tuple[int, int]:
    """Local (hour, weekday) during the UTC half hour `half_hour` (every zone used is whole or half-hour)."""
    local = datetime.fromtimestamp(half_hour * 1800, _zone(tz))
    return local.hour, local.weekday()


@lru_cache(maxsize=64)
def _payday_ordinals(cycle: str, first: int, last: int) -> tuple[int, ...]:
    """Local dates (ordinals) of paydays in [first, last]; weekend paydays move to the Friday before."""
    out: set[int] = set()
    if cycle in ("weekly", "biweekly_a", "biweekly_b"):
        o = first + (4 - _weekday(first)) % 7  # first Friday
        while o <= last:
            if cycle == "weekly" or (o // 7) % 2 == (0 if cycle == "biweekly_a" else 1):
                out.add(o)
            o += 7
    else:
        d0 = date.fromordinal(first)
        y, m = d0.year, d0.month
        while date(y, m, 1).toordinal() <= last:
            dim = calendar.monthrange(y, m)[1]
            days = {
                "semi_1_15": (1, 15),
                "semi_15_last": (15, dim),
                "monthly_1": (1,),
                "monthly_15": (15,),
                "monthly_25": (25,),
                "monthly_last": (dim,),
            }[cycle]
            for d in days:
                o = _business_day_back(date(y, m, d).toordinal())
                if first <= o <= last:
                    out.add(o)
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return tuple(sorted(out))


@lru_cache(maxsize=2048)
def _payday_midnights(cycle: str, tz: str, first: int, last: int) -> tuple[int, ...]:
    return tuple(_local_midnight(tz, o) for o in _payday_ordinals(cycle, first, last))


@lru_cache(maxsize=4096)
def _classify(code: str, mac: str, brand: str) -> tuple[str, bool, float]:
    d = load_taxonomy().classify(code, network_advice_code=mac or None, network=brand)
    return d.category.value, d.never_retry, float(d.retry_after_hours or 0.0)


def _utc_seconds(at: datetime) -> float:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class _Table:
    """A weighted choice with precomputed cumulative weights (one `rng.random()` per draw)."""

    def __init__(self, table: dict[str, float] | dict[str, int]) -> None:
        self.keys = list(table)
        self.cum = list(itertools.accumulate(float(table[k]) for k in self.keys))
        self.total = self.cum[-1]

    def __call__(self, rng: random.Random) -> str:
        return self.keys[min(bisect.bisect_right(self.cum, rng.random() * self.total), len(self.keys) - 1)]


# ------------------------------------------------------------------ latent state


@dataclass(slots=True)
class _Customer:
    index: int
    id: str
    suffix: str
    created: int
    country: str
    tz: str
    currency: str
    amount: int
    cycle: str
    paydays: tuple[int, ...]  # local midnights (UTC epoch) of paydays; add `arrival` for the funds time
    arrival: int  # seconds after local midnight when funds land
    spend_mean: float  # seconds
    fragile: bool
    pref_hour: int  # center of the preferred local 4-hour band, -1 for none
    key: int  # hash key for per-pay-cycle latents


@dataclass(slots=True)
class _Invoice:
    id: str
    cust: _Customer
    card: int  # index into World._cards
    failed_at: int
    code: str
    mac: str
    category: str
    never_retry: bool
    group: int
    wait_until: float  # MAC 24-30: a retry before this time fails
    card_end: int  # last second the card is valid
    solvent: bool
    fail_cycle: int  # the pay cycle of the first failure: it is spent (funds-driven declines)
    base: float  # generic declines: base success probability
    masked: bool  # a generic decline that really is a funds problem
    clear_at: float  # transient: outage end; velocity: next local midnight
    key: int  # hash key for the per-hour uniforms
    update_at: float  # when the customer supplies a wholly new card (nan: never)
    refresh_at: float = float("nan")  # needs-new-card: when the updater refreshes the card in place
    refreshed_card: int = -1  # index of the refreshed card (same brand/funding/country, new expiry)


@dataclass(frozen=True, slots=True)
class _Card:
    brand: str
    funding: str
    country: str
    exp_month: int
    exp_year: int

    @property
    def end(self) -> int:
        """The last second the card is valid (end of its expiry month, UTC)."""
        dim = calendar.monthrange(self.exp_year, self.exp_month)[1]
        return calendar.timegm((self.exp_year, self.exp_month, dim, 23, 59, 59))


def _to_datetimes(seconds: np.ndarray) -> pd.Series:
    ns = np.asarray(seconds, dtype="int64") * 1_000_000_000
    return pd.Series(pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC"))


def attempts_frame(
    rows: list[tuple[int, int, str, str, bool, str, str, int]],
    custs: list[_Customer],
    cards: list[_Card],
    new_card_payments: set[str],
) -> pd.DataFrame:
    """The ATTEMPTS frame (sorted by time) from a world's attempt rows
    (time, customer index, invoice id, attempt id, ok, code, MAC, card index)."""
    if rows:
        ts, cidx, inv_ids, att_ids, ok, codes, macs, card_idx = zip(*rows, strict=True)
    else:
        ts = cidx = inv_ids = att_ids = ok = codes = macs = card_idx = ()
    t = np.asarray(ts, dtype="int64")
    order = np.argsort(t, kind="stable")
    ci = np.asarray(cidx, dtype="int64")[order]
    ki = np.asarray(card_idx, dtype="int64")[order]

    def per_customer(get: Callable[[_Customer], Any], dtype: str = "object") -> np.ndarray:
        return np.asarray([get(c) for c in custs], dtype=dtype)[ci]

    def per_card(get: Callable[[_Card], Any], dtype: str = "object") -> np.ndarray:
        return np.asarray([get(c) for c in cards], dtype=dtype)[ki]

    def strs(values: np.ndarray) -> pd.Series:
        return pd.Series(values, dtype="str")

    def reorder(values: Sequence[Any]) -> np.ndarray:
        return np.asarray(values, dtype=object)[order]

    outcome = np.where(np.asarray(ok, dtype=bool)[order], "succeeded", "failed").astype(object)
    data = {
        "attempt_id": strs(reorder(att_ids)),
        "invoice_id": strs(reorder(inv_ids)),
        "customer_id": strs(per_customer(lambda c: c.id)),
        "attempted_at": _to_datetimes(t[order]),
        "amount": pd.Series(per_customer(lambda c: c.amount, "int64")),
        "currency": strs(per_customer(lambda c: c.currency)),
        "outcome": strs(outcome),
        "decline_code": strs(reorder(codes)),
        "network_advice_code": strs(reorder(macs)),
        "card_brand": strs(per_card(lambda c: c.brand)),
        "card_funding": strs(per_card(lambda c: c.funding)),
        "card_country": strs(per_card(lambda c: c.country)),
        "card_exp_month": pd.Series(per_card(lambda c: c.exp_month, "int64")),
        "card_exp_year": pd.Series(per_card(lambda c: c.exp_year, "int64")),
        "customer_timezone": strs(per_customer(lambda c: c.tz)),
        "customer_created_at": _to_datetimes(per_customer(lambda c: c.created, "int64")),
    }
    # The physical card, as a platform's fingerprint tells it: a customer's card keeps its fingerprint
    # through the updater's refreshes and renewals (new expiry) and changes only with a card the
    # customer supplies.
    new_card = pd.Series([a in new_card_payments for a in reorder(att_ids)], dtype=np.int64)
    nth = new_card.groupby(ci).cumsum().to_numpy()
    prints = [f"fp_{cid}_{k}" for cid, k in zip(data["customer_id"], nth, strict=True)]
    data["card_fingerprint"] = strs(np.asarray(prints, dtype=object))
    return pd.DataFrame(data, columns=[*ATTEMPT_COLUMNS, "card_fingerprint"])


def failures_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """The FAILURES frame from rows in FAILURE_COLUMNS order (times as epoch seconds)."""
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(FAILURE_COLUMNS)
    data: dict[str, Any] = {}
    for name, values in zip(FAILURE_COLUMNS, cols, strict=True):
        if name in ("failed_at", "customer_created_at", "deadline"):
            data[name] = _to_datetimes(np.asarray(values, dtype="int64"))
        elif name in ("amount", "card_exp_month", "card_exp_year"):
            data[name] = pd.Series(np.asarray(values, dtype="int64"))
        else:
            data[name] = pd.Series(list(values), dtype="str")
    return pd.DataFrame(data, columns=FAILURE_COLUMNS)
