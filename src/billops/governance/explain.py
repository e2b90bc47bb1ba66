"""`billops policy check`: validate a policy file and say, for one sample customer, which mode and
which guardrails apply and why. The same answer is at GET /api/policy/explain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billops.domain import Money
from billops.governance.guardrails import quiet_until
from billops.governance.rollout import Subject, resolve_mode
from billops.policy import Policy


def explain(
    policy: Policy, sub: Subject, *, now: datetime | None = None, forced_shadow: str | None = None
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    choice = resolve_mode(policy, sub, forced_shadow=forced_shadow)
    g = policy.guardrails
    cur = sub.currency.lower()
    caps = g.amount_caps
    per_action = caps.per_action.get(cur, caps.per_action.get("*"))
    per_customer = caps.per_customer.get(cur, caps.per_customer.get("*"))
    rules: list[dict[str, str]] = [
        {
            "rule": "risky_action",
            "applies": "always",
            "says": "always needs a human: " + ", ".join(sorted(g.approval_actions)),
        }
    ]

    def money(n: int) -> str:
        return Money(amount=n, currency=cur).format()

    if per_action is not None:
        over = sub.amount_minor > per_action
        rules.append(
            {
                "rule": "amount_cap_per_action",
                "applies": "now" if over else "no",
                "says": f"an automatic charge or credit above {money(per_action)} waits for a human"
                + (f" (this invoice, {money(sub.amount_minor)}, is above it)" if over else ""),
            }
        )
    if per_customer is not None:
        rules.append(
            {
                "rule": "amount_cap_per_customer",
                "applies": "when reached",
                "says": f"at most {money(per_customer)} moved automatically per customer in "
                f"{caps.period_days:g} days",
            }
        )
    for rule, limit, scope in (
        ("rate_limit_customer", g.rate_limits.per_customer, "per customer"),
        ("rate_limit_overall", g.rate_limits.overall, "overall"),
    ):
        if limit is not None:
            rules.append(
                {
                    "rule": rule,
                    "applies": "when reached",
                    "says": f"at most {limit.max_actions} customer-facing actions {scope} in "
                    f"{limit.per_hours:g} h; more wait",
                }
            )
    if g.quiet_hours is not None:
        q = g.quiet_hours
        until, tz = quiet_until(q, sub.timezone, now)
        rules.append(
            {
                "rule": "quiet_hours",
                "applies": "now" if until else "not now",
                "says": f"{', '.join(q.channels)} wait during {q.start}–{q.end} in {tz}"
                + (f": a message now would wait until {until:%Y-%m-%d %H:%M} UTC" if until else ""),
            }
        )
    cb = g.circuit_breaker
    rules.append(
        {
            "rule": "circuit_breaker",
            "applies": "now" if forced_shadow and "breaker" in forced_shadow else "when tripped",
            "says": f"everything to shadow above {cb.max_action_failures_per_hour} action failures or "
            f"{cb.max_decisions_per_hour} acting decisions per hour",
        }
    )
    rules.append(
        {
            "rule": "kill_switch",
            "applies": "now" if forced_shadow and "kill switch" in forced_shadow else "when on",
            "says": "`billops pause-all` turns every workflow to shadow at once",
        }
    )
    return {
        "policy": policy.full_version,
        "subject": sub.as_dict(),
        "at": now.isoformat(),
        "mode": choice.as_dict(),
        "guardrails": rules,
    }
