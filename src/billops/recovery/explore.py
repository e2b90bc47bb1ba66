"""Bounded exploration of retry times, with the propensities that make its outcomes usable labels.

A planner that only ever retries at the times it likes learns only about those times. With probability
`share` (policy `recovery.exploration_share`, default 5 %, at most 20 %) a learned plan's FIRST retry is
moved to another whole hour drawn uniformly from its feasible interval:

  lo = the earliest allowed retry (the failure + BillOps' minimum spacing, a network wait such as
       Mastercard MAC 24-30, never before now), rounded up to the whole hour;
  hi = the deadline, and the plan's second retry − minimum spacing when there is one;

keeping only the hours where every retry of the plan still passes the per-card network caps (Visa
reattempts per 30 days, Mastercard 10 per 24 h / 35 per 30 days, counted with the card's earlier
attempts). Never-retry declines and plans without a retry are never explored; the number of retries, the
later retries and the route stay the planner's (its probabilities and score describe its own choice).

The draw is a pure function of `key` (platform, invoice and attempt number, hashed with SHA-256): the same
on every replay, worker and process, no global random state. A re-plan after a failed retry has a new
attempt number and so a new draw: in auto mode every executed retry is the first retry of the plan in
force when it was made.

Propensity (the probability that the logging policy chose the first retry's time t, given the context):
with g the planner's (greedy) hour and N the number of feasible hours other than g,

  P(t = g)            = 1 − share            (not explored; 1 when N = 0: nothing else was possible)
  P(t = h), h ≠ g     = share / N            (explored: each other feasible hour equally likely)

so Σ_t P(t) = 1. The later retries of a plan are the planner's own, propensity 1. These are the weights
of `billops.recovery.labels.ips_value` (off-policy evaluation) and `example_weights` (training).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from billops.recovery.planner import NetworkRules, _cap_violation

if TYPE_CHECKING:
    from billops.recovery.timing_plan import TimingPlan

MAX_SHARE = 0.2  # the policy's bound: at most one decision in five explores
HOUR = timedelta(hours=1)
_SAFE_ATTEMPTS = 10


def draws(key: str) -> tuple[float, float]:
    """Two independent uniforms in [0, 1) from `key` (SHA-256): the coin and the hour's draw."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    scale = float(1 << 64)
    return int.from_bytes(digest[:8], "big") / scale, int.from_bytes(digest[8:16], "big") / scale


def exploration_key(platform: str, invoice_id: str, attempts_so_far: int) -> str:
    """The draw's key for one plan: a re-plan after a failed retry (one more attempt) draws again."""
    return f"explore:v1:{platform}:{invoice_id}:{attempts_so_far}"


def earliest_retry(
    failed_at: datetime, now: datetime, rules: NetworkRules, wait_hours: float | None = None
) -> datetime:
    """The earliest retry the planner allows: the failure + the minimum spacing, a network wait
    (Mastercard MAC 24-30) when it is longer, never before now."""
    start = failed_at + timedelta(hours=rules.min_spacing_hours)
    if wait_hours:
        start = max(start, failed_at + timedelta(hours=wait_hours))
    return max(start, now)


def _ceil_hour(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    floor = t.replace(minute=0, second=0, microsecond=0)
    return floor if floor == t else floor + HOUR


def feasible_hours(
    retries: list[datetime],
    *,
    earliest: datetime,
    deadline: datetime,
    rules: NetworkRules,
    card_brand: str | None = None,
    card_attempts: list[datetime] | None = None,
) -> list[datetime]:
    """Every whole hour the first retry could move to without breaking a rule: inside [earliest,
    deadline], at least the minimum spacing before the second retry, and with every retry of the plan
    passing the card's network caps (`card_attempts`: the card's earlier attempts, the failure
    included)."""
    spacing = timedelta(hours=rules.min_spacing_hours)
    lo = _ceil_hour(earliest)
    hi = deadline.astimezone(UTC)
    if len(retries) > 1:
        hi = min(hi, retries[1] - spacing)
    network, limits = rules.for_brand(card_brand)
    window = timedelta(days=int(limits.get("window_days", 30)))
    known = sorted(a.astimezone(UTC) for a in (card_attempts or []))
    rest = list(retries[1:])
    # No cap in the rules file is tighter than 10 attempts (Mastercard, 24 h): far from it, skip the check.
    safe = len(known) + len(retries) + 1 <= _SAFE_ATTEMPTS
    out: list[datetime] = []
    t = lo
    while t <= hi:
        chosen: list[datetime] = []
        ok = True
        for r in [] if safe else [t, *rest]:
            if _cap_violation(network, limits, known + chosen, r, window):
                ok = False
                break
            chosen.append(r)
        if ok:
            out.append(t)
        t += HOUR
    return out


def explore(
    plan: TimingPlan,
    *,
    share: float,
    key: str,
    earliest: datetime,
    deadline: datetime,
    rules: NetworkRules,
    card_brand: str | None = None,
    card_attempts: list[datetime] | None = None,
    failed_at: datetime | None = None,
) -> TimingPlan:
    """The plan as the mixed policy chose it: with probability `share` (drawn from `key`) its first retry
    moved to a uniformly drawn other feasible hour. Records `explored`, `share`, `propensity`,
    `greedy_retries` and `exploration_options` (N) on the returned plan; the input is not changed.
    `card_attempts`: the card's earlier attempts; `failed_at`, the failure, is counted once with them."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"exploration share {share!r} must be between 0 and 1")
    greedy = list(plan.retries)
    base = replace(
        plan,
        greedy_retries=greedy,
        share=share,
        explored=False,
        propensity=1.0,
        exploration_options=0,
        retries=list(plan.retries),
        notes=list(plan.notes),
        reasons=list(plan.reasons),
    )
    never = plan.category == "hard" or (plan.blocked or "").startswith("never retried")
    if not greedy or never:
        return base
    g = greedy[0].astimezone(UTC)
    known = list(card_attempts or [])
    if failed_at is not None and failed_at not in known:
        known.append(failed_at)
    others = [
        h
        for h in feasible_hours(
            greedy,
            earliest=earliest,
            deadline=deadline,
            rules=rules,
            card_brand=card_brand,
            card_attempts=known,
        )
        if h != g
    ]
    n = len(others)
    base.exploration_options = n
    if n == 0 or share <= 0.0:
        base.propensity = 1.0 if n == 0 else 1.0 - share
        return base
    coin, pick = draws(key)
    if coin >= share:
        base.propensity = 1.0 - share
        return base
    t = others[min(n - 1, int(pick * n))]
    base.retries = [t, *greedy[1:]]
    base.explored = True
    base.propensity = share / n
    why = (
        f"exploratory: first retry moved from {g:%Y-%m-%d %H:%M} to {t:%Y-%m-%d %H:%M} UTC, drawn at "
        f"random among {n} other hours the network rules allow (exploration share {share:.0%}, "
        f"propensity {base.propensity:.4g}) so the model learns beyond its own choices; the score is "
        "the planner's for its own plan"
    )
    base.notes.append(why)
    base.reasons.append(why)
    return base


def exploration_record(plan: TimingPlan) -> dict[str, Any]:
    """What a decision stores (plan JSON `exploration`, audit `recovery.decided`) of a plan's
    exploration: explored, share, propensity, greedy_retries (ISO), options (N)."""
    return {
        "explored": plan.explored,
        "share": plan.share,
        "propensity": plan.propensity,
        "greedy_retries": [t.isoformat() for t in plan.greedy_retries],
        "options": plan.exploration_options,
    }
