"""Retry timing under the card-network rules (data file `network_rules.yaml`).

The planner turns the policy's schedule for a route into concrete times, then enforces, in order:
never retry hard declines or Mastercard MAC 03/21 (card data that needs replacing keeps its scheduled
retries beside the card-update link: updaters refresh cards in place); MAC 24–30 waits; retries only
in the future and inside the recovery window; BillOps' minimum spacing; and
the per-card attempt caps (Visa reattempts per 30 days, Mastercard 10 per 24 h and 35 per 30 days)
counting the attempts the card already had. Every dropped or moved retry leaves a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from billops.domain import Decline, DeclineCategory, PaymentAttempt
from billops.errors import ConfigError
from billops.policy import RecoveryPolicy

BUILTIN = Path(__file__).resolve().parent.parent / "data" / "network_rules.yaml"


@dataclass(frozen=True)
class NetworkRules:
    version: str
    min_spacing_hours: float
    networks: dict[str, dict[str, Any]]

    def for_brand(self, brand: str | None) -> tuple[str, dict[str, Any]]:
        b = (brand or "").lower()
        if b in self.networks:
            return b, self.networks[b]
        return "default", self.networks.get("default", {"max_reattempts": 15, "window_days": 30})


@lru_cache(maxsize=8)
def load_network_rules(path: str = "builtin") -> NetworkRules:
    p = BUILTIN if path == "builtin" else Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        return NetworkRules(
            version=str(raw["version"]),
            min_spacing_hours=float(raw.get("min_spacing_hours", 4)),
            networks={str(k): dict(v) for k, v in raw["networks"].items()},
        )
    except FileNotFoundError as exc:
        raise ConfigError(f"network rules {p}: not found") from exc
    except (KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError) as exc:
        raise ConfigError(f"network rules {p}: {exc!r}") from exc


@dataclass
class RetryPlan:
    times: list[datetime] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocked: str | None = None  # why no retry at all


def plan_retries(
    *,
    route: str,
    decline: Decline,
    card_brand: str | None,
    failed_at: datetime,
    now: datetime,
    card_attempts: list[PaymentAttempt],
    policy: RecoveryPolicy,
    rules: NetworkRules,
) -> RetryPlan:
    plan = RetryPlan()
    if decline.never_retry or decline.category == DeclineCategory.hard:
        plan.blocked = f"never retried: {decline.reason}"
        return plan
    if decline.category == DeclineCategory.needs_new_card:
        # Not a "never" rule: account updaters refresh many cards in place and customers fix cards on
        # the platform's own page, often with no event BillOps sees. The route asks for new card data;
        # the schedule still retries.
        plan.notes.append(f"{decline.reason}: the card-update link goes out; scheduled retries stay")
    offsets = policy.retry_schedule_hours.get(route, [])  # type: ignore[call-overload]
    if not offsets:
        plan.blocked = f"the policy schedules no automatic retry for route {route}"
        return plan

    deadline = failed_at + timedelta(days=policy.window_days)
    earliest = max(now, failed_at)
    if decline.retry_after_hours:
        wait_until = failed_at + timedelta(hours=decline.retry_after_hours)
        if wait_until > earliest:
            earliest = wait_until
            plan.notes.append(
                f"network asks to wait {decline.retry_after_hours:g} h (advice {decline.network_advice_code})"
            )
    spacing = timedelta(hours=rules.min_spacing_hours)
    network, limits = rules.for_brand(card_brand)
    window = timedelta(days=int(limits.get("window_days", 30)))
    known = sorted(a.attempted_at for a in card_attempts)

    chosen: list[datetime] = []
    for hours in offsets:
        if len(chosen) >= policy.max_retries:
            plan.notes.append(f"capped at {policy.max_retries} retries by policy")
            break
        t = failed_at + timedelta(hours=hours)
        if t < earliest:
            t = earliest
        if chosen and t < chosen[-1] + spacing:
            t = chosen[-1] + spacing
        if t > deadline:
            plan.notes.append(
                f"retry at +{hours:g} h falls after the {policy.window_days}-day window: dropped"
            )
            continue
        reason = _cap_violation(network, limits, known + chosen, t, window)
        if reason:
            plan.notes.append(f"retry at {t:%Y-%m-%d %H:%M} UTC dropped: {reason}")
            continue
        chosen.append(t.replace(microsecond=0))
    plan.times = chosen
    if not chosen and plan.blocked is None:
        plan.blocked = "every scheduled retry broke a rule or fell outside the window"
    return plan


def _cap_violation(
    network: str, limits: dict[str, Any], attempts: list[datetime], t: datetime, window: timedelta
) -> str | None:
    in_window = [a for a in attempts if t - window < a <= t]
    if network == "mastercard":
        day = [a for a in attempts if t - timedelta(hours=24) < a <= t]
        if len(day) + 1 > int(limits.get("max_attempts_24h", 10)):
            return f"Mastercard allows at most {limits.get('max_attempts_24h', 10)} attempts per card in 24 h"
        if len(in_window) + 1 > int(limits.get("max_attempts", 35)):
            return f"Mastercard allows at most {limits.get('max_attempts', 35)} attempts per card in 30 days"
        return None
    cap = int(limits.get("max_reattempts", 15))
    # Reattempts: every attempt in the window after the first one counts.
    if max(0, len(in_window) - 1) + 1 > cap:
        return f"{network} allows at most {cap} reattempts per card in {window.days} days"
    return None
