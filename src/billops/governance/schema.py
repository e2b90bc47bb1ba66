"""The governance part of the policy file: modes per workflow and segment, and the guardrails.

```yaml
modes:
  recovery:
    default: shadow
    segments:                 # first match wins; a customer matching none gets `default`
      - name: smb-usd-canary
        when: {platforms: [stripe], currencies: [usd], plans: [starter], tiers: [smb],
               amount_minor: {max: 20000}, rollout_percent: 25}
        mode: auto
```
`modes: {recovery: auto}` (one mode for everyone) is still accepted.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Mode = Literal["shadow", "assist", "auto"]

# Actions that move money or change what the customer has: ALWAYS a human's decision, whatever the mode.
RISKY_ACTIONS = (
    "refund",
    "write_off",
    "cancel_subscription",
    "pause_subscription",
    "apply_coupon",
    "apply_credit",
    "change_plan",
)
MESSAGE_ACTIONS = {"send_email": "email", "send_sms": "sms"}
MONEY_ACTIONS = ("retry_payment", "apply_credit", "refund", "write_off")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AmountRange(_Strict):
    min: int | None = Field(default=None, ge=0, description="Inclusive, minor units.")
    max: int | None = Field(default=None, ge=0, description="Inclusive, minor units.")

    @model_validator(mode="after")
    def _ordered(self) -> AmountRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("amount_minor.min must not exceed max")
        return self


class SegmentMatch(_Strict):
    """Every listed condition must hold (AND); inside a list, any value matches (OR). Case-insensitive."""

    platforms: list[str] | None = None
    currencies: list[str] | None = None
    plans: list[str] | None = Field(default=None, description="Plan name or id on the invoice/subscription.")
    tiers: list[str] | None = Field(default=None, description="Customer tier (see segmentation.tier_key).")
    amount_minor: AmountRange | None = None
    rollout_percent: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Only this share of customers, chosen by a stable hash of the customer id (and the "
        "segment name), so a customer stays in or out as the percentage grows.",
    )

    @field_validator("platforms", "currencies", "plans", "tiers")
    @classmethod
    def _lower(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("an empty list matches nothing: leave the condition out instead")
        return [x.lower() for x in v] if v is not None else None


class Segment(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")
    when: SegmentMatch = SegmentMatch()
    mode: Mode


class WorkflowModes(_Strict):
    default: Mode = "shadow"
    segments: list[Segment] = Field(default_factory=list)

    @field_validator("segments")
    @classmethod
    def _unique(cls, v: list[Segment]) -> list[Segment]:
        names = [s.name for s in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"segment names must be unique: {', '.join(sorted(dup))}")
        return v


class Segmentation(_Strict):
    tier_key: str = Field(default="tier", description="Customer metadata key that holds the tier.")


# ------------------------------------------------------------------ guardrails


class AmountCaps(_Strict):
    per_action: dict[str, int] = Field(
        default_factory=dict,
        description='Largest amount one automatic money action may move, per currency: {"*": 100000}.',
    )
    per_customer: dict[str, int] = Field(
        default_factory=dict,
        description="Largest total that automatic money actions may move for one customer per period.",
    )
    period_days: float = Field(default=30, gt=0, le=366)

    @field_validator("per_action", "per_customer")
    @classmethod
    def _currencies(cls, v: dict[str, int]) -> dict[str, int]:
        out = {}
        for k, n in v.items():
            if k != "*" and not re.fullmatch(r"[A-Za-z]{3}", k):
                raise ValueError(f"{k!r} is not a currency code (or '*')")
            if n < 0:
                raise ValueError(f"cap for {k} must not be negative")
            out[k.lower()] = n
        return out


class RateLimit(_Strict):
    max_actions: int = Field(ge=1)
    per_hours: float = Field(gt=0, le=24 * 31)


class RateLimits(_Strict):
    per_customer: RateLimit | None = RateLimit(max_actions=6, per_hours=24)
    overall: RateLimit | None = None


def hhmm(v: str) -> str:
    """A local wall-clock time 'HH:MM' (quiet hours, the SMS night)."""
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
        raise ValueError(f"{v!r} is not a time HH:MM (00:00–23:59)")
    return v


class QuietHours(_Strict):
    start: str = Field(default="21:00", description="Local time HH:MM when messages stop.")
    end: str = Field(default="08:00", description="Local time HH:MM when messages may go again.")
    channels: list[Literal["email", "sms"]] = Field(default_factory=lambda: ["sms"])  # type: ignore[arg-type]
    default_timezone: str = Field(default="UTC", description="For customers whose time zone is unknown.")

    _hhmm = field_validator("start", "end")(classmethod(lambda cls, v: hhmm(v)))

    @field_validator("default_timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class CircuitBreaker(_Strict):
    max_action_failures_per_hour: int | None = Field(default=25, ge=1)
    max_decisions_per_hour: int | None = Field(default=5000, ge=1)


class Guardrails(_Strict):
    require_approval: list[str] = Field(
        default_factory=list,
        description="Action types that need a human on top of the built-in ones (refunds, write-offs, "
        "cancellations, pauses, coupons, credits, plan changes), which cannot be removed.",
    )
    amount_caps: AmountCaps = AmountCaps()
    rate_limits: RateLimits = RateLimits()
    quiet_hours: QuietHours | None = QuietHours()
    circuit_breaker: CircuitBreaker = CircuitBreaker()

    @property
    def approval_actions(self) -> set[str]:
        return set(RISKY_ACTIONS) | set(self.require_approval)
