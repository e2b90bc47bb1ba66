"""Retryability is learned, not decreed; the retry count follows the expected value (issue 15)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from billops.policy import load_policy
from billops.recovery.cli import plan_rows
from billops.recovery.planner import load_network_rules
from billops.recovery.training import train

RULES = load_network_rules()
POLICY = load_policy(None)  # the packaged policy
START = datetime(2025, 1, 6, tzinfo=UTC)


def _history(seed: int = 3) -> pd.DataFrame:
    """expired_card: after ~3 days an account updater refreshes the card in place (same brand, new
    expiry) and a retry then succeeds half the time; incorrect_cvc: no retry ever succeeds."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    n = 0
    for c in range(1600):
        code = "expired_card" if c % 2 == 0 else "incorrect_cvc"
        t0 = START + timedelta(days=int(rng.integers(0, 300)), hours=float(rng.uniform(0, 24)))
        common = {
            "invoice_id": f"in_{c}",
            "customer_id": f"cus_{c}",
            "amount": 4900,
            "currency": "usd",
            "network_advice_code": "",
            "card_brand": "visa",
            "card_funding": "credit",
            "card_country": "US",
            "card_exp_month": 1,
            "card_exp_year": 2025,
            "customer_timezone": "America/New_York",
            "customer_created_at": START - timedelta(days=300),
        }
        rows.append(
            {**common, "attempt_id": f"a{n}", "attempted_at": t0, "outcome": "failed", "decline_code": code}
        )
        n += 1
        t = t0
        for _ in range(6):
            t = t + timedelta(hours=float(rng.uniform(6, 72)))
            refreshed = code == "expired_card" and t - t0 >= timedelta(days=3)
            ok = refreshed and rng.random() < 0.5
            row = {**common, "attempt_id": f"a{n}", "attempted_at": t}
            if refreshed:
                row["card_exp_year"] = 2029  # the updater's new expiry
            row.update(outcome="succeeded" if ok else "failed", decline_code="" if ok else code)
            rows.append(row)
            n += 1
            if ok:
                break
    h = pd.DataFrame(rows)
    for col in ("attempted_at", "customer_created_at"):
        h[col] = pd.to_datetime(h[col], utc=True)
    return h.sort_values("attempted_at", kind="stable").reset_index(drop=True)


def _failure(i: int, code: str) -> dict[str, object]:
    at = datetime(2026, 3, 2, 10, tzinfo=UTC) + timedelta(hours=7 * i)
    return {
        "invoice_id": f"in_new{i}",
        "customer_id": f"cus_new{i}",
        "amount": 4900,
        "currency": "usd",
        "failed_at": at,
        "decline_code": code,
        "network_advice_code": "",
        "card_brand": "visa",
        "card_funding": "credit",
        "card_country": "US",
        "card_exp_month": 1,
        "card_exp_year": 2026,
        "customer_timezone": "America/New_York",
        "customer_created_at": at - timedelta(days=400),
        "deadline": at + timedelta(days=14),
    }


def test_needs_new_card_retries_follow_what_the_history_shows(tmp_path: Path) -> None:
    h = _history()
    model, _ = train(h, out=tmp_path / "m", source="updater world")
    # The in-place refreshes (same card, new expiry) are retries to learn from, not new cards.
    assert model.manifest["training"]["refreshed_card_retries"] > 300
    assert model.manifest["training"]["new_card_retries_excluded"] == 0
    fails = pd.DataFrame([_failure(i, "expired_card" if i % 2 == 0 else "incorrect_cvc") for i in range(20)])
    plans = plan_rows(model, fails, h.head(0), max_retries=6, policy=POLICY, rules=RULES)
    for r, f in zip(plans, fails.to_dict("records"), strict=True):
        assert r["route"] == "retry_and_notify", r
        times = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in r["retries"]]
        if f["decline_code"] == "expired_card":
            # Worth retrying, after the updater usually refreshed the card, several times.
            assert len(times) >= 2, r
            assert max(r["retry_probabilities"]) > 0.2, r
            assert times[-1] - f["failed_at"] >= timedelta(days=3), r
        else:  # never recovers in the history: no retry is worth its cost
            assert times == [] and r["recovery_score"] == 0, r


def test_the_attempt_cost_decides_how_many_retries(tmp_path: Path) -> None:
    h = _history(seed=4)
    model, _ = train(h, out=tmp_path / "m", source="updater world")
    fails = pd.DataFrame([_failure(i, "expired_card") for i in range(0, 12, 2)])
    cheap = plan_rows(model, fails, h.head(0), max_retries=8, policy=POLICY, rules=RULES)
    # 30 USD per try on a 49 USD invoice
    dear = POLICY.model_copy(update={"recovery": POLICY.recovery.model_copy(update={"attempt_cost": 30.0})})
    few = plan_rows(model, fails, h.head(0), max_retries=8, policy=dear, rules=RULES)
    n_cheap = sum(len(r["retries"]) for r in cheap)
    n_few = sum(len(r["retries"]) for r in few)
    assert n_few < n_cheap, (n_few, n_cheap)
    for r in few:  # every retry kept is worth its cost: p × 4,900 > 3,000
        assert all(p * 4900 > 3000 for p in r["retry_probabilities"]), r


def test_a_card_fingerprint_tells_a_new_card_from_an_updater_refresh(tmp_path: Path) -> None:
    from billops.recovery.data import read_attempts, write_attempts
    from billops.recovery.model import training_examples

    base = {
        "customer_id": "cus_1",
        "amount": 4900,
        "currency": "usd",
        "network_advice_code": "",
        "card_brand": "visa",
        "card_funding": "credit",
        "card_country": "US",
        "card_exp_month": 1,
        "card_exp_year": 2025,
        "customer_timezone": "America/New_York",
        "customer_created_at": START,
    }
    t = START + timedelta(days=30)
    rows = []
    for inv, fp_after in (("in_refresh", "fp_a"), ("in_new_card", "fp_b")):
        first = {"attempt_id": f"{inv}_1", "invoice_id": inv, "attempted_at": t, "outcome": "failed"}
        rows.append({**base, **first, "decline_code": "expired_card", "card_fingerprint": "fp_a"})
        paid = {"attempt_id": f"{inv}_2", "invoice_id": inv, "attempted_at": t + timedelta(days=3)}
        paid |= {
            "outcome": "succeeded",
            "decline_code": "",
            "card_exp_year": 2029,
            "card_fingerprint": fp_after,
        }
        rows.append({**base, **paid})
    frame = pd.DataFrame(rows)
    for col in ("attempted_at", "customer_created_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    path = tmp_path / "attempts.csv"
    write_attempts(path, frame)
    back = read_attempts(path)  # the optional column survives the file
    assert list(back["card_fingerprint"]) == ["fp_a", "fp_a", "fp_a", "fp_b"]
    ex = training_examples(back)
    assert list(ex["invoice_id"]) == ["in_refresh"]  # the same card, refreshed: a retry to learn from
    assert ex.attrs["new_card_retries_excluded"] == 1 and ex.attrs["refreshed_card_retries"] == 1
    assert int(ex["card_exp_year"].iloc[0]) == 2025  # the card as it failed, not the updater's new expiry
