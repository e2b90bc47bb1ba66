"""/api routes for governance: the approval queue, the policy, the kill switch and circuit breaker,
feedback labels. Every route states its least role (governance/access.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from billops.governance.access import require_role
from billops.governance.approvals import ApprovalEdits, decide_approval, get_approval, list_approvals
from billops.governance.users import Principal
from billops.runtime import get_runtime

router = APIRouter(prefix="/api", tags=["governance"])
viewer, operator, admin = require_role("viewer"), require_role("operator"), require_role("admin")


@router.get("/approvals", summary="The approval queue", dependencies=[Depends(viewer)])
def approvals(status: str | None = "pending", limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
    return list_approvals(get_runtime(), status=None if status == "all" else status, limit=limit)


@router.get("/approvals/{ref}", summary="One approval item in full", dependencies=[Depends(viewer)])
def approval(ref: str) -> dict[str, Any]:
    return get_approval(get_runtime(), ref)


class ApproveBody(BaseModel):
    why: str | None = Field(default=None, max_length=2000, description="Why (recorded in the audit log).")
    edits: ApprovalEdits | None = Field(
        default=None, description="Edit-then-approve: new retry times, message texts, actions to drop."
    )


class RejectBody(BaseModel):
    why: str = Field(min_length=1, max_length=2000, description="Why (recorded in the audit log).")


@router.post(
    "/approvals/{ref}/approve", summary="Approve (optionally edited): the workflow executes the plan"
)
def approve(ref: str, body: ApproveBody, who: Principal = Depends(operator)) -> dict[str, Any]:
    return decide_approval(get_runtime(), ref, approve=True, by=who.username, note=body.why, edits=body.edits)


@router.post("/approvals/{ref}/reject", summary="Reject: nothing is executed")
def reject(ref: str, body: RejectBody, who: Principal = Depends(operator)) -> dict[str, Any]:
    return decide_approval(get_runtime(), ref, approve=False, by=who.username, note=body.why)
