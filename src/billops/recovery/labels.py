"""Outcomes become labels: the retries BillOps executed, who chose their times, with which probability,
and what that says about the policy (docs/models.md "Exploration and outcomes as labels").

What becomes a label:
- every retry BillOps executed from a decision's plan whose answer was a success or a decline
  (`decision.outcome["pay:<n>"]`), linked to the mirror's attempt by its id: `retry_source` billops
  (the planner's time), billops_explore (a time drawn by exploration, recovery/explore.py), or human
  (an approver edited the retry times and this time is not the planner's); the propensity is the
  probability that the planner's mixed policy chose this time (empty for a human's time, a rules-v1
  schedule and the retry made when new card data arrived);
- the platform's own retries (`retry_source` platform) and imported history (empty): attempts like any other.

What does not: a decision a human rejected, that expired, or that was marked recovered offline (no retry
was made, so there is no time to learn from; the approval itself is a feedback label), a shadow decision
(nothing was executed; its explored time is recorded only), a retry that never reached the card
(skipped, error, already settled).

`example_weights` turns propensities into training weights; `ips_value` estimates a timing policy's
per-retry success rate from the logged retries (self-normalized inverse propensity scoring with a
bootstrap interval); `exploration_report` is `billops recovery exploration`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from billops.store import Database

SETTLED_ANSWERS = ("succeeded", "failed")
MAX_WEIGHT = 10.0


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def retry_label(plan: dict[str, Any], n: int) -> dict[str, Any]:
    """Who chose retry `n`'s time in a stored decision plan, and with which propensity.

    The plan in force for retry n is the last re-plan made after an earlier retry (`plan.replans`, auto
    mode), else the decision's own plan; retry n is its retry number n − 1 − (the retry it followed)."""
    after, times, ex, edited_from = 0, plan.get("retries") or [], plan.get("exploration"), None
    for r in plan.get("replans") or []:
        m = int(r.get("after_retry") or 0)
        if r.get("retries") is not None and after < m < n:
            after, times, ex = m, r["retries"], r.get("exploration")
    if after == 0 and plan.get("original") is not None:
        edited_from = {_when(t) for t in plan["original"].get("retries") or []}
    index = n - 1 - after
    out: dict[str, Any] = {
        "retry_source": "billops",
        "propensity": None,
        "explored": False,
        "first": index == 0,
        "options": 0,
        "share": 0.0,
        "learned": ex is not None,
        "planned_at": times[index] if 0 <= index < len(times) else None,
    }
    if not 0 <= index < len(times):  # the retry made when new card data arrived: no planned time
        return out
    if edited_from is not None and _when(times[index]) not in edited_from:
        out.update(retry_source="human", learned=False)
        return out
    if ex is None:  # a rules-v1 schedule
        return out
    if index == 0:
        explored = bool(ex.get("explored"))
        out.update(
            retry_source="billops_explore" if explored else "billops",
            propensity=ex.get("propensity"),
            explored=explored,
            options=int(ex.get("options") or 0),
            share=float(ex.get("share") or 0.0),
        )
    else:  # the planner's later retries are never moved
        out["propensity"] = 1.0
    return out


def executed_retries(session: Session, platform: str | None = None) -> pd.DataFrame:
    """One row per retry BillOps executed with a settled answer: workflow_id, platform, invoice_id, n,
    attempt_id (None for retries recorded before the link existed), success, and `retry_label`'s fields."""
    import sqlalchemy as sa

    from billops.store.models import Decision

    q = (
        sa.select(
            Decision.workflow_id, Decision.platform, Decision.invoice_id, Decision.plan, Decision.outcome
        )
        .where(Decision.workflow == "recovery", Decision.mode != "shadow")
        .order_by(Decision.created_at, Decision.workflow_id)
    )
    if platform is not None:
        q = q.where(Decision.platform == platform)
    rows: list[dict[str, Any]] = []
    for wf, plat, invoice_id, plan, outcome in session.execute(q):
        pays = sorted(
            (int(k.split(":", 1)[1]), v)
            for k, v in (outcome or {}).items()
            if k.startswith("pay:") and k.split(":", 1)[1].isdigit() and isinstance(v, dict)
        )
        for n, result in pays:
            if result.get("status") not in SETTLED_ANSWERS:
                continue
            rows.append(
                {
                    "workflow_id": wf,
                    "platform": plat,
                    "invoice_id": invoice_id,
                    "n": n,
                    "attempt_id": result.get("attempt_id"),
                    "success": result["status"] == "succeeded",
                    **retry_label(plan or {}, n),
                }
            )
    columns = ["workflow_id", "platform", "invoice_id", "n", "attempt_id", "success", "retry_source"]
    columns += ["propensity", "explored", "first", "options", "share", "learned", "planned_at"]
    return pd.DataFrame(rows, columns=columns)


def label_attempts(
    session: Session, attempts: list[tuple[str, str, str, str, str]], platform: str | None = None
) -> tuple[list[str], list[str]]:
    """The label columns' text for the mirror's attempts, in time order: (platform, attempt id, invoice
    id, initiated_by, stored source) each. An executed retry is found by its attempt id, else (older
    records) as the next attempt BillOps initiated on its invoice."""
    done = executed_retries(session, platform)
    by_id: dict[tuple[str, str], dict[str, Any]] = {}
    pending: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in done.to_dict("records"):
        if isinstance(r["attempt_id"], str) and r["attempt_id"]:  # pandas may hold a missing id as NaN
            by_id[(r["platform"], str(r["attempt_id"]))] = r
        else:
            pending[(r["platform"], r["invoice_id"])].append(r)
    sources: list[str] = []
    props: list[str] = []
    for plat, attempt_id, invoice_id, initiated_by, stored_from in attempts:
        label = by_id.get((plat, attempt_id))
        if label is None and initiated_by == "billops" and pending.get((plat, invoice_id)):
            label = pending[(plat, invoice_id)].pop(0)
        if label is not None:
            p = label["propensity"]
            sources.append(label["retry_source"])
            props.append("" if p is None or pd.isna(p) else repr(float(p)))
        elif initiated_by == "billops":
            sources.append("billops")
            props.append("")
        elif initiated_by == "platform" and stored_from not in ("import",):
            sources.append("platform")
            props.append("")
        else:
            sources.append("")
            props.append("")
    return sources, props


def example_weights(examples: pd.DataFrame, *, max_weight: float = MAX_WEIGHT) -> np.ndarray | None:
    """Importance weights for training rows: rows with a propensity p get min(1/p, max_weight), scaled so
    that those rows' weights average 1; rows without one (the platform's retries, imported history, a
    human's time) weigh 1. None when no row carries a propensity (train unweighted).

    Clipping trades a little bias for much less variance: an explored time (p = share / N, N the hours
    it was drawn from) would otherwise count thousands of times; with the default an explored retry
    counts at most 10x a retry at the planner's own time."""
    if "propensity" not in examples.columns or not len(examples):
        return None
    p = pd.to_numeric(examples["propensity"], errors="coerce").to_numpy(dtype=np.float64)
    has = np.isfinite(p) & (p > 0) & (p <= 1)
    if not has.any():
        return None
    w = np.ones(len(p))
    raw = np.minimum(1.0 / p[has], max_weight)
    w[has] = raw / raw.mean()
    return w


@dataclass(frozen=True)
class IPSEstimate:
    value: float | None  # the estimated per-retry success rate (None: no weight on any row)
    low: float | None
    high: float | None
    n: int  # logged retries used
    effective_n: float  # (Σw)² / Σw²: how many retries the estimate is worth

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ips_value(
    success: Any,
    propensity: Any,
    target: Any,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> IPSEstimate:
    """Self-normalized inverse propensity estimate of a timing policy's per-retry success rate:
    Σ w·y / Σ w with w = target / propensity, where `target` is the probability that the evaluated
    policy chooses the logged time (1 or 0 for a deterministic policy such as the greedy planner, whose
    logged times are the unexplored ones). The interval is a percentile bootstrap over retries."""
    y = np.asarray(success, dtype=np.float64)
    p = np.asarray(propensity, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(p) & (p > 0) & np.isfinite(t)
    y, w = y[ok], t[ok] / p[ok]
    n = len(y)
    if n == 0 or w.sum() <= 0:
        return IPSEstimate(None, None, None, n, 0.0)
    value = float((w * y).sum() / w.sum())
    ess = float(w.sum() ** 2 / (w**2).sum())
    rng = np.random.default_rng(seed)
    stats: list[np.ndarray] = []
    batch = max(1, min(n_boot, 2_000_000 // max(n, 1)))
    left = n_boot
    while left > 0:
        b = min(batch, left)
        idx = rng.integers(0, n, size=(b, n))
        num, den = (w * y)[idx].sum(axis=1), w[idx].sum(axis=1)
        stats.append(num[den > 0] / den[den > 0])
        left -= b
    boot = np.concatenate(stats) if stats else np.zeros(0)
    if not len(boot):
        return IPSEstimate(value, None, None, n, ess)
    a = (1 - level) / 2
    return IPSEstimate(value, float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a)), n, ess)


def exploration_report(db: Database, platform: str | None = None, *, n_boot: int = 1000) -> dict[str, Any]:
    """`billops recovery exploration`: the decisions, the exploration realized, the executed retries by
    source with their success rates, and the policies' per-retry success rates estimated by IPS."""
    import sqlalchemy as sa

    from billops.store.models import Decision

    with db.reader() as s:
        q = sa.select(Decision.mode, Decision.plan).where(Decision.workflow == "recovery")
        if platform is not None:
            q = q.where(Decision.platform == platform)
        decisions = learned = explorable = explored = 0
        shares: list[float] = []
        by_mode: dict[str, int] = defaultdict(int)
        for mode, plan in s.execute(q):
            decisions += 1
            for ex in [
                (plan or {}).get("exploration"),
                *((r or {}).get("exploration") for r in (plan or {}).get("replans") or []),
            ]:
                if ex is None:
                    continue
                learned += 1
                shares.append(float(ex.get("share") or 0.0))
                explorable += int(ex.get("options") or 0) > 0
                if ex.get("explored"):
                    explored += 1
                    by_mode[mode] += 1
        done = executed_retries(s, platform)
    sources = []
    for src in ("billops", "billops_explore", "human"):
        part = done[done["retry_source"] == src] if len(done) else done
        k = int(part["success"].sum()) if len(part) else 0
        sources.append(
            {
                "source": src,
                "retries": len(part),
                "succeeded": k,
                "rate": k / len(part) if len(part) else None,
            }
        )
    out: dict[str, Any] = {
        "decisions": decisions,
        "learned_plans": learned,
        "explorable_plans": explorable,
        "explored_plans": explored,
        "explored_by_mode": dict(by_mode),
        "configured_share": float(np.mean(shares)) if shares else None,
        "realized_share": explored / learned if learned else None,
        "retries": sources,
        "estimates": {},
    }
    logged = done[done["learned"].astype(bool) & done["propensity"].notna()] if len(done) else done
    if len(logged):
        y = logged["success"].to_numpy(dtype=np.float64)
        p = logged["propensity"].to_numpy(dtype=np.float64)
        explored_rows = logged["explored"].to_numpy(dtype=bool)
        est = out["estimates"]
        est["logged"] = ips_value(y, p, p, n_boot=n_boot).as_dict()  # on-policy: w = 1
        est["greedy"] = ips_value(y, p, (~explored_rows).astype(np.float64), n_boot=n_boot).as_dict()
        first = logged["first"].to_numpy(dtype=bool) & (logged["options"].to_numpy() > 0)
        if first.any():
            uniform = 1.0 / (logged["options"].to_numpy(dtype=np.float64)[first] + 1.0)
            est["uniform_first_retry"] = ips_value(y[first], p[first], uniform, n_boot=n_boot).as_dict()
    return out
