"""Recovery model at scale: simulate, train on ≥ 1M attempts, plan thousands of failures, backtest.

    python benchmarks/recovery.py                  # ~95,000 customers × 12 months (≥ 1M training attempts)
    python benchmarks/recovery.py --quick          # small sizes: a smoke run in well under a minute
    python benchmarks/recovery.py --customers 50000 --months 12 --seed 7 --end 2026-11-01

Targets (the issue): train on 1M attempts in under 5 minutes; plan ≥ 2,000 failures/s.

Every phase runs in a fresh child process (this script with `--phase`), so each figure is that phase
alone and the peak memory (`ru_maxrss` of the child) includes LightGBM's C++ allocations:

1. generate: the simulated payer world (`billops.sim.payers.World`) from --seed/--customers/--months/
   --end; the attempts before the split (--end − 30 days) are written with
   `billops.recovery.data.write_attempts` to history.csv in a temporary directory, the failures of the
   last 30 days (and, if fewer than 5,000, a batch of up to 20,000 from earlier months too) as JSONL.
2. train: reads history.csv (`read_attempts`, the path of `billops recovery train --attempts`), then
   `billops.recovery.training.train()`: wall time, and the child's RSS after imports and loading (the
   baseline) and its peak RSS at the end.
3. plan: loads the model and reads the files (not timed), then times `plan_rows()` (customer-history
   preparation included) with max_retries=8 twice (first call in the process, then steady state) and
   with max_retries=4.
4. evaluate: `billops.recovery.evaluate.backtest()` on the same world (split_days=30): recovered
   invoices and amount per policy, learned plans against fixed schedules.

Prints the figures and one JSON line (`{"benchmark": "recovery", ...}`). Every wait is bounded; the
temporary directory (data and model) is removed at the end. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DEFAULT_CUSTOMERS = 95_000  # ~11.5 attempts per customer-year: ~1.02M attempts before the 30-day split
QUICK_CUSTOMERS, QUICK_MONTHS = 4_000, 6
SPLIT_DAYS = 30
BATCH_WHEN_BELOW, BATCH = 5_000, 20_000
TRAIN_TARGET_S, PLAN_TARGET_PER_S, ATTEMPTS_TARGET = 300.0, 2_000.0, 1_000_000
DATA_PASSING = (
    "generated once in its own child; history.csv written with billops.recovery.data.write_attempts, "
    "failures with billops.sim.payers.write_failures_jsonl (temp dir); train/plan children read them with "
    "read_attempts/read_failures (reading timed apart, not in the train/plan figures)"
)


# ----------------------------------------------------------------------------- helpers


def parse_end(value: str) -> datetime:
    # The same parsing as billops.recovery.evaluate.backtest, so both build the same world.
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float | None:
    """This process's current resident set size (Linux /proc), None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, default=str), flush=True)


# ----------------------------------------------------------------------------- phases (children)


def phase_generate(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import pandas as pd

    from billops.recovery.data import write_attempts
    from billops.sim.business import add_months
    from billops.sim.payers import World, write_failures_jsonl

    end = parse_end(args.end)
    start = add_months(end, -args.months)
    split = end - timedelta(days=SPLIT_DAYS)
    t0 = time.perf_counter()
    world = World(seed=args.seed, customers=args.customers, start=start, end=end)
    history = world.history(until=split)
    failures = world.failures(split, end)
    generate_s = time.perf_counter() - t0
    total_attempts = len(world.history())

    batch = None
    if len(failures) < BATCH_WHEN_BELOW:
        frames, n, hi = [failures], len(failures), split
        while n < BATCH and hi > start:
            lo = max(start, hi - timedelta(days=30))
            older = world.failures(lo, hi)
            frames.insert(0, older)
            n += len(older)
            hi = lo
        batch = pd.concat(frames, ignore_index=True).tail(BATCH).reset_index(drop=True)

    t0 = time.perf_counter()
    write_attempts(work / "history.csv", history)
    write_failures_jsonl(failures, work / "failures_30d.jsonl")
    if batch is not None:
        write_failures_jsonl(batch, work / "failures_batch.jsonl")
    write_s = time.perf_counter() - t0
    return {
        "customers": args.customers,
        "months": args.months,
        "start": start.isoformat(),
        "split": split.isoformat(),
        "end": end.isoformat(),
        "attempts_total": total_attempts,
        "attempts_training": len(history),
        "failures_30d": len(failures),
        "failures_batch": None if batch is None else len(batch),
        "batch_from": None if batch is None or not len(batch) else batch["failed_at"].min().isoformat(),
        "generate_seconds": generate_s,
        "write_seconds": write_s,
        "history_csv_mib": (work / "history.csv").stat().st_size / 2**20,
        "max_rss_mib": peak_rss_mib(),
    }


def phase_train(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import lightgbm  # noqa: F401  (imported before the baseline: its library is not a training cost)
    import sklearn.isotonic
    import sklearn.metrics  # noqa: F401

    from billops.recovery.data import read_attempts
    from billops.recovery.training import train

    rss_imports = rss_mib()
    t0 = time.perf_counter()
    frame = read_attempts(work / "history.csv")
    read_s = time.perf_counter() - t0
    rss_loaded, peak_loaded = rss_mib(), peak_rss_mib()

    t0 = time.perf_counter()
    model, report = train(frame, out=work / "model", source="benchmarks/recovery.py")
    train_s = time.perf_counter() - t0
    m = model.manifest
    return {
        "attempts": len(frame),
        "read_seconds": read_s,
        "train_seconds": train_s,
        "prepare_seconds": report["prepare_seconds"],
        "fit_seconds": report["fit_seconds"],
        "rss_after_imports_mib": rss_imports,
        "rss_after_load_mib": rss_loaded,
        "peak_rss_before_training_mib": peak_loaded,
        "peak_rss_mib": peak_rss_mib(),
        "rss_end_mib": rss_mib(),
        "examples": m["training"]["examples"],
        "train_examples": m["training"]["splits"]["train"]["examples"],
        "best_iteration": m["params"]["best_iteration"],
        "test_auc": m["metrics"]["test"]["auc"],
        "test_brier": m["metrics"]["test"]["brier"],
        "model": model.version,
    }


def phase_plan(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from billops.policy import load_policy
    from billops.recovery.cli import plan_rows
    from billops.recovery.data import read_attempts, read_failures
    from billops.recovery.model import load_model
    from billops.recovery.planner import load_network_rules

    policy = load_policy(None)
    rules = load_network_rules("builtin")
    t0 = time.perf_counter()
    model = load_model(work / "model")
    history = read_attempts(work / "history.csv")
    sets = {"last_30_days": read_failures(work / "failures_30d.jsonl")}
    if (work / "failures_batch.jsonl").exists():
        sets["batch"] = read_failures(work / "failures_batch.jsonl")
    load_s = time.perf_counter() - t0

    def timed(failures: Any, k: int) -> dict[str, Any]:
        t = time.perf_counter()
        rows = plan_rows(model, failures, history, max_retries=k, policy=policy, rules=rules)
        dt = time.perf_counter() - t
        with_retries = [r for r in rows if r["retries"]]
        return {
            "max_retries": k,
            "failures": len(rows),
            "seconds": dt,
            "per_second": len(rows) / dt if dt else None,
            "plans_with_retries": len(with_retries),
            "retries_planned": sum(len(r["retries"]) for r in with_retries),
        }

    out: dict[str, Any] = {"history_attempts": len(history), "load_seconds": load_s, "sets": {}}
    for name, failures in sets.items():
        out["sets"][name] = {
            "first": timed(failures, 8),  # the first call on these inputs (the very first in the process)
            "steady": timed(failures, 8),  # the same inputs again
            "max4": timed(failures, 4),
        }
    if args.profile:
        import cProfile
        import io
        import pstats

        name = "batch" if "batch" in sets else "last_30_days"
        prof = cProfile.Profile()
        prof.enable()
        plan_rows(model, sets[name], history, max_retries=8, policy=policy, rules=rules)
        prof.disable()
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("tottime").print_stats(20)
        stats.sort_stats("cumulative").print_stats(30)
        out["profile"] = {"set": name, "text": buf.getvalue()}
    out["max_rss_mib"] = peak_rss_mib()
    return out


def phase_evaluate(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from billops.policy import load_policy
    from billops.recovery.evaluate import backtest
    from billops.recovery.model import load_model

    model = load_model(work / "model")
    policy = load_policy(None)
    t0 = time.perf_counter()
    bt = backtest(
        model,
        policy,
        customers=args.customers,
        months=args.months,
        seed=args.seed,
        split_days=SPLIT_DAYS,
        end=args.end,
        max_retries=8,
    )
    bt["seconds"] = time.perf_counter() - t0
    bt["max_rss_mib"] = peak_rss_mib()
    return bt


PHASES = {"generate": phase_generate, "train": phase_train, "plan": phase_plan, "evaluate": phase_evaluate}


# ----------------------------------------------------------------------------- orchestrator


def run_phase(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--phase", name, "--work", str(work),
        "--customers", str(args.customers), "--months", str(args.months),
        "--seed", str(args.seed), "--end", args.end,
    ]  # fmt: skip
    if args.profile:
        cmd.append("--profile")
    t0 = time.perf_counter()
    # stderr passes through (warnings show up as they happen); the child's last stdout line is its result.
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=args.timeout, check=False)
    if out.returncode != 0:
        raise SystemExit(f"phase {name} failed ({out.returncode}); its stdout ended:\n{out.stdout[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - t0
    return result


def machine() -> dict[str, Any]:
    import lightgbm
    import numpy
    import pandas

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gib = None
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu,
        "memory_gib": None if mem_gib is None else round(mem_gib, 1),
        "python": platform.python_version(),
        "lightgbm": lightgbm.__version__,
        "pandas": pandas.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def load_average() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def mib(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f} MiB"


def print_plan_set(name: str, s: dict[str, Any], history_attempts: int) -> None:
    n = s["first"]["failures"]
    print(f"  {name}: {n:,} failures, history {history_attempts:,} attempts")
    for label, key in (
        ("max_retries=8, first call", "first"),
        ("max_retries=8, steady state", "steady"),
        ("max_retries=4", "max4"),
    ):
        r = s[key]
        print(
            f"    {label:<28}{r['seconds']:>8.2f} s {r['per_second']:>10,.0f} failures/s"
            f"   ({r['plans_with_retries']:,} plans with retries, {r['retries_planned']:,} retries)"
        )


def orchestrate(args: argparse.Namespace) -> None:
    info = machine()
    print(
        f"machine: nproc {info['nproc']}, {info['cpu'] or 'cpu n/a'}, {info['memory_gib']} GiB RAM; "
        f"python {info['python']}, lightgbm {info['lightgbm']}, pandas {info['pandas']}, "
        f"numpy {info['numpy']}"
    )
    print(
        f"world: seed {args.seed}, {args.customers:,} customers, {args.months} months ending {args.end}, "
        f"split {SPLIT_DAYS} days before the end" + ("  [--quick]" if args.quick else "")
    )
    print(f"data between phases: {DATA_PASSING}")
    info["load_average_start"] = load_average()
    print(
        f"load average (1/5/15 min) at the start: {info['load_average_start']} "
        "(other work on the machine skews the figures)"
    )
    work = Path(tempfile.mkdtemp(prefix="billops-bench-recovery-"))
    began = time.perf_counter()
    try:
        gen = run_phase("generate", args, work)
        print("\n1. data generation (billops.sim.payers.World)")
        print(
            f"  {gen['customers']:,} customers, {gen['start'][:10]} .. {gen['end'][:10]}: "
            f"{gen['attempts_total']:,} attempts in {gen['generate_seconds']:.1f} s "
            f"({gen['attempts_total'] / gen['customers'] / gen['months'] * 12:.1f} per customer-year)"
        )
        enough = "yes" if gen["attempts_training"] >= ATTEMPTS_TARGET else "NO"
        if args.quick:
            enough += ", --quick"
        print(
            f"  training history (before {gen['split'][:10]}): {gen['attempts_training']:,} attempts "
            f"(≥ 1,000,000: {enough}); wrote history.csv ({gen['history_csv_mib']:,.0f} MiB) and the "
            f"failures in {gen['write_seconds']:.1f} s; child peak RSS {mib(gen['max_rss_mib'])}"
        )
        fb = gen["failures_batch"]
        print(
            f"  failures in the last 30 days: {gen['failures_30d']:,}"
            + (
                f"; batch for throughput: {fb:,} failures from {str(gen['batch_from'])[:10]} to the end"
                if fb is not None
                else ""
            )
        )

        tr = run_phase("train", args, work)
        print(f"\n2. training (billops.recovery.training.train) on {tr['attempts']:,} attempts")
        print(
            f"  wall {tr['train_seconds']:.1f} s (prepare {tr['prepare_seconds']:.1f} s, LightGBM fit "
            f"{tr['fit_seconds']:.1f} s, rest: calibration, metrics, save); target < {TRAIN_TARGET_S:.0f} s: "
            f"{'met' if tr['train_seconds'] < TRAIN_TARGET_S else 'MISSED'}"
        )
        print(
            f"  {tr['examples']:,} retry examples ({tr['train_examples']:,} in the train slice), "
            f"{tr['best_iteration']} boosting rounds, test AUC {tr['test_auc']:.3f}, "
            f"Brier {tr['test_brier']:.3f}"
        )
        print(
            f"  memory of the training child: RSS {mib(tr['rss_after_imports_mib'])} after imports, "
            f"{mib(tr['rss_after_load_mib'])} after reading history.csv ({tr['read_seconds']:.1f} s; "
            f"peak so far {mib(tr['peak_rss_before_training_mib'])})"
        )
        base = tr["rss_after_load_mib"] or 0.0
        print(
            f"  peak RSS (ru_maxrss, includes LightGBM's C++ allocations) {mib(tr['peak_rss_mib'])}: "
            f"+{mib(tr['peak_rss_mib'] - base)} over the loaded baseline; RSS at the end "
            f"{mib(tr['rss_end_mib'])}"
        )

        pl = run_phase("plan", args, work)
        print("\n3. planning throughput (billops.recovery.cli.plan_rows, customer history included)")
        print(f"  loading the model and reading the files (not timed below): {pl['load_seconds']:.1f} s")
        for name, s in pl["sets"].items():
            print_plan_set(name, s, pl["history_attempts"])
        best = max(s["steady"]["per_second"] or 0.0 for s in pl["sets"].values())
        print(
            f"  best steady-state rate {best:,.0f} failures/s; target ≥ {PLAN_TARGET_PER_S:,.0f}: "
            f"{'met' if best >= PLAN_TARGET_PER_S else 'MISSED'}; child peak RSS {mib(pl['max_rss_mib'])}"
        )
        if "profile" in pl:
            print(f"\n  cProfile of plan_rows on the {pl['profile']['set']} set (max_retries=8):")
            print(pl["profile"]["text"])

        ev = run_phase("evaluate", args, work)
        print(
            f"\n4. backtest (billops.recovery.evaluate.backtest, same world, split_days={SPLIT_DAYS}, "
            f"max_retries=8) in {ev['seconds']:.1f} s"
        )
        print(
            f"  {ev['failures']:,} failed renewals after {ev['world']['split'][:10]}, failed amount "
            f"{ev['failed_amount'] / 100:,.2f} (minor units / 100, summed across currencies); "
            f"history {ev['history_attempts']:,} attempts"
        )
        head = (
            f"  {'policy':<24}{'recovered':>10}{'inv rate':>10}{'recovered amount':>18}"
            f"{'amt rate':>10}{'attempts':>10}"
        )
        print(head)
        print("  " + "-" * (len(head) - 2))
        for name, r in ev["policies"].items():
            print(
                f"  {name:<24}{r['recovered_invoices']:>10,}{r['invoice_rate']:>10.1%}"
                f"{r['recovered_amount'] / 100:>18,.2f}{r['amount_rate']:>10.1%}{r['attempts_made']:>10,}"
            )
        best_fixed = ev["policies"][ev["best_fixed"]]["recovered_amount"]
        for name, r in ev["policies"].items():
            if name.startswith("billops_learned") and best_fixed:
                print(
                    f"  {name} vs the best fixed schedule ({ev['best_fixed']}): "
                    f"{r['recovered_amount'] / best_fixed - 1:+.1%} recovered amount, "
                    f"{r['attempts_made'] - ev['policies'][ev['best_fixed']]['attempts_made']:+,} attempts"
                )
        pc = ev.get("plan_calibration") or {}
        if pc.get("plans_with_retries"):
            print(
                f"  recovery likelihood check: {pc['plans_with_retries']:,} learned plans with retries, "
                f"predicted {pc['mean_predicted']:.1%} on average, realized {pc['realized']:.1%}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - began
    info["load_average_end"] = load_average()
    print(
        f"\ntotal {total:.0f} s (four child processes); load average at the end "
        f"{info['load_average_end']}; temporary directory removed"
    )
    for r in (gen, tr, pl, ev):
        r.pop("profile", None)
    line = {
        "benchmark": "recovery",
        "machine": info,
        "args": {k: getattr(args, k) for k in ("customers", "months", "seed", "end", "quick")},
        "generate": gen,
        "train": tr,
        "plan": pl,
        "evaluate": {k: ev[k] for k in ("failures", "failed_amount", "policies", "best_fixed", "seconds")}
        | {"uplift_vs_best_fixed": ev["uplift_vs_best_fixed"]},
        "total_seconds": total,
    }
    print(json.dumps(line, default=str))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, help=f"simulated customers (default {DEFAULT_CUSTOMERS:,})")
    p.add_argument("--months", type=int, help="months of billing ending at --end (default 12)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--end", default="2026-11-01", help="end of the simulated period, ISO date (fixed)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"small sizes ({QUICK_CUSTOMERS:,} customers, {QUICK_MONTHS} months): a smoke run",
    )
    p.add_argument("--profile", action="store_true", help="also cProfile one plan_rows call and print it")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds each phase may take (default 1800)")
    p.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.customers is None:
        args.customers = QUICK_CUSTOMERS if args.quick else DEFAULT_CUSTOMERS
    if args.months is None:
        args.months = QUICK_MONTHS if args.quick else 12
    if args.customers < 10 or args.months < 2:
        p.error("--customers must be at least 10 and --months at least 2")
    try:
        parse_end(args.end)
    except ValueError:
        p.error(f"--end: not an ISO date: {args.end!r}")
    if args.phase:
        emit(PHASES[args.phase](args, Path(args.work)))
        return
    orchestrate(args)


if __name__ == "__main__":
    main()
