"""Shadow backtest (recovery/backtest.py): the estimator on a hand-made mirror, and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from billops.recovery.backtest import backtest

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _row(
    aid: str, inv: str, at: datetime, outcome: str, amount: int = 1000, cur: str = "usd", **kw: Any
) -> dict[str, Any]:
    base = {
        "attempt_id": aid,
        "invoice_id": inv,
        "customer_id": "c_" + inv,
        "attempted_at": pd.Timestamp(at),
        "amount": amount,
        "currency": cur,
        "outcome": outcome,
        "decline_code": "insufficient_funds" if outcome == "failed" else "",
        "network_advice_code": "",
        "card_brand": "visa",
        "card_funding": "debit",
        "card_country": "US",
        "card_exp_month": 4,
        "card_exp_year": 2029,
        "customer_timezone": "",
        "customer_created_at": pd.NaT,
    }
    base.update(kw)
    return base


def _mirror() -> pd.DataFrame:
    rows = []
    for i in range(40):
        t = T0 + timedelta(hours=i)
        rows.append(_row(f"a{i}", f"in{i}", t, "failed"))
        if i % 4 == 0:  # platform retry pays
            rows.append(_row(f"b{i}", f"in{i}", t + timedelta(days=3), "succeeded", retry_source="platform"))
        elif i % 4 == 1:  # new card
            rows.append(_row(f"b{i}", f"in{i}", t + timedelta(days=2), "succeeded", card_brand="mastercard"))
        elif i % 4 == 2:  # paid after the window: lost
            rows.append(_row(f"b{i}", f"in{i}", t + timedelta(days=30), "succeeded"))
    rows.append(_row("z", "in_open", NOW - timedelta(days=2), "failed", amount=500))
    rows.append(_row("e", "in_eur", T0, "failed", amount=2000, cur="eur"))
    df = pd.DataFrame(rows)
    df["attempted_at"] = pd.to_datetime(df["attempted_at"], utc=True)
    df["retry_source"] = df["retry_source"].fillna("")
    return df.sort_values("attempted_at").reset_index(drop=True)


def _plan(p: float) -> Any:
    def plan(failures: pd.DataFrame, history: pd.DataFrame) -> list[dict[str, Any]]:
        assert (history["attempted_at"] < failures["failed_at"].max()).all()
        return [
            {"invoice_id": i, "recovery_probability": p, "route": "auto_retry"}
            for i in failures["invoice_id"]
        ]

    return plan


def _run(p: float = 0.7, seed: int = 0) -> dict[str, Any]:
    return backtest(
        _mirror(),
        since=T0,
        until=NOW,
        plan=_plan(p),
        window_days=21,
        now=NOW,
        model_version="test",
        resamples=1000,
        seed=seed,
    )


def test_expected_actual_and_counts() -> None:
    r = _run()
    assert r["invoices"] == 42 and r["open"] == 1 and r["compared"] == 41
    usd = r["currencies"]["usd"]
    assert usd["invoices"] == 40 and usd["failed_amount"] == 40_000
    assert usd["billops_expected"] == 28_000  # 40 × 1000 × 0.7
    assert usd["actual_recovered"] == 20_000 and usd["actual_by"] == {
        "card_update": 10_000,
        "platform": 10_000,
    }
    assert usd["uplift"] == 8_000
    lo, hi = usd["uplift_ci95"]
    assert lo < 8_000 < hi
    assert r["currencies"]["eur"]["billops_expected"] == 1400
    assert "estimate" in r["caveat"]


def test_deterministic_with_the_seed() -> None:
    assert _run(seed=3) == _run(seed=3)
    assert (
        _run(seed=3)["currencies"]["usd"]["uplift_ci95"] != _run(seed=4)["currencies"]["usd"]["uplift_ci95"]
    )


def test_empty_range_is_a_report_not_a_crash() -> None:
    r = backtest(
        _mirror(),
        since=NOW,
        until=NOW + timedelta(days=1),
        plan=_plan(0.5),
        window_days=21,
        now=NOW,
        model_version="test",
    )
    assert r["invoices"] == 0 and r["currencies"] == {}


def test_cli_bad_dates_exit_2_and_empty_range_message(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from billops.cli import app

    monkeypatch.setenv("BILLOPS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BILLOPS_DATABASE_URL", f"sqlite:///{tmp_path / 'b.db'}")
    runner = CliRunner()
    bad = runner.invoke(app, ["recovery", "backtest", "--since", "2026-13-01"])
    assert bad.exit_code == 2 and "not a date" in bad.output
    backwards = runner.invoke(app, ["recovery", "backtest", "--since", "2026-05-01", "--until", "2026-04-01"])
    assert backwards.exit_code == 2
    ok = runner.invoke(app, ["recovery", "backtest", "--since", "2026-01-01", "--until", "2026-02-01"])
    assert ok.exit_code == 0, ok.output
    assert "rules-v1" in ok.output and "nothing to compare" in ok.output


def test_demo_block_prints_the_backtest_on_the_demo_mirror(tmp_path: Any) -> None:
    import io

    from rich.console import Console

    from billops.recovery.backtest_cli import demo_block
    from billops.store.db import Database

    db = Database(f"sqlite:///{tmp_path / 'billops.db'}")
    db.migrate()
    db.dispose()
    out = io.StringIO()
    r = demo_block(Console(file=out, width=120), tmp_path, 30)
    assert r is not None and r["model"].startswith("rules-v1")
    assert "Shadow backtest" in out.getvalue() and "/console/backtest" in out.getvalue()
