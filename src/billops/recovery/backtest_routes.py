"""GET /api/recovery/backtest: the shadow backtest (recovery/backtest.py) over the mirror, for the API and
the console. The range is capped at MAX_DAYS and the invoices at backtest.MAX_INVOICES, so a request
stays bounded; the route is a plain `def`, run in FastAPI's worker threads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query

from billops.errors import BillopsError, InputError
from billops.governance.access import ApiRoute, require_role
from billops.runtime import get_runtime

MAX_DAYS = 366
router = APIRouter(prefix="/api", tags=["recovery"], route_class=ApiRoute)


def run_range(since: str, until: str | None) -> dict[str, Any]:
    """The backtest for 'YYYY-MM-DD' bounds; BillopsError 422 on bad input."""
    from billops.policy import load_policy
    from billops.recovery.backtest_cli import parse_day, run

    try:
        start = parse_day(since, "since")
        end = parse_day(until, "until") if until else datetime.now(UTC)
    except InputError as exc:
        raise BillopsError(exc.message, 422) from None
    if start >= end:
        raise BillopsError(f"since {since} is not before until {until or 'now'}", 422)
    if end - start > timedelta(days=MAX_DAYS):
        raise BillopsError(f"a backtest covers at most {MAX_DAYS} days", 422)
    rt = get_runtime()
    s = rt.settings
    return run(Path(s.data_dir), s.db_url, load_policy(s.policy_file), start, end, None)


@router.get(
    "/recovery/backtest",
    summary="Shadow backtest: BillOps's expected recoveries against what happened, with a 95% CI",
    dependencies=[Depends(require_role("viewer"))],
)
def backtest_route(
    since: str = Query(
        max_length=10, description="First day, YYYY-MM-DD (UTC).", json_schema_extra={"format": "date"}
    ),
    until: str | None = Query(
        None,
        max_length=10,
        description="Day after the last (exclusive); default now.",
        json_schema_extra={"format": "date"},
    ),
) -> dict[str, Any]:
    return run_range(since, until)
