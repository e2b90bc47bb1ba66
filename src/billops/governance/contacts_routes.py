"""Routes for contact preferences: the opt-out list (/api/optouts, by role) and the public one-click
unsubscribe link (/unsubscribe/{token}, authorised by its signature alone)."""

from __future__ import annotations

import html
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from billops.errors import BillopsError, error_responses
from billops.governance import contacts
from billops.governance.access import ApiRoute, require_role
from billops.governance.users import Principal
from billops.runtime import get_runtime

router = APIRouter(tags=["contacts"])  # the public unsubscribe pages; `api` (below) is included in it
api = APIRouter(prefix="/api", tags=["contacts"], route_class=ApiRoute)
viewer, operator = require_role("viewer"), require_role("operator")
Platform = Literal["stripe", "chargebee", "recurly", "zuora"]


class OptOutBody(BaseModel):
    platform: Platform
    customer_id: str = Field(min_length=1, max_length=255)
    channel: Literal["all", "email", "sms"] = "all"
    why: str | None = Field(default=None, max_length=2000)


class OptInBody(BaseModel):
    platform: Platform
    customer_id: str = Field(min_length=1, max_length=255)
    channel: Literal["all", "email", "sms"] = "all"
    why: str = Field(min_length=1, max_length=2000, description="Why contact is allowed again (audited).")


@api.get("/optouts", summary="Customers who asked not to be contacted", dependencies=[Depends(viewer)])
def optouts(
    platform: Platform | None = None,
    customer_id: str | None = Query(None, max_length=255),
    limit: int = Query(500, ge=1, le=5000),
) -> list[dict[str, Any]]:
    with get_runtime().db.reader() as s:
        return contacts.list_optouts(s, platform=platform, customer_id=customer_id, limit=limit)


@api.post("/optouts", summary="Stop contacting a customer on a channel (or all)")
def add_optout(body: OptOutBody, who: Principal = Depends(operator)) -> dict[str, Any]:
    with get_runtime().db.session() as s:
        added = contacts.add_optout(
            s, body.platform, body.customer_id, body.channel, source="api", by=who.username, why=body.why
        )
    return {
        "added": added,
        "platform": body.platform,
        "customer_id": body.customer_id,
        "channel": body.channel,
    }


@api.post("/optouts/remove", summary="Allow contact again (needs a reason)", responses=error_responses(404))
def remove_optout(body: OptInBody, who: Principal = Depends(operator)) -> dict[str, Any]:
    with get_runtime().db.session() as s:
        contacts.remove_optout(
            s, body.platform, body.customer_id, body.channel, by=who.username, why=body.why
        )
    return {
        "removed": True,
        "platform": body.platform,
        "customer_id": body.customer_id,
        "channel": body.channel,
    }


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem">
<h1 style="font-size: 1.3rem">{title}</h1><p>{text}</p>{form}</body></html>"""


def _page(title: str, text: str, form: str = "", status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), text=html.escape(text), form=form), status)


@router.get("/unsubscribe/{token}", include_in_schema=False)
def unsubscribe_page(token: str) -> HTMLResponse:
    rt = get_runtime()
    try:
        _, _, channel = contacts.read_unsubscribe_token(rt.settings, token)
    except BillopsError as exc:
        return _page("Link not valid", exc.message, status=400)
    what = "emails" if channel == "email" else "text messages" if channel == "sms" else "messages"
    form = (
        f'<form method="post" action="/unsubscribe/{html.escape(token)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        f'<button type="submit">Unsubscribe from billing {what}</button></form>'
    )
    return _page("Unsubscribe", f"Stop receiving billing reminder {what} from us?", form)


@router.post("/unsubscribe/{token}", include_in_schema=False)
async def unsubscribe(token: str, request: Request) -> HTMLResponse:
    rt = get_runtime()
    try:
        platform, customer_id, channel = contacts.read_unsubscribe_token(rt.settings, token)
    except BillopsError as exc:
        return _page("Link not valid", exc.message, status=400)
    with rt.db.session() as s:
        contacts.add_optout(
            s,
            platform,
            customer_id,
            channel,
            source="unsubscribe_link",
            by="customer",
            why="one-click unsubscribe" if request.method == "POST" else None,
        )
    return _page(
        "You are unsubscribed",
        "You will not receive these reminders any more. Invoices and receipts from your billing "
        "provider are not affected.",
    )


router.include_router(api)
