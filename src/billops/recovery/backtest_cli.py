"""`billops recovery backtest --since DATE [--until DATE] [--model DIR] [--json]` (recovery/backtest.py)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any

import typer


def parse_day(value: str, name: str) -> datetime:
    """'YYYY-MM-DD' (UTC midnight); InputError otherwise."""
    from billops.errors import InputError

    try:
        if len(value) != 10:
            raise ValueError(value)
        return datetime.combine(date.fromisoformat(value), time(), UTC)
    except ValueError:
        raise InputError(f"{name} {value!r} is not a date (use YYYY-MM-DD)") from None


def run(
    data_dir: Path,
    db_url: str,
    policy: Any,
    since: datetime,
    until: datetime,
    model_dir: Path | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Load the mirror and the model, then `backtest`."""
    from billops.mirror.history import mirror_attempts_frame
    from billops.recovery.backtest import backtest, model_planner, rules_planner
    from billops.recovery.model import latest_model, load_model
    from billops.recovery.planner import load_network_rules
    from billops.store.db import Database

    model = load_model(model_dir) if model_dir is not None else latest_model(data_dir)
    db = Database(db_url)
    try:
        db.migrate()
        frame = mirror_attempts_frame(db)
    finally:
        db.dispose()
    if model is None:
        plan, version = (
            rules_planner(),
            "rules-v1 (no trained model: its score read as a probability, NOT calibrated)",
        )
    else:
        plan = model_planner(model, policy=policy, rules=load_network_rules(policy.network_rules))
        version = model.version
    return backtest(
        frame,
        since=since,
        until=until,
        plan=plan,
        window_days=policy.recovery.window_days,
        now=now or datetime.now(UTC),
        model_version=version,
    )


def print_report(console: Any, r: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(f"[bold]Shadow backtest[/bold] {r['since'][:10]} … {r['until'][:10]} with {r['model']}")
    console.print(
        f"  {r['invoices']:,} invoices first failed in the range; {r['compared']:,} compared, "
        f"{r['open']:,} still open (window of {r['window_days']} d not over; {r['open_paid']} already paid)"
        + (f"; capped at the first {r['capped_at']:,}" if r["capped_at"] else "")
    )
    if not r["currencies"]:
        console.print("  nothing to compare in this range (no invoice whose window has ended)")
        return
    t = Table(
        "currency", "invoices", "failed", "recovered (actual)", "by", "BillOps (expected)", "uplift", "95% CI"
    )
    for c, v in r["currencies"].items():
        by = ", ".join(f"{k} {n:,}" for k, n in v["actual_by"].items()) or "-"
        lo, hi = v["uplift_ci95"]
        t.add_row(
            c,
            f"{v['invoices']:,}",
            f"{v['failed_amount']:,}",
            f"{v['actual_recovered']:,}",
            by,
            f"{v['billops_expected']:,}",
            f"{v['uplift']:+,}",
            f"{lo:+,} … {hi:+,}",
        )
    console.print(t)
    console.print(f"  amounts in minor units; CI: {r['ci_method']}")
    console.print(f"  {r['caveat']}")


def register(app: typer.Typer) -> None:
    from billops.recovery.cli import _clear_errors, console

    @app.command("backtest")
    @_clear_errors
    def backtest_cmd(
        since: Annotated[str, typer.Option(help="First day of first failures, YYYY-MM-DD (UTC).")],
        until: Annotated[
            str | None, typer.Option(help="Day after the last (exclusive); default today.")
        ] = None,
        model: Annotated[
            Path | None, typer.Option(help="Model directory (default: the registered latest).")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="The report as one JSON object.")] = False,
    ) -> None:
        """Replay the mirror's failures: what BillOps would have recovered against what happened."""
        from billops.cli import settings
        from billops.errors import InputError
        from billops.policy import load_policy

        start = parse_day(since, "--since")
        end = parse_day(until, "--until") if until else datetime.now(UTC)
        if start >= end:
            raise InputError(f"--since {since} is not before --until {until or 'today'}")
        s = settings()
        report = run(Path(s.data_dir), s.db_url, load_policy(s.policy_file), start, end, model)
        if as_json:
            print(json.dumps(report))
        else:
            print_report(console, report)


def demo_block(console: Any, data_dir: Path, days: int) -> dict[str, Any] | None:
    """`billops demo`'s closing "Shadow backtest" block over the demo's own mirror (never fails the demo)."""
    from datetime import timedelta

    from billops.config import DEFAULT_POLICY_FILE
    from billops.policy import load_policy

    now = datetime.now(UTC)
    try:
        report = run(
            data_dir,
            f"sqlite:///{data_dir / 'billops.db'}",
            load_policy(DEFAULT_POLICY_FILE),
            now - timedelta(days=days + 1),
            now,
            None,
            now,
        )
    except Exception as exc:  # a demo prints what it can
        console.print(f"\n[bold]Shadow backtest[/bold]: not available ({type(exc).__name__}: {exc})")
        return None
    console.print()
    print_report(console, report)
    console.print(
        "  see it on the console: /console/backtest · CLI: billops recovery backtest "
        f"--since {report['since'][:10]}"
    )
    return report
