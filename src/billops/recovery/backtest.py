"""Shadow backtest: replay the mirror's failures and compare what BillOps would have recovered with what
happened (`billops recovery backtest --since DATE`, docs/recovery.md "Shadow backtest").

For each invoice whose FIRST failure lies in [since, until):
- what happened: paid within the policy's window_days after the first failure (recovered amount, and by
  whom: `billops` — a retry BillOps chose; `card_update` — the paying card differs from the failed one;
  `platform` — the platform's own retry; `unknown` — an attempt of unknown origin, e.g. imported history);
  an unpaid invoice whose window has not ended yet is `open` and left out of the comparison (neither
  recovered nor lost), like one paid early inside a window still open, so both sides cover full windows;
- what BillOps would have done: the plan `plan` makes for the first failure from the history strictly
  before it; expected recovered = Σ amount × recovery_probability. That side is an ESTIMATE from the
  model's calibrated probability, not an observation.

Uplift = expected − actual per currency, with a 95 % interval from a paired bootstrap over invoices in
which each resample also draws BillOps's outcomes as Bernoulli(recovery_probability).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

BILLOPS_SOURCES = ("billops", "billops_explore", "human")
CARD_COLUMNS = ("card_brand", "card_funding", "card_country", "card_exp_month", "card_exp_year")
MAX_INVOICES = 50_000
RESAMPLES = 2000

Planner = Callable[[pd.DataFrame, pd.DataFrame], list[dict[str, Any]]]


@dataclass(frozen=True)
class Outcome:
    invoice_id: str
    recovered: bool
    by: str | None  # billops | card_update | platform | unknown
    amount: int


def _same(a: Any, b: Any) -> bool:
    na, nb = a is None or pd.isna(a), b is None or pd.isna(b)
    return (na and nb) or (not na and not nb and str(a) == str(b))


def _who(first: pd.Series, paid: pd.Series) -> str:
    src = str(paid.get("retry_source") or "") if "retry_source" in paid else ""
    if src in BILLOPS_SOURCES:
        return "billops"
    fp_a, fp_b = first.get("card_fingerprint"), paid.get("card_fingerprint")
    if fp_a and fp_b and not pd.isna(fp_a) and not pd.isna(fp_b):
        changed = str(fp_a) != str(fp_b) or not all(
            _same(first.get(c), paid.get(c)) for c in ("card_exp_month", "card_exp_year")
        )
    else:
        changed = not all(_same(first.get(c), paid.get(c)) for c in CARD_COLUMNS)
    if changed:
        return "card_update"
    return "platform" if src == "platform" else "unknown"


def first_failures(attempts: pd.DataFrame, since: datetime, until: datetime) -> pd.DataFrame:
    """The first attempt of every invoice whose first attempt failed in [since, until), in time order."""
    a = attempts.sort_values(["invoice_id", "attempted_at"], kind="stable")
    first = a.groupby("invoice_id", sort=False).head(1)
    sel = (first["outcome"] == "failed") & (first["attempted_at"] >= since) & (first["attempted_at"] < until)
    return first[sel].sort_values("attempted_at", kind="stable").reset_index(drop=True)


def backtest(
    attempts: pd.DataFrame,
    *,
    since: datetime,
    until: datetime,
    plan: Planner,
    window_days: int,
    now: datetime,
    model_version: str,
    resamples: int = RESAMPLES,
    seed: int = 0,
    max_invoices: int = MAX_INVOICES,
) -> dict[str, Any]:
    """The backtest report as a JSON-able dict (see the module docstring)."""
    firsts = first_failures(attempts, since, until)
    capped = len(firsts) > max_invoices
    if capped:
        firsts = firsts.iloc[:max_invoices]
    window = timedelta(days=window_days)
    by_invoice = {
        k: g
        for k, g in attempts[attempts["invoice_id"].isin(set(firsts["invoice_id"]))].groupby(
            "invoice_id", sort=False
        )
    }
    outcomes: list[Outcome] = []
    open_ids: set[str] = set()
    for _, f in firsts.iterrows():
        g = by_invoice[f["invoice_id"]]
        wins = g[(g["outcome"] == "succeeded") & (g["attempted_at"] <= f["attempted_at"] + window)]
        if f["attempted_at"] + window > now:
            open_ids.add(str(f["invoice_id"]))
            continue
        if len(wins):
            w = wins.iloc[0]
            outcomes.append(
                Outcome(str(f["invoice_id"]), True, _who(f, w), min(int(w["amount"]), int(f["amount"])))
            )
        else:
            outcomes.append(Outcome(str(f["invoice_id"]), False, None, 0))
    closed = firsts[~firsts["invoice_id"].astype(str).isin(open_ids)].reset_index(drop=True)
    probs: dict[str, float] = {}
    routes: dict[str, int] = {}
    if len(closed):
        fail = closed.rename(columns={"attempted_at": "failed_at"})
        fail["deadline"] = fail["failed_at"] + window
        history = attempts[attempts["attempted_at"] < closed["attempted_at"].max()]
        for row in plan(fail, history):
            probs[str(row["invoice_id"])] = float(row["recovery_probability"])
            routes[str(row["route"])] = routes.get(str(row["route"]), 0) + 1
    currencies: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    cur = closed["currency"].astype(str).to_numpy()
    amount = closed["amount"].to_numpy(dtype=np.float64)
    actual = np.array([o.amount for o in outcomes], dtype=np.float64)
    p = np.array([probs.get(o.invoice_id, 0.0) for o in outcomes], dtype=np.float64)
    for c in sorted(set(cur.tolist())):
        m = cur == c
        am, ac, pr = amount[m], actual[m], p[m]
        n = int(m.sum())
        idx = rng.integers(0, n, size=(resamples, n))
        draws = rng.random((resamples, n)) < pr[idx]
        boot = (am[idx] * draws).sum(axis=1) - ac[idx].sum(axis=1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        expected, got = float((am * pr).sum()), float(ac.sum())
        sub = [o for o, keep in zip(outcomes, m, strict=True) if keep]
        by: dict[str, int] = {}
        for o in sub:
            if o.by:
                by[o.by] = by.get(o.by, 0) + o.amount
        currencies[c] = {
            "invoices": n,
            "failed_amount": int(am.sum()),
            "actual_recovered": int(got),
            "actual_recovered_count": sum(1 for o in sub if o.recovered),
            "actual_by": dict(sorted(by.items())),
            "billops_expected": round(expected),
            "uplift": round(expected - got),
            "uplift_ci95": [round(float(lo)), round(float(hi))],
        }
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "model": model_version,
        "window_days": window_days,
        "invoices": len(firsts),
        "compared": len(closed),
        "open": len(open_ids),
        "open_paid": sum(
            1
            for i in open_ids
            if (by_invoice[i]["outcome"] == "succeeded").any()
        )
        if open_ids
        else 0,
        "capped_at": max_invoices if capped else None,
        "routes": dict(sorted(routes.items())),
        "currencies": currencies,
        "ci_method": f"paired bootstrap over invoices, {resamples} resamples (seed {seed}), BillOps outcomes "
        "drawn as Bernoulli(recovery_probability) in each resample",
        "caveat": "BillOps's side is an estimate from the model's calibrated recovery probability, not an "
        "observation; the actual side is what the mirror recorded.",
    }


def model_planner(model: Any, *, policy: Any, rules: Any, max_retries: int = 8) -> Planner:
    """`plan` for `backtest` from a trained model, through the stable `plan_rows`."""
    from billops.recovery.cli import plan_rows

    def plan(failures: pd.DataFrame, history: pd.DataFrame) -> list[dict[str, Any]]:
        return plan_rows(model, failures, history, max_retries=max_retries, policy=policy, rules=rules)

    return plan


def rules_planner() -> Planner:
    """Without a trained model: rules-v1's 0–100 score read as a probability (NOT calibrated)."""
    from billops.domain.declines import load_taxonomy
    from billops.recovery.features import RecoveryFeatures
    from billops.recovery.scoring import RulesScorer

    taxonomy, scorer = load_taxonomy(), RulesScorer()

    def plan(failures: pd.DataFrame, history: pd.DataFrame) -> list[dict[str, Any]]:
        out = []
        for _, f in failures.iterrows():
            d = taxonomy.classify(
                str(f["decline_code"] or ""), network_advice_code=f.get("network_advice_code") or None
            )
            before = history[
                (history["customer_id"] == f["customer_id"]) & (history["attempted_at"] < f["failed_at"])
            ]
            feats = RecoveryFeatures(
                decline_code=d.code,
                decline_category=str(getattr(d.category, "value", d.category)),
                network_advice_code=d.network_advice_code,
                never_retry=bool(getattr(d, "never_retry", False)),
                attempt_number=1,
                amount=int(f["amount"]),
                currency=str(f["currency"]),
                card_brand=f.get("card_brand") or None,
                card_funding=f.get("card_funding") or None,
                months_to_expiry=None,
                tenure_days=None,
                past_successes=int((before["outcome"] == "succeeded").sum()),
                past_failures=int((before["outcome"] == "failed").sum()),
                other_usable_methods=0,
                high_value=False,
            )
            s = scorer.score(feats)
            out.append(
                {
                    "invoice_id": f["invoice_id"],
                    "recovery_probability": s.value / 100.0,
                    "route": "rules",
                    "retries": [],
                    "recovery_score": s.value,
                }
            )
        return out

    return plan
