"""Settings shapes for the channels (the fields themselves are on `config.Settings`) and the policy's
contact rules. Kept here so config.py stays a list of fields."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from billops.governance.schema import hhmm

OUTBOUND_EVENTS = ("recovery.escalated", "recovery.finished", "message.failed", "workflow.failed")
OutboundEvent = Literal["recovery.escalated", "recovery.finished", "message.failed", "workflow.failed"]


class OutboundWebhook(BaseModel):
    """One receiver of outbound webhooks (a ticketing or CRM system)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=60, description="A label for logs and the audit log.")
    url: str
    secret: SecretStr = Field(description="Standard Webhooks secret: 'whsec_' + base64 of 24–64 bytes.")
    events: list[OutboundEvent] = Field(
        default_factory=lambda: list(OUTBOUND_EVENTS)  # type: ignore[arg-type]
    )

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s):// URL")
        return v

    @field_validator("secret")
    @classmethod
    def _whsec(cls, v: SecretStr) -> SecretStr:
        import base64

        raw = v.get_secret_value()
        if not raw.startswith("whsec_"):
            raise ValueError("must start with 'whsec_' (generate one with `billops webhooks secret`)")
        try:
            key = base64.b64decode(raw[6:], validate=True)
        except ValueError as exc:
            raise ValueError("the part after 'whsec_' is not base64") from exc
        if not 24 <= len(key) <= 64:
            raise ValueError("the key must be 24 to 64 bytes")
        return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FrequencyCap(_Strict):
    max_messages: int = Field(ge=1)
    per_hours: float = Field(gt=0, le=24 * 92)


class Night(_Strict):
    start: str = "21:00"
    end: str = "08:00"

    _hhmm = field_validator("start", "end")(classmethod(lambda cls, v: hhmm(v)))

    @model_validator(mode="after")
    def _not_empty(self) -> Night:
        if self.start == self.end:
            raise ValueError("the SMS night cannot be empty (start = end): SMS never goes out at night")
        return self


class ContactPolicy(_Strict):
    """Who may be contacted, how often and when (docs/channels.md). Opt-outs are data, not policy."""

    frequency_caps: dict[Literal["email", "sms"], FrequencyCap] = Field(
        default_factory=lambda: {  # type: ignore[arg-type]
            "email": FrequencyCap(max_messages=3, per_hours=72),
            "sms": FrequencyCap(max_messages=2, per_hours=168),
        },
        description="Most messages one customer gets per channel in a rolling window; more are dropped.",
    )
    sms_night: Night = Field(
        default_factory=Night,
        description="SMS never goes out between these local times, whatever quiet_hours says.",
    )
    company_name: str | None = Field(default=None, max_length=80, description="Signs SMS and emails.")
    unsubscribe_mailto: str | None = Field(
        default=None, description="Optional mailto: address for List-Unsubscribe beside the one-click URL."
    )
