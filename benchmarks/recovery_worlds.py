"""The recovery policy across differently parameterized simulator worlds (issue 15, item 5).

    python benchmarks/recovery_worlds.py                  # held-out worlds, 20,000 customers × 12 months
    python benchmarks/recovery_worlds.py --customers 3000 # smaller and faster (noisier)
    python benchmarks/recovery_worlds.py --worlds every --luck 10 --seed 7 --end 2026-11-01

For every world (`billops.sim.world_params.WORLDS`): simulate, train a fresh model on the world's own
history (`billops.recovery.training.train`), plan the failures of the last 30 days
(`billops.recovery.cli.plan_rows`, max retries 8) and play BillOps and the fixed schedules against the
world's oracle with common random numbers and --luck replicates (`billops.recovery.worlds`). The same
code path as `billops recovery evaluate --worlds`. Prints a table per world and one JSON line
(`{"benchmark": "recovery_worlds", ...}`). Not a test: nothing is asserted; pass/fail is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="all", help="all (held-out), every, or NAME[,NAME...]")
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--split-days", type=int, default=30)
    ap.add_argument("--end", default="2026-11-01", help="end of the simulated period (ISO date)")
    ap.add_argument("--max-retries", type=int, default=8)
    ap.add_argument("--luck", type=int, default=10, help="luck replicates of the oracle's random stream")
    ap.add_argument("--out", type=Path, default=None, help="also write report.md/report.json here")
    args = ap.parse_args(argv)

    from billops.policy import load_policy
    from billops.recovery.planner import load_network_rules
    from billops.recovery.worlds import evaluate_worlds, worlds_markdown, write_worlds_report
    from billops.sim.payers import parse_end
    from billops.sim.world_params import resolve_worlds

    try:
        names = resolve_worlds(args.worlds)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    policy = load_policy()
    print(
        f"nproc {os.cpu_count()}, Python {platform.python_version()}, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; worlds {', '.join(names)}; "
        f"{args.customers:,} customers × {args.months} months, seed {args.seed}, {args.luck} luck replicates",
        flush=True,
    )
    t0 = time.perf_counter()
    report = evaluate_worlds(
        names,
        policy=policy,
        rules=load_network_rules(policy.network_rules),
        customers=args.customers,
        months=args.months,
        seed=args.seed,
        split_days=args.split_days,
        end=parse_end(args.end),
        max_retries=args.max_retries,
        luck=args.luck,
        log=lambda m: print(m, flush=True),
    )
    total = time.perf_counter() - t0
    print(write_worlds_report(report, args.out) if args.out else worlds_markdown(report))
    summary = {
        "benchmark": "recovery_worlds",
        "customers": args.customers,
        "months": args.months,
        "seed": args.seed,
        "luck": args.luck,
        "total_s": round(total, 1),
        "load_average_end": os.getloadavg()[0],
        "all_pass": report["all_pass"],
        "worlds": {
            w["world"]: {
                "pass": w["pass"],
                "checks": w["checks"],
                "failures": w["failures"],
                "best_fixed": w["best_fixed"],
                "ratio": round(w["policies"]["billops"]["ratio_vs_best_fixed"], 4),
                "ratio_ci95": [round(x, 4) for x in w["policies"]["billops"]["ratio_ci95"]],
                "ratio_luck_mean": round(w["policies"]["billops"]["ratio_luck_mean"], 4),
                "ratio_luck_sd": round(w["policies"]["billops"]["ratio_luck_sd"], 4),
                "violations": w["policies"]["billops"]["violations"],
                "best_fixed_violations": w["policies"][w["best_fixed"]]["violations"],
                "mean_retries": round(w["policies"]["billops"]["mean_retries"], 2),
                "ece": round(w["calibration"]["ece"], 4),
                "seconds": round(w["seconds"]["total_s"], 1),
            }
            for w in report["worlds"]
        },
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
