"""LLM drafts for a recovery's messages, made inside the recovery workflow.

A decision is first recorded with template drafts (deterministic, offline), together with the
allow-listed facts each draft may use (`plan.drafting.inputs`). When the policy's drafting backend for
recovery is `llm`, `redraft` asks the model for each message, durably: pydantic-ai's DBOS durability
makes every model request a DBOS step of this workflow, so a crash after the model answered replays
the recorded answer instead of calling (and paying for) the model again. Grounding failures, model
errors and the daily token budget fall back to the template draft, with the reason recorded.
`store_drafts` then puts the drafts on the decision and audits each one (`draft.created`, with the
model, prompt version, tokens, latency and any fallback) before an approver sees them or anything is
sent.
"""

from __future__ import annotations

from typing import Any

from dbos import DBOS

from billops.drafting.schema import Draft, DraftFacts, DraftLocal, DraftRecord
from billops.drafting.service import llm_draft
from billops.governance import audit
from billops.recovery.steps import _decision_dict
from billops.runtime import get_runtime
from billops.store.models import Decision

RECORDED = (
    "backend",
    "input_tokens",
    "output_tokens",
    "requests",
    "latency_ms",
    "attempts",
    "fallback",
    "grounding_errors",
)


def redraft(wf: str, decision: dict[str, Any]) -> dict[str, Any]:
    """Workflow code: LLM drafts for every message of the decision, then stored. Returns the decision."""
    rt = get_runtime()
    policy = rt.policy()
    plan = decision["plan"]
    inputs = (plan.get("drafting") or {}).get("inputs") or {}
    drafts: list[dict[str, Any]] = []
    for m in plan.get("messages", []):
        given = inputs.get(m["kind"])
        if given is None:
            continue
        fallback = Draft(
            kind=m["kind"],
            channel=m["channel"],
            subject=m.get("subject"),
            body=m["body"],
            output=m.get("output") or {},
            record=DraftRecord.model_validate(m.get("record") or {"backend": "templates", "kind": m["kind"]}),
        )
        d = llm_draft(
            m["kind"],
            DraftFacts.model_validate(given["facts"]),
            DraftLocal.model_validate(given["local"]),
            policy=policy,
            settings=rt.settings,
            workflow_id=wf,
            fallback=fallback,
        )
        drafts.append(d.model_dump(mode="json"))
    return store_drafts(wf, drafts)


@DBOS.step(name="store_drafts")
def store_drafts(wf: str, drafts: list[dict[str, Any]]) -> dict[str, Any]:
    """Replace the decision's drafts by kind and audit each (idempotent: a replay finds them stored)."""
    rt = get_runtime()
    with rt.db.session() as s:
        dec = s.get(Decision, wf, with_for_update=True)
        assert dec is not None
        if dec.plan.get("drafting", {}).get("stored"):
            return _decision_dict(dec)
        by_kind = {d["kind"]: d for d in drafts}
        messages = []
        for m in dec.plan.get("messages", []):
            d = by_kind.get(m["kind"])
            if d is None:
                messages.append(m)
                continue
            rec = d["record"]
            template = rec.get("template") or m.get("template")
            messages.append(
                {
                    **m,
                    "subject": d["subject"],
                    "body": d["body"],
                    "output": d["output"],
                    "record": rec,
                    "template": template if rec["backend"] == "templates" else f"llm:{rec.get('model')}",
                }
            )
            audit.record(
                s,
                action="draft.created",
                actor_type="model" if rec["backend"] == "llm" else "system",
                actor=str(rec.get("model") or template),
                workflow_id=wf,
                trace_id=dec.trace_id,
                subject=f"{dec.platform}:invoice:{dec.invoice_id}",
                versions={
                    k: v
                    for k, v in {
                        "prompts": rec.get("prompt_version"),
                        "templates": rec.get("template_version"),
                        "model": rec.get("model"),
                    }.items()
                    if v
                },
                outcome={"kind": m["kind"], **{k: rec.get(k) for k in RECORDED}},
            )
        dec.plan = {
            **dec.plan,
            "messages": messages,
            "drafting": {**dec.plan.get("drafting", {}), "stored": True},
        }
        return _decision_dict(dec)
