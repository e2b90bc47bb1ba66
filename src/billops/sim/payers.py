"""A simulated payer world with a retry-outcome oracle, for training and backtesting learned retry timing.

`World(seed=..., customers=..., start=..., end=..., params=WorldParams(...))` draws subscribers (card,
plan, country/time zone, pay cycle, latent cash-flow habits), bills them monthly from `start` to `end`,
fails some renewals with realistic decline codes and plays out an *exploratory* historical dunning
policy (random retry times, cards refreshed in place by the account updater, some customers supplying
a new card). The result is an ATTEMPTS table (`history()`) and one row per failed renewal
(`failures()`). Every invented constant is a field of `WorldParams` (`world_params.py`, with named
presets); the defaults are the development world.

The same world answers "would a blind retry of invoice i at time t, after k earlier retries, succeed?"
(`attempt()`), with common random numbers: the answer is `U(seed, invoice, hour of t) < p(i, t, k)`, where
U comes from a counter-based hash and p (`success_probability()`) is a deterministic function of the
invoice's latents. It does not depend on which policy asks, nor in which order. The history's retries are
exactly the oracle's answers. A `luck` number (default 0) selects another stream of U for replicates.

Everything is deterministic from (seed, customers, start, end, deadline_days, params). Each customer has
its own `random.Random` stream (like `business.py`), so adding customers never changes the ones already
drawn. All rules and effect sizes are invented: docs/simulator.md lists them. They exist to test that a
learned model can find timing effects; the product must never hard-code them.

Times inside are integer (or float) seconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import bisect
import calendar
import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from billops.recovery.data import ATTEMPT_COLUMNS, FAILURE_COLUMNS
from billops.sim.business import (
    COUNTRIES,
    FAILURE_RATE,
    FUNDING_SHARE,
    HARD_MACS,
    MONTHLY_PRICE,
    PLAN_SHARE,
    add_months,
    make_id,
)
from billops.sim.payer_files import (
    parse_end,
    register,
    simulate_to_dir,
    write_attempts_csv,
    write_failures_jsonl,
)
from billops.sim.payer_state import (
    DAY,
    HOUR,
    _Card,
    _classify,
    _Customer,
    _dt,
    _Invoice,
    _key,
    _local_hour_weekday,
    _local_midnight,
    _payday_midnights,
    _Table,
    _unit,
    _utc_seconds,
    _zone,
    attempts_frame,
    failures_frame,
)
from billops.sim.world_params import WorldParams, WorldTables

__all__ = [
    "ATTEMPT_COLUMNS",
    "FAILURE_COLUMNS",
    "FATIGUE",
    "World",
    "WorldParams",
    "parse_end",
    "register",
    "simulate_to_dir",
    "write_attempts_csv",
    "write_failures_jsonl",
]

FATIGUE = WorldParams().fatigue  # the development world's retry fatigue (kept for older imports)
NORTH_AMERICA = {"US", "CA"}
FUNDS_CODES = frozenset({"insufficient_funds", "withdrawal_count_limit_exceeded"})
VELOCITY_CODES = frozenset({"card_velocity_exceeded"})
_FUNDINGS = _Table(FUNDING_SHARE)
_COUNTRY = _Table({k: v[0] for k, v in COUNTRIES.items()})
_PLANS = _Table(PLAN_SHARE)

_NONE, _FUNDS, _GENERIC, _TRANSIENT, _VELOCITY, _REFRESH = 0, 1, 2, 3, 4, 5
_GROUP_NAME = {
    _NONE: "none",
    _FUNDS: "funds",
    _GENERIC: "generic",
    _TRANSIENT: "transient",
    _VELOCITY: "velocity",
    _REFRESH: "updater_refresh",
}
# counter indices of the per-invoice updater latents (far from any hour index)
_U_REFRESH, _U_REFRESH_DELAY, _U_REFRESH_EXP = -1, -2, -3


def _normal(u: float) -> float:
    """The standard normal quantile of u (clipped away from 0 and 1)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(min(max(u, 1e-9), 1 - 1e-9))


# ------------------------------------------------------------------ the world


class World:
    """A deterministic payer world: customers, renewals, failures, an exploratory dunning history and a
    common-random-numbers retry oracle. See the module docstring and docs/simulator.md."""

    def __init__(
        self,
        *,
        seed: int,
        customers: int,
        start: datetime,
        end: datetime,
        deadline_days: int = 21,
        params: WorldParams | None = None,
    ) -> None:
        if customers < 1:
            raise ValueError("customers must be at least 1")
        if deadline_days < 1:
            raise ValueError("deadline_days must be at least 1")
        self.seed, self.n_customers, self.deadline_days = seed, customers, deadline_days
        self.params = params or WorldParams()
        self._tab = WorldTables(self.params)
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
        self._new_card_payments: set[str] = set()  # attempt ids paid with a card the customer supplied
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
        return failures_frame(rows)

    def success_probability(self, invoice_id: str, at: datetime, prior_retries: int) -> float:
        """P(a blind retry of the failed renewal `invoice_id` at `at` succeeds | all latents), after
        `prior_retries` earlier retries. 0 for an insolvent invoice. `attempt()` is exactly
        `U(seed, invoice, hour of at) < success_probability(...)`."""
        return self._p(self._invoice(invoice_id), _utc_seconds(at), prior_retries)

    def attempt(self, invoice_id: str, at: datetime, prior_retries: int, luck: int = 0) -> bool:
        """The oracle: does a blind retry (same card) at `at` succeed? Independent of call order.
        `luck` != 0 draws the uniforms from another stream (a luck replicate of the same world)."""
        inv = self._invoice(invoice_id)
        t = _utc_seconds(at)
        return self._u(inv, t, luck) < self._p(inv, t, prior_retries)

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

    def first_success(self, invoice_id: str, times: Sequence[datetime], luck: int = 0) -> int | None:
        """Index of the first of `times` whose retry succeeds (retries made in order, prior_retries =
        index), or None. `luck`: as in `attempt()`."""
        inv = self._invoice(invoice_id)
        for k, at in enumerate(times):
            t = _utc_seconds(at)
            if self._u(inv, t, luck) < self._p(inv, t, k):
                return k
        return None

    # -- extra introspection (tests, docs, backtests)

    def card_update(self, invoice_id: str) -> datetime | None:
        """When the customer supplies new card data for this failed invoice (a latent drawn before any
        retry, so it is the same for every policy), or None if they never do within the deadline. The
        history pays the invoice with the new card then, unless a retry succeeded earlier."""
        inv = self._invoice(invoice_id)
        return None if math.isnan(inv.update_at) else _dt(inv.update_at)

    def card_refresh(self, invoice_id: str) -> tuple[datetime, dict[str, Any]] | None:
        """When the account updater refreshed the declined card in place (needs-new-card declines), and
        the refreshed card; None if it did not within the deadline. A blind retry after that time is
        judged on the refreshed card. No event tells the product about it."""
        inv = self._invoice(invoice_id)
        if math.isnan(inv.refresh_at):
            return None
        c = self._cards[inv.refreshed_card]
        card = {"brand": c.brand, "funding": c.funding, "country": c.country}
        return _dt(inv.refresh_at), {**card, "exp_month": c.exp_month, "exp_year": c.exp_year}

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
            "card_refresh_at": _dt(inv.refresh_at) if not math.isnan(inv.refresh_at) else None,
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

    def _u(self, inv: _Invoice, t: float, luck: int = 0) -> float:
        key = inv.key if not luck else inv.key ^ _key("payers-luck", luck)
        return _unit(key, math.floor(t / HOUR))

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
        if not inv.solvent or t <= inv.failed_at or t < inv.wait_until:
            return 0.0
        P = self.params
        if t >= inv.refresh_at:  # the updater refreshed the card in place (nan compares False)
            p = P.updater_success * (P.fatigue**prior if prior else 1.0)
            return min(p, P.p_max)
        if g == _NONE or t > inv.card_end:
            return 0.0
        c = inv.cust
        local: tuple[int, int] | None = None
        if g == _FUNDS:
            p = P.p_funded if self._funded(c, t, inv.fail_cycle) else P.p_unfunded
        elif g == _GENERIC:
            if inv.masked:
                p = P.p_masked_funded if self._funded(c, t, inv.fail_cycle) else P.p_masked_unfunded
            else:
                hour, weekday = local = _local_hour_weekday(c.tz, int(t // 1800))
                p = inv.base * self._tab.generic_hour[hour] * (P.generic_weekend if weekday >= 5 else 1.0)
        elif g == _TRANSIENT:
            p = P.transient_low if t < inv.clear_at else P.transient_high
        else:  # velocity
            p = P.velocity_low if t < inv.clear_at else P.velocity_high
        if c.pref_hour >= 0:
            hour = (local or _local_hour_weekday(c.tz, int(t // 1800)))[0]
            if min((hour - c.pref_hour) % 24, (c.pref_hour - hour) % 24) <= 2:
                p *= P.hour_pref_mult
        if prior:
            p *= P.fatigue**prior
        return min(p, P.p_max)

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
        brand = brand or self._tab.brands(rng)
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
        brand = self._tab.brands(rng)
        card = self._new_card(rng, country, created, brand)
        exp = add_months(self.start, rng.randrange(0, 48))
        card = _Card(card.brand, card.funding, card.country, exp.month, exp.year)
        region = "north_america" if country in NORTH_AMERICA else "other"
        cycle = self._tab.cycles[region](rng)
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
            arrival=int(rng.uniform(*self.params.funds_arrive_local)),
            spend_mean=self.params.spend_down_mean_days * DAY * rng.uniform(0.5, 1.5),
            fragile=rng.random() < self.params.fragile_share,
            pref_hour=rng.randrange(6, 22) if rng.random() < self.params.hour_pref_share else -1,
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
        m = self.params.if_fail_funded_mult
        return m, (1 - m * f) / (1 - f)

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
                # the account updater renewed it: same card, new expiry
                if rng.random() < self.params.updater_renews:
                    e = add_months(_dt(at), rng.randint(36, 60))
                    card = _Card(card.brand, card.funding, card.country, e.month, e.year)
                    card_idx, card_end = self._card(card), card.end
                else:
                    code = "expired_card"
                    if card.brand == "mastercard" and rng.random() < self.params.mac_share:
                        mac = "01"
            if not code:
                rate = FAILURE_RATE[card.funding] * frag * self.params.failure_rate_mult
                p_other = rate * self._tab.other_share
                p_funds_max = rate * self._tab.funds_share * m_out
                u = rng.random()
                if u < p_other:
                    code = self._tab.other_declines(rng)
                elif u < p_other + p_funds_max:
                    funded = self._funded(c, at, -1)
                    if not funded or (u - p_other) < p_funds_max * m_in / m_out:
                        code = (
                            "insufficient_funds"
                            if rng.random() < self._tab.p_insufficient
                            else "withdrawal_count_limit_exceeded"
                        )
                if code and card.brand == "mastercard" and rng.random() < self.params.mac_share:
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
            churn = self.params.churn_when_unpaid
            if not paid and (not self._invoices[inv_id].solvent or rng.random() < churn):
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
            return self._tab.soft_macs(rng)
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
        """Draw the failed invoice's latents and play out the historical dunning. Returns (paid, the card
        later renewals use if it changed)."""
        P = self.params
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
            P.insolvent_base[_GROUP_NAME[group]]
            * P.insolvent_funding[card.funding]
            * (1.4 if c.fragile else 0.9)
            * (1.3 if tenure_days < 120 else 0.8 if tenure_days > 730 else 1.0)
        )
        solvent = rng.random() >= min(0.95, p_insolvent)
        base = rng.uniform(*P.generic_base)
        masked = group == _GENERIC and rng.random() < P.masked_funds_share
        clear_at = 0.0
        if group == _TRANSIENT:
            outage = min(6 * HOUR, max(HOUR / 4, rng.expovariate(1 / (P.transient_outage_mean_hours * HOUR))))
            clear_at = failed_at + outage
        elif group == _VELOCITY:
            ordinal = datetime.fromtimestamp(failed_at, _zone(c.tz)).date().toordinal()
            clear_at = float(_local_midnight(c.tz, ordinal + 1))
        limit = failed_at + self._deadline
        # Does the customer bring new card data, and when? (drawn before, and independent of, any retry)
        update_at = math.nan
        p_update = P.card_update[category][0 if solvent else 1]
        u_update = rng.random()
        delay = max(600.0, math.exp(rng.gauss(math.log(P.card_update_median_days * DAY), 1.0)))
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
        needs_new = category == "needs_new_card" and not never_retry
        refreshed: _Card | None = None
        if needs_new:
            refreshed = self._refresh(inv, card, limit)
        # The historical policy: 1-6 retries at log-uniform random gaps within the deadline, never for
        # hard / never-retry declines; needs-new-card declines are retried too (as platforms do), for a
        # share `hist_retry_needs_new_card` of them (drawn from the invoice's hash: no rng draw).
        times: list[int] = []
        retried_new = needs_new and _unit(inv.key, -4) < P.hist_retry_needs_new_card
        if (category in ("soft", "try_later") and not never_retry) or retried_new:
            t = float(failed_at)
            lo, hi = math.log(P.hist_gap[0]), math.log(P.hist_gap[1])
            for _ in range(rng.randint(*P.hist_retries)):
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
            after_refresh = t >= inv.refresh_at  # nan compares False
            shown = inv.refreshed_card if after_refresh else card_idx
            if t < t1:
                if ok:
                    rows.append(
                        (t, c.index, inv_id, f"ch_{c.suffix}{mnum % 1000:03d}{n:02d}", True, "", "", shown)
                    )
                else:
                    again = (
                        "do_not_honor"
                        if after_refresh
                        else code
                        if rng.random() < P.hist_same_code
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
                            "" if after_refresh else mac,
                            shown,
                        )
                    )
            if ok:
                return True, refreshed
        if not math.isnan(update_at):
            same_brand = rng.random() < 0.6
            new = self._new_card(rng, card.country, update_at, card.brand if same_brand else None)
            n += 1
            if update_at < t1:
                self._new_card_payments.add(f"ch_{c.suffix}{mnum % 1000:03d}{n:02d}")
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
        return False, refreshed

    def _refresh(self, inv: _Invoice, card: _Card, limit: float) -> _Card | None:
        """The account updater's in-place refresh of a needs-new-card decline: whether and when (latents
        from the invoice's hash, so no rng draw and the same for every policy) and the refreshed card
        (same brand, funding and country, a new expiry). None when there is none within the deadline."""
        P = self.params
        rate = P.updater_rate if inv.solvent else P.updater_rate_insolvent
        if rate <= 0 or _unit(inv.key, _U_REFRESH) >= rate:
            return None
        z = _normal(_unit(inv.key, _U_REFRESH_DELAY))
        delay = max(HOUR, math.exp(math.log(P.updater_median_days * DAY) + P.updater_sigma * z))
        at = float(int(inv.failed_at + delay))
        if at >= limit:
            return None
        # reissued: a later expiry than the declined card's (2-4 years after the later of the two)
        exp = add_months(_dt(max(at, card.end)), 24 + int(_unit(inv.key, _U_REFRESH_EXP) * 25))
        new = _Card(card.brand, card.funding, card.country, exp.month, exp.year)
        inv.refresh_at, inv.refreshed_card = at, self._card(new)
        return new

    def _build_frame(self) -> pd.DataFrame:
        return attempts_frame(self._rows, self._customers, self._cards, self._new_card_payments)
