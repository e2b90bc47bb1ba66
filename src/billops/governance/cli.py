"""Governance commands: `billops policy check`, `billops pause-all` / `resume-all`, `billops breaker`,
`billops feedback export`."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from billops.governance.users_cli import actor, cli_runtime

policy_app = typer.Typer(help="The policy file.", no_args_is_help=True)
breaker_app = typer.Typer(help="The circuit breaker.", no_args_is_help=True)
feedback_app = typer.Typer(help="Human verdicts as training labels.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@policy_app.command("check")
def policy_check(
    file: Annotated[
        Path | None, typer.Argument(help="Policy file (default: BILLOPS_POLICY_FILE or packaged).")
    ] = None,
    platform: Annotated[str, typer.Option(help="Sample customer's platform.")] = "stripe",
    currency: Annotated[str, typer.Option(help="Invoice currency.")] = "usd",
    amount: Annotated[int, typer.Option(help="Invoice amount in minor units.")] = 10_000,
    customer: Annotated[str | None, typer.Option(help="Customer id (for the rollout hash).")] = None,
    plan: Annotated[str | None, typer.Option(help="Plan name on the invoice.")] = None,
    tier: Annotated[str | None, typer.Option(help="Customer tier.")] = None,
    timezone: Annotated[str | None, typer.Option(help="Customer time zone, e.g. Europe/Paris.")] = None,
    workflow: Annotated[str, typer.Option(help="Workflow.")] = "recovery",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate a policy file and show which mode and guardrails apply to a sample customer, and why."""
    from billops.cli import settings
    from billops.config import DEFAULT_POLICY_FILE
    from billops.errors import ConfigError
    from billops.governance.explain import explain
    from billops.governance.rollout import Subject
    from billops.policy import parse_policy

    path = file or settings().policy_file or DEFAULT_POLICY_FILE
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"policy file {path}: cannot read it ({exc.strerror})") from exc
    policy = parse_policy(text, str(path))
    sub = Subject(
        workflow=workflow,
        platform=platform,
        customer_id=customer,
        currency=currency.lower(),
        amount_minor=amount,
        plans=(plan,) if plan else (),
        tier=tier,
        timezone=timezone,
    )
    res = explain(policy, sub)
    if as_json:
        print(json.dumps(res, indent=2))
        return
    console.print(f"[green]policy {path} is valid[/green]: version {policy.full_version}")
    m = res["mode"]
    console.print(
        f"\n[bold]{workflow}[/bold] for {customer or 'a customer'} ({platform}, {amount} {currency}"
        f"{', plan ' + plan if plan else ''}{', tier ' + tier if tier else ''}): "
        f"[bold]{m['mode']}[/bold]" + (f" (segment {m['segment']})" if m["segment"] else "")
    )
    for r in m["reasons"]:
        console.print(f"  - {r}")
    t = Table(title="Guardrails")
    for col in ("rule", "applies", "what it does"):
        t.add_column(col)
    for g in res["guardrails"]:
        t.add_row(g["rule"], g["applies"], g["says"])
    console.print(t)


def pause_all(why: Annotated[str, typer.Option(help="Why (recorded in the audit log).")]) -> None:
    """Kill switch: every workflow to shadow at once (decisions recorded, nothing executed)."""
    from billops.governance import control

    with cli_runtime().db.session() as s:
        control.pause_all(s, by=actor(), why=why)
    err.print(
        "[red bold]KILL SWITCH ON[/red bold]: every workflow now runs as shadow. "
        "`billops resume-all --why …` turns it off."
    )


def resume_all(why: Annotated[str, typer.Option(help="Why (recorded in the audit log).")]) -> None:
    """Turn the kill switch off: workflows act again by their modes."""
    from billops.governance import control

    with cli_runtime().db.session() as s:
        c = control.resume_all(s, by=actor(), why=why)
    console.print("kill switch off" + (f"; still shadow: {c.shadow_reason}" if c.shadow_reason else ""))


@breaker_app.command("status")
def breaker_status() -> None:
    """Kill switch and circuit breaker state."""
    from billops.governance import control

    with cli_runtime().db.reader() as s:
        print(json.dumps(control.controls(s).as_dict(), indent=2))


@breaker_app.command("reset")
def breaker_reset(why: Annotated[str, typer.Option(help="Why (recorded in the audit log).")]) -> None:
    """Reset a tripped circuit breaker."""
    from billops.governance import control

    with cli_runtime().db.session() as s:
        control.reset_breaker(s, by=actor(), why=why)
    console.print("circuit breaker reset")


@feedback_app.command("export")
def feedback_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file ('-' for stdout).")] = Path("-"),
    since: Annotated[str | None, typer.Option(help="Only labels from this date (YYYY-MM-DD).")] = None,
) -> None:
    """Write human verdicts (approved, edited, rejected, expired) with the decision's features, as JSONL."""
    from billops.errors import InputError
    from billops.governance.feedback import feedback_rows

    start = None
    if since:
        try:
            start = datetime.fromisoformat(since).replace(tzinfo=UTC)
        except ValueError:
            raise InputError(f"--since {since!r}: expected YYYY-MM-DD") from None
    n = 0
    with cli_runtime().db.reader() as s:
        rows = feedback_rows(s, since=start)
        if str(out) == "-":
            for row in rows:
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
            return
        tmp = out.with_suffix(out.suffix + ".part")
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        tmp.replace(out)  # never a half-written export
    err.print(f"wrote {n} labels to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")
    app.add_typer(breaker_app, name="breaker")
    app.add_typer(feedback_app, name="feedback")
    app.command("pause-all")(pause_all)
    app.command("resume-all")(resume_all)
