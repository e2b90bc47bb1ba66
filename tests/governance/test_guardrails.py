"""Each guardrail on a real database (SQLite and PostgreSQL): what it decides and the reason it gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from billops.config import DEFAULT_POLICY_FILE
from billops.governance import control, guardrails
from billops.governance.rollout import Subject
from billops.governance.schema import QuietHours
from billops.policy import Policy, parse_policy
from billops.store.db import Database
from billops.store.models import Decision, GovernedAction

NOW = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)


def policy(**guard: Any) -> Policy:
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    raw["guardrails"] = {**raw["guardrails"], **guard}
    return parse_policy(yaml.safe_dump(raw), "test")


@pytest.fixture
def db(database_url: str) -> Database:
    d = Database(database_url)
    d.migrate()
    return d


SUB = Subject(workflow="recovery", platform="stripe", customer_id="cus_1", currency="usd", amount_minor=30000)


def _done(
    s: Any,
    *,
    wf: str,
    action: str,
    amount: int = 0,
    at: datetime,
    customer: str = "cus_1",
    status: str = "done",
) -> None:
    s.add(
        GovernedAction(
            at=at,
            workflow_id=wf,
            step="x",
            platform="stripe",
            customer_id=customer,
            action=action,
            amount=amount,
            currency="usd",
            status=status,
        )
    )


def check(
    db: Database,
    p: Policy,
    action: dict[str, Any],
    *,
    human: bool = False,
    sub: Subject = SUB,
    now: datetime = NOW,
) -> guardrails.Verdict:
    with db.session() as s:
        return guardrails.check_action(
            s, p, wf="wf_new", step="0:x", action=action, sub=sub, human_approved=human, now=now
        )


def test_risky_actions_go_to_a_human_and_are_blocked_without_one(db: Database) -> None:
    p = policy(quiet_hours=None, require_approval=["write_note"])
    with db.session() as s:
        found = guardrails.review_plan(
            s,
            p,
            wf="wf",
            sub=SUB,
            now=NOW,
            actions=[
                {"type": "pause_subscription"},
                {"type": "apply_coupon"},
                {"type": "write_note"},
                {"type": "send_email"},
            ],
        )
    assert [(f.rule, f.effect) for f in found] == [("risky_action", "approval")] * 3
    assert found[0].reason == "pause subscription always needs a human's approval"
    v = check(db, p, {"type": "apply_credit", "detail": {"amount_minor": 10}})
    assert v.effect == "block" and "no human approved this plan" in v.findings[0].reason
    assert (
        check(db, p, {"type": "apply_credit", "detail": {"amount_minor": 10}}, human=True).effect == "allow"
    )


def test_amount_caps_per_action_and_per_customer_per_period(db: Database) -> None:
    p = policy(
        quiet_hours=None,
        amount_caps={
            "per_action": {"usd": 25000, "*": 10**9},
            "per_customer": {"usd": 50000},
            "period_days": 30,
        },
    )
    with db.session() as s:
        found = guardrails.review_plan(
            s, p, wf="wf", sub=SUB, now=NOW, actions=[{"type": "retry_payment"}] * 3
        )
    assert [f.rule for f in found] == ["amount_cap_per_action"]
    assert found[0].reason == "retry_payment of 300.00 USD is above the per-action cap of 250.00 USD"

    small = Subject(**{**SUB.__dict__, "amount_minor": 20000})
    with db.session() as s:
        _done(s, wf="old1", action="retry_payment", amount=20000, at=NOW - timedelta(days=3))
        _done(s, wf="old1", action="retry_payment", amount=20000, at=NOW - timedelta(days=2))  # same invoice
        _done(
            s, wf="old2", action="retry_payment", amount=15000, at=NOW - timedelta(days=40)
        )  # out of period
        _done(s, wf="old3", action="retry_payment", amount=99999, at=NOW, customer="cus_2")  # other customer
    with db.session() as s:
        assert (
            guardrails.review_plan(s, p, wf="wf", sub=small, now=NOW, actions=[{"type": "retry_payment"}])
            == []
        )
        _done(s, wf="old4", action="retry_payment", amount=15000, at=NOW - timedelta(days=1))
    with db.session() as s:
        [f] = guardrails.review_plan(s, p, wf="wf", sub=small, now=NOW, actions=[{"type": "retry_payment"}])
    assert f.rule == "amount_cap_per_customer"
    assert f.reason == (
        "customer cus_1 would reach 550.00 USD in 30 days (350.00 USD already), above the cap of 500.00 USD"
    )
    # At execution, a plan no human approved is blocked by the same cap; an approved one goes ahead.
    assert check(db, p, {"type": "retry_payment"}, sub=small).effect == "block"
    assert check(db, p, {"type": "retry_payment"}, sub=small, human=True).effect == "allow"


def test_rate_limits_defer_until_the_window_has_room(db: Database) -> None:
    p = policy(
        quiet_hours=None,
        rate_limits={
            "per_customer": {"max_actions": 3, "per_hours": 24},
            "overall": {"max_actions": 5, "per_hours": 1},
        },
    )
    with db.session() as s:
        for h in (20, 10, 2):
            _done(s, wf=f"w{h}", action="send_email", at=NOW - timedelta(hours=h))
        _done(s, wf="wn", action="write_note", at=NOW - timedelta(hours=1))  # internal: not counted
        _done(s, wf="wb", action="send_sms", at=NOW - timedelta(hours=1), status="blocked")  # not counted
    v = check(db, p, {"type": "send_sms"})
    assert v.effect == "defer"
    [f] = v.findings
    assert f.rule == "rate_limit_customer"
    assert f.not_before == NOW - timedelta(hours=20) + timedelta(hours=24, seconds=1)
    assert "3 actions for customer cus_1 in the last 24 h (limit 3)" in f.reason
    assert check(db, p, {"type": "write_note"}).effect == "allow", "internal notes are not rate limited"

    other = Subject(**{**SUB.__dict__, "customer_id": "cus_9"})
    assert check(db, p, {"type": "send_email"}, sub=other).effect == "allow"
    with db.session() as s:
        for i in range(5):
            _done(s, wf=f"o{i}", action="retry_payment", at=NOW - timedelta(minutes=30), customer=f"c{i}")
    v = check(db, p, {"type": "send_email"}, sub=other)
    assert [f.rule for f in v.findings] == ["rate_limit_overall"]
    assert "all customers" in v.findings[0].reason


def test_quiet_hours_defer_messages_in_the_customers_local_time(db: Database) -> None:
    p = policy(quiet_hours={"start": "21:00", "end": "08:00", "channels": ["sms"], "default_timezone": "UTC"})
    tokyo = Subject(**{**SUB.__dict__, "timezone": "Asia/Tokyo"})  # 14:00 UTC = 23:00 in Tokyo
    v = check(db, p, {"type": "send_sms"}, sub=tokyo)
    assert v.effect == "defer"
    assert v.not_before == datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # 08:00 on the 23rd in Tokyo
    assert "23:00 in Asia/Tokyo is inside quiet hours 21:00–08:00 for sms" in v.findings[0].reason
    assert check(db, p, {"type": "send_email"}, sub=tokyo).effect == "allow", (
        "email is not a quiet channel here"
    )
    assert check(db, p, {"type": "send_sms"}).effect == "allow", "14:00 UTC is daytime"
    unknown = Subject(**{**SUB.__dict__, "timezone": "Nowhere/Land"})
    assert check(db, p, {"type": "send_sms"}, sub=unknown).effect == "allow"  # falls back to UTC


ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    instant=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31)),
    start=st.sampled_from(["20:00", "21:00", "22:30", "00:00", "01:00"]),
    end=st.sampled_from(["06:00", "07:30", "08:00", "09:00"]),
)
def test_quiet_until_is_outside_quiet_hours_and_never_a_day_away(
    zone: str, instant: datetime, start: str, end: str
) -> None:
    q = QuietHours(start=start, end=end, channels=["sms"])
    now = instant.replace(tzinfo=UTC)
    until, used = guardrails.quiet_until(q, zone, now)
    assert used == zone
    local = now.astimezone(ZoneInfo(zone)).time()
    s, e = (datetime.strptime(x, "%H:%M").time() for x in (start, end))
    quiet = (local >= s or local < e) if s > e else (s <= local < e)
    assert (until is not None) == quiet
    if until is not None:
        assert now < until <= now + timedelta(hours=26)
        after, _ = guardrails.quiet_until(q, zone, until)
        assert after is None, f"{until} is still quiet in {zone}"


def test_kill_switch_blocks_every_action_and_says_who_and_why(db: Database) -> None:
    p = policy(quiet_hours=None)
    with db.session() as s:
        control.pause_all(s, by="alice", why="gateway incident")
    v = check(db, p, {"type": "write_note"}, human=True)
    assert v.effect == "block" and v.findings[0].rule == "kill_switch"
    assert "by alice: gateway incident" in v.findings[0].reason
    with db.session() as s:
        control.resume_all(s, by="alice", why="over")
    assert check(db, p, {"type": "write_note"}).effect == "allow"


def test_breaker_trips_on_action_errors_and_then_blocks(db: Database) -> None:
    p = policy(
        quiet_hours=None, circuit_breaker={"max_action_failures_per_hour": 2, "max_decisions_per_hour": None}
    )
    with db.session() as s:
        for i in range(2):
            _done(s, wf=f"e{i}", action="retry_payment", at=datetime.now(UTC), status="error")
        assert guardrails.breaker_check(s, p, now=datetime.now(UTC)) is False  # 2 is not above 2
        _done(s, wf="e3", action="write_note", at=datetime.now(UTC), status="error")
        _done(s, wf="e4", action="write_note", at=datetime.now(UTC) - timedelta(hours=2), status="error")
    with db.session() as s:
        assert guardrails.breaker_check(s, p, now=datetime.now(UTC)) is True
        assert guardrails.breaker_check(s, p, now=datetime.now(UTC)) is False  # already tripped
    v = check(db, p, {"type": "write_note"}, now=datetime.now(UTC))
    assert v.effect == "block" and v.findings[0].rule == "circuit_breaker"
    assert "3 action failures in the last hour (bound 2)" in v.findings[0].reason
    with db.session() as s:
        control.reset_breaker(s, by="admin", why="fixed the gateway key")
        assert control.controls(s).shadow_reason is None


def test_shadow_decisions_do_not_count_toward_the_breaker(db: Database) -> None:
    p = policy(circuit_breaker={"max_action_failures_per_hour": None, "max_decisions_per_hour": 1})
    with db.session() as s:
        for i, mode in enumerate(["shadow", "shadow", "shadow", "auto"]):
            s.add(
                Decision(
                    workflow_id=f"d{i}",
                    platform="stripe",
                    invoice_id=f"in{i}",
                    customer_id="c",
                    event_id="e",
                    amount=1,
                    currency="usd",
                    route="auto_retry",
                    score=90,
                    mode=mode,
                    status="recorded",
                    plan={},
                    versions={},
                    trace_id="t",
                )
            )
    with db.session() as s:
        assert guardrails.breaker_check(s, p, now=datetime.now(UTC)) is False
