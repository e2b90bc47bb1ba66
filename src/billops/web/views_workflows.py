"""Console: the durable workflows that need a human — failed (ERROR) and stuck — with a resume button
(operator or admin, CSRF like every console form), and one workflow's steps. Same functions as
`billops workflows …` and /api/workflows (billops/ops/workflows.py)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from billops.errors import BillopsError, NotFound
from billops.ops.workflows import list_workflows, resume_workflow, show_workflow
from billops.runtime import get_runtime
from billops.web.render import render
from billops.web.security import ConsoleDenied, Viewer, page_viewer, post_viewer, require

router = APIRouter(prefix="/console", include_in_schema=False)


def _page(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    rt = get_runtime()
    failed = list_workflows(rt, status="error", limit=200)
    stuck = list_workflows(rt, status="stuck", limit=200)
    return render(
        request,
        "workflows.html",
        status=status,
        failed=failed,
        stuck=stuck,
        threshold=rt.settings.workflow_stuck_seconds,
        error=error,
        done=request.query_params.get("done"),
    )


@router.get("/workflows", response_class=HTMLResponse)
def workflows(request: Request, v: Viewer = Depends(page_viewer)) -> Response:
    return _page(request)


@router.get("/workflows/{workflow_id:path}", response_class=HTMLResponse)
def workflow(request: Request, workflow_id: str, v: Viewer = Depends(page_viewer)) -> Response:
    try:
        w = show_workflow(get_runtime(), workflow_id)
    except NotFound as exc:
        raise ConsoleDenied(exc.message, 404) from None
    return render(request, "workflow.html", w=w)


@router.post("/workflows/{workflow_id:path}/resume")
def resume(request: Request, workflow_id: str, v: Viewer = Depends(post_viewer)) -> Response:
    require(v, "operator")
    try:
        resume_workflow(get_runtime(), workflow_id, actor=v.username)
    except NotFound as exc:
        raise ConsoleDenied(exc.message, 404) from None
    except BillopsError as exc:
        return _page(request, error=exc.message, status=exc.status)
    return RedirectResponse(f"/console/workflows?done={quote(workflow_id, safe='')}", status_code=303)
