"""`billops webhooks …`: signing secrets, the event schemas, and a test delivery to an endpoint.
Mounted by billops/cli.py as `webhooks_app`."""

from __future__ import annotations

import secrets as _secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from billops.actions.events import EVENT_MODELS, sample_data, write_schemas
from billops.actions.webhooks import deliver_webhook, new_secret
from billops.errors import InputError

webhooks_app = typer.Typer(help="Outbound webhooks (Standard Webhooks).", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@webhooks_app.command("secret")
def secret_cmd() -> None:
    """Print a new signing secret (whsec_…) for an endpoint in BILLOPS_OUTBOUND_WEBHOOKS."""
    print(new_secret())


@webhooks_app.command("schemas")
def schemas_cmd(
    out: Annotated[Path, typer.Option(help="Folder for the <event>.schema.json files.")] = Path(
        "docs/webhook-events"
    ),
) -> None:
    """Write the JSON schema of every event (the receivers' contract)."""
    for path in write_schemas(out):
        console.print(f"wrote {path}")


@webhooks_app.command("test")
def test_cmd(
    name: Annotated[str, typer.Argument(help="The endpoint's name in BILLOPS_OUTBOUND_WEBHOOKS.")],
    event: Annotated[str, typer.Option(help="Event type of the sample.")] = "recovery.escalated",
) -> None:
    """Send a signed sample event to one configured endpoint and print what it answered."""
    from billops.cli import settings

    if event not in EVENT_MODELS:
        raise InputError(f"unknown event {event!r}; known: {', '.join(EVENT_MODELS)}")
    s = settings()
    endpoint = next((e for e in s.outbound_webhooks if e.name == name), None)
    if endpoint is None:
        known = ", ".join(e.name for e in s.outbound_webhooks) or "none configured"
        raise InputError(f"no outbound webhook endpoint named {name!r} (BILLOPS_OUTBOUND_WEBHOOKS: {known})")
    msg_id = f"msg_test_{_secrets.token_hex(8)}"
    receipt = deliver_webhook(
        endpoint, event_type=event, msg_id=msg_id, data=sample_data(event), timeout=s.http_timeout_seconds
    )
    if event not in endpoint.events:
        err.print(f"[yellow]note:[/yellow] endpoint {name!r} is not subscribed to {event}; sent anyway")
    status = receipt.detail["status_code"]
    console.print(f"[green]delivered[/green] {event} to {name!r}: HTTP {status}, webhook-id {msg_id}")
