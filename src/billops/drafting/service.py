"""The one drafting interface: `template_draft` (deterministic, offline) and `llm_draft` (pydantic-ai,
grounded, budgeted, durable, with the template draft as its fallback).

Both return a `schema.Draft`: the final text, the typed output and a `DraftRecord` saying how it was
made (backend, template/prompt versions, model, tokens, latency, why the LLM was replaced).

`llm_draft` is written to run inside a sync `@DBOS.workflow`: its database work (budget check, usage
row) and its clock readings are DBOS steps with stable names, and the model calls are DBOS steps made
by the agents' `DBOSDurability`. A replay therefore returns the same draft without calling the model.
Outside a workflow (the CLI preview) the same code runs as plain calls.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from dbos import DBOS
from pydantic import BaseModel

from billops.config import Settings
from billops.drafting import llm
from billops.drafting.budget import record_usage, tokens_used_today
from billops.drafting.grounding import check
from billops.drafting.privacy import prompt_payload
from billops.drafting.prompts import load_prompt_set
from billops.drafting.schema import (
    KINDS,
    LINK_SLOT,
    NAME_SLOT,
    CaseSummary,
    Draft,
    DraftFacts,
    DraftLocal,
    DraftRecord,
    EmailDraft,
    InternalNote,
    SmsDraft,
)
from billops.drafting.templates import load_template_set
from billops.errors import InputError
from billops.policy import Policy

RETRY_PROMPT = (
    "Your draft had these problems:\n{problems}\n\n"
    "Write the whole draft again, fixing every problem. Use only the facts given in the first message, "
    "written exactly as given."
)


# ------------------------------------------------------------------ templates


def _template_ctx(facts: DraftFacts, local: DraftLocal) -> dict[str, Any]:
    return {
        **facts.model_dump(exclude={"kind"}),  # `kind` is TemplateSet.render's own argument
        "first_name": NAME_SLOT,  # filled at the end, like an LLM draft
        "card_update_url": LINK_SLOT,  # filled at delivery with the platform's link
        "other_method_hint": (
            "We'll first try the other payment method you have on file." if facts.other_method else None
        ),
        "customer_ref": local.customer_ref or "unknown",
        "card_desc": local.card_desc or "unknown",
    }


def negotiation_points(facts: DraftFacts) -> list[str]:
    points = []
    if facts.decline_code == "insufficient_funds":
        points.append("offer a retry date after the customer's usual payday")
    if facts.other_methods:
        points.append("suggest paying with the other payment method on file")
    if facts.decline_category in ("hard", "needs_new_card"):
        points.append("the current card cannot be charged again: ask for a new payment method")
    if facts.attempt_number >= 2:
        points.append("repeated failures: offer to split the amount or to move to invoice or bank transfer")
    if facts.past_successes >= 3:
        points.append("long paying history: a short grace period is reasonable")
    if not points:
        points.append("confirm the billing contact and the date that suits the customer for payment")
    return points


def summary_from_facts(facts: DraftFacts) -> CaseSummary:
    """The case summary's typed form, built from the facts only (no local data)."""
    decline = f"decline {facts.decline_code or 'unknown'} ({facts.decline_category or 'unknown'})"
    if facts.network_advice:
        decline += f", network advice {facts.network_advice}"
    card = " ".join(x for x in (facts.card_brand, facts.card_funding) if x) or "unknown card"
    history = (
        f"{facts.past_successes} successful and {facts.past_failures} failed payments before; attempt "
        f"{facts.attempt_number} on this invoice; {card}; {facts.other_methods} other usable payment "
        "method(s) on file."
    )
    if facts.retries:
        retry_line = "proposed retries: " + ", ".join(facts.retries)
    else:
        retry_line = "no automatic retry" + (f": {facts.retry_blocked}" if facts.retry_blocked else "")
    score = f", recovery likelihood {facts.score}/100" if facts.score is not None else ""
    return CaseSummary(
        headline=f"Invoice {facts.invoice_number} ({facts.amount}) failed on {facts.failed_date}{score}",
        risk_factors=[decline, *facts.reasons],
        payment_history=history,
        next_steps=[*facts.next_steps, retry_line],
        negotiation_points=negotiation_points(facts),
    )


def template_output(kind: str, facts: DraftFacts, local: DraftLocal, template_set_name: str) -> BaseModel:
    """The template draft's typed output, with {first_name} and {card_update_link} still as slots."""
    templates = load_template_set(template_set_name)
    rendered = templates.render(kind, **_template_ctx(facts, local))
    out: BaseModel
    if kind == "sms":
        out = SmsDraft(body=rendered.body.strip())
    elif kind == "case_summary":
        out = summary_from_facts(facts)
    elif kind == "internal_note":
        out = InternalNote(body=rendered.body.strip()[:1000])
    else:
        out = EmailDraft(subject=(rendered.subject or "")[:120], body=rendered.body, tone=facts.tone)
    return out


def template_draft(kind: str, facts: DraftFacts, local: DraftLocal, template_set_name: str) -> Draft:
    """The deterministic draft (the default backend, and every LLM draft's fallback)."""
    if kind not in KINDS:
        raise InputError(f"unknown draft kind {kind!r}; known: {', '.join(KINDS)}")
    templates = load_template_set(template_set_name)
    rendered = templates.render(kind, **_template_ctx(facts, local))
    out = template_output(kind, facts, local, template_set_name)
    record = DraftRecord(
        backend="templates", kind=kind, template=rendered.template, template_version=templates.version
    )
    subject = out.subject if isinstance(out, EmailDraft) else None
    body = rendered.body if kind == "case_summary" else _body_of(out, local)
    return _filled(kind, subject, body, out, record, local)


def _body_of(out: BaseModel, local: DraftLocal) -> str:
    if isinstance(out, (EmailDraft, SmsDraft, InternalNote)):
        return out.body.strip() + "\n"
    assert isinstance(out, CaseSummary)
    lines = [out.headline]
    if local.customer_ref:
        lines.append(f"Customer: {local.customer_ref}")
    if local.card_desc:
        lines.append(f"Card: {local.card_desc}")
    for title, items in (("Risk factors", out.risk_factors), ("Next steps", out.next_steps)):
        lines += ["", f"{title}:", *(f"- {i}" for i in items)]
    lines += ["", f"Payment history: {out.payment_history}", "", "Negotiation points:"]
    lines += [f"- {p}" for p in out.negotiation_points]
    return "\n".join(lines) + "\n"


def _fill_name(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return value.replace(NAME_SLOT, name)
    if isinstance(value, list):
        return [_fill_name(v, name) for v in value]
    if isinstance(value, dict):
        return {k: _fill_name(v, name) for k, v in value.items()}
    return value


def _filled(
    kind: str, subject: str | None, body: str, out: BaseModel, record: DraftRecord, local: DraftLocal
) -> Draft:
    """Fill {first_name} locally; {card_update_link} stays for delivery."""
    name = local.first_name or "there"
    return Draft(
        kind=kind,
        channel=KINDS[kind][0],
        subject=_fill_name(subject, name),
        body=_fill_name(body, name),
        output=_fill_name(out.model_dump(mode="json"), name),
        record=record,
    )


# ------------------------------------------------------------------ durable steps (stable names)


@DBOS.step(name="billops.drafting.tokens_used_today")
def _tokens_used_today_step() -> int:
    from billops.runtime import get_runtime

    with get_runtime().db.session() as s:
        return tokens_used_today(s, datetime.now(UTC))


@DBOS.step(name="billops.drafting.clock")
def _clock_step() -> float:
    return time.time()


@DBOS.step(name="billops.drafting.record_usage")
def _record_usage_step(
    workflow_id: str | None,
    kind: str,
    model: str,
    prompt_version: str,
    input_tokens: int,
    output_tokens: int,
    requests: int,
) -> None:
    from billops.runtime import get_runtime

    with get_runtime().db.session() as s:
        record_usage(
            s,
            now=datetime.now(UTC),
            workflow_id=workflow_id,
            kind=kind,
            model=model,
            prompt_version=prompt_version,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            requests=requests,
        )


# ------------------------------------------------------------------ LLM


def _fallback(fallback: Draft, reason: str, **fields: Any) -> Draft:
    record = fallback.record.model_copy(update={"backend": "templates", "fallback": reason, **fields})
    return fallback.model_copy(update={"record": record})


def llm_draft(
    kind: str,
    facts: DraftFacts,
    local: DraftLocal,
    *,
    policy: Policy,
    settings: Settings,
    workflow_id: str | None,
    fallback: Draft,
) -> Draft:
    """An LLM draft, grounded in `facts`, or `fallback` (the template draft) with the reason recorded.

    Budget exhausted → fallback, model not called. Ungrounded → one more run with the problems in the
    conversation; still ungrounded → fallback with the errors. Any model error → fallback."""
    if kind not in KINDS:
        raise InputError(f"unknown draft kind {kind!r}; known: {', '.join(KINDS)}")
    choice = policy.drafting.llm
    model = llm.model_id(choice)
    try:
        prompts = load_prompt_set(policy.drafting.prompts)
        instructions = prompts.for_kind(kind)
    except Exception as exc:  # a missing prompt file: ConfigError, recorded, templates keep working
        return _fallback(fallback, f"llm error: {exc}", model=model)
    base: dict[str, Any] = {"model": model, "prompt_version": prompts.version}

    budget = policy.drafting.daily_token_budget
    used = _tokens_used_today_step()
    if used >= budget:
        return _fallback(
            fallback, f"daily token budget exhausted ({used} tokens used today, budget {budget})", **base
        )

    deps = llm.LlmDeps(choice=choice, settings=settings)
    user_prompt = json.dumps(prompt_payload(facts), ensure_ascii=False, indent=1)
    started = _clock_step()
    tokens = {"input_tokens": 0, "output_tokens": 0, "requests": 0}
    attempts, errors, output, failure = 0, [], None, None

    def spend(result: Any) -> None:
        u = result.usage  # a property in pydantic-ai 2.x
        tokens["input_tokens"] += int(u.input_tokens or 0)
        tokens["output_tokens"] += int(u.output_tokens or 0)
        tokens["requests"] += int(u.requests or 0)

    try:
        allowance = budget - used
        first = llm.run_agent(
            kind, user_prompt, instructions=instructions, deps=deps, token_allowance=allowance
        )
        attempts = 1
        spend(first)
        problems = check(kind, first.output, facts)
        if not problems:
            output = first.output
        else:
            errors = [f"draft 1: {p}" for p in problems]
            retry = RETRY_PROMPT.format(problems="\n".join(f"- {p}" for p in problems))
            second = llm.run_agent(
                kind,
                retry,
                instructions=instructions,
                deps=deps,
                message_history=first.all_messages(),
                token_allowance=max(1, allowance - sum(tokens[k] for k in ("input_tokens", "output_tokens"))),
            )
            attempts = 2
            spend(second)
            again = check(kind, second.output, facts)
            if not again:
                output = second.output
            else:
                errors += [f"draft 2: {p}" for p in again]
                failure = "grounding failed twice: " + "; ".join(again)
    except Exception as exc:  # model/HTTP/usage-limit/config errors; DBOS cancellation is a BaseException
        failure = f"llm error: {type(exc).__name__}: {exc}"
    finished = _clock_step()
    if tokens["requests"]:
        _record_usage_step(workflow_id, kind, model, prompts.version, **tokens)
    record_fields = {
        **base,
        **tokens,
        "latency_ms": round((finished - started) * 1000),
        "attempts": attempts,
        "grounding_errors": errors,
    }
    if output is None:
        return _fallback(fallback, failure or "llm error: no output", **record_fields)
    record = DraftRecord(backend="llm", kind=kind, **record_fields)
    subject = output.subject if isinstance(output, EmailDraft) else None
    return _filled(kind, subject, _body_of(output, local), output, record, local)
