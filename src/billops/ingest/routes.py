"""`POST /webhooks/{stripe,chargebee,recurly,zuora}/{endpoint}`: verify → normalize → store once →
enqueue → answer.

Nothing slow happens here: no model, no LLM. A rejected request (unknown endpoint, missing/forged/
stale signature or credentials, oversized, malformed) gets a 4xx that says why, and nothing is stored.

Two platforms need one API read before an event can be trusted or understood, and it happens here,
before anything is stored: Recurly's thin envelopes only name the object (BillOps fetches it), and a
Chargebee endpoint with `chargebee_refetch_events` trusts only the API's copy of the event. A
redelivery of an event already stored is answered from the inbox without that read. When the read
fails the answer is 503 (the platform retries later; nothing is stored), or 422 when the API says the
object or event does not exist.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from billops.domain import CanonicalEvent, EventKind
from billops.errors import BillopsError, PlatformError, WebhookRejected
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


@dataclass(frozen=True)
class Fetch:
    """An event that needs one API read before it is trusted or complete: its id (for the duplicate
    check that comes first) and the read that builds the canonical event."""

    event_id: str
    fetch: Callable[[], CanonicalEvent]


def fetched(platform: str, fetch: Callable[[], CanonicalEvent]) -> CanonicalEvent:
    """Run an API read for a webhook; its failure becomes a 503 (retry later) or a 422 (no such thing)."""
    try:
        return fetch()
    except PlatformError as exc:
        if exc.code in ("not_found", "unreadable_response"):
            raise WebhookRejected(f"{platform} API: {exc.message}", status=422) from exc
        raise WebhookRejected(
            f"{platform} API read failed, nothing stored; the platform will redeliver: {exc.message}",
            status=503,
        ) from exc


async def receive(
    platform: str,
    endpoint: str,
    request: Request,
    verify: Callable[[bytes], None],
    normalize: Callable[[Any], CanonicalEvent | Fetch],
    *,
    challenge: str | None = None,
) -> JSONResponse:
    """The one path every platform's webhook takes: read (size-limited) → authenticate → parse →
    normalize (and fetch, for `Fetch` events) → store once and enqueue → answer. Any rejection is a
    4xx (or a 503 when a needed API read failed) with its reason; `challenge` is the
    `WWW-Authenticate` value sent with a 401."""
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
        normalized = normalize(payload)
        if isinstance(normalized, Fetch):
            seen = await run_in_threadpool(inbox.redelivered, rt, platform, normalized.event_id)
            if seen is not None:
                result = seen
            else:
                event = await run_in_threadpool(fetched, platform, normalized.fetch)
                result = await run_in_threadpool(
                    inbox.accept, rt, event=event, raw=body, endpoint=endpoint, trace_id=trace_id
                )
        else:
            result = await run_in_threadpool(
                inbox.accept, rt, event=normalized, raw=body, endpoint=endpoint, trace_id=trace_id
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
        headers = {"WWW-Authenticate": challenge} if exc.status == 401 and challenge else None
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

    rt = get_runtime()
    settings = rt.settings
    header = request.headers.get("authorization")

    def normalize(payload: Any) -> CanonicalEvent | Fetch:
        event = normalize_event(payload)  # the delivered copy must be a valid event in any case
        if not settings.chargebee_refetch_events:
            return event
        client = rt.platform_client("chargebee")
        if client is None:
            raise WebhookRejected(
                "chargebee_refetch_events is on but no Chargebee API client is configured "
                "(BILLOPS_CHARGEBEE_SITE, BILLOPS_CHARGEBEE_API_KEY); nothing stored",
                status=503,
            )
        return Fetch(event.event_id, lambda: normalize_event(client.retrieve_event(event.event_id)))

    return await receive(
        "chargebee",
        endpoint,
        request,
        lambda body: chargebee_auth.verify(settings, endpoint, header),
        normalize,
        challenge=chargebee_auth.CHALLENGE,
    )


@router.post(
    "/webhooks/recurly/{endpoint}",
    summary="Receive a Recurly JSON webhook (recurly-signature HMAC; the named object is fetched)",
    responses={
        400: {"description": "forged, stale, unsigned or malformed"},
        404: {"description": "unknown endpoint"},
        413: {"description": "too large"},
        422: {"description": "not a Recurly event, or the object it names does not exist"},
        503: {"description": "the Recurly API read failed (Recurly redelivers); nothing stored"},
    },
)
async def recurly_webhook(endpoint: str, request: Request) -> JSONResponse:
    from billops.ingest import recurly as recurly_verify
    from billops.platforms.recurly.normalize import enrich, thin_event

    rt = get_runtime()
    settings = rt.settings
    header = request.headers.get("recurly-signature")

    def normalize(payload: Any) -> Fetch:
        thin = thin_event(payload)
        client = rt.platform_client("recurly")
        if client is None:
            raise WebhookRejected(
                "Recurly webhooks only name the object; BillOps needs BILLOPS_RECURLY_API_KEY to read it. "
                "Nothing stored (Recurly will redeliver)",
                status=503,
            )
        return Fetch(thin.event_id, lambda: enrich(thin, client))

    return await receive(
        "recurly",
        endpoint,
        request,
        lambda body: recurly_verify.verify(settings, endpoint, body, header),
        normalize,
    )


@router.post(
    "/webhooks/zuora/{endpoint}",
    summary="Receive a Zuora callout (HTTP Basic with a 401 challenge, or HMAC; see docs/platforms/zuora.md)",
    responses={
        400: {"description": "malformed"},
        401: {"description": "missing or wrong credentials or signature (with a WWW-Authenticate challenge)"},
        404: {"description": "unknown endpoint"},
        413: {"description": "too large"},
        422: {"description": "not a BillOps Zuora callout body"},
    },
)
async def zuora_webhook(endpoint: str, request: Request) -> JSONResponse:
    from billops.ingest import zuora as zuora_auth
    from billops.platforms.zuora.normalize import normalize_event

    rt = get_runtime()
    settings = rt.settings
    headers = request.headers

    def normalize(payload: Any) -> CanonicalEvent | Fetch:
        event = normalize_event(payload)
        if event.kind != EventKind.payment_failed or event.invoice is not None or event.attempt is None:
            return event
        # A Payment Declined callout cannot carry the invoice (Zuora's Payment has no invoice field):
        # find it through the API, or store the event without one (no recovery starts; said in the docs).
        client = rt.platform_client("zuora")
        if client is None:
            return event
        return Fetch(event.event_id, lambda: _zuora_with_invoice(event, client))

    return await receive(
        "zuora",
        endpoint,
        request,
        lambda body: zuora_auth.verify(settings, endpoint, body, headers),
        normalize,
        challenge=zuora_auth.CHALLENGE,
    )


def _zuora_with_invoice(event: CanonicalEvent, client: Any) -> CanonicalEvent:
    assert event.attempt is not None
    invoice = client.invoice_for_payment(event.attempt.id)
    if invoice is None:
        return event
    attempt = event.attempt.model_copy(update={"invoice_id": invoice.id})
    return event.model_copy(update={"invoice": invoice, "attempt": attempt})
