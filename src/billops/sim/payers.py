"""A simulated payer world with a retry-outcome oracle, for training and backtesting learned retry timing.

`World(seed=..., customers=..., start=..., end=...)` draws subscribers (card, plan, country/time zone,
pay cycle, latent cash-flow habits), bills them monthly from `start` to `end`, fails some renewals with
realistic decline codes and plays out an *exploratory* historical dunning policy (random retry times,
some customers supplying a new card). The result is an ATTEMPTS table (`history()`) and one row per
failed renewal (`failures()`).

The same world answers "would a blind retry of invoice i at time t, after k earlier retries, succeed?"
(`attempt()`), with common random numbers: the answer is `U(seed, invoice, hour of t) < p(i, t, k)`, where
U comes from a counter-based hash and p (`success_probability()`) is a deterministic function of the
invoice's latents. It does not depend on which policy asks, nor in which order. The history's retries are
exactly the oracle's answers.

Everything is deterministic from (seed, customers, start, end, deadline_days). Each customer has its own
`random.Random` stream (like `business.py`), so adding customers never changes the ones already drawn.
All rules and effect sizes are invented: docs/simulator.md lists them. They exist to test that a learned
model can find timing effects; the product must never hard-code them.

Times inside are integer (or float) seconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import bisect
import calendar
import hashlib
import itertools
import json
import math
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import typer

from billops.domain.declines import load_taxonomy
from billops.recovery.data import ATTEMPT_COLUMNS, FAILURE_COLUMNS
from billops.sim.business import (
    BRAND_SHARE,
    COUNTRIES,
    DECLINE_MIX,
    FAILURE_RATE,
    FUNDING_SHARE,
    HARD_MACS,
    MONTHLY_PRICE,
    PLAN_SHARE,
    add_months,
    make_id,
)

HOUR = 3600
DAY = 86400

# ------------------------------------------------------------------ the world's invented parameters

# Pay cycles: weights per region (US/CA pay weekly/biweekly; elsewhere mostly monthly).
PAY_CYCLES = (
    "weekly",  # every Friday
    "biweekly_a",  # every other Friday (two phases)
    "biweekly_b",
    "semi_1_15",  # 1st and 15th
    "semi_15_last",  # 15th and last business day
    "monthly_1",
    "monthly_15",
    "monthly_25",
    "monthly_last",  # last business day
)
# fmt: off
PAY_CYCLE_MIX: dict[str, tuple[float, ...]] = {
    "north_america": (12, 21.5, 21.5, 10, 10, 8, 3, 4, 10),
    "other": (3, 3.5, 3.5, 3, 5, 12, 5, 30, 35),
}
# fmt: on
NORTH_AMERICA = {"US", "CA"}
FUNDS_ARRIVE_LOCAL = (4 * HOUR, 9 * HOUR)  # a customer's funds land at a fixed local time in this range
SPEND_DOWN_MEAN_DAYS = 4.0  # funds last Exp(mean) days after a payday; the mean varies ×0.5..1.5 per customer
P_FUNDED, P_UNFUNDED = 0.85, 0.05  # insufficient funds: retry success inside / outside a funded window
P_MASKED_FUNDED, P_MASKED_UNFUNDED = 0.75, 0.04  # a generic decline that really is a funds problem
MASKED_FUNDS_SHARE = 0.3  # of generic declines (issuers often answer do_not_honor for NSF)
IF_FAIL_FUNDED_MULT = 0.25  # first attempts inside a funded window fail for funds 4x less often
GENERIC_BASE = (0.15, 0.35)  # per invoice, uniform
# local hour of day -> multiplier for generic declines
GENERIC_HOUR = (0.45,) * 5 + (0.8,) + (1.45,) * 6 + (1.0,) * 6 + (0.85,) * 4 + (0.65,) * 2
GENERIC_WEEKEND = 0.65
TRANSIENT_LOW, TRANSIENT_HIGH = 0.06, 0.7  # before / after the issuer's outage clears
TRANSIENT_OUTAGE_MEAN_HOURS = 1.5  # Exp(mean), clipped to 15 min .. 6 h
VELOCITY_LOW, VELOCITY_HIGH = 0.05, 0.65  # before / after the next local midnight
FATIGUE = 0.85  # each earlier retry on the invoice multiplies p by this
HOUR_PREF_SHARE, HOUR_PREF_MULT = 0.25, 1.25  # customers with a preferred local 4-hour band
P_MAX = 0.95
FRAGILE_SHARE = 0.2  # fragile customers fail twice as often and are more often insolvent
# P(the invoice is not recoverable by retrying at all) by decline behaviour, before multipliers
INSOLVENT_BASE = {"funds": 0.30, "generic": 0.40, "transient": 0.08, "velocity": 0.20, "none": 0.35}
INSOLVENT_FUNDING = {"credit": 0.85, "debit": 1.0, "prepaid": 1.7}
# P(the customer supplies new card data within the deadline): (solvent, insolvent)
CARD_UPDATE = {
    "needs_new_card": (0.6, 0.1),
    "hard": (0.35, 0.05),
    "try_later": (0.12, 0.03),
    "soft": (0.12, 0.03),
}
CARD_UPDATE_MEDIAN_DAYS = 1.5  # log-normal delay, sigma 1
UPDATER_RENEWS = 0.65  # an expired card is silently renewed by the account updater before the renewal
MAC_SHARE = 0.35  # Mastercard declines that carry a Merchant Advice Code
SOFT_MAC_WEIGHTS = {"02": 20, "24": 15, "25": 25, "26": 15, "27": 10, "28": 6, "29": 5, "30": 4}
# The historical (exploratory) dunning policy.
HIST_RETRIES = (1, 6)
HIST_GAP = (3 * HOUR, 7 * DAY)  # log-uniform gap between attempts
CHURN_WHEN_UNPAID = 0.5  # an unpaid solvent invoice cancels the subscription (insolvent: always)
HIST_SAME_CODE = 0.85  # a failed retry reports the first decline code, else generic_decline/do_not_honor

FUNDS_CODES = frozenset({"insufficient_funds", "withdrawal_count_limit_exceeded"})
VELOCITY_CODES = frozenset({"card_velocity_exceeded"})
_IF_SHARE = DECLINE_MIX["insufficient_funds"] + DECLINE_MIX["withdrawal_count_limit_exceeded"]
_OTHER_MIX = {k: v for k, v in DECLINE_MIX.items() if k not in FUNDS_CODES and k != "expired_card"}
_MIX_TOTAL = sum(DECLINE_MIX.values())
_FUNDS_SHARE = _IF_SHARE / _MIX_TOTAL  # of all failures (expired cards are modelled apart, by expiry dates)
_OTHER_SHARE = sum(_OTHER_MIX.values()) / _MIX_TOTAL

_NONE, _FUNDS, _GENERIC, _TRANSIENT, _VELOCITY = 0, 1, 2, 3, 4
_GROUP_NAME = {
    _NONE: "none",
    _FUNDS: "funds",
    _GENERIC: "generic",
    _TRANSIENT: "transient",
    _VELOCITY: "velocity",
}

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


_BRANDS = _Table(BRAND_SHARE)
_FUNDINGS = _Table(FUNDING_SHARE)
_COUNTRY = _Table({k: v[0] for k, v in COUNTRIES.items()})
_PLANS = _Table(PLAN_SHARE)
_SOFT_MACS = _Table(SOFT_MAC_WEIGHTS)
_OTHER_DECLINES = _Table(_OTHER_MIX)
_CYCLES = {region: _Table(dict(zip(PAY_CYCLES, w, strict=True))) for region, w in PAY_CYCLE_MIX.items()}


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
    update_at: float  # when the customer supplies new card data (nan: never)


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


# ------------------------------------------------------------------ the world


class World:
    """A deterministic payer world: customers, renewals, failures, an exploratory dunning history and a
    common-random-numbers retry oracle. See the module docstring and docs/simulator.md."""

    def __init__(
        self, *, seed: int, customers: int, start: datetime, end: datetime, deadline_days: int = 21
    ) -> None:
        if customers < 1:
            raise ValueError("customers must be at least 1")
        if deadline_days < 1:
            raise ValueError("deadline_days must be at least 1")
        self.seed, self.n_customers, self.deadline_days = seed, customers, deadline_days
        self.start = (start if start.tzinfo else start.replace(tzinfo=UTC)).astimezone(UTC)
        self.end = (end if end.tzinfo else end.replace(tzinfo=UTC)).astimezone(UTC)
        if self.end <= self.start:
            raise ValueError("end must be after start")
        self._t0, self._t1 = int(self.start.timestamp()), int(self.end.timestamp())
        self._deadline = deadline_days * DAY
        # Paydays cover the window with margins so the oracle can be asked well past `end`.
        self._pay_first = self.start.date().toordinal() - 62
        self._pay_last = self.end.date().toordinal() + deadline_days + 95
        self._months = self._month_table()
        self._cards: list[_Card] = []
        self._card_ids: dict[_Card, int] = {}
        self._customers: list[_Customer] = []
        self._by_customer_id: dict[str, _Customer] = {}
        self._invoices: dict[str, _Invoice] = {}
        self._failure_order: list[_Invoice] = []
        self._rows: list[tuple[int, int, str, str, bool, str, str, int]] = []
        for i in range(customers):
            self._draw_customer(i)
        self._failure_order.sort(key=lambda inv: inv.failed_at)  # stable: ties keep customer order
        self._frame = self._build_frame()
        self._rows = []

    # -------------------------------------------------------------- public API

    def history(self, until: datetime | None = None) -> pd.DataFrame:
        """Every attempt with attempted_at < until (default: end), sorted by attempted_at."""
        df = self._frame
        if until is not None:
            cut = pd.Timestamp(until if until.tzinfo else until.replace(tzinfo=UTC)).tz_convert("UTC")
            n = int(df["attempted_at"].searchsorted(cut, side="left"))
            df = df.iloc[:n]
        return df.copy().reset_index(drop=True)

    def failures(self, since: datetime, until: datetime) -> pd.DataFrame:
        """One row per renewal whose first attempt failed in [since, until), sorted by failed_at."""
        lo, hi = _utc_seconds(since), _utc_seconds(until)
        rows = []
        for inv in self._failure_order:  # sorted by failed_at
            if lo <= inv.failed_at < hi:
                c, card = inv.cust, self._cards[inv.card]
                rows.append(
                    (
                        inv.id,
                        c.id,
                        c.amount,
                        c.currency,
                        inv.failed_at,
                        inv.code,
                        inv.mac,
                        card.brand,
                        card.funding,
                        card.country,
                        card.exp_month,
                        card.exp_year,
                        c.tz,
                        c.created,
                        inv.failed_at + self._deadline,
                    )
                )
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

    def success_probability(self, invoice_id: str, at: datetime, prior_retries: int) -> float:
        """P(a blind retry of the failed renewal `invoice_id` at `at` succeeds | all latents), after
        `prior_retries` earlier retries. 0 for an insolvent invoice. `attempt()` is exactly
        `U(seed, invoice, hour of at) < success_probability(...)`."""
        return self._p(self._invoice(invoice_id), _utc_seconds(at), prior_retries)

    def attempt(self, invoice_id: str, at: datetime, prior_retries: int) -> bool:
        """The oracle: does a blind retry (same card) at `at` succeed? Independent of call order."""
        inv = self._invoice(invoice_id)
        t = _utc_seconds(at)
        return self._u(inv, t) < self._p(inv, t, prior_retries)

    def attempt_many(
        self, invoice_ids: Sequence[str], times: Sequence[datetime], prior_retries: Sequence[int] | int
    ) -> np.ndarray:
        """`attempt()` for many (invoice, time, prior_retries) triples, as a numpy bool array."""
        if isinstance(prior_retries, int):
            prior_retries = [prior_retries] * len(invoice_ids)
        if not len(invoice_ids) == len(times) == len(prior_retries):
            raise ValueError("invoice_ids, times and prior_retries must have the same length")
        out = np.zeros(len(invoice_ids), dtype=bool)
        for n, (i, t, k) in enumerate(zip(invoice_ids, times, prior_retries, strict=True)):
            out[n] = self.attempt(i, t, int(k))
        return out

    def first_success(self, invoice_id: str, times: list[datetime]) -> int | None:
        """Index of the first of `times` whose retry succeeds (retries made in order, prior_retries =
        index), or None."""
        inv = self._invoice(invoice_id)
        for k, at in enumerate(times):
            t = _utc_seconds(at)
            if self._u(inv, t) < self._p(inv, t, k):
                return k
        return None

    # -- extra introspection (tests, docs, backtests)

    def card_update(self, invoice_id: str) -> datetime | None:
        """When the customer supplies new card data for this failed invoice (a latent drawn before any
        retry, so it is the same for every policy), or None if they never do within the deadline. The
        history pays the invoice with the new card then, unless a retry succeeded earlier."""
        inv = self._invoice(invoice_id)
        return None if math.isnan(inv.update_at) else _dt(inv.update_at)

    def paydays(self, customer_id: str, since: datetime, until: datetime) -> list[datetime]:
        """The customer's latent paydays (the moment funds land) in [since, until)."""
        c = self._by_customer_id[customer_id]
        lo, hi = _utc_seconds(since), _utc_seconds(until)
        return [_dt(m + c.arrival) for m in c.paydays if lo <= m + c.arrival < hi]

    def latents(self, invoice_id: str) -> dict[str, Any]:
        """The invoice's latent state, for debugging and documentation (never a model feature)."""
        inv = self._invoice(invoice_id)
        c = inv.cust
        return {
            "category": inv.category,
            "never_retry": inv.never_retry,
            "behaviour": _GROUP_NAME[inv.group],
            "solvent": inv.solvent,
            "masked_funds": inv.masked,
            "generic_base": inv.base,
            "clear_at": _dt(inv.clear_at) if inv.clear_at else None,
            "wait_until": _dt(inv.wait_until) if inv.wait_until else None,
            "card_update_at": self.card_update(invoice_id),
            "pay_cycle": c.cycle,
            "spend_down_mean_days": c.spend_mean / DAY,
            "preferred_local_hour": None if c.pref_hour < 0 else c.pref_hour,
            "fragile_customer": c.fragile,
        }

    def category(self, invoice_id: str) -> str:
        """The taxonomy's category of the invoice's first decline."""
        return self._invoice(invoice_id).category

    # -------------------------------------------------------------- the oracle

    def _invoice(self, invoice_id: str) -> _Invoice:
        try:
            return self._invoices[invoice_id]
        except KeyError:
            raise KeyError(f"{invoice_id} is not a failed renewal of this world") from None

    def _u(self, inv: _Invoice, t: float) -> float:
        return _unit(inv.key, math.floor(t / HOUR))

    def _funded(self, c: _Customer, t: float, exclude_cycle: int) -> bool:
        j = bisect.bisect_right(c.paydays, t - c.arrival) - 1
        if j < 0 or j == exclude_cycle:
            return False
        return t < c.paydays[j] + c.arrival + self._spend(c, j)

    def _spend(self, c: _Customer, j: int) -> float:
        return -c.spend_mean * math.log(1.0 - _unit(c.key, j))

    def _cycle(self, c: _Customer, t: float) -> int:
        return bisect.bisect_right(c.paydays, t - c.arrival) - 1

    def _p(self, inv: _Invoice, t: float, prior: int) -> float:
        if prior < 0:
            raise ValueError("prior_retries must be >= 0")
        g = inv.group
        if not inv.solvent or g == _NONE or t <= inv.failed_at or t < inv.wait_until or t > inv.card_end:
            return 0.0
        c = inv.cust
        local: tuple[int, int] | None = None
        if g == _FUNDS:
            p = P_FUNDED if self._funded(c, t, inv.fail_cycle) else P_UNFUNDED
        elif g == _GENERIC:
            if inv.masked:
                p = P_MASKED_FUNDED if self._funded(c, t, inv.fail_cycle) else P_MASKED_UNFUNDED
            else:
                hour, weekday = local = _local_hour_weekday(c.tz, int(t // 1800))
                p = inv.base * GENERIC_HOUR[hour] * (GENERIC_WEEKEND if weekday >= 5 else 1.0)
        elif g == _TRANSIENT:
            p = TRANSIENT_LOW if t < inv.clear_at else TRANSIENT_HIGH
        else:  # velocity
            p = VELOCITY_LOW if t < inv.clear_at else VELOCITY_HIGH
        if c.pref_hour >= 0:
            hour = (local or _local_hour_weekday(c.tz, int(t // 1800)))[0]
            if min((hour - c.pref_hour) % 24, (c.pref_hour - hour) % 24) <= 2:
                p *= HOUR_PREF_MULT
        if prior:
            p *= FATIGUE**prior
        return min(p, P_MAX)

    # -------------------------------------------------------------- generation

    def _month_table(self) -> list[tuple[int, int, int]]:
        """(month start epoch, days in month, month number) for the months that can hold a renewal."""
        y, m = self.start.year, self.start.month
        out = []
        while (y, m) <= (self.end.year, self.end.month):
            out.append((calendar.timegm((y, m, 1, 0, 0, 0)), calendar.monthrange(y, m)[1], y * 12 + m))
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out

    def _card(self, card: _Card) -> int:
        idx = self._card_ids.get(card)
        if idx is None:
            idx = self._card_ids[card] = len(self._cards)
            self._cards.append(card)
        return idx

    def _new_card(self, rng: random.Random, country: str, at: float, brand: str | None = None) -> _Card:
        brand = brand or _BRANDS(rng)
        funding = "credit" if brand == "amex" and rng.random() < 0.95 else _FUNDINGS(rng)
        if rng.random() < 0.06:  # foreign-issued card
            country = rng.choice([c for c in COUNTRIES if c != country])
        exp = add_months(_dt(at), rng.randint(24, 60))
        return _Card(brand, funding, country, exp.month, exp.year)

    def _draw_customer(self, index: int) -> None:
        seed = self.seed
        rng = random.Random(f"billops-payers:{seed}:{index}")
        country = _COUNTRY(rng)
        _, currency, zones = COUNTRIES[country]
        tz = rng.choice(zones)
        created = self._t0 - int(rng.uniform(DAY, 3 * 365 * DAY))
        plan = _PLANS(rng)
        cust_id = make_id("cus", "payers", seed, index, length=14)
        # The card at the start: its expiry is uniform over the next 4 years (so ~25% expire in a year).
        brand = _BRANDS(rng)
        card = self._new_card(rng, country, created, brand)
        exp = add_months(self.start, rng.randrange(0, 48))
        card = _Card(card.brand, card.funding, card.country, exp.month, exp.year)
        region = "north_america" if country in NORTH_AMERICA else "other"
        cycle = _CYCLES[region](rng)
        c = _Customer(
            index=index,
            id=cust_id,
            suffix=cust_id[4:],
            created=created,
            country=country,
            tz=tz,
            currency=currency,
            amount=MONTHLY_PRICE[plan][currency],
            cycle=cycle,
            paydays=_payday_midnights(cycle, tz, self._pay_first, self._pay_last),
            arrival=int(rng.uniform(*FUNDS_ARRIVE_LOCAL)),
            spend_mean=SPEND_DOWN_MEAN_DAYS * DAY * rng.uniform(0.5, 1.5),
            fragile=rng.random() < FRAGILE_SHARE,
            pref_hour=rng.randrange(6, 22) if rng.random() < HOUR_PREF_SHARE else -1,
            key=_key("payers-cycle", seed, index),
        )
        self._customers.append(c)
        self._by_customer_id[c.id] = c
        anchor = _dt(created + rng.uniform(5, 600))
        self._renewals(c, rng, card, anchor)

    def _funds_fail_mult(self, c: _Customer) -> tuple[float, float]:
        """Multipliers of the funds-failure rate inside / outside a funded window, averaging ~1."""
        n = max(1, len(c.paydays) - 1)
        cycle_len = (c.paydays[-1] - c.paydays[0]) / n
        # expected funded share of a cycle: E[min(D, L)] / L for D ~ Exp(mean)
        f = min(0.8, c.spend_mean * (1 - math.exp(-cycle_len / c.spend_mean)) / cycle_len)
        return IF_FAIL_FUNDED_MULT, (1 - IF_FAIL_FUNDED_MULT * f) / (1 - f)

    def _renewals(self, c: _Customer, rng: random.Random, card: _Card, anchor: datetime) -> None:
        rows = self._rows
        t0, t1 = self._t0, self._t1
        anchor_day = anchor.day
        tod = anchor.hour * HOUR + anchor.minute * 60 + anchor.second
        frag = 2.0 if c.fragile else 0.85  # averages ~1.08: churn removes fragile payers
        card_idx = self._card(card)
        card_end = card.end
        m_in, m_out = self._funds_fail_mult(c)
        for month_start, dim, mnum in self._months:
            renewal = month_start + (min(anchor_day, dim) - 1) * DAY + tod
            at = renewal + HOUR + int(rng.uniform(5, 120))  # finalized 1 h after, charged right after
            if at < t0:
                continue
            if at >= t1:
                return
            inv_id = f"in_{c.suffix}{mnum % 1000:03d}"
            code = mac = ""
            if card_end < at:
                if rng.random() < UPDATER_RENEWS:  # the account updater renewed it: same card, new expiry
                    e = add_months(_dt(at), rng.randint(36, 60))
                    card = _Card(card.brand, card.funding, card.country, e.month, e.year)
                    card_idx, card_end = self._card(card), card.end
                else:
                    code = "expired_card"
                    if card.brand == "mastercard" and rng.random() < MAC_SHARE:
                        mac = "01"
            if not code:
                rate = FAILURE_RATE[card.funding] * frag
                p_other = rate * _OTHER_SHARE
                p_funds_max = rate * _FUNDS_SHARE * m_out
                u = rng.random()
                if u < p_other:
                    code = _OTHER_DECLINES(rng)
                elif u < p_other + p_funds_max:
                    funded = self._funded(c, at, -1)
                    if not funded or (u - p_other) < p_funds_max * m_in / m_out:
                        code = (
                            "insufficient_funds"
                            if rng.random() < DECLINE_MIX["insufficient_funds"] / _IF_SHARE
                            else "withdrawal_count_limit_exceeded"
                        )
                if code and card.brand == "mastercard" and rng.random() < MAC_SHARE:
                    mac = self._mac(rng, code)
            if not code:
                rows.append(
                    (at, c.index, inv_id, f"ch_{c.suffix}{mnum % 1000:03d}00", True, "", "", card_idx)
                )
                continue
            rows.append(
                (at, c.index, inv_id, f"ch_{c.suffix}{mnum % 1000:03d}00", False, code, mac, card_idx)
            )
            paid, new_card = self._dunning(c, rng, inv_id, mnum, at, code, mac, card, card_idx)
            if not paid and (not self._invoices[inv_id].solvent or rng.random() < CHURN_WHEN_UNPAID):
                return  # unpaid after the deadline: the subscription is cancelled (involuntary churn)
            if new_card is not None:
                card = new_card
                card_idx, card_end = self._card(card), card.end

    def _mac(self, rng: random.Random, code: str) -> str:
        category = _classify(code, "", "mastercard")[0]
        if category == "hard":
            return rng.choice(HARD_MACS)
        if category == "needs_new_card":
            return ""
        if rng.random() < 0.9:
            return _SOFT_MACS(rng)
        return "21"

    def _dunning(
        self,
        c: _Customer,
        rng: random.Random,
        inv_id: str,
        mnum: int,
        failed_at: int,
        code: str,
        mac: str,
        card: _Card,
        card_idx: int,
    ) -> tuple[bool, _Card | None]:
        """Draw the failed invoice's latents and play out the historical dunning. Returns (paid, new card)."""
        category, never_retry, wait_h = _classify(code, mac, card.brand)
        if category in ("hard", "needs_new_card") or never_retry or code == "expired_card":
            group = _NONE
        elif code in FUNDS_CODES:
            group = _FUNDS
        elif code in VELOCITY_CODES:
            group = _VELOCITY
        elif _classify(code, "", card.brand)[0] == "try_later":  # processing_error, try_again_later, ...
            group = _TRANSIENT
        else:
            group = _GENERIC
        tenure_days = (failed_at - c.created) / DAY
        p_insolvent = (
            INSOLVENT_BASE[_GROUP_NAME[group]]
            * INSOLVENT_FUNDING[card.funding]
            * (1.4 if c.fragile else 0.9)
            * (1.3 if tenure_days < 120 else 0.8 if tenure_days > 730 else 1.0)
        )
        solvent = rng.random() >= min(0.95, p_insolvent)
        base = rng.uniform(*GENERIC_BASE)
        masked = group == _GENERIC and rng.random() < MASKED_FUNDS_SHARE
        clear_at = 0.0
        if group == _TRANSIENT:
            outage = min(6 * HOUR, max(HOUR / 4, rng.expovariate(1 / (TRANSIENT_OUTAGE_MEAN_HOURS * HOUR))))
            clear_at = failed_at + outage
        elif group == _VELOCITY:
            ordinal = datetime.fromtimestamp(failed_at, _zone(c.tz)).date().toordinal()
            clear_at = float(_local_midnight(c.tz, ordinal + 1))
        limit = failed_at + self._deadline
        # Does the customer bring new card data, and when? (drawn before, and independent of, any retry)
        update_at = math.nan
        p_update = CARD_UPDATE[category][0 if solvent else 1]
        u_update = rng.random()
        delay = max(600.0, math.exp(rng.gauss(math.log(CARD_UPDATE_MEDIAN_DAYS * DAY), 1.0)))
        if u_update < p_update and failed_at + delay < limit:
            update_at = float(int(failed_at + delay))  # whole seconds, like every attempt time
        inv = _Invoice(
            id=inv_id,
            cust=c,
            card=card_idx,
            failed_at=failed_at,
            code=code,
            mac=mac,
            category=category,
            never_retry=never_retry,
            group=group,
            wait_until=failed_at + wait_h * HOUR if wait_h else 0.0,
            card_end=card.end,
            solvent=solvent,
            fail_cycle=self._cycle(c, failed_at),
            base=base,
            masked=masked,
            clear_at=clear_at,
            key=_key("payers-invoice", self.seed, inv_id),
            update_at=update_at,
        )
        self._invoices[inv_id] = inv
        self._failure_order.append(inv)
        # The historical policy: 1-6 retries at log-uniform random gaps within the deadline, never for
        # hard / never-retry / needs-new-card declines.
        times: list[int] = []
        if category in ("soft", "try_later") and not never_retry:
            t = float(failed_at)
            lo, hi = math.log(HIST_GAP[0]), math.log(HIST_GAP[1])
            for _ in range(rng.randint(*HIST_RETRIES)):
                t += math.exp(rng.uniform(lo, hi))
                if t >= limit:
                    break
                times.append(int(t))
        rows, t1 = self._rows, self._t1
        n = 0
        for k, t in enumerate(times):
            if t >= update_at:  # nan compares False
                break
            ok = self._u(inv, t) < self._p(inv, t, k)
            n += 1
            if t < t1:
                if ok:
                    rows.append(
                        (t, c.index, inv_id, f"ch_{c.suffix}{mnum % 1000:03d}{n:02d}", True, "", "", card_idx)
                    )
                else:
                    again = (
                        code
                        if rng.random() < HIST_SAME_CODE
                        else rng.choice(("generic_decline", "do_not_honor"))
                    )
                    rows.append(
                        (
                            t,
                            c.index,
                            inv_id,
                            f"ch_{c.suffix}{mnum % 1000:03d}{n:02d}",
                            False,
                            again,
                            mac,
                            card_idx,
                        )
                    )
            if ok:
                return True, None
        if not math.isnan(update_at):
            same_brand = rng.random() < 0.6
            new = self._new_card(rng, card.country, update_at, card.brand if same_brand else None)
            n += 1
            if update_at < t1:
                rows.append(
                    (
                        int(update_at),
                        c.index,
                        inv_id,
                        f"ch_{c.suffix}{mnum % 1000:03d}{n:02d}",
                        True,
                        "",
                        "",
                        self._card(new),
                    )
                )
            return True, new
        return False, None

    def _build_frame(self) -> pd.DataFrame:
        rows = self._rows
        if rows:
            ts, cidx, inv_ids, att_ids, ok, codes, macs, card_idx = zip(*rows, strict=True)
        else:
            ts = cidx = inv_ids = att_ids = ok = codes = macs = card_idx = ()
        t = np.asarray(ts, dtype="int64")
        order = np.argsort(t, kind="stable")
        ci = np.asarray(cidx, dtype="int64")[order]
        ki = np.asarray(card_idx, dtype="int64")[order]
        custs = self._customers
        cards = self._cards

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
        return pd.DataFrame(data, columns=ATTEMPT_COLUMNS)


def _to_datetimes(seconds: np.ndarray) -> pd.Series:
    ns = np.asarray(seconds, dtype="int64") * 1_000_000_000
    return pd.Series(pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC"))


# ------------------------------------------------------------------ files and CLI


def _iso(series: pd.Series) -> pd.Series:
    """ISO 8601 UTC with a Z, whole seconds (fast: numpy, not strftime)."""
    values = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    return pd.Series(
        np.char.add(np.datetime_as_string(values, unit="s"), "Z"), index=series.index, dtype="str"
    )


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_attempts_csv(df: pd.DataFrame, path: Path) -> None:
    """Write an attempts frame as CSV with ISO 8601 UTC timestamps (read back with dtype=str,
    keep_default_na=False)."""
    out = df.copy()
    for col in ("attempted_at", "customer_created_at"):
        out[col] = _iso(out[col])
    _atomic_write(path, lambda fh: out.to_csv(fh, index=False))


def write_failures_jsonl(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    for col in ("failed_at", "customer_created_at", "deadline"):
        out[col] = _iso(out[col])
    records = out.to_dict(orient="records")

    def write(fh: Any) -> None:
        for r in records:
            fh.write(json.dumps({k: (int(v) if isinstance(v, np.integer) else v) for k, v in r.items()}))
            fh.write("\n")

    _atomic_write(path, write)


def simulate_to_dir(
    out: Path, *, customers: int, months: int, seed: int, split_days: int, end: datetime
) -> dict[str, Any]:
    """Generate a world and write attempts.csv (before the split), test_attempts.csv (at or after the
    split) and failures.jsonl (failures after the split) into `out`."""
    end = (end if end.tzinfo else end.replace(tzinfo=UTC)).astimezone(UTC)
    start = add_months(end, -months)
    split = end - timedelta(days=split_days)
    if not start < split < end:
        raise ValueError("the split must fall inside the simulated period (split_days < the period)")
    world = World(seed=seed, customers=customers, start=start, end=end)
    everything = world.history()
    n_train = int(everything["attempted_at"].searchsorted(pd.Timestamp(split), side="left"))
    train, test = everything.iloc[:n_train], everything.iloc[n_train:]
    failures = world.failures(split, end)
    write_attempts_csv(train, out / "attempts.csv")
    write_attempts_csv(test, out / "test_attempts.csv")
    write_failures_jsonl(failures, out / "failures.jsonl")
    return {
        "start": start,
        "split": split,
        "end": end,
        "train_attempts": len(train),
        "test_attempts": len(test),
        "failures": len(failures),
    }


def parse_end(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"--end: not an ISO date/time: {value!r}") from exc
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


def register(recovery_app: typer.Typer) -> None:
    """Add `simulate` to the `billops recovery` command group."""

    @recovery_app.command("simulate")
    def simulate(
        out: Annotated[Path, typer.Option("--out", help="Output directory.")],
        customers: Annotated[int, typer.Option(min=1, max=1_000_000, help="Customers to simulate.")] = 20000,
        months: Annotated[int, typer.Option(min=1, max=60, help="Months of billing, ending at --end.")] = 12,
        seed: Annotated[int, typer.Option(help="Random seed: the same arguments give the same data.")] = 7,
        split_days: Annotated[
            int, typer.Option(min=1, help="Days before --end where training data stops and the test begins.")
        ] = 30,
        end: Annotated[
            str | None, typer.Option(help="End of the simulated period, ISO date (default: today 00:00 UTC).")
        ] = None,
    ) -> None:
        """Simulate a payer world with an exploratory retry history: writes attempts.csv (training, before
        the split), test_attempts.csv (at or after the split) and failures.jsonl (failures after the split).
        The data is synthetic; its rules are invented (docs/simulator.md)."""
        try:
            summary = simulate_to_dir(
                out, customers=customers, months=months, seed=seed, split_days=split_days, end=parse_end(end)
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        typer.echo(
            f"simulated {customers} customers {summary['start']:%Y-%m-%d}..{summary['end']:%Y-%m-%d}: "
            f"{summary['train_attempts']} training attempts before {summary['split']:%Y-%m-%d}, "
            f"{summary['test_attempts']} test attempts, {summary['failures']} failures after the split; "
            f"wrote {out}"
        )
