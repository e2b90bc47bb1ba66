"""`billops history import|export`: ATTEMPTS.csv into the mirror and back, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from billops.cli import app
from billops.domain import Customer, DeclineCategory, Invoice, InvoiceStatus, PaymentAttempt
from billops.mirror import Mirror
from billops.mirror.history import export_file, import_file, mirror_attempts, mirror_attempts_frame
from billops.recovery.data import ATTEMPT_COLUMNS, DataError, read_attempts
from billops.store import Database

BASE = {
    "currency": "usd",
    "card_brand": "visa",
    "card_funding": "credit",
    "card_country": "US",
    "card_exp_month": "4",
    "card_exp_year": "2028",
    "customer_timezone": "America/Chicago",
    "customer_created_at": "2024-05-01T12:00:00Z",
    "decline_code": "",
    "network_advice_code": "",
}

ROWS: list[dict[str, str]] = [
    # cus_a: a soft decline, a retry that fails with a Mastercard advice code, then a success
    {**BASE, "attempt_id": "ch_a1", "invoice_id": "in_a", "customer_id": "cus_a",
     "attempted_at": "2026-01-05T09:00:00Z", "amount": "2500", "outcome": "failed",
     "decline_code": "insufficient_funds", "card_brand": "mastercard", "card_country": "GB"},
    {**BASE, "attempt_id": "ch_a2", "invoice_id": "in_a", "customer_id": "cus_a",
     "attempted_at": "2026-01-06T09:00:00.123456+01:00", "amount": "2500", "outcome": "failed",
     "decline_code": "do_not_honor", "network_advice_code": "03", "card_brand": "mastercard",
     "card_country": "GB"},
    {**BASE, "attempt_id": "ch_a3", "invoice_id": "in_a", "customer_id": "cus_a",
     "attempted_at": "2026-01-09T09:00:00Z", "amount": "2500", "outcome": "succeeded",
     "card_brand": "mastercard", "card_country": "GB"},
    # cus_b: no card details, no timezone, no creation time, a failure without a decline code
    {**BASE, "attempt_id": "ch_b1", "invoice_id": "in_b", "customer_id": "cus_b",
     "attempted_at": "2026-01-07T23:30:00-05:00", "amount": "100000", "currency": "jpy", "outcome": "failed",
     "card_brand": "", "card_funding": "", "card_country": "", "card_exp_month": "", "card_exp_year": "",
     "customer_timezone": "", "customer_created_at": ""},
    {**BASE, "attempt_id": "ch_b2", "invoice_id": "in_b2", "customer_id": "cus_b",
     "attempted_at": "2026-02-07T10:00:00Z", "amount": "90000", "currency": "jpy", "outcome": "failed",
     "decline_code": "stolen_card", "card_brand": "amex", "card_funding": "", "card_country": "",
     "customer_timezone": "", "customer_created_at": ""},
    # cus_c: a success, same time as another attempt (ties are ordered by attempt id on export)
    {**BASE, "attempt_id": "ch_c1", "invoice_id": "in_c", "customer_id": "cus_c",
     "attempted_at": "2026-02-07T10:00:00Z", "amount": "999", "currency": "eur", "outcome": "succeeded",
     "card_funding": "prepaid", "card_exp_year": "2030", "customer_timezone": "Europe/Berlin",
     "customer_created_at": "2025-12-31T23:59:59+02:00"},
]  # fmt: skip


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=ATTEMPT_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["attempted_at", "attempt_id"], kind="stable").reset_index(drop=True)


@pytest.fixture
def history_db(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    db.migrate()
    yield db
    db.dispose()


def counts(db: Database) -> dict[str, int]:
    with db.session() as s:
        return Mirror(s).counts()


def test_import_then_export_round_trip(history_db: Database, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "ATTEMPTS.csv", ROWS)
    result = import_file(history_db, source)
    assert result.rows == 6
    assert result.counts == {
        "customers": {"inserted": 3, "updated": 0, "unchanged": 0},
        "invoices": {"inserted": 4, "updated": 0, "unchanged": 0},
        "payment_attempts": {"inserted": 6, "updated": 0, "unchanged": 0},
    }
    out = tmp_path / "export" / "ATTEMPTS.csv"
    assert export_file(history_db, out) == (6, 0)
    exported = read_attempts(out)
    pd.testing.assert_frame_equal(exported, canonical(read_attempts(source)))
    assert exported["attempt_id"].tolist() == ["ch_a1", "ch_a2", "ch_b1", "ch_a3", "ch_b2", "ch_c1"]

    frame = mirror_attempts_frame(history_db)
    pd.testing.assert_frame_equal(frame, exported)
    assert str(frame["attempted_at"].dtype) == "datetime64[ns, UTC]"
    assert str(frame["card_exp_month"].dtype) == "Int64"

    # importing the same file again changes nothing but is allowed (same source times: updated)
    again = import_file(history_db, source)
    assert again.counts["payment_attempts"] == {"inserted": 0, "updated": 6, "unchanged": 0}
    assert export_file(history_db, out) == (6, 0)
    pd.testing.assert_frame_equal(read_attempts(out), exported)


def test_imported_objects_in_the_mirror(history_db: Database, tmp_path: Path) -> None:
    import_file(history_db, write_csv(tmp_path / "a.csv", ROWS), platform="stripe")
    with history_db.session() as s:
        mirror = Mirror(s)
        attempts = mirror.attempts_for_customer("stripe", "cus_a")
        assert [a.id for a in attempts] == ["ch_a1", "ch_a2", "ch_a3"]
        first, second, third = attempts
        assert first.decline is not None and first.decline.category == DeclineCategory.soft
        assert second.decline is not None and second.decline.network_advice_code == "03"
        assert second.decline.category != DeclineCategory.soft  # MAC 03: the taxonomy tightens it
        assert second.attempted_at == datetime(2026, 1, 6, 8, 0, 0, 123456, tzinfo=UTC)
        assert third.outcome == "succeeded" and third.decline is None
        assert third.card is not None and (third.card.brand, third.card.country) == ("mastercard", "GB")
        assert mirror.attempts_for_customer("stripe", "cus_a", before=datetime(2026, 1, 6, tzinfo=UTC)) == [
            first
        ]

        b1 = mirror.get(PaymentAttempt, "stripe", "ch_b1")
        assert b1 is not None and b1.card is None and b1.decline is not None
        assert b1.decline.code == "generic_decline" and b1.decline.raw_code == ""
        stolen = mirror.get(PaymentAttempt, "stripe", "ch_b2")
        assert stolen is not None and stolen.decline is not None and stolen.decline.never_retry

        inv_a, inv_b = mirror.get(Invoice, "stripe", "in_a"), mirror.get(Invoice, "stripe", "in_b")
        assert inv_a is not None and inv_a.status == InvoiceStatus.paid and inv_a.attempt_count == 3
        assert inv_a.amount_remaining == 0 and inv_a.latest_attempt_id == "ch_a3"
        assert inv_b is not None and inv_b.status == InvoiceStatus.open and inv_b.amount_remaining == 100000
        cus_c = mirror.get(Customer, "stripe", "cus_c")
        assert cus_c is not None and cus_c.timezone == "Europe/Berlin"
        assert cus_c.created_at == datetime(2025, 12, 31, 21, 59, 59, tzinfo=UTC)
        assert mirror.get(Customer, "stripe", "cus_b") is not None
        assert mirror.attempts_for_customer("chargebee", "cus_a") == []


def test_bad_row_imports_nothing(history_db: Database, tmp_path: Path) -> None:
    import_file(history_db, write_csv(tmp_path / "good.csv", ROWS[:2]))
    before = counts(history_db)
    bad = [*ROWS, {**ROWS[0], "attempt_id": "ch_x", "customer_timezone": "Atlantis/Capital"}]
    with pytest.raises(DataError, match=r"^bad\.csv line 8, column customer_timezone: 'Atlantis/Capital'"):
        import_file(history_db, write_csv(tmp_path / "bad.csv", bad))
    assert counts(history_db) == before


def test_import_failing_midway_rolls_back(
    history_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transaction: an error after some chunks were written leaves nothing behind."""
    from billops.mirror import history

    monkeypatch.setattr(history, "CHUNK", 2)
    real = history._attempts

    def failing(df: pd.DataFrame, platform: str) -> Iterator[tuple[PaymentAttempt, datetime]]:
        for n, item in enumerate(real(df, platform)):
            if n == 4:
                raise RuntimeError("crash in the middle")
            yield item

    monkeypatch.setattr(history, "_attempts", failing)
    before = counts(history_db)
    with pytest.raises(RuntimeError, match="crash in the middle"):
        import_file(history_db, write_csv(tmp_path / "a.csv", ROWS))
    assert counts(history_db) == before


def test_import_never_regresses_newer_data(history_db: Database, tmp_path: Path) -> None:
    later = datetime(2026, 6, 1, tzinfo=UTC)
    with history_db.session() as s:
        mirror = Mirror(s)
        mirror.upsert(Customer(platform="stripe", id="cus_a", email="a@example.com"), source_time=later)
        mirror.upsert(
            Invoice(
                platform="stripe",
                id="in_b",
                customer_id="cus_b",
                status=InvoiceStatus.void,
                currency="jpy",
                amount_due=100000,
            ),
            source_time=later,
        )
    # an older webhook copy is updated, and keeps what the import does not carry (the email)
    with history_db.session() as s:
        Mirror(s).upsert(
            Customer(platform="stripe", id="cus_c", email="c@example.com"),
            source_time=datetime(2020, 1, 1, tzinfo=UTC),
        )
    result = import_file(history_db, write_csv(tmp_path / "a.csv", ROWS))
    assert result.counts["customers"] == {"inserted": 1, "updated": 1, "unchanged": 1}
    assert result.counts["invoices"] == {"inserted": 3, "updated": 0, "unchanged": 1}
    with history_db.session() as s:
        mirror = Mirror(s)
        cus_a = mirror.get(Customer, "stripe", "cus_a")
        assert cus_a is not None and cus_a.email == "a@example.com" and cus_a.timezone is None
        inv_b = mirror.get(Invoice, "stripe", "in_b")
        assert inv_b is not None and inv_b.status == InvoiceStatus.void
        cus_c = mirror.get(Customer, "stripe", "cus_c")
        assert cus_c is not None and cus_c.email == "c@example.com" and cus_c.timezone == "Europe/Berlin"
    # export reads the customer as the mirror has it: cus_a's newer copy has no timezone
    frame = mirror_attempts_frame(history_db)
    assert set(frame.loc[frame["customer_id"] == "cus_a", "customer_timezone"]) == {""}


def test_upsert_many_same_object_twice_in_a_chunk(history_db: Database) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with history_db.session() as s:
        got = Mirror(s).upsert_many(
            [
                (Customer(platform="stripe", id="cus_1", email="new@example.com"), t0 + timedelta(hours=2)),
                (Customer(platform="stripe", id="cus_1", email="old@example.com"), t0),
                (Customer(platform="stripe", id="cus_1", timezone="Europe/Paris"), t0 + timedelta(hours=3)),
            ],
            source="import",
        )
    assert got == {"inserted": 1, "updated": 1, "unchanged": 1}
    with history_db.session() as s:
        c = Mirror(s).get(Customer, "stripe", "cus_1")
    assert c is not None and c.email == "new@example.com" and c.timezone == "Europe/Paris"


def test_export_skips_pending_and_incomplete_attempts(history_db: Database, tmp_path: Path) -> None:
    import_file(history_db, write_csv(tmp_path / "a.csv", ROWS))
    at = datetime(2026, 3, 1, tzinfo=UTC)
    with history_db.session() as s:
        mirror = Mirror(s)
        for attempt in (
            PaymentAttempt(
                platform="stripe",
                id="ch_pending",
                invoice_id="in_c",
                customer_id="cus_c",
                amount=1,
                currency="eur",
                attempted_at=at,
                outcome="pending",
            ),
            PaymentAttempt(
                platform="stripe",
                id="ch_no_invoice",
                customer_id="cus_c",
                amount=1,
                currency="eur",
                attempted_at=at,
                outcome="failed",
            ),
            PaymentAttempt(
                platform="chargebee",
                id="ch_other",
                invoice_id="in_z",
                customer_id="cus_z",
                amount=1,
                currency="eur",
                attempted_at=at,
                outcome="succeeded",
            ),
        ):
            mirror.upsert(attempt, source_time=at)
    frame, skipped = mirror_attempts(history_db, "stripe")
    assert len(frame) == 6 and skipped == 1
    assert len(mirror_attempts_frame(history_db)) == 7  # every platform
    since = mirror_attempts_frame(history_db, "stripe", since=datetime(2026, 2, 7, 10, tzinfo=UTC))
    assert since["attempt_id"].tolist() == ["ch_b2", "ch_c1"]
    assert export_file(history_db, tmp_path / "out.csv", platform="chargebee") == (1, 0)


def test_export_from_an_empty_mirror(history_db: Database, tmp_path: Path) -> None:
    out = tmp_path / "ATTEMPTS.csv"
    assert export_file(history_db, out) == (0, 0)
    assert out.read_text() == ",".join(ATTEMPT_COLUMNS) + "\n"
    assert len(read_attempts(out)) == 0


def test_cli_import_and_export(database_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    root = ["--data-dir", str(tmp_path / "data"), "--database-url", database_url]
    source = write_csv(tmp_path / "ATTEMPTS.csv", ROWS)

    res = runner.invoke(app, [*root, "history", "import", str(source)])
    assert res.exit_code == 0, res.output
    assert "6 attempts valid" in res.output
    assert "payment_attempts" in res.output and "customers" in res.output

    out = tmp_path / "out.csv"
    res = runner.invoke(
        app, [*root, "history", "export", "--out", str(out), "--since", "2026-01-06T00:00:00"]
    )
    assert res.exit_code == 0, res.output
    assert f"wrote 5 attempts to {out}" in res.output
    assert read_attempts(out)["attempt_id"].tolist() == ["ch_a2", "ch_b1", "ch_a3", "ch_b2", "ch_c1"]

    bad = write_csv(tmp_path / "bad.csv", [{**ROWS[0], "amount": "12.50"}])
    res = runner.invoke(app, [*root, "history", "import", str(bad)])
    assert res.exit_code == 2
    assert "bad.csv line 2, column amount: '12.50' is not an amount" in res.output

    res = runner.invoke(app, [*root, "history", "export", "--out", str(out), "--since", "yesterday"])
    assert res.exit_code == 2 and "not an ISO 8601 time" in res.output


def test_cli_uses_data_dir(tmp_path: Path) -> None:
    runner = CliRunner()
    data_dir = tmp_path / "data"
    res = runner.invoke(
        app, ["--data-dir", str(data_dir), "history", "import", str(write_csv(tmp_path / "a.csv", ROWS))]
    )
    assert res.exit_code == 0, res.output
    assert (data_dir / "billops.db").exists()
    out = tmp_path / "out.csv"
    res = runner.invoke(app, ["--data-dir", str(data_dir), "history", "export", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert len(read_attempts(out)) == 6
