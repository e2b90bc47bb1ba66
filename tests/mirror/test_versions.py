"""Platform object versions (Chargebee resource_version) order mirror updates, not event times:
Chargebee redelivers for up to two days, so an old event can arrive after a newer one."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from billops.domain import Invoice
from billops.mirror import Mirror
from billops.platforms.chargebee.normalize import normalize_event
from billops.store import Database

FIXTURES = Path(__file__).parents[1] / "fixtures" / "chargebee"


def _event(version: int, status: str, occurred_shift: int) -> dict:
    raw = json.loads((FIXTURES / "payment_failed_insufficient_funds.json").read_text())
    raw["id"] = f"ev_v{version}"
    raw["occurred_at"] += occurred_shift
    inv = raw["content"]["invoice"]
    inv["resource_version"] = version
    inv["status"] = status
    if status == "paid":
        inv["amount_due"] = 0
        inv["amount_paid"] = inv["total"]
    return raw


def test_newer_resource_version_wins_whatever_the_delivery_order(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/m.db")
    db.migrate()
    newer = normalize_event(_event(1793700000500, "paid", occurred_shift=0))
    # An older version of the invoice whose event claims a *later* time (a redelivery, a clock skew):
    older = normalize_event(_event(1793700000100, "payment_due", occurred_shift=3600))
    assert newer.invoice is not None and older.invoice is not None
    invoice_id = newer.invoice.id
    with db.session() as s:
        Mirror(s).apply_event(newer)
    with db.session() as s:
        changed = Mirror(s).apply_event(older)
        assert f"invoice {invoice_id}" not in changed
        stored = Mirror(s).get(Invoice, "chargebee", invoice_id)
    assert stored is not None
    assert stored.status.value == "paid" and stored.source_version == 1793700000500


def test_unversioned_objects_still_order_by_event_time(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/m.db")
    db.migrate()
    newer = normalize_event(_event(1, "paid", 0))
    older = normalize_event(_event(1, "payment_due", 0))
    assert newer.invoice is not None and older.invoice is not None
    newer.invoice.source_version = None
    older.invoice.source_version = None
    with db.session() as s:
        m = Mirror(s)
        assert m.upsert(newer.invoice, source_time=newer.occurred_at)
        assert not m.upsert(older.invoice, source_time=newer.occurred_at - timedelta(seconds=1))
        stored = m.get(Invoice, "chargebee", newer.invoice.id)
    assert stored is not None and stored.status.value == "paid"
