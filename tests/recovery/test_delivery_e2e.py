"""Messages and notifications end to end, through the real app, DBOS, a Chargebee failure against
FakeChargebeeAPI, a real SMTP server (aiosmtpd) and HTTP servers on 127.0.0.1 shaped like Twilio, a Slack
incoming webhook and a ticketing system's webhook receiver (Standard Webhooks signatures verified with the
`standardwebhooks` package). SQLite and PostgreSQL. Each test ends with `billops audit verify`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from standardwebhooks import Webhook
from typer.testing import CliRunner

from billops.actions.events import EVENT_MODELS
from billops.app import create_app
from billops.cli import app as cli
from billops.governance import contacts
from billops.recovery import delivery
from billops.store.models import AuditRecord, Delivery
from support.auth import auth_headers
from support.channels import running_smtp, scripted, twilio_created, twilio_error
from support.chargebee_harness import ChargebeeHarness, running_harness
from support.helpers import wait_for
from support.service import Service
from support.twilio_api import FakeTwilioAPI

PHONE = "+351912345678"
EMAIL = "ana.silva@example.com"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PUBLIC = "https://billops.example.com"
# What the fixture knows about the customer that no message or notification may carry (the address is
# the customer's own, the first name greets them; the rest stays here).
NEVER_SENT = ("Silva", "12 Harbour St", "Lisbon")


@pytest.fixture
def cb() -> Iterator[ChargebeeHarness]:
    with running_harness() as harness:
        yield harness


@pytest.fixture
def servers() -> Iterator[dict[str, Any]]:
    with (
        running_smtp() as smtp,
        scripted(twilio_created()) as twilio,
        scripted((200, "ok", "text/plain")) as slack,
        scripted((204, "", "text/plain")) as tickets,
    ):
        yield {"smtp": smtp, "twilio": twilio, "slack": slack, "tickets": tickets}


@pytest.fixture
def start(
    cb: ChargebeeHarness,
    servers: dict[str, Any],
    database_url: str,
    settings_factory: Any,
    runtime_factory: Any,
    make_policy: Callable[..., Path],
) -> Callable[..., Service]:
    def _start(mode: str = "auto", **recovery: Any) -> Service:
        policy_file = make_policy(
            modes={"recovery": mode},
            recovery={
                "model": "rules",
                "retry_schedule_hours": {"auto_retry": [48], "retry_and_notify": [48], "human_review": []},
                "context_wait_seconds": 1,
                **recovery,
            },
        )
        settings = settings_factory(
            database_url,
            policy_file=policy_file,
            public_url=PUBLIC,
            twilio_account_sid="AC0123456789abcdef0123456789abcdef",
            twilio_auth_token="twilio-test-token",
            twilio_messaging_service_sid="MG0123456789abcdef0123456789abcdef",
            twilio_api_url=servers["twilio"].url,
            slack_webhook_url=f"{servers['slack'].url}/services/T000/B000/XXXX",
            outbound_webhooks=[
                {"name": "helpdesk", "url": f"{servers['tickets'].url}/hooks", "secret": SECRET}
            ],
            **servers["smtp"].settings(),
            **cb.settings(),
        )
        rt = runtime_factory(settings)
        return Service(TestClient(create_app(settings, manage_runtime=False)), rt)

    return _start


def deliveries(svc: Service, wf: str) -> dict[str, Delivery]:
    with svc.rt.db.reader() as s:
        rows = s.scalars(sa.select(Delivery).where(Delivery.workflow_id == wf))
        return {f"{r.channel}:{r.step}": r for r in rows}


def settled(svc: Service, wf: str, *channels: str) -> dict[str, Delivery]:
    """Wait until each channel has a final delivery row for this workflow."""

    def ready() -> dict[str, Delivery] | None:
        rows = deliveries(svc, wf)
        done = {k.split(":", 1)[0] for k, r in rows.items() if r.status in ("sent", "failed", "skipped")}
        return rows if set(channels) <= done else None

    return wait_for(ready, timeout=90)  # type: ignore[no-any-return]


def verified(req: Any) -> dict[str, Any]:
    """The receiver's side: the Standard Webhooks signature checks out, and the payload is returned."""
    headers = {k: v for k, v in req.headers.items() if k.startswith("webhook-")}
    return Webhook(SECRET).verify(req.body, headers)  # type: ignore[no-any-return]


def audit_ok(svc: Service) -> None:
    r = CliRunner().invoke(cli, ["--database-url", svc.rt.settings.db_url, "audit", "verify"])
    assert r.exit_code == 0 and "audit log intact" in r.output, r.output


def test_messages_reach_the_customer_once_with_the_platforms_link_and_an_unsubscribe(
    cb: ChargebeeHarness, servers: dict[str, Any], start: Callable[..., Service]
) -> None:
    svc = start("auto")
    wf = cb.post_failure(svc.client, customer={"phone": PHONE})
    rows = settled(svc, wf, "email", "sms")
    assert {r.status for r in rows.values()} == {"sent"}, {k: (r.status, r.error) for k, r in rows.items()}

    pages = cb.api.hosted_pages
    assert len(pages) >= 2, "one fresh hosted page per message, from the platform"
    links = {p["url"] for p in pages}
    [mail] = servers["smtp"].handler.messages
    assert mail.rcpt_tos == [EMAIL]
    msg = mail.message
    assert msg["To"] == EMAIL and msg["From"] == "Acme Billing <billing@acme.test>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsub = msg["List-Unsubscribe"].strip("<>").split(">")[0]
    assert unsub.startswith(f"{PUBLIC}/unsubscribe/")
    text, html = mail.part("plain"), mail.part("html")
    assert any(link in text for link in links) and any(link.replace("&", "&amp;") in html for link in links)
    assert "{card_update_link}" not in text and "Hi Ana" in text
    raw = mail.raw.decode("utf-8", "replace")
    assert not [p for p in (*NEVER_SENT, PHONE) if p in raw], "no PII beyond the recipient's own"

    [sms] = servers["twilio"].requests
    assert sms.path == "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
    assert sms.basic_credentials == ("AC0123456789abcdef0123456789abcdef", "twilio-test-token")
    assert sms.form["To"] == PHONE and sms.form["MessagingServiceSid"].startswith("MG")
    assert any(link in sms.form["Body"] for link in links) and "Reply STOP" in sms.form["Body"]

    # The decision and the audit log say what went where; neither holds the address.
    d = svc.decision(wf)
    sent = {k: v for k, v in d.outcome.items() if k.endswith(("send_email", "send_sms"))}
    assert {v["status"] for v in sent.values()} == {"sent"} and len(sent) == 2
    with svc.rt.db.reader() as s:
        recs = list(s.scalars(sa.select(AuditRecord).where(AuditRecord.action == "action.send_email")))
    assert [r.outcome["status"] for r in recs] == ["sent"]
    assert EMAIL not in json.dumps(recs[0].outcome) and recs[0].outcome["recipient_digest"]
    assert recs[0].versions["template"] == "recovery-v1/urgent_email"

    # A resend of the same step never sends twice.
    step, action = next((k, a) for k, a in _message_actions(d) if a["type"] == "send_email")
    again = delivery.send_message(wf, step, action, None)
    assert again["status"] == "sent" and again["replayed"] is True
    assert len(servers["smtp"].handler.messages) == 1

    # The customer's one-click unsubscribe (what a mail client POSTs) stops the next email.
    r = svc.client.post(unsub.removeprefix(PUBLIC), data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200
    with svc.rt.db.reader() as s:
        assert [o["channel"] for o in contacts.list_optouts(s)] == ["email"]
    wf2 = cb.post_failure(svc.client, customer={"phone": PHONE})
    blocked = wait_for(lambda: _guardrail(svc, wf2, "opt_out"), timeout=60)
    assert (
        blocked[0]["action"] == "send_email"
        and "opted out of email messages" in blocked[0]["findings"][0]["reason"]
    )
    settled(svc, wf2, "sms")
    assert len(servers["smtp"].handler.messages) == 1, "nothing after the unsubscribe"

    kpis = svc.client.get("/api/kpis", headers=auth_headers(svc.rt, "viewer")).json()
    assert kpis["messages"]["by_channel"]["email"] == {"sent": 1}
    assert kpis["messages"]["by_channel"]["sms"] == {"sent": 2}
    audit_ok(svc)


def _message_actions(d: Any) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{i}:{a['type']}", a)
        for i, a in enumerate(d.plan["actions"])
        if a["type"] in ("send_email", "send_sms")
    ]


def _guardrail(svc: Service, wf: str, rule: str) -> list[dict[str, Any]]:
    with svc.rt.db.reader() as s:
        recs = s.scalars(
            sa.select(AuditRecord).where(
                AuditRecord.workflow_id == wf, AuditRecord.action == f"guardrail.{rule}"
            )
        )
        return [r.outcome for r in recs]


def test_5xx_and_smtp_4xx_are_retried_with_backoff_and_sent_once(
    cb: ChargebeeHarness, servers: dict[str, Any], start: Callable[..., Service]
) -> None:
    servers["twilio"].reply_with(twilio_error(503, 20503, "busy"), twilio_error(500, 20500, "oops"))
    servers["smtp"].handler.data_replies.append("451 4.3.0 Try again later")
    svc = start("auto")
    wf = cb.post_failure(svc.client, customer={"phone": PHONE})
    rows = settled(svc, wf, "email", "sms")
    by = {r.channel: r for r in rows.values()}
    assert by["sms"].status == "sent" and by["sms"].attempts == 3
    assert by["email"].status == "sent" and by["email"].attempts == 2
    reqs = servers["twilio"].requests
    assert [r.status for r in reqs] == [503, 500, 201]
    assert len({r.body for r in reqs}) == 1, "the same message each attempt"
    assert len(servers["smtp"].handler.messages) == 1
    audit_ok(svc)


def test_a_permanent_failure_is_recorded_surfaced_and_a_stop_reply_opts_out(
    cb: ChargebeeHarness, servers: dict[str, Any], start: Callable[..., Service]
) -> None:
    servers["twilio"].reply_with(twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"))
    svc = start("auto")
    wf = cb.post_failure(svc.client, customer={"phone": PHONE})
    rows = settled(svc, wf, "sms")
    [sms] = [r for r in rows.values() if r.channel == "sms"]
    assert sms.status == "failed" and sms.attempts == 1, "a 4xx is not retried"
    assert "(21610): the recipient replied STOP" in (sms.error or "")
    with svc.rt.db.reader() as s:
        [out] = contacts.list_optouts(s)
    assert (out["channel"], out["source"]) == ("sms", "provider")

    failed = wait_for(lambda: servers["tickets"].find("POST", "/hooks"), timeout=60)
    payload = verified(failed[0])
    assert payload["type"] == "message.failed"
    EVENT_MODELS["message.failed"].model_validate(payload["data"])
    assert payload["data"]["channel"] == "sms" and payload["data"]["workflow_id"] == wf
    assert PHONE not in failed[0].body.decode()
    slack = wait_for(lambda: servers["slack"].requests, timeout=30)
    assert "could not be delivered" in slack[0].json["text"]

    kpis = svc.client.get("/api/kpis", headers=auth_headers(svc.rt, "viewer")).json()
    assert kpis["messages"]["failed"] == 1
    assert kpis["messages"]["recent_failures"][0]["channel"] == "sms"
    audit_ok(svc)


def test_an_escalation_reaches_the_helpdesk_and_slack_then_the_outcome_follows(
    cb: ChargebeeHarness, servers: dict[str, Any], start: Callable[..., Service]
) -> None:
    svc = start("auto", thresholds={"auto_retry_above": 100, "notify_from": 100})
    wf = cb.post_failure(svc.client, customer={"phone": PHONE})
    d = svc.awaiting(wf)
    assert d.route == "human_review"
    hooks = wait_for(lambda: servers["tickets"].find("POST", "/hooks"), timeout=60)
    first = verified(hooks[0])
    assert first["type"] == "recovery.escalated"
    data = EVENT_MODELS["recovery.escalated"].model_validate(first["data"])
    assert data.workflow_id == wf and data.route == "human_review"
    assert data.case_summary.risk_factors and data.case_summary.next_steps
    assert data.approval_url and data.approval_url.startswith(f"{PUBLIC}/console/approvals/")
    body = hooks[0].body.decode()
    assert EMAIL not in body and not [p for p in NEVER_SENT if p in body]
    slack = wait_for(lambda: servers["slack"].requests, timeout=30)
    assert slack[0].json["text"].startswith("Recovery needs a human")
    assert servers["smtp"].handler.messages == [], "nothing to the customer"
    assert servers["twilio"].requests == []

    operator = auth_headers(svc.rt, "operator")
    [item] = [a for a in svc.client.get("/api/approvals", headers=operator).json() if a["workflow_id"] == wf]
    r = svc.client.post(f"/api/approvals/{item['id']}/reject", json={"why": "we call them"}, headers=operator)
    assert r.status_code == 200
    finished = wait_for(lambda: [h for h in servers["tickets"].requests if b"recovery.finished" in h.body])
    payload = verified(finished[0])
    assert payload["data"]["status"] == "rejected"
    # Redelivery of the same event carries the same webhook-id (receivers dedupe on it).
    ids = [h.header("webhook-id") for h in servers["tickets"].requests]
    assert len(ids) == len(set(ids)) == 2
    audit_ok(svc)


class WorkerDied(BaseException):
    """Stands for SIGKILL: raised after the provider accepted, before anything was committed."""


def test_a_worker_killed_after_the_smtp_server_accepted_resends_with_the_same_message_id(
    cb: ChargebeeHarness, servers: dict[str, Any], start: Callable[..., Service], monkeypatch: Any
) -> None:
    """At-least-once, honestly: SMTP cannot tell a resend from a new message, so the replay of a send
    step whose worker died between the server's 250 and the commit sends the email again, with the same
    Message-ID (receivers can dedupe on it), one `deliveries` row, one audit record, marked as a possible
    duplicate. A replay after the commit sends nothing."""
    svc = start("auto")
    wf = cb.post_failure(svc.client, customer={"phone": PHONE})
    settled(svc, wf, "email", "sms")
    smtp = servers["smtp"].handler
    sent_before = len(smtp.messages)
    _, action = next((k, a) for k, a in _message_actions(svc.decision(wf)) if a["type"] == "send_email")
    step = "7:send_email"  # another send of the same drafted message, as its own step

    real = delivery._record_action
    monkeypatch.setattr(delivery, "_record_action", lambda *a, **k: (_ for _ in ()).throw(WorkerDied()))
    with pytest.raises(WorkerDied):
        delivery.send_message(wf, step, action, None)
    monkeypatch.setattr(delivery, "_record_action", real)
    assert deliveries(svc, wf)[f"email:{step}"].status == "sending"  # nothing recorded the acceptance

    again = delivery.send_message(wf, step, action, None)  # DBOS runs the unfinished step again
    assert again["status"] == "sent" and again["possible_duplicate"] is True
    replay = delivery.send_message(wf, step, action, None)  # a replay after the commit
    assert replay["replayed"] is True and replay["possible_duplicate"] is True

    copies = smtp.messages[sent_before:]
    assert len(copies) == 2, "at-least-once: the copy accepted before the kill, and the resend"
    ids = {m.message["Message-ID"] for m in copies}
    assert len(ids) == 1 and ids == {again["provider_id"]}
    assert ids.isdisjoint({m.message["Message-ID"] for m in smtp.messages[:sent_before]})  # per step
    row = deliveries(svc, wf)[f"email:{step}"]
    assert (row.status, row.attempts, row.provider_id) == ("sent", 2, again["provider_id"])
    assert row.detail.get("possible_duplicate") is True
    with svc.rt.db.reader() as s:
        recs = list(
            s.scalars(
                sa.select(AuditRecord).where(
                    AuditRecord.workflow_id == wf, AuditRecord.action == "action.send_email"
                )
            )
        )
    assert [r.outcome.get("possible_duplicate") for r in recs] == [None, True]  # the first step, this one
    audit_ok(svc)


def test_a_worker_killed_after_twilio_accepted_finds_the_sms_in_twilios_log(
    cb: ChargebeeHarness, servers: dict[str, Any], start: Callable[..., Service], monkeypatch: Any
) -> None:
    """Twilio takes no idempotency key, so the replay of an SMS step whose worker died after Twilio's 201
    reads Twilio's message log first: the message is there, it is recorded as sent, nothing is texted
    again. (If the log cannot be read, it is sent: at least once.)"""
    with FakeTwilioAPI(account_sid="AC0123456789abcdef0123456789abcdef") as twilio:
        servers["twilio"] = twilio
        svc = start("auto")
        wf = cb.post_failure(svc.client, customer={"phone": PHONE})
        settled(svc, wf, "email", "sms")
        assert len(twilio.messages) == 1
        _, action = next((k, a) for k, a in _message_actions(svc.decision(wf)) if a["type"] == "send_sms")
        step = "8:send_sms"

        real = delivery._record_action
        monkeypatch.setattr(delivery, "_record_action", lambda *a, **k: (_ for _ in ()).throw(WorkerDied()))
        with pytest.raises(WorkerDied):
            delivery.send_message(wf, step, action, None)
        monkeypatch.setattr(delivery, "_record_action", real)
        assert len(twilio.messages) == 2  # Twilio took it; nothing recorded that

        again = delivery.send_message(wf, step, action, None)
        assert again["status"] == "sent" and again["found_in_provider_log"] is True
        assert "possible_duplicate" not in again
        assert again["provider_id"] == twilio.messages[-1]["sid"]
        assert len(twilio.messages) == 2, "not texted again"
        assert [r.method for r in twilio.requests[-2:]] == ["POST", "GET"]
        row = deliveries(svc, wf)[f"sms:{step}"]
        assert (row.status, row.attempts, row.provider_id) == ("sent", 2, twilio.messages[-1]["sid"])
        audit_ok(svc)
