"""LLM drafting inside the real recovery workflow (DBOS, the app, a Chargebee failure against
FakeChargebeeAPI, a real SMTP server): the model's drafts reach the approver and the customer, every
prompt is free of the customer's personal data, each draft is recorded with its model, prompt version,
tokens and latency, and an ungrounded model falls back to the template draft, recorded. The model is a
pydantic-ai FunctionModel (no test reaches a real one). SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import BaseModel
from typer.testing import CliRunner

from billops.app import create_app
from billops.cli import app as cli
from billops.drafting import llm
from billops.drafting.schema import EmailDraft, SmsDraft
from billops.store.models import Approval, AuditRecord, LlmUsage
from support.auth import auth_headers
from support.channels import running_smtp
from support.chargebee_harness import ChargebeeHarness, running_harness
from support.helpers import wait_for
from support.llm import Scripted, grounded
from support.service import Service

# What the fixture's customer carries that must never reach a model.
PII = ("ana.silva@example.com", "Ana", "Silva", "12 Harbour St", "Lisbon", "+351912345678")
OPENING = "We noticed a hiccup with your latest payment."


@pytest.fixture
def cb() -> Iterator[ChargebeeHarness]:
    with running_harness() as harness:
        yield harness


@pytest.fixture
def start(
    cb: ChargebeeHarness,
    database_url: str,
    settings_factory: Any,
    runtime_factory: Any,
    make_policy: Callable[..., Path],
) -> Iterator[Callable[..., Service]]:
    with running_smtp() as smtp:

        def _start(fake: Scripted, mode: str = "assist") -> Service:
            llm.set_model(fake.model)
            policy_file = make_policy(
                modes={"recovery": mode},
                recovery={"model": "rules", "context_wait_seconds": 1},
                drafting={"backend": {"recovery": "llm"}},
            )
            settings = settings_factory(
                database_url, policy_file=policy_file, **smtp.settings(), **cb.settings()
            )
            rt = runtime_factory(settings)
            svc = Service(TestClient(create_app(settings, manage_runtime=False)), rt)
            svc.smtp = smtp  # type: ignore[attr-defined]
            return svc

        yield _start
    llm.set_model(None)


def friendlier(messages: list[Any], info: Any) -> BaseModel:
    """A well-behaved model with its own words: the grounded draft, opened differently."""
    out = grounded(messages, info)
    if isinstance(out, EmailDraft):
        return out.model_copy(update={"body": out.body.replace("\n\n", f"\n\n{OPENING} ", 1)})
    if isinstance(out, SmsDraft):
        return out.model_copy(update={"body": out.body.replace("failed.", "did not go through.")})
    return out


def approve(svc: Service, wf: str) -> None:
    operator = auth_headers(svc.rt, "operator")
    [item] = [a for a in svc.client.get("/api/approvals", headers=operator).json() if a["workflow_id"] == wf]
    r = svc.client.post(f"/api/approvals/{item['id']}/approve", json={"why": "reads well"}, headers=operator)
    assert r.status_code == 200, r.text


def draft_records(svc: Service, wf: str) -> list[AuditRecord]:
    with svc.rt.db.reader() as s:
        return list(
            s.scalars(
                sa.select(AuditRecord)
                .where(AuditRecord.workflow_id == wf, AuditRecord.action == "draft.created")
                .order_by(AuditRecord.seq)
            )
        )


def test_the_models_drafts_reach_the_approver_and_the_customer_without_pii_in_any_prompt(
    cb: ChargebeeHarness, start: Callable[..., Service]
) -> None:
    fake = Scripted(friendlier)
    svc = start(fake)
    wf = cb.post_failure(svc.client)
    svc.awaiting(wf)
    d = svc.decision(wf)  # re-read: the approval opens after the drafts are stored
    by_kind = {m["kind"]: m for m in d.plan["messages"]}
    assert set(by_kind) == {"urgent_email", "sms"}
    email = by_kind["urgent_email"]
    assert email["record"]["backend"] == "llm", email["record"]
    assert email["record"]["model"] == "function:scripted", "the record names the model that answered"
    assert email["record"]["prompt_version"].startswith("recovery-v1@")
    assert email["record"]["input_tokens"] > 0 and email["record"]["latency_ms"] is not None
    assert OPENING in email["body"] and email["body"].startswith("Hi Ana,"), "the name is filled in locally"
    assert "did not go through" in by_kind["sms"]["body"]

    assert fake.calls == 2, "one model call per message"
    leaked = [p for p in PII for text in fake.texts if p in text]
    assert leaked == [], f"personal data reached the model: {leaked}"

    recs = draft_records(svc, wf)
    assert [r.outcome["kind"] for r in recs] == ["urgent_email", "sms"]
    assert all(r.actor_type == "model" and r.versions["prompts"].startswith("recovery-v1@") for r in recs)
    with svc.rt.db.reader() as s:
        spent = s.scalar(sa.select(sa.func.sum(LlmUsage.input_tokens + LlmUsage.output_tokens)))
    assert spent and spent == sum(r.outcome["input_tokens"] + r.outcome["output_tokens"] for r in recs)

    approve(svc, wf)
    mail = wait_for(lambda: svc.smtp.handler.messages, timeout=60)  # type: ignore[attr-defined]
    assert OPENING in mail[0].part("plain")
    kpis = svc.client.get("/api/kpis", headers=auth_headers(svc.rt, "viewer")).json()
    assert kpis["llm"]["drafts"] == 2 and kpis["llm"]["input_tokens"] > 0
    r = CliRunner().invoke(cli, ["--database-url", svc.rt.settings.db_url, "audit", "verify"])
    assert r.exit_code == 0, r.output


def test_an_ungrounded_model_is_retried_once_then_replaced_by_the_template_and_recorded(
    cb: ChargebeeHarness, start: Callable[..., Service]
) -> None:
    def wrong_amount(messages: list[Any], info: Any) -> BaseModel:
        out = grounded(messages, info)
        if isinstance(out, EmailDraft):
            return out.model_copy(update={"body": out.body + "\nA late fee of $15.00 applies."})
        return out

    fake = Scripted(wrong_amount)
    svc = start(fake)
    wf = cb.post_failure(svc.client)
    svc.awaiting(wf)
    d = svc.decision(wf)  # re-read: the approval opens after the drafts are stored
    email = next(m for m in d.plan["messages"] if m["kind"] == "urgent_email")
    rec = email["record"]
    assert rec["backend"] == "templates" and rec["attempts"] == 2
    assert rec["fallback"].startswith("grounding failed twice")
    assert any("$15.00" in e for e in rec["grounding_errors"])
    assert "late fee" not in email["body"] and email["template"] == "recovery-v1/urgent_email"
    assert fake.calls == 3, "the email twice (retry with the error), the SMS once"
    assert any("Your draft had these problems" in t for t in fake.texts)
    [first, _] = draft_records(svc, wf)
    assert first.actor_type == "system" and first.outcome["fallback"].startswith("grounding failed twice")


def test_in_shadow_mode_the_models_drafts_are_recorded_and_nothing_is_sent(
    cb: ChargebeeHarness, start: Callable[..., Service]
) -> None:
    fake = Scripted(friendlier)
    svc = start(fake, "shadow")
    wf = cb.post_failure(svc.client)
    recs = wait_for(lambda: draft_records(svc, wf) if len(draft_records(svc, wf)) == 2 else None, timeout=60)
    assert {r.outcome["backend"] for r in recs} == {"llm"}
    d = svc.decision(wf)
    assert d.status == "recorded" and all(m["record"]["backend"] == "llm" for m in d.plan["messages"])
    assert svc.smtp.handler.messages == []  # type: ignore[attr-defined]
    with svc.rt.db.reader() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Approval)) == 0
