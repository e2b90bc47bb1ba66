"""`billops contacts`: the opt-out list (who asked not to be contacted, on which channel)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from billops.governance.users_cli import actor, cli_runtime

contacts_app = typer.Typer(help="Contact preferences: the opt-out list.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)
Channel = typer.Option(help="all | email | sms")


@contacts_app.command("optout")
def optout(
    platform: Annotated[str, typer.Argument(help="stripe | chargebee | recurly | zuora")],
    customer_id: Annotated[str, typer.Argument(help="The platform's customer id.")],
    channel: Annotated[str, Channel] = "all",
    why: Annotated[str | None, typer.Option(help="Why (recorded in the audit log).")] = None,
) -> None:
    """Stop every message to a customer on a channel (or all channels)."""
    from billops.governance import contacts

    rt = cli_runtime()
    with rt.db.session() as s:
        added = contacts.add_optout(s, platform, customer_id, channel, source="cli", by=actor(), why=why)
    err.print(
        f"{platform} customer {customer_id}: {'opted out of' if added else 'was already opted out of'} "
        f"{'all contact' if channel == 'all' else channel}"
    )


@contacts_app.command("optin")
def optin(
    platform: Annotated[str, typer.Argument(help="stripe | chargebee | recurly | zuora")],
    customer_id: Annotated[str, typer.Argument(help="The platform's customer id.")],
    why: Annotated[str, typer.Option(help="Why contact is allowed again (required, audited).")],
    channel: Annotated[str, Channel] = "all",
) -> None:
    """Remove an opt-out (only with the customer's consent: the reason is audited)."""
    from billops.governance import contacts

    rt = cli_runtime()
    with rt.db.session() as s:
        contacts.remove_optout(s, platform, customer_id, channel, by=actor(), why=why)
    err.print(f"{platform} customer {customer_id}: {channel} opt-out removed")


@contacts_app.command("list")
def list_(
    platform: Annotated[str | None, typer.Option(help="Only this platform.")] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Customers who opted out, newest first."""
    from billops.governance import contacts

    rt = cli_runtime()
    with rt.db.reader() as s:
        rows: list[dict[str, Any]] = contacts.list_optouts(s, platform=platform, customer_id=customer)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table("platform", "customer", "channel", "source", "by", "at", "why")
    for r in rows:
        t.add_row(
            r["platform"], r["customer_id"], r["channel"], r["source"], r["by"], r["at"][:19], r["why"] or ""
        )
    console.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(contacts_app, name="contacts")
