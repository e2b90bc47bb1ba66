"""Which mode applies to one decision: the policy's segments per workflow, first match wins, with a
percentage rollout by a stable hash of the customer id; the kill switch and the circuit breaker
override everything to shadow. Every choice comes with the reasons a human can read."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from billops.governance.schema import Mode, Segment
from billops.policy import Policy


@dataclass(frozen=True)
class Subject:
    """What segments look at, for one decision."""

    workflow: str
    platform: str
    customer_id: str | None
    currency: str
    amount_minor: int
    plans: tuple[str, ...] = ()  # plan name and/or id
    tier: str | None = None
    timezone: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "platform": self.platform,
            "customer_id": self.customer_id,
            "currency": self.currency,
            "amount_minor": self.amount_minor,
            "plans": list(self.plans),
            "tier": self.tier,
            "timezone": self.timezone,
        }


@dataclass(frozen=True)
class ModeChoice:
    mode: Mode
    segment: str | None  # None: the workflow's default
    reasons: list[str] = field(default_factory=list)
    forced_shadow: str | None = None  # kill switch / circuit breaker

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "segment": self.segment,
            "reasons": self.reasons,
            "forced_shadow": self.forced_shadow,
        }


def rollout_bucket(customer_id: str, salt: str) -> float:
    """A stable number in [0, 100) for (segment, customer): sha256, not Python's salted hash(), so every
    worker and every release puts a customer in the same bucket."""
    h = hashlib.sha256(f"{salt}\x00{customer_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 * 100


def segment_matches(seg: Segment, sub: Subject) -> tuple[bool, str]:
    """(matches, why) where `why` names the first failing condition, or every condition that held."""
    w = seg.when
    held: list[str] = []
    if w.platforms is not None:
        if sub.platform.lower() not in w.platforms:
            return False, f"platform {sub.platform} not in {w.platforms}"
        held.append(f"platform {sub.platform}")
    if w.currencies is not None:
        if sub.currency.lower() not in w.currencies:
            return False, f"currency {sub.currency} not in {w.currencies}"
        held.append(f"currency {sub.currency}")
    if w.plans is not None:
        plans = [p.lower() for p in sub.plans]
        if not any(p in w.plans for p in plans):
            return False, f"plan {'/'.join(sub.plans) or 'unknown'} not in {w.plans}"
        held.append(f"plan {'/'.join(sub.plans)}")
    if w.tiers is not None:
        if (sub.tier or "").lower() not in w.tiers:
            return False, f"tier {sub.tier or 'unknown'} not in {w.tiers}"
        held.append(f"tier {sub.tier}")
    if w.amount_minor is not None:
        lo, hi = w.amount_minor.min, w.amount_minor.max
        if (lo is not None and sub.amount_minor < lo) or (hi is not None and sub.amount_minor > hi):
            band = f"[{'…' if lo is None else lo}, {'…' if hi is None else hi}]"
            return False, f"amount {sub.amount_minor} outside {band}"
        held.append(f"amount {sub.amount_minor} in band")
    if w.rollout_percent is not None:
        if not sub.customer_id:
            return False, "rollout needs a customer id (none known)"
        b = rollout_bucket(sub.customer_id, seg.name)
        if b >= w.rollout_percent:
            return False, f"customer outside the {w.rollout_percent:g}% rollout (bucket {b:.2f})"
        held.append(f"customer in the {w.rollout_percent:g}% rollout (bucket {b:.2f})")
    return True, ", ".join(held) or "no conditions"


def resolve_mode(policy: Policy, sub: Subject, *, forced_shadow: str | None = None) -> ModeChoice:
    wm = policy.workflow_modes(sub.workflow)  # type: ignore[arg-type]
    reasons: list[str] = []
    chosen: ModeChoice | None = None
    for seg in wm.segments:
        ok, why = segment_matches(seg, sub)
        if ok:
            reasons.append(f"segment {seg.name}: {why} → {seg.mode}")
            chosen = ModeChoice(mode=seg.mode, segment=seg.name, reasons=reasons)
            break
        reasons.append(f"segment {seg.name} skipped: {why}")
    if chosen is None:
        reasons.append(f"no segment matched: the {sub.workflow} default {wm.default}")
        chosen = ModeChoice(mode=wm.default, segment=None, reasons=reasons)
    if forced_shadow:
        return ModeChoice(
            mode="shadow",
            segment=chosen.segment,
            reasons=[*chosen.reasons, f"shadow instead of {chosen.mode}: {forced_shadow}"],
            forced_shadow=forced_shadow,
        )
    return chosen
