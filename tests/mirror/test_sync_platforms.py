"""`billops sync chargebee|recurly|zuora` through the CLI against each platform's local fake API: every
resource is backfilled page by page into the mirror, a second run skips what is done, and a platform
without credentials is a clear error that writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from billops.mirror.cli import sync_app
from billops.store import Database
from billops.store.models import CustomerRow, InvoiceRow, PaymentAttemptRow, PaymentMethodRow, SubscriptionRow

ROWS = {
    "customers": CustomerRow,
    "subscriptions": SubscriptionRow,
    "invoices": InvoiceRow,
    "payment_attempts": PaymentAttemptRow,
    "payment_methods": PaymentMethodRow,
}


def chargebee(stack: ExitStack, env: dict[str, str]) -> dict[str, int]:
    from support.chargebee_api import FakeChargebeeAPI, load_fixture

    api = stack.enter_context(FakeChargebeeAPI())
    for name in ("payment_failed_insufficient_funds", "payment_failed_mastercard_mac03", "payment_succeeded"):
        api.seed_event(load_fixture(name))
    env.update(
        BILLOPS_CHARGEBEE_SITE=api.site,
        BILLOPS_CHARGEBEE_API_KEY=api.api_key,
        BILLOPS_CHARGEBEE_API_URL=api.url,
    )
    return {"customers": len(api.store["customers"]), "invoices": len(api.store["invoices"])}


def recurly(stack: ExitStack, env: dict[str, str]) -> dict[str, int]:
    from support.recurly_api import FakeRecurlyAPI

    api = stack.enter_context(FakeRecurlyAPI())
    api.seed_fixtures()
    env.update(BILLOPS_RECURLY_API_KEY=api.api_key, BILLOPS_RECURLY_API_URL=api.url)
    charges = [
        i for i in api.store["invoices"].values() if i.get("type") == "charge"
    ]  # credit invoices are not
    return {"customers": len(api.store["accounts"]), "invoices": len(charges)}  # payment requests: not synced


def zuora(stack: ExitStack, env: dict[str, str]) -> dict[str, int]:
    from support.zuora_api import FakeZuoraAPI

    api = stack.enter_context(FakeZuoraAPI())
    for i in range(3):
        api.add_account(f"A{i}", default_payment_method=f"PM{i}")
        api.add_payment_method(f"PM{i}", f"A{i}")
        api.add_invoice(f"INV{i}", f"A{i}", amount="49.99")
        api.add_payment(
            f"P{i}", f"A{i}", amount="49.99", created=datetime(2026, 11, 2, tzinfo=UTC), invoice_id=f"INV{i}"
        )
    env.update(
        BILLOPS_ZUORA_API_URL=api.url,
        BILLOPS_ZUORA_CLIENT_ID=api.client_id,
        BILLOPS_ZUORA_CLIENT_SECRET=api.client_secret,
    )
    return {"customers": 3, "invoices": 3}


SEEDERS = {"chargebee": chargebee, "recurly": recurly, "zuora": zuora}


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BILLOPS_DATABASE_URL", raising=False)
    monkeypatch.setenv("BILLOPS_DATA_DIR", str(tmp_path / "data"))
    yield tmp_path


def counts(db_path: Path, platform: str) -> dict[str, int]:
    db = Database(f"sqlite:///{db_path}")
    try:
        with db.reader() as s:
            return {
                name: s.scalar(sa.select(sa.func.count()).select_from(row).where(row.platform == platform))
                or 0
                for name, row in ROWS.items()
            }
    finally:
        db.dispose()


@pytest.mark.parametrize("platform", sorted(SEEDERS))
def test_sync_backfills_every_resource_and_resumes(
    platform: str, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ExitStack() as stack:
        env: dict[str, str] = {}
        expected = SEEDERS[platform](stack, env)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        runner = CliRunner()
        first = runner.invoke(sync_app, [platform, "--page-size", "1"])
        assert first.exit_code == 0, first.output
        assert f"{platform.capitalize()} sync" in first.output
        got = counts(cli_env / "data" / "billops.db", platform)
        assert got["customers"] == expected["customers"] and got["invoices"] == expected["invoices"], got
        assert got["payment_attempts"] > 0 and got["payment_methods"] > 0, got
        again = runner.invoke(sync_app, [platform, "--only", "customers"])
        assert again.exit_code == 0 and "done earlier" in again.output, again.output


@pytest.mark.parametrize("platform", sorted(SEEDERS))
def test_sync_without_credentials_is_a_clear_error(platform: str, cli_env: Path, monkeypatch: Any) -> None:
    for name in (
        "BILLOPS_CHARGEBEE_SITE",
        "BILLOPS_CHARGEBEE_API_KEY",
        "BILLOPS_RECURLY_API_KEY",
        "BILLOPS_ZUORA_API_URL",
        "BILLOPS_ZUORA_CLIENT_ID",
        "BILLOPS_ZUORA_CLIENT_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(sync_app, [platform])
    assert result.exit_code == 2
    assert f"no {platform} API credentials configured" in " ".join(result.output.split())
    assert not (cli_env / "data" / "billops.db").exists()
