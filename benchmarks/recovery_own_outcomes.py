"""Would calibrating on BillOps' own executed plans fix the score's calibration? (issue 15, item 4)

    python benchmarks/recovery_own_outcomes.py                       # all seven worlds, ~3 min
    python benchmarks/recovery_own_outcomes.py --worlds updater_rich,payday_heavy

The retry model is calibrated on the history's own retries; the planner chooses other times, where its
chances turn out too flat (docs/models.md, "What still misses, measured"). This measures the way out
before it is built. Per world of `billops.sim.world_params.WORLDS` (seed, customers, months and end as
in recovery_worlds.py):

1. train a model on the history before end − 60 days;
2. month 1 (end − 60 … end − 30 days): plan its failures and play the plans once (luck 0): what one
   month of BillOps' executed retries would have recorded, one outcome per plan;
3. fit the plan probability → outcome map on those plans (isotonic; Platt beside it);
4. month 2 (the last 30 days): plan with the same model (the history up to end − 30 days as its
   customers' features) and compare the ECE of the plans' probabilities as trained and after each map,
   against each invoice's recovered share over --luck replicates (as recovery_worlds.py does).

Prints one line per world and one JSON line (`{"benchmark": "recovery_own_outcomes", ...}`). Nothing
is asserted. Not wired into the product yet: the artifact already has a slot for a plan-level map
(`plan_x`/`plan_y`, identity today).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(q / (1 - q))


def one_world(name: str, args: argparse.Namespace, policy: Any, rules: Any) -> dict[str, Any]:
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    from billops.recovery.cli import plan_rows
    from billops.recovery.training import train
    from billops.recovery.worlds import expected_calibration_error, play_plans
    from billops.sim.business import add_months
    from billops.sim.payers import World
    from billops.sim.world_params import WORLDS

    t0 = time.perf_counter()
    end = args.end
    world = World(
        seed=args.seed,
        customers=args.customers,
        start=add_months(end, -args.months),
        end=end,
        params=WORLDS[name],
    )
    t1, t2 = end - timedelta(days=60), end - timedelta(days=30)
    with tempfile.TemporaryDirectory(prefix=f"billops-own-{name}-") as tmp:
        model, _ = train(world.history(until=t1), out=Path(tmp) / "model", source=f"world {name}")
    months = {}
    for label, lo, hi in (("month1", t1, t2), ("month2", t2, end)):
        failures = world.failures(lo, hi)
        rows = plan_rows(model, failures, world.history(until=lo), max_retries=8, policy=policy, rules=rules)
        plans = [[datetime.fromisoformat(t.replace("Z", "+00:00")) for t in r["retries"]] for r in rows]
        pred = np.array([float(r["recovery_probability"]) if r["retries"] else 0.0 for r in rows])
        once = play_plans(world, failures, plans, 0)[0] > 0
        share = np.mean([play_plans(world, failures, plans, lk)[0] > 0 for lk in range(args.luck)], axis=0)
        months[label] = (pred, once.astype(float), share)
    p1, y1, _ = months["month1"]
    p2, _, share2 = months["month2"]
    fit1, use2 = p1 > 0, p2 > 0
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p1[fit1], y1[fit1])
    platt = LogisticRegression(C=1e6).fit(_logit(p1[fit1]).reshape(-1, 1), y1[fit1])
    safe2 = np.where(use2, p2, 0.5)
    p_iso = np.where(use2, iso.predict(safe2), 0.0)
    p_platt = np.where(use2, platt.predict_proba(_logit(safe2).reshape(-1, 1))[:, 1], 0.0)
    return {
        "world": name,
        "month1_plans": int(fit1.sum()),
        "month2_plans": int(use2.sum()),
        "ece_as_trained": expected_calibration_error(share2, p2)[0],
        "ece_isotonic_own": expected_calibration_error(share2, p_iso)[0],
        "ece_platt_own": expected_calibration_error(share2, p_platt)[0],
        "platt": [float(platt.intercept_[0]), float(platt.coef_[0][0])],
        "seconds": time.perf_counter() - t0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", default="every", help="all (held-out), every, or NAME[,NAME...]")
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--end", default="2026-11-01", help="end of the simulated period (ISO date)")
    ap.add_argument("--luck", type=int, default=10, help="luck replicates for month 2's recovered shares")
    args = ap.parse_args()
    from billops.policy import load_policy
    from billops.recovery.planner import load_network_rules
    from billops.sim.world_params import resolve_worlds

    try:
        names = resolve_worlds(args.worlds)
        args.end = datetime.fromisoformat(args.end).replace(tzinfo=UTC)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    policy = load_policy()
    rules = load_network_rules(policy.network_rules)
    results = []
    for name in names:
        r = one_world(name, args, policy, rules)
        results.append(r)
        print(
            f"{name:18s} month-1 plans {r['month1_plans']:5d}; "
            f"month-2 ECE as trained {r['ece_as_trained']:.3f}, "
            f"isotonic on own outcomes {r['ece_isotonic_own']:.3f}, Platt {r['ece_platt_own']:.3f} "
            f"(a {r['platt'][0]:+.2f}, b {r['platt'][1]:.2f}); {r['seconds']:.0f} s",
            flush=True,
        )
    print(
        json.dumps(
            {
                "benchmark": "recovery_own_outcomes",
                "customers": args.customers,
                "seed": args.seed,
                "luck": args.luck,
                "worlds": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
