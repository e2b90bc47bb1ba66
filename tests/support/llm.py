"""FunctionModel fakes for the drafting tests: scripted answers, every request captured."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from billops.drafting.schema import DraftFacts, DraftLocal
from billops.drafting.service import template_output

Answer = Callable[[list[ModelMessage], AgentInfo], dict[str, Any] | BaseModel]


class Scripted:
    """A FunctionModel whose answers come from `answers` (one callable or dict per call, the last one
    repeating), recording every request: the messages as JSON and the instructions."""

    def __init__(self, *answers: Answer | dict[str, Any] | BaseModel) -> None:
        self.answers = list(answers)
        self.requests: list[str] = []
        self.messages: list[list[ModelMessage]] = []
        self.texts: list[str] = []  # what the model reads: every part's content and args, the instructions
        self.model = FunctionModel(self._call, model_name="scripted")

    @property
    def calls(self) -> int:
        return len(self.requests)

    def _call(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.messages.append(list(messages))
        self.requests.append(
            ModelMessagesTypeAdapter.dump_json(messages).decode() + "\n" + (info.instructions or "")
        )
        contents = [
            str(getattr(p, "content", "")) + str(getattr(p, "args", "") or "")
            for m in messages
            for p in m.parts
        ]
        self.texts.append("\n".join([*contents, info.instructions or ""]))
        spec = self.answers[min(len(self.requests) - 1, len(self.answers) - 1)]
        answer = spec(messages, info) if callable(spec) else spec
        if isinstance(answer, Exception):
            raise answer
        args = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, args)])


def facts_in(messages: list[ModelMessage]) -> DraftFacts:
    """The facts JSON the service sent as the first user prompt."""
    for m in messages:
        for part in getattr(m, "parts", []):
            if getattr(part, "part_kind", None) == "user-prompt" and isinstance(part.content, str):
                return DraftFacts.model_validate(json.loads(part.content))
    raise AssertionError("no facts prompt in the request")


def grounded(messages: list[ModelMessage], info: AgentInfo) -> BaseModel:
    """A well-behaved model: the template draft for exactly the facts it was given."""
    facts = facts_in(messages)
    return template_output(facts.kind, facts, DraftLocal(), "recovery-v1")


def sample(kind: str = "urgent_email", **changes: Any) -> tuple[DraftFacts, DraftLocal]:
    from billops.drafting.schema import KINDS

    facts = DraftFacts(
        kind=kind,
        channel=KINDS[kind][0],
        tone="urgent",
        route="retry_and_notify",
        amount="49.00 USD",
        amount_minor=4900,
        currency="usd",
        invoice_number="INV-0042",
        plan_name="Pro",
        failed_date="November 2, 2026",
        next_retry_date="November 5, 2026",
        decline_hint="insufficient funds",
        score=64,
        scorer="rules-v1",
        reasons=["score 64 within 50–85", "decline insufficient_funds is soft"],
        decline_code="insufficient_funds",
        decline_category="soft",
        past_successes=4,
        attempt_number=1,
        card_brand="visa",
        card_funding="credit",
        retries=["2026-11-05 12:00 UTC"],
        next_steps=["offer a retry date after the customer's usual payday"],
    ).model_copy(update=changes)
    local = DraftLocal(
        first_name="Ada", customer_ref="cus_A1", card_desc="visa credit ending 4242, expires 12/2030"
    )
    return facts, local
