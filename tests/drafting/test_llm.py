"""The LLM path with a FunctionModel: grounding retry, template fallback, budget, errors, durability."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID

from billops.drafting import llm
from billops.drafting.schema import Draft, DraftFacts, DraftLocal, EmailDraft
from billops.drafting.service import llm_draft, template_draft
from billops.runtime import Runtime, get_runtime
from billops.store.models import LlmUsage
from support.llm import Scripted, grounded, sample

GOOD = EmailDraft(
    subject="Action needed: your Pro payment of 49.00 USD failed",
    body="Hi {first_name},\n\nWe couldn't collect 49.00 USD for invoice INV-0042 on November 2, 2026. "
    "Please update your card: {card_update_link}\n\nWe'll try again on November 5, 2026.",
    tone="urgent",
)
UNGROUNDED = GOOD.model_copy(update={"body": GOOD.body.replace("49.00 USD", "$59.00")})


def draft(rt: Runtime, facts: DraftFacts, local: DraftLocal, workflow_id: str | None = "wf-test") -> Draft:
    policy = rt.policy()
    fallback = template_draft(facts.kind, facts, local, policy.templates)
    return llm_draft(
        facts.kind,
        facts,
        local,
        policy=policy,
        settings=rt.settings,
        workflow_id=workflow_id,
        fallback=fallback,
    )


def usage_rows(rt: Runtime) -> list[LlmUsage]:
    with rt.db.reader() as s:
        return list(s.scalars(sa.select(LlmUsage).order_by(LlmUsage.id)))


def test_grounded_draft_is_used_and_recorded(rt: Runtime) -> None:
    facts, local = sample()
    fake = Scripted(GOOD)
    with llm.use_model(fake.model):
        d = draft(rt, facts, local)
    assert fake.calls == 1
    assert d.record.backend == "llm" and d.record.fallback is None and d.record.attempts == 1
    assert d.body.startswith("Hi Ada,") and "{card_update_link}" in d.body
    assert d.subject == GOOD.subject and d.output["tone"] == "urgent"
    assert d.record.prompt_version and d.record.prompt_version.startswith("recovery-v1@1+")
    assert d.record.model == "function:scripted" and d.record.template is None
    assert d.record.input_tokens > 0 and d.record.output_tokens > 0 and d.record.requests == 1
    assert d.record.latency_ms is not None and d.record.latency_ms >= 0
    [row] = usage_rows(rt)
    assert (row.workflow_id, row.kind, row.model, row.requests) == (
        "wf-test",
        "urgent_email",
        "function:scripted",
        1,
    )
    assert row.input_tokens == d.record.input_tokens and row.day == f"{datetime.now(UTC):%Y-%m-%d}"
    # the instructions are the versioned prompt file, and the facts went as JSON
    assert "Hi {first_name}," in fake.requests[0] and "INV-0042" in fake.requests[0]


def test_ungrounded_draft_is_retried_once_with_the_errors(rt: Runtime) -> None:
    facts, local = sample()
    fake = Scripted(UNGROUNDED, GOOD)
    with llm.use_model(fake.model):
        d = draft(rt, facts, local)
    assert fake.calls == 2
    second = fake.requests[1]
    assert "Your draft had these problems" in second
    assert "mentions the amount '$59.00', but the amount is 49.00 USD" in second
    assert d.record.backend == "llm" and d.record.attempts == 2 and "49.00 USD" in d.body
    assert d.record.grounding_errors == ["draft 1: mentions the amount '$59.00', but the amount is 49.00 USD"]
    assert d.record.requests == 2 and usage_rows(rt)[0].requests == 2


def test_twice_ungrounded_falls_back_to_the_template(rt: Runtime) -> None:
    facts, local = sample()
    fake = Scripted(UNGROUNDED)
    with llm.use_model(fake.model):
        d = draft(rt, facts, local)
    template = template_draft(facts.kind, facts, local, rt.policy().templates)
    assert fake.calls == 2
    assert d.body == template.body and d.subject == template.subject
    assert d.record.backend == "templates" and d.record.template == "recovery-v1/urgent_email"
    assert (
        d.record.fallback
        == "grounding failed twice: mentions the amount '$59.00', but the amount is 49.00 USD"
    )
    assert len(d.record.grounding_errors) == 2 and d.record.attempts == 2
    assert d.record.model == "function:scripted" and d.record.requests == 2  # what was tried is recorded
    assert len(usage_rows(rt)) == 1  # the tokens were spent, so they count against the budget


def test_exhausted_budget_falls_back_without_calling_the_model(rt: Runtime) -> None:
    with rt.db.session() as s:
        now = datetime.now(UTC)
        s.add(LlmUsage(day=f"{now:%Y-%m-%d}", at=now, workflow_id="x", kind="sms", model="m",
                       prompt_version="p", input_tokens=4000, output_tokens=1000, requests=1))  # fmt: skip
    facts, local = sample()
    fake = Scripted(GOOD)
    with llm.use_model(fake.model):
        d = draft(rt, facts, local)
    assert fake.calls == 0
    assert d.record.backend == "templates"
    assert d.record.fallback == "daily token budget exhausted (5000 tokens used today, budget 5000)"
    assert len(usage_rows(rt)) == 1


def test_model_error_falls_back(rt: Runtime) -> None:
    facts, local = sample()
    fake = Scripted(RuntimeError("connection reset by peer"))
    with llm.use_model(fake.model):
        d = draft(rt, facts, local)
    assert d.record.backend == "templates"
    assert d.record.fallback == "llm error: RuntimeError: connection reset by peer"


def test_invalid_typed_output_is_rejected_then_falls_back(rt: Runtime) -> None:
    facts, local = sample()
    fake = Scripted({"subject": "Hi", "body": "b", "tone": "cheerful"})
    with llm.use_model(fake.model):
        d = draft(rt, facts, local)
    assert fake.calls == 2  # pydantic-ai's own validation retry, then it gives up
    assert d.record.backend == "templates" and d.record.fallback and "llm error" in d.record.fallback
    assert "tone" in fake.requests[1]  # the validation error was sent back to the model


def test_missing_api_key_is_a_recorded_fallback(rt: Runtime) -> None:
    facts, local = sample()
    d = draft(rt, facts, local)  # provider openai (the default), no BILLOPS_OPENAI_API_KEY, no fake
    assert d.record.backend == "templates" and d.record.model == "openai:gpt-4o-mini"
    assert d.record.fallback and "BILLOPS_OPENAI_API_KEY" in d.record.fallback


@pytest.mark.parametrize(
    "kind", ["reassuring_email", "sms", "case_summary", "internal_note", "card_update_email"]
)
def test_every_kind_drafts_with_its_typed_output(rt: Runtime, kind: str) -> None:
    facts, local = sample(kind)
    fake = Scripted(grounded)
    with llm.use_model(fake.model):
        d = draft(rt, facts, local)
    assert d.record.backend == "llm", d.record.fallback
    assert d.kind == kind and d.channel == facts.channel
    if kind == "case_summary":
        assert "Customer: cus_A1" in d.body and "ending 4242" in d.body  # local data joins after the model
        assert set(d.output) == {
            "headline",
            "risk_factors",
            "payment_history",
            "next_steps",
            "negotiation_points",
        }


# ------------------------------------------------------------------ durability


@DBOS.workflow(name="test_drafting_llm_workflow")
def drafting_workflow(facts: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    rt = get_runtime()
    f, lo = DraftFacts.model_validate(facts), DraftLocal.model_validate(local)
    return draft(rt, f, lo, workflow_id=DBOS.workflow_id).model_dump(mode="json")


def test_a_replayed_workflow_does_not_call_the_model_again(rt: Runtime) -> None:
    facts, local = sample()
    fake = Scripted(UNGROUNDED, GOOD)  # two model calls in the first run
    args = (facts.model_dump(mode="json"), local.model_dump(mode="json"))
    with llm.use_model(fake.model):
        with SetWorkflowID("draft-wf-1"):
            first = drafting_workflow(*args)
        assert fake.calls == 2 and first["record"]["backend"] == "llm"

        with SetWorkflowID("draft-wf-1"):  # the same workflow id again: DBOS returns the recorded result
            again = drafting_workflow(*args)
        assert again == first and fake.calls == 2

        # A crash right after the model calls: re-execute the workflow from the step that follows them.
        steps = DBOS.list_workflow_steps("draft-wf-1")
        model_steps = [s for s in steps if s["function_name"].endswith("__model.request")]
        assert len(model_steps) == 2
        resume_at = max(s["function_id"] for s in model_steps) + 1
        recovered = DBOS.fork_workflow("draft-wf-1", resume_at).get_result()
    assert fake.calls == 2  # the recorded responses were replayed
    assert recovered["body"] == first["body"] and recovered["record"]["attempts"] == 2
    assert recovered["record"]["input_tokens"] == first["record"]["input_tokens"]
