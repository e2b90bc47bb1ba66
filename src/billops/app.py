"""The FastAPI application: webhooks, API, health and metrics, with DBOS launched on start-up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from billops import __version__
from billops.config import Settings, load_settings
from billops.errors import BillopsError
from billops.runtime import get_runtime, start_runtime, stop_runtime


def create_app(settings: Settings | None = None, *, manage_runtime: bool = True) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            start_runtime(settings)
        try:
            yield
        finally:
            if manage_runtime:
                stop_runtime()

    app = FastAPI(
        title="BillOps",
        version=__version__,
        lifespan=lifespan,
        description="Webhooks in; governed, audited billing-operations decisions out.",
    )

    @app.exception_handler(BillopsError)
    async def _billops_error(_: Request, exc: BillopsError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/healthz", tags=["ops"], summary="Liveness and database check")
    def healthz() -> JSONResponse:
        try:
            rt = get_runtime()
            with rt.db.engine.connect() as c:
                c.execute(sa.text("SELECT 1"))
        except Exception as exc:
            return JSONResponse({"status": "error", "error": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__, "workflows": rt.dbos_launched})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    from billops.api import router as api_router
    from billops.governance.contacts_routes import router as contacts_router
    from billops.governance.kpis import router as kpis_router
    from billops.governance.routes import router as governance_router
    from billops.governance.users_api import router as users_router
    from billops.ingest.routes import router as webhook_router
    from billops.web import mount_console

    app.include_router(webhook_router)
    app.include_router(api_router)
    app.include_router(governance_router)
    app.include_router(kpis_router)
    app.include_router(users_router)
    app.include_router(contacts_router)
    mount_console(app)
    return app
