"""`billops sync …`: backfill the mirror from a platform's API (resumable; see mirror/sync.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from billops.errors import BillopsError
from billops.mirror.sync import SyncProgress, sync_platform, sync_status
from billops.platforms.base import RESOURCES

sync_app = typer.Typer(
    help="Backfill the local mirror (customers, subscriptions, invoices, payment attempts, payment methods) "
    "from a billing platform's API. Resumes where the last run stopped.",
    no_args_is_help=True,
)


@sync_app.callback()
def _group() -> None:
    """Keeps `sync` a command group (`billops sync stripe`) even while it has a single platform."""


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


def run_sync(platform: str, page_size: int, restart: bool, only: str | None) -> None:
    from billops.config import load_settings
    from billops.platforms.registry import build_client, missing_client_reason
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
    try:
        client = build_client(platform, settings)
    except BillopsError as exc:
        raise _fail(exc.message) from exc
    if client is None:
        raise _fail(f"cannot sync: {missing_client_reason(platform)}. See docs/platforms/{platform}.md.")
    if not client.capabilities.backfill:
        raise _fail(
            f"{TITLES[platform]} offers no backfill through BillOps (see docs/platforms/{platform}.md)"
        )
    offered = client.backfill_resources()
    if resources is not None:
        missing = [r for r in resources if r not in offered]
        if missing:
            raise _fail(
                f"{TITLES[platform]} cannot backfill {', '.join(missing)}; it offers {', '.join(offered)}"
            )

    try:
        db = Database(settings.db_url)
        db.migrate()
    except BillopsError as exc:
        raise _fail(exc.message) from exc

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
    for resource in resources or offered:
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
