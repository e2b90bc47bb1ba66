"""Backfill from a real localstripe into a real SQLite database: counts, resume after a crash,
page atomicity, and webhooks racing the sync."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import stripe
from typer.testing import CliRunner

from billops.domain import Customer, Invoice, InvoiceStatus
from billops.errors import InputError
from billops.mirror import Mirror
from billops.mirror.cli import sync_app
from billops.mirror.sync import SyncProgress, sync_platform, sync_status
from billops.platforms.base import BackfillPage
from billops.platforms.stripe.client import StripePlatformClient
from billops.store import Database
from billops.store.models import SyncCursor
from support.localstripe import (
    API_KEY,
    CARD_OK,
    create_customer_with_card,
    create_open_invoice,
    create_plan,
    create_subscription,
)
from support.recording_proxy import RecordingProxy

pytestmark = pytest.mark.slow

EXPECTED = {"customers": 3, "subscriptions": 3, "invoices": 4, "payment_attempts": 4, "payment_methods": 3}
TABLES = {
    "customers": "customers",
    "subscriptions": "subscriptions",
    "invoices": "invoices",
    "payment_attempts": "payment_attempts",
    "payment_methods": "payment_methods",
}


@dataclass
class Seeded:
    customers: list[str]
    invoices: list[str]


@pytest.fixture
def seeded(sdk: stripe.StripeClient) -> Seeded:
    """3 customers with a subscription each (2 declining cards: open invoices; 1 good card: paid),
    plus one more declined invoice for the first customer: 4 invoices, 4 charges, 3 cards."""
    plan = create_plan(sdk)
    customers, invoices = [], []
    for i, card in enumerate(["4000000000000341", "4000000000000341", CARD_OK]):
        c = create_customer_with_card(sdk, card=card, email=f"c{i}@example.com")
        _, inv = create_subscription(sdk, c.customer_id, plan)
        customers.append(c.customer_id)
        invoices.append(inv)
    invoices.append(create_open_invoice(sdk, customers[0]))
    return Seeded(customers, invoices)


def mirror_counts(db: Database) -> dict[str, int]:
    with db.session() as s:
        counts = Mirror(s).counts()
    return {resource: counts[table] for resource, table in TABLES.items()}


def cursors(db: Database) -> dict[str, SyncCursor]:
    return sync_status(db, "stripe")


def test_full_sync_then_skip_then_restart(db: Database, client: StripePlatformClient, seeded: Seeded) -> None:
    seen: list[SyncProgress] = []
    counts = sync_platform(db, client, page_size=2, progress=seen.append)

    assert counts == EXPECTED
    assert mirror_counts(db) == EXPECTED
    assert all(c.done and c.cursor is None for c in cursors(db).values())
    assert {r: c.count for r, c in cursors(db).items()} == EXPECTED
    assert [p.resource for p in seen if p.done] == list(EXPECTED)

    with db.session() as s:
        mirror = Mirror(s)
        inv = mirror.get(Invoice, "stripe", seeded.invoices[0])
        assert inv is not None and inv.status == InvoiceStatus.open
        paid = mirror.get(Invoice, "stripe", seeded.invoices[2])
        assert paid is not None and paid.status == InvoiceStatus.paid
        attempts = mirror.attempts_for_invoice("stripe", seeded.invoices[0])
        assert [a.outcome for a in attempts] == ["failed"]
        assert attempts[0].decline is not None
        defaults = [pm for pm in mirror.payment_methods("stripe", seeded.customers[0]) if pm.is_default]
        assert len(defaults) == 1
        source = s.scalar(sa.select(sa.text("source")).select_from(sa.text("customers")).limit(1))
        assert source == "sync"

    # Everything is done: a second run skips all resources.
    seen.clear()
    assert sync_platform(db, client, page_size=2, progress=seen.append) == dict.fromkeys(EXPECTED, 0)
    assert all(p.skipped for p in seen)

    # A restart syncs again, without duplicates.
    assert sync_platform(db, client, page_size=50, restart=True) == EXPECTED
    assert mirror_counts(db) == EXPECTED


def test_resumes_after_a_crash_mid_resource(
    db: Database, client: StripePlatformClient, proxy: RecordingProxy, seeded: Seeded
) -> None:
    class Crash(Exception):
        pass

    def crash_after_second_invoice_page(p: SyncProgress) -> None:
        if p.resource == "invoices" and p.run_items == 2:
            raise Crash

    with pytest.raises(Crash):
        sync_platform(db, client, page_size=1, progress=crash_after_second_invoice_page)

    state = cursors(db)
    assert state["customers"].done and state["subscriptions"].done
    assert not state["invoices"].done and state["invoices"].count == 2
    stopped_after = state["invoices"].cursor
    assert stopped_after is not None
    assert "payment_attempts" not in state
    assert mirror_counts(db)["invoices"] == 2

    proxy.clear()
    counts = sync_platform(db, client, page_size=1)

    assert counts == {**EXPECTED, "customers": 0, "subscriptions": 0, "invoices": 2}
    assert mirror_counts(db) == EXPECTED
    assert {r: c.count for r, c in cursors(db).items()} == EXPECTED
    assert proxy.find("GET", r"^/v1/customers$") != []  # payment_methods pages over customers
    first_invoice_list = proxy.find("GET", r"^/v1/invoices$")[0]
    assert first_invoice_list.query["starting_after"] == [stopped_after]


class _BrokenPage:
    """Wraps the real client; the second customers page holds an object the mirror cannot store."""

    def __init__(self, inner: StripePlatformClient) -> None:
        self.inner = inner
        self.platform = inner.platform
        self.capabilities = inner.capabilities

    def backfill_resources(self) -> list[str]:
        return self.inner.backfill_resources()

    def backfill_page(self, resource: str, cursor: str | None, page_size: int) -> BackfillPage:
        page = self.inner.backfill_page(resource, cursor, page_size)
        if cursor is not None:
            page.items.append(object())  # type: ignore[arg-type]
        return page


def test_a_page_is_stored_whole_or_not_at_all(
    db: Database, client: StripePlatformClient, seeded: Seeded
) -> None:
    with pytest.raises((KeyError, TypeError)):  # the mirror refuses a non-billing object
        sync_platform(db, _BrokenPage(client), page_size=2, resources=["customers"])  # type: ignore[arg-type]
    state = cursors(db)["customers"]
    assert state.count == 2 and not state.done
    assert mirror_counts(db)["customers"] == 2  # the first page; nothing of the broken second one

    assert sync_platform(db, client, page_size=2, resources=["customers"]) == {"customers": 1}
    assert mirror_counts(db)["customers"] == 3


def test_webhook_newer_than_the_sync_wins_and_a_stale_one_does_not(
    db: Database, client: StripePlatformClient, seeded: Seeded
) -> None:
    sync_platform(db, client, resources=["invoices"])
    invoice_id = seeded.invoices[0]
    with db.session() as s:
        synced = Mirror(s).get(Invoice, "stripe", invoice_id)
    assert synced is not None and synced.status == InvoiceStatus.open

    # A stale webhook (a change from before the sync read the invoice) must not regress it.
    with db.session() as s:
        stale = synced.model_copy(update={"status": InvoiceStatus.void})
        assert not Mirror(s).upsert(stale, source_time=datetime.now(UTC) - timedelta(hours=1))

    # A webhook newer than the sync wins, and a later sync does not overwrite it.
    with db.session() as s:
        newer = synced.model_copy(update={"status": InvoiceStatus.paid})
        assert Mirror(s).upsert(newer, source_time=datetime.now(UTC) + timedelta(minutes=5))
    sync_platform(db, client, resources=["invoices"], restart=True)
    with db.session() as s:
        got = Mirror(s).get(Invoice, "stripe", invoice_id)
    assert got is not None and got.status == InvoiceStatus.paid


def test_unknown_resource_is_refused(db: Database, client: StripePlatformClient) -> None:
    with pytest.raises(InputError, match="refunds"):
        sync_platform(db, client, resources=["customers", "refunds"])
    assert cursors(db) == {}


# ---------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("BILLOPS_STRIPE_API_KEY", "BILLOPS_STRIPE_API_BASE", "BILLOPS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BILLOPS_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_cli_without_a_key_is_a_clear_error(cli_env: Path) -> None:
    result = CliRunner().invoke(sync_app, ["stripe"])
    assert result.exit_code == 2
    assert "no stripe API credentials configured (BILLOPS_STRIPE_API_KEY)" in " ".join(result.output.split())
    assert not (cli_env / "data" / "billops.db").exists()


def test_cli_refuses_unknown_resources(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLOPS_STRIPE_API_KEY", API_KEY)
    result = CliRunner().invoke(sync_app, ["stripe", "--only", "customers,refunds"])
    assert result.exit_code == 2
    assert "refunds" in result.output


def test_cli_syncs_and_resumes(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, stripe_url: str, seeded: Seeded
) -> None:
    monkeypatch.setenv("BILLOPS_STRIPE_API_KEY", API_KEY)
    monkeypatch.setenv("BILLOPS_STRIPE_API_BASE", stripe_url)
    runner = CliRunner()

    first = runner.invoke(sync_app, ["stripe", "--page-size", "1", "--only", "customers,invoices"])
    assert first.exit_code == 0, first.output
    assert "Stripe sync" in first.output and "customers" in first.output

    db = Database(f"sqlite:///{cli_env / 'data' / 'billops.db'}")
    try:
        assert mirror_counts(db)["customers"] == 3 and mirror_counts(db)["invoices"] == 4
        with db.session() as s:
            assert Mirror(s).get(Customer, "stripe", seeded.customers[0]) is not None
        again = runner.invoke(sync_app, ["stripe", "--only", "customers"])
        assert again.exit_code == 0 and "done earlier" in again.output
        restarted = runner.invoke(sync_app, ["stripe", "--only", "customers", "--restart"])
        assert restarted.exit_code == 0
        assert mirror_counts(db)["customers"] == 3
    finally:
        db.dispose()
