"""The payment-history file formats: ATTEMPTS.csv and FAILURES.jsonl readers (dtypes, normalization,
every validation error with its file, line and column), and the atomic writers."""

from __future__ import annotations

import csv
import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from billops.errors import InputError
from billops.recovery import data as history_data
from billops.recovery.data import (
    ATTEMPT_COLUMNS,
    FAILURE_COLUMNS,
    DataError,
    read_attempts,
    read_failures,
    write_attempts,
    write_jsonl,
)

ROW: dict[str, str] = {
    "attempt_id": "ch_1",
    "invoice_id": "in_1",
    "customer_id": "cus_1",
    "attempted_at": "2026-03-01T10:00:00Z",
    "amount": "1999",
    "currency": "usd",
    "outcome": "failed",
    "decline_code": "insufficient_funds",
    "network_advice_code": "01",
    "card_brand": "mastercard",
    "card_funding": "credit",
    "card_country": "US",
    "card_exp_month": "3",
    "card_exp_year": "2027",
    "customer_timezone": "America/New_York",
    "customer_created_at": "2025-01-15T08:00:00Z",
}

FAILURE: dict[str, Any] = {
    "invoice_id": "in_9",
    "customer_id": "cus_9",
    "amount": 4900,
    "currency": "EUR",
    "failed_at": "2026-03-02T09:30:00+01:00",
    "decline_code": "insufficient_funds",
    "network_advice_code": None,
    "card_brand": "Visa",
    "card_funding": "debit",
    "card_country": "fr",
    "card_exp_month": 11,
    "card_exp_year": 2028,
    "customer_timezone": "Europe/Paris",
    "customer_created_at": None,
    "deadline": "2026-03-20T00:00:00Z",
}

DTYPES = {
    "attempted_at": "datetime64[ns, UTC]",
    "customer_created_at": "datetime64[ns, UTC]",
    "failed_at": "datetime64[ns, UTC]",
    "deadline": "datetime64[ns, UTC]",
    "amount": "int64",
    "card_exp_month": "Int64",
    "card_exp_year": "Int64",
}


def row(**changes: str) -> dict[str, str]:
    return {**ROW, **changes}


def write_csv(
    path: Path, rows: list[dict[str, str]], columns: list[str] | None = None, name: str = "attempts.csv"
) -> Path:
    file = path / name
    columns = columns or ATTEMPT_COLUMNS
    with file.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c, "") for c in columns])
    return file


def write_failures(path: Path, objs: list[Any], name: str = "failures.jsonl") -> Path:
    file = path / name
    file.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs))
    return file


def check_dtypes(df: pd.DataFrame, columns: list[str]) -> None:
    assert list(df.columns) == columns
    for c in columns:
        if c in DTYPES:
            assert str(df[c].dtype) == DTYPES[c], c
        else:
            assert pd.api.types.is_string_dtype(df[c].dtype), c


# ---------------------------------------------------------------------------------------------
# ATTEMPTS.csv


def test_reads_and_normalizes(tmp_path: Path) -> None:
    rows = [
        row(),
        row(
            attempt_id=" ch_2 ",
            attempted_at="2026-03-02T12:00:00",
            currency="EUR",
            outcome="FAILED",
            decline_code="Do_Not_Honor",
            network_advice_code="3",
            card_brand="American Express",
            card_funding="Debit",
            card_country="fr",
            card_exp_month="09",
            card_exp_year="29",
            customer_timezone="",
            customer_created_at="",
        ),
        row(
            attempt_id="ch_3",
            attempted_at="2026-03-03T00:00:00Z",
            outcome="succeeded",
            decline_code="",
            network_advice_code="",
            card_brand="MasterCard",
            card_exp_month="",
            card_exp_year="",
        ),
        row(attempt_id="ch_4", attempted_at="2026-03-04T00:00:00Z", decline_code="", card_brand="Visa"),
    ]
    df = read_attempts(write_csv(tmp_path, rows))
    check_dtypes(df, ATTEMPT_COLUMNS)
    assert df["attempt_id"].tolist() == ["ch_1", "ch_2", "ch_3", "ch_4"]
    r = df.iloc[1]
    assert r["currency"] == "eur" and r["outcome"] == "failed" and r["decline_code"] == "do_not_honor"
    assert r["network_advice_code"] == "03"
    assert (r["card_brand"], r["card_funding"], r["card_country"]) == ("amex", "debit", "FR")
    assert (r["card_exp_month"], r["card_exp_year"]) == (9, 2029)
    assert r["customer_timezone"] == "" and pd.isna(r["customer_created_at"])
    assert df.iloc[2]["card_brand"] == "mastercard" and df.iloc[3]["card_brand"] == "visa"
    assert pd.isna(df.iloc[2]["card_exp_month"]) and pd.isna(df.iloc[2]["card_exp_year"])
    assert df.iloc[3]["decline_code"] == ""  # a failure without a code stays '': the model decides
    assert df["amount"].tolist() == [1999] * 4


def test_times_become_utc(tmp_path: Path) -> None:
    rows = [
        row(attempt_id="a", attempted_at="2026-03-01T10:00:00+05:30"),
        row(attempt_id="b", attempted_at="2026-03-01 06:00:00"),  # naive: taken as UTC
        row(attempt_id="c", attempted_at="2026-03-01T05:00:00.123456Z"),
        row(attempt_id="d", attempted_at="2026-03-01T01:00:00-04:00", customer_created_at="2025-06-01"),
    ]
    df = read_attempts(write_csv(tmp_path, rows))
    got = dict(zip(df["attempt_id"], df["attempted_at"], strict=True))
    assert got["a"] == pd.Timestamp("2026-03-01T04:30:00Z")
    assert got["b"] == pd.Timestamp("2026-03-01T06:00:00Z")
    assert got["c"] == pd.Timestamp("2026-03-01T05:00:00.123456Z")
    assert got["d"] == pd.Timestamp("2026-03-01T05:00:00Z")
    assert df.loc[df["attempt_id"] == "d", "customer_created_at"].iloc[0] == pd.Timestamp("2025-06-01T00:00Z")
    assert str(df["attempted_at"].dt.tz) == "UTC"


def test_sorted_by_time_stably(tmp_path: Path) -> None:
    rows = [
        row(attempt_id="late", attempted_at="2026-03-05T00:00:00Z"),
        row(attempt_id="tie_1", attempted_at="2026-03-01T00:00:00Z"),
        row(attempt_id="early", attempted_at="2026-02-01T00:00:00Z"),
        row(attempt_id="tie_2", attempted_at="2026-03-01T01:00:00+01:00"),
    ]
    df = read_attempts(write_csv(tmp_path, rows))
    assert df["attempt_id"].tolist() == ["early", "tie_1", "tie_2", "late"]
    assert df.index.tolist() == [0, 1, 2, 3]


def test_extra_columns_ignored_and_any_order(tmp_path: Path) -> None:
    columns = ["note", *reversed(ATTEMPT_COLUMNS), "amount_major"]
    rows = [{**row(), "note": "hello, world", "amount_major": "19.99"}]
    df = read_attempts(write_csv(tmp_path, rows, columns=columns))
    check_dtypes(df, ATTEMPT_COLUMNS)
    assert df.iloc[0]["amount"] == 1999 and df.iloc[0]["attempt_id"] == "ch_1"


def test_header_with_spaces_and_bom(tmp_path: Path) -> None:
    file = tmp_path / "attempts.csv"
    file.write_text(
        "\ufeff" + ", ".join(ATTEMPT_COLUMNS) + "\n" + ",".join(ROW[c] for c in ATTEMPT_COLUMNS) + "\n"
    )
    assert read_attempts(file)["attempt_id"].tolist() == ["ch_1"]


@pytest.mark.parametrize("content", ["", "\n\n", ",".join(ATTEMPT_COLUMNS) + "\n"])
def test_empty_or_header_only_gives_zero_rows(tmp_path: Path, content: str) -> None:
    file = tmp_path / "attempts.csv"
    file.write_text(content)
    df = read_attempts(file)
    assert len(df) == 0
    check_dtypes(df, ATTEMPT_COLUMNS)


def _detail(column: str, value: str) -> str:
    return f"attempts.csv line 3, column {column}: {value}"


ISO_HINT = " is not an ISO 8601 time (e.g. 2026-03-01T09:30:00Z)"
TZ_HINT = " is not an IANA time zone (e.g. Europe/Paris, America/New_York)"
PENDING = "'pending' attempts are not allowed: only settled attempts (succeeded|failed) belong here"
YEAR_HINT = " is not an expiry year (4 digits, or 2 digits meaning 20YY)"
JSON_HINT = "invalid JSON: Expecting property name enclosed in double quotes"
AMOUNT_HINT = " is not an amount: an integer ≥ 0 in minor units (e.g. 1999 for 19.99)"

BAD_VALUES = [
    ("attempted_at", "2026-13-01", "'2026-13-01'" + ISO_HINT),
    ("attempted_at", "now", "'now'" + ISO_HINT),
    ("attempted_at", "1772359200", "'1772359200'" + ISO_HINT),
    ("attempted_at", "", "empty; an ISO 8601 time is required (e.g. 2026-03-01T09:30:00Z)"),
    ("customer_created_at", "last week", "'last week'" + ISO_HINT),
    ("amount", "12.5", "'12.5'" + AMOUNT_HINT),
    ("amount", "abc", "'abc'" + AMOUNT_HINT),
    ("amount", "-5", "'-5'" + AMOUNT_HINT),
    ("amount", "", "empty; an integer amount in minor units is required"),
    ("currency", "us", "'us' is not a 3-letter ISO 4217 currency code"),
    ("currency", "", "empty; required"),
    ("outcome", "pending", PENDING),
    ("outcome", "refunded", "'refunded' is not an outcome (succeeded|failed)"),
    ("outcome", "", "empty; succeeded or failed required"),
    ("network_advice_code", "123", "'123' is not a network advice code: two digits (e.g. 01), or empty"),
    ("network_advice_code", "A1", "'A1' is not a network advice code: two digits (e.g. 01), or empty"),
    ("card_funding", "charge", "'charge' is not a card funding (credit|debit|prepaid|unknown, or empty)"),
    ("card_country", "USA", "'USA' is not a 2-letter ISO 3166 country code"),
    ("card_exp_month", "13", "'13' is not a month (1-12)"),
    ("card_exp_month", "0", "'0' is not a month (1-12)"),
    ("card_exp_year", "7", "'7'" + YEAR_HINT),
    ("card_exp_year", "2027.0", "'2027.0'" + YEAR_HINT),
    ("customer_timezone", "Mars/Olympus", "'Mars/Olympus'" + TZ_HINT),
    ("attempt_id", "", "empty; an id is required"),
    ("invoice_id", "   ", "empty; an id is required"),
    ("customer_id", "", "empty; an id is required"),
]


@pytest.mark.parametrize(("column", "value", "message"), BAD_VALUES)
def test_bad_value_names_file_line_and_column(tmp_path: Path, column: str, value: str, message: str) -> None:
    rows = [row(), row(**{"attempt_id": "ch_2", column: value}), row(attempt_id="ch_3")]
    with pytest.raises(DataError) as exc:
        read_attempts(write_csv(tmp_path, rows))
    assert str(exc.value) == _detail(column, message)
    assert isinstance(exc.value, InputError) and exc.value.status == 400


@pytest.mark.parametrize("column", ["decline_code", "network_advice_code"])
def test_decline_signals_must_be_empty_on_success(tmp_path: Path, column: str) -> None:
    success = row(attempt_id="ch_2", outcome="succeeded", decline_code="", network_advice_code="")
    success[column] = "05"
    with pytest.raises(DataError) as exc:
        read_attempts(write_csv(tmp_path, [row(), success]))
    assert str(exc.value) == _detail(
        column, f"'05' given for a succeeded attempt; {column} must be empty on success"
    )


def test_duplicate_attempt_id_names_both_lines(tmp_path: Path) -> None:
    rows = [row(), row(attempt_id="ch_2"), row(attempt_id="ch_3"), row(attempt_id="ch_2")]
    with pytest.raises(DataError) as exc:
        read_attempts(write_csv(tmp_path, rows))
    assert (
        str(exc.value)
        == "attempts.csv line 5, column attempt_id: 'ch_2' is also on line 3 (attempt_id must be unique)"
    )


def test_first_bad_line_is_reported(tmp_path: Path) -> None:
    rows = [row(), row(attempt_id="ch_2", card_exp_month="13"), row(attempt_id="ch_3", amount="x")]
    with pytest.raises(DataError, match=r"^attempts\.csv line 3, column card_exp_month: '13'"):
        read_attempts(write_csv(tmp_path, rows))
    rows = [row(), row(attempt_id="ch_2", amount="x", card_exp_month="13")]
    with pytest.raises(DataError, match=r"^attempts\.csv line 3, column amount: 'x'"):  # column order
        read_attempts(write_csv(tmp_path, rows))


def test_line_numbers_count_blank_lines_and_multiline_values(tmp_path: Path) -> None:
    header = ",".join(ATTEMPT_COLUMNS)

    def line(**changes: str) -> str:
        r = row(**changes)
        return ",".join(f'"{r[c]}"' if "\n" in r[c] else r[c] for c in ATTEMPT_COLUMNS)

    body = [
        header,
        line(),
        "",
        line(attempt_id="ch_2", decline_code="two\nlines"),
        line(attempt_id="ch_3", amount="1.5"),
    ]
    file = tmp_path / "attempts.csv"
    file.write_text("\n".join(body) + "\n")
    with pytest.raises(DataError, match=r"^attempts\.csv line 6, column amount: '1\.5'"):
        read_attempts(file)


def test_missing_columns(tmp_path: Path) -> None:
    columns = [c for c in ATTEMPT_COLUMNS if c not in ("amount", "customer_timezone")]
    with pytest.raises(DataError) as exc:
        read_attempts(write_csv(tmp_path, [row()], columns=columns))
    assert str(exc.value) == "attempts.csv line 1: missing required column(s) amount, customer_timezone"


def test_no_header(tmp_path: Path) -> None:
    file = tmp_path / "attempts.csv"
    file.write_text(",".join(ROW[c] for c in ATTEMPT_COLUMNS) + "\n")
    with pytest.raises(
        DataError, match=r"^attempts\.csv line 1: no header; the first line must name the columns"
    ):
        read_attempts(file)


def test_repeated_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^attempts\.csv line 1: column\(s\) amount appear more than once"):
        read_attempts(write_csv(tmp_path, [row()], columns=[*ATTEMPT_COLUMNS, "amount"]))


def test_short_row_is_missing_values(tmp_path: Path) -> None:
    file = tmp_path / "attempts.csv"
    file.write_text(
        ",".join(ATTEMPT_COLUMNS) + "\n" + ",".join(ROW[c] for c in ATTEMPT_COLUMNS) + "\nch_2,in_2\n"
    )
    with pytest.raises(DataError, match=r"^attempts\.csv line 3, column customer_id: empty"):
        read_attempts(file)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_attempts(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------
# FAILURES.jsonl


def test_reads_failures(tmp_path: Path) -> None:
    second = {**FAILURE, "invoice_id": "in_10", "network_advice_code": "1", "card_exp_year": 29, "extra": [1]}
    df = read_failures(write_failures(tmp_path, [FAILURE, "", second]))
    check_dtypes(df, FAILURE_COLUMNS)
    assert df["invoice_id"].tolist() == ["in_9", "in_10"]  # file order
    r = df.iloc[0]
    assert r["failed_at"] == pd.Timestamp("2026-03-02T08:30:00Z")
    assert r["deadline"] == pd.Timestamp("2026-03-20T00:00:00Z")
    assert (r["currency"], r["card_brand"], r["card_country"]) == ("eur", "visa", "FR")
    assert r["network_advice_code"] == "" and pd.isna(r["customer_created_at"])
    assert df.iloc[1]["network_advice_code"] == "01" and df.iloc[1]["card_exp_year"] == 2029


def test_empty_failures_file(tmp_path: Path) -> None:
    df = read_failures(write_failures(tmp_path, []))
    assert len(df) == 0
    check_dtypes(df, FAILURE_COLUMNS)


FAILURE_ERRORS = [
    (["{not json"], f"failures.jsonl line 1: {JSON_HINT} (column 2)"),
    ([FAILURE, "", '{"invoice_id": "in_2",'], f"failures.jsonl line 3: {JSON_HINT} (column 23)"),
    (["[1, 2]"], "failures.jsonl line 1: not a JSON object"),
    (
        [FAILURE, {k: v for k, v in FAILURE.items() if k != "deadline"}],
        "failures.jsonl line 2: missing key(s) deadline",
    ),
    (
        [{**FAILURE, "deadline": "2026-03-02T08:00:00Z"}],
        "failures.jsonl line 1, column deadline: '2026-03-02T08:00:00Z' is not after failed_at "
        "'2026-03-02T08:30:00Z'",
    ),
    (
        [FAILURE, {**FAILURE, "invoice_id": "in_2", "failed_at": "2026-02-30T00:00:00Z"}],
        "failures.jsonl line 2, column failed_at: '2026-02-30T00:00:00Z'" + ISO_HINT,
    ),
    (
        [FAILURE, FAILURE],
        "failures.jsonl line 2, column invoice_id: 'in_9' is also on line 1 (invoice_id must be unique)",
    ),
    ([{**FAILURE, "amount": 12.5}], "failures.jsonl line 1, column amount: '12.5'" + AMOUNT_HINT),
    (
        [{**FAILURE, "amount": None}],
        "failures.jsonl line 1, column amount: empty; an integer amount in minor units is required",
    ),
    (
        [{**FAILURE, "customer_timezone": "Nowhere"}],
        "failures.jsonl line 1, column customer_timezone: 'Nowhere'" + TZ_HINT,
    ),
]


@pytest.mark.parametrize(("lines", "message"), FAILURE_ERRORS)
def test_failure_errors(tmp_path: Path, lines: list[Any], message: str) -> None:
    with pytest.raises(DataError) as exc:
        read_failures(write_failures(tmp_path, lines))
    assert str(exc.value) == message


# ---------------------------------------------------------------------------------------------
# writers


def test_write_attempts_round_trip(tmp_path: Path) -> None:
    rows = [
        row(attempted_at="2026-03-01T10:00:00.250+01:00"),
        row(
            attempt_id="ch_2",
            attempted_at="2026-03-02T00:00:00Z",
            outcome="succeeded",
            decline_code="",
            network_advice_code="",
            card_exp_month="",
            customer_created_at="",
        ),
    ]
    df = read_attempts(write_csv(tmp_path, rows))
    out = tmp_path / "out" / "ATTEMPTS.csv"
    assert write_attempts(out, df.assign(extra="left out")) == 2
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(ATTEMPT_COLUMNS)
    assert lines[1].startswith(
        "ch_1,in_1,cus_1,2026-03-01T09:00:00.250Z,1999,usd,failed,insufficient_funds,01,"
    )
    assert lines[2] == (
        "ch_2,in_1,cus_1,2026-03-02T00:00:00Z,1999,usd,succeeded,,,mastercard,credit,US,,2027,"
        "America/New_York,"
    )
    pd.testing.assert_frame_equal(read_attempts(out), df)
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_write_attempts_refuses_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="lacks column"):
        write_attempts(tmp_path / "a.csv", pd.DataFrame({"attempt_id": ["x"]}))


def test_failed_write_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    df = read_attempts(write_csv(tmp_path, [row()]))
    out = tmp_path / "ATTEMPTS.csv"
    out.write_text("old\n")

    def broken(*_a: Any, **_k: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(history_data.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_attempts(out, df)
    monkeypatch.undo()
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ATTEMPTS.csv", "attempts.csv"]

    plans = tmp_path / "PLANS.jsonl"
    plans.write_text('{"old": true}\n')

    def rows() -> Any:
        yield {"invoice_id": "in_1"}
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="model crashed"):
        write_jsonl(plans, rows())
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_jsonl(plans, [{"invoice_id": "in_1", "bad": object()}])
    assert plans.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ATTEMPTS.csv", "PLANS.jsonl", "attempts.csv"]


def test_write_jsonl_values(tmp_path: Path) -> None:
    path = tmp_path / "PLANS.jsonl"
    at = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    rows = [
        {
            "invoice_id": "in_1",
            "recovery_score": np.int64(87),
            "route": "auto_retry",
            "retries": [at, pd.Timestamp("2026-03-02T08:00:00.5Z"), datetime(2026, 3, 3, 9, 0)],
            "reasons": ("soft decline",),
            "p": np.float64(0.25),
            "missing": float("nan"),
            "nat": pd.NaT,
        },
        {"invoice_id": "in_2", "retries": [], "at": datetime(2026, 3, 1, tzinfo=UTC)},
    ]
    assert write_jsonl(path, rows) == 2
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {
        "invoice_id": "in_1",
        "recovery_score": 87,
        "route": "auto_retry",
        "retries": ["2026-03-01T10:00:00Z", "2026-03-02T08:00:00.500Z", "2026-03-03T09:00:00Z"],
        "reasons": ["soft decline"],
        "p": 0.25,
        "missing": None,
        "nat": None,
    }
    assert lines[1] == {"invoice_id": "in_2", "retries": [], "at": "2026-03-01T00:00:00Z"}
    assert write_jsonl(path, []) == 0 and path.read_text() == ""
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
