"""/api routes for governance: the approval queue, the policy, the kill switch and circuit breaker,
feedback labels. Every route states its least role (governance/access.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from billops.errors import BillopsError, NotFound, error_responses
from billops.governance.access import DB_INT_MAX, ApiRoute, require_role
from billops.governance.approvals import ApprovalEdits, decide_approval, get_approval, list_approvals
from billops.governance.users import Principal
from billops.runtime import get_runtime

router = APIRouter(prefix="/api", tags=["governance"], route_class=ApiRoute)
viewer, operator, admin = require_role("viewer"), require_role("operator"), require_role("admin")

Platform = Literal["stripe", "chargebee", "recurly", "zuora"]
Workflow = Literal["recovery"]  # the workflows the policy file has modes for (config.Policy.modes)
Ref = Annotated[
    str,
    Path(
        min_length=1,
        max_length=300,
        pattern=r"^[!-~]+$",
        description="The approval's number, or its decision's workflow id (`platform:event_id`).",
    ),
]


def approval_ref(ref: str) -> str:
    """A number too large to be an id names no approval (404), rather than overflowing the query."""
    if ref.isdigit() and int(ref) > DB_INT_MAX:
        raise NotFound(f"no approval {ref!r}")
    return ref


@router.get("/approvals", summary="The approval queue", dependencies=[Depends(viewer)])
def approvals(
    status: Literal["pending", "approved", "rejected", "expired", "all"] = "pending",
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    return list_approvals(get_runtime(), status=None if status == "all" else status, limit=limit)


@router.get(
    "/approvals/{ref}",
    summary="One approval item in full",
    dependencies=[Depends(viewer)],
    responses=error_responses(404),
)
def approval(ref: Ref) -> dict[str, Any]:
    return get_approval(get_runtime(), approval_ref(ref))


class ApproveBody(BaseModel):
    why: str | None = Field(default=None, max_length=2000, description="Why (recorded in the audit log).")
    edits: ApprovalEdits | None = Field(
        default=None, description="Edit-then-approve: new retry times, message texts, actions to drop."
    )


class RejectBody(BaseModel):
    why: str = Field(min_length=1, max_length=2000, description="Why (recorded in the audit log).")


@router.post(
    "/approvals/{ref}/approve",
    summary="Approve (optionally edited): the workflow executes the plan",
    responses=error_responses(404, 409),
)
def approve(ref: Ref, body: ApproveBody, who: Principal = Depends(operator)) -> dict[str, Any]:
    return decide_approval(
        get_runtime(), approval_ref(ref), approve=True, by=who.username, note=body.why, edits=body.edits
    )


@router.post(
    "/approvals/{ref}/reject", summary="Reject: nothing is executed", responses=error_responses(404, 409)
)
def reject(ref: Ref, body: RejectBody, who: Principal = Depends(operator)) -> dict[str, Any]:
    return decide_approval(get_runtime(), approval_ref(ref), approve=False, by=who.username, note=body.why)


# ---------------------------------------------------------------- policy


@router.get(
    "/policy", summary="The active policy: version, digest, file text", dependencies=[Depends(viewer)]
)
def get_policy() -> dict[str, Any]:
    from billops.governance.policy_admin import policy_view

    return policy_view(get_runtime())


class PolicyBody(BaseModel):
    text: str = Field(min_length=1, max_length=200_000, description="The whole policy file (YAML).")


@router.put(
    "/policy",
    summary="Replace the policy file (validated, versioned, audited)",
    responses=error_responses(409),
)
def put_policy(body: PolicyBody, who: Principal = Depends(admin)) -> dict[str, Any]:
    from billops.governance.policy_admin import replace_policy

    try:
        return replace_policy(get_runtime(), body.text, by=who.username)
    except RecursionError:  # the YAML parser recurses per nesting level; the file is untouched
        raise BillopsError("new policy: not valid YAML: nested too deeply", 422) from None


@router.get(
    "/policy/explain",
    summary="Which mode and guardrails apply to a sample customer, and why",
    dependencies=[Depends(viewer)],
)
def explain_policy(
    platform: Platform = "stripe",
    currency: str = Query("usd", pattern=r"^[A-Za-z]{3}$", description="ISO 4217 code, e.g. `usd`."),
    amount_minor: int = Query(10_000, ge=0, le=2**63 - 1, description="Invoice amount in minor units."),
    customer_id: str | None = Query(None, max_length=255),
    plan: str | None = Query(None, max_length=255, description="Plan name or id."),
    tier: str | None = Query(None, max_length=100),
    timezone: str | None = Query(None, max_length=64, description="IANA zone, e.g. `Europe/Paris`."),
    workflow: Workflow = "recovery",
) -> dict[str, Any]:
    from billops.governance.control import controls
    from billops.governance.explain import explain
    from billops.governance.rollout import Subject

    rt = get_runtime()
    sub = Subject(
        workflow=workflow,
        platform=platform,
        customer_id=customer_id,
        currency=currency.lower(),
        amount_minor=amount_minor,
        plans=(plan,) if plan else (),
        tier=tier,
        timezone=timezone,
    )
    with rt.db.reader() as s:
        forced = controls(s).shadow_reason
    return explain(rt.policy(), sub, forced_shadow=forced)


# ---------------------------------------------------------------- kill switch and circuit breaker


class WhyBody(BaseModel):
    why: str = Field(min_length=1, max_length=2000, description="Why (recorded in the audit log).")


@router.get("/controls", summary="Kill switch and circuit breaker state", dependencies=[Depends(viewer)])
def get_controls() -> dict[str, Any]:
    from billops.governance.control import controls

    with get_runtime().db.reader() as s:
        return controls(s).as_dict()


@router.post(
    "/controls/pause-all",
    summary="Kill switch on: every workflow to shadow at once",
    responses=error_responses(409),
)
def pause_all(body: WhyBody, who: Principal = Depends(admin)) -> dict[str, Any]:
    from billops.governance import control

    with get_runtime().db.session() as s:
        return control.pause_all(s, by=who.username, why=body.why).as_dict()


@router.post(
    "/controls/resume-all",
    summary="Kill switch off: workflows act again by their modes",
    responses=error_responses(409),
)
def resume_all(body: WhyBody, who: Principal = Depends(admin)) -> dict[str, Any]:
    from billops.governance import control

    with get_runtime().db.session() as s:
        return control.resume_all(s, by=who.username, why=body.why).as_dict()


@router.post(
    "/controls/breaker/reset", summary="Reset a tripped circuit breaker", responses=error_responses(409)
)
def reset_breaker(body: WhyBody, who: Principal = Depends(admin)) -> dict[str, Any]:
    from billops.governance import control

    with get_runtime().db.session() as s:
        return control.reset_breaker(s, by=who.username, why=body.why).as_dict()


# ---------------------------------------------------------------- feedback labels


@router.get(
    "/feedback",
    summary="Human verdicts on decisions, with the decision's features (training labels)",
    dependencies=[Depends(viewer)],
)
def feedback(limit: int = Query(1000, ge=1, le=100_000)) -> list[dict[str, Any]]:
    from billops.governance.feedback import feedback_rows

    with get_runtime().db.reader() as s:
        return list(feedback_rows(s, limit=limit))
