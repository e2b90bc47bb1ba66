"""`billops recovery evaluate --worlds`: violations, ECE, the bootstrap, an end-to-end run on tiny worlds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from billops.recovery.planner import load_network_rules
from billops.recovery.worlds import (
    FIXED_SCHEDULES,
    bootstrap_ratio,
    count_violations,
    expected_calibration_error,
)

T0 = datetime(2026, 10, 5, 12, tzinfo=UTC)
RULES = load_network_rules()


def _days(*d: float) -> list[datetime]:
    return [T0 + timedelta(days=x) for x in d]


def test_fixed_schedule_retrying_never_codes_counts_violations() -> None:
    plan = _days(*FIXED_SCHEDULES["polar_2_7_14_21d"])
    lost = count_violations(plan, failed_at=T0, code="lost_card", mac="", brand="visa", rules=RULES)
    assert lost["never_code"] == 4
    mac03 = count_violations(
        plan, failed_at=T0, code="do_not_honor", mac="03", brand="mastercard", rules=RULES
    )
    assert mac03["never_code"] == 4
    soft = count_violations(plan, failed_at=T0, code="insufficient_funds", mac="", brand="visa", rules=RULES)
    assert sum(soft.values()) == 0
    # needs-new-card declines are not "never" codes: retrying them is allowed
    expired = count_violations(
        plan, failed_at=T0, code="expired_card", mac="01", brand="mastercard", rules=RULES
    )
    assert sum(expired.values()) == 0


def test_spacing_wait_and_caps_count() -> None:
    close = [T0 + timedelta(hours=5), T0 + timedelta(hours=6)]
    v = count_violations(close, failed_at=T0, code="insufficient_funds", mac="", brand="visa", rules=RULES)
    assert v["spacing"] == 1
    wait = count_violations(
        [T0 + timedelta(hours=2)],
        failed_at=T0,
        code="do_not_honor",
        mac="25",
        brand="mastercard",
        rules=RULES,
    )
    assert wait["network_wait"] == 1  # MAC 25: retry after 24 h
    many = [T0 + timedelta(hours=4 * (k + 1)) for k in range(20)]
    cap = count_violations(many, failed_at=T0, code="do_not_honor", mac="", brand="visa", rules=RULES)
    assert cap["card_cap"] == 5  # Visa: at most 15 reattempts in 30 days


def test_ece_on_a_known_example() -> None:
    p = np.array([0.1] * 10 + [0.9] * 10)
    y = np.array([0] * 10 + [1] * 5 + [0] * 5, dtype=float)
    ece, table = expected_calibration_error(y, p, bins=2)
    # bin 1: predicted 0.1, observed 0.0; bin 2: predicted 0.9, observed 0.5 → (0.1 + 0.4) / 2
    assert ece == pytest.approx(0.25)
    assert [(r["predicted"], r["observed"], r["n"]) for r in table] == [
        (pytest.approx(0.1), 0.0, 10),
        (pytest.approx(0.9), 0.5, 10),
    ]
    perfect, _ = expected_calibration_error(np.array([0, 1, 0, 1.0]), np.array([0.5] * 4), bins=2)
    assert perfect == pytest.approx(0.0)


def test_bootstrap_ratio_is_paired() -> None:
    a = np.array([10, 0, 10, 10] * 50)
    point, lo, hi = bootstrap_ratio(a, a, n=200)
    assert point == lo == hi == 1.0
    point, lo, hi = bootstrap_ratio(a * 1.2, a, n=200)
    assert point == pytest.approx(1.2) and lo == pytest.approx(1.2) and hi == pytest.approx(1.2)
    b = np.array([10, 10, 0, 0] * 50)
    point, lo, hi = bootstrap_ratio(a, b, n=500)
    assert point == pytest.approx(1.5) and lo < point < hi


def test_cli_worlds_end_to_end_on_tiny_worlds(tmp_path: Path) -> None:
    from billops.cli import app

    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "recovery", "evaluate", "--worlds", "updater_rich,mastercard_heavy", "--customers", "500",
            "--months", "5", "--luck", "2", "--end", "2026-11-01", "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [w["world"] for w in report["worlds"]] == ["updater_rich", "mastercard_heavy"]
    assert set(report["pass"]) == {"updater_rich", "mastercard_heavy"}
    for w in report["worlds"]:
        assert set(w["checks"]) == {"ratio", "violations", "ece"}
        assert isinstance(w["pass"], bool)
        assert w["policies"]["billops"]["violations"] == 0  # the planner obeys the rules file
        assert set(FIXED_SCHEDULES) <= set(w["policies"])
        assert w["best_fixed"] in FIXED_SCHEDULES
        assert w["policies"][w["best_fixed"]]["ratio_vs_best_fixed"] == pytest.approx(1.0)
        assert w["calibration"]["deciles"] and w["luck_replicates"] == 2
    # a fixed schedule retries never-codes somewhere in these worlds
    assert (
        sum(w["policies"]["stripe_8_in_14d"]["violations_by_rule"]["never_code"] for w in report["worlds"])
        > 0
    )
    md = (out / "report.md").read_text()
    assert "## updater_rich" in md and "ECE" in md and "ratio vs best fixed" in md


def test_cli_bad_world_name_exits_2(tmp_path: Path) -> None:
    from billops.cli import app

    result = CliRunner().invoke(
        app, ["recovery", "evaluate", "--worlds", "default,atlantis", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "atlantis" in result.output and "payday_heavy" in result.output
    assert not (tmp_path / "report.json").exists()


def test_cli_without_model_or_worlds_exits_2(tmp_path: Path) -> None:
    from billops.cli import app

    result = CliRunner().invoke(app, ["recovery", "evaluate", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--model" in result.output
