"""The daily LLM token budget: input + output tokens of every draft, summed per UTC day (LlmUsage)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billops.store.models import LlmUsage


def day_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def tokens_used_today(session: Session, now: datetime) -> int:
    total = session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(LlmUsage.input_tokens + LlmUsage.output_tokens), 0)).where(
            LlmUsage.day == day_of(now)
        )
    )
    return int(total or 0)


def record_usage(
    session: Session,
    *,
    now: datetime,
    workflow_id: str | None,
    kind: str,
    model: str,
    prompt_version: str,
    input_tokens: int,
    output_tokens: int,
    requests: int,
) -> None:
    session.add(
        LlmUsage(
            day=day_of(now),
            at=now,
            workflow_id=workflow_id,
            kind=kind,
            model=model,
            prompt_version=prompt_version,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            requests=requests,
        )
    )
