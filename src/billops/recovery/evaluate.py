"""`billops recovery evaluate`: how good is a model, and does it recover more than fixed schedules?

1. Scoring quality on labelled attempts after the model's training window (a time split): AUC, Brier
   score, log loss, and a calibration plot (reliability diagram, PNG).
2. A revenue backtest in the project's simulator (`sim/payers.py`): the failures of the last
   `split_days` of a simulated period are planned by the learned model (trained on attempts before the
   split) and by fixed schedules: Polar (days 2, 7, 14, 21), Kill Bill (every 8 days: 8, 16, 24) and
   8 evenly spaced tries in 14 days. Every policy is played against the same oracle with common random
   numbers: an attempt on an invoice in a given hour succeeds or fails the same way whoever asks. The
   same deadline (21 days) and the same network "never" blocks (no retry of hard declines, MAC 03/21,
   Visa category 1) apply to all policies, so the difference is timing and count alone.
3. Across worlds (`--worlds`, `worlds.py`): a fresh model per simulator world, fixed schedules played as
   platforms play them (every failure retried, violations counted), bootstrap CIs, luck replicates, ECE.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from billops.policy import Policy
from billops.recovery.model import CustomerHistory, RecoveryModel, feature_matrix, prepare, training_examples
from billops.recovery.planner import load_network_rules
from billops.recovery.training import metrics
from billops.sim.business import add_months

FIXED = {
    "polar_2_7_14_21d": [2.0, 7.0, 14.0, 21.0],
    "killbill_every_8d": [8.0, 16.0, 24.0],
    "eight_in_14d": [14.0 * (k + 1) / 8 for k in range(8)],
}


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    if not len(y):
        return []
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(0, len(edges) - 2))
    rows = []
    for b in range(max(1, len(edges) - 1)):
        sel = which == b
        if sel.any():
            rows.append(
                {"predicted": float(p[sel].mean()), "observed": float(y[sel].mean()), "n": int(sel.sum())}
            )
    return rows


def plot_calibration(table: list[dict[str, float]], p: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hx) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot([r["predicted"] for r in table], [r["observed"] for r in table], marker="o", label="model")
    ax.set_ylabel("observed success rate")
    ax.set_title(title)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    hx.hist(p, bins=40, range=(0, 1), color="tab:blue", alpha=0.7)
    hx.set_xlabel("predicted probability of success")
    hx.set_ylabel("retries")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def score_attempts(
    model: RecoveryModel, attempts: pd.DataFrame, history: pd.DataFrame | None
) -> dict[str, Any]:
    """Metrics on the retries whose invoice first failed after the model's training data ended."""
    combined = attempts if history is None else pd.concat([history, attempts], ignore_index=True)
    combined = combined.drop_duplicates("attempt_id", keep="last")
    ex = training_examples(combined)
    cutoff = (
        pd.Timestamp(model.manifest["training"]["attempts_to"]) if model.manifest.get("training") else None
    )
    total = len(ex)
    if cutoff is not None and len(ex):
        ex = ex[ex["first_failed_at"] > cutoff].reset_index(drop=True)
    if not len(ex):
        return {"rows": 0, "skipped_inside_training_window": total, "y": np.zeros(0), "p": np.zeros(0)}
    ex = prepare(ex, CustomerHistory.build(combined))
    p = model.predict(feature_matrix(ex, model.vocab))
    y = ex["label"].to_numpy()
    out = metrics(y, p)
    out["skipped_inside_training_window"] = total - len(ex)
    out["y"], out["p"] = y, p
    return out


def _fixed_times(failed_at: datetime, deadline: datetime, days: list[float]) -> list[datetime]:
    return [t for t in (failed_at + timedelta(days=d) for d in days) if t <= deadline]


def sim_world(
    *, customers: int, months: int, seed: int, split_days: int, end: str | None
) -> tuple[Any, datetime, datetime]:
    """The simulated world `billops recovery simulate` builds from the same arguments (start = end −
    months, same day of month), with its split and end."""
    from billops.sim.payers import World, parse_end

    end_t = parse_end(end)
    world = World(seed=seed, customers=customers, start=add_months(end_t, -months), end=end_t)
    return world, end_t - timedelta(days=split_days), end_t


def backtest(
    model: RecoveryModel,
    policy: Policy,
    *,
    customers: int,
    months: int,
    seed: int,
    split_days: int,
    end: str | None,
    max_retries: int,
    built: tuple[Any, datetime, datetime] | None = None,
) -> dict[str, Any]:
    """`built`: a `sim_world(...)` of the same arguments already built (it is not built twice)."""
    from billops.recovery.cli import plan_rows

    world, split, end_t = built or sim_world(
        customers=customers, months=months, seed=seed, split_days=split_days, end=end
    )
    start_t = world.start
    history = world.history(until=split)
    failures = world.failures(split, end_t)
    rules = load_network_rules(policy.network_rules)
    results: dict[str, dict[str, Any]] = {}
    failed_amount = int(failures["amount"].sum())

    def play(name: str, plans: list[list[datetime]]) -> None:
        rec_n = rec_amt = tries = 0
        for (_, row), times in zip(failures.iterrows(), plans, strict=True):
            hit = world.first_success(str(row["invoice_id"]), times) if times else None
            tries += len(times) if hit is None else hit + 1
            if hit is not None:
                rec_n += 1
                rec_amt += int(row["amount"])
        results[name] = {
            "recovered_invoices": rec_n,
            "recovered_amount": rec_amt,
            "invoice_rate": rec_n / len(failures) if len(failures) else 0.0,
            "amount_rate": rec_amt / failed_amount if failed_amount else 0.0,
            "attempts_made": tries,
            "retries_planned": int(sum(len(t) for t in plans)),
        }

    learned: dict[int, list[list[datetime]]] = {}
    plan_calibration: dict[str, Any] = {}
    for k in sorted({max_retries, 4}):
        rows = plan_rows(model, failures, history, max_retries=k, policy=policy, rules=rules)
        learned[k] = [[datetime.fromisoformat(t.replace("Z", "+00:00")) for t in r["retries"]] for r in rows]
        play(f"billops_learned_max{k}", learned[k])
        if k == max_retries:
            # Is the recovery likelihood honest? Predicted P(plan recovers) against what happened.
            pred = np.array([r["recovery_probability"] for r in rows if r["retries"]])
            got = np.array(
                [
                    world.first_success(r["invoice_id"], times) is not None
                    for r, times in zip(rows, learned[k], strict=True)
                    if times
                ],
                dtype=float,
            )
            plan_calibration = {
                "plans_with_retries": len(pred),
                "mean_predicted": float(pred.mean()) if len(pred) else None,
                "realized": float(got.mean()) if len(got) else None,
                "table": calibration_table(got, pred, bins=5),
            }
    from billops.recovery.model import categories

    cats = categories(
        failures["decline_code"].fillna(""),
        failures["network_advice_code"].fillna(""),
        failures["card_brand"].fillna(""),
    )
    # Fixed schedules retry what a platform's dunning retries: everything but the networks' "never"
    # declines (needs-new-card ones included: updaters refresh cards in place).
    blocked = cats["never_retry"].to_numpy()
    for name, days in FIXED.items():
        plans = []
        for i, (_, row) in enumerate(failures.iterrows()):
            fa = row["failed_at"].to_pydatetime()
            plans.append([] if blocked[i] else _fixed_times(fa, row["deadline"].to_pydatetime(), days))
        play(name, plans)
    best_fixed = max((r["recovered_amount"], n) for n, r in results.items() if n in FIXED)
    return {
        "world": {
            "seed": seed,
            "customers": customers,
            "start": start_t.isoformat(),
            "split": split.isoformat(),
            "end": end_t.isoformat(),
        },
        "failures": len(failures),
        "failed_amount": failed_amount,
        "history_attempts": len(history),
        "policies": results,
        "best_fixed": best_fixed[1],
        "plan_calibration": plan_calibration,
        "uplift_vs_best_fixed": (
            results[f"billops_learned_max{max_retries}"]["recovered_amount"] / best_fixed[0] - 1
            if best_fixed[0]
            else None
        ),
    }


def evaluate(
    model: RecoveryModel,
    *,
    out: Path,
    policy: Policy,
    attempts: Path | None,
    history: Path | None,
    sim: dict[str, Any] | None,
    max_retries: int,
) -> dict[str, Any]:
    from billops.recovery.data import read_attempts

    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"model": model.version, "created_at": datetime.now(UTC).isoformat()}
    lines = [f"# Recovery model evaluation: {model.version}", ""]
    scored = None
    built = None
    if attempts is not None:
        scored = score_attempts(model, read_attempts(attempts), read_attempts(history) if history else None)
        source = f"{attempts}"
    elif sim is not None:
        # Score on the simulator's held-out attempts (the split's test slice).
        built = sim_world(**sim)
        world, split, _ = built
        full = world.history()
        test = full[full["attempted_at"] >= split]
        scored = score_attempts(model, test, full[full["attempted_at"] < split])
        source = f"simulator seed {sim['seed']}, attempts after {split:%Y-%m-%d}"
    if scored is not None:
        y, p = scored.pop("y"), scored.pop("p")
        table = calibration_table(y, p)
        report["scoring"] = {**scored, "source": source, "calibration": table}
        lines += [
            "## Scoring on held-out retries (time split)",
            "",
            f"Source: {source}. Retries scored: {scored['rows']:,} "
            f"(skipped, inside the training window: {scored.get('skipped_inside_training_window', 0):,}).",
            "",
            "| AUC | Brier | log loss | base rate |",
            "|---|---|---|---|",
            f"| {_f(scored.get('auc'))} | {_f(scored.get('brier'))} | {_f(scored.get('log_loss'))} | "
            f"{_f(scored.get('base_rate'))} |",
            "",
        ]
        if len(y):
            plot_calibration(table, p, out / "calibration.png", f"Calibration: {model.version}")
            lines += ["![calibration](calibration.png)", ""]
    if sim is not None:
        bt = backtest(model, policy, max_retries=max_retries, built=built, **sim)
        report["backtest"] = bt
        lines += [
            "## Revenue backtest (simulator, common random numbers)",
            "",
            f"{bt['failures']:,} failed renewals after {bt['world']['split'][:10]} "
            f"(seed {bt['world']['seed']}, {bt['world']['customers']:,} customers), "
            f"failed amount {bt['failed_amount'] / 100:,.2f} (minor units summed across currencies).",
            "",
            "| policy | recovered invoices | invoice rate | recovered amount | amount rate | attempts made |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in bt["policies"].items():
            lines.append(
                f"| {name} | {r['recovered_invoices']:,} | {r['invoice_rate']:.1%} | "
                f"{r['recovered_amount'] / 100:,.2f} | {r['amount_rate']:.1%} | {r['attempts_made']:,} |"
            )
        pc = bt["plan_calibration"]
        if pc.get("plans_with_retries"):
            lines += [
                "",
                f"Recovery likelihood check ({pc['plans_with_retries']:,} learned plans with retries): "
                f"predicted {pc['mean_predicted']:.1%} on average, realized {pc['realized']:.1%}. "
                "By predicted band: "
                + "; ".join(f"{r['predicted']:.0%} → {r['observed']:.0%} (n={r['n']})" for r in pc["table"]),
            ]
        up = bt["uplift_vs_best_fixed"]
        lines += [
            "",
            f"Learned plans vs the best fixed schedule ({bt['best_fixed']}): "
            + (f"{up:+.1%} recovered amount." if up is not None else "n/a."),
            "",
        ]
    report["markdown"] = "\n".join(lines)
    _write(out / "report.md", report["markdown"] + "\n")
    _write(
        out / "report.json",
        json.dumps({k: v for k, v in report.items() if k != "markdown"}, indent=2, default=str),
    )
    return report


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
