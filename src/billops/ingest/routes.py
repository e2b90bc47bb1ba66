"""`POST /webhooks/{stripe,chargebee}/{endpoint}`: verify → store once → normalize → enqueue → answer.

Nothing slow happens here: no model, no LLM, no platform call. A rejected request (unknown
endpoint, missing/forged/stale signature, oversized, malformed) gets a 4xx that says why, and
nothing is stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from billops.domain import CanonicalEvent
from billops.errors import BillopsError, WebhookRejected
from billops.ingest import chargebee as chargebee_auth
from billops.ingest import inbox
from billops.ingest import stripe as stripe_verify
from billops.observability import WEBHOOK_SECONDS, WEBHOOKS, log, new_trace_id
from billops.runtime import get_runtime

router = APIRouter(tags=["webhooks"])


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise WebhookRejected(f"body of {declared} bytes exceeds the {limit}-byte limit", status=413)
        except ValueError as exc:
            raise WebhookRejected("invalid Content-Length", status=400) from exc
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise WebhookRejected(f"body exceeds the {limit}-byte limit", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def receive(
    platform: str,
    endpoint: str,
    request: Request,
    verify: Callable[[bytes], None],
    normalize: Callable[[Any], CanonicalEvent],
) -> JSONResponse:
    """The one path every platform's webhook takes: read (size-limited) → authenticate → parse →
    normalize → store once and enqueue → answer. Any rejection is a 4xx with its reason."""
    started = time.perf_counter()
    rt = get_runtime()
    trace_id = new_trace_id(request.headers.get("traceparent"))
    try:
        body = await read_limited(request, rt.settings.webhook_max_bytes)
        verify(body)
        try:
            payload: Any = json.loads(body)
        except ValueError as exc:
            raise WebhookRejected(f"body is not valid JSON: {exc}", status=400) from exc
        event = normalize(payload)
        result = await run_in_threadpool(
            inbox.accept, rt, event=event, raw=body, endpoint=endpoint, trace_id=trace_id
        )
    except BillopsError as exc:
        WEBHOOKS.labels(platform, f"rejected_{exc.status}").inc()
        log.warning(
            "webhook rejected",
            platform=platform,
            endpoint=endpoint,
            status=exc.status,
            reason=exc.message,
            trace_id=trace_id,
        )
        headers = {"WWW-Authenticate": chargebee_auth.CHALLENGE} if exc.status == 401 else None
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)
    WEBHOOKS.labels(platform, result.status).inc()
    WEBHOOK_SECONDS.labels(platform).observe(time.perf_counter() - started)
    return JSONResponse(
        {
            "status": result.status,
            "event_id": result.event_id,
            "workflow_id": result.workflow_id,
            "trace_id": trace_id,
        }
    )


@router.post(
    "/webhooks/stripe/{endpoint}",
    summary="Receive a Stripe webhook",
    responses={
        400: {"description": "forged, stale, unsigned or malformed"},
        404: {"description": "unknown endpoint"},
        413: {"description": "too large"},
        422: {"description": "not a Stripe event"},
    },
)
async def stripe_webhook(endpoint: str, request: Request) -> JSONResponse:
    from billops.platforms.stripe.normalize import normalize_event

    settings = get_runtime().settings
    header = request.headers.get("stripe-signature")
    return await receive(
        "stripe",
        endpoint,
        request,
        lambda body: stripe_verify.verify(settings, endpoint, body, header),
        normalize_event,
    )


@router.post(
    "/webhooks/chargebee/{endpoint}",
    summary="Receive a Chargebee webhook (HTTP Basic auth per endpoint)",
    responses={
        400: {"description": "malformed"},
        401: {"description": "missing or wrong HTTP Basic credentials (with a WWW-Authenticate challenge)"},
        404: {"description": "unknown endpoint"},
        413: {"description": "too large"},
        422: {"description": "not a Chargebee event"},
    },
)
async def chargebee_webhook(endpoint: str, request: Request) -> JSONResponse:
    from billops.platforms.chargebee.normalize import normalize_event

    settings = get_runtime().settings
    header = request.headers.get("authorization")
    return await receive(
        "chargebee",
        endpoint,
        request,
        lambda body: chargebee_auth.verify(settings, endpoint, header),
        normalize_event,
    )
