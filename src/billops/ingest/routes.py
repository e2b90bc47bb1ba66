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

Hostile input (docs/operations.md, "Hostile input"): the request is authenticated over the raw bytes
before the body is parsed wherever the platform's scheme allows it; every body is parsed by one
bounded parser (billops.ingest.body: size, depth, strict UTF-8, no NUL, no lone surrogate); every
stored identifier is checked before the transaction (billops.ingest.limits); an event of a type the
platform's normalizer does not know is stored but starts no workflow. Any unexpected error is
answered (500, logged) rather than raised, so the keep-alive connection stays open.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from billops.domain import CanonicalEvent, EventKind
from billops.errors import BillopsError, ErrorBody, PlatformError, WebhookRejected, error_body
from billops.ingest import chargebee as chargebee_auth
from billops.ingest import inbox, limits
from billops.ingest import stripe as stripe_verify
from billops.ingest.body import parse_json
from billops.observability import WEBHOOK_SECONDS, WEBHOOKS, log, new_trace_id
from billops.runtime import get_runtime

router = APIRouter(tags=["webhooks"])
_BODY_400 = (
    "a body that is not acceptable JSON (not UTF-8, nested too deeply, a NUL character or a lone "
    "surrogate, NaN) or an id or type out of bounds"
)


def _errors(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a webhook route: each error status in the one error shape, plus the
    500 answered (not raised) for an unexpected error."""
    descriptions = {**descriptions, 500: "an unexpected error (logged with the trace id); nothing stored"}
    return {status: {"model": ErrorBody, "description": text} for status, text in descriptions.items()}


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
    verify: Callable[[bytes], Any],
    normalize: Callable[[Any], CanonicalEvent | Fetch],
    known: Callable[[str], bool],
    *,
    challenge: str | None = None,
) -> JSONResponse:
    """The one path every platform's webhook takes: read (size-limited) → authenticate → parse
    (bounded) → normalize (and fetch, for `Fetch` events) → check the stored identifiers → store once
    and enqueue (only for a type `known` to the platform's normalizer) → answer. `verify` returns the
    parsed body when authentication had to parse it (else None). Any rejection is a 4xx (or a 503 when
    a needed API read failed) with its reason; `challenge` is the `WWW-Authenticate` sent with a 401."""
    started = time.perf_counter()
    rt = get_runtime()
    trace_id = new_trace_id(request.headers.get("traceparent"))
    try:
        body = await read_limited(request, rt.settings.webhook_max_bytes)
        payload: Any = verify(body)
        if payload is None:
            payload = parse_json(body, max_depth=rt.settings.webhook_max_depth)
        normalized = normalize(payload)

        async def store(event: CanonicalEvent) -> inbox.Accepted:
            limits.check_event(event)
            return await run_in_threadpool(
                inbox.accept,
                rt,
                event=event,
                raw=body,
                endpoint=endpoint,
                trace_id=trace_id,
                start=known(event.event_type),
            )

        if isinstance(normalized, Fetch):
            limits.check_event_id(normalized.event_id)
            seen = await run_in_threadpool(inbox.redelivered, rt, platform, normalized.event_id)
            if seen is not None:
                result = seen
            else:
                result = await store(await run_in_threadpool(fetched, platform, normalized.fetch))
        else:
            result = await store(normalized)
    except BillopsError as exc:
        return _rejected(platform, endpoint, trace_id, exc.status, exc.message, challenge)
    except Exception:  # a bug, not the caller's fault: answered (never raised), so the connection stays
        log.exception("webhook failed", platform=platform, endpoint=endpoint, trace_id=trace_id)
        return _rejected(
            platform, endpoint, trace_id, 500, f"internal error, nothing stored (trace id {trace_id})", None
        )
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


def _rejected(
    platform: str, endpoint: str, trace_id: str, status: int, message: str, challenge: str | None
) -> JSONResponse:
    """A rejection in the shape of every error answer (billops.errors.error_body); nothing was stored."""
    WEBHOOKS.labels(platform, f"rejected_{status}").inc()
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # never a lone surrogate
    log.warning(
        "webhook rejected",
        platform=platform,
        endpoint=endpoint,
        status=status,
        reason=message,
        trace_id=trace_id,
    )
    headers = {"WWW-Authenticate": challenge} if status == 401 and challenge else None
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


@router.post(
    "/webhooks/stripe/{endpoint}",
    summary="Receive a Stripe webhook",
    responses=_errors(
        {
            400: "forged, stale or unsigned; " + _BODY_400,
            404: "unknown endpoint",
            413: "too large",
            422: "not a Stripe event",
        }
    ),
)
async def stripe_webhook(endpoint: str, request: Request) -> JSONResponse:
    from billops.platforms.stripe.normalize import EVENT_KINDS, normalize_event

    settings = get_runtime().settings
    header = request.headers.get("stripe-signature")
    return await receive(
        "stripe",
        endpoint,
        request,
        lambda body: stripe_verify.verify(settings, endpoint, body, header),
        normalize_event,
        EVENT_KINDS.__contains__,
    )


@router.post(
    "/webhooks/chargebee/{endpoint}",
    summary="Receive a Chargebee webhook (HTTP Basic auth per endpoint)",
    responses=_errors(
        {
            400: _BODY_400,
            401: "missing or wrong HTTP Basic credentials (with a WWW-Authenticate challenge)",
            404: "unknown endpoint",
            413: "too large",
            422: "not a Chargebee event",
            503: "re-fetching the event failed or no API client is configured; nothing stored",
        }
    ),
)
async def chargebee_webhook(endpoint: str, request: Request) -> JSONResponse:
    from billops.platforms.chargebee.normalize import EVENT_KINDS, normalize_event

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
        EVENT_KINDS.__contains__,
        challenge=chargebee_auth.CHALLENGE,
    )


@router.post(
    "/webhooks/recurly/{endpoint}",
    summary="Receive a Recurly JSON webhook (recurly-signature HMAC; the named object is fetched)",
    responses=_errors(
        {
            400: "forged, stale or unsigned; " + _BODY_400,
            404: "unknown endpoint",
            413: "too large",
            422: "not a Recurly event, or the object it names does not exist",
            503: "the Recurly API read failed (Recurly redelivers); nothing stored",
        }
    ),
)
async def recurly_webhook(endpoint: str, request: Request) -> JSONResponse:
    from billops.ingest import recurly as recurly_verify
    from billops.platforms.recurly.normalize import EVENT_KINDS, enrich, thin_event

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
        EVENT_KINDS.__contains__,  # "<object_type>.<event_type>", the canonical event_type
    )


@router.post(
    "/webhooks/zuora/{endpoint}",
    summary="Receive a Zuora callout (HTTP Basic with a 401 challenge, or HMAC; see docs/platforms/zuora.md)",
    responses=_errors(
        {
            400: _BODY_400 + "; a signature that is not hex/base64",
            401: "missing or wrong credentials or signature, or a body a field-signing HMAC cannot read "
            "(with a WWW-Authenticate challenge for HTTP Basic)",
            404: "unknown endpoint",
            413: "too large",
            422: "not a BillOps Zuora callout body",
        }
    ),
)
async def zuora_webhook(endpoint: str, request: Request) -> JSONResponse:
    from billops.ingest import zuora as zuora_auth
    from billops.platforms.zuora.normalize import known_event_type, normalize_event

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
        known_event_type,
        challenge=zuora_auth.CHALLENGE,
    )


def _zuora_with_invoice(event: CanonicalEvent, client: Any) -> CanonicalEvent:
    assert event.attempt is not None
    invoice = client.invoice_for_payment(event.attempt.id)
    if invoice is None:
        return event
    attempt = event.attempt.model_copy(update={"invoice_id": invoice.id})
    return event.model_copy(update={"invoice": invoice, "attempt": attempt})
