"""Typed drafting outputs and the records that travel with them.

Three kinds of data meet in a draft, and this module keeps them apart on purpose:

- `DraftFacts` is THE allow-list: the only fields that may enter an LLM prompt (`privacy.prompt_payload`).
  It has no name, email, phone, address, card digits, customer id or customer free text, and it forbids
  extra fields, so adding one is a reviewed change to this file.
- `DraftLocal` is what templates may use but never leaves the machine (the first name, the customer
  reference and the card description for the human-review summary).
- The typed outputs (`EmailDraft`, `SmsDraft`, `CaseSummary`, `InternalNote`) are what a backend must
  produce; `Draft` carries the final text plus a `DraftRecord` saying how it was made.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Tone = Literal["reassuring", "urgent", "firm"]
Channel = Literal["email", "sms", "internal"]
Backend = Literal["templates", "llm"]

# Slots a draft may contain. The first name is filled in locally after the model answers (it never
# enters a prompt); the card-update link is filled at delivery with the platform's own URL.
NAME_SLOT = "{first_name}"
LINK_SLOT = "{card_update_link}"
SLOTS = (NAME_SLOT, LINK_SLOT)

# The only decline hints a prompt may carry: a fixed vocabulary, never the platform's free-text message.
DECLINE_HINTS: dict[str, str] = {
    "insufficient_funds": "insufficient funds",
    "expired_card": "the card has expired",
    "incorrect_cvc": "the security code didn't match",
    "incorrect_number": "the card number is incorrect",
    "authentication_required": "your bank asked for authentication",
}
DeclineHint = Literal[
    "insufficient funds",
    "the card has expired",
    "the security code didn't match",
    "the card number is incorrect",
    "your bank asked for authentication",
]


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmailDraft(_Output):
    """A dunning email. The body starts with "Hi {first_name}," and uses {card_update_link} literally."""

    subject: str = Field(min_length=1, max_length=120)
    body: str = Field(min_length=1, max_length=4000)
    tone: Tone


class SmsDraft(_Output):
    body: str = Field(min_length=1, max_length=320)


class CaseSummary(_Output):
    """The human-review summary of a recovery case."""

    headline: str = Field(min_length=1, max_length=200)
    risk_factors: list[str]
    payment_history: str = Field(min_length=1, max_length=600)
    next_steps: list[str]
    negotiation_points: list[str]


class InternalNote(_Output):
    body: str = Field(min_length=1, max_length=1000)


KINDS: dict[str, tuple[Channel, type[BaseModel]]] = {
    "reassuring_email": ("email", EmailDraft),
    "urgent_email": ("email", EmailDraft),
    "card_update_email": ("email", EmailDraft),
    "sms": ("sms", SmsDraft),
    "case_summary": ("internal", CaseSummary),
    "internal_note": ("internal", InternalNote),
}


class DraftFacts(BaseModel):
    """The allow-list: every field here may be sent to an LLM provider; nothing else may.

    Amounts and dates are display strings, exactly as a draft must write them (grounding compares the
    draft against these). `reasons`, `next_steps` and `retry_blocked` come from our own models and
    rules, and still pass through `privacy.redact` before they enter a prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    channel: Channel
    tone: Tone
    route: str
    company: str | None = None
    amount: str = Field(description='Display form, e.g. "49.00 USD".')
    amount_minor: int
    currency: str = Field(min_length=3, max_length=3)
    invoice_number: str
    plan_name: str | None = None
    failed_date: str = Field(description='e.g. "November 2, 2026"')
    next_retry_date: str | None = None
    decline_hint: DeclineHint | None = None
    other_method: bool = False
    score: int | None = None
    scorer: str | None = None
    reasons: list[str] = Field(default_factory=list)
    decline_code: str | None = None
    decline_category: str | None = None
    network_advice: str | None = None
    past_successes: int = 0
    past_failures: int = 0
    attempt_number: int = 1
    card_brand: str | None = None
    card_funding: str | None = None
    other_methods: int = 0
    retries: list[str] = Field(default_factory=list, description='e.g. "2026-11-03 12:00 UTC"')
    retry_blocked: str | None = None
    next_steps: list[str] = Field(default_factory=list)


class DraftLocal(BaseModel):
    """Data templates may use that never enters a prompt or leaves the machine through drafting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_name: str | None = None
    customer_ref: str | None = None
    card_desc: str | None = None  # e.g. "visa credit ending 4242, expires 12/2027"


class DraftRecord(BaseModel):
    """How a draft was made: recorded with the decision and in the audit log (`draft.created`)."""

    backend: Backend
    kind: str
    template: str | None = None  # e.g. "recovery-v1/urgent_email" (the template used or fallen back to)
    template_version: str | None = None
    model: str | None = None  # e.g. "openai:gpt-4o-mini"
    prompt_version: str | None = None  # e.g. "recovery-v1@1+ab12cd34ef"
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    latency_ms: int | None = None
    attempts: int = 0  # LLM runs (1 or 2); 0 for a pure template draft
    fallback: str | None = None  # why templates replaced the LLM
    grounding_errors: list[str] = Field(default_factory=list)


class Draft(BaseModel):
    kind: str
    channel: Channel
    subject: str | None
    body: str
    output: dict[str, Any]
    record: DraftRecord


def channel_of(kind: str) -> Channel:
    return KINDS[kind][0]


def output_model(kind: str) -> type[BaseModel]:
    return KINDS[kind][1]
