"""The FastAPI application: webhooks, API, health and metrics, with DBOS launched on start-up."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import iter_route_contexts
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from billops import __version__
from billops.config import Settings, load_settings
from billops.errors import BillopsError, Problem, error_body
from billops.runtime import current_runtime, get_runtime, start_runtime, stop_runtime


def install_error_handlers(app: FastAPI) -> None:
    """Every error answer in one shape, `ErrorBody` (docs/access.md, "Errors"): BillopsError, HTTP errors
    (401, 403, 404, 405, 413, …), invalid parameters or bodies (422) and bodies that are not JSON (400)."""

    def answer(status: int, message: str, problems: list[Problem] | None = None, **kw: Any) -> JSONResponse:
        return JSONResponse(error_body(status, printable(message), problems), status_code=status, **kw)

    @app.exception_handler(BillopsError)
    async def _billops_error(_: Request, exc: BillopsError) -> JSONResponse:
        return answer(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code < 400:  # a redirect or an empty answer: no error body
            return Response(status_code=exc.status_code, headers=exc.headers)
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            headers["Allow"] = ", ".join(sorted(allowed_methods(app, request.url.path)))
        return answer(exc.status_code, detail, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            why = (bad_json.get("ctx") or {}).get("error") or "JSON decode error"
            return answer(400, f"the request body is not valid JSON: {why}")
        problems = [
            Problem(loc=[x if isinstance(x, int) else printable(str(x)) for x in e.get("loc", ())],
                    msg=printable(str(e.get("msg", ""))), type=str(e.get("type", "invalid")))
            for e in errors
        ]  # fmt: skip
        said = "; ".join(f"{'.'.join(str(x) for x in p.loc[1:]) or p.loc[0]}: {p.msg}" for p in problems)
        return answer(422, f"invalid input: {said}" if said else "invalid input", problems)


def allowed_methods(app: FastAPI, path: str) -> set[str]:
    """Every method some route of the app serves at `path`."""
    found: dict[int, set[str]] = {}
    for rc in iter_route_contexts(app.routes):
        regex, served = getattr(rc, "path_regex", None), getattr(rc, "methods", None)
        if regex is not None and served and regex.match(path):
            # The most specific template wins: /a/{id}/resume over /a/{id:path}, as in the OpenAPI.
            literal = len(re.sub(r"{[^}]*}", "", str(rc.path_format)))
            found.setdefault(literal, set()).update(served)
    return found[max(found)] if found else set()


def printable(text: str) -> str:
    """`text` safe to send as UTF-8 JSON: lone surrogates become backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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

    install_error_handlers(app)

    @app.get("/healthz", tags=["ops"], summary="Liveness and database check")
    def healthz() -> JSONResponse:
        try:
            rt = get_runtime()
            with rt.db.engine.connect() as c:
                c.execute(sa.text("SELECT 1"))
        except Exception as exc:
            return JSONResponse({"status": "error", "ready": False, "error": str(exc)}, status_code=503)
        return JSONResponse(
            {"status": "ok", "version": __version__, "workflows": rt.dbos_launched, "ready": rt.ready}
        )

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Readiness: 200 only once the runtime is set up, DBOS launched and the database answers",
        responses={503: {"description": "Not ready yet (starting, stopping, or the database is down)"}},
    )
    def readyz() -> JSONResponse:
        rt = current_runtime()
        if rt is None or not rt.ready:
            why = "runtime not started" if rt is None else "starting: durable workflows not launched yet"
            return JSONResponse({"ready": False, "why": why}, status_code=503)
        try:
            with rt.db.engine.connect() as c:
                c.execute(sa.text("SELECT 1"))
        except Exception as exc:
            return JSONResponse({"ready": False, "why": f"database: {exc}"}, status_code=503)
        return JSONResponse({"ready": True, "version": __version__, "executor_id": rt.settings.executor_id})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    from billops.api import router as api_router
    from billops.governance.contacts_routes import router as contacts_router
    from billops.governance.kpis import router as kpis_router
    from billops.governance.routes import router as governance_router
    from billops.governance.users_api import router as users_router
    from billops.ingest.routes import router as webhook_router
    from billops.ops.routes import router as workflows_router
    from billops.web import mount_console

    app.include_router(webhook_router)
    app.include_router(api_router)
    app.include_router(governance_router)
    app.include_router(kpis_router)
    app.include_router(users_router)
    app.include_router(contacts_router)
    app.include_router(workflows_router)  # /api/workflows (billops/ops/)
    from billops.recovery.backtest_routes import router as backtest_router

    app.include_router(backtest_router)  # /api/recovery/backtest
    mount_console(app)
    return app
