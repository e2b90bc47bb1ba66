"""`billops recovery evaluate --worlds`: the recovery algorithm against several differently parameterized
simulator worlds (`sim/world_params.py`), each trained on its own history and scored on its own test
failures, against fixed schedules played the way a platform plays them.

Per world: simulate `customers` × `months`; train a fresh model (`training.train`) on the attempts before
the split; plan the failures after the split (`cli.plan_rows`); play every policy against the world's
oracle with common random numbers (`World.first_success`), for `luck` replicates of the oracle's random
stream. Fixed schedules retry every failure (needs-new-card included, never-codes too, as platform
defaults do); their network-rule violations are counted with the same rules file the planner obeys.
Revenue is compared with the best fixed schedule (by recovered amount at luck 0) with a paired bootstrap
95 % interval over invoices. The chosen plans' `recovery_probability` is checked by equal-mass deciles
(ECE) against each invoice's recovered share over the luck replicates. A world passes at a ratio ≥ 1.10
(the mean over the luck replicates), 0 violations and ECE ≤ 0.05.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from billops.recovery.planner import NetworkRules, _cap_violation

PASS_RATIO, PASS_VIOLATIONS, PASS_ECE = 1.10, 0, 0.05

# Fixed schedules, days after the first failure (REFERENCE.md, "What peers do by default").
FIXED_SCHEDULES: dict[str, list[float]] = {
    "stripe_8_in_14d": [14.0 * (k + 1) / 8 for k in range(8)],
    "polar_2_7_14_21d": [2.0, 7.0, 14.0, 21.0],
    "killbill_8_16_24d": [8.0, 16.0, 24.0],
    "lago_daily_x7": [float(k) for k in range(1, 8)],
    "recurly_like_1_3_5_7_10_14_20d": [1.0, 3.0, 5.0, 7.0, 10.0, 14.0, 20.0],
}


@lru_cache(maxsize=4096)
def _classify(code: str, mac: str, brand: str) -> tuple[bool, float]:
    """(never retry: a network "never" rule or a hard decline, wait hours of MAC 24–30)."""
    from billops.domain.declines import load_taxonomy

    d = load_taxonomy().classify(code, network_advice_code=mac or None, network=brand)
    return bool(d.never_retry or d.category.value == "hard"), float(d.retry_after_hours or 0.0)


def count_violations(
    plan: Sequence[datetime], *, failed_at: datetime, code: str, mac: str, brand: str, rules: NetworkRules
) -> dict[str, int]:
    """Network-rule violations of one invoice's retries: retries of a never-code (Visa category 1,
    Mastercard MAC 03/21, lost/stolen/fraud/pick-up and other hard declines), retries before a MAC 24–30
    wait, retries closer than the rules' minimum spacing, and retries past the per-card caps (counting
    the first failure and the earlier retries)."""
    never, wait_h = _classify(code, mac, brand)
    out = {"never_code": 0, "network_wait": 0, "spacing": 0, "card_cap": 0}
    if not plan:
        return out
    if never:
        out["never_code"] = len(plan)
    spacing = timedelta(hours=rules.min_spacing_hours)
    network, limits = rules.for_brand(brand)
    window = timedelta(days=int(limits.get("window_days", 30)))
    earlier = [failed_at]
    for t in plan:
        if wait_h and t < failed_at + timedelta(hours=wait_h):
            out["network_wait"] += 1
        if len(earlier) > 1 and t - earlier[-1] < spacing:
            out["spacing"] += 1
        if _cap_violation(network, limits, earlier, t, window):
            out["card_cap"] += 1
        earlier.append(t)
    return out


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[float, list[dict]]:
    """ECE over equal-mass bins (deciles by default) of p: Σ n_b/N · |mean p_b − mean y_b|, and the table."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if not len(p):
        return float("nan"), []
    order = np.argsort(p, kind="stable")
    table, ece = [], 0.0
    for b, idx in enumerate(np.array_split(order, min(bins, len(p)))):
        if not len(idx):
            continue
        pred, obs = float(p[idx].mean()), float(y[idx].mean())
        ece += len(idx) / len(p) * abs(pred - obs)
        table.append({"decile": b + 1, "predicted": pred, "observed": obs, "n": len(idx)})
    return ece, table


def bootstrap_ratio(
    a: np.ndarray, b: np.ndarray, *, n: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """sum(a)/sum(b) and its paired bootstrap 95 % interval (invoices resampled with replacement)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    point = float(a.sum() / b.sum()) if b.sum() else float("nan")
    if not len(a):
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    sa, sb = a[idx].sum(axis=1), b[idx].sum(axis=1)
    ratios = np.divide(sa, sb, out=np.full(n, np.nan), where=sb > 0)
    lo, hi = np.nanpercentile(ratios, [2.5, 97.5]) if np.isfinite(ratios).any() else (np.nan, np.nan)
    return point, float(lo), float(hi)


def play_plans(
    world: Any, failures: pd.DataFrame, plans: list[list[datetime]], luck: int
) -> tuple[np.ndarray, int]:
    """Per-invoice recovered amount and the attempts made (stopping at the first success)."""
    amounts = failures["amount"].to_numpy()
    ids = failures["invoice_id"].astype(str).tolist()
    got = np.zeros(len(ids), dtype=np.int64)
    tries = 0
    for i, times in enumerate(plans):
        hit = world.first_success(ids[i], times, luck=luck) if times else None
        tries += len(times) if hit is None else hit + 1
        if hit is not None:
            got[i] = amounts[i]
    return got, tries


def fixed_plans(failures: pd.DataFrame, days: list[float]) -> list[list[datetime]]:
    out = []
    for fa, dl in zip(failures["failed_at"], failures["deadline"], strict=True):
        f, d = fa.to_pydatetime(), dl.to_pydatetime()
        out.append([t for t in (f + timedelta(days=x) for x in days) if t <= d])
    return out


def evaluate_world(
    name: str,
    *,
    policy: Any,
    rules: NetworkRules,
    customers: int,
    months: int,
    seed: int,
    split_days: int,
    end: datetime,
    max_retries: int,
    luck: int,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """One world: simulate, train on its history, plan its test failures, play every policy."""
    from billops.recovery.cli import plan_rows
    from billops.recovery.training import train
    from billops.sim.business import add_months
    from billops.sim.payers import World
    from billops.sim.world_params import WORLDS

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    world = World(
        seed=seed, customers=customers, start=add_months(end, -months), end=end, params=WORLDS[name]
    )
    split = end - timedelta(days=split_days)
    history = world.history(until=split)
    failures = world.failures(split, end)
    timings["simulate_s"] = time.perf_counter() - t0
    log(f"{name}: {len(history):,} history attempts, {len(failures):,} test failures")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"billops-world-{name}-") as tmp:
        model, _ = train(history, out=Path(tmp) / "model", source=f"world {name}")
    timings["train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = plan_rows(model, failures, history, max_retries=max_retries, policy=policy, rules=rules)
    timings["plan_s"] = time.perf_counter() - t0
    plans: dict[str, list[list[datetime]]] = {
        "billops": [[datetime.fromisoformat(t.replace("Z", "+00:00")) for t in r["retries"]] for r in rows]
    }
    for fixed, days in FIXED_SCHEDULES.items():
        plans[fixed] = fixed_plans(failures, days)
    t0 = time.perf_counter()
    fa = failures["failed_at"].tolist()
    codes, macs = (
        failures["decline_code"].astype(str).tolist(),
        failures["network_advice_code"].astype(str).tolist(),
    )
    brands = failures["card_brand"].astype(str).tolist()
    failed_amount = int(failures["amount"].sum())
    n = len(failures)
    policies: dict[str, Any] = {}
    per_luck: dict[str, list[np.ndarray]] = {}
    for pname, pl in plans.items():
        viol = {"never_code": 0, "network_wait": 0, "spacing": 0, "card_cap": 0}
        for i, times in enumerate(pl):
            v = count_violations(
                times,
                failed_at=fa[i].to_pydatetime(),
                code=codes[i],
                mac=macs[i],
                brand=brands[i],
                rules=rules,
            )
            for k in viol:
                viol[k] += v[k]
        per_luck[pname] = []
        tries0 = 0
        for lk in range(luck):
            got, tries = play_plans(world, failures, pl, lk)
            per_luck[pname].append(got)
            if lk == 0:
                tries0 = tries
        got0 = per_luck[pname][0]
        policies[pname] = {
            "recovered_invoices": int((got0 > 0).sum()),
            "recovered_amount": int(got0.sum()),
            "amount_rate": got0.sum() / failed_amount if failed_amount else 0.0,
            "violations": int(sum(viol.values())),
            "violations_by_rule": viol,
            "mean_retries": tries0 / n if n else 0.0,
            "retries_planned_mean": sum(len(t) for t in pl) / n if n else 0.0,
        }
    best = max(FIXED_SCHEDULES, key=lambda k: policies[k]["recovered_amount"])
    for pname, r in policies.items():
        point, lo, hi = bootstrap_ratio(per_luck[pname][0], per_luck[best][0], seed=seed)
        lucky = [a.sum() / b.sum() for a, b in zip(per_luck[pname], per_luck[best], strict=True) if b.sum()]
        r.update(
            ratio_vs_best_fixed=point,
            ratio_ci95=[lo, hi],
            ratio_luck_mean=float(np.mean(lucky)) if lucky else float("nan"),
            ratio_luck_sd=float(np.std(lucky, ddof=1)) if len(lucky) > 1 else 0.0,
        )
    pred = np.array([float(r["recovery_probability"]) if r["retries"] else 0.0 for r in rows])
    # Each invoice's recovered share over the luck replicates: what its probability claims, with the
    # coin flips' noise averaged out (one replicate alone adds ~0.03 of pure noise to a decile's ECE).
    realized = np.mean([got > 0 for got in per_luck["billops"]], axis=0).astype(float)
    ece, table = expected_calibration_error(realized, pred)
    timings["play_s"] = time.perf_counter() - t0
    b = policies["billops"]
    checks = {
        # The mean over the luck replicates: one replicate's ratio moves by ±0.03-0.06 with the coins.
        "ratio": bool(b["ratio_luck_mean"] >= PASS_RATIO),
        "violations": b["violations"] <= PASS_VIOLATIONS,
        "ece": bool(ece <= PASS_ECE),
    }
    return {
        "world": name,
        "params": WORLDS[name].as_dict(),
        "customers": customers,
        "months": months,
        "seed": seed,
        "split": split.isoformat(),
        "end": end.isoformat(),
        "history_attempts": len(history),
        "failures": n,
        "failed_amount": failed_amount,
        "luck_replicates": luck,
        "model": model.version,
        "best_fixed": best,
        "policies": policies,
        "calibration": {
            "ece": ece,
            "mean_predicted": float(pred.mean()) if n else None,
            "realized": float(realized.mean()) if n else None,
            "deciles": table,
        },
        "checks": checks,
        "pass": all(checks.values()),
        "seconds": timings,
    }


def evaluate_worlds(
    names: list[str],
    *,
    policy: Any,
    rules: NetworkRules,
    customers: int,
    months: int,
    seed: int,
    split_days: int,
    end: datetime,
    max_retries: int = 8,
    luck: int = 10,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    results = []
    for name in names:
        t0 = time.perf_counter()
        r = evaluate_world(
            name,
            policy=policy,
            rules=rules,
            customers=customers,
            months=months,
            seed=seed,
            split_days=split_days,
            end=end,
            max_retries=max_retries,
            luck=max(1, luck),
            log=log,
        )
        r["seconds"]["total_s"] = time.perf_counter() - t0
        log(f"{name}: {'PASS' if r['pass'] else 'FAIL'} in {r['seconds']['total_s']:.0f} s")
        results.append(r)
    return {
        "criteria": {
            "ratio_at_least": PASS_RATIO,
            "violations_at_most": PASS_VIOLATIONS,
            "ece_at_most": PASS_ECE,
        },
        "worlds": results,
        "pass": {r["world"]: r["pass"] for r in results},
        "all_pass": all(r["pass"] for r in results),
    }


def worlds_markdown(report: dict[str, Any]) -> str:
    c = report["criteria"]
    lines = [
        "# Recovery policy across simulator worlds",
        "",
        f"Pass per world: revenue ≥ {c['ratio_at_least']:.2f}× the best fixed schedule, "
        f"{c['violations_at_most']} network-rule violations, ECE ≤ {c['ece_at_most']:.2f}. "
        "Each world trains its own model on its own history (docs/simulator.md, Worlds).",
        "",
    ]
    for w in report["worlds"]:
        cal = w["calibration"]
        lines += [
            f"## {w['world']}: {'PASS' if w['pass'] else 'FAIL'} "
            f"({', '.join(k for k, ok in w['checks'].items() if not ok) or 'all checks met'})",
            "",
            f"{w['customers']:,} customers × {w['months']} months (seed {w['seed']}), "
            f"{w['history_attempts']:,} "
            f"history attempts, {w['failures']:,} test failures after {w['split'][:10]} worth "
            f"{w['failed_amount'] / 100:,.2f}; best fixed schedule {w['best_fixed']}; "
            f"{w['luck_replicates']} luck replicates; {w['seconds'].get('total_s', 0):.0f} s.",
            "",
            "| policy | recovered | amount | amount rate | ratio vs best fixed (95% CI) | luck mean ± sd "
            "| violations | mean retries |",
            "|---|---:|---:|---:|---|---|---:|---:|",
        ]
        for name, r in w["policies"].items():
            lo, hi = r["ratio_ci95"]
            lines.append(
                f"| {name} | {r['recovered_invoices']:,} | {r['recovered_amount'] / 100:,.2f} | "
                f"{r['amount_rate']:.1%} | {r['ratio_vs_best_fixed']:.3f} ({lo:.3f}–{hi:.3f}) | "
                f"{r['ratio_luck_mean']:.3f} ± {r['ratio_luck_sd']:.3f} | {r['violations']:,} | "
                f"{r['mean_retries']:.2f} |"
            )
        lines += [
            "",
            f"BillOps calibration (recovery_probability by equal-mass decile): ECE **{cal['ece']:.3f}**",
            "",
            "| decile | predicted | observed | n |",
            "|---:|---:|---:|---:|",
            *(
                f"| {d['decile']} | {d['predicted']:.3f} | {d['observed']:.3f} | {d['n']} |"
                for d in cal["deciles"]
            ),
            "",
        ]
    return "\n".join(lines)


def _clean(v: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def write_worlds_report(report: dict[str, Any], out: Path) -> str:
    """report.md and report.json (atomically) in `out`; returns the markdown."""
    import json

    from billops.recovery.evaluate import _write

    out.mkdir(parents=True, exist_ok=True)
    md = worlds_markdown(report)
    _write(out / "report.md", md + "\n")
    _write(out / "report.json", json.dumps(_clean(report), indent=2, default=str) + "\n")
    return md
