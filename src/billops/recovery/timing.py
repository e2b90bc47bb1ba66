"""Learned retry timing: choose up to `max_retries` retry times that maximize the expected recovered
amount net of the attempts' cost under the model, inside the card-network rules.

For each failure, on a candidate grid from the earliest allowed time to the deadline:

1. earliest = the last failed attempt + BillOps' minimum spacing, pushed later by a network wait
   (Mastercard MAC 24–30) and never before `now`; only the networks' "never" rules (hard declines:
   lost, stolen, fraud, pick-up; Mastercard MAC 03/21; Visa category 1) get no retry at all. Every
   other decline, card data that needs replacing included, is the model's question (account updaters
   refresh many cards in place); the route still asks the customer for new card data;
2. the first retry's chances every `scan_hours` hours up to the deadline, grouped into at most
   `coarse_points` blocks: the hours are ranked by the model's first trees (a quarter of them), each
   block's best hour is scored by the whole calibrated model, and at the best `max_retries +
   REFINED_BLOCKS_EXTRA` blocks a local search tries the hours around it (inside the block); the
   later retries (other attempt numbers) are scored there at the best
   `max_retries + SCORED_BLOCKS_EXTRA` blocks and shifted by the measured log-odds difference elsewhere;
3. a dynamic programme over (retry k, previous pick, block) maximizing the expected value
   Σ_k Π_{j<k}(1 − q_j) · (q_k · amount · d_k − cost), q_k = p_k · g(hours since the previous pick),
   g the learned spacing factor (spacing.py, plan_dp.py): a retry is planned only while its chance
   times the amount due beats the attempt cost (`recovery.attempt_cost`), each retry at least the
   minimum spacing after the one before (an optional floor `min_retry_probability` too);
4. the per-card caps (Visa reattempts per 30 days, Mastercard 10 per 24 h / 35 per 30 days) counted
   with the card's earlier attempts; a retry that would break one is dropped (never moved silently).

5. the sequence model re-judges each plan's retries in order (judge.py): retry k's chance given that
   the earlier ones failed, at their times and gaps; trailing retries no longer worth their cost go.

The recovery likelihood (0–100) is 100 × P(the plan recovers the invoice), `RecoveryModel.
plan_probability`: 1 − Π(1 − p_k) of the sequence model's chances, corrected for the optimizer's curse
(the chosen times are where the model's own errors are high; training measures that with two models
fitted on disjoint halves, one choosing and one judging).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd

from billops.policy import RecoveryPolicy
from billops.recovery.card_caps import CardIndex, apply_caps
from billops.recovery.data import ATTEMPT_COLUMNS
from billops.recovery.judge import judge_sequences
from billops.recovery.model import (
    FEATURES,
    LABELS,
    WEEKDAYS,
    CustomerHistory,
    RecoveryModel,
    StaticFeatures,
    assemble,
    categories,
    static_features,
)
from billops.recovery.plan_dp import choose_retries
from billops.recovery.planner import NetworkRules
from billops.recovery.retry_features import zone_info
from billops.recovery.timing_plan import TimingPlan

HOUR = np.timedelta64(3600, "s")
# The planner's preference for an earlier recovery: a payment on day 20 is worth 80 % of one today
# (service continuity, fewer customers lost while in dunning). With a weaker one (0.3 %) plans piled
# their retries into the window's last days, where the retry model's chances, averaged over the
# history's own earlier retries, overstate what is left after five failed ones.
TIME_DISCOUNT_PER_DAY = 0.01
# A decline that asks for new card data is planned blind only when training saw at least this many
# retries after it: otherwise the model would extrapolate from other declines to one it knows nothing of.
MIN_SUPPORT = 30
# Candidate blocks kept beyond max_retries, ranked by the first retry's chances: with only 4, the
# blocks around one good time crowded out the rest and the spacing left plans with 3-5 retries.
CANDIDATE_BLOCKS_EXTRA = 32
# The later retries' attempt classes are scored by the model at the best max_retries + this many blocks;
# elsewhere they shift the first retry's log-odds by the mean difference measured there.
SCORED_BLOCKS_EXTRA = 4
# Blocks whose best scanned hour is refined by the local search, beyond max_retries.
REFINED_BLOCKS_EXTRA = 8
# The scan ranks the hours inside each block with the model's first trees only (a quarter of them,
# at least SCREEN_MIN_TREES): a quarter of the cost per candidate; each block's chosen hour is then
# scored by the whole model. On the seven simulator worlds this changed revenue by −0.03…+0.05 and
# ECE by ±0.005 (benchmarks/README.md, planning speed).
SCREEN_FRACTION = 0.25
SCREEN_MIN_TREES = 8


def plan_timing(
    model: RecoveryModel,
    failures: pd.DataFrame,
    history: CustomerHistory,
    card_history: pd.DataFrame | CardIndex | None,
    *,
    max_retries: int,
    rules: NetworkRules,
    now: datetime | None = None,
    min_retry_probability: float = 0.0,
    attempt_cost: float = 0.30,
    coarse_points: int = 32,
    scan_hours: int = 3,
    explain: bool = True,
) -> list[TimingPlan]:
    """Plan every failure in the frame (FAILURES columns; optional `first_failed_at`, `attempts_so_far`
    for a re-plan after failed retries). `card_history` holds earlier attempts (customer_id, card_brand,
    card_exp_month, card_exp_year, attempted_at) for the per-card network caps."""
    f = failures.reset_index(drop=True).copy()
    n = len(f)
    if n == 0:
        return []
    f["failed_at"] = pd.to_datetime(f["failed_at"], utc=True)
    f["deadline"] = pd.to_datetime(f["deadline"], utc=True)
    if "first_failed_at" not in f:
        f["first_failed_at"] = f["failed_at"]
    f["first_failed_at"] = pd.to_datetime(f["first_failed_at"], utc=True)
    if "attempts_so_far" not in f:
        f["attempts_so_far"] = 1
    f["decline_code"] = f["decline_code"].fillna("").replace("", "generic_decline")
    f["network_advice_code"] = f["network_advice_code"].fillna("")
    cats = categories(f["decline_code"], f["network_advice_code"], f["card_brand"].fillna(""))
    f["decline_category"] = cats["decline_category"].to_numpy()
    if "past_successes" not in f:  # the caller may have computed the history aggregates already
        agg = history.as_of(f["customer_id"], f["first_failed_at"])
        for col in agg.columns:
            f[col] = agg[col].to_numpy()

    spacing_h = float(rules.min_spacing_hours)
    inv_ids = f["invoice_id"].astype(str).to_numpy()
    cat_arr = cats["decline_category"].astype(str).to_numpy()
    never = cats["never_retry"].to_numpy(dtype=bool)
    waits = cats["wait_hours"].to_numpy(dtype=np.float64)
    codes = f["decline_code"].astype(str).to_numpy()
    macs = f["network_advice_code"].astype(str).to_numpy()
    last = f["failed_at"].dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    deadline = f["deadline"].dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    start = last + np.timedelta64(round(spacing_h * 3600), "s")
    wait_until = last + (waits * 3600).astype(np.int64).astype("timedelta64[s]")
    waited = wait_until > start
    start = np.where(waited, wait_until, start)
    if now is not None:
        now64 = np.datetime64(pd.Timestamp(now).tz_convert(UTC).tz_localize(None), "s")
        start = np.maximum(start, now64)
    # Round up to the whole hour.
    secs = start.astype(np.int64)
    starts = ((secs + 3599) // 3600 * 3600).astype("datetime64[s]")
    ends = deadline
    plans: list[TimingPlan | None] = [None] * n
    live: list[int] = []
    support: dict[str, int] = model.manifest.get("training", {}).get("decline_support", {})
    for i in range(n):
        cat = cat_arr[i]
        notes = [f"network asks to wait {waits[i]:g} h (advice {macs[i]})"] if waited[i] else []
        if never[i]:
            plans[i] = TimingPlan(inv_ids[i], [], [], 0.0, cat, blocked=f"never retried: {codes[i]} is {cat}")
        elif cat == "needs_new_card" and support.get(codes[i], 0) < MIN_SUPPORT:
            plans[i] = TimingPlan(
                inv_ids[i],
                [],
                [],
                0.0,
                cat,
                blocked=f"no blind retry: the training history holds {support.get(codes[i], 0)} retries "
                f"after {codes[i]}, too few to learn whether one recovers (the card-update link goes out)",
            )
        elif ends[i] < starts[i] or max_retries < 1:
            why = (
                "no retry left in the budget (max retries)"
                if max_retries < 1
                else "no time left before the deadline"
            )
            plans[i] = TimingPlan(inv_ids[i], [], [], 0.0, cat, blocked=why, notes=notes)
        else:
            plans[i] = TimingPlan(inv_ids[i], [], [], 0.0, cat, notes=notes)
            live.append(i)

    st = static_features(f, model.vocab)
    if live:
        _plan_live(
            model,
            st,
            f,
            np.asarray(live),
            starts,
            ends,
            plans,
            max_retries,
            spacing_h,
            min_retry_probability,
            coarse_points,
            scan_hours,
            _cost_minor(f, attempt_cost),
        )
        cards = card_history if isinstance(card_history, CardIndex) else CardIndex.build(card_history)
        apply_caps(model, f, np.asarray(live), plans, cards, rules)
        judge_sequences(model, st, f, np.asarray(live), plans, _cost_minor(f, attempt_cost))
    if explain:
        _explain(model, st, f, plans)
    return [p for p in plans if p is not None]


def _plan_live(
    model: RecoveryModel,
    st: StaticFeatures,
    f: pd.DataFrame,
    live: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    plans: list[TimingPlan | None],
    max_retries: int,
    spacing_h: float,
    min_p: float,
    coarse_points: int,
    scan_hours: int,
    cost_minor: np.ndarray,
) -> None:
    m = len(live)
    k_max = max_retries
    st_live = starts[live]
    scan = max(1, int(scan_hours))
    span = ((ends[live] - st_live) / HOUR).astype(np.int64)  # last candidate hour (0 = the start)
    n_scan = span // scan + 1  # scanned hours: 0, scan, 2·scan, …
    step = np.maximum(1, np.ceil(n_scan / coarse_points)).astype(np.int64)  # scanned hours per block
    t_len = np.ceil(n_scan / step).astype(np.int64)  # blocks per failure
    t_max = int(t_len.max())
    block_h = step * scan  # hours per block
    # A block's pick stays inside the block, so two picks `gap` blocks apart are at least
    # (gap − 1)·block_h + 1 hours apart: enough for the minimum spacing.
    gap = np.where(block_h > 1, 1 + np.ceil((spacing_h - 1) / block_h), np.ceil(max(spacing_h, 1.0)))
    gap = gap.astype(np.int64)
    a0 = f["attempts_so_far"].to_numpy(dtype=np.int64)[live]
    attempt = a0[:, None] + 1 + np.arange(k_max)[None, :]
    cls = model.attempt_number_classes(attempt.ravel().astype(np.float64)).reshape(m, k_max)

    # 1. Scan every `scan` hours for the first retry's case; each block keeps its best hour.
    ri = np.repeat(np.arange(m), n_scan)
    rs = np.arange(int(n_scan.sum())) - np.repeat(np.cumsum(n_scan) - n_scan, n_scan)
    screen = screen_trees(model.num_trees)
    x_scan = assemble(st, live[ri], st_live[ri] + rs * scan * HOUR, cls[ri, 0])
    p_scan = model.screen(x_scan, screen) if screen else model.predict(x_scan)
    padded = np.full((m, t_max * int(step.max())), -1.0)
    padded[ri, rs] = p_scan
    best_h = np.zeros((m, t_max), dtype=np.int64)
    best_p = np.full((m, t_max), -1.0)
    for s_val in np.unique(step):
        rows = np.nonzero(step == s_val)[0]
        blocks = padded[rows, : t_max * s_val].reshape(len(rows), t_max, s_val)
        arg = blocks.argmax(axis=2)
        best_h[rows] = (arg + np.arange(t_max)[None, :] * s_val) * scan
        best_p[rows] = np.take_along_axis(blocks, arg[:, :, None], axis=2)[:, :, 0]
    valid = (np.arange(t_max)[None, :] < t_len[:, None]) & (best_p >= 0)
    if screen:  # the screening scores only chose each block's hour: the whole model scores it
        vi, vj = np.nonzero(valid)
        scan_row = (np.cumsum(n_scan) - n_scan)[vi] + best_h[vi, vj] // scan
        best_p[vi, vj] = model.predict(x_scan[scan_row])
    # Only the best max_retries + 4 blocks (by the first retry's chances) stay candidates: the later
    # retries' probabilities move with the first one's across time, so the plan's times are among them.
    valid = _best_blocks(valid, best_p, k_max + CANDIDATE_BLOCKS_EXTRA)

    # 1b. A local search around each block's best scanned hour, at the best max_retries +
    # REFINED_BLOCKS_EXTRA blocks only (the plan's picks are among them): ±scan//2 hours, then the
    # half of that around the new best, down to ±1 hour, inside the block and the window.
    refined = _best_blocks(valid, best_p, k_max + REFINED_BLOCKS_EXTRA)
    vi, vj = np.nonzero(refined)
    radius = scan // 2
    while radius >= 1 and len(vi):
        ci, cj = np.repeat(vi, 2), np.repeat(vj, 2)
        ch = best_h[ci, cj] + np.tile(np.array([-radius, radius], dtype=np.int64), len(vi))
        lo = cj * block_h[ci]
        keep = (ch >= lo) & (ch < lo + block_h[ci]) & (ch <= span[ci])
        ci, cj, ch = ci[keep], cj[keep], ch[keep]
        if len(ci):
            cp = model.predict(assemble(st, live[ci], st_live[ci] + ch * HOUR, cls[ci, 0]))
            better = cp > best_p[ci, cj]
            # Both neighbours may beat the current best: keep the better (earlier on ties).
            order = np.lexsort((ch, -cp, cj, ci))
            ci, cj, ch, cp, better = ci[order], cj[order], ch[order], cp[order], better[order]
            first = np.ones(len(ci), dtype=bool)
            first[1:] = (ci[1:] != ci[:-1]) | (cj[1:] != cj[:-1])
            win = first & better
            best_h[ci[win], cj[win]] = ch[win]
            best_p[ci[win], cj[win]] = cp[win]
        radius //= 2

    # 2. The other retries' cases (attempt classes) at those hours: scored by the model at each failure's
    # best SCORED_BLOCKS blocks (by the first retry's chances); at its other candidate blocks the class
    # moves the first retry's log-odds by the mean shift measured at the scored ones. The sequence model
    # re-judges the chosen times exactly (judge.py), so this only steers the choice.
    prob = np.repeat(best_p[:, None, :], k_max, axis=1)
    pairs = pd.DataFrame(
        {"i": np.repeat(np.arange(m), k_max), "k": np.tile(np.arange(k_max), m), "c": cls.ravel()}
    )
    pairs = pairs[pairs["c"].to_numpy() != cls[pairs["i"].to_numpy(), 0]]
    if len(pairs):
        scored = _best_blocks(valid, best_p, k_max + SCORED_BLOCKS_EXTRA)
        uniq = pairs.drop_duplicates(["i", "c"])
        ui, uc = uniq["i"].to_numpy(), uniq["c"].to_numpy()
        vi, vj = np.nonzero(scored)  # scored blocks, grouped by failure
        per = np.bincount(vi, minlength=m)
        starts_of = np.cumsum(per) - per
        reps = per[ui]
        qi, qc = np.repeat(ui, reps), np.repeat(uc, reps)
        q_at = (
            np.repeat(starts_of[ui], reps)
            + np.arange(int(reps.sum()))
            - np.repeat(np.cumsum(reps) - reps, reps)
        )  # each query's position among the scored blocks
        qj = vj[q_at]
        # The scored blocks' rows are built once; a class only changes the attempt number.
        x_q = assemble(st, live[vi], st_live[vi] + best_h[vi, vj] * HOUR, cls[vi, 0])[q_at]
        x_q[:, FEATURES.index("attempt_number")] = qc
        qp = model.predict(x_q)
        # Per (failure, class): the mean log-odds shift from the first retry's class at the scored blocks.
        pair_id = np.repeat(np.arange(len(ui)), reps)
        diff = _logit(qp) - _logit(best_p[qi, qj])
        shift = np.bincount(pair_id, diff, minlength=len(ui)).astype(np.float64) / np.maximum(reps, 1)
        sp = _sigmoid(_logit(best_p[ui]) + shift[:, None])  # (pairs, T): every block, shifted
        sp[pair_id, qj] = qp  # the scored blocks keep the model's own chances
        row = pd.DataFrame({"i": ui, "c": uc, "r": np.arange(len(ui))})
        want = pairs.merge(row, on=["i", "c"])
        prob[want["i"].to_numpy(), want["k"].to_numpy(), :] = sp[want["r"].to_numpy()]

    # 3. The dynamic programme over (retry, previous pick, block), in money (recovery/plan_dp.py).
    last_fail = f["failed_at"].dt.tz_localize(None).to_numpy().astype("datetime64[s]")[live]
    hours_in = ((st_live - last_fail) / HOUR).astype(np.float64)
    discount = np.clip(1.0 - TIME_DISCOUNT_PER_DAY * (hours_in[:, None] + best_h) / 24.0, 0.5, 1.0)
    pick_i, pick_j, pick_p = choose_retries(
        prob,
        valid,
        best_h.astype(np.float64),
        hours_in,
        amount=np.maximum(f["amount"].to_numpy(dtype=np.float64)[live], 0.0),
        cost=cost_minor[live],
        discount=discount,
        gap=gap,
        min_p=min_p,
        spacing=model.manifest.get("spacing"),
        categories=f["decline_category"].astype(str).to_numpy()[live],
        replan=a0 > 1,
    )
    pick_t = [st_live[i] + best_h[i, j] * HOUR for i, j in zip(pick_i, pick_j, strict=True)]
    all_i = np.concatenate(pick_i)
    order = np.argsort(all_i, kind="stable")  # per failure, in retry order
    all_i = all_i[order]
    all_t = pd.DatetimeIndex(np.concatenate(pick_t)[order]).tz_localize("UTC").to_pydatetime()
    all_p = np.concatenate(pick_p)[order].tolist()
    bounds = np.searchsorted(all_i, np.arange(m + 1))
    for i in range(m):
        plan = plans[live[i]]
        assert plan is not None
        lo, hi = bounds[i], bounds[i + 1]
        plan.retries, plan.probabilities = list(all_t[lo:hi]), all_p[lo:hi]
        # recovery_probability is set by judge_sequences, which re-judges every plan with retries.
        if not plan.retries:
            plan.blocked = (
                "no retry time before the deadline is worth its cost (success probability × amount "
                "due below the attempt cost)"
            )


def screen_trees(n_trees: int) -> int:
    """How many of the model's first trees rank the scanned hours (0: the model is too small to screen)."""
    n = max(SCREEN_MIN_TREES, round(SCREEN_FRACTION * n_trees))
    return n if n < n_trees else 0


def _best_blocks(valid: np.ndarray, best_p: np.ndarray, n: int) -> np.ndarray:
    """Per failure, its n valid blocks with the best first-retry chances (earliest on ties)."""
    if valid.shape[1] <= n:
        return valid.copy()
    ranked = np.argsort(-np.where(valid, best_p, -2.0), axis=1, kind="stable")[:, :n]
    top = np.zeros_like(valid)
    np.put_along_axis(top, ranked, True, axis=1)
    return valid & top


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-4, 1.0 - 1e-4)
    return np.log(q / (1.0 - q))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _cost_minor(f: pd.DataFrame, attempt_cost: float) -> np.ndarray:
    """The attempt cost in each failure's minor units (zero-decimal currencies count whole units)."""
    from billops.domain.billing import ZERO_DECIMAL

    cur = f["currency"].fillna("").astype(str).str.lower()
    return np.where(cur.isin(ZERO_DECIMAL).to_numpy(), attempt_cost, attempt_cost * 100.0)


def _describe(name: str, value: float, vocab: dict[str, list[str]]) -> str:
    if name in vocab:
        codes = vocab[name]
        v = codes[int(value)] if not math.isnan(value) and 0 <= int(value) < len(codes) else "unknown"
        return f"{LABELS[name]} {v or 'none'}"
    if math.isnan(value):
        return f"{LABELS[name]} unknown"
    if name == "local_weekday":
        return f"local weekday {WEEKDAYS[int(value)]}"
    if name == "success_weekday_share":
        return f"{LABELS[name]} {value:.0%}"
    if name == "amount":
        return f"amount {value / 100:.2f}"
    return f"{LABELS[name]} {value:g}" if value == int(value) else f"{LABELS[name]} {value:.1f}"


def _explain(
    model: RecoveryModel, st: StaticFeatures, f: pd.DataFrame, plans: list[TimingPlan | None], top: int = 3
) -> None:
    rows = [i for i, p in enumerate(plans) if p is not None and p.retries]
    for p in plans:
        if p is not None and not p.retries:
            p.reasons = [p.blocked or "no retry planned", *p.notes]
    if not rows:
        return
    idx = np.asarray(rows)
    at = np.array([np.datetime64(plans[i].retries[0].replace(tzinfo=None), "s") for i in rows])  # type: ignore[union-attr]
    attempt = f["attempts_so_far"].to_numpy(dtype=np.int64)[idx] + 1
    x = assemble(st, idx, at, attempt.astype(np.float64))
    contrib = model.contributions(x)[:, :-1]
    vocab = model.vocab
    zones = f["customer_timezone"].fillna("").astype(str).to_numpy()
    ranked = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :8]  # the 8 largest, once per row
    top8 = np.round(np.take_along_axis(contrib, ranked, axis=1), 4).tolist()
    for r, i in enumerate(rows):
        plan = plans[i]
        assert plan is not None
        c = contrib[r]
        plan.contributions = dict(zip([FEATURES[j] for j in ranked[r]], top8[r], strict=True))
        tz = zones[i] or "UTC"
        try:
            local = plan.retries[0].astimezone(zone_info(tz))
        except Exception:  # an unknown zone: UTC
            local = plan.retries[0]
        reasons = [
            f"{len(plan.retries)} retr{'y' if len(plan.retries) == 1 else 'ies'} recover the invoice with "
            f"probability {plan.recovery_probability:.0%} (model {model.version})",
            f"first retry {local:%a %Y-%m-%d %H:%M} {tz} (success probability {plan.probabilities[0]:.0%})",
        ]
        for j in ranked[r, :top]:
            verb = "raises" if c[j] > 0 else "lowers"
            reasons.append(
                f"{_describe(FEATURES[j], float(x[r, j]), vocab)} {verb} the odds ({c[j]:+.2f} log-odds)"
            )
        plan.reasons = reasons + plan.notes


def route_for(
    plan: TimingPlan, *, amount: int, attempts_so_far: int, policy: RecoveryPolicy
) -> tuple[Literal["auto_retry", "retry_and_notify", "human_review", "no_retry"], str]:
    """The route by the policy thresholds, with the rules no score overrides."""
    th = policy.thresholds
    score = plan.score
    if plan.category == "hard" or (plan.blocked or "").startswith("never retried"):
        return "no_retry", plan.blocked or "hard decline: never retried"
    if plan.category == "needs_new_card":
        return "retry_and_notify", (
            "the card needs new data: ask the customer for it (card-update link); the scheduled "
            "retries catch a card its account updater refreshes in place"
        )
    if amount >= policy.high_value_minor and attempts_so_far >= 2:
        return "human_review", "repeated failure on a high-value invoice: escalate"
    if score > th.auto_retry_above:
        return "auto_retry", f"score {score} > {th.auto_retry_above}"
    if score >= th.notify_from:
        return "retry_and_notify", f"score {score} within {th.notify_from}–{th.auto_retry_above}"
    return "human_review", f"score {score} < {th.notify_from}"


def _card_fields(card: Any) -> dict[str, Any]:
    """The ATTEMPTS card columns of a `CardInfo` (or of none)."""
    return {
        "card_brand": (card.brand or "").lower() if card else "",
        "card_funding": (card.funding or "") if card else "",
        "card_country": (card.country or "") if card else "",
        "card_exp_month": card.exp_month if card else None,
        "card_exp_year": card.exp_year if card else None,
    }


def _attempt_row(a: Any, tz: str, created: Any) -> dict[str, Any]:
    card = a.card
    return {
        "attempt_id": a.id,
        "invoice_id": a.invoice_id or "",
        "customer_id": a.customer_id or "",
        "attempted_at": a.attempted_at,
        "amount": a.amount,
        "currency": a.currency,
        "outcome": a.outcome,
        "decline_code": a.decline.code if a.decline and a.outcome == "failed" else "",
        "network_advice_code": (a.decline.network_advice_code or "") if a.decline else "",
        **_card_fields(card),
        "customer_timezone": tz,
        "customer_created_at": created,
    }


def plan_for_context(
    model: RecoveryModel, ctx: Any, *, policy: RecoveryPolicy, rules: NetworkRules, now: datetime
) -> tuple[TimingPlan, int, datetime]:
    """Plan one live recovery (a `RecoveryContext`) with the model. Returns the plan, the number of
    attempts the invoice has had, and its first failure. The deadline is the first failure plus the
    policy's window; a re-plan after a failed retry counts every attempt so far."""
    cust = ctx.customer
    tz = ""
    if cust is not None:
        tz = cust.timezone or str((cust.metadata or {}).get("timezone") or "")
    created = cust.created_at if cust is not None else None
    inv = ctx.invoice
    failures_so_far = [a for a in ctx.history if a.invoice_id == inv.id and a.outcome == "failed"]
    first_failed = min([ctx.failed_at, *(a.attempted_at for a in failures_so_far)])
    attempts_so_far = max(
        1,
        inv.attempt_count,
        len({a.id for a in failures_so_far} | ({ctx.attempt.id} if ctx.attempt else set())),
    )
    earlier = [a for a in ctx.history if a.invoice_id != inv.id and a.outcome in ("failed", "succeeded")]
    hist_rows = [_attempt_row(a, tz, created) for a in earlier]
    hist = pd.DataFrame(hist_rows, columns=ATTEMPT_COLUMNS)
    hist["attempted_at"] = pd.to_datetime(hist["attempted_at"], utc=True)
    card = ctx.attempt.card if ctx.attempt and ctx.attempt.card else None
    row = {
        "invoice_id": inv.id,
        "customer_id": inv.customer_id or "",
        "amount": inv.amount_remaining or inv.amount_due,
        "currency": inv.currency,
        "failed_at": ctx.failed_at,
        "first_failed_at": first_failed,
        "attempts_so_far": attempts_so_far,
        "decline_code": ctx.decline.code,
        "network_advice_code": ctx.decline.network_advice_code or "",
        **_card_fields(card),
        "customer_timezone": tz,
        "customer_created_at": created,
        "deadline": first_failed + timedelta(days=policy.window_days),
    }
    card_hist = pd.DataFrame(
        [_attempt_row(a, tz, created) for a in ctx.card_attempts if a.attempted_at <= ctx.failed_at],
        columns=ATTEMPT_COLUMNS,
    )
    if len(card_hist):
        card_hist["customer_id"] = row["customer_id"]  # the caps count the card, whoever's invoice it was
    plans = plan_timing(
        model,
        pd.DataFrame([row]),
        CustomerHistory.build(hist),
        card_hist,
        max_retries=max(0, policy.max_retries - (attempts_so_far - 1)),
        rules=rules,
        now=now,
        min_retry_probability=policy.min_retry_probability,
        attempt_cost=policy.attempt_cost,
    )
    from billops.recovery.explore import earliest_retry, exploration_key, explore

    one = pd.DataFrame([row])
    network_wait = categories(one["decline_code"], one["network_advice_code"], one["card_brand"])
    wait = max(ctx.decline.retry_after_hours or 0.0, float(network_wait["wait_hours"].iloc[0]))
    plan = explore(
        plans[0],
        share=policy.exploration_share,
        key=exploration_key(ctx.platform, inv.id, attempts_so_far),
        earliest=earliest_retry(ctx.failed_at, now, rules, wait),
        deadline=row["deadline"],
        rules=rules,
        card_brand=row["card_brand"],
        card_attempts=[a.attempted_at for a in ctx.card_attempts if a.attempted_at <= ctx.failed_at],
        failed_at=ctx.failed_at,
    )
    return plan, attempts_so_far, first_failed
