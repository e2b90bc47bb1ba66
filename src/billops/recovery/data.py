"""The payment-history file formats: read and validate ATTEMPTS.csv and FAILURES.jsonl, write
ATTEMPTS.csv and JSONL (PLANS.jsonl), atomically. The formats are a contract users script against;
docs/history.md describes them.

Reading is vectorized (pandas reads every column as text, then each column is checked at once, most
of them through their distinct values), so a million attempts take a few seconds. When a value is
wrong, the error names the file, the line and the column of the first bad row; the line is the
physical line in the file (blank lines and quoted values spanning several lines are counted).

Returned frames (both readers): the contract's columns in the contract's order; timestamps are
`datetime64[ns, UTC]` (offsets converted to UTC, naive times taken as UTC, empty optional times NaT);
`amount` is int64; `card_exp_month`/`card_exp_year` are nullable Int64; every other column is text
(pandas' default string dtype), "" when empty.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import tempfile
import zoneinfo
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from billops.errors import InputError

ATTEMPT_COLUMNS: list[str] = [
    "attempt_id",
    "invoice_id",
    "customer_id",
    "attempted_at",
    "amount",
    "currency",
    "outcome",
    "decline_code",
    "network_advice_code",
    "card_brand",
    "card_funding",
    "card_country",
    "card_exp_month",
    "card_exp_year",
    "customer_timezone",
    "customer_created_at",
]

# Optional label columns (docs/history.md "Retry labels"): who chose a retry's time, and the probability
# that BillOps's planner chose it (recovery/explore.py). Read and written when present; readers that do
# not know them ignore them, so the contract above stays.
LABEL_COLUMNS: list[str] = ["retry_source", "propensity"]
RETRY_SOURCES = ("billops", "billops_explore", "human", "platform")
# Every optional column: the labels, and the card's fingerprint (Stripe's `card.fingerprint`, or any
# stable id of the physical card): a payment with another fingerprint is new card data, not a retry;
# the same fingerprint with a new expiry is an account updater's in-place refresh.
OPTIONAL_COLUMNS: list[str] = [*LABEL_COLUMNS, "card_fingerprint"]

FAILURE_COLUMNS: list[str] = [
    "invoice_id",
    "customer_id",
    "amount",
    "currency",
    "failed_at",
    "decline_code",
    "network_advice_code",
    "card_brand",
    "card_funding",
    "card_country",
    "card_exp_month",
    "card_exp_year",
    "customer_timezone",
    "customer_created_at",
    "deadline",
]

OUTCOMES = ("succeeded", "failed")
FUNDINGS = ("credit", "debit", "prepaid", "unknown")

# What each column holds; see _KINDS for the checks.
_COLUMN_KIND: dict[str, str] = {
    "attempt_id": "id",
    "invoice_id": "id",
    "customer_id": "id",
    "attempted_at": "time",
    "failed_at": "time",
    "deadline": "time",
    "customer_created_at": "optional_time",
    "amount": "amount",
    "currency": "currency",
    "outcome": "outcome",
    "decline_code": "decline_code",
    "network_advice_code": "network_advice_code",
    "card_brand": "brand",
    "card_funding": "funding",
    "card_country": "country",
    "card_exp_month": "exp_month",
    "card_exp_year": "exp_year",
    "customer_timezone": "timezone",
    "retry_source": "retry_source",
    "propensity": "propensity",
    "card_fingerprint": "fingerprint",
}
TIME_COLUMNS = frozenset(c for c, k in _COLUMN_KIND.items() if k in ("time", "optional_time"))
INT_COLUMNS = frozenset({"card_exp_month", "card_exp_year"})
FLOAT_COLUMNS = frozenset({"propensity"})


class DataError(InputError):
    """A history file that breaks the contract. The message names the file, the line and the column."""


# ---------------------------------------------------------------------------------------------
# checks of single values (applied to each distinct value of a column)


class _Bad(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_DIGITS = re.compile(r"[0-9]+")
_CURRENCY = re.compile(r"[a-z]{3}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_BRANDS = {
    "american express": "amex",
    "american_express": "amex",
    "americanexpress": "amex",
    "diners club": "diners",
    "diners_club": "diners",
    "master card": "mastercard",
    "master_card": "mastercard",
    "union pay": "unionpay",
    "eftpos australia": "eftpos_au",
    "cartes bancaires": "cartes_bancaires",
}


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _amount(v: str) -> int:
    v = v.strip()
    if not v:
        raise _Bad("empty; an integer amount in minor units is required")
    if not _DIGITS.fullmatch(v) or len(v) > 18:
        raise _Bad(f"{v!r} is not an amount: an integer ≥ 0 in minor units (e.g. 1999 for 19.99)")
    return int(v)


def _currency(v: str) -> str:
    c = v.strip().lower()
    if not _CURRENCY.fullmatch(c):
        raise _Bad(f"{v!r} is not a 3-letter ISO 4217 currency code" if v.strip() else "empty; required")
    return c


def _outcome(v: str) -> str:
    o = v.strip().lower()
    if o in OUTCOMES:
        return o
    if o == "pending":
        raise _Bad("'pending' attempts are not allowed: only settled attempts (succeeded|failed) belong here")
    raise _Bad(f"{v!r} is not an outcome (succeeded|failed)" if o else "empty; succeeded or failed required")


def _decline_code(v: str) -> str:
    return v.strip().lower()


def _network_advice_code(v: str) -> str:
    c = v.strip()
    if not c:
        return ""
    if _DIGITS.fullmatch(c) and len(c) <= 2:
        return c.zfill(2)
    raise _Bad(f"{v!r} is not a network advice code: two digits (e.g. 01), or empty")


def _brand(v: str) -> str:
    b = v.strip().lower()
    return _BRANDS.get(b, b.replace(" ", "_"))


def _funding(v: str) -> str:
    f = v.strip().lower()
    if f and f not in FUNDINGS:
        raise _Bad(f"{v!r} is not a card funding ({'|'.join(FUNDINGS)}, or empty)")
    return f


def _country(v: str) -> str:
    c = v.strip().upper()
    if c and not _COUNTRY.fullmatch(c):
        raise _Bad(f"{v!r} is not a 2-letter ISO 3166 country code")
    return c


def _exp_month(v: str) -> float:
    m = v.strip()
    if not m:
        return math.nan
    if not _DIGITS.fullmatch(m) or not 1 <= int(m) <= 12:
        raise _Bad(f"{v!r} is not a month (1-12)")
    return float(int(m))


def _exp_year(v: str) -> float:
    y = v.strip()
    if not y:
        return math.nan
    if not _DIGITS.fullmatch(y) or len(y) not in (2, 4):
        raise _Bad(f"{v!r} is not an expiry year (4 digits, or 2 digits meaning 20YY)")
    return float(2000 + int(y) if len(y) == 2 else int(y))


def _timezone(v: str) -> str:
    z = v.strip()
    if z and z not in _zones():
        raise _Bad(f"{v!r} is not an IANA time zone (e.g. Europe/Paris, America/New_York)")
    return z


def _retry_source(v: str) -> str:
    r = v.strip().lower()
    if r and r not in RETRY_SOURCES:
        raise _Bad(f"{v!r} is not a retry source ({'|'.join(RETRY_SOURCES)}, or empty)")
    return r


def _fingerprint(v: str) -> str:
    f = v.strip()
    if len(f) > 255:
        raise _Bad("a card fingerprint of more than 255 characters")
    return f


def _propensity(v: str) -> float:
    p = v.strip()
    if not p:
        return math.nan
    try:
        x = float(p)
    except ValueError:
        x = math.nan
    if not 0.0 < x <= 1.0:  # NaN fails too
        raise _Bad(f"{v!r} is not a propensity: a probability 0 < p ≤ 1, or empty when unknown")
    return x


# kind -> (check, value for a bad or missing entry, numpy dtype of the checked values)
_KINDS: dict[str, tuple[Callable[[str], Any], Any, Any]] = {
    "amount": (_amount, 0, np.int64),
    "currency": (_currency, "", object),
    "outcome": (_outcome, "", object),
    "decline_code": (_decline_code, "", object),
    "network_advice_code": (_network_advice_code, "", object),
    "brand": (_brand, "", object),
    "funding": (_funding, "", object),
    "country": (_country, "", object),
    "exp_month": (_exp_month, math.nan, np.float64),
    "exp_year": (_exp_year, math.nan, np.float64),
    "timezone": (_timezone, "", object),
    "retry_source": (_retry_source, "", object),
    "propensity": (_propensity, math.nan, np.float64),
    "fingerprint": (_fingerprint, "", object),
}


# ---------------------------------------------------------------------------------------------
# checks of whole columns


@dataclass
class _Column:
    values: Any  # numpy array or pandas Series, one entry per row
    bad: np.ndarray | None  # rows whose value is wrong (None: none)
    message: Callable[[int], str]  # what is wrong with a bad row


def _no_message(_row: int) -> str:  # pragma: no cover - only called for bad rows
    return ""


def _by_distinct_value(text: np.ndarray, kind: str) -> _Column:
    check, fallback, dtype = _KINDS[kind]
    codes, uniques = _factorize(text)
    out: list[Any] = []
    problems: dict[int, str] = {}
    for i, u in enumerate(uniques):
        try:
            out.append(check(u))
        except _Bad as exc:
            out.append(fallback)
            problems[i] = exc.message
    values = np.asarray(out, dtype=dtype)[codes] if len(out) else np.asarray([], dtype=dtype)
    if not problems:
        return _Column(values, None, _no_message)
    bad = np.isin(codes, np.fromiter(problems, dtype=codes.dtype))
    return _Column(values, bad, lambda row: problems[int(codes[row])])


def _factorize(text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes and distinct values of a text column; a missing cell (a short CSV row) counts as ''."""
    codes, uniques = pd.factorize(text, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object)
    missing = codes < 0
    if missing.any():
        codes = np.where(missing, len(uniques), codes)
        uniques = np.append(uniques, "").astype(object)
    return codes, uniques


def _times(text: np.ndarray, *, required: bool) -> _Column:
    stripped = _stripped(text)
    parsed = pd.to_datetime(pd.Index(stripped, dtype=object), utc=True, format="ISO8601", errors="coerce")
    parsed = pd.DatetimeIndex(parsed).as_unit("ns")
    wrong = np.asarray(parsed.isna()) & (required | np.asarray(stripped != "", dtype=bool))
    wrong |= np.isin(stripped, ["now", "today"])  # pandas reads these words as the current time
    values = pd.Series(parsed, dtype="datetime64[ns, UTC]")
    if not wrong.any():
        return _Column(values, None, _no_message)

    def message(row: int) -> str:
        if not stripped[row]:
            return "empty; an ISO 8601 time is required (e.g. 2026-03-01T09:30:00Z)"
        return f"{text[row]!r} is not an ISO 8601 time (e.g. 2026-03-01T09:30:00Z)"

    return _Column(values, wrong, message)


_EDGE_SPACE = re.compile(r"(?:^|\x00)\s|\s(?:\x00|$)")


def _stripped(text: np.ndarray) -> np.ndarray:
    """Every cell without surrounding whitespace ('' for a missing cell). Fast when, as usual, no cell
    needs stripping: one join and one regex scan instead of a Python call per cell."""
    try:
        joined = "\x00".join(text)
    except TypeError:  # a missing cell (NaN) in a short row
        joined = None
    if joined is not None:
        if joined.isascii() and not any(c in joined for c in " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"):
            return text
        if not _EDGE_SPACE.search(joined):
            return text
    out = np.empty(len(text), dtype=object)
    out[:] = [v.strip() if isinstance(v, str) else "" for v in text]
    return out


def _ids(text: np.ndarray) -> _Column:
    stripped = _stripped(text)
    bad = stripped == ""
    return _Column(stripped, bad if bad.any() else None, lambda _row: "empty; an id is required")


def _check_column(name: str, text: np.ndarray) -> _Column:
    kind = _COLUMN_KIND[name]
    if kind == "id":
        return _ids(text)
    if kind in ("time", "optional_time"):
        return _times(text, required=kind == "time")
    return _by_distinct_value(text, kind)


def _first(mask: np.ndarray | None) -> int | None:
    if mask is None or not mask.any():
        return None
    return int(np.argmax(mask))


@dataclass(frozen=True)
class _Problem:
    row: int
    order: int
    column: str
    message: str  # "{other}" stands for the line of `other` (a duplicate's first occurrence)
    other: int | None = None


def _validate(
    raw: pd.DataFrame, columns: list[str], *, strict: bool
) -> tuple[pd.DataFrame, list[_Problem], np.ndarray]:
    """Check and normalize every column of an all-text frame.

    Returns the typed frame, the first problem of each column (and of each cross-column rule) and,
    for lenient callers, which rows to drop (a required value is wrong). In lenient mode (strict=False)
    a wrong optional value becomes empty instead of a problem."""
    n = len(raw)
    checked: dict[str, _Column] = {}
    problems: list[_Problem] = []
    drop = np.zeros(n, dtype=bool)
    for order, name in enumerate(columns):
        text = raw[name].to_numpy(dtype=object)
        col = _check_column(name, text)
        checked[name] = col
        row = _first(col.bad)
        if row is not None:
            problems.append(_Problem(row, order, name, col.message(row)))
            if _COLUMN_KIND[name] in ("id", "time", "amount", "currency", "outcome") and col.bad is not None:
                drop |= col.bad

    def add(
        name: str,
        mask: np.ndarray,
        message: Callable[[int], str],
        *,
        blank: Any = None,
        other: Callable[[int], int] | None = None,
    ) -> None:
        row = _first(mask)
        if row is None:
            return
        problems.append(_Problem(row, columns.index(name), name, message(row), other(row) if other else None))
        if blank is None:
            drop[mask] = True
        elif not strict:
            checked[name].values[mask] = blank

    if "outcome" in checked:
        succeeded = checked["outcome"].values == "succeeded"

        def on_success(name: str, given: np.ndarray) -> Callable[[int], str]:
            return lambda row: (
                f"{given[row]!r} given for a succeeded attempt; {name} must be empty on success"
            )

        for name in ("decline_code", "network_advice_code"):
            given = checked[name].values
            add(name, succeeded & (given != ""), on_success(name, given), blank="")
    if "attempt_id" in checked or "deadline" in checked:
        key = "attempt_id" if "attempt_id" in checked else "invoice_id"
        ids = pd.Series(checked[key].values, dtype=object)
        dup = ids.duplicated(keep="first").to_numpy(dtype=bool)
        bad_ids = checked[key].bad
        if bad_ids is not None:
            dup = dup & ~bad_ids
        first_of = _first_occurrence(ids)
        add(
            key,
            dup,
            lambda row: f"{ids[row]!r} is also on line {{other}} ({key} must be unique)",
            other=first_of,
        )
    if "deadline" in checked and "failed_at" in checked:
        failed_at, deadline = checked["failed_at"].values, checked["deadline"].values
        ok = (deadline > failed_at).to_numpy(dtype=bool) | deadline.isna().to_numpy(dtype=bool)
        ok |= failed_at.isna().to_numpy(dtype=bool)
        add(
            "deadline",
            ~ok,
            lambda row: f"{_iso(deadline[row])!r} is not after failed_at {_iso(failed_at[row])!r}",
        )

    frame = _typed_frame(checked, columns)
    return frame, sorted(problems, key=lambda p: (p.row, p.order)), drop


def _first_occurrence(ids: pd.Series) -> Callable[[int], int]:
    def first(row: int) -> int:
        return int(np.argmax((ids == ids[row]).to_numpy(dtype=bool)))

    return first


def _typed_frame(checked: dict[str, _Column], columns: list[str]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for name in columns:
        values = checked[name].values
        if name in TIME_COLUMNS:
            data[name] = pd.Series(values, dtype="datetime64[ns, UTC]").reset_index(drop=True)
        elif name == "amount":
            data[name] = pd.Series(values, dtype="int64")
        elif name in INT_COLUMNS:
            data[name] = pd.Series(values, dtype="float64").astype("Int64")
        elif name in FLOAT_COLUMNS:
            data[name] = pd.Series(values, dtype="float64")
        else:
            data[name] = pd.Series(values, dtype=object).astype(str)
    return pd.DataFrame(data, columns=columns, copy=False)


# ---------------------------------------------------------------------------------------------
# readers


def _fail(name: str, problem: _Problem, line_of: Callable[[int], int]) -> DataError:
    message = problem.message
    if problem.other is not None:
        message = message.replace("{other}", str(line_of(problem.other)))
    return DataError(f"{name} line {line_of(problem.row)}, column {problem.column}: {message}")


def _csv_lines(path: Path) -> Callable[[int], int]:
    """Map a data row (0-based, as pandas numbers them) to its physical line in the file. Only used
    to report an error, so it re-reads the file with the csv module, which counts lines inside quoted
    values and skips blank lines the way pandas does."""

    def line_of(row: int) -> int:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            seen_header = False
            start = 1
            index = -1
            for record in reader:
                record_start, start = start, reader.line_num + 1
                if not record:
                    continue
                if not seen_header:
                    seen_header = True
                    continue
                index += 1
                if index == row:
                    return record_start
        return row + 2  # pragma: no cover - the row exists, pandas just read it

    return line_of


def _header(path: Path) -> list[str] | None:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for record in csv.reader(fh):
            if record:
                return [c.strip() for c in record]
    return None


def read_attempts(path: Path) -> pd.DataFrame:
    """Read and validate ATTEMPTS.csv (see docs/history.md). Raises DataError at the first bad row.

    Extra columns are ignored and the columns may come in any order; an empty file or a header
    without rows gives a frame with no rows. The result is sorted by attempted_at (stable). The optional
    label columns (LABEL_COLUMNS) are checked and kept, after the contract's, when the file has them."""
    path = Path(path)
    name = path.name
    try:
        header = _header(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{name}: not a UTF-8 CSV file ({exc})") from exc
    if header is None:
        return empty_attempts()
    wanted = set(ATTEMPT_COLUMNS)
    if not wanted.intersection(header):
        raise DataError(
            f"{name} line 1: no header; the first line must name the columns ({', '.join(ATTEMPT_COLUMNS)})"
        )
    missing = [c for c in ATTEMPT_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{name} line 1: missing required column(s) {', '.join(missing)}")
    labels = [c for c in OPTIONAL_COLUMNS if c in header]
    wanted |= set(labels)
    twice = sorted({c for c in header if c in wanted and header.count(c) > 1})
    if twice:
        raise DataError(f"{name} line 1: column(s) {', '.join(twice)} appear more than once")

    try:
        raw = pd.read_csv(
            path,
            dtype=object,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",
            usecols=lambda c: str(c).strip() in wanted,
            skip_blank_lines=True,
            engine="c",
        )
    except pd.errors.ParserError as exc:
        raise DataError(f"{name}: not a valid CSV file: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not a UTF-8 CSV file ({exc})") from exc
    raw.columns = [str(c).strip() for c in raw.columns]

    frame, problems, _ = _validate(raw, [*ATTEMPT_COLUMNS, *labels], strict=True)
    if problems:
        raise _fail(name, problems[0], _csv_lines(path))
    return sort_attempts(frame)


def sort_attempts(frame: pd.DataFrame) -> pd.DataFrame:
    """Sorted by attempted_at; rows with the same time keep their order."""
    if frame["attempted_at"].is_monotonic_increasing:
        return frame
    return frame.sort_values("attempted_at", kind="stable").reset_index(drop=True)


def normalize_attempts(raw: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Lenient normalization of an all-text frame in the ATTEMPTS columns (data already stored, e.g. the
    mirror): wrong optional values become empty, rows with a wrong required value or a repeated
    attempt_id are dropped. Returns the typed frame (sorted by attempted_at) and how many rows were
    dropped."""
    columns = [*ATTEMPT_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in raw.columns)]
    frame, _problems, drop = _validate(raw.fillna(""), columns, strict=False)
    if drop.any():
        frame = frame.loc[~drop].reset_index(drop=True)
    return sort_attempts(frame), int(drop.sum())


def empty_attempts() -> pd.DataFrame:
    frame, _, _ = _validate(pd.DataFrame({c: [] for c in ATTEMPT_COLUMNS}), ATTEMPT_COLUMNS, strict=True)
    return frame


def empty_failures() -> pd.DataFrame:
    frame, _, _ = _validate(pd.DataFrame({c: [] for c in FAILURE_COLUMNS}), FAILURE_COLUMNS, strict=True)
    return frame


def _text(value: Any) -> str:
    """A JSON value as the text a CSV cell would hold (null: empty)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def read_failures(path: Path) -> pd.DataFrame:
    """Read and validate FAILURES.jsonl: one JSON object per line (blank lines skipped), every key of
    FAILURE_COLUMNS present (null for an empty optional value), extra keys ignored, at most one line
    per invoice, deadline after failed_at. Rows keep the file's order."""
    path = Path(path)
    name = path.name
    lines: list[int] = []
    cells: dict[str, list[str]] = {c: [] for c in FAILURE_COLUMNS}
    try:
        fh = path.open(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    with fh:
        try:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line.rstrip("\r\n"))
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{name} line {number}: invalid JSON: {exc.msg} (column {exc.colno})"
                    ) from exc
                if not isinstance(obj, dict):
                    raise DataError(f"{name} line {number}: not a JSON object")
                absent = [c for c in FAILURE_COLUMNS if c not in obj]
                if absent:
                    raise DataError(f"{name} line {number}: missing key(s) {', '.join(absent)}")
                for c in FAILURE_COLUMNS:
                    cells[c].append(_text(obj[c]))
                lines.append(number)
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: not a UTF-8 file ({exc})") from exc
    raw = pd.DataFrame(cells, columns=FAILURE_COLUMNS, dtype=object)
    frame, problems, _ = _validate(raw, FAILURE_COLUMNS, strict=True)
    if problems:
        raise _fail(name, problems[0], lambda row: lines[row])
    return frame


# ---------------------------------------------------------------------------------------------
# writers


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[IO[str]]:
    """Write to a temporary file beside `path`, then replace `path` with it: readers see the old file
    or the new one, never half of one; on any error the old file is untouched and the temp removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file 0600: give it ordinary permissions
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _iso_array(values: pd.Series) -> np.ndarray:
    """ISO 8601 UTC with 'Z' ('2026-03-01T09:30:00Z'; fractions only where a time has one); NaT: ''."""
    s = pd.Series(values)
    if s.dt.tz is None:
        s = s.dt.tz_localize("UTC")
    naive = s.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    out = np.datetime_as_string(naive, unit="s", timezone="UTC").astype(object)
    nat = np.isnat(naive)
    ns = naive.view("int64") % 1_000_000_000
    units: list[tuple[Any, np.ndarray]] = [
        ("ms", (ns % 1_000_000 == 0) & (ns != 0)),
        ("us", (ns % 1_000 == 0) & (ns % 1_000_000 != 0)),
        ("ns", ns % 1_000 != 0),
    ]
    for unit, mask in units:
        mask = mask & ~nat
        if mask.any():
            out[mask] = np.datetime_as_string(naive[mask], unit=unit, timezone="UTC")
    out[nat] = ""
    return out


def _iso(value: Any) -> str:
    """One datetime (or pandas Timestamp) as ISO 8601 UTC with 'Z'; naive values are taken as UTC."""
    if value is None or value is pd.NaT:
        return ""
    if isinstance(value, pd.Timestamp):
        return str(_iso_array(pd.Series([value]))[0])
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _cell_text(frame: pd.DataFrame, name: str) -> np.ndarray:
    col = frame[name]
    if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(col.dtype):
        return _iso_array(col)
    if name in INT_COLUMNS or name == "amount":
        num = pd.Series(col).astype("Int64")
        return np.asarray(num.astype(str).where(num.notna(), ""), dtype=object)
    return np.asarray(pd.Series(col, dtype=object).fillna("").astype(str), dtype=object)


def write_attempts(path: Path, df: pd.DataFrame) -> int:
    """Write ATTEMPTS.csv (the contract's columns in order, then the label columns the frame has, other
    columns left out; times ISO 8601 UTC with 'Z'; empty values empty) atomically. Returns the number of
    rows written."""
    path = Path(path)
    missing = [c for c in ATTEMPT_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path.name}: cannot write, the frame lacks column(s) {', '.join(missing)}")
    columns = [*ATTEMPT_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in df.columns)]
    text = pd.DataFrame({c: _cell_text(df, c) for c in columns}, columns=columns)
    with _atomic(path) as fh:
        text.to_csv(fh, index=False, lineterminator="\n")
    return len(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.datetime64):
        return _iso(pd.Timestamp(value))
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(row: dict[str, Any]) -> str:
    return json.dumps(row, default=_json_default, ensure_ascii=False, allow_nan=False)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line (datetimes ISO 8601 UTC with 'Z'), atomically: on any error the
    previous file is left as it was. Returns the number of lines written."""
    n = 0
    with _atomic(Path(path)) as fh:
        buf = io.StringIO()
        for row in rows:
            buf.write(_dumps(_plain(row)))
            buf.write("\n")
            n += 1
            if n % 10_000 == 0:
                fh.write(buf.getvalue())
                buf = io.StringIO()
        fh.write(buf.getvalue())
    return n


def _plain(value: Any) -> Any:
    """NaT/NaN/NA nested anywhere become null (json's default hook never sees floats or NaT)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
