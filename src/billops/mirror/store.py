"""Write and read the mirror. An upsert only applies when its source time is not older than what is
stored, so webhooks arriving out of order (or a backfill racing webhooks) never regress an object."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billops.domain import (
    CanonicalEvent,
    Customer,
    Invoice,
    PaymentAttempt,
    PaymentMethod,
    Subscription,
)
from billops.store.models import (
    CustomerRow,
    InvoiceRow,
    MirrorMixin,
    PaymentAttemptRow,
    PaymentMethodRow,
    SubscriptionRow,
)

BillingObject = Customer | Subscription | Invoice | PaymentAttempt | PaymentMethod
T = TypeVar("T", Customer, Subscription, Invoice, PaymentAttempt, PaymentMethod)

_ROW: dict[type, type[MirrorMixin]] = {
    Customer: CustomerRow,
    Subscription: SubscriptionRow,
    Invoice: InvoiceRow,
    PaymentAttempt: PaymentAttemptRow,
    PaymentMethod: PaymentMethodRow,
}


def _columns(obj: BillingObject) -> dict[str, Any]:
    if isinstance(obj, Customer):
        return {"email": obj.email, "created_at": obj.created_at}
    if isinstance(obj, Subscription):
        return {"customer_id": obj.customer_id, "status": obj.status}
    if isinstance(obj, Invoice):
        return {
            "customer_id": obj.customer_id,
            "subscription_id": obj.subscription_id,
            "status": obj.status.value,
            "amount_due": obj.amount_due,
            "amount_remaining": obj.amount_remaining,
            "currency": obj.currency,
            "created_at": obj.created_at,
            "payment_intent_id": obj.payment_intent_id,
        }
    if isinstance(obj, PaymentAttempt):
        return {
            "invoice_id": obj.invoice_id,
            "customer_id": obj.customer_id,
            "attempted_at": obj.attempted_at,
            "outcome": obj.outcome,
            "amount": obj.amount,
            "currency": obj.currency,
            "decline_code": obj.decline.code if obj.decline else None,
            "decline_category": obj.decline.category.value if obj.decline else None,
            "card_fingerprint": obj.card.fingerprint if obj.card else None,
            "payment_intent_id": obj.payment_intent_id,
        }
    if isinstance(obj, PaymentMethod):
        return {"customer_id": obj.customer_id}
    raise TypeError(f"not a billing object: {type(obj).__name__}")


def _merge_missing(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """Keep fields the newer payload does not carry (e.g. a thin event without card details)."""
    merged = dict(old)
    for k, v in new.items():
        if v is None and old.get(k) is not None:
            continue
        if isinstance(v, dict) and isinstance(old.get(k), dict):
            merged[k] = _merge_missing(v, old[k])
        else:
            merged[k] = v
    return merged


class Mirror:
    def __init__(self, session: Session) -> None:
        self.s = session

    def upsert(self, obj: BillingObject, *, source_time: datetime, source: str = "webhook") -> bool:
        """Insert or update; returns False when the stored copy is newer (nothing changed)."""
        model = _ROW[type(obj)]
        row = self.s.get(model, (obj.platform, obj.id))
        data = obj.model_dump(mode="json")
        if row is None:
            row = model(
                platform=obj.platform,
                id=obj.id,
                data=data,
                source_updated_at=source_time,
                source=source,
                **_columns(obj),
            )
            if self.s.get_bind().dialect.name != "postgresql":
                self.s.add(row)  # SQLite: writers are serialized (BEGIN IMMEDIATE), no race here
                return True
            # PostgreSQL: another transaction (a webhook and a retry step, say) may insert the same
            # object at the same moment. Insert under a savepoint; if it lost, update the winner's row.
            try:
                with self.s.begin_nested():
                    self.s.add(row)
                return True
            except IntegrityError:
                row = self.s.get(model, (obj.platform, obj.id), populate_existing=True)
                if row is None:
                    raise
        stored_version = row.data.get("source_version")
        if obj.source_version is not None and stored_version is not None:
            # The platform versions the object (Chargebee resource_version): that order wins over
            # event times, which Chargebee's redeliveries (for up to 2 days) do not keep.
            if obj.source_version < stored_version:
                return False
        elif source_time < row.source_updated_at:
            return False
        merged = _merge_missing(data, row.data)
        merged_obj = type(obj).model_validate(merged)
        row.data = merged_obj.model_dump(mode="json")
        for k, v in _columns(merged_obj).items():
            setattr(row, k, v)
        row.source_updated_at = max(source_time, row.source_updated_at)
        row.source = source
        return True

    def apply_event(self, event: CanonicalEvent) -> list[str]:
        """Apply every object an event carries; returns what changed, e.g. ['invoice in_1']."""
        changed = []
        if event.attempt is not None and event.attempt.invoice_id is None and event.attempt.payment_intent_id:
            inv_id = self.s.scalar(
                sa.select(InvoiceRow.id).where(
                    InvoiceRow.platform == event.platform,
                    InvoiceRow.payment_intent_id == event.attempt.payment_intent_id,
                )
            )
            if inv_id:
                event.attempt.invoice_id = inv_id
        for obj in (event.customer, event.subscription, event.payment_method, event.invoice, event.attempt):
            if obj is not None and self.upsert(obj, source_time=event.occurred_at):
                changed.append(f"{type(obj).__name__.lower()} {obj.id}")
        if event.payment_method is not None and event.event_type.endswith(".detached"):
            row = self.s.get(PaymentMethodRow, (event.platform, event.payment_method.id))
            if row is not None:
                row.detached = True
        if event.invoice is not None and event.invoice.payment_intent_id:
            for row in self.s.scalars(
                sa.select(PaymentAttemptRow).where(
                    PaymentAttemptRow.platform == event.platform,
                    PaymentAttemptRow.payment_intent_id == event.invoice.payment_intent_id,
                    PaymentAttemptRow.invoice_id.is_(None),
                )
            ):
                row.invoice_id = event.invoice.id
                row.data = {**row.data, "invoice_id": event.invoice.id}
        return changed

    # ---- reads
    def get(self, kind: type[T], platform: str, obj_id: str) -> T | None:
        row = self.s.get(_ROW[kind], (platform, obj_id))
        return kind.model_validate(row.data) if row else None

    def attempts_for_invoice(
        self, platform: str, invoice_id: str, payment_intent_id: str | None = None
    ) -> list[PaymentAttempt]:
        cond = PaymentAttemptRow.invoice_id == invoice_id
        if payment_intent_id:
            cond = sa.or_(cond, PaymentAttemptRow.payment_intent_id == payment_intent_id)
        rows = self.s.scalars(
            sa.select(PaymentAttemptRow)
            .where(PaymentAttemptRow.platform == platform, cond)
            .order_by(PaymentAttemptRow.attempted_at)
        )
        return [PaymentAttempt.model_validate(r.data) for r in rows]

    def attempts_for_customer(
        self, platform: str, customer_id: str, *, before: datetime | None = None, days: int = 365
    ) -> list[PaymentAttempt]:
        q = sa.select(PaymentAttemptRow).where(
            PaymentAttemptRow.platform == platform, PaymentAttemptRow.customer_id == customer_id
        )
        if before is not None:
            q = q.where(
                PaymentAttemptRow.attempted_at <= before,
                PaymentAttemptRow.attempted_at >= before - timedelta(days=days),
            )
        return [
            PaymentAttempt.model_validate(r.data)
            for r in self.s.scalars(q.order_by(PaymentAttemptRow.attempted_at))
        ]

    def attempts_for_card(self, platform: str, fingerprint: str, since: datetime) -> list[PaymentAttempt]:
        rows = self.s.scalars(
            sa.select(PaymentAttemptRow).where(
                PaymentAttemptRow.platform == platform,
                PaymentAttemptRow.card_fingerprint == fingerprint,
                PaymentAttemptRow.attempted_at >= since,
            )
        )
        return [PaymentAttempt.model_validate(r.data) for r in rows]

    def payment_methods(self, platform: str, customer_id: str) -> list[PaymentMethod]:
        rows = self.s.scalars(
            sa.select(PaymentMethodRow).where(
                PaymentMethodRow.platform == platform,
                PaymentMethodRow.customer_id == customer_id,
                PaymentMethodRow.detached.is_(False),
            )
        )
        return [PaymentMethod.model_validate(r.data) for r in rows]

    def counts(self) -> dict[str, int]:
        return {
            m.__tablename__: self.s.scalar(sa.select(sa.func.count()).select_from(m)) or 0  # type: ignore[attr-defined]
            for m in _ROW.values()
        }

    # ---- bulk writes
    def upsert_many(
        self,
        items: Iterable[tuple[BillingObject, datetime]],
        *,
        source: str = "webhook",
        chunk_size: int = 1000,
    ) -> dict[str, int]:
        """`upsert` for many (object, source time) pairs, with the same rule: a stored copy with a newer
        source time is left alone, otherwise the object is merged into it. Per chunk, one SELECT finds
        the stored copies and the new objects go in with one multi-row INSERT, so a large import costs
        a few statements per thousand objects. Runs inside the caller's transaction (nothing is
        committed here). Returns counts: inserted, updated, unchanged (the stored copy was newer)."""
        counts = {"inserted": 0, "updated": 0, "unchanged": 0}
        chunk: list[tuple[BillingObject, datetime]] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= chunk_size:
                self._upsert_chunk(chunk, source, counts)
                chunk = []
        if chunk:
            self._upsert_chunk(chunk, source, counts)
        return counts

    def _upsert_chunk(
        self, chunk: list[tuple[BillingObject, datetime]], source: str, counts: dict[str, int]
    ) -> None:
        by_model: dict[type[MirrorMixin], list[tuple[BillingObject, datetime]]] = {}
        for obj, at in chunk:
            by_model.setdefault(_ROW[type(obj)], []).append((obj, at))
        for model, items in by_model.items():
            platforms = {obj.platform for obj, _ in items}
            ids = {obj.id for obj, _ in items}
            stored = {
                (r.platform, r.id): r
                for r in self.s.scalars(
                    sa.select(model).where(model.platform.in_(platforms), model.id.in_(ids))
                )
            }
            new: dict[tuple[str, str], dict[str, Any]] = {}
            for obj, at in items:
                key = (obj.platform, obj.id)
                if key in stored:
                    counts["updated" if self.upsert(obj, source_time=at, source=source) else "unchanged"] += 1
                    continue
                data = obj.model_dump(mode="json")
                earlier = new.get(key)
                if earlier is not None:  # the same object twice in one chunk: as two upserts would do
                    if at < earlier["source_updated_at"]:
                        counts["unchanged"] += 1
                        continue
                    obj = type(obj).model_validate(_merge_missing(data, earlier["data"]))
                    data = obj.model_dump(mode="json")
                    counts["updated"] += 1
                else:
                    counts["inserted"] += 1
                new[key] = {
                    "platform": obj.platform,
                    "id": obj.id,
                    "data": data,
                    "source_updated_at": at,
                    "source": source,
                    "updated_at": datetime.now(UTC),
                    **_columns(obj),
                }
            if new:  # Core executemany: the ORM's bulk path would group rows into many statements
                table: sa.Table = model.__table__  # type: ignore[attr-defined]
                self.s.connection().execute(table.insert(), list(new.values()))
        self.s.flush()
