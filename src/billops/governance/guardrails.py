"""Guardrails: named rules evaluated before any action, each with a reason that goes to the audit log.

Two moments:
- `review_plan` when a decision is made: which rules send it to a human whatever the mode
  (`risky_action`: refunds, write-offs, cancellations, pauses, coupons, credits, plan changes;
  `amount_cap_per_action`; `amount_cap_per_customer`).
- `check_action` just before each action executes: `kill_switch` and `circuit_breaker` (block: every
  workflow behaves as shadow), the approval rules again for plans no human approved (block), rate limits
  per customer and overall (defer until the window has room), quiet hours for messages in the customer's
  local time (defer until they end).
- Contact rules for messages (policy `contact`): `opt_out` (the customer asked not to be contacted on
  this channel: block), `frequency_cap` (enough messages on this channel in the window: block, the
  message is dropped rather than piled up), `sms_night` (SMS never at night in the customer's local
  time, whatever quiet_hours says: defer).

Counts come from `governed_actions`: every action the guardrails let through is a row there, updated
with its outcome; `breaker_check` trips the circuit breaker from the same rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billops.governance import control
from billops.governance.rollout import Subject
from billops.governance.schema import MESSAGE_ACTIONS, MONEY_ACTIONS, QuietHours
from billops.policy import Policy
from billops.store.models import Decision, Delivery, GovernedAction

Effect = Literal["allow", "approval", "block", "defer"]
# Actions that reach the customer or their money: what rate limits count.
CUSTOMER_FACING = {
    "retry_payment",
    "send_email",
    "send_sms",
    "pause_subscription",
    "apply_credit",
    "apply_coupon",
    "refund",
    "write_off",
    "cancel_subscription",
    "change_plan",
}
COUNTED = ("allowed", "done", "error")


@dataclass(frozen=True)
class Finding:
    rule: str
    reason: str
    effect: Effect
    not_before: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rule": self.rule, "reason": self.reason, "effect": self.effect}
        if self.not_before is not None:
            d["not_before"] = self.not_before.isoformat()
        return d


@dataclass
class Verdict:
    effect: Effect
    findings: list[Finding] = field(default_factory=list)

    @property
    def not_before(self) -> datetime | None:
        times = [f.not_before for f in self.findings if f.not_before is not None]
        return max(times) if times else None

    def as_dict(self) -> dict[str, Any]:
        nb = self.not_before
        return {
            "effect": self.effect,
            "findings": [f.as_dict() for f in self.findings],
            "not_before": nb.isoformat() if nb else None,
        }


def amount_of(action: dict[str, Any], invoice_amount: int) -> int:
    if action["type"] == "retry_payment":
        return invoice_amount
    return int(action.get("detail", {}).get("amount_minor") or 0)


def _money(n: int, currency: str) -> str:
    from billops.domain import Money

    return Money(amount=n, currency=currency).format()


def customer_total(
    s: Session, platform: str, customer_id: str | None, currency: str, since: datetime, *, exclude_wf: str
) -> int:
    """What automatic money actions already moved (or are moving) for this customer since `since`:
    one amount per (workflow, action type), since retries of one invoice move its amount at most once."""
    if not customer_id:
        return 0
    q = (
        sa.select(GovernedAction.workflow_id, GovernedAction.action, sa.func.max(GovernedAction.amount))
        .where(
            GovernedAction.platform == platform,
            GovernedAction.customer_id == customer_id,
            GovernedAction.currency == currency.lower(),
            GovernedAction.action.in_(MONEY_ACTIONS),
            GovernedAction.status.in_(COUNTED),
            GovernedAction.at >= since,
            GovernedAction.workflow_id != exclude_wf,
        )
        .group_by(GovernedAction.workflow_id, GovernedAction.action)
    )
    return int(sum(row[2] or 0 for row in s.execute(q)))


def _cap_findings(
    s: Session,
    policy: Policy,
    *,
    wf: str,
    sub: Subject,
    actions: list[dict[str, Any]],
    now: datetime,
    effect: Effect,
) -> list[Finding]:
    caps = policy.guardrails.amount_caps
    out: list[Finding] = []
    cur = sub.currency.lower()
    per_action = caps.per_action.get(cur, caps.per_action.get("*"))
    planned: dict[str, int] = {}
    for a in actions:
        if a["type"] not in MONEY_ACTIONS:
            continue
        amount = amount_of(a, sub.amount_minor)
        seen = a["type"] in planned
        planned[a["type"]] = max(planned.get(a["type"], 0), amount)
        if per_action is not None and amount > per_action and not seen:
            out.append(
                Finding(
                    "amount_cap_per_action",
                    f"{a['type']} of {_money(amount, cur)} is above the per-action cap of "
                    f"{_money(per_action, cur)}",
                    effect,
                )
            )
    per_customer = caps.per_customer.get(cur, caps.per_customer.get("*"))
    if per_customer is not None and planned and sub.customer_id:
        since = now - timedelta(days=caps.period_days)
        before = customer_total(s, sub.platform, sub.customer_id, cur, since, exclude_wf=wf)
        total = before + sum(planned.values())
        if total > per_customer:
            out.append(
                Finding(
                    "amount_cap_per_customer",
                    f"customer {sub.customer_id} would reach {_money(total, cur)} in {caps.period_days:g} "
                    f"days ({_money(before, cur)} already), above the cap of {_money(per_customer, cur)}",
                    effect,
                )
            )
    return out


def review_plan(
    s: Session, policy: Policy, *, wf: str, sub: Subject, actions: list[dict[str, Any]], now: datetime
) -> list[Finding]:
    """At decision time: the guardrails that send this plan to a human whatever the mode."""
    out: list[Finding] = []
    seen: set[str] = set()
    for a in actions:
        t = a["type"]
        if t in policy.guardrails.approval_actions and t not in seen:
            seen.add(t)
            why = f"{t.replace('_', ' ')} always needs a human's approval"
            out.append(Finding("risky_action", why, "approval"))
    out += _cap_findings(s, policy, wf=wf, sub=sub, actions=actions, now=now, effect="approval")
    return out


# ------------------------------------------------------------------ just before an action


def quiet_until(q: QuietHours, timezone: str | None, now: datetime) -> tuple[datetime | None, str]:
    """If `now` falls in the quiet hours of the customer's time zone: (when they end, in UTC; tz used).
    Else (None, tz used). Unknown time zones fall back to the policy's default, said in the reason."""
    tz_name = timezone or q.default_timezone
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        tz_name = q.default_timezone
        tz = ZoneInfo(tz_name)
    local = now.astimezone(tz)
    start = time.fromisoformat(q.start)
    end = time.fromisoformat(q.end)
    t = local.time().replace(tzinfo=None)
    if start == end:
        return None, tz_name
    wraps = start > end  # e.g. 21:00 → 08:00
    quiet = (t >= start or t < end) if wraps else (start <= t < end)
    if not quiet:
        return None, tz_name
    day = local.date()
    if wraps and t >= start:
        day = day + timedelta(days=1)
    end_local = datetime.combine(day, end, tzinfo=tz)
    end_utc = end_local.astimezone(UTC)
    if end_utc <= now:  # a DST jump can put the wall-clock end behind us: the next minute is fine
        end_utc = now + timedelta(minutes=1)
    return end_utc, tz_name


def _rate_window(
    s: Session, *, since: datetime, customer: tuple[str, str] | None, exclude: tuple[str, str]
) -> tuple[int, datetime | None]:
    q = sa.select(sa.func.count(), sa.func.min(GovernedAction.at)).where(
        GovernedAction.at > since,
        GovernedAction.status.in_(COUNTED),
        GovernedAction.action.in_(CUSTOMER_FACING),
        sa.not_(sa.and_(GovernedAction.workflow_id == exclude[0], GovernedAction.step == exclude[1])),
    )
    if customer is not None:
        q = q.where(GovernedAction.platform == customer[0], GovernedAction.customer_id == customer[1])
    n, oldest = s.execute(q).one()
    return int(n or 0), oldest


def check_action(
    s: Session,
    policy: Policy,
    *,
    wf: str,
    step: str,
    action: dict[str, Any],
    sub: Subject,
    human_approved: bool,
    now: datetime,
) -> Verdict:
    t = action["type"]
    ctl = control.controls(s)
    if ctl.kill_switch:
        return Verdict("block", [Finding("kill_switch", ctl.shadow_reason or "kill switch on", "block")])
    if ctl.circuit_breaker:
        return Verdict("block", [Finding("circuit_breaker", ctl.shadow_reason or "breaker tripped", "block")])
    if not human_approved:
        if t in policy.guardrails.approval_actions:
            why = f"{t.replace('_', ' ')} always needs a human's approval, and no human approved this plan"
            return Verdict("block", [Finding("risky_action", why, "block")])
        caps = _cap_findings(s, policy, wf=wf, sub=sub, actions=[action], now=now, effect="block")
        if caps:
            return Verdict("block", caps)
    channel = MESSAGE_ACTIONS.get(t)
    if channel:
        stop = _contact_block(s, policy, wf=wf, step=step, channel=channel, sub=sub, now=now)
        if stop is not None:
            return Verdict("block", [stop])
    findings: list[Finding] = []
    if t in CUSTOMER_FACING:
        limits = policy.guardrails.rate_limits
        for rule, limit, who in (
            ("rate_limit_customer", limits.per_customer, (sub.platform, sub.customer_id or "")),
            ("rate_limit_overall", limits.overall, None),
        ):
            if limit is None or (who is not None and not sub.customer_id):
                continue
            since = now - timedelta(hours=limit.per_hours)
            n, oldest = _rate_window(s, since=since, customer=who, exclude=(wf, step))
            if n >= limit.max_actions:
                free_at = (oldest or now) + timedelta(hours=limit.per_hours) + timedelta(seconds=1)
                scope = f"customer {sub.customer_id}" if who else "all customers"
                findings.append(
                    Finding(
                        rule,
                        f"{n} actions for {scope} in the last {limit.per_hours:g} h (limit "
                        f"{limit.max_actions}): {t} waits until {free_at:%Y-%m-%d %H:%M} UTC",
                        "defer",
                        not_before=max(free_at, now + timedelta(seconds=1)),
                    )
                )
    q = policy.guardrails.quiet_hours
    windows: list[tuple[str, QuietHours]] = []
    if channel and q is not None and channel in q.channels:
        windows.append(("quiet_hours", q))
    if channel == "sms":
        night = policy.contact.sms_night
        windows.append(
            (
                "sms_night",
                QuietHours(
                    start=night.start,
                    end=night.end,
                    channels=["sms"],
                    default_timezone=q.default_timezone if q is not None else "UTC",
                ),
            )
        )
    for rule, window in windows:
        until, tz = quiet_until(window, sub.timezone, now)
        if until is not None:
            local = now.astimezone(ZoneInfo(tz))
            what = "quiet hours" if rule == "quiet_hours" else "the night (SMS never goes out at night)"
            findings.append(
                Finding(
                    rule,
                    f"{local:%H:%M} in {tz} is inside {what} {window.start}–{window.end} for {channel}: "
                    f"sent at {until.astimezone(ZoneInfo(tz)):%H:%M} local ({until:%Y-%m-%d %H:%M} UTC)",
                    "defer",
                    not_before=until,
                )
            )
            break  # one waiting reason is enough; the next check sees the other if it still applies
    if findings:
        return Verdict("defer", findings)
    return Verdict("allow")


def _contact_block(
    s: Session, policy: Policy, *, wf: str, step: str, channel: str, sub: Subject, now: datetime
) -> Finding | None:
    """Opt-out first (consent beats everything), then the channel's frequency cap for this customer."""
    from billops.governance.contacts import opted_out

    out = opted_out(s, sub.platform, sub.customer_id, channel)
    if out is not None:
        scope = "all contact" if out.channel == "all" else f"{channel} messages"
        return Finding(
            "opt_out",
            f"customer {sub.customer_id} opted out of {scope} ({out.source}, {out.at:%Y-%m-%d}): not sent",
            "block",
        )
    cap = policy.contact.frequency_caps.get(channel)  # type: ignore[call-overload]
    if cap is None or not sub.customer_id:
        return None
    since = now - timedelta(hours=cap.per_hours)
    sent = s.scalar(
        sa.select(sa.func.count())
        .select_from(Delivery)
        .where(
            Delivery.platform == sub.platform,
            Delivery.customer_id == sub.customer_id,
            Delivery.channel == channel,
            Delivery.status.in_(("sent", "sending")),
            Delivery.created_at > since,
            Delivery.key != f"{wf}:{step}",
        )
    )
    if (sent or 0) >= cap.max_messages:
        return Finding(
            "frequency_cap",
            f"{sent} {channel} messages to customer {sub.customer_id} in the last {cap.per_hours:g} h "
            f"(cap {cap.max_messages}): this one is dropped",
            "block",
        )
    return None


def breaker_check(s: Session, policy: Policy, *, now: datetime) -> bool:
    """Trip the circuit breaker when action errors or decisions in the last hour exceed the policy's
    bounds. Returns True when this call tripped it."""
    cb = policy.guardrails.circuit_breaker
    hour = now - timedelta(hours=1)
    if cb.max_action_failures_per_hour is not None:
        errors = s.scalar(
            sa.select(sa.func.count())
            .select_from(GovernedAction)
            .where(GovernedAction.status == "error", GovernedAction.at > hour)
        )
        if (errors or 0) > cb.max_action_failures_per_hour:
            return control.trip_breaker(
                s,
                why=f"{errors} action failures in the last hour (bound {cb.max_action_failures_per_hour})",
                counts={"action_failures_last_hour": int(errors or 0)},
            )
    if cb.max_decisions_per_hour is not None:
        decisions = s.scalar(  # shadow decisions change nothing: only those that may act count
            sa.select(sa.func.count())
            .select_from(Decision)
            .where(Decision.created_at > hour, Decision.mode != "shadow")
        )
        if (decisions or 0) > cb.max_decisions_per_hour:
            return control.trip_breaker(
                s,
                why=f"{decisions} decisions in the last hour (bound {cb.max_decisions_per_hour})",
                counts={"decisions_last_hour": int(decisions or 0)},
            )
    return False


def seconds_until(t: datetime, now: datetime) -> float:
    return max(1.0, math.ceil((t - now).total_seconds()))
