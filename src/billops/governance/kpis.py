"""KPIs for a date range: what failed, what was recovered, how decisions were routed and governed, and
what waits for a human, how messages fared per channel (sent, skipped, failed: permanent failures
listed), and LLM tokens spent. Used by GET /api/kpis and the console's overview page.

Every invoice counts once (its latest decision in the range: one decision per invoice episode, and
databases from before migration 0008 may hold several): its amount and currency; it counts as
recovered when that decision's status is `recovered`. Amounts stay in integer minor units per
currency (never summed across currencies).
Approvals waiting are the pending ones right now (not limited to the range), with their age.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from statistics import median
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from billops.errors import BillopsError
from billops.governance.access import ApiRoute, require_role
from billops.runtime import get_runtime
from billops.store.models import Approval, Decision, Delivery, LlmUsage

MAX_DAYS = 366
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
DEFAULT_DAYS = 30

router = APIRouter(prefix="/api", tags=["governance"], route_class=ApiRoute)


def _day_expr(s: Session) -> Any:
    """The UTC calendar day of Decision.created_at as 'YYYY-MM-DD', in SQL."""
    if s.get_bind().dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", Decision.created_at), "YYYY-MM-DD")
    return sa.func.substr(Decision.created_at, 1, 10)  # SQLite stores UTC as 'YYYY-MM-DD HH:MM:SS…'


def _latest_per_invoice(since: datetime, until: datetime) -> Any:
    """Count each invoice once: of its decisions in the range, only the latest (the one whose status
    says how the invoice ended). Since migration 0008 an invoice episode has one decision anyway; this
    keeps databases from before it (several decisions per invoice) from counting an invoice twice."""
    later = sa.orm.aliased(Decision)
    return ~sa.exists().where(
        later.platform == Decision.platform,
        later.invoice_id == Decision.invoice_id,
        later.created_at >= since,
        later.created_at < until,
        sa.or_(
            later.created_at > Decision.created_at,
            sa.and_(later.created_at == Decision.created_at, later.workflow_id > Decision.workflow_id),
        ),
    )


def compute_kpis(
    s: Session, since: datetime, until: datetime, *, now: datetime | None = None
) -> dict[str, Any]:
    """KPIs for decisions created in [since, until) (timezone-aware), JSON-able."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    now = now or datetime.now(UTC)
    in_range = (Decision.created_at >= since, Decision.created_at < until, _latest_per_invoice(since, until))
    recovered = sa.case((Decision.status == "recovered", Decision.amount), else_=0)
    recovered_n = sa.case((Decision.status == "recovered", 1), else_=0)

    currencies: dict[str, dict[str, Any]] = {}
    q = (
        sa.select(
            Decision.currency,
            sa.func.count(),
            sa.func.sum(Decision.amount),
            sa.func.sum(recovered),
            sa.func.sum(recovered_n),
        )
        .where(*in_range)
        .group_by(Decision.currency)
        .order_by(Decision.currency)
    )
    for cur, n, failed, rec, rec_n in s.execute(q):
        failed, rec = int(failed or 0), int(rec or 0)
        currencies[cur.lower()] = {
            "decisions": int(n),
            "failed_amount": failed,
            "recovered_amount": rec,
            "recovered_count": int(rec_n or 0),
            "recovery_rate": round(rec / failed, 4) if failed else None,
        }

    by_route_mode: dict[str, dict[str, int]] = {}
    by_route: dict[str, int] = {}
    by_mode: dict[str, int] = {}
    q2 = sa.select(Decision.route, Decision.mode, sa.func.count()).where(*in_range)
    for route, mode, n in s.execute(q2.group_by(Decision.route, Decision.mode)):
        by_route_mode.setdefault(route, {})[mode] = int(n)
        by_route[route] = by_route.get(route, 0) + int(n)
        by_mode[mode] = by_mode.get(mode, 0) + int(n)
    by_status = {
        st: int(n)
        for st, n in s.execute(
            sa.select(Decision.status, sa.func.count()).where(*in_range).group_by(Decision.status)
        )
    }

    day = _day_expr(s)
    days: dict[str, dict[str, Any]] = {}
    d = since.astimezone(UTC).date()
    last = (until - timedelta(microseconds=1)).astimezone(UTC).date()
    while d <= last:
        days[d.isoformat()] = {"day": d.isoformat(), "decisions": 0, "failed": {}, "recovered": {}}
        d += timedelta(days=1)
    q3 = (
        sa.select(
            day, Decision.currency, sa.func.count(), sa.func.sum(Decision.amount), sa.func.sum(recovered)
        )
        .where(*in_range)
        .group_by(day, Decision.currency)
    )
    for dy, cur, n, failed, rec in s.execute(q3):
        row = days.setdefault(str(dy), {"day": str(dy), "decisions": 0, "failed": {}, "recovered": {}})
        row["decisions"] += int(n)
        row["failed"][cur.lower()] = int(failed or 0)
        row["recovered"][cur.lower()] = int(rec or 0)

    messages: dict[str, dict[str, int]] = {}
    d_range = (Delivery.created_at >= since, Delivery.created_at < until)
    q4 = sa.select(Delivery.channel, Delivery.status, sa.func.count()).where(*d_range)
    for channel, status, n in s.execute(q4.group_by(Delivery.channel, Delivery.status)):
        messages.setdefault(channel, {})[status] = int(n)
    failures = [
        {"workflow_id": r.workflow_id, "step": r.step, "channel": r.channel, "error": r.error,
         "at": r.updated_at.isoformat()}
        for r in s.scalars(
            sa.select(Delivery).where(*d_range, Delivery.status == "failed")
            .order_by(Delivery.updated_at.desc()).limit(20)
        )
    ]  # fmt: skip
    u_range = (LlmUsage.at >= since, LlmUsage.at < until)
    tokens = s.execute(
        sa.select(
            sa.func.count(), sa.func.sum(LlmUsage.input_tokens), sa.func.sum(LlmUsage.output_tokens)
        ).where(*u_range)
    ).one()

    pending = list(s.scalars(sa.select(Approval.requested_at).where(Approval.status == "pending")))
    ages = sorted((now - t).total_seconds() for t in pending)
    return {
        "since": since.astimezone(UTC).isoformat(),
        "until": until.astimezone(UTC).isoformat(),
        "decisions": sum(by_route.values()),
        "currencies": currencies,
        "by_route": dict(sorted(by_route.items())),
        "by_mode": dict(sorted(by_mode.items())),
        "by_route_mode": {k: dict(sorted(v.items())) for k, v in sorted(by_route_mode.items())},
        "by_status": dict(sorted(by_status.items())),
        "approvals": {
            "waiting": len(ages),
            "oldest_age_seconds": round(ages[-1]) if ages else None,
            "median_age_seconds": round(median(ages)) if ages else None,
        },
        "daily": [days[k] for k in sorted(days)],
        "messages": {
            "by_channel": {k: dict(sorted(v.items())) for k, v in sorted(messages.items())},
            "failed": sum(v.get("failed", 0) for v in messages.values()),
            "recent_failures": failures,
        },
        "llm": {
            "drafts": int(tokens[0] or 0),
            "input_tokens": int(tokens[1] or 0),
            "output_tokens": int(tokens[2] or 0),
        },
    }


def parse_range(since: str | None, until: str | None, *, today: date | None = None) -> tuple[date, date]:
    """Inclusive UTC dates from 'YYYY-MM-DD' strings; default the last 30 days. ValueError says what is
    wrong."""
    today = today or datetime.now(UTC).date()
    try:
        end = _day(until) if until is not None else today
    except ValueError:
        raise ValueError(f"until={until!r} is not a date (use YYYY-MM-DD)") from None
    try:
        start = _day(since) if since is not None else end - timedelta(days=DEFAULT_DAYS - 1)
    except ValueError:
        raise ValueError(f"since={since!r} is not a date (use YYYY-MM-DD)") from None
    if start > end:
        raise ValueError(f"since ({start}) is after until ({end})")
    if start < date(1970, 1, 1) or end > date(9998, 12, 31):
        raise ValueError("dates go from 1970-01-01 to 9998-12-31")
    if (end - start).days + 1 > MAX_DAYS:
        raise ValueError(f"a range covers at most {MAX_DAYS} days, not {(end - start).days + 1}")
    return start, end


def _day(text: str) -> date:
    """A date written exactly YYYY-MM-DD (not the other ISO 8601 forms `date.fromisoformat` accepts)."""
    if not DAY.fullmatch(text):
        raise ValueError(text)
    return date.fromisoformat(text)


def range_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00 UTC, the day after end 00:00 UTC)."""
    return datetime.combine(start, time(), UTC), datetime.combine(end + timedelta(days=1), time(), UTC)


@router.get(
    "/kpis",
    summary="KPIs for a date range (UTC days, both included; default the last 30 days)",
    dependencies=[Depends(require_role("viewer"))],
)
def kpis(
    since: str | None = Query(
        None, max_length=10, description="First day, YYYY-MM-DD (UTC).", json_schema_extra={"format": "date"}
    ),
    until: str | None = Query(
        None,
        max_length=10,
        description="Last day, YYYY-MM-DD (UTC); default today.",
        json_schema_extra={"format": "date"},
    ),
) -> dict[str, Any]:
    try:
        start, end = parse_range(since, until)
    except ValueError as exc:
        raise BillopsError(str(exc), 422) from None
    except OverflowError:
        raise BillopsError("dates go from 1970-01-01 to 9998-12-31", 422) from None
    with get_runtime().db.reader() as s:
        return compute_kpis(s, *range_bounds(start, end))
