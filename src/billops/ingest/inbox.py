"""The inbox: store a verified event exactly once and enqueue its workflow in the same transaction.

The inbox row and the DBOS queue entry are written together (DBOS's tables live in the same
database), so an accepted event always has its workflow and a rejected one leaves nothing behind.
A redelivery hits the (platform, event_id) unique key: it is counted and answered, nothing starts.
An event of a type the platform's normalizer does not know is stored (`start=False`, answered
"stored") and starts no workflow; its row keeps the workflow id it would have had.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from billops.domain import CanonicalEvent
from billops.runtime import EVENTS_QUEUE, Runtime
from billops.store.models import InboxEvent


@dataclass(frozen=True)
class Accepted:
    status: str  # "accepted" | "stored" (an unknown type: no workflow) | "duplicate"
    event_id: str
    workflow_id: str | None


def workflow_id_for(platform: str, event_id: str) -> str:
    return f"{platform}:{event_id}"


def redelivered(rt: Runtime, platform: str, event_id: str) -> Accepted | None:
    """For events that need an API read before they are stored: a redelivery of a stored event is
    counted and answered as a duplicate without that read; None when the event is new."""
    with rt.db.reader() as r:  # the common case, a new event, takes no write lock
        seen = r.scalar(
            sa.select(InboxEvent.id).where(InboxEvent.platform == platform, InboxEvent.event_id == event_id)
        )
    if seen is None:
        return None
    return _duplicate(rt, platform, event_id)


def accept(
    rt: Runtime, *, event: CanonicalEvent, raw: bytes, endpoint: str, trace_id: str, start: bool = True
) -> Accepted:
    """Store `event` once; with `start`, enqueue its workflow in the same transaction. `raw` is the
    body as received, already checked to be strict UTF-8 (billops.ingest.body)."""
    wf = workflow_id_for(event.platform, event.event_id)
    try:
        with rt.db.session() as s:
            row = InboxEvent(
                platform=event.platform,
                event_id=event.event_id,
                event_type=event.event_type,
                endpoint=endpoint,
                kind=event.kind.value,
                occurred_at=event.occurred_at,
                livemode=event.livemode,
                payload=raw.decode("utf-8"),
                canonical=json.loads(event.model_dump_json()),
                workflow_id=wf,
                trace_id=trace_id,
            )
            s.add(row)
            s.flush()
            if start:
                rt.dbos_client().enqueue_in_transaction(
                    s.connection(),
                    {
                        "queue_name": EVENTS_QUEUE,
                        "workflow_name": "process_event",
                        "workflow_id": wf,
                        "app_version": rt.settings.workflow_version,
                    },
                    row.id,
                )
        if not start:
            return Accepted("stored", event.event_id, None)
        return Accepted("accepted", event.event_id, wf)
    except IntegrityError:
        return _duplicate(rt, event.platform, event.event_id)


def _duplicate(rt: Runtime, platform: str, event_id: str) -> Accepted:
    """Count one more delivery of a stored event; it starts nothing."""
    with rt.db.session() as s:
        s.execute(
            sa.update(InboxEvent)
            .where(InboxEvent.platform == platform, InboxEvent.event_id == event_id)
            .values(deliveries=InboxEvent.deliveries + 1, last_delivery_at=datetime.now(UTC))
        )
    return Accepted("duplicate", event_id, workflow_id_for(platform, event_id))
