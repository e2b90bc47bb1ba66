"""Contact rules on a real database (SQLite and PostgreSQL): opt-outs on every channel, frequency caps
per customer and channel, SMS never at night in the customer's time zone, and the signed one-click
unsubscribe link, through the guardrails, the API and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_guardrails import ZONES
from typer.testing import CliRunner

from billops.app import create_app
from billops.cli import app as cli
from billops.config import DEFAULT_POLICY_FILE
from billops.errors import InputError
from billops.governance import contacts, guardrails
from billops.governance.rollout import Subject
from billops.policy import Policy, parse_policy
from billops.store.db import Database
from billops.store.models import AuditRecord, ContactOptOut, Delivery
from support.auth import auth_headers

NOW = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
SUB = Subject(workflow="recovery", platform="stripe", customer_id="cus_1", currency="usd", amount_minor=3000)


def policy(contact: dict[str, Any] | None = None, **guard: Any) -> Policy:
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    raw["guardrails"] = {**raw["guardrails"], "quiet_hours": None, "rate_limits": {}, **guard}
    raw["contact"] = {**(raw.get("contact") or {}), **(contact or {})}
    return parse_policy(yaml.safe_dump(raw), "test")


@pytest.fixture
def db(database_url: str) -> Database:
    d = Database(database_url)
    d.migrate()
    return d


def check(db: Database, p: Policy, kind: str, *, sub: Subject = SUB, now: datetime = NOW, step: str = "3:x"):
    with db.session() as s:
        return guardrails.check_action(
            s, p, wf="wf_new", step=step, action={"type": kind}, sub=sub, human_approved=False, now=now
        )


def sent(db: Database, n: int, *, channel: str, at: datetime, status: str = "sent", customer: str = "cus_1"):
    with db.session() as s:
        for i in range(n):
            s.add(
                Delivery(
                    key=f"wf_{channel}_{status}_{at.timestamp()}_{i}:0:send",
                    workflow_id=f"wf_{i}",
                    step="0:send",
                    channel=channel,
                    platform="stripe",
                    customer_id=customer,
                    status=status,
                    attempts=1,
                    detail={},
                    created_at=at,
                    updated_at=at,
                )
            )


def test_an_opt_out_blocks_its_channel_and_all_blocks_every_channel(db: Database) -> None:
    p = policy()
    with db.session() as s:
        assert contacts.add_optout(s, "stripe", "cus_1", "email", source="cli", by="cli:ops", why="asked")
        assert not contacts.add_optout(s, "stripe", "cus_1", "email", source="cli", by="cli:ops")
    v = check(db, p, "send_email")
    assert v.effect == "block" and v.findings[0].rule == "opt_out"
    assert "opted out of email messages (cli, " in v.findings[0].reason
    assert check(db, p, "send_sms").effect == "allow", "an email opt-out leaves SMS alone"
    assert check(db, p, "retry_payment").effect == "allow", "an opt-out stops messages, not retries"
    other = Subject(**{**SUB.__dict__, "customer_id": "cus_2"})
    assert check(db, p, "send_email", sub=other).effect == "allow"
    with db.session() as s:
        contacts.add_optout(s, "stripe", "cus_1", "all", source="api", by="ops")
    assert check(db, p, "send_sms").findings[0].rule == "opt_out"
    with db.session() as s:
        contacts.remove_optout(s, "stripe", "cus_1", "all", by="ops", why="customer called back")
        contacts.remove_optout(s, "stripe", "cus_1", "email", by="ops", why="customer called back")
        actions = list(s.scalars(sa.select(AuditRecord.action).order_by(AuditRecord.seq)))
    assert check(db, p, "send_email").effect == "allow"
    assert actions == ["contact.opted_out", "contact.opted_out", "contact.opted_in", "contact.opted_in"]
    with db.session() as s, pytest.raises(InputError, match="channel must be one of"):
        contacts.add_optout(s, "stripe", "cus_1", "fax", source="cli", by="x")


def test_frequency_caps_drop_messages_beyond_the_cap_per_channel(db: Database) -> None:
    p = policy({"frequency_caps": {"email": {"max_messages": 2, "per_hours": 72}}})
    sent(db, 1, channel="email", at=NOW - timedelta(hours=10))
    sent(db, 3, channel="email", at=NOW - timedelta(hours=80))  # outside the window
    sent(db, 3, channel="email", at=NOW - timedelta(hours=1), status="failed")  # never reached anyone
    sent(db, 3, channel="email", at=NOW - timedelta(hours=1), status="skipped")
    assert check(db, p, "send_email").effect == "allow"
    sent(db, 1, channel="email", at=NOW - timedelta(hours=2))
    v = check(db, p, "send_email")
    assert v.effect == "block" and v.findings[0].rule == "frequency_cap"
    assert v.findings[0].reason == (
        "2 email messages to customer cus_1 in the last 72 h (cap 2): this one is dropped"
    )
    assert check(db, p, "send_sms").effect == "allow", "no SMS cap configured here"
    assert (
        check(db, p, "send_email", sub=Subject(**{**SUB.__dict__, "customer_id": "cus_9"})).effect == "allow"
    )


def test_the_cap_does_not_count_the_message_itself_on_a_replay(db: Database) -> None:
    p = policy({"frequency_caps": {"sms": {"max_messages": 1, "per_hours": 24}}})
    with db.session() as s:
        s.add(
            Delivery(
                key="wf_new:3:x", workflow_id="wf_new", step="3:x", channel="sms", platform="stripe",
                customer_id="cus_1", status="sending", attempts=1, detail={}, created_at=NOW,
            )
        )  # fmt: skip
    assert check(db, p, "send_sms").effect == "allow"
    assert check(db, p, "send_sms", step="4:y").effect == "block"


def test_sms_never_goes_out_at_night_even_with_quiet_hours_off(db: Database) -> None:
    p = policy(quiet_hours=None)
    tokyo = Subject(**{**SUB.__dict__, "timezone": "Asia/Tokyo"})  # 14:00 UTC = 23:00 in Tokyo
    v = check(db, p, "send_sms", sub=tokyo)
    assert v.effect == "defer" and v.findings[0].rule == "sms_night"
    assert v.not_before == datetime(2026, 11, 22, 23, 0, tzinfo=UTC)
    assert "SMS never goes out at night" in v.findings[0].reason
    assert check(db, p, "send_email", sub=tokyo).effect == "allow", "the night rule is for SMS"
    assert check(db, p, "send_sms").effect == "allow", "14:00 in UTC is daytime"


def test_the_sms_night_cannot_be_switched_off() -> None:
    from billops.errors import ConfigError

    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    raw["contact"] = {"sms_night": None}
    with pytest.raises(ConfigError, match=r"contact\.sms_night"):
        parse_policy(yaml.safe_dump(raw), "test")
    raw["contact"] = {"sms_night": {"start": "21:00", "end": "21:00"}}
    with pytest.raises(ConfigError, match=r"contact\.sms_night"):
        parse_policy(yaml.safe_dump(raw), "test")


NIGHT_POLICY = policy()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    zone=st.sampled_from(ZONES),
    instant=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31)),
    opted=st.sampled_from([None, "sms", "all", "email"]),
)
def test_sms_is_never_allowed_at_night_nor_to_an_opted_out_customer_in_any_zone(
    db: Database, zone: str, instant: datetime, opted: str | None
) -> None:
    now = instant.replace(tzinfo=UTC)
    customer = f"cus_{abs(hash((zone, instant, opted))) % 10**9}"
    sub = Subject(**{**SUB.__dict__, "customer_id": customer, "timezone": zone})
    if opted:
        with db.session() as s:
            contacts.add_optout(s, "stripe", customer, opted, source="cli", by="test")
    v = check(db, NIGHT_POLICY, "send_sms", sub=sub, now=now)
    local = now.astimezone(ZoneInfo(zone)).time()
    night = local.hour >= 21 or local.hour < 8
    if opted in ("sms", "all"):
        assert v.effect == "block" and v.findings[0].rule == "opt_out", "consent beats every clock"
    elif night:
        assert v.effect == "defer" and v.findings[0].rule == "sms_night"
        assert v.not_before is not None and now < v.not_before <= now + timedelta(hours=26)
        later = check(db, NIGHT_POLICY, "send_sms", sub=sub, now=v.not_before)
        assert later.effect == "allow", f"{v.not_before} is still night in {zone}"
    else:
        assert v.effect == "allow", (zone, now, local)


# ------------------------------------------------------------------ through the app and the CLI


@pytest.fixture
def app(database_url: str, settings_factory: Any, runtime_factory: Any) -> Any:
    settings = settings_factory(database_url, public_url="https://billops.example.com")
    rt = runtime_factory(settings)
    client = TestClient(create_app(settings, manage_runtime=False))
    client.rt = rt  # type: ignore[attr-defined]
    return client


def test_one_click_unsubscribe_is_signed_idempotent_and_get_changes_nothing(app: Any) -> None:
    rt = app.rt
    url = contacts.unsubscribe_url(rt.settings, "stripe", "cus_42", "email")
    assert url is not None and url.startswith("https://billops.example.com/unsubscribe/")
    path = url.removeprefix("https://billops.example.com")
    page = app.get(path)
    assert page.status_code == 200 and "Unsubscribe from billing emails" in page.text
    with rt.db.reader() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ContactOptOut)) == 0, "GET is only a page"
    r = app.post(path, data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200 and "You are unsubscribed" in r.text
    assert app.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    with rt.db.reader() as s:
        rows = contacts.list_optouts(s)
        recs = list(s.scalars(sa.select(AuditRecord).where(AuditRecord.action == "contact.opted_out")))
    assert [(r["customer_id"], r["channel"], r["source"]) for r in rows] == [
        ("cus_42", "email", "unsubscribe_link")
    ]
    assert len(recs) == 1 and recs[0].actor == "customer"
    token = path.rsplit("/", 1)[1]
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert app.post(f"/unsubscribe/{forged}").status_code == 400
    assert contacts.read_unsubscribe_token(rt.settings, token) == ("stripe", "cus_42", "email")


def test_opt_outs_through_the_api_need_roles_and_a_reason_to_undo(app: Any) -> None:
    viewer, operator = auth_headers(app.rt, "viewer"), auth_headers(app.rt, "operator")
    body = {"platform": "chargebee", "customer_id": "cb_7", "channel": "sms", "why": "asked by phone"}
    assert app.post("/api/optouts", json=body, headers=viewer).status_code == 403
    r = app.post("/api/optouts", json=body, headers=operator)
    assert r.status_code == 200 and r.json()["added"] is True
    listed = app.get("/api/optouts?customer_id=cb_7", headers=viewer).json()
    assert [(x["channel"], x["source"], x["why"]) for x in listed] == [("sms", "api", "asked by phone")]
    no_why = {k: v for k, v in body.items() if k != "why"}
    assert app.post("/api/optouts/remove", json=no_why, headers=operator).status_code == 422
    r = app.post("/api/optouts/remove", json={**no_why, "why": "consent again"}, headers=operator)
    assert r.status_code == 200
    assert app.get("/api/optouts?customer_id=cb_7", headers=viewer).json() == []
    again = app.post("/api/optouts/remove", json={**no_why, "why": "x"}, headers=operator)
    assert again.status_code == 404 and "has no sms opt-out" in again.json()["error"]


def test_opt_outs_from_the_cli(app: Any) -> None:
    url = app.rt.settings.db_url
    runner = CliRunner()
    r = runner.invoke(cli, ["--database-url", url, "contacts", "optout", "stripe", "cus_5", "--why", "GDPR"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["--database-url", url, "contacts", "list", "--json"])
    assert r.exit_code == 0 and '"customer_id": "cus_5"' in r.stdout and '"channel": "all"' in r.stdout
    r = runner.invoke(cli, ["--database-url", url, "contacts", "optin", "stripe", "cus_5"])
    assert r.exit_code != 0, "undoing an opt-out needs --why"
    r = runner.invoke(
        cli, ["--database-url", url, "contacts", "optin", "stripe", "cus_5", "--why", "consent"]
    )
    assert r.exit_code == 0, r.output
    with app.rt.db.reader() as s:
        assert contacts.list_optouts(s) == []
