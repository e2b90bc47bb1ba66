"""`billops recovery train | plan | evaluate | models | simulate`: the stable command-line contract.

billops recovery train --attempts ATTEMPTS.csv --model-out MODEL_DIR     (--out is the same option)
billops recovery plan --model MODEL_DIR --failures FAILURES.jsonl --out PLANS.jsonl \
    [--history ATTEMPTS.csv] [--max-retries 8]
billops recovery evaluate --model MODEL_DIR --out REPORT_DIR [--attempts TEST.csv --history ATTEMPTS.csv]
    [--customers N --months M --seed S --split-days D --end DATE]
billops recovery models
billops recovery simulate --customers N --months M --seed S --out DIR
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

recovery_app = typer.Typer(
    help="Payment recovery: train, plan and evaluate the learned retry model.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)


def _clear_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """Bad input or config: print the message (file, line, column where it applies) and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        from billops.errors import BillopsError

        try:
            fn(*args, **kwargs)
        except BillopsError as exc:
            err.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def plan_rows(
    model: Any,
    failures: Any,
    history: Any,
    *,
    max_retries: int,
    policy: Any,
    rules: Any,
    now: datetime | None = None,
    chunk: int = 2000,
    workers: int = 2,
    scan_hours: int = 3,
    on_chunk: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Plans as PLANS.jsonl objects for a failures frame, in chunks (bounded memory)."""
    from concurrent.futures import ThreadPoolExecutor

    from billops.recovery.model import CustomerHistory
    from billops.recovery.timing import CardIndex, plan_timing, route_for

    with ThreadPoolExecutor(max_workers=1) as side:  # the card index builds beside the history
        cards_later = side.submit(CardIndex.build, history)
        hist = CustomerHistory.build(history)
        card_hist = cards_later.result()
    # The customers' history as of each first failure, for all failures at once (one merge).
    failures = failures.reset_index(drop=True)
    first = failures["first_failed_at"] if "first_failed_at" in failures else failures["failed_at"]
    agg = hist.as_of(failures["customer_id"], first)
    failures = failures.assign(**{c: agg[c].to_numpy() for c in agg.columns})
    out: list[dict[str, Any]] = []

    def one_chunk(lo: int) -> list[dict[str, Any]]:
        part = failures.iloc[lo : lo + chunk].reset_index(drop=True)
        plans = plan_timing(
            chunk_model,
            part,
            hist,
            card_hist,
            max_retries=max_retries,
            rules=rules,
            now=now,
            min_retry_probability=policy.recovery.min_retry_probability,
            attempt_cost=policy.recovery.attempt_cost,
            scan_hours=scan_hours,
        )
        amounts = part["amount"].to_numpy()
        so_far = part["attempts_so_far"].to_numpy() if "attempts_so_far" in part else [1] * len(part)
        rows = []
        retry_times = _iso_z_many([p.retries for p in plans])
        for i, p in enumerate(plans):
            route, why = route_for(
                p, amount=int(amounts[i]), attempts_so_far=int(so_far[i]), policy=policy.recovery
            )
            rows.append(
                {
                    "invoice_id": p.invoice_id,
                    "recovery_score": p.score,
                    "route": route,
                    "retries": retry_times[i],
                    "reasons": [why, *(r for r in p.reasons if r != why)],
                    "recovery_probability": round(p.recovery_probability, 4),
                    "retry_probabilities": [round(q, 4) for q in p.probabilities],
                    "decline_category": p.category,
                    "model": model.version,
                }
            )
        if on_chunk:
            on_chunk(len(part))
        return rows

    # Equal chunks, as many as a multiple of the workers: no worker idles through a short last chunk.
    n_chunks = -(-len(failures) // max(1, chunk))
    if workers > 1 and n_chunks > 1:
        n_chunks = -(-n_chunks // workers) * workers
    chunk = max(1, -(-len(failures) // max(1, n_chunks)))
    starts = list(range(0, len(failures), chunk))
    if workers > 1 and len(starts) > 1:
        # Two chunks at once, each predicting on one core: LightGBM releases the GIL and much of the
        # feature building is numpy, so the second core is busy while the first does Python work.
        chunk_model = dataclasses.replace(model, threads=1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for rows in pool.map(one_chunk, starts):
                out.extend(rows)
    else:
        chunk_model = model
        for lo in starts:
            out.extend(one_chunk(lo))
    return out


def _iso_z_many(plans: list[list[datetime]]) -> list[list[str]]:
    """Each plan's UTC times as ISO 8601 with a Z, formatted in one numpy call (whole seconds, as the
    planner's retries are; other times keep their own isoformat)."""
    import numpy as np

    flat = [t for times in plans for t in times]
    if any(t.microsecond or t.utcoffset() for t in flat):
        return [[t.isoformat().replace("+00:00", "Z") for t in times] for times in plans]
    arr = np.array([t.replace(tzinfo=None) for t in flat], dtype="datetime64[s]")
    text = [f"{v}Z" for v in np.datetime_as_string(arr, unit="s")]
    out, lo = [], 0
    for times in plans:
        out.append(text[lo : lo + len(times)])
        lo += len(times)
    return out


@recovery_app.command("train")
@_clear_errors
def train_cmd(
    attempts: Annotated[
        Path | None, typer.Option(help="ATTEMPTS.csv (docs/history.md). Omit with --from-mirror.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--model-out", "--out", help="Model directory to write (default: the registry only)."),
    ] = None,
    from_mirror: Annotated[
        bool, typer.Option("--from-mirror", help="Train on the mirror's attempts (webhooks, sync, imports).")
    ] = False,
    register: Annotated[
        bool, typer.Option(help="Also register the model so the service uses it (latest wins).")
    ] = True,
) -> None:
    """Train the retry-success model (LightGBM, isotonic calibration, time split) and save the artifact."""
    from billops.cli import settings
    from billops.errors import InputError
    from billops.recovery.model import register as register_model
    from billops.recovery.model import registry_dir
    from billops.recovery.training import train

    s = settings()
    if (attempts is None) == (not from_mirror):
        raise InputError("give exactly one of --attempts ATTEMPTS.csv or --from-mirror")
    t0 = time.perf_counter()
    if attempts is not None:
        from billops.recovery.data import read_attempts

        frame = read_attempts(attempts)
        source = str(attempts)
    else:
        from billops.mirror.history import mirror_attempts_frame
        from billops.store.db import Database

        db = Database(s.db_url)
        try:
            db.migrate()
            frame = mirror_attempts_frame(db)
        finally:
            db.dispose()
        source = "mirror"
    err.print(f"read {len(frame):,} attempts in {time.perf_counter() - t0:.1f} s")
    target = out or registry_dir(s.data_dir) / f".training-{int(time.time())}"
    model, report = train(frame, out=target, source=source)
    if out is None:
        final = register_model(model, s.data_dir)
        import shutil

        shutil.rmtree(target, ignore_errors=True)
        where = final
    else:
        where = out
        if register:
            register_model(model, s.data_dir)
    m = model.manifest
    test = m["metrics"]["test"]
    tr = m["training"]
    console.print(
        f"model {model.version} → {where}\n"
        f"  examples {tr['examples']:,} (train {tr['splits']['train']['examples']:,}, calibration "
        f"{tr['splits']['calibration']['examples']:,}, test {tr['splits']['test']['examples']:,}); "
        f"{tr['new_card_retries_excluded']:,} new-card payments left out\n"
        f"  test AUC {_fmt(test['auc'])}  Brier {_fmt(test['brier'])}  base rate {_fmt(test['base_rate'])}\n"
        f"  trained in {report['total_seconds']:.1f} s"
        + ("" if register or out is None else "  (not registered: the service will not use it)")
    )


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


@recovery_app.command("plan")
@_clear_errors
def plan_cmd(
    model: Annotated[Path, typer.Option(help="Model directory (from `billops recovery train`).")],
    failures: Annotated[Path, typer.Option(help="FAILURES.jsonl: one failed invoice per line.")],
    out: Annotated[Path, typer.Option(help="PLANS.jsonl to write (atomically).")],
    history: Annotated[
        Path | None,
        typer.Option(
            help="ATTEMPTS.csv with the attempts before the failures (the customers' history and the "
            "cards' network caps). Without it, the history the model was trained on is used."
        ),
    ] = None,
    max_retries: Annotated[int, typer.Option(min=0, max=15, help="Retries per invoice at most.")] = 8,
    scan_hours: Annotated[
        int,
        typer.Option(
            min=1,
            max=24,
            help="Scan candidate times every N hours, then hourly around the best (1: all hours).",
        ),
    ] = 3,
) -> None:
    """Plan retry times, score and route for each failure. Retries obey the network rules file."""
    from billops.cli import settings
    from billops.policy import load_policy
    from billops.recovery.data import read_attempts, read_failures, write_jsonl
    from billops.recovery.model import load_model
    from billops.recovery.planner import load_network_rules

    s = settings()
    policy = load_policy(s.policy_file)
    rules = load_network_rules(policy.network_rules)
    m = load_model(model)
    if history is not None:
        hist = read_attempts(history)
    else:
        from billops.recovery.data import empty_attempts
        from billops.recovery.model import load_history

        stored = load_history(m)
        if stored is None:
            err.print(
                "[yellow]warning:[/yellow] no --history and this model keeps none: customers and cards "
                "are planned as if they had no earlier payments"
            )
        hist = stored if stored is not None else empty_attempts()
    fails = read_failures(failures)
    t0 = time.perf_counter()
    rows = plan_rows(
        m, fails, hist, max_retries=max_retries, policy=policy, rules=rules, scan_hours=scan_hours
    )
    dt = time.perf_counter() - t0
    n = write_jsonl(out, rows)
    routes: dict[str, int] = {}
    for r in rows:
        routes[r["route"]] = routes.get(r["route"], 0) + 1
    console.print(
        f"{n:,} plans → {out} in {dt:.2f} s ({n / dt if dt else 0:,.0f} failures/s) with {m.version}; "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(routes.items()))
    )


@recovery_app.command("models")
@_clear_errors
def models_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per model (for scripts).")] = False,
) -> None:
    """The registered recovery models, newest first (the newest valid one decides)."""
    import json

    from billops.cli import settings
    from billops.recovery.model import list_models, registry_dir

    s = settings()
    found = list_models(s.data_dir)
    if as_json:
        for n, e in enumerate(found):
            m = e["manifest"]
            print(
                json.dumps(
                    {
                        "version": m.get("version"),
                        "active": n == 0 and not e["error"],
                        "path": str(e["path"]),
                        "created_at": m.get("created_at"),
                        "training": m.get("training"),
                        "metrics": m.get("metrics"),
                        "library_versions": m.get("library_versions"),
                        "error": e["error"],
                    }
                )
            )
        return
    if not found:
        console.print(f"no recovery model registered under {registry_dir(s.data_dir)}: rules-v1 decides")
        return
    t = Table(
        "", "version", "created", "trained on (first failures)", "examples", "test AUC", "Brier", "path"
    )
    active = True
    for e in found:
        m = e["manifest"]
        if e["error"]:
            t.add_row("!", str(m.get("version")), "", f"unusable: {e['error']}", "", "", "", str(e["path"]))
            continue
        tr = m.get("training", {}).get("splits", {}).get("train", {})
        test = m.get("metrics", {}).get("test", {})
        t.add_row(
            "*" if active else "",
            m["version"],
            str(m.get("created_at", ""))[:19],
            f"{str(tr.get('first_failure_from', ''))[:10]} … {str(tr.get('first_failure_to', ''))[:10]}",
            f"{m.get('training', {}).get('examples', 0):,}",
            _fmt(test.get("auc")),
            _fmt(test.get("brier")),
            str(e["path"]),
        )
        active = False
    console.print(t)
    console.print("* decides new recoveries (policy recovery.model: latest)")


@recovery_app.command("evaluate")
@_clear_errors
def evaluate_cmd(
    out: Annotated[Path, typer.Option(help="Report directory (report.md, report.json, calibration.png).")],
    model: Annotated[Path | None, typer.Option(help="Model directory (required unless --worlds).")] = None,
    attempts: Annotated[
        Path | None,
        typer.Option(help="Labelled attempts to score (held out: after the model's training window)."),
    ] = None,
    history: Annotated[
        Path | None, typer.Option(help="Earlier attempts (customer history for --attempts).")
    ] = None,
    customers: Annotated[int, typer.Option(min=10, help="Backtest: simulated customers.")] = 20000,
    months: Annotated[int, typer.Option(min=2, max=36, help="Backtest: simulated months.")] = 12,
    seed: Annotated[
        int, typer.Option(help="Backtest: simulator seed (use the one the model trained on).")
    ] = 7,
    split_days: Annotated[int, typer.Option(min=7, help="Backtest: failures in the last N days.")] = 30,
    end: Annotated[
        str | None, typer.Option(help="Backtest: the simulated period's end (ISO date; default today).")
    ] = None,
    max_retries: Annotated[int, typer.Option(min=1, max=15)] = 8,
    backtest: Annotated[bool, typer.Option(help="Run the simulator backtest.")] = True,
    worlds: Annotated[
        str | None,
        typer.Option(
            help="Multi-world mode: all (the held-out worlds), every, or NAME[,NAME…] from "
            "sim/world_params.py. Each world trains its own model on its own history; --model is not used."
        ),
    ] = None,
    luck: Annotated[
        int, typer.Option(min=1, max=50, help="--worlds: luck replicates of the oracle's random stream.")
    ] = 10,
) -> None:
    """Backtest on a time split: AUC, Brier, calibration plot, and recovered revenue of the learned plans
    against fixed schedules (Polar 2/7/14/21 d, Kill Bill 8/8/8 d, 8 tries in 14 d) with common random
    numbers in the simulator."""
    from billops.cli import settings
    from billops.policy import load_policy
    from billops.recovery.evaluate import evaluate
    from billops.recovery.model import load_model

    s = settings()
    policy = load_policy(s.policy_file)
    if worlds is not None:
        _evaluate_worlds(worlds, out, policy, customers, months, seed, split_days, end, max_retries, luck)
        return
    if model is None:
        from billops.errors import InputError

        raise InputError("give --model MODEL_DIR (or --worlds to train one per simulator world)")
    m = load_model(model)
    report = evaluate(
        m,
        out=out,
        policy=policy,
        attempts=attempts,
        history=history,
        sim={"customers": customers, "months": months, "seed": seed, "split_days": split_days, "end": end}
        if backtest
        else None,
        max_retries=max_retries,
    )
    console.print(report["markdown"], markup=False, highlight=False)
    console.print(f"report → {out}")


def _evaluate_worlds(
    spec: str,
    out: Path,
    policy: Any,
    customers: int,
    months: int,
    seed: int,
    split_days: int,
    end: str | None,
    max_retries: int,
    luck: int,
) -> None:
    """`evaluate --worlds`: train, plan and play per world; report.md/report.json; exit 0 (a report)."""
    import json

    from billops.errors import InputError
    from billops.recovery.planner import load_network_rules
    from billops.recovery.worlds import evaluate_worlds, write_worlds_report
    from billops.sim.payers import parse_end
    from billops.sim.world_params import resolve_worlds

    try:
        names = resolve_worlds(spec)
    except ValueError as exc:
        raise InputError(f"--worlds: {exc}") from None
    report = evaluate_worlds(
        names,
        policy=policy,
        rules=load_network_rules(policy.network_rules),
        customers=customers,
        months=months,
        seed=seed,
        split_days=split_days,
        end=parse_end(end),
        max_retries=max_retries,
        luck=luck,
        log=lambda msg: err.print(msg, highlight=False, markup=False),
    )
    md = write_worlds_report(report, out)
    console.print(md, markup=False, highlight=False)
    console.print(json.dumps({"pass": report["pass"], "all_pass": report["all_pass"]}))
    console.print(f"report → {out}")


def register(app: typer.Typer) -> None:
    try:
        from billops.sim.payers import register as register_simulate
    except ImportError:  # pragma: no cover - sim ships with the package
        pass
    else:
        register_simulate(recovery_app)
    from billops.recovery.exploration_cli import register as register_exploration

    register_exploration(recovery_app)
    from billops.recovery.backtest_cli import register as register_backtest

    register_backtest(recovery_app)
    app.add_typer(recovery_app, name="recovery")
