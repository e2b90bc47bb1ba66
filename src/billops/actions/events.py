"""The outbound webhook events: one pydantic model per event's `data`, the source of truth for the
JSON schemas in docs/webhook-events/ (`billops webhooks schemas` regenerates them; a test checks the
committed files match).

Envelope (Standard Webhooks): `{"type": "<event>", "timestamp": "<ISO 8601 UTC>", "data": {...}}`,
sent with the headers webhook-id / webhook-timestamp / webhook-signature. Events carry ids, amounts
and reasons — never an email address, a phone number or a name: a receiver that needs them looks the
customer up in the billing platform by `platform` + `customer_id`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from billops.actions.settings import OUTBOUND_EVENTS

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InvoiceRef(_Data):
    """The invoice a recovery is about."""

    id: str = Field(min_length=1, description="The platform's invoice id.")
    number: str | None = Field(description="The invoice number customers see, when the platform has one.")
    amount_minor: int = Field(description="Amount due in integer minor units (cents).")
    currency: str = Field(pattern=r"^[a-z]{3}$", description="Lowercase ISO 4217 code.")
    amount: str = Field(description="The amount for display, e.g. '49.00 USD'.")


class CaseSummary(_Data):
    """The human-review case summary (drafted by templates or an LLM, grounded on the facts)."""

    headline: str
    risk_factors: list[str]
    payment_history: str
    next_steps: list[str]
    negotiation_points: list[str]


class RecoveryEscalated(_Data):
    """A failed payment needs a human: the plan was routed to review or waits for approval."""

    workflow_id: str = Field(min_length=1, description="The BillOps workflow id (platform:event_id).")
    platform: str = Field(min_length=1, description="stripe, chargebee, recurly or zuora.")
    customer_id: str = Field(min_length=1, description="The platform's customer id.")
    invoice: InvoiceRef
    route: str = Field(description="The decided route: auto_retry, retry_and_notify, human_review, no_retry.")
    score: int = Field(ge=0, le=100, description="Recovery likelihood, 0–100.")
    reasons: list[str] = Field(description="Why this route and score, in words.")
    case_summary: CaseSummary
    summary_text: str = Field(description="The case summary as plain text (for a ticket body).")
    approval_url: str | None = Field(description="Where to approve or reject in the console, if any.")


class RecoveryFinished(_Data):
    """A recovery workflow ended."""

    workflow_id: str = Field(min_length=1)
    platform: str = Field(min_length=1)
    invoice_id: str = Field(min_length=1)
    customer_id: str | None = Field(description="The platform's customer id, when known.")
    status: str = Field(
        min_length=1,
        description="How it ended: recovered, settled_elsewhere, exhausted, stopped, rejected, expired, "
        "not_executed (more may be added; receivers should accept unknown values).",
    )
    detail: dict[str, Any] = Field(description="Technical detail of the ending (step, retry number, status).")


class MessageFailed(_Data):
    """A message or notification failed permanently (or ran out of retries)."""

    workflow_id: str = Field(min_length=1)
    step: str = Field(min_length=1, description="The workflow step that tried to deliver.")
    channel: Literal["email", "sms", "slack", "webhook"]
    platform: str = Field(min_length=1)
    customer_id: str | None
    error: str = Field(description="What went wrong, without addresses or message text.")
    code: str | None = Field(description="Provider code: smtp-550, 21610, invalid-number, http-410, …")
    attempts: int = Field(ge=1, description="Attempts made before giving up.")


class WorkflowFailed(_Data):
    """A durable workflow ended in ERROR (sent once per workflow by the watcher, billops/ops/watch.py)."""

    workflow_id: str = Field(min_length=1, description="The failed workflow's id (whole, never cut).")
    function: str = Field(description="The workflow function: process_event, recovery_followup, …")
    status: Literal["ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"]
    error: str = Field(max_length=500, description="The error the workflow raised (type: message), cut.")
    created_at: datetime | None = Field(description="When the workflow started.")
    failed_at: datetime | None = Field(description="When it ended in error.")
    decision_workflow_id: str | None = Field(description="The decision this workflow belongs to, if any.")
    platform: str | None = Field(description="That decision's platform, if any.")
    console_url: str | None = Field(description="The workflow's page in the console, when public_url is set.")


EVENT_MODELS: dict[str, type[BaseModel]] = {
    "recovery.escalated": RecoveryEscalated,
    "recovery.finished": RecoveryFinished,
    "message.failed": MessageFailed,
    "workflow.failed": WorkflowFailed,
}
assert tuple(EVENT_MODELS) == OUTBOUND_EVENTS, "actions/settings.py OUTBOUND_EVENTS and EVENT_MODELS differ"


def envelope(event_type: str, data: BaseModel, timestamp: datetime) -> dict[str, Any]:
    """The JSON body sent to receivers."""
    ts = timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {"type": event_type, "timestamp": ts, "data": data.model_dump(mode="json")}


def schema_for(event_type: str) -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of one event's whole envelope."""
    try:
        model = EVENT_MODELS[event_type]
    except KeyError:
        raise KeyError(f"unknown event {event_type!r}; known: {', '.join(EVENT_MODELS)}") from None
    env = create_model(
        model.__name__ + "Event",
        __config__=ConfigDict(extra="forbid"),
        type=(Literal[event_type], Field(description="The event type.")),  # type: ignore[arg-type]
        timestamp=(datetime, Field(description="When the event happened, ISO 8601 UTC.")),
        data=(model, ...),
    )
    schema = env.model_json_schema()
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"{event_type}.schema.json",
        "title": event_type,
        "description": (model.__doc__ or "").strip(),
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def write_schemas(folder: Path) -> list[Path]:
    """Write `<event>.schema.json` for every event into `folder` (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type in EVENT_MODELS:
        path = folder / f"{event_type}.schema.json"
        path.write_text(
            json.dumps(schema_for(event_type), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        written.append(path)
    return written


def sample_data(event_type: str) -> dict[str, Any]:
    """A valid, obviously synthetic `data` for `event_type` (`billops webhooks test`, docs, tests)."""
    samples: dict[str, dict[str, Any]] = {
        "recovery.escalated": {
            "workflow_id": "stripe:evt_sample_0001",
            "platform": "stripe",
            "customer_id": "cus_sample",
            "invoice": {
                "id": "in_sample",
                "number": "SAMPLE-0001",
                "amount_minor": 4900,
                "currency": "usd",
                "amount": "49.00 USD",
            },
            "route": "human_review",
            "score": 42,
            "reasons": ["sample event sent by `billops webhooks test`"],
            "case_summary": {
                "headline": "Sample: invoice SAMPLE-0001 (49.00 USD) failed",
                "risk_factors": ["insufficient_funds decline"],
                "payment_history": "12 successful, 1 failed payments before",
                "next_steps": ["retry after the next payday"],
                "negotiation_points": ["offer a one-month pause"],
            },
            "summary_text": "Sample case summary.",
            "approval_url": None,
        },
        "recovery.finished": {
            "workflow_id": "stripe:evt_sample_0001",
            "platform": "stripe",
            "invoice_id": "in_sample",
            "customer_id": "cus_sample",
            "status": "recovered",
            "detail": {"retry": 1},
        },
        "message.failed": {
            "workflow_id": "stripe:evt_sample_0001",
            "step": "send-email",
            "channel": "email",
            "platform": "stripe",
            "customer_id": "cus_sample",
            "error": "email: the server refused the recipient: SMTP 550 [permanent]",
            "code": "smtp-550",
            "attempts": 1,
        },
        "workflow.failed": {
            "workflow_id": "stripe:evt_sample_0001:followup",
            "function": "recovery_followup",
            "status": "ERROR",
            "error": "PlatformError: stripe: 500 Internal Server Error (sample)",
            "created_at": "2025-03-01T12:00:00+00:00",
            "failed_at": "2025-03-01T12:05:00+00:00",
            "decision_workflow_id": "stripe:evt_sample_0001",
            "platform": "stripe",
            "console_url": None,
        },
    }
    if event_type not in samples:
        raise KeyError(f"unknown event {event_type!r}; known: {', '.join(EVENT_MODELS)}")
    return samples[event_type]
