"""Outcomes become labels: the optional ATTEMPTS label columns, the mirror's export of the retries
BillOps executed (who chose the time, with which propensity) and `billops recovery exploration`."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billops.cli import app
from billops.domain import CardInfo, Customer, PaymentAttempt
from billops.mirror import Mirror
from billops.mirror.history import export_file, mirror_attempts_frame
from billops.recovery.data import ATTEMPT_COLUMNS, LABEL_COLUMNS, DataError, read_attempts, write_attempts
from billops.store import Database
from billops.store.models import Decision

ROW = {
    "attempt_id": "ch_1", "invoice_id": "in_1", "customer_id": "cus_1",
    "attempted_at": "2026-01-05T09:00:00Z", "amount": "2500", "currency": "usd", "outcome": "failed",
    "decline_code": "insufficient_funds", "network_advice_code": "", "card_brand": "visa",
    "card_funding": "credit", "card_country": "US", "card_exp_month": "4", "card_exp_year": "2028",
    "customer_timezone": "", "customer_created_at": "",
}  # fmt: skip


def write(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return path


def test_label_columns_round_trip_through_read_attempts(tmp_path: Path) -> None:
    cols = [*ATTEMPT_COLUMNS, *LABEL_COLUMNS]
    rows = [
        {**ROW, "retry_source": "billops_explore", "propensity": "0.0011363636363636363"},
        {**ROW, "attempt_id": "ch_2", "retry_source": "platform", "propensity": ""},
        {**ROW, "attempt_id": "ch_3", "retry_source": "HUMAN", "propensity": ""},
        {**ROW, "attempt_id": "ch_4", "retry_source": "billops", "propensity": "1"},
    ]
    df = read_attempts(write(tmp_path / "a.csv", rows, cols))
    assert list(df.columns) == cols
    assert df["retry_source"].tolist() == ["billops_explore", "platform", "human", "billops"]
    assert df["propensity"].dtype == "float64" and df["propensity"].iloc[0] == 0.0011363636363636363
    assert df["propensity"].isna().tolist() == [False, True, True, False]
    out = tmp_path / "b.csv"
    write_attempts(out, df)
    again = read_attempts(out)
    assert again.equals(df)
    # Files without them keep the contract's columns exactly.
    plain = read_attempts(write(tmp_path / "c.csv", [ROW], ATTEMPT_COLUMNS))
    assert list(plain.columns) == ATTEMPT_COLUMNS


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("propensity", "0", "not a propensity: a probability 0 < p ≤ 1"),
        ("propensity", "1.5", "not a propensity"),
        ("propensity", "high", "not a propensity"),
        ("retry_source", "robot", "not a retry source (billops|billops_explore|human|platform, or empty)"),
    ],
)
def test_bad_label_values_are_named(tmp_path: Path, column: str, value: str, message: str) -> None:
    row = {**ROW, "retry_source": "", "propensity": "", column: value}
    with pytest.raises(DataError) as err:
        read_attempts(write(tmp_path / "a.csv", [row], [*ATTEMPT_COLUMNS, *LABEL_COLUMNS]))
    assert f"a.csv line 2, column {column}: " in err.value.message and message in err.value.message


T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
EXPLORED = {"explored": True, "share": 0.05, "propensity": 0.002, "greedy_retries": [], "options": 25}
UNEXPLORED = {**EXPLORED, "explored": False, "propensity": 0.95}


def attempt(aid: str, invoice: str, at: datetime, outcome: str, by: str) -> PaymentAttempt:
    return PaymentAttempt(
        platform="stripe", id=aid, invoice_id=invoice, customer_id="cus_1", amount=2500, currency="usd",
        attempted_at=at, outcome=outcome, card=CardInfo(brand="visa", exp_month=4, exp_year=2030),
        initiated_by=by,
    )  # fmt: skip


def decision(wf: str, invoice: str, plan: dict, outcome: dict, mode: str = "auto") -> Decision:
    return Decision(
        workflow_id=wf, workflow="recovery", platform="stripe", invoice_id=invoice, customer_id="cus_1",
        event_id="evt", amount=2500, currency="usd", route="auto_retry", score=90, mode=mode,
        status="recovered", plan=plan, versions={}, trace_id="t", outcome=outcome,
    )  # fmt: skip


@pytest.fixture
def labelled_db(database_url: str) -> Iterator[Database]:
    """In_1: the platform's failure, an explored first retry (failed), a re-planned second (paid).
    In_2: an approver moved the retry (failed; recorded before retries kept their attempt id).
    In_3: a shadow decision that explored (nothing executed)."""
    db = Database(database_url)
    db.migrate()
    r1, r2 = T0 + timedelta(hours=20), T0 + timedelta(hours=50)
    with db.session() as s:
        m = Mirror(s)
        m.upsert(Customer(platform="stripe", id="cus_1", timezone="Europe/Paris"), source_time=T0)
        m.upsert(attempt("ch_f1", "in_1", T0, "failed", "platform"), source_time=T0)
        m.upsert(attempt("ch_r1", "in_1", r1, "failed", "billops"), source_time=r1, source="billops")
        m.upsert(attempt("ch_r2", "in_1", r2, "succeeded", "billops"), source_time=r2, source="billops")
        m.upsert(attempt("ch_f2", "in_2", T0, "failed", "platform"), source_time=T0)
        m.upsert(attempt("ch_h1", "in_2", r1, "failed", "billops"), source_time=r1, source="billops")
        s.add(
            decision(
                "wf1", "in_1",
                {"retries": [r1.isoformat()], "exploration": EXPLORED, "replans": [
                    {"after_retry": 1, "retries": [r2.isoformat()],
                     "exploration": UNEXPLORED}]},
                {"pay:1": {"status": "failed", "attempt_id": "ch_r1"},
                 "pay:2": {"status": "succeeded", "attempt_id": "ch_r2"}},
            )
        )  # fmt: skip
        s.add(
            decision(
                "wf2", "in_2",
                {"retries": [r1.isoformat()], "exploration": UNEXPLORED,
                 "original": {"retries": [(r1 - timedelta(hours=5)).isoformat()]}},
                {"pay:1": {"status": "failed"}}, mode="assist",
            )
        )  # fmt: skip
        s.add(
            decision("wf3", "in_3", {"retries": [r1.isoformat()], "exploration": EXPLORED}, {}, mode="shadow")
        )
    yield db
    db.dispose()


def test_export_labels_billops_retries_with_their_propensities(labelled_db: Database, tmp_path: Path) -> None:
    out = tmp_path / "ATTEMPTS.csv"
    assert export_file(labelled_db, out) == (5, 0)
    df = read_attempts(out).set_index("attempt_id")
    assert df.loc["ch_r1", "retry_source"] == "billops_explore" and df.loc["ch_r1", "propensity"] == 0.002
    assert df.loc["ch_r2", "retry_source"] == "billops" and df.loc["ch_r2", "propensity"] == 0.95
    assert (
        df.loc["ch_h1", "retry_source"] == "human"
        and df.loc["ch_h1", "propensity"] != df.loc["ch_h1", "propensity"]
    )
    assert df.loc["ch_f1", "retry_source"] == "platform" and df.loc["ch_f2", "retry_source"] == "platform"
    frame = mirror_attempts_frame(labelled_db)
    assert list(frame.columns) == [*ATTEMPT_COLUMNS, *LABEL_COLUMNS]
    assert frame["propensity"].notna().sum() == 2


def test_exploration_cli_prints_the_figures(labelled_db: Database, database_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    root = ["--data-dir", str(tmp_path / "data"), "--database-url", database_url]
    res = runner.invoke(app, [*root, "recovery", "exploration", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["decisions"] == 3 and report["learned_plans"] == 4  # 3 decisions + 1 re-plan
    assert report["explored_plans"] == 2 and report["realized_share"] == 0.5
    assert report["explored_by_mode"] == {"auto": 1, "shadow": 1}
    by = {r["source"]: r for r in report["retries"]}
    assert by["billops_explore"]["retries"] == 1 and by["billops_explore"]["rate"] == 0.0
    assert by["billops"]["retries"] == 1 and by["billops"]["rate"] == 1.0
    assert by["human"]["retries"] == 1
    greedy = report["estimates"]["greedy"]
    assert greedy["value"] == 1.0 and greedy["n"] == 2
    res = runner.invoke(app, [*root, "recovery", "exploration"])
    assert res.exit_code == 0, res.output
    assert "realized" in res.output and "billops_explore" in res.output
    assert "the planner's own times" in res.output and "100.0%" in res.output
