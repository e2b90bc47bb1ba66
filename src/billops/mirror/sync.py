"""Backfill the mirror from a platform's API, resumably.

For each resource (customers, subscriptions, invoices, payment attempts, payment methods) the sync
reads pages through `PlatformClient.backfill_page` and, per page, upserts every object and saves the
resume cursor and count in ONE transaction: a crash or Ctrl-C never loses a stored page nor stores
half of one, and the next run continues after the last stored page. A resource that finished is
skipped on later runs unless `restart=True`.

Source time: an upsert only applies when its source time is not older than the stored copy's
(`Mirror.upsert`). Stripe objects carry only their creation time, which says nothing about when they
last changed, so a page is stamped with the moment it was requested (floored to the second and less a
small clock margin, because Stripe event times are whole seconds from Stripe's clock): a webhook for a
change after that moment still wins, while a stale webhook (a change the snapshot already contains,
delivered late) no longer overwrites the fresher snapshot. Objects whose model carries a modification
time (`updated_at`) are stamped with it instead, when it is newer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from billops.errors import InputError, PlatformError
from billops.mirror.store import BillingObject, Mirror
from billops.platforms.base import PlatformClient
from billops.store import Database
from billops.store.models import SyncCursor

CLOCK_MARGIN = timedelta(seconds=2)


@dataclass(frozen=True)
class SyncProgress:
    """Reported after every stored page (and once for a skipped resource)."""

    platform: str
    resource: str
    page_items: int  # objects in the page just stored (0 for a skip)
    run_items: int  # objects stored for this resource by this run
    total: int  # objects stored for this resource since its sync (re)started, across runs
    done: bool  # the resource is complete
    skipped: bool = False  # already complete before this run (use restart to sync it again)


ProgressCallback = Callable[[SyncProgress], None]


def snapshot_time(now: datetime | None = None, margin: timedelta = CLOCK_MARGIN) -> datetime:
    """The source time to stamp objects read from an API call started at `now`."""
    now = now or datetime.now(UTC)
    return now.replace(microsecond=0) - margin


def object_time(obj: BillingObject, snapshot: datetime) -> datetime:
    """An object's own modification time when its model has one and it is newer, else the snapshot."""
    updated = getattr(obj, "updated_at", None)
    if isinstance(updated, datetime) and updated.tzinfo is not None and updated > snapshot:
        return updated
    return snapshot


def _cursor_row(s: sa.orm.Session, platform: str, resource: str) -> SyncCursor:
    row = s.get(SyncCursor, (platform, resource))
    if row is None:
        row = SyncCursor(platform=platform, resource=resource, cursor=None, done=False, count=0)
        s.add(row)
    return row


def sync_status(db: Database, platform: str) -> dict[str, SyncCursor]:
    """The stored cursors of a platform, by resource."""
    with db.session() as s:
        rows = s.scalars(sa.select(SyncCursor).where(SyncCursor.platform == platform)).all()
        return {r.resource: r for r in rows}


def sync_platform(
    db: Database,
    client: PlatformClient,
    *,
    page_size: int = 100,
    resources: Sequence[str] | None = None,
    restart: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, int]:
    """Backfill `resources` (default: all the client offers), resuming from the stored cursors.

    Returns, per resource, how many objects this run stored (0 for a resource that was already
    complete). `restart` forgets the stored cursors of the selected resources first. An exception
    (from the platform or from `progress`) stops the sync; everything stored before it is kept."""
    platform = client.platform
    if not client.capabilities.backfill:
        raise InputError(f"{platform}: this platform client cannot backfill")
    offered = client.backfill_resources()
    selected = list(offered) if resources is None else list(dict.fromkeys(resources))
    unknown = [r for r in selected if r not in offered]
    if unknown:
        raise InputError(f"{platform}: unknown resource(s) {', '.join(unknown)}; known: {', '.join(offered)}")
    if page_size < 1:
        raise InputError(f"page size must be at least 1, got {page_size}")

    if restart:
        with db.session() as s:
            for resource in selected:
                row = _cursor_row(s, platform, resource)
                row.cursor, row.done, row.count = None, False, 0

    counts: dict[str, int] = {}
    for resource in selected:
        counts[resource] = _sync_resource(db, client, resource, page_size, progress)
    return counts


def _sync_resource(
    db: Database,
    client: PlatformClient,
    resource: str,
    page_size: int,
    progress: ProgressCallback | None,
) -> int:
    platform = client.platform
    with db.session() as s:
        row = _cursor_row(s, platform, resource)
        cursor, done, total = row.cursor, row.done, row.count
    if done:
        if progress:
            progress(SyncProgress(platform, resource, 0, 0, total, done=True, skipped=True))
        return 0

    stored = 0
    while True:
        requested_at = snapshot_time()
        page = client.backfill_page(resource, cursor, page_size)
        with db.session() as s:
            mirror = Mirror(s)
            for obj in page.items:
                mirror.upsert(obj, source_time=object_time(obj, requested_at), source="sync")
            row = _cursor_row(s, platform, resource)
            row.count = (row.count or 0) + len(page.items)
            row.cursor = page.next_cursor
            row.done = page.next_cursor is None
            total = row.count
        stored += len(page.items)
        finished = page.next_cursor is None
        if progress:
            progress(SyncProgress(platform, resource, len(page.items), stored, total, done=finished))
        if finished:
            return stored
        if page.next_cursor == cursor:
            raise PlatformError(f"{platform} {resource}: the list cursor did not advance past {cursor!r}")
        cursor = page.next_cursor
