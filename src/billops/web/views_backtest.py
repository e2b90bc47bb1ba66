"""Console: the shadow backtest page (recovery/backtest.py), same computation as the API and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from billops.errors import BillopsError
from billops.recovery.backtest_routes import run_range
from billops.web.render import render
from billops.web.security import Viewer, page_viewer

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/backtest", response_class=HTMLResponse)
def backtest_page(
    request: Request, since: str | None = None, until: str | None = None, v: Viewer = Depends(page_viewer)
) -> Response:
    since = since or (datetime.now(UTC) - timedelta(days=90)).date().isoformat()
    try:
        r, error, status = run_range(since, until or None), None, 200
    except BillopsError as exc:
        r, error, status = None, exc.message, exc.status
    return render(request, "backtest.html", status=status, r=r, since=since, until=until or "", error=error)
