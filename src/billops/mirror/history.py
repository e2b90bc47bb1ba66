"""Payment history between ATTEMPTS.csv and the mirror: `billops history import|export`.

Import validates the whole file first (nothing is written when a row is wrong), then upserts, in ONE
transaction, the customers, invoices and payment attempts the file describes, with source "import"
and source time = the attempt time, so it never overwrites a stored copy that is newer (a webhook or
a `billops sync` snapshot). Export reads the mirror's settled attempts back into the same format:
`billops sync stripe` then `billops history export` turns a Stripe account's history into training
data. The file format itself lives in billops.recovery.data (docs/history.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import pandas as pd

    from billops.domain import Customer, Invoice, PaymentAttempt
    from billops.store import Database

SOURCE = "import"
CHUNK = 1000


@dataclass
class ImportResult:
    rows: int = 0
    # per table: inserted / updated / unchanged (the stored copy was newer)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def _lists(df: pd.DataFrame) -> dict[str, list[Any]]:
    """The frame's columns as Python lists (much faster to walk than rows of a frame): times become
    timezone-aware datetimes, missing values None."""
    import pandas as pd

    out: dict[str, list[Any]] = {}
    for name in df.columns:
        col = df[name]
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            values = col.dt.tz_convert(UTC).dt.to_pydatetime().tolist()
            out[name] = [None if v is pd.NaT else v for v in values]
        elif str(col.dtype) == "Int64":
            out[name] = [None if v is pd.NA else int(v) for v in col.tolist()]
        else:
            out[name] = col.tolist()
    return out


def _newest_rows(df: pd.DataFrame, key: str) -> pd.DataFrame:
    return df.drop_duplicates(key, keep="last")  # df is sorted by attempted_at


def _customers(df: pd.DataFrame, platform: str) -> Iterator[tuple[Customer, datetime]]:
    from billops.domain import Customer

    c = _lists(
        _newest_rows(df, "customer_id")[
            ["customer_id", "attempted_at", "customer_created_at", "customer_timezone"]
        ]
    )
    for cid, at, created, tz in zip(
        c["customer_id"], c["attempted_at"], c["customer_created_at"], c["customer_timezone"], strict=True
    ):
        yield Customer(platform=platform, id=cid, created_at=created, timezone=tz or None), at


def _invoices(df: pd.DataFrame, platform: str) -> Iterator[tuple[Invoice, datetime]]:
    from billops.domain import Invoice, InvoiceStatus

    paid = set(df.loc[df["outcome"] == "succeeded", "invoice_id"].tolist())
    tries = df["invoice_id"].value_counts().to_dict()
    c = _lists(
        _newest_rows(df, "invoice_id")[
            ["invoice_id", "customer_id", "attempt_id", "attempted_at", "amount", "currency"]
        ]
    )
    for iid, cid, aid, at, amount, currency in zip(
        c["invoice_id"],
        c["customer_id"],
        c["attempt_id"],
        c["attempted_at"],
        c["amount"],
        c["currency"],
        strict=True,
    ):
        is_paid = iid in paid
        yield (
            Invoice(
                platform=platform,
                id=iid,
                customer_id=cid,
                status=InvoiceStatus.paid if is_paid else InvoiceStatus.open,
                currency=currency,
                amount_due=amount,
                amount_paid=amount if is_paid else 0,
                amount_remaining=0 if is_paid else amount,
                attempt_count=int(tries[iid]),
                latest_attempt_id=aid,
            ),
            at,
        )


def _attempts(df: pd.DataFrame, platform: str) -> Iterator[tuple[PaymentAttempt, datetime]]:
    from billops.domain import CardInfo, Decline, PaymentAttempt
    from billops.domain.declines import load_taxonomy

    taxonomy = load_taxonomy()
    declines: dict[tuple[str, str, str], Decline] = {}
    c = _lists(df)
    for i in range(len(df)):
        at = c["attempted_at"][i]
        brand = c["card_brand"][i]
        decline = None
        if c["outcome"][i] == "failed":
            key = (c["decline_code"][i], c["network_advice_code"][i], brand)
            decline = declines.get(key)
            if decline is None:
                # raw_code keeps the file's code exactly ('' when the file gave none; the taxonomy
                # then says generic_decline), so an export gives back what was imported.
                decline = taxonomy.classify(
                    key[0], raw_code=key[0], network_advice_code=key[1] or None, network=brand or None
                )
                declines[key] = decline
        card_fields = {
            "brand": brand or None,
            "funding": c["card_funding"][i] or None,
            "country": c["card_country"][i] or None,
            "exp_month": c["card_exp_month"][i],
            "exp_year": c["card_exp_year"][i],
        }
        card = CardInfo(**card_fields) if any(v is not None for v in card_fields.values()) else None
        yield (
            PaymentAttempt(
                platform=platform,
                id=c["attempt_id"][i],
                invoice_id=c["invoice_id"][i],
                customer_id=c["customer_id"][i],
                amount=c["amount"][i],
                currency=c["currency"][i],
                attempted_at=at,
                outcome=c["outcome"][i],
                decline=decline,
                card=card,
            ),
            at,
        )


def import_attempts(db: Database, df: pd.DataFrame, *, platform: str = "stripe") -> ImportResult:
    """Upsert a validated ATTEMPTS frame (from `read_attempts`) into the mirror in one transaction."""
    from billops.mirror.store import Mirror
    from billops.recovery.data import sort_attempts

    df = sort_attempts(df)  # "newest row" below means the last one
    result = ImportResult(rows=len(df))
    with db.session() as s:
        mirror = Mirror(s)
        result.counts["customers"] = mirror.upsert_many(
            _customers(df, platform), source=SOURCE, chunk_size=CHUNK
        )
        result.counts["invoices"] = mirror.upsert_many(
            _invoices(df, platform), source=SOURCE, chunk_size=CHUNK
        )
        result.counts["payment_attempts"] = mirror.upsert_many(
            _attempts(df, platform), source=SOURCE, chunk_size=CHUNK
        )
    return result


def import_file(db: Database, path: Path, *, platform: str = "stripe") -> ImportResult:
    """Validate ATTEMPTS.csv completely (DataError: nothing written), then import it."""
    from billops.recovery.data import read_attempts

    return import_attempts(db, read_attempts(path), platform=platform)


# ---------------------------------------------------------------------------------------------
# export


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _mirror_text_frame(db: Database, platform: str | None, since: datetime | None) -> pd.DataFrame:
    import pandas as pd
    import sqlalchemy as sa

    from billops.recovery.data import ATTEMPT_COLUMNS, LABEL_COLUMNS
    from billops.store.models import CustomerRow, PaymentAttemptRow

    q = (
        sa.select(PaymentAttemptRow.platform, PaymentAttemptRow.data, PaymentAttemptRow.source)
        .where(PaymentAttemptRow.outcome != "pending")
        .order_by(PaymentAttemptRow.attempted_at, PaymentAttemptRow.platform, PaymentAttemptRow.id)
    )
    if platform is not None:
        q = q.where(PaymentAttemptRow.platform == platform)
    if since is not None:
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        q = q.where(PaymentAttemptRow.attempted_at >= since)

    cols: dict[str, list[str]] = {c: [] for c in ATTEMPT_COLUMNS}
    fingerprints: list[str] = []
    owners: list[tuple[str, str]] = []
    origins: list[tuple[str, str, str, str, str]] = []  # platform, attempt, invoice, initiated_by, source
    with db.reader() as s:
        for plat, attempt, stored_from in s.execute(q.execution_options(yield_per=5000)):
            decline = attempt.get("decline") or {}
            card = attempt.get("card") or {}
            code = decline.get("code") or ""
            if decline.get("raw_code") == "":  # imported without a code: give back the empty code
                code = ""
            owners.append((plat, _text(attempt.get("customer_id"))))
            origins.append(
                (
                    plat,
                    _text(attempt.get("id")),
                    _text(attempt.get("invoice_id")),
                    _text(attempt.get("initiated_by")),
                    stored_from,
                )
            )
            cols["attempt_id"].append(_text(attempt.get("id")))
            cols["invoice_id"].append(_text(attempt.get("invoice_id")))
            cols["customer_id"].append(owners[-1][1])
            cols["attempted_at"].append(_text(attempt.get("attempted_at")))
            cols["amount"].append(_text(attempt.get("amount")))
            cols["currency"].append(_text(attempt.get("currency")))
            cols["outcome"].append(_text(attempt.get("outcome")))
            cols["decline_code"].append(code if attempt.get("outcome") == "failed" else "")
            cols["network_advice_code"].append(_text(decline.get("network_advice_code")))
            cols["card_brand"].append(_text(card.get("brand")))
            cols["card_funding"].append(_text(card.get("funding")))
            cols["card_country"].append(_text(card.get("country")))
            cols["card_exp_month"].append(_text(card.get("exp_month")))
            cols["card_exp_year"].append(_text(card.get("exp_year")))
            fingerprints.append(_text(card.get("fingerprint")))

        # the customers of those attempts, each read once
        customers: dict[tuple[str, str], tuple[str, str]] = {}
        wanted = sorted({o for o in owners if o[1]})
        for i in range(0, len(wanted), 1000):
            chunk = wanted[i : i + 1000]
            rows = s.execute(
                sa.select(CustomerRow.platform, CustomerRow.id, CustomerRow.data).where(
                    CustomerRow.platform.in_({p for p, _ in chunk}), CustomerRow.id.in_({c for _, c in chunk})
                )
            )
            for plat, cid, data in rows:
                customers[(plat, cid)] = (_text(data.get("timezone")), _text(data.get("created_at")))
        from billops.recovery.labels import label_attempts

        sources, propensities = label_attempts(s, origins, platform)
    empty = ("", "")
    found = [customers.get(o, empty) for o in owners]
    cols["customer_timezone"] = [f[0] for f in found]
    cols["customer_created_at"] = [f[1] for f in found]
    columns = list(ATTEMPT_COLUMNS)
    if any(sources):  # the optional label columns, when the mirror knows who chose a retry
        cols["retry_source"], cols["propensity"] = sources, propensities
        columns += LABEL_COLUMNS
    if any(fingerprints):  # tells a new card from an updater's refresh (recovery/model.py)
        cols["card_fingerprint"] = fingerprints
        columns.append("card_fingerprint")
    return pd.DataFrame(cols, columns=columns, dtype=object)


def mirror_attempts(
    db: Database, platform: str | None = None, since: datetime | None = None
) -> tuple[pd.DataFrame, int]:
    """The mirror's settled attempts as an ATTEMPTS frame, and how many were left out because a
    required value is missing or wrong (e.g. an attempt the platform reported without an invoice)."""
    from billops.recovery.data import normalize_attempts

    return normalize_attempts(_mirror_text_frame(db, platform, since))


def mirror_attempts_frame(
    db: Database, platform: str | None = None, since: datetime | None = None
) -> pd.DataFrame:
    """The mirror's payment attempts (succeeded and failed; pending ones are left out) as a frame with
    the columns and dtypes of `read_attempts`, sorted by attempted_at. Customer timezone and creation
    time come from the mirrored customer, card details from the attempt's card. `platform` None: all
    platforms; `since`: attempts at or after that time. Attempts that cannot satisfy the ATTEMPTS
    contract (no invoice or customer id) are left out; a wrong optional value (e.g. an unknown time
    zone) becomes empty. When the mirror knows who chose some attempt's time, the optional label columns
    `retry_source` and `propensity` follow (recovery/labels.py, docs/history.md)."""
    return mirror_attempts(db, platform, since)[0]


def export_file(
    db: Database, path: Path, *, platform: str | None = "stripe", since: datetime | None = None
) -> tuple[int, int]:
    """Write the mirror's attempts to ATTEMPTS.csv atomically; returns (rows written, rows left out)."""
    from billops.recovery.data import write_attempts

    frame, skipped = mirror_attempts(db, platform, since)
    return write_attempts(path, frame), skipped


# ---------------------------------------------------------------------------------------------
# CLI


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint="--since") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def register(app: typer.Typer) -> None:
    """Add `billops history import|export` to the BillOps CLI."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    history_app = typer.Typer(
        help="Payment history files (ATTEMPTS.csv) in and out of the local mirror: docs/history.md.",
        no_args_is_help=True,
    )
    app.add_typer(history_app, name="history")
    out = Console()
    err = Console(stderr=True)

    def fail(message: str) -> typer.Exit:
        err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
        return typer.Exit(2)

    def open_db() -> Database:
        from billops.cli import settings
        from billops.store import Database

        db = Database(settings().db_url)
        db.migrate()
        return db

    @history_app.command("import")
    def history_import(
        attempts: Annotated[
            Path, typer.Argument(help="ATTEMPTS.csv: one row per payment attempt.", show_default=False)
        ],
        platform: Annotated[str, typer.Option(help="Billing platform the ids belong to.")] = "stripe",
    ) -> None:
        """Validate ATTEMPTS.csv, then upsert its customers, invoices and attempts into the mirror in one
        transaction (nothing is written if any row is wrong; newer stored data is never overwritten)."""
        from billops.errors import BillopsError
        from billops.recovery.data import read_attempts

        try:
            df = read_attempts(attempts)
            err.print(
                f"{attempts}: {len(df):,} attempts valid", markup=False, highlight=False, soft_wrap=True
            )
            db = open_db()
            try:
                result = import_attempts(db, df, platform=platform)
            finally:
                db.dispose()
        except BillopsError as exc:
            raise fail(exc.message) from exc
        except OSError as exc:
            raise fail(f"{attempts}: cannot read: {exc.strerror or exc}") from exc
        table = Table(title=f"history import ({platform})")
        for col in ("table", "inserted", "updated", "unchanged (stored copy newer)"):
            table.add_column(col, justify="left" if col == "table" else "right")
        for name, c in result.counts.items():
            table.add_row(name, f"{c['inserted']:,}", f"{c['updated']:,}", f"{c['unchanged']:,}")
        out.print(table)

    @history_app.command("export")
    def history_export(
        out_path: Annotated[
            Path, typer.Option("--out", "-o", help="ATTEMPTS.csv to write (replaced atomically).")
        ],
        platform: Annotated[str, typer.Option(help="Billing platform to export.")] = "stripe",
        since: Annotated[
            str | None, typer.Option(help="Only attempts at or after this ISO 8601 time.")
        ] = None,
    ) -> None:
        """Write the mirror's settled payment attempts (pending ones are left out) to ATTEMPTS.csv,
        sorted by attempt time: the training data of the recovery model."""
        from billops.errors import BillopsError

        start = _since(since)
        try:
            db = open_db()
            try:
                rows, skipped = export_file(db, out_path, platform=platform, since=start)
            finally:
                db.dispose()
        except BillopsError as exc:
            raise fail(exc.message) from exc
        except OSError as exc:
            raise fail(f"{out_path}: cannot write: {exc.strerror or exc}") from exc
        note = f" ({skipped:,} left out: no invoice or customer id, or a wrong value)" if skipped else ""
        err.print(
            f"wrote {rows:,} attempts to {out_path}{note}", markup=False, highlight=False, soft_wrap=True
        )
