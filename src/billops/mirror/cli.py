"""`billops sync …`: backfill the mirror from a platform's API (resumable; see mirror/sync.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from billops.errors import BillopsError
from billops.mirror.sync import SyncProgress, sync_platform, sync_status
from billops.platforms.base import RESOURCES

if TYPE_CHECKING:
    from billops.config import Settings
    from billops.platforms.base import PlatformClient
    from billops.store import Database

sync_app = typer.Typer(
    help="Backfill the local mirror (customers, subscriptions, invoices, payment attempts, payment methods) "
    "from a billing platform's API. Resumes where the last run stopped.",
    no_args_is_help=True,
)


@sync_app.callback()
def _group() -> None:
    """`billops sync <platform>`: one subcommand per platform."""


out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    return typer.Exit(code)


TITLES = {"stripe": "Stripe", "chargebee": "Chargebee", "recurly": "Recurly", "zuora": "Zuora"}

PageSize = Annotated[int, typer.Option("--page-size", min=1, max=100, help="Objects per API page (1-100).")]
Restart = Annotated[
    bool, typer.Option("--restart", help="Forget stored cursors and sync the selected resources again.")
]
Only = Annotated[
    str | None,
    typer.Option("--only", help="Comma-separated resources, e.g. customers,invoices (default: all)."),
]


@sync_app.command("stripe")
def sync_stripe(page_size: PageSize = 100, restart: Restart = False, only: Only = None) -> None:
    """Backfill the mirror from Stripe (BILLOPS_STRIPE_API_KEY, optional BILLOPS_STRIPE_API_BASE)."""
    run_sync("stripe", page_size, restart, only)


@sync_app.command("chargebee")
def sync_chargebee(page_size: PageSize = 100, restart: Restart = False, only: Only = None) -> None:
    """Backfill the mirror from Chargebee (BILLOPS_CHARGEBEE_SITE, BILLOPS_CHARGEBEE_API_KEY)."""
    run_sync("chargebee", page_size, restart, only)


@sync_app.command("recurly")
def sync_recurly(page_size: PageSize = 100, restart: Restart = False, only: Only = None) -> None:
    """Backfill the mirror from Recurly (BILLOPS_RECURLY_API_KEY, BILLOPS_RECURLY_REGION)."""
    run_sync("recurly", page_size, restart, only)


@sync_app.command("zuora")
def sync_zuora(page_size: PageSize = 100, restart: Restart = False, only: Only = None) -> None:
    """Backfill the mirror from Zuora (BILLOPS_ZUORA_API_URL, _CLIENT_ID, _CLIENT_SECRET)."""
    run_sync("zuora", page_size, restart, only)


def _sync_client(
    platform: str, settings: Settings, db: Database, resources: list[str] | None
) -> PlatformClient:
    """The platform's client, or a clear exit when it has no credentials or cannot backfill these."""
    from billops.platforms.registry import build_client, missing_client_reason

    try:
        client = build_client(platform, settings, db)
    except BillopsError as exc:
        raise _fail(exc.message) from exc
    if client is None:
        raise _fail(f"cannot sync: {missing_client_reason(platform)}. See docs/platforms/{platform}.md.")
    if not client.capabilities.backfill:
        raise _fail(
            f"{TITLES[platform]} offers no backfill through BillOps (see docs/platforms/{platform}.md)"
        )
    offered = client.backfill_resources()
    missing = [r for r in resources or [] if r not in offered]
    if missing:
        raise _fail(
            f"{TITLES[platform]} cannot backfill {', '.join(missing)}; it offers {', '.join(offered)}"
        )
    return client


def run_sync(platform: str, page_size: int, restart: bool, only: str | None) -> None:
    from billops.config import load_settings
    from billops.store import Database

    resources: list[str] | None = None
    if only is not None:
        resources = [r.strip() for r in only.split(",") if r.strip()]
        unknown = [r for r in resources if r not in RESOURCES]
        if not resources or unknown:
            raise typer.BadParameter(
                f"unknown resource(s) {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(RESOURCES)}",
                param_hint="--only",
            )
    try:
        settings = load_settings()
    except BillopsError as exc:
        raise _fail(exc.message) from exc
    db = Database(settings.db_url)  # no connection yet: nothing is created before the checks pass
    try:
        client = _sync_client(platform, settings, db, resources)
        db.migrate()
    except BillopsError as exc:
        db.dispose()
        raise _fail(exc.message) from exc
    except BaseException:
        db.dispose()
        raise

    tasks: dict[str, TaskID] = {}
    results: dict[str, SyncProgress] = {}
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<18}"),
        BarColumn(),
        TextColumn("{task.completed:>7.0f} objects"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )

    def report(p: SyncProgress) -> None:
        results[p.resource] = p
        if p.resource not in tasks:
            tasks[p.resource] = progress.add_task(p.resource, total=None)
        task = tasks[p.resource]
        progress.update(task, completed=p.total)
        if p.done:
            label = f"{p.resource} (done before)" if p.skipped else p.resource
            progress.update(task, total=max(p.total, 1), completed=max(p.total, 1), description=label)

    stopped: str | None = None
    try:
        with progress:
            sync_platform(
                db, client, page_size=page_size, resources=resources, restart=restart, progress=report
            )
    except BillopsError as exc:
        stopped = exc.message
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        cursors = sync_status(db, client.platform)
        db.dispose()

    table = Table(title=f"{TITLES[platform]} sync")
    table.add_column("resource")
    table.add_column("this run", justify="right")
    table.add_column("total", justify="right")
    table.add_column("status")
    for resource in resources or client.backfill_resources():
        row = cursors.get(resource)
        p = results.get(resource)
        status = "not started"
        if row is not None and (row.done or row.cursor is not None or row.count):
            status = "done" if row.done else "partial (resumable)"
            if p is not None and p.skipped:
                status = "done earlier (use --restart)"
        table.add_row(resource, str(p.run_items if p else 0), str(row.count if row else 0), status)
    out.print(table)
    if stopped is not None:
        raise _fail(f"sync stopped: {stopped}. Stored pages are kept; run the command again to resume.", 1)
