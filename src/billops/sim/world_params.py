"""The payer simulator's invented constants as one frozen `WorldParams`, and named presets.

`WorldParams()` is the development world (`default`): the one the recovery model was built on. The other
presets are held-out worlds for `billops recovery evaluate --worlds`: the policy must never be tuned on
them (docs/simulator.md, "Worlds"). All numbers are invented; the product must never hard-code them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from billops.sim.business import BRAND_SHARE, DECLINE_MIX
from billops.sim.payer_state import _Table

HOUR = 3600
DAY = 86400

# Pay cycles (weekend paydays move to the Friday before).
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
# local hour of day -> multiplier for generic declines
GENERIC_HOUR = (0.45,) * 5 + (0.8,) + (1.45,) * 6 + (1.0,) * 6 + (0.85,) * 4 + (0.65,) * 2
# fmt: on


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


def cycle_mix(weekly: float, biweekly: float, semi_monthly: float, monthly: float) -> tuple[float, ...]:
    """Pay-cycle weights (the order of PAY_CYCLES) from the shares of the four kinds."""
    return (
        weekly,
        biweekly / 2,
        biweekly / 2,
        semi_monthly / 2,
        semi_monthly / 2,
        monthly * 0.2,
        monthly * 0.1,
        monthly * 0.3,
        monthly * 0.4,
    )


@dataclass(frozen=True)
class WorldParams:
    """Every invented constant of `sim.payers.World`. Defaults: the development world."""

    # pay cycles: None = the regional mixes PAY_CYCLE_MIX; else one weight tuple (PAY_CYCLES order)
    pay_cycle_mix: tuple[float, ...] | None = None
    funds_arrive_local: tuple[int, int] = (4 * HOUR, 9 * HOUR)
    spend_down_mean_days: float = 4.0  # funds last Exp(mean) days; the mean varies x0.5..1.5 per customer
    p_funded: float = 0.85  # insufficient funds: retry success inside / outside a funded window
    p_unfunded: float = 0.05
    p_masked_funded: float = 0.75  # a generic decline that really is a funds problem
    p_masked_unfunded: float = 0.04
    masked_funds_share: float = 0.3
    if_fail_funded_mult: float = 0.25  # first attempts inside a funded window fail 4x less often for funds
    generic_base: tuple[float, float] = (0.15, 0.35)
    generic_hour_strength: float = 1.0  # 0: no hour/weekday effect, 1: GENERIC_HOUR as is, >1 stronger
    generic_weekend: float = 0.65
    transient_low: float = 0.06
    transient_high: float = 0.7
    transient_outage_mean_hours: float = 1.5
    velocity_low: float = 0.05
    velocity_high: float = 0.65
    fatigue: float = 0.85  # each earlier retry multiplies p by this
    hour_pref_share: float = 0.25
    hour_pref_mult: float = 1.25
    p_max: float = 0.95
    fragile_share: float = 0.2
    insolvency_mult: float = 1.0  # scales every P(insolvent)
    insolvent_base: Mapping[str, float] = field(
        default_factory=lambda: _frozen(
            {"funds": 0.30, "generic": 0.40, "transient": 0.08, "velocity": 0.20, "none": 0.35}
        )
    )
    insolvent_funding: Mapping[str, float] = field(
        default_factory=lambda: _frozen({"credit": 0.85, "debit": 1.0, "prepaid": 1.7})
    )
    # P(the customer supplies a wholly new card within the deadline): (solvent, insolvent)
    card_update: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: _frozen(
            {"needs_new_card": (0.6, 0.1), "hard": (0.35, 0.05), "try_later": (0.12, 0.03)}
            | {"soft": (0.12, 0.03)}
        )
    )
    card_update_median_days: float = 1.5  # log-normal delay, sigma 1
    updater_renews: float = 0.65  # an expired card is renewed silently by the updater before the renewal
    # After a needs-new-card decline: P(the card is refreshed in place, no event BillOps sees), the
    # refresh delay (log-normal, median days, sigma) and P(a blind retry after it succeeds).
    updater_rate: float = 0.45
    updater_rate_insolvent: float = 0.15
    updater_median_days: float = 3.0
    updater_sigma: float = 0.8
    updater_success: float = 0.85
    mac_share: float = 0.35  # Mastercard declines that carry a Merchant Advice Code
    soft_mac_weights: Mapping[str, float] = field(
        default_factory=lambda: _frozen(
            {"02": 20, "24": 15, "25": 25, "26": 15} | {"27": 10, "28": 6, "29": 5, "30": 4}
        )
    )
    decline_mix: Mapping[str, float] = field(default_factory=lambda: _frozen(DECLINE_MIX))
    brand_share: Mapping[str, float] = field(default_factory=lambda: _frozen(BRAND_SHARE))
    failure_rate_mult: float = 1.0
    # The historical (exploratory) dunning policy.
    hist_retries: tuple[int, int] = (1, 6)
    hist_gap: tuple[int, int] = (3 * HOUR, 7 * DAY)  # log-uniform gap between attempts
    hist_retry_needs_new_card: float = 1.0  # share of needs-new-card failures the history retries
    churn_when_unpaid: float = 0.5
    hist_same_code: float = 0.85

    def replace(self, **changes: Any) -> WorldParams:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {
            f.name: (dict(v) if isinstance(v, Mapping) else v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }


# The world before the account updater's in-place refreshes were modelled (needs-new-card declines
# unrecoverable by a blind retry and never retried in the history): kept to check that the parameters
# reproduce the old simulator exactly.
LEGACY = WorldParams(updater_rate=0.0, updater_rate_insolvent=0.0, hist_retry_needs_new_card=0.0)

_MIX = dict(DECLINE_MIX)
_GENERIC_MIX = {
    **_MIX,
    "insufficient_funds": 18,
    "generic_decline": 32,
    "do_not_honor": 26,
    "withdrawal_count_limit_exceeded": 0.5,
}

DEVELOPMENT_WORLD = "default"
WORLDS: dict[str, WorldParams] = {
    DEVELOPMENT_WORLD: WorldParams(),
    # Mostly monthly and semi-monthly payers who spend their money fast: paydays matter more.
    "payday_heavy": WorldParams(
        pay_cycle_mix=cycle_mix(weekly=5, biweekly=10, semi_monthly=30, monthly=55),
        spend_down_mean_days=1.5,
        decline_mix=_frozen({**_MIX, "insufficient_funds": 55}),
    ),
    # Card-account updaters refresh most cards in place; customers rarely bring a new card.
    "updater_rich": WorldParams(
        updater_rate=0.8,
        updater_rate_insolvent=0.3,
        updater_median_days=1.5,
        updater_renews=0.4,
        decline_mix=_frozen({**_MIX, "expired_card": 18, "incorrect_cvc": 8}),
        card_update=_frozen(
            {"needs_new_card": (0.3, 0.05), "hard": (0.35, 0.05), "try_later": (0.12, 0.03)}
            | {"soft": (0.12, 0.03)}
        ),
    ),
    # Issuers answer do_not_honor / generic for almost everything, and the hour of day matters a lot.
    "generic_heavy": WorldParams(
        decline_mix=_frozen(_GENERIC_MIX),
        generic_hour_strength=1.8,
        generic_weekend=0.45,
        masked_funds_share=0.45,
    ),
    # Every failed retry hurts the next one badly: few, well-placed retries win.
    "high_fatigue": WorldParams(fatigue=0.55, hist_retries=(2, 8)),
    # Mastercard-dominated portfolio, most declines carrying a Merchant Advice Code.
    "mastercard_heavy": WorldParams(
        brand_share=_frozen({"visa": 25, "mastercard": 68, "amex": 7}),
        mac_share=0.75,
    ),
    # Weak timing effects: long spend-down, flat hours, mild funded/unfunded contrast, more insolvency.
    "low_signal": WorldParams(
        spend_down_mean_days=12.0,
        generic_hour_strength=0.3,
        generic_weekend=0.9,
        p_funded=0.55,
        p_unfunded=0.15,
        transient_low=0.25,
        transient_high=0.5,
        velocity_low=0.2,
        velocity_high=0.5,
        insolvency_mult=1.3,
    ),
}
FUNDS_CODES = frozenset({"insufficient_funds", "withdrawal_count_limit_exceeded"})


class WorldTables:
    """The world's weighted choices and derived shares, built once from its parameters."""

    def __init__(self, p: WorldParams) -> None:
        mix = dict(p.decline_mix)
        if_share = mix.get("insufficient_funds", 0.0) + mix.get("withdrawal_count_limit_exceeded", 0.0)
        other = {k: v for k, v in mix.items() if k not in FUNDS_CODES and k != "expired_card" and v > 0}
        total = sum(mix.values())
        self.if_share = if_share
        self.p_insufficient = mix.get("insufficient_funds", 0.0) / if_share if if_share else 1.0
        self.funds_share = if_share / total  # of all failures (expired cards: modelled by expiry dates)
        self.other_share = sum(other.values()) / total
        self.other_declines = _Table(other)
        self.brands = _Table(dict(p.brand_share))
        self.soft_macs = _Table(dict(p.soft_mac_weights))
        if p.pay_cycle_mix is None:
            self.cycles = {r: _Table(dict(zip(PAY_CYCLES, w, strict=True))) for r, w in PAY_CYCLE_MIX.items()}
        else:
            one = _Table(dict(zip(PAY_CYCLES, p.pay_cycle_mix, strict=True)))
            self.cycles = {r: one for r in PAY_CYCLE_MIX}
        s = p.generic_hour_strength
        scaled = tuple(max(0.0, 1.0 + s * (h - 1.0)) for h in GENERIC_HOUR)
        self.generic_hour = GENERIC_HOUR if s == 1.0 else scaled


HELD_OUT_WORLDS = tuple(name for name in WORLDS if name != DEVELOPMENT_WORLD)


def resolve_worlds(spec: str) -> list[str]:
    """`all` (the held-out worlds), `every` (held-out plus the development world) or NAME[,NAME...].
    Raises ValueError naming the unknown worlds."""
    s = spec.strip()
    if s == "all":
        return list(HELD_OUT_WORLDS)
    if s == "every":
        return list(WORLDS)
    names = [n.strip() for n in s.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORLDS]
    if unknown or not names:
        bad = ", ".join(unknown) or repr(spec)
        raise ValueError(f"unknown world(s) {bad}: choose all, every or from {', '.join(WORLDS)}")
    return list(dict.fromkeys(names))
