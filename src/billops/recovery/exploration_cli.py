"""`billops recovery exploration [--json]`: what exploration did and what the executed retries say
(recovery/labels.py, docs/models.md "Exploration and outcomes as labels")."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def _ci(e: dict[str, Any]) -> str:
    if e.get("low") is None:
        return "n/a"
    return f"{e['low']:.1%}–{e['high']:.1%}"


def print_report(report: dict[str, Any], console: Console) -> None:
    console.print(
        f"decisions {report['decisions']:,}; learned plans {report['learned_plans']:,} (re-plans included), "
        f"{report['explorable_plans']:,} with another allowed hour; explored {report['explored_plans']:,} "
        f"= {_pct(report['realized_share'])} realized (configured {_pct(report['configured_share'])})",
        highlight=False,
    )
    if report["explored_by_mode"]:
        modes = ", ".join(f"{m} {k:,}" for m, k in sorted(report["explored_by_mode"].items()))
        console.print(f"explored by mode: {modes} (shadow: recorded only, never executed)", highlight=False)
    t = Table(title="executed retries by who chose the time")
    for col in ("source", "retries", "succeeded", "success rate"):
        t.add_column(col, justify="left" if col == "source" else "right")
    for r in report["retries"]:
        t.add_row(r["source"], f"{r['retries']:,}", f"{r['succeeded']:,}", _pct(r["rate"]))
    console.print(t)
    est = report["estimates"]
    if not est:
        console.print("no executed retry of a learned plan yet: no estimate", highlight=False)
        return
    e = Table(title="per-retry success rate by timing policy (self-normalized IPS, 95% bootstrap CI)")
    for col in ("policy", "estimate", "95% CI", "retries", "effective n"):
        e.add_column(col, justify="left" if col == "policy" else "right")
    names = {
        "logged": "as executed (planner + exploration)",
        "greedy": "the planner's own times",
        "uniform_first_retry": "a random allowed hour (first retries)",
    }
    for key, label in names.items():
        if key in est:
            v = est[key]
            e.add_row(label, _pct(v["value"]), _ci(v), f"{v['n']:,}", f"{v['effective_n']:,.1f}")
    console.print(e)


def register(app: typer.Typer) -> None:
    """Add `exploration` to `billops recovery`."""

    @app.command("exploration")
    def exploration_cmd(
        as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
        platform: Annotated[str | None, typer.Option(help="Only this platform's decisions.")] = None,
    ) -> None:
        """Decisions, exploration realized, executed retries by source with their success rates, and the
        planner's per-retry success rate estimated from them with importance weights (IPS)."""
        from billops.cli import settings
        from billops.recovery.labels import exploration_report
        from billops.store.db import Database

        db = Database(settings().db_url)
        try:
            db.migrate()
            report = exploration_report(db, platform)
        finally:
            db.dispose()
        console = Console()
        if as_json:
            console.print_json(json.dumps(report))
        else:
            print_report(report, console)
