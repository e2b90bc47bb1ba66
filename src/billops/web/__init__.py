"""The web console (Jinja2 + htmx), served by the same FastAPI app under /console.

Server-rendered pages; htmx (static/htmx.min.js, vendored from the npm package `htmx.org`, BSD-0) only
swaps parts of pages. Charts are SVG drawn by the templates. Sessions and CSRF: web/security.py.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from billops.web.render import render
from billops.web.security import ConsoleDenied, NeedLogin

STATIC = Path(__file__).parent / "static"


def mount_console(app: FastAPI) -> None:
    """Add the console's routes, static files and error pages to the app."""
    from billops.web import views_admin, views_auth, views_ops, views_workflows

    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.include_router(views_auth.router)
    app.include_router(views_ops.router)
    app.include_router(views_admin.router)
    app.include_router(views_workflows.router)
    from billops.web import views_backtest

    app.include_router(views_backtest.router)

    @app.exception_handler(NeedLogin)
    async def _need_login(_: Request, exc: NeedLogin) -> Response:
        return RedirectResponse(exc.next_url, status_code=303)

    @app.exception_handler(ConsoleDenied)
    async def _denied(request: Request, exc: ConsoleDenied) -> HTMLResponse:
        return render(request, "error.html", status=exc.status, message=exc.message)
