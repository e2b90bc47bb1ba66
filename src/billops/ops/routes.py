"""/api/workflows: the durable workflows for an operator — list (failed, stuck, …), one in full, and
resume. Reading needs viewer; resuming needs operator (governance/access.py)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from billops.errors import error_responses
from billops.governance.access import ApiRoute, require_role
from billops.governance.users import Principal
from billops.ops.workflows import list_workflows, resume_workflow, show_workflow
from billops.runtime import get_runtime

router = APIRouter(prefix="/api", tags=["workflows"], route_class=ApiRoute)  # auth first, one error shape
viewer, operator = require_role("viewer"), require_role("operator")
StatusFilter = Literal["error", "stuck", "pending", "enqueued", "delayed", "cancelled", "success"]


@router.get("/workflows", summary="Durable workflows, newest first", dependencies=[Depends(viewer)])
def workflows(
    status: StatusFilter | None = Query(
        None, description="error also covers MAX_RECOVERY_ATTEMPTS_EXCEEDED."
    ),
    name: str | None = Query(None, max_length=200, description="Only this workflow function."),
    limit: int = Query(50, ge=1, le=1000),
) -> list[dict[str, Any]]:
    return list_workflows(get_runtime(), status=status, name=name, limit=limit)


@router.get(
    "/workflows/{workflow_id:path}",
    summary="One workflow: steps, the error in full, the related decision",
    dependencies=[Depends(viewer)],
)
def workflow(workflow_id: str) -> dict[str, Any]:
    return show_workflow(get_runtime(), workflow_id)


class ResumeBody(BaseModel):
    from_step: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="ERROR only: re-run from this step (default: the failed one).",
    )


@router.post(
    "/workflows/{workflow_id:path}/resume",
    summary="Resume a failed, cancelled or stuck workflow",
    responses=error_responses(409),
)
def resume(
    workflow_id: str, body: ResumeBody | None = None, who: Principal = Depends(operator)
) -> dict[str, Any]:
    return resume_workflow(
        get_runtime(), workflow_id, actor=who.username, from_step=body.from_step if body else None
    )
